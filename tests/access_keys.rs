//! The access-key lifecycle over real gRPC: every RPC, the seed error cases, paging, reset
//! with a grace period, narrowing, deletion, inline policies and roles, expiry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::collections::HashSet;

use common::{create_access_key as create, update_access_key as update, *};
use prost_types::Timestamp;
use tonic::Code;

/// The time for tests that never move the broker's clock (the others use `b.now()`).
fn now() -> i64 {
    wall_now()
}

fn new_key(name: &str, projects: &[&str], perms: &[&str]) -> pb::CreateAccessKeyRequest {
    pb::CreateAccessKeyRequest {
        name: name.to_owned(),
        project_ids: strings(projects),
        permissions: strings(perms),
        ..Default::default()
    }
}

async fn list(
    b: &Broker,
    cred: &str,
    req: pb::ListAccessKeysRequest,
) -> Result<pb::ListAccessKeysResponse, tonic::Status> {
    b.keys()
        .await
        .list_access_keys(authed(req, cred))
        .await
        .map(tonic::Response::into_inner)
}

async fn start_with_alice(env: &[(&str, &str)]) -> (Broker, tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_in(dir.path(), &shipped_policies(), env).await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha", "beta"], &["read", "write"]).await;
    create_subject(&b, &admin, "bob", &["alpha"], &["read"]).await;
    let alice = create_key(&b, &admin, "alice", &["read", "write"]).await;
    (b, dir, admin, alice)
}

