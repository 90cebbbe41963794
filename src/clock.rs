//! Where the broker's time comes from. Every expiry, grace, lease and sweep decision reads a
//! [`Clock`] held by the `Broker`, so tests drive time instead of sleeping on the wall clock:
//! a [`ManualClock`] in process, and for the spawned binary a debug-only time offset read
//! from a file (see [`from_env`]).

use std::{
    fmt::Debug,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// Names a file holding a time offset in seconds that a debug build adds to its clock; release
/// builds ignore it, so production time can never be shifted.
pub const TEST_CLOCK_ENV: &str = "TOKEN_BROKER_TEST_CLOCK_FILE";

/// The broker's source of "now", so that time-dependent decisions can be driven by tests.
pub trait Clock: Send + Sync + Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;

    /// Seconds and nanoseconds since the Unix epoch, so that records created within one
    /// second still show (and sort in) the order they were made. A clock without sub-second
    /// precision (a stopped or manual one, which keeps tests deterministic) reads 0 nanos.
    fn now_precise(&self) -> (i64, u32) {
        (self.now(), 0)
    }
}

/// The nanoseconds to store with a record time `secs` (seconds the request or worker read
/// earlier from `clock`): the clock's sub-second part while it still reads `secs`, the end of
/// that second once it has moved past it (so later records never sort before earlier ones),
/// and 0 if it reads an earlier second (a test moved it back).
pub fn nanos_within(clock: &dyn Clock, secs: i64) -> i32 {
    let (now, nanos) = clock.now_precise();
    match now.cmp(&secs) {
        std::cmp::Ordering::Equal => i32::try_from(nanos.min(999_999_999)).unwrap_or(0),
        std::cmp::Ordering::Greater => 999_999_999,
        std::cmp::Ordering::Less => 0,
    }
}

/// The wall clock: what production runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        wall_now()
    }

    fn now_precise(&self) -> (i64, u32) {
        wall_now_precise()
    }
}

/// Unix seconds from the system clock; a clock before 1970 reads as 0.
fn wall_now() -> i64 {
    wall_now_precise().0
}

/// Unix seconds and nanoseconds from the system clock; a clock before 1970 reads as 0.
fn wall_now_precise() -> (i64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| {
            (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            )
        })
}

/// A clock tests set and advance by hand; clones share the same time, and reading it is one
/// atomic load.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now` until it is moved.
    pub fn new(now: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now)))
    }

    /// A clock starting at the current wall-clock time (tokens and keys look realistic).
    pub fn starting_now() -> Self {
        Self::new(wall_now())
    }

    /// Moves the clock to `now` (backwards too, to test clock skew).
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Time read from a file on every call, so tests can move the time of a spawned broker
/// process: `N` is the wall clock plus `N` seconds, `@T` is exactly `T` (a stopped clock, for
/// tests that must see a moment pass without time moving on). Only debug builds construct it.
#[derive(Debug)]
pub struct OffsetFileClock {
    path: PathBuf,
}

impl OffsetFileClock {
    /// A clock set by what `path` holds (a missing or unreadable file reads as no offset).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> i64 {
        self.now_precise().0
    }

    /// The wall clock's nanoseconds with an offset; none when stopped (`@T`).
    fn now_precise(&self) -> (i64, u32) {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let text = text.trim();
        let (secs, nanos) = wall_now_precise();
        match text.strip_prefix('@') {
            Some(fixed) => fixed.parse().map_or((secs, nanos), |t| (t, 0)),
            None => (secs.saturating_add(text.parse().unwrap_or(0)), nanos),
        }
    }
}

