//! The bad-input table: each bad request gets a precise status, the server keeps serving, and
//! nothing changes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use hmac::{Hmac, Mac};
use tonic::Code;
use tonic_types::StatusExt;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Replaces a token's header, keeping its payload, and signs with `sign` (None: no signature).
fn forge(token: &str, header: serde_json::Value, sign: Option<&[u8]>) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), payload);
    let signature = match sign {
        Some(key) => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            b64(&mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{signing_input}.{signature}")
}

async fn mint_status(
    b: &Broker,
    credential: &str,
    request: pb::CreateAccessTokenRequest,
) -> tonic::Status {
    b.tokens()
        .await
        .create_access_token(authed(request, credential))
        .await
        .expect_err("must be refused")
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    let good = mint(&b, &admin, &["alpha"], &["read"], None).await.unwrap();
    let jwks = b
        .tokens()
        .await
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kid = jwks.keys[0].kid.clone();
    let public = URL_SAFE_NO_PAD.decode(&jwks.keys[0].x).unwrap();

    let mut tampered = good.access_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut corrupted_key = admin.clone();
    let last = corrupted_key.pop().unwrap();
    corrupted_key.push(if last == 'x' { 'y' } else { 'x' });

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no bearer", None),
        ("garbage bearer", Some("Bearer garbage".into())),
        ("wrong scheme", Some(format!("Basic {admin}"))),
        (
            "corrupted key checksum",
            Some(format!("Bearer {corrupted_key}")),
        ),
        ("tampered signature", Some(format!("Bearer {tampered}"))),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                forge(
                    &good.access_token,
                    serde_json::json!({"alg":"none","typ":"at+jwt","kid":kid}),
                    None
                )
            )),
        ),
        (
            "HS256 signed with the public key",
            Some(format!(
                "Bearer {}",
                forge(
                    &good.access_token,
                    serde_json::json!({"alg":"HS256","typ":"at+jwt","kid":kid}),
                    Some(&public)
                )
            )),
        ),
    ];
    for (name, header) in cases {
        let mut request = tonic::Request::new(pb::CreateAccessTokenRequest::default());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        let err = b
            .tokens()
            .await
            .create_access_token(request)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "{name}: {}",
            err.message()
        );
        assert!(!err.message().is_empty());
    }
    // Forged tokens introspect inactive.
    for forged in [
        forge(
            &good.access_token,
            serde_json::json!({"alg":"none","typ":"at+jwt","kid":kid}),
            None,
        ),
        forge(
            &good.access_token,
            serde_json::json!({"alg":"HS256","typ":"at+jwt","kid":kid}),
            Some(&public),
        ),
        tampered,
    ] {
        assert!(!introspect(&b, &admin, &forged).await.active);
    }
    assert!(
        introspect(&b, &admin, &good.access_token).await.active,
        "still serving"
    );
}

#[tokio::test]
async fn expired_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_in(
        dir.path(),
        &shipped_policies(),
        &[("TOKEN_BROKER_LEEWAY", "0s")],
    )
    .await;
    let admin = b.admin_secret();
    // 0.0003 h rounds up to 2 s.
    let short = mint(&b, &admin, &[], &[], Some(0.0003)).await.unwrap();
    assert!(introspect(&b, &admin, &short.access_token).await.active);
    b.advance_clock(3);
    let err = mint(&b, &short.access_token, &[], &[], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(err.message().contains("expired"), "{}", err.message());
    assert!(!introspect(&b, &admin, &short.access_token).await.active);
}

