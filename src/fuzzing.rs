//! The bodies of the `cargo fuzz` targets in `fuzz/`, as plain library functions: each
//! target is one call, and `tests/fuzz_corpus.rs` replays every committed corpus file
//! through the same function on stable Rust, so CI guards against regressions without a
//! nightly or sanitizer build.
//!
//! Each function takes arbitrary bytes and returns normally, whatever they are; a panic
//! (including a failed `assert!` of the properties checked here) or an abort is a finding.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "a fuzz target reports a broken fixture or property by panicking"
)]

use std::{path::Path, sync::OnceLock};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::{
    api::{self, auth},
    clock::{Clock as _, SystemClock},
    keys::{
        jwt::{JwtKeys, JwtSettings, KeyMaterial, SigningAlgorithm},
        secret,
    },
    pb::v1 as pb,
    policy::{
        EntityDesc, EntityKind, PolicyEngine, Record,
        inline::{MAX_EXPR_DEPTH, expression_depth},
    },
};

/// Issuer of the fuzz key ring; seeds that should verify carry it.
pub const ISSUER: &str = "token-broker";
/// Audience the fuzz key ring accepts; seeds that should verify carry it.
pub const AUDIENCE: &str = "token-broker";
/// Key id of the fuzz signing key, fixed so that corpus files name it.
pub const KID: &str = "fuzz";
/// Largest request message `request_decoding` accepts (the default `max_request_bytes`).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The default `max_inline_policy_bytes`, which the shipped engine uses.
const MAX_INLINE_BYTES: usize = 16 * 1024;
/// Stack of a tokio worker, on which admitted policies are evaluated.
const WORKER_STACK_BYTES: usize = 2 << 20;

/// An Ed25519 key ring with kid [`KID`], and the same key for signing arbitrary tokens.
fn jwt() -> &'static (JwtKeys, EncodingKey) {
    static JWT: OnceLock<(JwtKeys, EncodingKey)> = OnceLock::new();
    JWT.get_or_init(|| {
        let mut material =
            KeyMaterial::generate(SigningAlgorithm::EdDSA, 0).expect("an Ed25519 key");
        material.kid = KID.to_owned();
        let settings = JwtSettings {
            issuer: ISSUER.to_owned(),
            leeway_secs: 5,
        };
        let keys = JwtKeys::new(settings, &material, &[]).expect("a key ring");
        (keys, EncodingKey::from_ed_der(&material.private_der))
    })
}

/// `base64url(header).base64url(payload).signature`, signed with the fuzz key.
fn signed(header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &jwt().1, Algorithm::EdDSA).expect("signs");
    format!("{message}.{signature}")
}

/// Bearer parsing: the `authorization` header, the access-key secret format and JWT header
/// and claims verification. The first byte picks what the rest is:
/// - `% 3 == 0`: the raw header value;
/// - `% 3 == 1`: a JWT header and payload (split at the first `\n`), signed with the fuzz
///   key, so header checks are reached with a valid signature;
/// - `% 3 == 2`: a JWT payload under the header the broker itself writes, signed, so claim
///   checks are reached.
pub fn bearer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let (head, payload) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            format!("Bearer {}", signed(head, payload)).into_bytes()
        }
        _ => {
            let head = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": KID }).to_string();
            format!("Bearer {}", signed(head.as_bytes(), rest)).into_bytes()
        }
    };
    let Ok(value) = http::HeaderValue::from_bytes(&header) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let Ok(Some(credential)) = auth::bearer(&headers) else {
        return;
    };
    assert!(!credential.is_empty() && credential.trim() == credential);
    if secret::check_format(credential).is_ok() {
        assert!(secret::looks_like_secret(credential));
    }
    let keys = &jwt().0;
    if let Ok(claims) = keys.verify(credential, &[AUDIENCE], SystemClock.now()) {
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        // What verifies under an audience is the broker's own: its jti reads back.
        assert_eq!(keys.signed_jti(credential).ok(), Some(claims.jti));
    }
}