/// The clock the binary runs on: the system clock, or in a debug build with
/// [`TEST_CLOCK_ENV`] set, an [`OffsetFileClock`] on the named file. A release build logs the
/// variable as ignored.
pub fn from_env(value: Option<String>) -> Arc<dyn Clock> {
    let Some(path) = value.filter(|v| !v.is_empty()) else {
        return Arc::new(SystemClock);
    };
    if cfg!(debug_assertions) {
        tracing::warn!(
            file = %path,
            "test clock in use: time is the system clock plus the offset in this file (debug build only)"
        );
        Arc::new(OffsetFileClock::new(PathBuf::from(path)))
    } else {
        tracing::warn!(
            variable = TEST_CLOCK_ENV,
            "ignored in a release build: the broker runs on the system clock"
        );
        Arc::new(SystemClock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(1_000);
        let other = clock.clone();
        clock.advance(5);
        assert_eq!(other.now(), 1_005);
        other.set(10);
        assert_eq!(clock.now(), 10);
    }

    #[test]
    fn offset_file_shifts_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        let clock = OffsetFileClock::new(path.clone());
        let before = wall_now();
        assert!(
            (before..=before + 1).contains(&clock.now()),
            "no file: no offset"
        );
        std::fs::write(&path, "3600\n").unwrap();
        let shifted = clock.now();
        assert!((before + 3600..=wall_now() + 3600).contains(&shifted));
        std::fs::write(&path, "junk").unwrap();
        assert!(clock.now() < before + 3600, "unreadable: no offset");
        std::fs::write(&path, "@1000").unwrap();
        assert_eq!(clock.now(), 1000, "a stopped clock");
    }

    /// A clock reading a fixed precise time.
    #[derive(Debug)]
    struct Fixed(i64, u32);

    impl Clock for Fixed {
        fn now(&self) -> i64 {
            self.0
        }
        fn now_precise(&self) -> (i64, u32) {
            (self.0, self.1)
        }
    }

    #[test]
    fn the_system_clock_reads_nanoseconds() {
        let before = wall_now();
        // A reading exactly on a second boundary is possible; a thousand in a row is not.
        let readings: Vec<(i64, u32)> = (0..1000).map(|_| SystemClock.now_precise()).collect();
        assert!(readings.iter().any(|&(_, n)| n > 0), "{readings:?}");
        assert!(readings.iter().all(|&(_, n)| n < 1_000_000_000));
        assert!(
            readings
                .iter()
                .all(|&(s, _)| s >= before && s <= wall_now())
        );
    }

    #[test]
    fn manual_and_stopped_clocks_read_whole_seconds() {
        assert_eq!(ManualClock::new(1_000).now_precise(), (1_000, 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        std::fs::write(&path, "@1000").unwrap();
        assert_eq!(OffsetFileClock::new(path.clone()).now_precise(), (1000, 0));
        std::fs::write(&path, "3600").unwrap();
        let before = wall_now();
        let (secs, nanos) = OffsetFileClock::new(path).now_precise();
        assert!((before + 3600..=wall_now() + 3600).contains(&secs));
        assert!(nanos < 1_000_000_000);
    }

    #[test]
    fn nanos_within_keeps_records_in_creation_order() {
        assert_eq!(nanos_within(&Fixed(100, 250), 100), 250, "same second");
        assert_eq!(
            nanos_within(&Fixed(101, 5), 100),
            999_999_999,
            "the second has passed: its end, never before an earlier record of it"
        );
        assert_eq!(nanos_within(&Fixed(99, 5), 100), 0, "moved back");
        let manual = ManualClock::new(100);
        assert_eq!(
            nanos_within(&manual, 100),
            0,
            "a manual clock: whole seconds"
        );
    }

    #[test]
    fn from_env_without_the_variable_is_the_system_clock() {
        let now = wall_now();
        let clock = from_env(None);
        assert!((now..=now + 1).contains(&clock.now()));
        assert!(format!("{clock:?}").contains("SystemClock"));
    }

    #[test]
    fn from_env_honours_the_file_only_in_debug_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        std::fs::write(&path, "100000").unwrap();
        let clock = from_env(Some(path.display().to_string()));
        let shifted = clock.now() > wall_now() + 50_000;
        assert_eq!(shifted, cfg!(debug_assertions));
    }
}
