//! Issue 9, attacks 1 and 6: inline policies that would stop the broker or make every later
//! request expensive. Each shape goes to the real server by CreateAccessKey and by
//! UpdateAccessKey; each is refused with INVALID_ARGUMENT naming the problem, and the server
//! answers health SERVING afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{create_access_key as create, *};
use tonic::Code;

/// `permit (…) when { <body> };`
fn when(body: &str) -> String {
    format!("permit (principal, action, resource) when {{ {body} }};")
}

fn parens() -> String {
    when(&format!("{}true{}", "(".repeat(300), ")".repeat(300)))
}

fn nested_ifs() -> String {
    when(&format!(
        "{}true{}",
        "if true then ".repeat(3000),
        " else false".repeat(3000)
    ))
}

fn or_chain(terms: usize) -> String {
    when(&vec!["true"; terms].join(" || "))
}

fn repeated(bytes: usize) -> String {
    let small = "permit (principal, action, resource);\n";
    small.repeat(bytes.div_ceil(small.len()))
}

const SIZE: &str = "`max_inline_policy_bytes`";
const TOO_DEEP: &str = "the expression nests too deep";

fn new_key(owner: &str, name: &str, inline_policy: String) -> pb::CreateAccessKeyRequest {
    pb::CreateAccessKeyRequest {
        owner: owner.to_owned(),
        name: name.to_owned(),
        permissions: vec!["read".to_owned(), "write".to_owned()],
        inline_policy,
        ..Default::default()
    }
}

async fn update_inline(
    b: &Broker,
    cred: &str,
    id: &str,
    inline_policy: String,
) -> Result<pb::AccessKey, tonic::Status> {
    let key = pb::AccessKey {
        inline_policy,
        ..Default::default()
    };
    update_access_key(b, cred, id, &["inline_policy"], key).await
}

fn assert_refused(what: &str, result: Result<impl std::fmt::Debug, tonic::Status>, says: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{what}: {}",
        err.message()
    );
    assert_eq!(field_of(&err), ["inline_policy"], "{what}");
    assert!(
        err.message().contains(says),
        "{what}: `{}` should contain `{says}`",
        err.message()
    );
}

/// Sends each shape by CreateAccessKey and by UpdateAccessKey (on `target`) with `admin`,
/// expecting INVALID_ARGUMENT on `inline_policy` saying what it says, and SERVING after each.
async fn refuses_each(b: &mut Broker, admin: &str, target: &str, shapes: &[(&str, String, &str)]) {
    for (name, policy, says) in shapes {
        let created = create(b, admin, new_key("alice", "attack", policy.clone())).await;
        assert_refused(&format!("create, {name}"), created, says);
        assert_serving(b).await;

        let updated = update_inline(b, admin, target, policy.clone()).await;
        assert_refused(&format!("update, {name}"), updated, says);
        assert_serving(b).await;
    }
}

async fn start_with_target(
    env: &[(&str, &str)],
) -> (
    Broker,
    tempfile::TempDir,
    String,
    pb::CreateAccessKeyResponse,
) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_in(dir.path(), &shipped_policies(), env).await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha", "beta"], &["read", "write"]).await;
    let target = create(
        &b,
        &admin,
        new_key(
            "alice",
            "target",
            "permit (principal, action, resource);".into(),
        ),
    )
    .await
    .unwrap();
    (b, dir, admin, target)
}