/// The shipped policies, loaded once.
fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("the shipped policies load")
    })
}

/// Inline policy admission (`PolicyEngine::key_policies` on the shipped `policies/`): the
/// bytes, read as UTF-8, are an inline policy. Whatever is admitted fits the limits and is
/// evaluated, then dropped, on a 2 MiB stack (a tokio worker's) without hitting Cedar's
/// recursion limit; whatever is refused says so as an inline policy error.
pub fn inline_policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let engine = engine();
    let alice = EntityDesc {
        kind: EntityKind::User,
        id: "alice".to_owned(),
        attrs: record(json!({ "name": "alice", "projects": ["alpha"], "permissions": ["read"] })),
    };
    let set = match engine.key_policies(&text, &[], &alice) {
        Ok(set) => set,
        Err(e) => {
            assert!(e.to_string().starts_with("inline policy"), "{e}");
            return;
        }
    };
    assert!(text.len() <= MAX_INLINE_BYTES);
    for policy in set.policies() {
        let json = policy
            .to_json()
            .expect("an admitted policy has a JSON form");
        assert!(expression_depth(&json) <= MAX_EXPR_DEPTH);
    }
    let grant = json!({ "projects": ["alpha"], "all_projects": false, "permissions": ["read"] });
    let credential = json!({
        "kind": "access_key", "id": "ak_1", "depth": 0, "grant": grant,
        "remaining_seconds": -1, "admin": false,
    });
    let key = EntityDesc {
        kind: EntityKind::AccessKey,
        id: "ak_1".to_owned(),
        attrs: record(json!({ "owner": "alice" })),
    };
    let anonymous = EntityDesc {
        kind: EntityKind::Anonymous,
        id: "anonymous".to_owned(),
        attrs: Record::new(),
    };
    let mint = record(json!({
        "credential": credential, "requested": grant, "lifetime_seconds": 3600, "audience": AUDIENCE,
    }));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn_scoped(scope, move || {
                for (action, principal, resource, context) in [
                    ("CreateAccessToken", &alice, &key, mint),
                    ("GetJwks", &anonymous, &EntityDesc::broker(), Record::new()),
                ] {
                    let decision = engine.authorize_in(&set, action, principal, resource, &context);
                    assert!(
                        !decision
                            .errors
                            .iter()
                            .any(|e| e.contains("recursion limit")),
                        "{:?}",
                        decision.errors
                    );
                }
                drop(set);
            })
            .expect("a worker thread")
            .join()
            .expect("evaluation returns");
    });
}

/// A fixture written as JSON, as a Cedar record.
fn record(value: serde_json::Value) -> Record {
    Record::from_json(&value).expect("the fixture is a Cedar record")
}

/// Every `tokenbroker.v1` method the auth layer guards.
const METHODS: [&str; 21] = [
    "/tokenbroker.v1.TokenService/CreateAccessToken",
    "/tokenbroker.v1.TokenService/IntrospectToken",
    "/tokenbroker.v1.TokenService/RevokeAccessToken",
    "/tokenbroker.v1.TokenService/GetJwks",
    "/tokenbroker.v1.SubjectService/CreateSubject",
    "/tokenbroker.v1.SubjectService/GetSubject",
    "/tokenbroker.v1.SubjectService/ListSubjects",
    "/tokenbroker.v1.SubjectService/DeleteSubject",
    "/tokenbroker.v1.AccessKeyService/CreateAccessKey",
    "/tokenbroker.v1.AccessKeyService/ListAccessKeys",
    "/tokenbroker.v1.AccessKeyService/GetAccessKey",
    "/tokenbroker.v1.AccessKeyService/UpdateAccessKey",
    "/tokenbroker.v1.AccessKeyService/DeleteAccessKey",
    "/tokenbroker.v1.AccessKeyService/ResetAccessKey",
    "/tokenbroker.v1.UpstreamService/CreateUpstream",
    "/tokenbroker.v1.UpstreamService/GetUpstream",
    "/tokenbroker.v1.UpstreamService/ListUpstreams",
    "/tokenbroker.v1.UpstreamService/UpdateUpstream",
    "/tokenbroker.v1.UpstreamService/DeleteUpstream",
    "/tokenbroker.v1.UpstreamService/IssueUpstreamToken",
    "/tokenbroker.v1.UpstreamService/RevokeUpstreamToken",
];

