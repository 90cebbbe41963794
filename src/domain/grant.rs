//! Grants and the attenuation check: the one place that decides whether a credential may
//! mint a narrower one (DESIGN §3.1).

use std::collections::{BTreeMap, BTreeSet};

/// The project id that stands for every project.
pub const ALL_PROJECTS: &str = "*";

/// Which projects a grant covers; `All` is the `*` grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projects {
    /// Every project, present and future.
    All,
    /// Exactly these projects.
    Some(BTreeSet<String>),
}

impl Projects {
    /// Builds from ids as written on the wire, where `*` means every project.
    pub fn from_ids<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        let mut set = BTreeSet::new();
        for id in ids {
            let id = id.into();
            if id == ALL_PROJECTS {
                return Projects::All;
            }
            set.insert(id);
        }
        Projects::Some(set)
    }

    /// The wire form, `["*"]` for every project.
    pub fn to_ids(&self) -> Vec<String> {
        match self {
            Projects::All => vec![ALL_PROJECTS.to_owned()],
            Projects::Some(set) => set.iter().cloned().collect(),
        }
    }

    /// Whether `self` covers `project`.
    pub fn covers(&self, project: &str) -> bool {
        match self {
            Projects::All => true,
            Projects::Some(set) => set.contains(project),
        }
    }

    /// The projects both cover.
    pub fn intersect(&self, other: &Projects) -> Projects {
        match (self, other) {
            (Projects::All, p) | (p, Projects::All) => p.clone(),
            (Projects::Some(a), Projects::Some(b)) => {
                Projects::Some(a.intersection(b).cloned().collect())
            }
        }
    }

    /// The projects of `requested` that `self` does not cover, for the refusal message.
    pub(crate) fn excess(&self, requested: &Projects) -> Vec<String> {
        match (self, requested) {
            (Projects::All, _) => Vec::new(),
            (Projects::Some(_), Projects::All) => vec![ALL_PROJECTS.to_owned()],
            (Projects::Some(mine), Projects::Some(theirs)) => {
                theirs.difference(mine).cloned().collect()
            }
        }
    }
}

/// What a credential may do: projects, permissions (as granted) and the instant it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Projects covered.
    pub projects: Projects,
    /// Permissions as granted; implication is applied by [`PermissionModel`] when comparing.
    pub permissions: BTreeSet<String>,
    /// Seconds since the epoch after which the grant is void; `None` never ends.
    pub not_after: Option<i64>,
}

/// The permission vocabulary and its implication closure (`admin` ⊇ `write` ⊇ `read`).
#[derive(Clone, Debug)]
pub struct PermissionModel {
    closure: BTreeMap<String, BTreeSet<String>>,
}

impl PermissionModel {
    /// Builds the transitive closure once so every subset check is a set lookup.
    pub fn new(permissions: &[String], implies: &BTreeMap<String, Vec<String>>) -> Self {
        let mut closure = BTreeMap::new();
        for p in permissions {
            let mut seen = BTreeSet::from([p.clone()]);
            let mut todo = vec![p.clone()];
            while let Some(next) = todo.pop() {
                for implied in implies.get(&next).into_iter().flatten() {
                    if seen.insert(implied.clone()) {
                        todo.push(implied.clone());
                    }
                }
            }
            closure.insert(p.clone(), seen);
        }
        Self { closure }
    }

    /// Whether `permission` is in the vocabulary.
    pub fn is_known(&self, permission: &str) -> bool {
        self.closure.contains_key(permission)
    }

    /// Every permission in the vocabulary, so "all permissions" can be spelled out.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.closure.keys()
    }

    /// Whether `granted` holds `wanted` once implication is applied; unlike [`Self::expand`]
    /// it allocates nothing, for checks made on every request.
    pub fn holds<'a>(&self, granted: impl IntoIterator<Item = &'a String>, wanted: &str) -> bool {
        granted.into_iter().any(|p| {
            p == wanted
                || self
                    .closure
                    .get(p)
                    .is_some_and(|implied| implied.contains(wanted))
        })
    }

    /// The permissions `granted` holds once implication is applied.
    pub fn expand<'a>(&self, granted: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        // Distinct names by reference first, so each is copied once (an admin's closure
        // holds every permission, once per granted permission that implies it).
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for p in granted {
            match self.closure.get(p) {
                Some(implied) => names.extend(implied.iter().map(String::as_str)),
                None => {
                    names.insert(p);
                }
            }
        }
        names.into_iter().map(str::to_owned).collect()
    }
}

/// A mint request after input validation: `None` means "inherit" for projects and
/// permissions and "default" for the lifetime.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MintRequest {
    /// Requested projects, or inherit the authoriser's.
    pub projects: Option<Projects>,
    /// Requested permissions, or inherit the authoriser's.
    pub permissions: Option<BTreeSet<String>>,
    /// Requested lifetime in whole seconds (validated: ≥ 1 and ≤ the configured maximum).
    pub lifetime_secs: Option<i64>,
}

