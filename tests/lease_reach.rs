//! Leases follow their holder's reach (issue 9, attack 4): narrowing an access key revokes at
//! the vendor the upstream tokens it issued that no longer fit it, as it revokes its tokens,
//! and keeps the ones that still fit; deleting a key or its subject revokes its leases too.
//! The real broker, real gRPC, and a fake LaunchDarkly that is a real HTTP server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{fakes::*, *};
use prost_types::FieldMask;

/// Vendor destinations on loopback over http are allowed for the fakes.
const ENV: [(&str, &str); 2] = [
    (
        "TOKEN_BROKER_UPSTREAMS",
        "{ allow_insecure_http = true, allow_private_addresses = true }",
    ),
    ("TOKEN_BROKER_UPSTREAM_RETRY_BACKOFF", "10ms"),
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A broker with a LaunchDarkly upstream `ld` and a subject `alice` on `alpha`.
async fn setup(data: &std::path::Path) -> (Broker, FakeServer, String) {
    let fake = FakeLaunchDarkly::start(FakeConfig::default()).await;
    let b = Broker::start_in(data, &shipped_policies(), &ENV).await;
    let admin = b.admin_secret();
    let up = b
        .upstreams()
        .await
        .create_upstream(authed(
            pb::CreateUpstreamRequest {
                name: "ld".to_owned(),
                vendor: pb::Vendor::Launchdarkly as i32,
                base_url: fake.base_url(),
                credential: Some(pb::Credential {
                    token: FakeConfig::default().token,
                    ..Default::default()
                }),
                options: Default::default(),
                project_ids: Vec::new(),
                credential_expires_at: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
    create_subject(&b, &admin, "alice", &["alpha"], &["read", "write"]).await;
    (b, fake, admin)
}

/// Creates a key for `owner` with `perms`; returns (id, secret).
async fn key(b: &Broker, admin: &str, owner: &str, perms: &[&str]) -> (String, String) {
    let created = b
        .keys()
        .await
        .create_access_key(authed(
            pb::CreateAccessKeyRequest {
                owner: owner.to_owned(),
                name: format!("{owner}-key"),
                permissions: strings(perms),
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    (created.id, created.secret)
}

/// Issues a LaunchDarkly token on `alpha` with `perms`; returns the vendor token.
async fn issue(b: &Broker, credential: &str, perms: &[&str]) -> String {
    b.upstreams()
        .await
        .issue_upstream_token(authed(
            pb::IssueUpstreamTokenRequest {
                upstream: "ld".to_owned(),
                permissions: strings(perms),
                project_ids: strings(&["alpha"]),
                expires_in_hours: Some(1.0),
            },
            credential,
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Waits until `token` is dead at the vendor; the lease worker runs every 500 ms.
async fn until_revoked_at_vendor(fake: &FakeServer, token: &str, what: &str) {
    fake.wait_until(what, |f| !f.is_token_valid(token)).await;
}

/// The number of open leases of `ld`, as GetUpstream reports it.
async fn open_leases(b: &Broker, admin: &str) -> u32 {
    get_upstream(b, admin, "ld").await.live_leases
}

#[tokio::test]
async fn narrowing_a_key_revokes_its_leases_that_no_longer_fit() {
    let data = tempfile::tempdir().unwrap();
    let (mut b, fake, admin) = setup(data.path()).await;
    let (id, secret) = key(&b, &admin, "alice", &["read", "write"]).await;

    // The key itself holds a writer and a reader lease; a `read` token minted from it holds
    // another reader lease.
    let writer = issue(&b, &secret, &["write"]).await;
    let reader = issue(&b, &secret, &["read"]).await;
    let read_token = mint(&b, &secret, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    let token_reader = issue(&b, &read_token.access_token, &["read"]).await;
    for t in [&writer, &reader, &token_reader] {
        assert!(fake.is_token_valid(t));
    }
    assert_eq!(open_leases(&b, &admin).await, 3);

    b.keys()
        .await
        .update_access_key(authed(
            pb::UpdateAccessKeyRequest {
                id: id.clone(),
                update_mask: Some(FieldMask {
                    paths: strings(&["permissions"]),
                }),
                key: Some(pb::AccessKey {
                    permissions: strings(&["read"]),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap();

    until_revoked_at_vendor(&fake, &writer, "the writer lease outlived the narrowing").await;
    // The writer was revoked by a worker pass that had every misfit due: what is left fits.
    assert!(fake.is_token_valid(&reader), "a fitting lease was revoked");
    assert!(
        fake.is_token_valid(&token_reader),
        "a fitting lease was revoked"
    );
    assert_eq!(open_leases(&b, &admin).await, 2);
    // The narrowed key still issues what fits, and no longer what does not.
    assert!(fake.is_token_valid(&issue(&b, &secret, &["read"]).await));
    let err = b
        .upstreams()
        .await
        .issue_upstream_token(authed(
            pb::IssueUpstreamTokenRequest {
                upstream: "ld".to_owned(),
                permissions: strings(&["write"]),
                project_ids: strings(&["alpha"]),
                expires_in_hours: Some(1.0),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    assert_serving(&mut b).await;
}

#[tokio::test]
async fn deleting_a_key_or_its_subject_revokes_its_leases() {
    let data = tempfile::tempdir().unwrap();
    let (mut b, fake, admin) = setup(data.path()).await;
    create_subject(&b, &admin, "bob", &["alpha"], &["read"]).await;
    let (gone, gone_secret) = key(&b, &admin, "alice", &["read"]).await;
    let (_kept, kept_secret) = key(&b, &admin, "alice", &["read"]).await;
    let (_bobs, bobs_secret) = key(&b, &admin, "bob", &["read"]).await;
    let from_gone = issue(&b, &gone_secret, &["read"]).await;
    let from_kept = issue(&b, &kept_secret, &["read"]).await;
    let bobs_token = mint(&b, &bobs_secret, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    let from_bob = issue(&b, &bobs_token.access_token, &["read"]).await;

    b.keys()
        .await
        .delete_access_key(authed(pb::DeleteAccessKeyRequest { id: gone }, &admin))
        .await
        .unwrap();
    until_revoked_at_vendor(&fake, &from_gone, "a deleted key's lease stayed live").await;
    assert!(
        fake.is_token_valid(&from_kept),
        "another key's lease was revoked"
    );

    b.subjects()
        .await
        .delete_subject(authed(
            pb::DeleteSubjectRequest {
                subject_id: "bob".to_owned(),
            },
            &admin,
        ))
        .await
        .unwrap();
    until_revoked_at_vendor(&fake, &from_bob, "a deleted subject's lease stayed live").await;
    assert!(
        fake.is_token_valid(&from_kept),
        "another subject's lease was revoked"
    );
    assert_eq!(open_leases(&b, &admin).await, 1);
    assert_serving(&mut b).await;
}
