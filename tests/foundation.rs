//! The acceptance flow of the foundation, over real gRPC against the real server binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::*;
use tonic::Code;

#[tokio::test]
async fn mint_attenuate_delegate_and_revoke() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    assert!(admin.starts_with("tbk_"));

    create_subject(&b, &admin, "alice", &["alpha", "beta"], &["read", "write"]).await;
    let alice_key = create_key(&b, &admin, "alice", &["read", "write"]).await;

    let root = mint(&b, &alice_key, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    assert_eq!(root.project_ids, vec!["alpha"]);
    assert_eq!(root.permissions, vec!["read"]);
    assert_eq!(root.depth, 0);
    assert!(root.parent.starts_with("ak_"));

    // From that token: wider projects, wider permissions, longer lifetime are refused.
    let err = mint(&b, &root.access_token, &["alpha", "beta"], &[], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("`beta`"), "{}", err.message());
    let err = mint(&b, &root.access_token, &["alpha"], &["write"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("`write`"), "{}", err.message());
    let err = mint(&b, &root.access_token, &[], &[], Some(3.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("lifetime"), "{}", err.message());

    let child = mint(&b, &root.access_token, &["alpha"], &["read"], Some(0.5))
        .await
        .unwrap();
    assert_eq!(child.depth, 1);
    assert_eq!(child.parent, root.jti);
    let child_exp = child.expires_at.unwrap().seconds;
    assert!(child_exp <= root.expires_at.unwrap().seconds);

    // Omitted fields inherit; omitted lifetime is capped by the parent's remaining time.
    let inherited = mint(&b, &root.access_token, &[], &[], None).await.unwrap();
    assert_eq!(inherited.project_ids, vec!["alpha"]);
    assert!(inherited.expires_at.unwrap().seconds <= root.expires_at.unwrap().seconds);

    let seen = introspect(&b, &admin, &child.access_token).await;
    assert!(seen.active);
    assert_eq!(seen.subject, "alice");
    assert_eq!(seen.depth, 1);
    assert_eq!(seen.parent, root.jti);

    // Revoke the depth-0 token: every descendant goes with it.
    let revoked = b
        .tokens()
        .await
        .revoke_access_token(authed(
            pb::RevokeAccessTokenRequest {
                token: root.access_token.clone(),
                jti: String::new(),
            },
            &alice_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked_count, 3);

    for token in [&root.access_token, &child.access_token] {
        let seen = introspect(&b, &admin, token).await;
        assert!(!seen.active);
        assert_eq!(
            seen,
            pb::IntrospectTokenResponse::default(),
            "inactive says only active=false"
        );
        let err = mint(&b, token, &[], &[], None).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    }
}

#[tokio::test]
async fn subjects_keys_and_ownership() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha"], &["read"]).await;
    create_subject(&b, &admin, "bob", &["beta"], &["write"]).await;
    let alice = create_key(&b, &admin, "alice", &["read"]).await;
    let mut subjects = b.subjects().await;

    // Duplicate subject.
    let err = subjects
        .create_subject(authed(
            pb::CreateSubjectRequest {
                subject_id: "alice".into(),
                kind: pb::SubjectKind::User as i32,
                project_ids: vec!["alpha".into()],
                permissions: vec!["read".into()],
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Alice is no admin: she cannot list subjects or make keys for bob.
    let err = subjects
        .list_subjects(authed(pb::ListSubjectsRequest::default(), &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = b
        .keys()
        .await
        .create_access_key(authed(
            pb::CreateAccessKeyRequest {
                owner: "bob".into(),
                name: "x".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // She may make a narrower key for herself, not a wider one.
    let err = b
        .keys()
        .await
        .create_access_key(authed(
            pb::CreateAccessKeyRequest {
                name: "wide".into(),
                permissions: vec!["write".into()],
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let own = b
        .keys()
        .await
        .create_access_key(authed(
            pb::CreateAccessKeyRequest {
                name: "laptop".into(),
                description: "my laptop".into(),
                permissions: vec!["read".into()],
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    let key = own.key.unwrap();
    assert_eq!(key.owner, "alice");
    assert!(own.secret.starts_with(&key.secret_prefix));
    assert_ne!(own.secret, key.secret_prefix);

    let listed = subjects
        .list_subjects(authed(
            pb::ListSubjectsRequest {
                page_size: 2,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subjects.len(), 2);
    let rest = subjects
        .list_subjects(authed(
            pb::ListSubjectsRequest {
                page_size: 2,
                page_token: listed.next_page_token,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed
        .subjects
        .into_iter()
        .chain(rest.subjects)
        .map(|s| s.subject_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["admin", "alice", "bob"]);
    assert!(rest.next_page_token.is_empty());

    // Deleting alice revokes her keys and tokens.
    let token = mint(&b, &alice, &[], &[], None).await.unwrap();
    let deleted = subjects
        .delete_subject(authed(
            pb::DeleteSubjectRequest {
                subject_id: "alice".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_keys, 2);
    assert_eq!(deleted.revoked_tokens, 1);
    assert!(!introspect(&b, &admin, &token.access_token).await.active);
    let err = mint(&b, &alice, &[], &[], None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = subjects
        .get_subject(authed(
            pb::GetSubjectRequest {
                subject_id: "alice".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn state_survives_restart_and_jwks_is_public() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let admin = b.admin_secret();
    let token = mint(&b, &admin, &["alpha"], &["read"], None).await.unwrap();
    let jwks = b
        .tokens()
        .await
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].alg, "EdDSA");
    assert!(jwks.jwks_json.contains(&jwks.keys[0].kid));
    assert!(b.terminate().await.success());

    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("bootstrap-admin.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    assert_eq!(b.admin_secret(), admin, "bootstrap runs once");
    assert!(introspect(&b, &admin, &token.access_token).await.active);
    let again = b
        .tokens()
        .await
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.keys[0].kid, jwks.keys[0].kid, "signing key reused");
    assert!(
        !b.logs().contains(&admin),
        "the bootstrap secret is never logged"
    );
}

/// Introspection of an active token is called for every request a resource server serves:
/// it logs its `rpc finished` line at debug, not info. An inactive token's (maybe a probe) and
/// a refused one log at info, as every other call does.
#[tokio::test]
async fn successful_introspections_log_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let admin = b.admin_secret();
    let minted = mint(&b, &admin, &[], &["read"], Some(1.0)).await.unwrap();
    assert!(introspect(&b, &admin, &minted.access_token).await.active);
    assert!(!introspect(&b, &admin, "not-a-token").await.active);
    let refused = b
        .tokens()
        .await
        .introspect_token(authed(
            pb::IntrospectTokenRequest {
                token: minted.access_token.clone(),
            },
            "tbk_not_a_key",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // Lines arrive in order: once this mint's line is in, both introspections' would be.
    mint(&b, &admin, &[], &["read"], Some(0.5)).await.unwrap();
    let finished = |l: &str, method: &str, code: &str| {
        l.contains("rpc finished")
            && l.contains(&format!("method=\"{method}\""))
            && l.contains(&format!("code=\"{code}\""))
    };
    b.wait_for_log_line("the second mint's line", |l| {
        finished(l, "CreateAccessToken", "0") && l.contains("subject=\"admin\"")
    })
    .await;
    b.wait_for_log("method=\"CreateAccessToken\"", 2).await;
    let logs = b.logs();
    assert!(
        logs.lines().any(|l| finished(l, "IntrospectToken", "16")),
        "the refused introspection logs at info: {logs}"
    );
    assert_eq!(
        logs.lines()
            .filter(|l| finished(l, "IntrospectToken", "0"))
            .count(),
        1,
        "the inactive token's introspection logs at info, the active one's at debug: {logs}"
    );
}
