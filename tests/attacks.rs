//! Issue 9's attacks on the credential-changing paths, each against the real server as an
//! attacker would send it: a down-scoped token or restricted key tries to obtain more than it
//! holds (attacks 2 and 3), to abuse a reset grace (7), to store an instant no client can read
//! back (8), to spoof a listing (10); and the data dir must be private (11). Each ends with the
//! server still answering health SERVING.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{create_access_key as create, update_access_key as update, *};
use prost_types::Timestamp;
use tonic::Code;

fn now() -> i64 {
    wall_now()
}

async fn reset(
    b: &Broker,
    cred: &str,
    id: &str,
    grace_until: Option<i64>,
) -> Result<pb::ResetAccessKeyResponse, tonic::Status> {
    b.keys()
        .await
        .reset_access_key(authed(
            pb::ResetAccessKeyRequest {
                id: id.to_owned(),
                old_secret_expires_at: grace_until.map(|seconds| Timestamp { seconds, nanos: 0 }),
            },
            cred,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn key_req(owner: &str, projects: &[&str], perms: &[&str]) -> pb::CreateAccessKeyRequest {
    pb::CreateAccessKeyRequest {
        owner: owner.to_owned(),
        name: "attempt".to_owned(),
        project_ids: strings(projects),
        permissions: strings(perms),
        ..Default::default()
    }
}

fn denied(result: Result<impl std::fmt::Debug, tonic::Status>, mentions: &str) {
    let err = result.expect_err("the attack must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(mentions), "{}", err.message());
}

async fn token(b: &Broker, cred: &str, projects: &[&str], perms: &[&str], hours: f64) -> String {
    mint(b, cred, projects, perms, Some(hours))
        .await
        .unwrap()
        .access_token
}

/// Attack 2: a down-scoped token turns itself into a full key, or takes its owner's key.
#[tokio::test]
async fn a_down_scoped_token_obtains_no_wider_key() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha", "beta"], &["read", "write"]).await;
    let alice_key = create_key(&b, &admin, "alice", &["read", "write"]).await;

    // The admin's {alpha; read; 1 h} token asks for a full admin key.
    let admin_token = token(&b, &admin, &["alpha"], &["read"], 1.0).await;
    denied(
        create(&b, &admin_token, key_req("admin", &["*"], &["admin"])).await,
        "request exceeds",
    );
    // Alice's {alpha; read; 1 h} token asks for a never-expiring wider key.
    let alice_token = token(&b, &alice_key, &["alpha"], &["read"], 1.0).await;
    denied(
        create(
            &b,
            &alice_token,
            key_req("", &["alpha", "beta"], &["read", "write"]),
        )
        .await,
        "`beta`",
    );
    // A key within the token is allowed, and ends within the token's hour.
    let within = create(&b, &alice_token, key_req("", &["alpha"], &["read"]))
        .await
        .unwrap();
    let end = within.key.unwrap().expires_at.unwrap().seconds;
    assert!(end > now() && end <= now() + 3600, "{end}");
    // Asking for a later end is refused, never narrowed.
    let mut later = key_req("", &["alpha"], &["read"]);
    later.expires_at = Some(Timestamp {
        seconds: now() + 7200,
        nanos: 0,
    });
    denied(create(&b, &alice_token, later).await, "lifetime");

    // The token resets its owner's wider key to take its secret: refused, key untouched.
    let alice_key_id = b
        .keys()
        .await
        .list_access_keys(authed(pb::ListAccessKeysRequest::default(), &alice_key))
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .find(|k| k.name == "alice-key")
        .unwrap()
        .id;
    denied(
        reset(&b, &alice_token, &alice_key_id, None).await,
        "request exceeds",
    );
    assert!(
        mint(&b, &alice_key, &[], &["read"], Some(1.0))
            .await
            .is_ok()
    );

    // A key made by a token dies with the token, and so do the key a made key makes and the
    // tokens minted from either.
    let made = within.secret;
    let made_token = token(&b, &made, &[], &[], 0.5).await;
    let grandchild = create(&b, &made, key_req("", &["alpha"], &["read"]))
        .await
        .unwrap()
        .secret;
    assert!(mint(&b, &grandchild, &[], &[], Some(0.5)).await.is_ok());
    let jti = introspect(&b, &alice_key, &alice_token).await.jti;
    b.tokens()
        .await
        .revoke_access_token(authed(
            pb::RevokeAccessTokenRequest {
                jti,
                ..Default::default()
            },
            &alice_key,
        ))
        .await
        .unwrap();
    for dead in [&made, &grandchild] {
        let err = mint(&b, dead, &[], &[], Some(0.5)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    assert!(!introspect(&b, &alice_key, &made_token).await.active);
    assert_serving(&mut b).await;
}

/// Attack 3: a restricted key, or a token under it, lifts its own restriction; a restricted
/// admin key takes another admin key's secret.
#[tokio::test]
async fn a_restricted_credential_cannot_lift_its_restrictions() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "carol", &["alpha"], &["read", "write"]).await;
    let mut req = key_req("carol", &[], &["read", "write"]);
    req.roles = strings(&["reader"]);
    let reader = create(&b, &admin, req).await.unwrap();
    let reader_id = reader.id.clone();

    // The key clears its own roles: refused, and it still cannot mint `write`.
    denied(
        update(
            &b,
            &reader.secret,
            &reader_id,
            &["roles"],
            pb::AccessKey::default(),
        )
        .await,
        "roles `reader`",
    );
    assert_eq!(
        mint(&b, &reader.secret, &[], &["write"], Some(1.0))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // A token minted under it tries the same on its root key.
    let under = token(&b, &reader.secret, &[], &["read"], 1.0).await;
    denied(
        update(&b, &under, &reader_id, &["roles"], pb::AccessKey::default()).await,
        "roles `reader`",
    );
    // It creates a key without the restriction: refused; with none named it inherits them.
    let mut unrestricted = key_req("", &["alpha"], &["read"]);
    unrestricted.roles = strings(&["writer"]);
    denied(create(&b, &reader.secret, unrestricted).await, "roles");
    let inherited = create(&b, &reader.secret, key_req("", &["alpha"], &["read"]))
        .await
        .unwrap();
    assert_eq!(inherited.key.unwrap().roles, strings(&["reader"]));

    // A token clears its root key's inline policy.
    let mut req = key_req("carol", &[], &["read", "write"]);
    req.inline_policy = "permit (principal, action, resource);".to_owned();
    let inline = create(&b, &admin, req).await.unwrap();
    let under_inline = token(&b, &inline.secret, &[], &["read"], 1.0).await;
    denied(
        update(
            &b,
            &under_inline,
            &inline.id,
            &["inline_policy"],
            pb::AccessKey::default(),
        )
        .await,
        "inline policy",
    );

    // An admin key restricted to `reader` resets another admin key: refused.
    let mut req = key_req("admin", &[], &["admin"]);
    req.roles = strings(&["reader"]);
    let restricted_admin = create(&b, &admin, req).await.unwrap();
    let other_admin = create(&b, &admin, key_req("admin", &[], &["admin"]))
        .await
        .unwrap();
    denied(
        reset(&b, &restricted_admin.secret, &other_admin.id, None).await,
        "roles `reader`",
    );
    // Its restrictions are Cedar text bound to its own subject: it makes no key for another.
    let mut for_carol = key_req("carol", &["alpha"], &["read"]);
    for_carol.roles = strings(&["reader"]);
    denied(
        create(&b, &restricted_admin.secret, for_carol).await,
        "manage keys of `admin` only",
    );
    // ... and cannot lift its own restriction either, though it is an admin.
    denied(
        update(
            &b,
            &restricted_admin.secret,
            &restricted_admin.id,
            &["roles"],
            pb::AccessKey::default(),
        )
        .await,
        "roles `reader`",
    );
    // The unrestricted admin may.
    let lifted = update(
        &b,
        &admin,
        &restricted_admin.id,
        &["roles"],
        pb::AccessKey::default(),
    )
    .await
    .unwrap();
    assert!(lifted.roles.is_empty());
    assert_serving(&mut b).await;
}

/// Attack 7: an unbounded, fully privileged reset grace.
#[tokio::test]
async fn reset_grace_is_bounded_and_the_old_secret_only_mints() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "dave", &["alpha"], &["read"]).await;
    let created = create(&b, &admin, key_req("dave", &[], &["read"]))
        .await
        .unwrap();

    let err = reset(&b, &admin, &created.id, Some(253_402_300_799))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("max_reset_grace"),
        "{}",
        err.message()
    );

    let grace_end = now() + 3600;
    let fresh = reset(&b, &created.secret, &created.id, Some(grace_end))
        .await
        .unwrap();
    let old = created.secret;
    // The old secret mints, within its grace ...
    let minted = mint(&b, &old, &[], &[], None).await.unwrap();
    assert!(
        minted.expires_at.unwrap().seconds <= grace_end,
        "a token from the old secret outlives its grace"
    );
    // ... but cannot reset (locking out the new secret), update or delete the key.
    denied(reset(&b, &old, &created.id, None).await, "grace");
    denied(
        update(
            &b,
            &old,
            &created.id,
            &["name"],
            pb::AccessKey {
                name: "x".into(),
                ..Default::default()
            },
        )
        .await,
        "grace",
    );
    let err = delete_access_key(&b, &old, &created.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Nor can a token minted from the old secret, or its child, do what the old secret may not.
    let child = token(&b, &minted.access_token, &[], &[], 0.25).await;
    for from_old in [&minted.access_token, &child] {
        denied(
            reset(&b, from_old, &created.id, None).await,
            "replaced by a reset",
        );
        let err = delete_access_key(&b, from_old, &created.id)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        denied(
            create(&b, from_old, key_req("", &[], &["read"])).await,
            "replaced by a reset",
        );
    }
    assert!(mint(&b, &fresh.secret, &[], &[], None).await.is_ok());
    assert_serving(&mut b).await;
}

/// Attack 8: an expiry no JSON client can read back.
#[tokio::test]
async fn timestamps_are_range_checked() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    for (seconds, nanos, mentions) in [
        (1i64 << 62, 0, "9999-12-31"),
        (-(1i64 << 62), 0, "9999-12-31"),
        (now() + 3600, -5, "nanos"),
        (now() + 3600, 1_000_000_000, "nanos"),
        (now() + 20 * 365 * 86400, 0, "max_key_lifetime"),
    ] {
        let mut req = key_req("admin", &[], &["read"]);
        req.expires_at = Some(Timestamp { seconds, nanos });
        let err = create(&b, &admin, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{seconds}: {err:?}");
        assert!(err.message().contains(mentions), "{}", err.message());
    }
    let created = create(&b, &admin, key_req("admin", &[], &["read"]))
        .await
        .unwrap();
    let err = update(
        &b,
        &admin,
        &created.id,
        &["expires_at"],
        pb::AccessKey {
            expires_at: Some(Timestamp {
                seconds: 1 << 62,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Nothing was stored: the key reads back as before, with no expiry.
    let got = b
        .keys()
        .await
        .get_access_key(authed(
            pb::GetAccessKeyRequest {
                id: created.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.expires_at.map(|t| t.seconds).unwrap_or(0), 0);
    assert_serving(&mut b).await;
}

/// Attack 10: names with NUL or a right-to-left override spoof listings.
#[tokio::test]
async fn names_refuse_control_and_bidi_characters() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    for (name, description) in [
        ("ci\0key", ""),
        ("yek-nimda\u{202E}", ""),
        ("ok", "line\u{2066}isolate"),
        ("bell\u{7}", ""),
    ] {
        let mut req = key_req("admin", &[], &["read"]);
        req.name = name.to_owned();
        req.description = description.to_owned();
        let err = create(&b, &admin, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
        assert!(err.message().contains("U+"), "{}", err.message());
    }
    let created = create(&b, &admin, key_req("admin", &[], &["read"]))
        .await
        .unwrap();
    let err = update(
        &b,
        &admin,
        &created.id,
        &["name"],
        pb::AccessKey {
            name: "admin\u{202E}".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_serving(&mut b).await;
}

/// Attack 11: sled's files were world-readable.
#[tokio::test]
async fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "erin", &["alpha"], &["read"]).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&b.data_dir), 0o700);
    let files = files_under(&b.data_dir);
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        assert_eq!(
            mode(&file) & 0o077,
            0,
            "{} is open to others",
            file.display()
        );
    }
    assert_serving(&mut b).await;
}

/// Making a key does not restart a delegation chain: the key sits at its token's depth.
#[tokio::test]
async fn a_key_made_by_a_token_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(
        dir.path(),
        &shipped_policies(),
        &[("TOKEN_BROKER_MAX_DELEGATION_DEPTH", "1")],
    )
    .await;
    let admin = b.admin_secret();
    let t0 = token(&b, &admin, &["alpha"], &["read"], 1.0).await;
    let t1 = token(&b, &t0, &[], &[], 0.5).await;
    // At the maximum depth: no token and no key.
    denied(mint(&b, &t1, &[], &[], None).await, "depth");
    denied(
        create(&b, &t1, key_req("", &["alpha"], &["read"])).await,
        "depth",
    );
    // A key made at depth 0 mints at depth 1, whose tokens can go no further.
    let made = create(&b, &t0, key_req("", &["alpha"], &["read"]))
        .await
        .unwrap()
        .secret;
    let from_made = token(&b, &made, &[], &[], 0.5).await;
    assert_eq!(introspect(&b, &admin, &from_made).await.depth, 1);
    denied(mint(&b, &from_made, &[], &[], None).await, "depth");
    assert_serving(&mut b).await;
}
