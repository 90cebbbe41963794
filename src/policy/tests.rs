use std::path::Path;

use serde_json::json;

use super::*;

fn shipped() -> PolicyEngine {
    PolicyEngine::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

/// A fixture written as JSON, as a Cedar record.
fn rec(value: &serde_json::Value) -> Record {
    Record::from_json(value).unwrap()
}

fn user(id: &str) -> EntityDesc {
    EntityDesc {
        kind: EntityKind::User,
        id: id.to_owned(),
        attrs: rec(&json!({ "name": id, "projects": ["alpha"], "permissions": ["read"] })),
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
        attrs: rec(&json!({ "subject": subject, "depth": 0 })),
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
    // Twice: the first pass checks each shape against the schema and fills the decision
    // cache, the second trusts the shapes and answers from the cache; Cedar agrees each time.
    for (action, principal, resource, context, expected) in cases.iter().chain(&cases) {
        let decision = engine.authorize(action, principal, resource, &rec(context));
        let fresh = engine.authorize_uncached(action, principal, resource, &rec(context));
        assert_eq!(
            *decision, fresh,
            "{action}: cached and fresh decisions differ"
        );
        assert_eq!(
            decision.allowed,
            *expected,
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

/// A request whose shape does not match the schema is refused every time, not only the first.
#[test]
fn shape_mismatch_is_refused_until_it_passes() {
    let engine = shipped();
    let auth = json!({ "credential": credential(false) });
    let malformed = EntityDesc {
        kind: EntityKind::Token,
        id: "t1".to_owned(),
        attrs: rec(&json!({ "subject": "alice", "depth": "deep" })),
    };
    for _ in 0..2 {
        let decision = engine.authorize("IntrospectToken", &user("alice"), &malformed, &rec(&auth));
        assert!(!decision.allowed, "{decision:?}");
        assert!(!decision.errors.is_empty(), "{decision:?}");
    }
    // A well-formed request of the same shape passes, and later ones are decided alike.
    for _ in 0..2 {
        let decision = engine.authorize(
            "IntrospectToken",
            &user("alice"),
            &token("bob"),
            &rec(&auth),
        );
        assert!(
            decision.allowed && decision.errors.is_empty(),
            "{decision:?}"
        );
    }
}

/// Policies scoped to an action group reach the group's member actions.
#[test]
fn action_groups_slice_to_their_members() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(SCHEMA_FILE),
        "entity User = { name: String };\n\
         action Reads;\n\
         action GetThing in [Reads] appliesTo { principal: [User], resource: [User], context: {} };\n\
         action PutThing appliesTo { principal: [User], resource: [User], context: {} };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "permit (principal, action in Action::\"Reads\", resource);\n",
    )
    .unwrap();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let alice = EntityDesc {
        kind: EntityKind::User,
        id: "alice".to_owned(),
        attrs: rec(&json!({ "name": "alice" })),
    };
    for _ in 0..2 {
        let get = engine.authorize("GetThing", &alice, &alice, &Record::new());
        assert!(get.allowed, "{get:?}");
        let put = engine.authorize("PutThing", &alice, &alice, &Record::new());
        assert!(!put.allowed && put.errors.is_empty(), "{put:?}");
    }
}

/// The decision cache is keyed by the whole input: a changed attribute is decided afresh.
#[test]
fn decision_cache_keys_on_every_attribute() {
    let engine = shipped();
    let auth = json!({ "credential": credential(false) });
    let own = engine.authorize(
        "RevokeAccessToken",
        &user("alice"),
        &token("alice"),
        &rec(&auth),
    );
    assert!(own.allowed, "{own:?}");
    // Same ids, one attribute changed: the token now belongs to bob.
    let other = engine.authorize(
        "RevokeAccessToken",
        &user("alice"),
        &token("bob"),
        &rec(&auth),
    );
    assert!(!other.allowed, "{other:?}");
    let admin = json!({ "credential": credential(true) });
    let as_admin = engine.authorize(
        "RevokeAccessToken",
        &user("alice"),
        &token("bob"),
        &rec(&admin),
    );
    assert!(as_admin.allowed, "{as_admin:?}");
}

/// Trust is per shape, not per kinds: once a well-formed request of some action and
/// principal and resource kinds has passed, a request of the same kinds whose context gains
/// an attribute, or whose attribute (top-level or nested, in the context or an entity)
/// changes type, is still checked against the schema and refused, every time.
#[test]
fn a_new_shape_of_known_kinds_is_still_validated() {
    let engine = shipped();
    let auth = json!({ "credential": credential(false) });
    let revoke = |resource: &EntityDesc, context: &serde_json::Value| {
        engine.authorize_uncached("RevokeAccessToken", &user("alice"), resource, &rec(context))
    };
    let passed = revoke(&token("alice"), &auth);
    assert!(passed.allowed && passed.errors.is_empty(), "{passed:?}");

    let mut gained = auth.clone();
    gained["note"] = json!("not in the schema");
    let mut retyped = auth.clone();
    retyped["credential"]["depth"] = json!("deep");
    let mut nested = auth.clone();
    nested["credential"]["grant"]["projects"] = json!([1]);
    let malformed = EntityDesc {
        attrs: rec(&json!({ "subject": "alice", "depth": "deep" })),
        ..token("alice")
    };
    let cases = [
        ("context gains an attribute", token("alice"), gained),
        ("context attribute changes type", token("alice"), retyped),
        ("set element changes type", token("alice"), nested),
        ("resource attribute changes type", malformed, auth.clone()),
    ];
    for _ in 0..2 {
        for (what, resource, context) in &cases {
            let decision = revoke(resource, context);
            assert!(
                !decision.allowed && !decision.errors.is_empty(),
                "{what}: {decision:?}"
            );
        }
        // The shape that passed is still trusted and still decided alike.
        let again = revoke(&token("alice"), &auth);
        assert_eq!(again, passed);
    }
}

/// Every (principal kind, resource kind) pair is a shape of its own, however many kinds there
/// are: the fingerprint does not pack kinds into a fixed number of bits.
#[test]
fn every_kind_pair_is_its_own_shape() {
    let engine = shipped();
    let entity = |kind: EntityKind, id: &str| EntityDesc {
        kind,
        id: id.to_owned(),
        attrs: rec(&json!({ "name": id })),
    };
    let context = rec(&json!({ "credential": credential(false) }));
    let mut shapes = HashSet::new();
    for p in ALL_KINDS {
        for r in ALL_KINDS {
            shapes.insert(engine.shape_of(&entity(p, "a"), &entity(r, "b"), &context));
        }
    }
    assert_eq!(shapes.len(), ALL_KINDS.len() * ALL_KINDS.len());
    // Values are not part of a shape; names and types are.
    let a = engine.shape_of(&user("alice"), &token("alice"), &context);
    assert_eq!(a, engine.shape_of(&user("bob"), &token("bob"), &context));
    let longer = EntityDesc {
        attrs: rec(
            &json!({ "name": "carol", "projects": ["alpha", "beta", "gamma"], "permissions": [] }),
        ),
        ..user("carol")
    };
    assert_ne!(a, engine.shape_of(&longer, &token("alice"), &context));
    let mut more = user("alice");
    more.attrs
        .set("projects", Attr::strings(["alpha", "beta", "gamma"]));
    assert_eq!(a, engine.shape_of(&more, &token("alice"), &context));
}
