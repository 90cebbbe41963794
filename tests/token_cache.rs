//! The credential caches, in process: a token cached as valid a moment ago is refused at
//! once after its revocation and at its expiry (verified-token cache, revoked index), and a
//! cached access key follows every write to a key or subject at once (key cache behind the
//! store's generation). The broker runs on a manual clock: time moves when the test says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::direct;
use std::{path::Path, sync::Arc, time::Duration};

use token_broker::{
    broker::{Broker, MasterKeySource, NewKey},
    clock::{Clock, ManualClock},
    config::Config,
    pb::v1 as pb,
};

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..Config::default()
    }
}

async fn open(dir: &Path, clock: &ManualClock) -> Arc<Broker> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Broker::open_with_clock(config(dir), MasterKeySource::File, clock)
        .await
        .unwrap()
}

#[tokio::test]
async fn cached_tokens_die_at_revocation_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let b = open(dir.path(), &clock).await;
    let admin_secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key")).unwrap();
    let admin = b
        .authn
        .authenticate(admin_secret.trim(), clock.now())
        .unwrap();

    let read = ["read".to_owned()];
    let mint = |hours: Option<f64>| direct::mint(&b, &admin, &[], &read, hours);
    let long = mint(Some(1.0)).await.unwrap();
    // Verified once, then served from the cache (the same shared value comes back).
    let first = b
        .authn
        .introspect(&long.token, clock.now())
        .unwrap()
        .unwrap();
    let second = b
        .authn
        .introspect(&long.token, clock.now())
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&first, &second), "second lookup is a cache hit");
    // A token minted from the cached one works too.
    let caller = b.authn.authenticate(&long.token, clock.now()).unwrap();
    assert_eq!(caller.credential_id, long.claims.jti);

    assert_eq!(
        direct::revoke(&b, &admin, &long.claims.jti).await.unwrap(),
        1
    );
    assert!(
        b.authn
            .introspect(&long.token, clock.now())
            .unwrap()
            .is_none()
    );
    assert!(b.authn.authenticate(&long.token, clock.now()).is_err());

    // About one second of life: cached as valid, then refused at its exp.
    let short = mint(Some(0.0002)).await.unwrap();
    assert!(
        b.authn
            .introspect(&short.token, clock.now())
            .unwrap()
            .is_some()
    );
    clock.set(short.claims.exp - 1);
    assert!(
        b.authn
            .introspect(&short.token, clock.now())
            .unwrap()
            .is_some(),
        "live until its exp"
    );
    clock.set(short.claims.exp);
    assert!(
        b.authn
            .introspect(&short.token, clock.now())
            .unwrap()
            .is_none()
    );
    let err = b.authn.authenticate(&short.token, clock.now()).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn revocations_are_remembered_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (token, jti) = {
        let b = open(dir.path(), &clock).await;
        let secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key")).unwrap();
        let admin = b.authn.authenticate(secret.trim(), clock.now()).unwrap();
        let minted = direct::mint(&b, &admin, &[], &[], None).await.unwrap();
        direct::revoke(&b, &admin, &minted.claims.jti)
            .await
            .unwrap();
        (minted.token, minted.claims.jti)
    };
    // The first broker's background tasks release sled's lock once they see it gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let b = loop {
        match Broker::open(config(dir.path()), MasterKeySource::File).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "not reopened: {e}");
                tokio::task::yield_now().await;
            }
        }
    };
    assert!(b.store().is_revoked(&jti), "loaded from the revoked tree");
    assert!(b.authn.introspect(&token, clock.now()).unwrap().is_none());
}

/// An authenticated key is served from the cache (the same shared view comes back) until a
/// subject or key is written; then the next authentication reads the store and sees the
/// change: a narrowed grant, a reset secret, a deleted key.
#[tokio::test]
async fn cached_keys_follow_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let b = open(dir.path(), &clock).await;
    let admin_secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key")).unwrap();
    let admin = b
        .authn
        .authenticate(admin_secret.trim(), clock.now())
        .unwrap();
    let both = ["read".to_owned(), "write".to_owned()];
    let key = direct::create_key(
        &b,
        &admin,
        NewKey {
            name: "cached",
            permissions: &both,
            ..NewKey::default()
        },
    )
    .await
    .unwrap();
    let id = key.record.id.clone();
    let secret = key.secret.expose().to_owned();

    let first = b.authn.authenticate(&secret, clock.now()).unwrap();
    let second = b.authn.authenticate(&secret, clock.now()).unwrap();
    assert!(
        Arc::ptr_eq(&first.view, &second.view),
        "second authentication is a cache hit"
    );
    assert!(first.grant.permissions.contains("write"));

    // Narrowed: the very next authentication holds only `read`.
    let changes = pb::AccessKey {
        permissions: vec!["read".to_owned()],
        ..pb::AccessKey::default()
    };
    direct::update_key(&b, &admin, &id, &["permissions".to_owned()], &changes)
        .await
        .unwrap();
    let narrowed = b.authn.authenticate(&secret, clock.now()).unwrap();
    assert!(!Arc::ptr_eq(&first.view, &narrowed.view), "read again");
    assert!(!narrowed.grant.permissions.contains("write"));
    assert!(narrowed.grant.permissions.contains("read"));

    // Reset without grace: the old secret is refused at once, the new one works.
    let reset = direct::reset_key(&b, &admin, &id).await.unwrap();
    let err = b.authn.authenticate(&secret, clock.now()).unwrap_err();
    assert!(err.to_string().contains("was reset"), "{err}");
    let renewed = b
        .authn
        .authenticate(reset.secret.expose(), clock.now())
        .unwrap();
    assert_eq!(renewed.credential_id, id);

    // Deleted: refused at once.
    direct::delete_key(&b, &admin, &id).await.unwrap();
    let err = b
        .authn
        .authenticate(reset.secret.expose(), clock.now())
        .unwrap_err();
    assert!(err.to_string().contains("unknown"), "{err}");
}