#[tokio::test]
async fn create_refusals_follow_the_seeds() {
    let (b, _dir, admin, alice) =
        start_with_alice(&[("TOKEN_BROKER_MAX_KEYS_PER_OWNER", "3")]).await;

    let cases: Vec<(&str, pb::CreateAccessKeyRequest, Code, &str)> = vec![
        (
            "missing name",
            new_key("", &[], &["read"]),
            Code::InvalidArgument,
            "name",
        ),
        (
            "empty permissions",
            new_key("k", &[], &[]),
            Code::InvalidArgument,
            "permissions",
        ),
        (
            "unknown permission",
            new_key("k", &[], &["fly"]),
            Code::InvalidArgument,
            "permissions[0]",
        ),
        (
            "past expiry",
            pb::CreateAccessKeyRequest {
                expires_at: Some(Timestamp {
                    seconds: now() - 10,
                    nanos: 0,
                }),
                ..new_key("k", &[], &["read"])
            },
            Code::InvalidArgument,
            "expires_at",
        ),
        (
            "bad inline policy",
            pb::CreateAccessKeyRequest {
                inline_policy: "permit (principal, action, resource) when { context.nope };".into(),
                ..new_key("k", &[], &["read"])
            },
            Code::InvalidArgument,
            "inline_policy",
        ),
        (
            "unknown role",
            pb::CreateAccessKeyRequest {
                roles: strings(&["superuser"]),
                ..new_key("k", &[], &["read"])
            },
            Code::InvalidArgument,
            "roles[0]",
        ),
        (
            "service key for a user",
            pb::CreateAccessKeyRequest {
                service: true,
                ..new_key("k", &[], &["read"])
            },
            Code::InvalidArgument,
            "service",
        ),
    ];
    for (name, req, code, field) in cases {
        let err = create(&b, &alice, req).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            field_of(&err).iter().any(|f| f == field),
            "{name}: {:?}",
            field_of(&err)
        );
    }
    let err = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            inline_policy: "permit (principal, action, resource) when { context.nope };".into(),
            ..new_key("k", &[], &["read"])
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("nope"),
        "carries Cedar's diagnostic: {}",
        err.message()
    );

    // Wider than the owner.
    let err = create(&b, &alice, new_key("k", &["gamma"], &["read"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("`gamma`"), "{}", err.message());
    let err = create(&b, &alice, new_key("k", &[], &["admin"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Someone else's: Bitbucket's "may not act on behalf of".
    let err = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            owner: "bob".into(),
            ..new_key("k", &[], &["read"])
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("may not act on behalf of `bob`"),
        "{}",
        err.message()
    );

    // The per-owner maximum (alice holds 1 key; the limit is 3).
    create(&b, &alice, new_key("two", &[], &["read"]))
        .await
        .unwrap();
    create(&b, &alice, new_key("three", &[], &["read"]))
        .await
        .unwrap();
    let err = create(&b, &alice, new_key("four", &[], &["read"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("maximum number of access keys"),
        "{}",
        err.message()
    );
    // An admin is bound by the same maximum for alice, and a delete frees a slot.
    let err = create(
        &b,
        &admin,
        pb::CreateAccessKeyRequest {
            owner: "alice".into(),
            ..new_key("five", &[], &["read"])
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let listed = list(
        &b,
        &alice,
        pb::ListAccessKeysRequest {
            filter: "name = two".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let two = &listed.keys[0].id;
    b.keys()
        .await
        .delete_access_key(authed(
            pb::DeleteAccessKeyRequest { id: two.clone() },
            &alice,
        ))
        .await
        .unwrap();
    create(&b, &alice, new_key("four", &[], &["read"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn get_update_delete_reset_guard_ownership_and_unknown_ids() {
    let (b, _dir, admin, alice) = start_with_alice(&[]).await;
    let bob_key = create(
        &b,
        &admin,
        pb::CreateAccessKeyRequest {
            owner: "bob".into(),
            ..new_key("bobs", &[], &["read"])
        },
    )
    .await
    .unwrap();
    let mut keys = b.keys().await;

    // Someone else's key.
    let id = bob_key.id.clone();
    let errs = vec![
        keys.get_access_key(authed(pb::GetAccessKeyRequest { id: id.clone() }, &alice))
            .await
            .map(|_| ())
            .unwrap_err(),
        update(
            &b,
            &alice,
            &id,
            &["name"],
            pb::AccessKey {
                name: "mine".into(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .unwrap_err(),
        keys.delete_access_key(authed(
            pb::DeleteAccessKeyRequest { id: id.clone() },
            &alice,
        ))
        .await
        .map(|_| ())
        .unwrap_err(),
        keys.reset_access_key(authed(
            pb::ResetAccessKeyRequest {
                id: id.clone(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .map(|_| ())
        .unwrap_err(),
        list(
            &b,
            &alice,
            pb::ListAccessKeysRequest {
                owner: "bob".into(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .unwrap_err(),
        list(
            &b,
            &alice,
            pb::ListAccessKeysRequest {
                show_all: true,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .unwrap_err(),
    ];
    for err in errs {
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    }
    // The admin may; bob's key is unchanged by alice's attempts.
    let got = keys
        .get_access_key(authed(pb::GetAccessKeyRequest { id: id.clone() }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "bobs");
    assert_eq!(
        got.secret_prefix,
        bob_key.key.as_ref().unwrap().secret_prefix
    );

    // Unknown ids are NOT_FOUND for everyone.
    for cred in [&alice, &admin] {
        let unknown = "ak_0000".to_owned();
        let errs = vec![
            keys.get_access_key(authed(
                pb::GetAccessKeyRequest {
                    id: unknown.clone(),
                },
                cred,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
            update(
                &b,
                cred,
                &unknown,
                &["name"],
                pb::AccessKey {
                    name: "x".into(),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .unwrap_err(),
            keys.delete_access_key(authed(
                pb::DeleteAccessKeyRequest {
                    id: unknown.clone(),
                },
                cred,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
            keys.reset_access_key(authed(
                pb::ResetAccessKeyRequest {
                    id: unknown.clone(),
                    ..Default::default()
                },
                cred,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.code(), Code::NotFound, "{}", err.message());
        }
    }

    // Bad update masks.
    let own = create(&b, &alice, new_key("own", &["alpha"], &["read"]))
        .await
        .unwrap();
    let err = update(&b, &alice, &own.id, &[], pb::AccessKey::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = update(&b, &alice, &own.id, &["owner"], pb::AccessKey::default())
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), vec!["update_mask.paths[0]"]);

    // Fields outside the mask are not altered.
    let updated = update(
        &b,
        &alice,
        &own.id,
        &["description"],
        pb::AccessKey {
            description: "laptop".into(),
            name: "ignored".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.description, "laptop");
    assert_eq!(updated.name, "own");
    assert_eq!(updated.permissions, vec!["read"]);
    // A non-admin may not widen; an admin may, within the owner's grant.
    let err = update(
        &b,
        &alice,
        &own.id,
        &["permissions"],
        pb::AccessKey {
            permissions: strings(&["write"]),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let widened = update(
        &b,
        &admin,
        &own.id,
        &["permissions"],
        pb::AccessKey {
            permissions: strings(&["write"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(widened.permissions, vec!["write"]);
    let err = update(
        &b,
        &admin,
        &own.id,
        &["permissions"],
        pb::AccessKey {
            permissions: strings(&["admin"]),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "never beyond the owner");
}

#[tokio::test]
async fn paging_returns_every_key_once_in_order_despite_changes() {
    let (b, _dir, _admin, alice) =
        start_with_alice(&[("TOKEN_BROKER_MAX_KEYS_PER_OWNER", "200")]).await;
    let mut ids_by_name = std::collections::BTreeMap::new();
    for i in 0..119 {
        let name = format!("key-{i:03}");
        let k = create(&b, &alice, new_key(&name, &[], &["read"]))
            .await
            .unwrap();
        ids_by_name.insert(name, k.id);
    }
    // With alice's first key ("alice-key"), 120 keys.
    let query = |token: String| pb::ListAccessKeysRequest {
        page_size: 25,
        page_token: token,
        order_by: "name desc".into(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut deleted = HashSet::new();
    let mut pages = 0;
    loop {
        let page = list(&b, &alice, query(token)).await.unwrap();
        if pages == 0 {
            assert_eq!(page.total_size, 120);
        }
        assert!(page.keys.len() <= 25);
        seen.extend(page.keys.iter().map(|k| k.name.clone()));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Between pages: delete one key not yet seen and one already seen, create two new.
        if pages == 2 {
            for name in ["key-010", "key-110"] {
                let id = ids_by_name[name].clone();
                b.keys()
                    .await
                    .delete_access_key(authed(pb::DeleteAccessKeyRequest { id }, &alice))
                    .await
                    .unwrap();
                deleted.insert(name.to_owned());
            }
            create(&b, &alice, new_key("key-000a", &[], &["read"]))
                .await
                .unwrap();
            create(&b, &alice, new_key("key-999", &[], &["read"]))
                .await
                .unwrap();
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "in the requested order");
    for name in ids_by_name.keys() {
        if name == "key-010" {
            assert!(!seen.contains(name), "deleted before its page");
        } else {
            assert!(seen.contains(name), "{name} listed");
        }
    }
    assert!(
        seen.contains(&"key-110".to_owned()),
        "listed before it was deleted"
    );
    assert!(
        seen.contains(&"key-000a".to_owned()),
        "created ahead of the cursor"
    );
    assert!(
        !seen.contains(&"key-999".to_owned()),
        "created behind the cursor"
    );

    // Offset (LaunchDarkly) and total_size with a filter.
    let page = list(
        &b,
        &alice,
        pb::ListAccessKeysRequest {
            offset: 5,
            page_size: 3,
            order_by: "name".into(),
            filter: "name ~ key-0".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.keys
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>(),
        ["key-004", "key-005", "key-006"]
    );
    assert_eq!(page.total_size, 100);

    // Bad queries.
    for (req, field) in [
        (
            pb::ListAccessKeysRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAccessKeysRequest {
                filter: "colour ~ red".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            pb::ListAccessKeysRequest {
                order_by: "size desc".into(),
                ..Default::default()
            },
            "order_by",
        ),
        (
            pb::ListAccessKeysRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
    ] {
        let err = list(&b, &alice, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(field_of(&err), vec![field]);
    }
    // A token from one query does not continue another.
    let first = list(&b, &alice, query(String::new())).await.unwrap();
    let err = list(
        &b,
        &alice,
        pb::ListAccessKeysRequest {
            page_token: first.next_page_token,
            order_by: "name".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err), vec!["page_token"]);
}

#[tokio::test]
async fn reset_keeps_the_old_secret_until_the_grace_time() {
    let (b, _dir, _admin, alice) = start_with_alice(&[]).await;
    let key = create(&b, &alice, new_key("rotating", &[], &["read"]))
        .await
        .unwrap();
    let old = key.secret.clone();
    let reset = b
        .keys()
        .await
        .reset_access_key(authed(
            pb::ResetAccessKeyRequest {
                id: key.id.clone(),
                old_secret_expires_at: Some(Timestamp {
                    seconds: b.now() + 2,
                    nanos: 0,
                }),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(reset.secret, old);
    assert!(
        reset
            .secret
            .starts_with(&reset.key.as_ref().unwrap().secret_prefix)
    );
    mint(&b, &old, &[], &[], None).await.unwrap();
    mint(&b, &reset.secret, &[], &[], None).await.unwrap();
    b.advance_clock(3);
    let err = mint(&b, &old, &[], &[], None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    mint(&b, &reset.secret, &[], &[], None).await.unwrap();

    // Without a grace time the old secret stops at once.
    let again = b
        .keys()
        .await
        .reset_access_key(authed(
            pb::ResetAccessKeyRequest {
                id: key.id.clone(),
                ..Default::default()
            },
            &reset.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mint(&b, &reset.secret, &[], &[], None)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    mint(&b, &again.secret, &[], &[], None).await.unwrap();
}

#[tokio::test]
async fn narrowing_revokes_exactly_what_no_longer_fits_and_delete_revokes_all() {
    let (b, _dir, _admin, alice) = start_with_alice(&[]).await;
    let key = create(
        &b,
        &alice,
        new_key("wide", &["alpha", "beta"], &["read", "write"]),
    )
    .await
    .unwrap();
    let s = &key.secret;
    let alpha_read = mint(&b, s, &["alpha"], &["read"], None).await.unwrap();
    let beta_read = mint(&b, s, &["beta"], &["read"], None).await.unwrap();
    let alpha_write = mint(&b, s, &["alpha"], &["write"], None).await.unwrap();
    let beta_child = mint(&b, &beta_read.access_token, &[], &[], None)
        .await
        .unwrap();
    let alpha_child = mint(&b, &alpha_read.access_token, &[], &[], None)
        .await
        .unwrap();
    let active = |t: &pb::CreateAccessTokenResponse| {
        let t = t.access_token.clone();
        let (b, s) = (&b, s.clone());
        async move { introspect(b, &s, &t).await.active }
    };

    update(
        &b,
        &alice,
        &key.id,
        &["project_ids"],
        pb::AccessKey {
            project_ids: strings(&["alpha"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(active(&alpha_read).await && active(&alpha_write).await && active(&alpha_child).await);
    assert!(!active(&beta_read).await && !active(&beta_child).await);

    update(
        &b,
        &alice,
        &key.id,
        &["permissions"],
        pb::AccessKey {
            permissions: strings(&["read"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(active(&alpha_read).await && active(&alpha_child).await);
    assert!(!active(&alpha_write).await);

    let deleted = b
        .keys()
        .await
        .delete_access_key(authed(
            pb::DeleteAccessKeyRequest { id: key.id.clone() },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.revoked_tokens, 2);
    for t in [&alpha_read, &alpha_child] {
        assert!(!introspect(&b, &alice, &t.access_token).await.active);
    }
    assert_eq!(
        mint(&b, s, &[], &[], None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn inline_policy_and_roles_only_narrow() {
    let (b, _dir, admin, alice) = start_with_alice(&[]).await;
    let forbid_beta_write = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"CreateAccessToken", resource)
        when { context.requested.permissions.contains("write") && context.requested.projects.contains("beta") };
    "#;
    let plain = create(&b, &alice, new_key("plain", &[], &["read", "write"]))
        .await
        .unwrap();
    let narrowed = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            inline_policy: forbid_beta_write.into(),
            ..new_key("narrowed", &[], &["read", "write"])
        },
    )
    .await
    .unwrap();
    assert_eq!(
        narrowed.key.as_ref().unwrap().inline_policy,
        forbid_beta_write
    );

    mint(&b, &plain.secret, &["beta"], &["write"], None)
        .await
        .unwrap();
    let err = mint(&b, &narrowed.secret, &["beta"], &["write"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(&narrowed.id), "{}", err.message());
    mint(&b, &narrowed.secret, &["alpha"], &["write"], None)
        .await
        .unwrap();
    // A token minted from a key carries the key's policy into every request it makes.
    let quiet = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            inline_policy: "permit (principal, action, resource);\nforbid (principal, action == Action::\"IntrospectToken\", resource);".into(),
            ..new_key("quiet", &[], &["read"])
        },
    )
    .await
    .unwrap();
    let token = mint(&b, &quiet.secret, &[], &[], None).await.unwrap();
    let err = b
        .tokens()
        .await
        .introspect_token(authed(
            pb::IntrospectTokenRequest {
                token: token.access_token.clone(),
            },
            &token.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        introspect(&b, &plain.secret, &token.access_token)
            .await
            .active
    );

    // The reader role: tokens hold at most read.
    let reader = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            roles: strings(&["reader"]),
            ..new_key("reader", &[], &["read", "write"])
        },
    )
    .await
    .unwrap();
    assert_eq!(
        mint(&b, &reader.secret, &[], &["write"], None)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    mint(&b, &reader.secret, &[], &["read"], None)
        .await
        .unwrap();

    // Changing an inline policy may widen the key: only an unrestricted admin may (issue 9),
    // and it takes effect at once.
    let refused = update(
        &b,
        &alice,
        &narrowed.id,
        &["inline_policy"],
        pb::AccessKey {
            inline_policy: "permit (principal, action, resource);".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    update(
        &b,
        &admin,
        &narrowed.id,
        &["inline_policy"],
        pb::AccessKey {
            inline_policy: "permit (principal, action, resource);".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    mint(&b, &narrowed.secret, &["beta"], &["write"], None)
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_keys_and_their_tokens_stop_and_usage_is_recorded() {
    // Key uses are written in batches; a short period instead of waiting for the default 5 s.
    let (b, _dir, _admin, alice) =
        start_with_alice(&[("TOKEN_BROKER_USAGE_FLUSH_PERIOD", "100ms")]).await;
    let key = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            expires_at: Some(Timestamp {
                seconds: b.now() + 2,
                nanos: 0,
            }),
            ..new_key("short", &[], &["read"])
        },
    )
    .await
    .unwrap();
    let token = mint(&b, &key.secret, &[], &[], None).await.unwrap();
    assert!(
        token.expires_at.unwrap().seconds <= b.now() + 2,
        "never outlives its key"
    );
    // An explicit lifetime beyond the key's expiry is refused.
    assert_eq!(
        mint(&b, &key.secret, &[], &[], Some(1.0))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // The key's use is recorded by the batch writer, which names the keys it wrote.
    b.wait_for_log_line("the key's use recorded", |line| {
        line.contains("key usage recorded") && line.contains(&key.id)
    })
    .await;
    let got = b
        .keys()
        .await
        .get_access_key(authed(
            pb::GetAccessKeyRequest { id: key.id.clone() },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.last_used_at.is_some(), "last_used_at written");

    b.advance_clock(3);
    let err = mint(&b, &key.secret, &[], &[], None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    assert!(!introspect(&b, &alice, &token.access_token).await.active);
}

#[tokio::test]
async fn listings_never_hold_secrets_and_show_all_is_for_admins() {
    let (b, _dir, admin, alice) = start_with_alice(&[]).await;
    let bob = create(
        &b,
        &admin,
        pb::CreateAccessKeyRequest {
            owner: "bob".into(),
            ..new_key("bobs", &[], &["read"])
        },
    )
    .await
    .unwrap();
    let all = list(
        &b,
        &admin,
        pb::ListAccessKeysRequest {
            show_all: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let owners: HashSet<&str> = all.keys.iter().map(|k| k.owner.as_str()).collect();
    assert!(owners.contains("alice") && owners.contains("bob") && owners.contains("admin"));
    let text = format!("{all:?}");
    for secret in [&admin, &alice, &bob.secret] {
        assert!(!text.contains(secret.as_str()));
    }
    let own = list(&b, &alice, pb::ListAccessKeysRequest::default())
        .await
        .unwrap();
    assert!(own.keys.iter().all(|k| k.owner == "alice"));
    let by_owner = list(
        &b,
        &admin,
        pb::ListAccessKeysRequest {
            filter: "owner = bob".into(),
            show_all: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_owner.keys.len(), 1);
    assert_eq!(by_owner.keys[0].id, bob.id);
}

/// The reason in a status's `google.rpc.ErrorInfo`.
fn reason_of(err: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    err.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// A caller holding a permission that its key lacks may still not widen the key: only an
/// admin may, and the refusal says so (not that the caller lacks the permission). Clearing
/// an expiry is widening too, and the refusal says "no expiry" in words.
#[tokio::test]
async fn widening_a_key_as_a_non_admin_says_only_an_admin_may() {
    let (b, _dir, admin, alice) = start_with_alice(&[]).await;
    let own = create(
        &b,
        &alice,
        pb::CreateAccessKeyRequest {
            expires_at: Some(Timestamp {
                seconds: b.now() + 3600,
                nanos: 0,
            }),
            ..new_key("own", &["alpha"], &["read"])
        },
    )
    .await
    .unwrap();

    // alice holds `write` and `beta` herself.
    for (paths, key, exceeding) in [
        (
            &["permissions"][..],
            pb::AccessKey {
                permissions: strings(&["write"]),
                ..Default::default()
            },
            "`write`",
        ),
        (
            &["project_ids"][..],
            pb::AccessKey {
                project_ids: strings(&["alpha", "beta"]),
                ..Default::default()
            },
            "`beta`",
        ),
        (&["expires_at"][..], pb::AccessKey::default(), "no expiry"),
    ] {
        let err = update(&b, &alice, &own.id, paths, key).await.unwrap_err();
        let message = err.message();
        assert_eq!(err.code(), Code::PermissionDenied, "{message}");
        assert_eq!(reason_of(&err), "GRANT_EXCEEDED", "{message}");
        assert!(
            message.contains("only an admin may widen a key"),
            "{paths:?}: {message}"
        );
        assert!(message.contains(exceeding), "{paths:?}: {message}");
        assert!(
            !message.contains("authorising credential"),
            "alice's own credential holds it: {message}"
        );
        // The internal "never" value is never shown, in any form.
        for never in [i64::MAX.to_string(), (i64::MAX / 2).to_string()] {
            assert!(!message.contains(&never), "{message}");
        }
    }

    // The admin may clear the expiry; the key then never expires.
    let cleared = update(
        &b,
        &admin,
        &own.id,
        &["expires_at"],
        pb::AccessKey::default(),
    )
    .await
    .unwrap();
    assert_eq!(cleared.expires_at, None);

    // A token (which ends) clearing the expiry of a key is told in words what exceeded.
    let token = mint(&b, &admin, &[], &[], None).await.unwrap().access_token;
    let err = update(
        &b,
        &token,
        &own.id,
        &["expires_at"],
        pb::AccessKey::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("no expiry"), "{}", err.message());
    for never in [i64::MAX.to_string(), (i64::MAX / 2).to_string()] {
        assert!(!err.message().contains(&never), "{}", err.message());
    }
}

/// After a reset without grace, the old secret is refused as reset, not as unknown; only the
/// latest replaced secret is remembered, and deleting the key forgets every secret.
#[tokio::test]
async fn the_old_secret_after_a_plain_reset_says_it_was_reset() {
    let (b, _dir, _admin, alice) = start_with_alice(&[]).await;
    let key = create(&b, &alice, new_key("rotating", &[], &["read"]))
        .await
        .unwrap();
    let reset = |secret: String| {
        let b = &b;
        let id = key.id.clone();
        async move {
            b.keys()
                .await
                .reset_access_key(authed(
                    pb::ResetAccessKeyRequest {
                        id,
                        ..Default::default()
                    },
                    &secret,
                ))
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let refusal = |secret: String| {
        let b = &b;
        async move {
            let err = mint(b, &secret, &[], &[], None).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
            err.message().to_owned()
        }
    };
    let first = key.secret.clone();
    let second = reset(alice.clone()).await;
    let message = refusal(first.clone()).await;
    assert!(message.contains("was reset"), "{message}");
    assert!(!message.contains("unknown"), "{message}");
    mint(&b, &second, &[], &[], None).await.unwrap();

    let third = reset(second.clone()).await;
    let message = refusal(second.clone()).await;
    assert!(message.contains("was reset"), "{message}");
    // Bounded: one replaced secret per key is remembered.
    let message = refusal(first).await;
    assert!(message.contains("unknown"), "{message}");

    delete_access_key(&b, &alice, &key.id).await.unwrap();
    for gone in [second, third] {
        let message = refusal(gone).await;
        assert!(message.contains("unknown or was deleted"), "{message}");
    }
}
