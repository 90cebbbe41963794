use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_800_000_000;
const RULES: Rules = Rules {
    limits: MintLimits {
        default_lifetime_secs: 7200,
        max_lifetime_secs: 86400,
    },
    max_depth: 3,
};

fn model() -> PermissionModel {
    PermissionModel::new(
        &["read".into(), "write".into(), "admin".into()],
        &BTreeMap::from([
            ("admin".to_owned(), vec!["write".to_owned()]),
            ("write".to_owned(), vec!["read".to_owned()]),
        ]),
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn reach(projects: &[&str], perms: &[&str], end: Option<i64>, depth: Option<u32>) -> Reach {
    Reach {
        grant: Grant {
            projects: Projects::from_ids(projects.iter().copied()),
            permissions: set(perms),
            not_after: end,
        },
        restrictions: Restrictions::default(),
        depth,
    }
}

fn key_ask(projects: &[&str], perms: &[&str], end: End) -> Ask {
    Ask {
        kind: Yield::Key,
        projects: Some(Projects::from_ids(projects.iter().copied())),
        permissions: Some(set(perms)),
        end,
        restrictions: None,
    }
}

#[test]
fn a_key_made_by_a_token_ends_within_the_token() {
    let token = reach(&["alpha"], &["read"], Some(NOW + 3600), Some(0));
    let inherited = derive(
        &token,
        &key_ask(&["alpha"], &["read"], End::Until(None)),
        NOW,
        &RULES,
        &model(),
    )
    .unwrap();
    assert_eq!(inherited.grant.not_after, Some(NOW + 3600));
    let refused = derive(
        &token,
        &key_ask(&["alpha"], &["read"], End::Until(Some(NOW + 7200))),
        NOW,
        &RULES,
        &model(),
    )
    .unwrap_err();
    assert_eq!(refused.lifetime, Some((7200, 3600)));
    let never = derive(
        &token,
        &key_ask(&["alpha"], &["read"], End::Exactly(None)),
        NOW,
        &RULES,
        &model(),
    )
    .unwrap_err();
    assert_eq!(never.lifetime, Some((NEVER, 3600)));
    assert!(never.to_string().contains("no expiry"), "{never}");
}

#[test]
fn a_down_scoped_token_cannot_make_a_wider_key() {
    let token = reach(&["alpha"], &["read"], Some(NOW + 3600), Some(0));
    let refused = derive(
        &token,
        &key_ask(&["*"], &["admin"], End::Until(None)),
        NOW,
        &RULES,
        &model(),
    )
    .unwrap_err();
    assert_eq!(refused.projects, vec!["*".to_owned()]);
    assert_eq!(refused.permissions, vec!["admin".to_owned()]);
}

#[test]
fn restrictions_are_carried_unchanged_by_a_restricted_caller() {
    let mut restricted = reach(&["*"], &["admin"], None, None);
    restricted.restrictions = Restrictions::new("", &["reader".to_owned()]);
    let inherited = derive(
        &restricted,
        &key_ask(&["*"], &["read"], End::Until(None)),
        NOW,
        &RULES,
        &model(),
    )
    .unwrap();
    assert_eq!(inherited.restrictions, restricted.restrictions);
    for asked in [
        Restrictions::default(),
        Restrictions::new("", &["writer".to_owned()]),
        Restrictions::new("", &["reader".to_owned(), "writer".to_owned()]),
        Restrictions::new(
            "permit (principal, action, resource);",
            &["reader".to_owned()],
        ),
    ] {
        let mut ask = key_ask(&["*"], &["read"], End::Until(None));
        ask.restrictions = Some(asked.clone());
        let refused = derive(&restricted, &ask, NOW, &RULES, &model()).unwrap_err();
        assert!(refused.restrictions.is_some(), "{asked:?}");
    }
    // An unrestricted caller may add restrictions: that only narrows.
    let free = reach(&["*"], &["admin"], None, None);
    let mut ask = key_ask(&["*"], &["read"], End::Until(None));
    ask.restrictions = Some(restricted.restrictions.clone());
    assert!(derive(&free, &ask, NOW, &RULES, &model()).is_ok());
}

#[test]
fn a_token_at_the_maximum_depth_yields_no_token_and_no_key() {
    let deepest = reach(
        &["alpha"],
        &["read"],
        Some(NOW + 600),
        Some(RULES.max_depth),
    );
    for kind in [Yield::Token, Yield::Key] {
        let mut ask = key_ask(&["alpha"], &["read"], End::Until(None));
        ask.kind = kind;
        let refused = derive(&deepest, &ask, NOW, &RULES, &model()).unwrap_err();
        assert_eq!(refused.depth, Some((RULES.max_depth, RULES.max_depth)));
    }
    let mut ask = key_ask(&["alpha"], &["read"], End::Lifetime(None));
    ask.kind = Yield::VendorToken;
    assert!(derive(&deepest, &ask, NOW, &RULES, &model()).is_ok());
}

// === the property: whatever is asked, a result never exceeds its caller ===

fn projects_strategy() -> impl Strategy<Value = Projects> {
    prop_oneof![
        Just(Projects::All),
        proptest::collection::btree_set(prop_oneof![Just("a"), Just("b"), Just("c")], 0..3)
            .prop_map(|s| Projects::from_ids(s.into_iter())),
    ]
}

fn perms_strategy() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::collection::btree_set(
        prop_oneof![Just("read"), Just("write"), Just("admin")].prop_map(str::to_owned),
        0..3,
    )
}

fn end_strategy() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), (1i64..200_000).prop_map(|s| Some(NOW + s))]
}

