//! Waiting for a background change without racing the wall clock: every wait is woken by the
//! thing it waits for and only gives up after the generous [`WAIT`]. Its own file so the
//! `fake-vendors` example can use the fakes without the broker harness.

use std::time::Duration;

use tokio::{sync::Notify, time::Instant};

/// How long any wait for a background worker or a process may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Waits until `check` holds, checking again each time `changed` fires; fails after [`WAIT`].
pub async fn wait_until(changed: &Notify, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change right after it is not missed.
        notified.as_mut().enable();
        if check() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("waited {WAIT:?} for: {what}");
        }
    }
}