#[tokio::test]
async fn bad_requests_are_precise_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(dir.path(), &shipped_policies(), &[]).await;
    let admin = b.admin_secret();

    let lifetime = |h: f64| pb::CreateAccessTokenRequest {
        expires_in_hours: Some(h),
        ..Default::default()
    };
    let cases: Vec<(&str, pb::CreateAccessTokenRequest, &str)> = vec![
        (
            "unknown permission",
            pb::CreateAccessTokenRequest {
                permissions: vec!["fly".into()],
                ..Default::default()
            },
            "permissions[0]",
        ),
        (
            "malformed project",
            pb::CreateAccessTokenRequest {
                project_ids: vec!["Bad Project".into()],
                ..Default::default()
            },
            "project_ids[0]",
        ),
        ("zero hours", lifetime(0.0), "expires_in_hours"),
        ("negative hours", lifetime(-1.0), "expires_in_hours"),
        ("NaN hours", lifetime(f64::NAN), "expires_in_hours"),
        (
            "infinite hours",
            lifetime(f64::INFINITY),
            "expires_in_hours",
        ),
        ("1e308 hours", lifetime(1e308), "expires_in_hours"),
        (
            "10 000 project ids",
            pb::CreateAccessTokenRequest {
                project_ids: (0..10_000).map(|i| format!("p{i}")).collect(),
                ..Default::default()
            },
            "project_ids",
        ),
        (
            "unknown audience",
            pb::CreateAccessTokenRequest {
                audience: "elsewhere".into(),
                ..Default::default()
            },
            "audience",
        ),
    ];
    for (name, request, field) in cases {
        let err = mint_status(&b, &admin, request).await;
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        let details = err.get_error_details();
        let violations = &details
            .bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert!(
            violations
                .iter()
                .any(|v| v.field == field && !v.description.is_empty()),
            "{name}: {violations:?}"
        );
    }

    // A 10 MB request is refused before it is decoded.
    let huge = pb::CreateAccessTokenRequest {
        audience: "x".repeat(10 * 1024 * 1024),
        ..Default::default()
    };
    let err = mint_status(&b, &admin, huge).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // Still serving, and the one good mint is the only token stored.
    mint(&b, &admin, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap();
    assert!(b.terminate().await.success());
    let store = token_broker::store::Store::open(dir.path()).unwrap();
    assert_eq!(store.token_count(), 1);
}

/// Every RPC that takes an access-key id refuses one that cannot be an id with
/// INVALID_ARGUMENT on `id`, saying what ids look like, before looking it up.
#[tokio::test]
async fn malformed_key_ids_say_what_ids_look_like() {
    let b = Broker::start().await;
    let admin = b.admin_secret();
    let mut keys = b.keys().await;
    for id in ["foo", "", "AK_1", "ak_", "ak_../x", "bogus id with spaces"] {
        let errs = vec![
            keys.get_access_key(authed(pb::GetAccessKeyRequest { id: id.into() }, &admin))
                .await
                .map(|_| ())
                .unwrap_err(),
            keys.update_access_key(authed(
                pb::UpdateAccessKeyRequest {
                    id: id.into(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: strings(&["name"]),
                    }),
                    key: Some(pb::AccessKey {
                        name: "x".into(),
                        ..Default::default()
                    }),
                },
                &admin,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
            keys.delete_access_key(authed(pb::DeleteAccessKeyRequest { id: id.into() }, &admin))
                .await
                .map(|_| ())
                .unwrap_err(),
            keys.reset_access_key(authed(
                pb::ResetAccessKeyRequest {
                    id: id.into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        ];
        for err in errs {
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{id:?}: {}",
                err.message()
            );
            assert_eq!(field_of(&err), vec!["id"], "{id:?}");
            assert!(err.message().contains("`ak_…`"), "{}", err.message());
        }
    }
    // A well-formed id that names no key is still NOT_FOUND.
    let err = keys
        .get_access_key(authed(
            pb::GetAccessKeyRequest {
                id: "ak_00000000000000000000000000000000".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
}

/// GetJwks needs no credential, so one that does not authenticate (garbage, a wrong scheme,
/// a mistyped key, an expired token) is ignored rather than refused; a valid one works too.
/// Routes that need a credential still refuse the same values.
#[tokio::test]
async fn get_jwks_ignores_a_credential_it_does_not_need() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_in(
        dir.path(),
        &shipped_policies(),
        &[("TOKEN_BROKER_LEEWAY", "0s")],
    )
    .await;
    let admin = b.admin_secret();
    let short = mint(&b, &admin, &[], &[], Some(0.0003))
        .await
        .unwrap()
        .access_token;
    b.advance_clock(3);
    let mut mistyped = admin.clone();
    let last = mistyped.pop().unwrap();
    mistyped.push(if last == 'x' { 'y' } else { 'x' });

    let expected = b
        .tokens()
        .await
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!expected.keys.is_empty());
    for (name, header) in [
        ("garbage", "Bearer garbage".to_owned()),
        ("wrong scheme", format!("Basic {admin}")),
        ("empty bearer", "Bearer ".to_owned()),
        ("mistyped key", format!("Bearer {mistyped}")),
        ("expired token", format!("Bearer {short}")),
        ("valid key", format!("Bearer {admin}")),
    ] {
        let mut request = tonic::Request::new(pb::GetJwksRequest {});
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let jwks = b
            .tokens()
            .await
            .get_jwks(request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .into_inner();
        assert_eq!(jwks.jwks_json, expected.jwks_json, "{name}");

        if name != "valid key" {
            let mut request = tonic::Request::new(pb::CreateAccessTokenRequest::default());
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
            let err = b
                .tokens()
                .await
                .create_access_token(request)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{name}");
        }
    }
}
