//! The policy gate. Each RPC's decoded request describes itself to Cedar by implementing
//! [`Guarded`] beside its handler (in `api/`); [`authorize`] asks the global policies and the
//! caller's key policies, and returns an [`Authorized`] proof. Every core method that acts
//! for a caller takes that proof as an argument, and only this module can make one: a
//! handler that skips policy does not compile.
//!
//! Describing may read the store and plan the work (a mint's grant, an upstream's vendor
//! token), because policy must see exactly what would be done; the plan travels inside the
//! proof, so the handler does not redo it.

mod entity;

pub use entity::{
    CredentialView, authenticated_context, credential_entity, grant_attrs, key_entity,
    mint_context, stored_subject_entity, subject_desc, subject_entity, token_desc, token_entity,
    upstream_desc, upstream_entity,
};

use crate::{
    broker::{AuthError, Broker, Caller},
    error::Error,
    policy::{Attr, Decision, EntityDesc, EntityKind, Record},
};

/// How the server routes and guards one RPC: its path, its Cedar action and the few flags
/// the auth layer needs before the request is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// The Cedar action id (in `policies/schema.cedarschema`).
    pub action: &'static str,
    /// Answers without a credential (policy still decides, for the anonymous principal).
    pub public: bool,
    /// A key's previous secret during its reset grace may call it (mint and introspect only).
    pub mint_only: bool,
    /// Acts on someone's access keys: a denial says who may not act on behalf of whom.
    pub manages_keys: bool,
    /// The credential travels in the message (Envoy's `Check` carries the HTTP request's
    /// `authorization`): the auth layer reads no metadata and the handler authenticates.
    pub credential_in_message: bool,
}

impl Route {
    /// An authenticated RPC with no special flag.
    pub const fn new(path: &'static str, action: &'static str) -> Self {
        Self {
            path,
            action,
            public: false,
            mint_only: false,
            manages_keys: false,
            credential_in_message: false,
        }
    }

    /// The same route, whose handler authenticates the credential found in the message.
    pub const fn credential_in_message(self) -> Self {
        Self {
            credential_in_message: true,
            ..self
        }
    }

    /// The RPC's method name, the last segment of its path (what logs call it).
    pub fn method(&self) -> &'static str {
        match self.path.rsplit_once('/') {
            Some((_, method)) => method,
            None => self.path,
        }
    }

    /// The same route, callable with a key's previous secret during its grace.
    pub const fn mint_only(self) -> Self {
        Self {
            mint_only: true,
            ..self
        }
    }

    /// The same route, answering without a credential.
    pub const fn public(self) -> Self {
        Self {
            public: true,
            ..self
        }
    }

    /// The same route, acting on access keys.
    pub const fn manages_keys(self) -> Self {
        Self {
            manages_keys: true,
            ..self
        }
    }
}

/// What one request shows Cedar, and the plan its handler will carry out.
#[derive(Debug)]
pub struct Described<P> {
    /// The resource acted on.
    pub resource: EntityDesc,
    /// The context record (always has `credential`; some actions add fields).
    pub context: Record,
    /// The work the handler does once policy allowed.
    pub plan: P,
    /// A second action the global policies must also permit (e.g. `ReadUpstreamSecret`).
    pub also: Option<Also>,
}

impl<P> Described<P> {
    /// The usual description: `resource`, the `{ credential }` context of `caller`, `plan`.
    pub fn authenticated(caller: &Caller, now: i64, resource: EntityDesc, plan: P) -> Self {
        Self::new(resource, authenticated_context(caller, now), plan)
    }

    /// A description with no second action.
    pub fn new(resource: EntityDesc, context: Record, plan: P) -> Self {
        Self {
            resource,
            context,
            plan,
            also: None,
        }
    }
}

/// A refusal of the policy gate: who may not do what and which policies decided, or a rule
/// of the gate itself (an old secret acting beyond minting). `reason` is the stable
/// machine-readable code the client sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// Stable reason for `google.rpc.ErrorInfo`.
    pub reason: &'static str,
    /// What was refused and why.
    pub message: String,
}

/// A second action that must be permitted, and the refusal when it is not.
#[derive(Debug)]
pub struct Also {
    /// The Cedar action.
    pub action: &'static str,
    /// Stable reason of the refusal.
    pub reason: &'static str,
    /// The refusal's message.
    pub message: String,
}

/// A decoded request that knows how it is routed and what it shows policy.
pub trait Guarded: Sized {
    /// Its route (path, Cedar action, flags).
    const ROUTE: Route;
    /// What the handler needs once policy allowed.
    type Plan;
    /// The resource, context and plan of this request for `caller` at `now`. Invalid input
    /// may be described as harmlessly as possible and refused by the core after policy, so
    /// that nobody learns about what policy would hide.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error>;
}

/// Proof that policy allowed `plan` for `caller` at `now`; only [`authorize`] makes one.
#[derive(Debug)]
pub struct Authorized<P> {
    caller: Caller,
    plan: P,
    now: i64,
}