/// Lifetime bounds from the config, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct MintLimits {
    /// The lifetime of a token minted without an explicit one.
    pub default_lifetime_secs: i64,
    /// The longest lifetime any token may have.
    pub max_lifetime_secs: i64,
}

/// What a refused request asked for beyond the authoriser's grant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exceeded {
    /// Projects not covered by the authoriser.
    pub projects: Vec<String>,
    /// Permissions the authoriser does not hold, even through implication.
    pub permissions: Vec<String>,
    /// `(requested, remaining)` lifetimes in seconds when the request outlives the authoriser;
    /// `requested` is [`super::derive::NEVER`] when it asked for no end at all.
    pub lifetime: Option<(i64, i64)>,
    /// The restrictions asked for, when they are not the authoriser's own.
    pub restrictions: Option<String>,
    /// `(authoriser's depth, maximum)` when the authoriser may no longer delegate.
    pub depth: Option<(u32, u32)>,
    /// Whose grant the request went beyond, so the refusal names the rule that applied.
    pub bound: Bound,
}

/// The grant a request is held within, besides the caller's own (the derivation rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bound {
    /// The credential that authorised the call (the derivation rule).
    #[default]
    Authoriser,
    /// The key's own current grant: an update by anyone but an unrestricted admin only
    /// narrows.
    Key,
    /// The grant of the key's owner, which no key exceeds.
    Owner,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holder = match self.bound {
            Bound::Authoriser => "the authorising credential",
            Bound::Key => "the key",
            Bound::Owner => "the owner",
        };
        let mut parts = Vec::new();
        if !self.projects.is_empty() {
            parts.push(format!("projects {}", backticked(&self.projects)));
        }
        if !self.permissions.is_empty() {
            parts.push(format!("permissions {}", backticked(&self.permissions)));
        }
        if let Some((requested, remaining)) = self.lifetime {
            if requested == super::derive::NEVER {
                parts.push(format!(
                    "no expiry ({holder} has {remaining}s left: set an expiry within it)"
                ));
            } else {
                parts.push(format!(
                    "a lifetime of {requested}s ({holder} has {remaining}s left)"
                ));
            }
        }
        if let Some(restrictions) = &self.restrictions {
            parts.push(restrictions.clone());
        }
        if let Some((depth, max)) = self.depth {
            parts.push(format!(
                "a delegation from depth {depth} (the maximum delegation depth is {max})"
            ));
        }
        let parts = parts.join("; ");
        match self.bound {
            Bound::Authoriser => write!(
                f,
                "request exceeds the authorising credential's grant: {parts}; ask for a subset"
            ),
            Bound::Key => write!(
                f,
                "request widens the key beyond its current grant: {parts}; only an admin may widen a key: ask for a subset of the key's grant, or ask an admin"
            ),
            Bound::Owner => write!(
                f,
                "request exceeds the grant of the key's owner: {parts}; a key never holds more than its owner: ask for a subset"
            ),
        }
    }
}

fn backticked(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides a mint from a bare grant: the derivation rule ([`super::derive::derive`]) for a
/// token from an unrestricted authoriser, returning only the grant. Kept for callers and tests
/// that reason about grants alone; it is not a second rule.
///
/// The lifetime rule (Develocity): an explicit lifetime must end no later than the
/// authoriser; an omitted one is the default, shortened to what the authoriser has left.
pub fn attenuate(
    authoriser: &Grant,
    request: &MintRequest,
    now: i64,
    limits: MintLimits,
    model: &PermissionModel,
) -> Result<Grant, Exceeded> {
    use super::derive::{Ask, End, Reach, Restrictions, Rules, Yield, derive};
    let caller = Reach {
        grant: authoriser.clone(),
        restrictions: Restrictions::default(),
        depth: None,
    };
    let ask = Ask {
        kind: Yield::Token,
        projects: request.projects.clone(),
        permissions: request.permissions.clone(),
        end: End::Lifetime(request.lifetime_secs),
        restrictions: None,
    };
    let rules = Rules {
        limits,
        max_depth: u32::MAX,
    };
    derive(&caller, &ask, now, &rules, model).map(|reach| reach.grant)
}

/// Whether `child` attenuates `parent` under `model`: the definition of DESIGN §2.
pub fn attenuates(child: &Grant, parent: &Grant, model: &PermissionModel) -> bool {
    let held = model.expand(&parent.permissions);
    let projects_ok = parent.projects.excess(&child.projects).is_empty();
    let permissions_ok = model.expand(&child.permissions).is_subset(&held);
    let time_ok = match (child.not_after, parent.not_after) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(c), Some(p)) => c <= p,
    };
    projects_ok && permissions_ok && time_ok
}

#[cfg(test)]
mod tests;
