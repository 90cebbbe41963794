use std::path::Path;

use serde_json::json;

use super::*;

fn shipped() -> PolicyEngine {
    PolicyEngine::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

fn user(id: &str) -> EntityDesc {
    EntityDesc {
        kind: EntityKind::User,
        id: id.to_owned(),
        attrs: json!({ "name": id, "projects": ["alpha"], "permissions": ["read"] }),
    }
}

fn credential(admin: bool) -> serde_json::Value {
    json!({
        "kind": "access_key", "id": "ak_1", "depth": 0,
        "grant": { "projects": ["alpha"], "all_projects": admin, "permissions": ["read"] },
        "remaining_seconds": -1, "admin": admin,
    })
}

fn token(subject: &str) -> EntityDesc {
    EntityDesc {
        kind: EntityKind::Token,
        id: "t1".to_owned(),
        attrs: json!({ "subject": subject, "depth": 0 }),
    }
}

/// The shipped policies as a table of allow/deny cases.
#[test]
fn shipped_policy_table() {
    let engine = shipped();
    let auth = json!({ "credential": credential(false) });
    let admin = json!({ "credential": credential(true) });
    let cases: Vec<(&str, EntityDesc, EntityDesc, serde_json::Value, bool)> = vec![
        (
            "RevokeAccessToken",
            user("alice"),
            token("alice"),
            auth.clone(),
            true,
        ),
        (
            "RevokeAccessToken",
            user("alice"),
            token("bob"),
            auth.clone(),
            false,
        ),
        (
            "RevokeAccessToken",
            user("admin"),
            token("bob"),
            admin.clone(),
            true,
        ),
        (
            "CreateSubject",
            user("alice"),
            user("bob"),
            auth.clone(),
            false,
        ),
        (
            "CreateSubject",
            user("admin"),
            user("bob"),
            admin.clone(),
            true,
        ),
        (
            "ListSubjects",
            user("alice"),
            EntityDesc::broker(),
            auth.clone(),
            false,
        ),
        (
            "GetSubject",
            user("alice"),
            user("alice"),
            auth.clone(),
            true,
        ),
        (
            "GetSubject",
            user("alice"),
            user("bob"),
            auth.clone(),
            false,
        ),
        (
            "IntrospectToken",
            user("alice"),
            token("bob"),
            auth.clone(),
            true,
        ),
    ];
    for (action, principal, resource, context, expected) in cases {
        let decision = engine.authorize(action, &principal, &resource, context);
        assert_eq!(
            decision.allowed,
            expected,
            "{action} {} on {}: {decision:?}",
            principal.display(),
            resource.display()
        );
        assert!(decision.errors.is_empty(), "{decision:?}");
    }
}

#[test]
fn bad_policy_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::copy(root.join(SCHEMA_FILE), dir.path().join(SCHEMA_FILE)).unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit (principal, action, resource);\n\npermit (principal, action, resource) when { principal.nope };\n",
    )
    .unwrap();
    let err = PolicyEngine::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("bad.cedar:3"), "{err}");

    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit (principal, action, resource)\nforbid (",
    )
    .unwrap();
    let err = PolicyEngine::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("bad.cedar:") && err.contains("parse"), "{err}");
}