#[tokio::test]
async fn every_shape_is_refused_by_create_and_update_and_the_server_keeps_serving() {
    let (mut b, _dir, admin, target) = start_with_target(&[]).await;
    let shapes = [
        (
            "300 nested brackets",
            parens(),
            "brackets nest 301 levels deep",
        ),
        // 72 KB and 40 KB: the byte limit stops them first.
        ("3 000 nested `if`", nested_ifs(), SIZE),
        ("5 000-term `||` chain", or_chain(5000), SIZE),
        // Flat enough for the lexical scan, too deep once parsed.
        (
            "150-term `||` chain",
            or_chain(150),
            "levels deep: at most 100 are allowed",
        ),
        ("1 MiB of policies", repeated(1 << 20), SIZE),
        ("17 KiB of policies", repeated(17 * 1024), SIZE),
    ];
    refuses_each(&mut b, &admin, &target.id, &shapes).await;

    // The refused updates changed nothing: the key still carries its policy and works.
    let key = b
        .keys()
        .await
        .get_access_key(authed(
            pb::GetAccessKeyRequest {
                id: target.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.inline_policy, "permit (principal, action, resource);");
    mint(&b, &target.secret, &[], &["write"], None)
        .await
        .unwrap();
}

/// The nesting bounds do not depend on the byte limit: with room for 2 MiB, the deep shapes
/// are refused for their depth.
#[tokio::test]
async fn nesting_is_bounded_whatever_the_byte_limit() {
    let (mut b, _dir, admin, target) =
        start_with_target(&[("TOKEN_BROKER_MAX_INLINE_POLICY_BYTES", "2097152")]).await;
    let shapes = [
        (
            "300 nested brackets",
            parens(),
            "brackets nest 301 levels deep",
        ),
        ("3 000 nested `if`", nested_ifs(), TOO_DEEP),
        ("5 000-term `||` chain", or_chain(5000), TOO_DEEP),
    ];
    refuses_each(&mut b, &admin, &target.id, &shapes).await;
}

#[tokio::test]
async fn a_normal_inline_policy_is_admitted_and_still_narrows() {
    let (mut b, _dir, admin, _target) = start_with_target(&[]).await;
    let forbid_beta_write = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"CreateAccessToken", resource)
        when { context.requested.permissions.contains("write") && context.requested.projects.contains("beta") };
    "#;
    let narrowed = create(
        &b,
        &admin,
        new_key("alice", "narrowed", forbid_beta_write.into()),
    )
    .await
    .unwrap();
    let err = mint(&b, &narrowed.secret, &["beta"], &["write"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(&narrowed.id), "{}", err.message());
    mint(&b, &narrowed.secret, &["alpha"], &["write"], None)
        .await
        .unwrap();

    // The same narrowing, set by an update, with an 80-term `||` chain: deep, but admitted.
    let chain = vec![r#"context.requested.projects.contains("beta")"#; 90].join(" || ");
    let deep = format!(
        "permit (principal, action, resource);\nforbid (principal, action == Action::\"CreateAccessToken\", resource)\nwhen {{ {chain} }};"
    );
    let plain = create(&b, &admin, new_key("alice", "plain", String::new()))
        .await
        .unwrap();
    mint(&b, &plain.secret, &["beta"], &["read"], None)
        .await
        .unwrap();
    update_inline(&b, &admin, &plain.id, deep).await.unwrap();
    let err = mint(&b, &plain.secret, &["beta"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    mint(&b, &plain.secret, &["alpha"], &["read"], None)
        .await
        .unwrap();
    assert_serving(&mut b).await;
}

/// The owner check comes before the parse: bob may not act for alice, whatever he sends.
/// (Passes once the auth layer decides who may act before reading the inline policy.)
#[tokio::test]
async fn a_plain_user_aiming_at_another_owner_is_denied_before_the_parse() {
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    create_subject(&b, &admin, "alice", &["alpha"], &["read"]).await;
    create_subject(&b, &admin, "bob", &["alpha"], &["read"]).await;
    let bob_key = create_key(&b, &admin, "bob", &["read"]).await;
    let bob = mint(&b, &bob_key, &[], &[], None)
        .await
        .unwrap()
        .access_token;
    let mut req = new_key("alice", "attack", parens());
    req.permissions = vec!["read".to_owned()];
    let err = create(&b, &bob, req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_serving(&mut b).await;
}
