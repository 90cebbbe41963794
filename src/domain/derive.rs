//! The derivation rule (DESIGN §3.1): the one function through which every call that yields
//! or changes a credential decides what that credential may reach.
//!
//! A minted token, a created, reset or updated access key, and a vendor token are all
//! *derived* from the credential that asked: [`derive`] takes the caller's [`Reach`] and what
//! the call asks for, and returns the new credential's reach, or exactly what the request asked
//! for beyond the caller. It never narrows silently. The rule, dimension by dimension:
//!
//! - **projects** ⊆ the caller's, **permissions** ⊆ the caller's after implication; omitted
//!   ones inherit the caller's;
//! - **end** ≤ the caller's end: a credential yielded by a token or an expiring key ends no
//!   later than it (a key asked for without `expires_at` inherits the caller's end);
//! - **restrictions** (the inline policy and roles of the caller's root key) are carried
//!   unchanged: a restricted caller yields only credentials under exactly its own restrictions
//!   (Cedar permits when *any* policy permits, so a different role or inline policy could
//!   widen); an unrestricted caller may yield any restrictions, since adding some narrows;
//! - **depth**: a token is minted one level deeper (0 from a root key) and never past
//!   `max_depth`; a key yielded by a token sits at the token's depth, so its tokens continue
//!   the chain, and a credential that may no longer delegate cannot yield a key either.

use std::collections::BTreeSet;

use super::grant::{Exceeded, Grant, MintLimits, PermissionModel, Projects};

/// The restrictions in force on a credential: the inline policy and roles of its root key,
/// which narrow every request made with it. Two are equal when their inline policies are the
/// same text (leading and trailing white space aside) and their roles the same set.
#[derive(Clone, Debug, Default, Eq)]
pub struct Restrictions {
    /// Inline Cedar text as given; blank for none.
    pub inline_policy: String,
    /// Linked role template names.
    pub roles: BTreeSet<String>,
}

impl Restrictions {
    /// Builds the comparable form of a key's inline policy and roles.
    pub fn new(inline_policy: &str, roles: &[String]) -> Self {
        Self {
            inline_policy: inline_policy.to_owned(),
            roles: roles.iter().cloned().collect(),
        }
    }

    /// Whether nothing narrows the credential beyond the global policies.
    pub fn is_none(&self) -> bool {
        self.inline_policy.trim().is_empty() && self.roles.is_empty()
    }

    /// A short human description for refusals: the roles, and whether an inline policy applies.
    pub fn describe(&self) -> String {
        match (self.roles.is_empty(), self.inline_policy.trim().is_empty()) {
            (true, true) => "no restrictions".to_owned(),
            (false, true) => format!("roles {}", listed(&self.roles)),
            (true, false) => "an inline policy".to_owned(),
            (false, false) => format!("roles {} and an inline policy", listed(&self.roles)),
        }
    }
}

impl PartialEq for Restrictions {
    fn eq(&self, other: &Self) -> bool {
        self.inline_policy.trim() == other.inline_policy.trim() && self.roles == other.roles
    }
}

fn listed(items: &BTreeSet<String>) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything the derivation rule compares about one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// Projects, permissions (as granted) and end.
    pub grant: Grant,
    /// The root key's inline policy and roles.
    pub restrictions: Restrictions,
    /// Delegation depth of a token, or of the token that made a key; `None` for a root key.
    pub depth: Option<u32>,
}

/// What kind of credential a call yields: the rule is the same, the depth step differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yield {
    /// A broker access token (CreateAccessToken).
    Token,
    /// An access key, created, reset or updated (its secret or its reach is obtained).
    Key,
    /// A vendor-native token (IssueUpstreamToken); it cannot delegate inside the broker.
    VendorToken,
}

/// How a request names the end of the new credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Seconds from now (validated ≥ 1 and ≤ the maximum lifetime); `None` is the default
    /// lifetime, shortened to what the caller has left (Develocity).
    Lifetime(Option<i64>),
    /// An absolute instant; `None` inherits the caller's end (never, if the caller never ends).
    Until(Option<i64>),
    /// Exactly this end, `None` meaning never: an existing key obtained or changed as it is.
    Exactly(Option<i64>),
}

/// What a call asks the new credential to hold. `None` fields inherit the caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// What is being yielded.
    pub kind: Yield,
    /// Requested projects.
    pub projects: Option<Projects>,
    /// Requested permissions.
    pub permissions: Option<BTreeSet<String>>,
    /// Requested end.
    pub end: End,
    /// Requested restrictions.
    pub restrictions: Option<Restrictions>,
}

/// The configured bounds the rule applies besides the caller's own reach.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Token lifetimes.
    pub limits: MintLimits,
    /// How many times a token may be minted from a token.
    pub max_depth: u32,
}

