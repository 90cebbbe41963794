//! kill -9 in the middle of concurrent mints and revocations: every acknowledged write must
//! be there after a restart on the same data dir.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use tokio::sync::Notify;

/// Acknowledged mints to collect before the kill: enough to mean something, with calls still
/// in flight when the kill lands.
const MINTS_BEFORE_KILL: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha"], &["read"]).await;
    let key = create_key(&b, &admin, "alice", &["read"]).await;

    let minted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let revoked: Arc<Mutex<Vec<String>>> = Arc::default();
    let in_doubt: Arc<Mutex<Vec<String>>> = Arc::default();
    let acknowledged = Arc::new(Notify::new());
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (minted, revoked, in_doubt, key, acknowledged) = (
            Arc::clone(&minted),
            Arc::clone(&revoked),
            Arc::clone(&in_doubt),
            key.clone(),
            Arc::clone(&acknowledged),
        );
        let mut tokens = b.tokens().await;
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let request = authed(pb::CreateAccessTokenRequest::default(), &key);
                let Ok(response) = tokens.create_access_token(request).await else {
                    return;
                };
                let t = response.into_inner();
                minted.lock().unwrap().push((t.jti.clone(), t.access_token));
                acknowledged.notify_waiters();
                if (i + worker) % 3 == 0 {
                    let request = authed(
                        pb::RevokeAccessTokenRequest {
                            jti: t.jti.clone(),
                            ..Default::default()
                        },
                        &key,
                    );
                    if tokens.revoke_access_token(request).await.is_err() {
                        // Killed mid-call: this revocation may or may not have landed.
                        in_doubt.lock().unwrap().push(t.jti);
                        return;
                    }
                    revoked.lock().unwrap().push(t.jti);
                    acknowledged.notify_waiters();
                }
            }
        }));
    }
    // Let acknowledgements accumulate, then kill while calls are in flight.
    wait_until(&acknowledged, "acknowledged mints and revocations", || {
        minted.lock().unwrap().len() >= MINTS_BEFORE_KILL && !revoked.lock().unwrap().is_empty()
    })
    .await;
    b.kill9();
    for w in workers {
        w.await.unwrap();
    }
    let minted = minted.lock().unwrap().clone();
    let revoked = revoked.lock().unwrap().clone();
    let in_doubt = in_doubt.lock().unwrap().clone();
    assert!(
        minted.len() >= 20,
        "too few mints to mean anything: {}",
        minted.len()
    );
    assert!(!revoked.is_empty());

    let b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let mut tokens = b.tokens().await;
    for (jti, token) in &minted {
        if in_doubt.contains(jti) {
            continue;
        }
        let seen = tokens
            .introspect_token(authed(
                pb::IntrospectTokenRequest {
                    token: token.clone(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            seen.active,
            !revoked.contains(jti),
            "token {jti} after restart"
        );
    }
}