impl<P> Authorized<P> {
    /// Who was allowed.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// What was allowed.
    pub fn plan(&self) -> &P {
        &self.plan
    }

    /// The request's one clock reading (when the caller authenticated).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Takes the proof apart, for the core method that carries it out.
    pub fn into_parts(self) -> (Caller, P, i64) {
        (self.caller, self.plan, self.now)
    }
}

/// Decides `request` for `caller`: the global policies, then the caller's key policies, then
/// any second action the request names. Refusals are PERMISSION_DENIED naming who may not do
/// what and which policies decided.
pub fn authorize<R: Guarded>(
    broker: &Broker,
    caller: Caller,
    request: R,
) -> Result<Authorized<R::Plan>, Error> {
    let route = R::ROUTE;
    let now = caller.authenticated_at;
    // A key's previous secret in its reset grace, and every token minted from it, may only
    // mint and introspect: it must not undo the reset (by resetting, changing or deleting
    // the key) nor act with the key's full authority until the grace ends.
    if caller.old_secret && !route.mint_only {
        return Err(Denied {
            reason: "OLD_SECRET",
            message: format!(
                "`{}` refused: this credential comes from a secret replaced by a reset, which during its grace may only mint and introspect tokens; use the new secret",
                route.action
            ),
        }
        .into());
    }
    let Described {
        resource,
        context,
        plan,
        also,
    } = request.describe(broker, &caller, now)?;
    let principal = &caller.view.principal;
    let span = tracing::Span::current();
    let decision = broker
        .policy()
        .authorize(route.action, principal, &resource, &context);
    if !decision.allowed {
        span.record("decision", "deny");
        return Err(denied(route, principal, &resource, &decision, None));
    }
    // The root key's own policies (inline policy and roles) must allow too: they only narrow.
    if let Some(key_policy) = &caller.key_policy {
        let set = broker.keys.key_policy_set(key_policy, &caller.subject)?;
        let decision =
            broker
                .policy()
                .authorize_in(&set, route.action, principal, &resource, &context);
        if !decision.allowed {
            span.record("decision", "deny");
            return Err(denied(
                route,
                principal,
                &resource,
                &decision,
                Some(&key_policy.key_id),
            ));
        }
    }
    if let Some(also) = also {
        let decision = broker
            .policy()
            .authorize(also.action, principal, &resource, &context);
        if !decision.allowed {
            span.record("decision", "deny");
            return Err(Denied {
                reason: also.reason,
                message: also.message,
            }
            .into());
        }
    }
    span.record("decision", "allow");
    Ok(Authorized { caller, plan, now })
}

/// Decides a public RPC called without a credential: the anonymous principal on the broker,
/// with an empty context.
pub fn authorize_anonymous<R: Guarded>(broker: &Broker) -> Result<(), Error> {
    let route = R::ROUTE;
    if !route.public {
        return Err(AuthError::Missing(
            "missing credential: send the metadata `authorization: Bearer <access key or access token>`".to_owned(),
        )
        .into());
    }
    let principal = EntityDesc {
        kind: EntityKind::Anonymous,
        id: "anonymous".to_owned(),
        attrs: Record::new(),
    };
    let resource = EntityDesc::broker();
    let decision = broker
        .policy()
        .authorize(route.action, &principal, &resource, &Record::new());
    let span = tracing::Span::current();
    if !decision.allowed {
        span.record("decision", "deny");
        return Err(denied(route, &principal, &resource, &decision, None));
    }
    span.record("decision", "allow");
    Ok(())
}

/// The refusal for a denied decision: who may not do what, and which policies decided.
fn denied(
    route: Route,
    principal: &EntityDesc,
    resource: &EntityDesc,
    decision: &Decision,
    key: Option<&str>,
) -> Error {
    if !decision.errors.is_empty() {
        tracing::warn!(errors = ?decision.errors, "policy evaluation errors");
    }
    let by = match (key, decision.policies.is_empty()) {
        (Some(key), true) => {
            format!("the inline policy and roles of access key `{key}` permit nothing here")
        }
        (Some(key), false) => format!(
            "forbidden by `{}` of access key `{key}`",
            decision.policies.join("`, `")
        ),
        (None, true) => "no policy permits it".to_owned(),
        (None, false) => format!("forbidden by policy `{}`", decision.policies.join("`, `")),
    };
    let owner = match resource.kind {
        EntityKind::AccessKey => resource.attrs.get("owner").and_then(Attr::as_str),
        EntityKind::User | EntityKind::Service => Some(resource.id.as_str()),
        _ => None,
    };
    let message = match owner {
        Some(owner) if route.manages_keys && owner != principal.id && key.is_none() => format!(
            "`{}` may not act on behalf of `{owner}`: only the owner or an admin may ({by})",
            principal.id
        ),
        _ => format!(
            "`{}` on {} is denied for {}: {by}",
            route.action,
            resource.display(),
            principal.display()
        ),
    };
    Denied {
        reason: "POLICY_DENIED",
        message,
    }
    .into()
}