fn restrictions_strategy() -> impl Strategy<Value = Restrictions> {
    prop_oneof![
        Just(Restrictions::default()),
        Just(Restrictions::new("", &["reader".to_owned()])),
        Just(Restrictions::new("", &["writer".to_owned()])),
        Just(Restrictions::new(
            "permit (principal, action, resource);",
            &[]
        )),
    ]
}

prop_compose! {
    fn reach_strategy()(
        projects in projects_strategy(),
        permissions in perms_strategy(),
        end in end_strategy(),
        restrictions in restrictions_strategy(),
        depth in prop_oneof![Just(None), (0u32..5).prop_map(Some)],
    ) -> Reach {
        Reach { grant: Grant { projects, permissions, not_after: end }, restrictions, depth }
    }
}

fn ask_strategy() -> impl Strategy<Value = Ask> {
    (
        prop_oneof![
            Just(Yield::Token),
            Just(Yield::Key),
            Just(Yield::VendorToken)
        ],
        proptest::option::of(projects_strategy()),
        proptest::option::of(perms_strategy()),
        prop_oneof![
            proptest::option::of(1i64..86_400).prop_map(End::Lifetime),
            end_strategy().prop_map(End::Until),
            end_strategy().prop_map(End::Exactly),
        ],
        proptest::option::of(restrictions_strategy()),
    )
        .prop_map(|(kind, projects, permissions, end, restrictions)| Ask {
            kind,
            projects,
            permissions,
            end,
            restrictions,
        })
}

proptest! {
    /// Checked dimension by dimension with its own oracle, not with `within`.
    #[test]
    fn a_derived_credential_never_exceeds_its_caller(caller in reach_strategy(), ask in ask_strategy()) {
        let m = model();
        if let Ok(got) = derive(&caller, &ask, NOW, &RULES, &m) {
            let held = m.expand(&caller.grant.permissions);
            prop_assert!(m.expand(&got.grant.permissions).is_subset(&held));
            match (&caller.grant.projects, &got.grant.projects) {
                (Projects::All, _) => {}
                (Projects::Some(_), Projects::All) => prop_assert!(false, "widened to every project"),
                (Projects::Some(mine), Projects::Some(theirs)) => prop_assert!(theirs.is_subset(mine)),
            }
            if let Some(end) = caller.grant.not_after {
                prop_assert!(got.grant.not_after.is_some_and(|e| e <= end));
            }
            if !caller.restrictions.is_none() {
                prop_assert_eq!(&got.restrictions, &caller.restrictions);
            }
            if ask.kind == Yield::Token {
                let depth = got.depth.unwrap_or(u32::MAX);
                prop_assert!(depth <= RULES.max_depth);
                prop_assert_eq!(depth, caller.depth.map_or(0, |d| d + 1));
            }
            if ask.kind == Yield::Key {
                // A key never starts above its maker: its tokens continue the maker's chain.
                prop_assert_eq!(got.depth, caller.depth);
                if let Some(d) = caller.depth {
                    prop_assert!(d < RULES.max_depth);
                }
            }
            prop_assert!(within(&got, &caller, &m));
        }
    }

    /// Never silently narrowed: whatever was asked explicitly is what is granted.
    #[test]
    fn an_explicit_request_is_granted_exactly_or_refused(caller in reach_strategy(), ask in ask_strategy()) {
        if let Ok(got) = derive(&caller, &ask, NOW, &RULES, &model()) {
            if let Some(p) = &ask.projects {
                prop_assert_eq!(&got.grant.projects, p);
            }
            if let Some(p) = &ask.permissions {
                prop_assert_eq!(&got.grant.permissions, p);
            }
            if let Some(r) = &ask.restrictions {
                prop_assert_eq!(&got.restrictions, r);
            }
            match ask.end {
                End::Lifetime(Some(s)) => prop_assert_eq!(got.grant.not_after, Some(NOW + s)),
                End::Until(Some(at)) | End::Exactly(Some(at)) => prop_assert_eq!(got.grant.not_after, Some(at)),
                End::Exactly(None) => prop_assert_eq!(got.grant.not_after, None),
                End::Lifetime(None) | End::Until(None) => {}
            }
        }
    }
}
