//! The verified-token cache and the in-memory revoked index, in process: a token cached as
//! valid a moment ago is refused at once after its revocation, and at its expiry.
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
    broker::{self, Broker, MasterKeySource},
    config::Config,
};

async fn open(dir: &Path) -> Arc<Broker> {
    let config = Config {
        data_dir: dir.to_owned(),
        policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..Config::default()
    };
    Broker::open(config, MasterKeySource::File).await.unwrap()
}

#[tokio::test]
async fn cached_tokens_die_at_revocation_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let admin_secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key")).unwrap();
    let now = broker::now();
    let admin = b.authn.authenticate(admin_secret.trim(), now).unwrap();

    let read = ["read".to_owned()];
    let mint = |hours: Option<f64>| direct::mint(&b, &admin, &[], &read, hours);
    let long = mint(Some(1.0)).await.unwrap();
    // Verified once, then served from the cache (the same shared value comes back).
    let first = b
        .authn
        .introspect(&long.token, broker::now())
        .unwrap()
        .unwrap();
    let second = b
        .authn
        .introspect(&long.token, broker::now())
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&first, &second), "second lookup is a cache hit");
    // A token minted from the cached one works too.
    let caller = b.authn.authenticate(&long.token, broker::now()).unwrap();
    assert_eq!(caller.credential_id, long.claims.jti);

    assert_eq!(
        direct::revoke(&b, &admin, &long.claims.jti).await.unwrap(),
        1
    );
    assert!(
        b.authn
            .introspect(&long.token, broker::now())
            .unwrap()
            .is_none()
    );
    assert!(b.authn.authenticate(&long.token, broker::now()).is_err());

    // About one second of life: cached as valid, then refused at its exp.
    let short = mint(Some(0.0002)).await.unwrap();
    assert!(
        b.authn
            .introspect(&short.token, broker::now())
            .unwrap()
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        b.authn
            .introspect(&short.token, broker::now())
            .unwrap()
            .is_none()
    );
    let err = b
        .authn
        .authenticate(&short.token, broker::now())
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn revocations_are_remembered_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (token, jti) = {
        let b = open(dir.path()).await;
        let secret = std::fs::read_to_string(dir.path().join("bootstrap-admin.key")).unwrap();
        let admin = b.authn.authenticate(secret.trim(), broker::now()).unwrap();
        let minted = direct::mint(&b, &admin, &[], &[], None).await.unwrap();
        direct::revoke(&b, &admin, &minted.claims.jti)
            .await
            .unwrap();
        (minted.token, minted.claims.jti)
    };
    // The first broker's background tasks release sled's lock once they see it gone.
    let mut reopened = None;
    for _ in 0..100 {
        let config = Config {
            data_dir: dir.path().to_owned(),
            policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            ..Config::default()
        };
        match Broker::open(config, MasterKeySource::File).await {
            Ok(b) => {
                reopened = Some(b);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let b = reopened.expect("reopened");
    assert!(b.store().is_revoked(&jti), "loaded from the revoked tree");
    assert!(b.authn.introspect(&token, broker::now()).unwrap().is_none());
}