/// The derivation rule: the reach of the credential `ask` would yield from `caller`, or what
/// it asked for beyond `caller`. The result never reaches further than `caller` in any
/// dimension (projects, permissions after implication, end, restrictions, depth).
pub fn derive(
    caller: &Reach,
    ask: &Ask,
    now: i64,
    rules: &Rules,
    model: &PermissionModel,
) -> Result<Reach, Exceeded> {
    let held = &caller.grant;
    let projects = match &ask.projects {
        // An explicit `*` from a caller that holds every project is the same as inheriting.
        None => held.projects.clone(),
        Some(p) => p.clone(),
    };
    let permissions = ask
        .permissions
        .clone()
        .unwrap_or_else(|| held.permissions.clone());
    let mut exceeded = Exceeded {
        projects: held.projects.excess(&projects),
        permissions: excess_permissions(&held.permissions, &permissions, model),
        ..Exceeded::default()
    };

    let remaining = held.not_after.map(|end| end - now);
    let end = match ask.end {
        End::Lifetime(asked) => {
            let lifetime = match (asked, remaining) {
                (Some(asked), Some(left)) if asked > left => {
                    exceeded.lifetime = Some((asked, left.max(0)));
                    asked
                }
                (Some(asked), _) => asked,
                (None, Some(left)) => rules.limits.default_lifetime_secs.min(left),
                (None, None) => rules.limits.default_lifetime_secs,
            }
            .min(rules.limits.max_lifetime_secs);
            if lifetime <= 0 && exceeded.lifetime.is_none() {
                // INVARIANT: only reachable with a default lifetime from a caller with no time
                // left, which authentication refuses first; refuse rather than yield a dead one.
                exceeded.lifetime = Some((0, remaining.unwrap_or(0).max(0)));
            }
            Some(now + lifetime)
        }
        End::Until(None) => held.not_after,
        End::Until(Some(at)) | End::Exactly(Some(at)) => {
            if let Some(left) = remaining
                && at - now > left
            {
                exceeded.lifetime = Some((at - now, left.max(0)));
            }
            Some(at)
        }
        End::Exactly(None) => {
            if let Some(left) = remaining {
                exceeded.lifetime = Some((NEVER, left.max(0)));
            }
            None
        }
    };

    let restrictions = match &ask.restrictions {
        None => caller.restrictions.clone(),
        Some(asked) => {
            if !caller.restrictions.is_none() && *asked != caller.restrictions {
                exceeded.restrictions = Some(format!(
                    "{} (the authorising credential is bound by {}; a credential it yields carries exactly those)",
                    asked.describe(),
                    caller.restrictions.describe()
                ));
            }
            asked.clone()
        }
    };

    // A root key's tokens start at depth 0; each mint from a token goes one deeper. A key
    // yielded by a token sits at that token's depth (and so does a key such a key yields),
    // so its tokens continue the chain instead of restarting it.
    let next_depth = caller.depth.map_or(0, |d| d + 1);
    let depth = match ask.kind {
        Yield::Token | Yield::VendorToken => Some(next_depth),
        Yield::Key => caller.depth,
    };
    let delegates = matches!(ask.kind, Yield::Token | Yield::Key);
    if delegates && caller.depth.is_some() && next_depth > rules.max_depth {
        exceeded.depth = Some((caller.depth.unwrap_or(0), rules.max_depth));
    }

    if exceeded != Exceeded::default() {
        return Err(exceeded);
    }
    Ok(Reach {
        grant: Grant {
            projects,
            permissions,
            not_after: end,
        },
        restrictions,
        depth,
    })
}

/// `requested` seconds in [`Exceeded::lifetime`] when the request asks for no end at all.
pub const NEVER: i64 = i64::MAX;

/// Permissions of `asked` not held (after implication) by `held`: named as the caller asked
/// them when possible, not as implication expanded them.
fn excess_permissions(
    held: &BTreeSet<String>,
    asked: &BTreeSet<String>,
    model: &PermissionModel,
) -> Vec<String> {
    let held = model.expand(held);
    let direct: Vec<String> = asked
        .iter()
        .filter(|p| !held.contains(*p))
        .cloned()
        .collect();
    if !direct.is_empty() {
        return direct;
    }
    model
        .expand(asked)
        .into_iter()
        .filter(|p| !held.contains(p))
        .collect()
}

/// Whether `child` reaches no further than `parent` in any dimension: the property
/// [`derive`] guarantees, stated on its own (used to re-check results before they are stored).
pub fn within(child: &Reach, parent: &Reach, model: &PermissionModel) -> bool {
    let restrictions_ok =
        parent.restrictions.is_none() || child.restrictions == parent.restrictions;
    super::grant::attenuates(&child.grant, &parent.grant, model) && restrictions_ok
}

#[cfg(test)]
mod tests;
