use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_800_000_000;
const LIMITS: MintLimits = MintLimits {
    default_lifetime_secs: 7200,
    max_lifetime_secs: 86400,
};

fn model() -> PermissionModel {
    PermissionModel::new(
        &[
            "read".into(),
            "write".into(),
            "admin".into(),
            "audit".into(),
        ],
        &BTreeMap::from([
            ("admin".to_owned(), vec!["write".to_owned()]),
            ("write".to_owned(), vec!["read".to_owned()]),
        ]),
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn grant(projects: &[&str], perms: &[&str], not_after: Option<i64>) -> Grant {
    Grant {
        projects: Projects::from_ids(projects.iter().copied()),
        permissions: set(perms),
        not_after,
    }
}

#[test]
fn omitted_fields_inherit_and_default_lifetime_is_two_hours() {
    let parent = grant(&["alpha", "beta"], &["read", "write"], None);
    let minted = attenuate(&parent, &MintRequest::default(), NOW, LIMITS, &model()).unwrap();
    assert_eq!(minted.projects, parent.projects);
    assert_eq!(minted.permissions, parent.permissions);
    assert_eq!(minted.not_after, Some(NOW + 7200));
}

#[test]
fn omitted_lifetime_is_shortened_to_what_the_parent_has_left() {
    let parent = grant(&["alpha"], &["read"], Some(NOW + 600));
    let minted = attenuate(&parent, &MintRequest::default(), NOW, LIMITS, &model()).unwrap();
    assert_eq!(minted.not_after, Some(NOW + 600));
}

#[test]
fn refusal_names_every_excess() {
    let parent = grant(&["alpha"], &["read"], Some(NOW + 3600));
    let request = MintRequest {
        projects: Some(Projects::from_ids(["alpha", "beta"])),
        permissions: Some(set(&["write"])),
        lifetime_secs: Some(3 * 3600),
    };
    let refused = attenuate(&parent, &request, NOW, LIMITS, &model()).unwrap_err();
    assert_eq!(refused.projects, vec!["beta".to_owned()]);
    assert_eq!(refused.permissions, vec!["write".to_owned()]);
    assert_eq!(refused.lifetime, Some((3 * 3600, 3600)));
    let text = refused.to_string();
    assert!(
        text.contains("`beta`") && text.contains("`write`"),
        "{text}"
    );
}

#[test]
fn implication_lets_admin_mint_read_but_not_the_reverse() {
    let admin = grant(&["*"], &["admin"], None);
    let request = MintRequest {
        permissions: Some(set(&["read"])),
        projects: Some(Projects::from_ids(["alpha"])),
        ..MintRequest::default()
    };
    assert!(attenuate(&admin, &request, NOW, LIMITS, &model()).is_ok());
    let reader = grant(&["*"], &["read"], None);
    let request = MintRequest {
        permissions: Some(set(&["admin"])),
        ..MintRequest::default()
    };
    let refused = attenuate(&reader, &request, NOW, LIMITS, &model()).unwrap_err();
    assert_eq!(refused.permissions, vec!["admin".to_owned()]);
}

#[test]
fn star_is_refused_unless_the_parent_holds_star() {
    let parent = grant(&["alpha"], &["read"], None);
    let request = MintRequest {
        projects: Some(Projects::All),
        ..MintRequest::default()
    };
    let refused = attenuate(&parent, &request, NOW, LIMITS, &model()).unwrap_err();
    assert_eq!(refused.projects, vec!["*".to_owned()]);
}

// === model-based properties ===

fn arb_projects() -> impl Strategy<Value = Projects> {
    prop_oneof![
        1 => Just(Projects::All),
        4 => proptest::collection::btree_set(
            prop::sample::select(vec!["alpha", "beta", "gamma", "delta"]).prop_map(str::to_owned),
            0..4,
        )
        .prop_map(Projects::Some),
    ]
}

fn arb_perms() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::collection::btree_set(
        prop::sample::select(vec!["read", "write", "admin", "audit"]).prop_map(str::to_owned),
        0..4,
    )
}

fn arb_grant() -> impl Strategy<Value = Grant> {
    (arb_projects(), arb_perms(), prop::option::of(1i64..200_000)).prop_map(
        |(projects, permissions, left)| Grant {
            projects,
            permissions,
            not_after: left.map(|l| NOW + l),
        },
    )
}

fn arb_request() -> impl Strategy<Value = MintRequest> {
    (
        prop::option::of(arb_projects()),
        prop::option::of(arb_perms().prop_filter("non-empty", |p| !p.is_empty())),
        prop::option::of(1i64..=86400),
    )
        .prop_map(|(projects, permissions, lifetime_secs)| MintRequest {
            projects,
            permissions,
            lifetime_secs,
        })
}

/// An independent statement of "the request asks for more than the authoriser holds".
fn request_exceeds(parent: &Grant, request: &MintRequest, model: &PermissionModel) -> bool {
    let projects_exceed = match (&parent.projects, &request.projects) {
        (_, None) | (Projects::All, _) => false,
        (Projects::Some(_), Some(Projects::All)) => true,
        (Projects::Some(mine), Some(Projects::Some(asked))) => !asked.is_subset(mine),
    };
    let held = model.expand(&parent.permissions);
    let perms_exceed = request
        .permissions
        .as_ref()
        .is_some_and(|asked| !model.expand(asked).is_subset(&held));
    let lifetime_exceeds = match (request.lifetime_secs, parent.not_after) {
        (Some(asked), Some(end)) => NOW + asked > end,
        _ => false,
    };
    projects_exceed || perms_exceed || lifetime_exceeds
}

proptest! {
    #[test]
    fn minted_always_attenuates_and_refusal_iff_exceeds(
        parent in arb_grant(),
        request in arb_request(),
    ) {
        let model = model();
        let outcome = attenuate(&parent, &request, NOW, LIMITS, &model);
        prop_assert_eq!(outcome.is_err(), request_exceeds(&parent, &request, &model));
        if let Ok(minted) = outcome {
            prop_assert!(attenuates(&minted, &parent, &model));
            let end = minted.not_after.unwrap();
            prop_assert!(end > NOW && end <= NOW + LIMITS.max_lifetime_secs);
            // Never silently narrowed: what was asked for is exactly what was granted.
            if let Some(p) = &request.projects { prop_assert_eq!(&minted.projects, p); }
            if let Some(p) = &request.permissions { prop_assert_eq!(&minted.permissions, p); }
            if let Some(l) = request.lifetime_secs { prop_assert_eq!(end, NOW + l); }
        }
    }

    #[test]
    fn chains_never_widen(
        root in arb_grant(),
        steps in proptest::collection::vec(arb_request(), 1..6),
    ) {
        let model = model();
        let mut current = root.clone();
        for request in steps {
            if let Ok(next) = attenuate(&current, &request, NOW, LIMITS, &model) {
                prop_assert!(attenuates(&next, &current, &model));
                prop_assert!(attenuates(&next, &root, &model));
                current = next;
            }
        }
    }
}

#[test]
fn holds_applies_implication_like_expand() {
    let m = model();
    for (granted, wanted) in [
        (&["admin"][..], "read"),
        (&["write"][..], "read"),
        (&["read"][..], "write"),
        (&["read", "write"][..], "admin"),
        (&[][..], "read"),
    ] {
        let granted: Vec<String> = granted.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            m.holds(&granted, wanted),
            m.expand(&granted).contains(wanted),
            "{granted:?} holds {wanted}"
        );
    }
}
