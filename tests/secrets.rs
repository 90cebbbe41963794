//! No secret in the logs or the stored files: a full flow is run, then every secret it
//! created is searched for in what the broker logged and wrote.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::*;

#[tokio::test]
async fn no_secret_in_logs_or_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha", "beta"], &["read", "write"]).await;
    let key = create_key(&b, &admin, "alice", &["read", "write"]).await;
    let root = mint(&b, &key, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    let child = mint(&b, &root.access_token, &[], &[], Some(0.5))
        .await
        .unwrap();
    // Refusals and bad input log too.
    let _ = mint(&b, &root.access_token, &["beta"], &[], None)
        .await
        .unwrap_err();
    let _ = mint(&b, &format!("{key}x"), &[], &[], None)
        .await
        .unwrap_err();
    introspect(&b, &admin, &child.access_token).await;
    b.tokens()
        .await
        .revoke_access_token(authed(
            pb::RevokeAccessTokenRequest {
                token: root.access_token.clone(),
                jti: String::new(),
            },
            &key,
        ))
        .await
        .unwrap();
    assert!(b.terminate().await.success());

    let master = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let secrets = [
        admin.as_str(),
        key.as_str(),
        root.access_token.as_str(),
        child.access_token.as_str(),
        master.trim(),
    ];
    let logs = b.logs();
    assert!(logs.contains("rpc finished"), "logs were captured: {logs}");
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    // Tokens are not stored at all; key secrets only as hashes.
    for file in files_under(&dir.path().join("db")) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in &secrets[..4] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret is stored in clear in {}",
                file.display()
            );
        }
    }
}
