//! Sidecars' HTTP requests (Envoy ext_authz `Check`): which `[[envoy.routes]]` entry a
//! request falls under, whether the caller's token holds what the route needs, and the
//! token exchange, which mints through the same derivation rule as `CreateAccessToken`.
//!
//! Nothing here knows Envoy's messages: `api/envoy.rs` turns a `CheckRequest` into an
//! [`HttpAsk`] and the outcome back into Envoy's answer.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use super::{Caller, MintPlan, Tokens, core::Core};
use crate::{
    authz::Authorized,
    config::EnvoyRoute,
    domain::{MintRequest, Projects, validate::quote},
    error::Error,
};

/// Most exchanged tokens remembered for reuse.
const EXCHANGE_CACHE_CAPACITY: u64 = 100_000;

/// What a sidecar's request is, as routes and policy see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAsk {
    /// The method as sent.
    pub method: String,
    /// The `host` header, lower case, without a port.
    pub host: String,
    /// The path, without the query string or fragment.
    pub path: String,
}

impl HttpAsk {
    /// Normalizes what Envoy sends: `host` is the raw header (case and port included) and
    /// `path` carries the query string.
    pub fn new(method: &str, host: &str, path: &str) -> Self {
        let host = match host.strip_prefix('[') {
            // An IPv6 literal keeps its brackets; a port follows the `]`.
            Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or("")),
            None => host.split(':').next().unwrap_or("").to_owned(),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        Self {
            method: method.to_owned(),
            host: host.to_ascii_lowercase(),
            path: path.to_owned(),
        }
    }

    /// Why the path cannot be matched safely, if it cannot: a dot segment, an encoded dot,
    /// slash or backslash, or an empty segment could make the service see another path than
    /// the one the route was chosen for (Envoy normalizes them away when configured as the
    /// README shows; a request that still carries one, or any percent-encoding or `;`
    /// parameter, which a service may decode into another path, is refused, not guessed at).
    pub fn unsafe_path(&self) -> Option<&'static str> {
        let path = &self.path;
        if !path.starts_with('/') {
            return Some("the path does not start with `/`");
        }
        if path.contains(['%', '\\', ';']) {
            return Some(
                "the path holds a percent-encoding, a backslash or a `;` (normalize paths in Envoy)",
            );
        }
        // A trailing `/` (an empty last segment) is the directory itself, not a gap.
        let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
        if !inner.is_empty()
            && inner
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Some("the path holds a `.`, `..` or empty segment");
        }
        None
    }
}

/// Whether `path` lies under `prefix` at a segment boundary (`/orders` covers `/orders` and
/// `/orders/x`, not `/ordersx`; `/` covers everything).
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A route found for a request: its position (0-based) and settings.
#[derive(Clone, Copy, Debug)]
pub struct Matched<'a> {
    /// Index in `[[envoy.routes]]`.
    pub index: usize,
    /// The route.
    pub route: &'a EnvoyRoute,
}

/// A token minted by exchange, kept for reuse while at least half its life is left. No
/// `Debug`: it holds a bearer token.
struct Exchanged {
    token: String,
    jti: String,
    issued_at: i64,
    expires_at: i64,
}

/// Why a sidecar's request is refused after its token authenticated: the route it needs
/// and does not have, or a mint the exchange may not make. Each becomes a 403 whose JSON
/// `reason` is this text.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No route covers the request, or its path cannot be matched safely.
    #[error("{0}")]
    NoRoute(String),
    /// The token lacks the route's permission or project.
    #[error("{0}")]
    Lacks(String),
}

/// The routes, and the exchanged tokens kept for reuse.
pub struct Mesh {
    core: Arc<Core>,
    exchanges: moka::sync::Cache<(String, usize), Arc<Exchanged>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("routes", &self.core.config.envoy.routes.len())
            .field("exchanges", &self.exchanges.entry_count())
            .finish()
    }
}