/// Decodes `message` as the request type of the RPC named `action`, as tonic does before
/// the handler runs.
fn decode_as(action: &str, message: &[u8]) -> Result<(), crate::error::Error> {
    use auth::decode;
    match action {
        "CreateAccessToken" => decode::<pb::CreateAccessTokenRequest>(message).map(drop),
        "IntrospectToken" => decode::<pb::IntrospectTokenRequest>(message).map(drop),
        "RevokeAccessToken" => decode::<pb::RevokeAccessTokenRequest>(message).map(drop),
        "GetJwks" => decode::<pb::GetJwksRequest>(message).map(drop),
        "CreateSubject" => decode::<pb::CreateSubjectRequest>(message).map(drop),
        "GetSubject" => decode::<pb::GetSubjectRequest>(message).map(drop),
        "ListSubjects" => decode::<pb::ListSubjectsRequest>(message).map(drop),
        "DeleteSubject" => decode::<pb::DeleteSubjectRequest>(message).map(drop),
        "CreateAccessKey" => decode::<pb::CreateAccessKeyRequest>(message).map(drop),
        "ListAccessKeys" => decode::<pb::ListAccessKeysRequest>(message).map(drop),
        "GetAccessKey" => decode::<pb::GetAccessKeyRequest>(message).map(drop),
        "UpdateAccessKey" => decode::<pb::UpdateAccessKeyRequest>(message).map(drop),
        "DeleteAccessKey" => decode::<pb::DeleteAccessKeyRequest>(message).map(drop),
        "ResetAccessKey" => decode::<pb::ResetAccessKeyRequest>(message).map(drop),
        "CreateUpstream" => decode::<pb::CreateUpstreamRequest>(message).map(drop),
        "GetUpstream" => decode::<pb::GetUpstreamRequest>(message).map(drop),
        "ListUpstreams" => decode::<pb::ListUpstreamsRequest>(message).map(drop),
        "UpdateUpstream" => decode::<pb::UpdateUpstreamRequest>(message).map(drop),
        "DeleteUpstream" => decode::<pb::DeleteUpstreamRequest>(message).map(drop),
        "IssueUpstreamToken" => decode::<pb::IssueUpstreamTokenRequest>(message).map(drop),
        "RevokeUpstreamToken" => decode::<pb::RevokeUpstreamTokenRequest>(message).map(drop),
        other => panic!("no request type for `{other}`"),
    }
}

/// Request decoding: the auth layer's `grpc_message` on a request body, then the message
/// decoded as the request type of one route. The first byte picks the method (low five
/// bits) and whether the rest is the whole body (top bit clear) or only the message, framed
/// here so that decoding is reached.
pub fn request_decoding(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let path = METHODS[usize::from(selector & 0x1f) % METHODS.len()];
    let route = api::route(path).expect("every listed method has a route");
    assert_eq!(route.action, path.rsplit('/').next().unwrap_or_default());
    let framed;
    let body = if selector & 0x80 == 0 {
        rest
    } else {
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        framed = [&[0u8][..], &len.to_be_bytes(), rest].concat();
        &framed[..]
    };
    match auth::grpc_message(body, MAX_REQUEST_BYTES) {
        Ok(message) => {
            assert_eq!(message.len() + 5, body.len());
            // Either it decodes or it is refused as INVALID_ARGUMENT with a message.
            if let Err(e) = decode_as(route.action, message) {
                assert!(matches!(e, crate::error::Error::Invalid(_)), "{e}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