impl Mesh {
    /// The mesh concern over `core` and its `[envoy]` config.
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self {
            exchanges: moka::sync::Cache::builder()
                .max_capacity(EXCHANGE_CACHE_CAPACITY)
                // No entry is useful past the longest exchange lifetime.
                .time_to_live(core.config.envoy.exchange_lifetime + Duration::from_secs(1))
                .build(),
            core,
        }
    }

    /// The first route (file order) covering `ask`, or why none does.
    pub fn route_for(&self, ask: &HttpAsk) -> Result<Matched<'_>, Error> {
        if let Some(why) = ask.unsafe_path() {
            return Err(
                MeshError::NoRoute(format!("path {} is refused: {why}", quote(&ask.path))).into(),
            );
        }
        self.core
            .config
            .envoy
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| {
                r.host_name().eq_ignore_ascii_case(&ask.host)
                    && under_prefix(&ask.path, &r.path_prefix)
            })
            .map(|(index, route)| Matched { index, route })
            .ok_or_else(|| {
                MeshError::NoRoute(format!(
                    "no route covers host {} and path {}",
                    quote(&ask.host),
                    quote(&ask.path)
                ))
                .into()
            })
    }

    /// Refuses a caller whose token lacks the route's permission (after implication) or
    /// project, naming what is missing.
    pub fn check_route(&self, caller: &Caller, matched: &Matched<'_>) -> Result<(), Error> {
        let route = matched.route;
        if !self
            .core
            .model
            .holds(&caller.grant.permissions, &route.permission)
        {
            return Err(MeshError::Lacks(format!(
                "the token lacks permission `{}`, which route {} (`{}{}`) needs",
                route.permission,
                matched.index + 1,
                route.host,
                route.path_prefix
            ))
            .into());
        }
        if let Some(project) = &route.project
            && !caller.grant.projects.covers(project)
        {
            return Err(MeshError::Lacks(format!(
                "the token lacks project `{project}`, which route {} (`{}{}`) needs",
                matched.index + 1,
                route.host,
                route.path_prefix
            ))
            .into());
        }
        Ok(())
    }

    /// The token an exchange on `matched` would mint for `caller`, by the derivation rule
    /// (as if the caller's token called `CreateAccessToken`): the route's audience, project
    /// (else the caller's projects) and permission, for `exchange_lifetime` but never past
    /// the caller's end. `None` when the route exchanges nothing.
    pub fn plan_exchange(
        &self,
        tokens: &Tokens,
        caller: &Caller,
        matched: &Matched<'_>,
        now: i64,
    ) -> Result<Option<MintPlan>, Error> {
        let Some(audience) = &matched.route.audience else {
            return Ok(None);
        };
        let lifetime =
            i64::try_from(self.core.config.envoy.exchange_lifetime.as_secs()).unwrap_or(i64::MAX);
        let remaining = caller.grant.not_after.map_or(lifetime, |end| end - now);
        // Whole seconds, never through float hours: the token ends exactly at the caller's
        // end when that comes first.
        let request = MintRequest {
            projects: matched
                .route
                .project
                .as_ref()
                .map(|p| Projects::from_ids([p.clone()])),
            permissions: Some(BTreeSet::from([matched.route.permission.clone()])),
            lifetime_secs: Some(lifetime.min(remaining).max(1)),
        };
        Ok(Some(tokens.plan_request(caller, request, audience, now)?))
    }

    /// The exchanged token for an authorized request: the one minted earlier for the same
    /// caller token and route while at least half its life is left and it is not revoked,
    /// else a new one minted from the plan.
    pub async fn exchange(
        &self,
        tokens: &Tokens,
        route: usize,
        authorized: Authorized<MintPlan>,
    ) -> Result<String, Error> {
        let now = authorized.now();
        let key = (authorized.caller().credential_id.clone(), route);
        if let Some(kept) = self.exchanges.get(&key) {
            let half_left = kept.expires_at - now >= (kept.expires_at - kept.issued_at + 1) / 2;
            if half_left && !self.core.store.is_revoked(&kept.jti) {
                return Ok(kept.token.clone());
            }
        }
        let minted = tokens.mint(authorized).await?;
        self.exchanges.insert(
            key,
            Arc::new(Exchanged {
                token: minted.token.clone(),
                jti: minted.claims.jti,
                issued_at: minted.claims.iat,
                expires_at: minted.claims.exp,
            }),
        );
        Ok(minted.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_loses_case_and_port_and_path_its_query() {
        let ask = HttpAsk::new("GET", "Orders.Mesh.Local:8443", "/orders/7?x=/public#f");
        assert_eq!(ask.host, "orders.mesh.local");
        assert_eq!(ask.path, "/orders/7");
        assert_eq!(HttpAsk::new("GET", "[::1]:80", "/").host, "[::1]");
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(under_prefix("/orders", "/orders"));
        assert!(under_prefix("/orders/x", "/orders"));
        assert!(!under_prefix("/ordersx", "/orders"));
        assert!(under_prefix("/anything", "/"));
        assert!(under_prefix("/orders/x", "/orders/"));
        assert!(!under_prefix("/orders", "/orders/"));
    }

    #[test]
    fn paths_that_could_mean_another_path_are_refused() {
        for bad in [
            "/public/../orders",
            "/./orders",
            "/%2e%2e/orders",
            "/a%2Fb",
            "/orders/%61dmin",
            "/public/..;/orders",
            "/a\\b",
            "//orders",
            "/a//b",
        ] {
            assert!(
                HttpAsk::new("GET", "h", bad).unsafe_path().is_some(),
                "{bad}"
            );
        }
        for good in ["/", "/orders", "/orders/", "/orders/7", "/a.b/c..d"] {
            assert_eq!(HttpAsk::new("GET", "h", good).unsafe_path(), None, "{good}");
        }
    }
}
