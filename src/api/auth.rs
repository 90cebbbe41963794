//! The auth layer: authenticates the bearer credential once, describes the request to Cedar
//! and lets it through only when the policies allow. Handlers find the verified [`Caller`]
//! in the request extensions and never authorize on their own.
//!
//! It sits inside tonic's server, before routing, so every call passes it. It fails closed:
//! a `tokenbroker.v1` RPC with an entry in [`Rpc`] is authenticated and authorized, the
//! [`PUBLIC_SERVICES`] (health, reflection) pass untouched, and any other path is refused
//! UNIMPLEMENTED before any handler. It reads the one request message of a unary call to give
//! Cedar the resource and context; the bytes are handed on unchanged.

use std::{
    collections::BTreeSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Buf;
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use serde_json::{Value, json};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

use super::status::to_status;
use crate::{
    broker::{self, Broker, Caller, CredentialKind, MintPlan, UpstreamPlan},
    domain::{Grant, PermissionModel, Projects},
    error::Error,
    pb::{storage::SubjectRecord, v1 as pb},
    policy::{Decision, EntityDesc, EntityKind},
};

/// The RPCs guarded by this layer; the name is the Cedar action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// `TokenService/CreateAccessToken`.
    CreateAccessToken,
    /// `TokenService/IntrospectToken`.
    IntrospectToken,
    /// `TokenService/RevokeAccessToken`.
    RevokeAccessToken,
    /// `TokenService/GetJwks`.
    GetJwks,
    /// `SubjectService/CreateSubject`.
    CreateSubject,
    /// `SubjectService/GetSubject`.
    GetSubject,
    /// `SubjectService/ListSubjects`.
    ListSubjects,
    /// `SubjectService/DeleteSubject`.
    DeleteSubject,
    /// `AccessKeyService/CreateAccessKey`.
    CreateAccessKey,
    /// `AccessKeyService/ListAccessKeys`.
    ListAccessKeys,
    /// `AccessKeyService/GetAccessKey`.
    GetAccessKey,
    /// `AccessKeyService/UpdateAccessKey`.
    UpdateAccessKey,
    /// `AccessKeyService/DeleteAccessKey`.
    DeleteAccessKey,
    /// `AccessKeyService/ResetAccessKey`.
    ResetAccessKey,
    /// `UpstreamService/CreateUpstream`.
    CreateUpstream,
    /// `UpstreamService/GetUpstream`.
    GetUpstream,
    /// `UpstreamService/ListUpstreams`.
    ListUpstreams,
    /// `UpstreamService/UpdateUpstream`.
    UpdateUpstream,
    /// `UpstreamService/DeleteUpstream`.
    DeleteUpstream,
    /// `UpstreamService/IssueUpstreamToken`.
    IssueUpstreamToken,
    /// `UpstreamService/RevokeUpstreamToken`.
    RevokeUpstreamToken,
}

impl Rpc {
    /// Recognises a `tokenbroker.v1` method path.
    pub fn from_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/tokenbroker.v1.")?;
        let (service, method) = rest.split_once('/')?;
        Some(match (service, method) {
            ("TokenService", "CreateAccessToken") => Rpc::CreateAccessToken,
            ("TokenService", "IntrospectToken") => Rpc::IntrospectToken,
            ("TokenService", "RevokeAccessToken") => Rpc::RevokeAccessToken,
            ("TokenService", "GetJwks") => Rpc::GetJwks,
            ("SubjectService", "CreateSubject") => Rpc::CreateSubject,
            ("SubjectService", "GetSubject") => Rpc::GetSubject,
            ("SubjectService", "ListSubjects") => Rpc::ListSubjects,
            ("SubjectService", "DeleteSubject") => Rpc::DeleteSubject,
            ("AccessKeyService", "CreateAccessKey") => Rpc::CreateAccessKey,
            ("AccessKeyService", "ListAccessKeys") => Rpc::ListAccessKeys,
            ("AccessKeyService", "GetAccessKey") => Rpc::GetAccessKey,
            ("AccessKeyService", "UpdateAccessKey") => Rpc::UpdateAccessKey,
            ("AccessKeyService", "DeleteAccessKey") => Rpc::DeleteAccessKey,
            ("AccessKeyService", "ResetAccessKey") => Rpc::ResetAccessKey,
            ("UpstreamService", "CreateUpstream") => Rpc::CreateUpstream,
            ("UpstreamService", "GetUpstream") => Rpc::GetUpstream,
            ("UpstreamService", "ListUpstreams") => Rpc::ListUpstreams,
            ("UpstreamService", "UpdateUpstream") => Rpc::UpdateUpstream,
            ("UpstreamService", "DeleteUpstream") => Rpc::DeleteUpstream,
            ("UpstreamService", "IssueUpstreamToken") => Rpc::IssueUpstreamToken,
            ("UpstreamService", "RevokeUpstreamToken") => Rpc::RevokeUpstreamToken,
            _ => return None,
        })
    }

    /// The Cedar action id.
    pub fn action(self) -> &'static str {
        match self {
            Rpc::CreateAccessToken => "CreateAccessToken",
            Rpc::IntrospectToken => "IntrospectToken",
            Rpc::RevokeAccessToken => "RevokeAccessToken",
            Rpc::GetJwks => "GetJwks",
            Rpc::CreateSubject => "CreateSubject",
            Rpc::GetSubject => "GetSubject",
            Rpc::ListSubjects => "ListSubjects",
            Rpc::DeleteSubject => "DeleteSubject",
            Rpc::CreateAccessKey => "CreateAccessKey",
            Rpc::ListAccessKeys => "ListAccessKeys",
            Rpc::GetAccessKey => "GetAccessKey",
            Rpc::UpdateAccessKey => "UpdateAccessKey",
            Rpc::DeleteAccessKey => "DeleteAccessKey",
            Rpc::ResetAccessKey => "ResetAccessKey",
            Rpc::CreateUpstream => "CreateUpstream",
            Rpc::GetUpstream => "GetUpstream",
            Rpc::ListUpstreams => "ListUpstreams",
            Rpc::UpdateUpstream => "UpdateUpstream",
            Rpc::DeleteUpstream => "DeleteUpstream",
            Rpc::IssueUpstreamToken => "IssueUpstreamToken",
            Rpc::RevokeUpstreamToken => "RevokeUpstreamToken",
        }
    }

    /// RPCs that act on someone's access keys: a refusal says the caller may not act on
    /// behalf of the owner (Bitbucket's wording).
    fn manages_keys(self) -> bool {
        matches!(
            self,
            Rpc::CreateAccessKey
                | Rpc::ListAccessKeys
                | Rpc::GetAccessKey
                | Rpc::UpdateAccessKey
                | Rpc::DeleteAccessKey
                | Rpc::ResetAccessKey
        )
    }

    /// RPCs that a key's previous secret (during its reset grace) may still call.
    fn is_mint_only(self) -> bool {
        matches!(
            self,
            Rpc::CreateAccessToken | Rpc::IntrospectToken | Rpc::GetJwks
        )
    }

    /// RPCs that answer without a credential.
    fn is_public(self) -> bool {
        self == Rpc::GetJwks
    }
}

/// The services served without a credential or policy: standard health checks and server
/// reflection (both describe the server, neither touches a credential).
pub const PUBLIC_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Whether `path` (`/package.Service/Method`) belongs to one of [`PUBLIC_SERVICES`].
pub fn is_public_service(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| !method.is_empty() && PUBLIC_SERVICES.contains(&service))
}

/// Adds authentication and Cedar authorization in front of the routed services.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    broker: Arc<Broker>,
}

impl AuthLayer {
    /// Wraps services with the checks of `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            broker: Arc::clone(&self.broker),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    broker: Arc<Broker>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Auth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let Some(rpc) = Rpc::from_path(path) else {
            // Fail closed: only the explicitly public services pass unguarded; a path with
            // no entry is refused before routing, so a service added later without one is
            // never served unauthenticated.
            if is_public_service(path) {
                return Box::pin(self.inner.call(request));
            }
            let status = tonic::Status::unimplemented(format!(
                "method `{}` is not served: it has no authorization entry",
                crate::domain::validate::quote(path).trim_matches('`')
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let broker = Arc::clone(&self.broker);
        let span = tracing::info_span!(
            "rpc",
            method = rpc.action(),
            subject = Empty,
            decision = Empty,
            code = Empty,
            latency_us = Empty,
        );
        Box::pin(
            async move {
                let started = Instant::now();
                let response = match admit(&broker, rpc, request).await {
                    Ok(request) => inner.call(request).await?,
                    Err(error) => to_status(error).into_http(),
                };
                let span = tracing::Span::current();
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                span.record("code", code.as_str());
                span.record("latency_us", started.elapsed().as_micros() as u64);
                tracing::info!("rpc finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Authenticates, reads the message, asks Cedar; returns the request to pass on.
async fn admit(
    broker: &Broker,
    rpc: Rpc,
    request: http::Request<Body>,
) -> Result<http::Request<Body>, Error> {
    let span = tracing::Span::current();
    let now = broker::now();
    let caller = match bearer(request.headers()) {
        Ok(Some(value)) => Some(broker.authenticate(value, now)?),
        Ok(None) if rpc.is_public() => None,
        Ok(None) => {
            return Err(Error::Unauthenticated(
                "missing credential: send the metadata `authorization: Bearer <access key or access token>`".to_owned(),
            ));
        }
        Err(error) => return Err(error),
    };
    if let Some(c) = &caller {
        span.record("subject", c.subject.id.as_str());
        // A key's previous secret in its reset grace, and every token minted from it, may
        // only mint and introspect: it must not undo the reset (by resetting, changing or
        // deleting the key) nor act with the key's full authority until the grace ends.
        if c.old_secret && !rpc.is_mint_only() {
            return Err(Error::PermissionDenied {
                reason: "OLD_SECRET",
                message: format!(
                    "`{}` refused: this credential comes from a secret replaced by a reset, which during its grace may only mint and introspect tokens; use the new secret",
                    rpc.action()
                ),
            });
        }
    }

    let (parts, body) = request.into_parts();
    let limit = broker.config.max_request_bytes;
    let bytes = Limited::new(body, limit + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large(limit)
            } else {
                Error::Cancelled("the request body could not be read".to_owned())
            }
        })?
        .to_bytes();
    let message = grpc_message(&bytes, limit)?;

    let mut planned = Planned::None;
    let (principal, resource, context) = match &caller {
        Some(caller) => {
            let (resource, context) = describe(broker, rpc, caller, message, now, &mut planned)?;
            (subject_entity(&caller.subject, broker), resource, context)
        }
        None => (
            EntityDesc {
                kind: EntityKind::Anonymous,
                id: "anonymous".to_owned(),
                attrs: json!({}),
            },
            EntityDesc::broker(),
            json!({}),
        ),
    };
    let decision = broker
        .policy
        .authorize(rpc.action(), &principal, &resource, context.clone());
    if !decision.allowed {
        span.record("decision", "deny");
        return Err(denied(rpc, &principal, &resource, &decision, None));
    }
    // The root key's own policies (inline policy and roles) must allow too: they only narrow.
    if let Some(key_policy) = caller
        .as_ref()
        .and_then(|c| c.key_policy.as_ref().map(|k| (c, k)))
    {
        let (caller, key_policy) = key_policy;
        let set = broker.key_policy_set(key_policy, &caller.subject)?;
        let decision =
            broker
                .policy
                .authorize_in(&set, rpc.action(), &principal, &resource, context.clone());
        if !decision.allowed {
            span.record("decision", "deny");
            return Err(denied(
                rpc,
                &principal,
                &resource,
                &decision,
                Some(&key_policy.key_id),
            ));
        }
    }
    // A git password upstream hands out the stored password itself: that needs a policy
    // that explicitly permits `ReadUpstreamSecret` (the shipped policies do not).
    if rpc == Rpc::IssueUpstreamToken
        && resource.attrs.get("vendor").and_then(Value::as_str)
            == Some(crate::upstream::Vendor::GitPassword.as_str())
    {
        let decision =
            broker
                .policy
                .authorize("ReadUpstreamSecret", &principal, &resource, context);
        if !decision.allowed {
            span.record("decision", "deny");
            return Err(Error::PermissionDenied {
                reason: "SECRET_READ_DENIED",
                message: format!(
                    "upstream `{}` hands out a stored password: no policy permits `ReadUpstreamSecret` for {} (the shipped policies never do; an operator must add one)",
                    resource.id,
                    principal.display()
                ),
            });
        }
    }
    span.record("decision", "allow");

    let mut request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    match planned {
        Planned::None => {}
        Planned::Mint(plan) => {
            request.extensions_mut().insert(plan);
        }
        Planned::Upstream(plan) => {
            request.extensions_mut().insert(*plan);
        }
    }
    Ok(request)
}

/// The refusal for a denied decision: who may not do what, and which policies decided.
fn denied(
    rpc: Rpc,
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
        EntityKind::AccessKey => resource.attrs.get("owner").and_then(Value::as_str),
        EntityKind::User | EntityKind::Service => Some(resource.id.as_str()),
        _ => None,
    };
    let message = match owner {
        Some(owner) if rpc.manages_keys() && owner != principal.id && key.is_none() => format!(
            "`{}` may not act on behalf of `{owner}`: only the owner or an admin may ({by})",
            principal.id
        ),
        _ => format!(
            "`{}` on {} is denied for {}: {by}",
            rpc.action(),
            resource.display(),
            principal.display()
        ),
    };
    Error::PermissionDenied {
        reason: "POLICY_DENIED",
        message,
    }
}

/// The bearer value of the `authorization` metadata, if any. Public for the fuzz target
/// (`crate::fuzzing`): it reads attacker-controlled bytes before anything else does.
pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        Error::Unauthenticated(
            "the `authorization` metadata must be `Bearer <access key or access token>`".to_owned(),
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(credential.trim()))
}

fn too_large(limit: usize) -> Error {
    Error::ResourceExhausted(format!(
        "request message is larger than the limit of {limit} bytes: send a smaller request"
    ))
}

/// The message of a unary gRPC request body: one uncompressed length-prefixed frame. Public
/// for the fuzz target (`crate::fuzzing`).
pub fn grpc_message(body: &[u8], limit: usize) -> Result<&[u8], Error> {
    let mut header = body;
    if header.remaining() < 5 {
        return Err(Error::invalid("", "the request holds no gRPC message"));
    }
    let compressed = header.get_u8();
    let len = header.get_u32() as usize;
    if compressed != 0 {
        return Err(Error::Unsupported(
            "compressed requests are not supported: send them uncompressed".to_owned(),
        ));
    }
    if len > limit {
        return Err(too_large(limit));
    }
    if header.len() != len {
        return Err(Error::invalid(
            "",
            "the request body is not exactly one gRPC message",
        ));
    }
    Ok(header)
}

/// Decodes a request message as the RPC's request type; a refusal is INVALID_ARGUMENT.
/// Public for the fuzz target (`crate::fuzzing`).
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes)
        .map_err(|e| Error::invalid("", format!("the request message does not decode: {e}")))
}

/// The resource and context Cedar sees for one call.
/// A plan the auth layer already computed, handed to the handler so the work is not redone.
enum Planned {
    None,
    Mint(MintPlan),
    Upstream(Box<UpstreamPlan>),
}

fn describe(
    broker: &Broker,
    rpc: Rpc,
    caller: &Caller,
    message: &[u8],
    now: i64,
    planned: &mut Planned,
) -> Result<(EntityDesc, Value), Error> {
    // `{ credential }`: the context of every authenticated RPC; some actions add fields.
    let authenticated = authenticated_context(broker, caller, now);
    Ok(match rpc {
        Rpc::CreateAccessToken => {
            let req: pb::CreateAccessTokenRequest = decode(message)?;
            let plan = broker.plan_mint(
                caller,
                &req.project_ids,
                &req.permissions,
                req.expires_in_hours,
                &req.audience,
                now,
            )?;
            let described = (
                credential_entity(caller),
                mint_context(broker, &plan, authenticated),
            );
            *planned = Planned::Mint(plan);
            described
        }
        Rpc::IntrospectToken => {
            let req: pb::IntrospectTokenRequest = decode(message)?;
            // Verified (and cached) once here; the handler's introspection hits the cache.
            // The cached record's subject and depth never change, so no store read.
            let resource = match broker.verified(&req.token, now) {
                Ok(v) => token_desc(&v.claims.jti, &v.record.subject, v.record.depth),
                Err(_) => token_desc("", "", 0),
            };
            (resource, authenticated)
        }
        Rpc::RevokeAccessToken => {
            let req: pb::RevokeAccessTokenRequest = decode(message)?;
            let jti = broker.revocation_target(&req.token, &req.jti)?;
            (token_entity(broker, &jti)?, authenticated)
        }
        Rpc::GetJwks => (EntityDesc::broker(), json!({})),
        Rpc::CreateSubject => {
            let req: pb::CreateSubjectRequest = decode(message)?;
            // As above: an invalid subject is refused by the handler, after policy.
            let record = broker
                .subject_record(
                    &req.subject_id,
                    req.kind,
                    &req.project_ids,
                    &req.permissions,
                    now,
                )
                .unwrap_or_else(|_| SubjectRecord {
                    id: req.subject_id.clone(),
                    kind: if req.kind == pb::SubjectKind::Service as i32 {
                        pb::SubjectKind::Service as i32
                    } else {
                        pb::SubjectKind::User as i32
                    },
                    grant: None,
                    created_at: now,
                });
            (subject_entity(&record, broker), authenticated)
        }
        Rpc::GetSubject => {
            let req: pb::GetSubjectRequest = decode(message)?;
            (
                stored_subject_entity(broker, &req.subject_id)?,
                authenticated,
            )
        }
        Rpc::DeleteSubject => {
            let req: pb::DeleteSubjectRequest = decode(message)?;
            (
                stored_subject_entity(broker, &req.subject_id)?,
                authenticated,
            )
        }
        Rpc::ListSubjects => (EntityDesc::broker(), authenticated),
        Rpc::CreateAccessKey => {
            let req: pb::CreateAccessKeyRequest = decode(message)?;
            let new = super::access_key::new_key(&req);
            let owner = if new.owner.is_empty() {
                caller.subject.id.as_str()
            } else {
                new.owner
            };
            let resource = stored_subject_entity(broker, owner)?;
            // Policy decides before validation speaks, so nobody learns about another
            // owner's grant; an invalid request shows policy an empty grant and is refused by
            // the handler with the precise error. `key_reach` parses no inline policy: that
            // waits until policy has allowed the call.
            let requested = broker
                .store
                .subject(owner)?
                .and_then(|record| broker.key_reach(caller, &record, &new, now).ok())
                .map(|reach| grant_json(&broker.model, &reach.grant))
                .unwrap_or_else(
                    || json!({ "projects": [], "all_projects": false, "permissions": [] }),
                );
            let mut context = authenticated;
            context["requested"] = requested;
            (resource, context)
        }
        Rpc::ListAccessKeys => {
            let req: pb::ListAccessKeysRequest = decode(message)?;
            let resource = if req.show_all {
                EntityDesc::broker()
            } else if req.owner.is_empty() {
                subject_entity(&caller.subject, broker)
            } else {
                stored_subject_entity(broker, &req.owner)?
            };
            (resource, authenticated)
        }
        Rpc::GetAccessKey => {
            let req: pb::GetAccessKeyRequest = decode(message)?;
            (key_entity(broker, caller, &req.id)?, authenticated)
        }
        Rpc::UpdateAccessKey => {
            let req: pb::UpdateAccessKeyRequest = decode(message)?;
            (key_entity(broker, caller, &req.id)?, authenticated)
        }
        Rpc::DeleteAccessKey => {
            let req: pb::DeleteAccessKeyRequest = decode(message)?;
            (key_entity(broker, caller, &req.id)?, authenticated)
        }
        Rpc::ResetAccessKey => {
            let req: pb::ResetAccessKeyRequest = decode(message)?;
            (key_entity(broker, caller, &req.id)?, authenticated)
        }
        Rpc::CreateUpstream => {
            let req: pb::CreateUpstreamRequest = decode(message)?;
            (upstream_entity(broker, &req.name)?, authenticated)
        }
        Rpc::GetUpstream => {
            let req: pb::GetUpstreamRequest = decode(message)?;
            (upstream_entity(broker, &req.name)?, authenticated)
        }
        Rpc::UpdateUpstream => {
            let req: pb::UpdateUpstreamRequest = decode(message)?;
            (upstream_entity(broker, &req.name)?, authenticated)
        }
        Rpc::DeleteUpstream => {
            let req: pb::DeleteUpstreamRequest = decode(message)?;
            (upstream_entity(broker, &req.name)?, authenticated)
        }
        Rpc::ListUpstreams => (EntityDesc::broker(), authenticated),
        Rpc::IssueUpstreamToken => {
            let req: pb::IssueUpstreamTokenRequest = decode(message)?;
            // Attenuation and the permission mapping are checked first, with the same
            // refusals as minting; policy then sees exactly what would be issued.
            let plan = broker.plan_upstream(
                caller,
                &req.upstream,
                &req.project_ids,
                &req.permissions,
                req.expires_in_hours,
                now,
            )?;
            let mut context = authenticated;
            context["requested"] = grant_json(&broker.model, &plan.grant);
            context["lifetime_seconds"] = plan.lifetime_secs.into();
            context["vendor_permissions"] = json!(plan.vendor_permissions);
            let described = (upstream_entity(broker, &req.upstream)?, context);
            *planned = Planned::Upstream(Box::new(plan));
            described
        }
        Rpc::RevokeUpstreamToken => {
            let req: pb::RevokeUpstreamTokenRequest = decode(message)?;
            let (subject, upstream) = broker
                .store
                .lease(&req.lease_id)?
                .map(|l| (l.subject, l.upstream))
                // Unknown leases are described as the caller's own: the handler says NOT_FOUND.
                .unwrap_or_else(|| (caller.subject.id.clone(), String::new()));
            (
                EntityDesc {
                    kind: EntityKind::Lease,
                    id: req.lease_id,
                    attrs: json!({ "subject": subject, "upstream": upstream }),
                },
                authenticated,
            )
        }
    })
}

/// A grant as the schema's `Grant` record: projects, `all_projects`, permissions with
/// implication applied. Public so benchmarks build exactly what policy sees.
pub fn grant_json(model: &PermissionModel, grant: &Grant) -> Value {
    grant_record_json(grant, &model.expand(&grant.permissions))
}

fn grant_record_json(grant: &Grant, permissions: &BTreeSet<String>) -> Value {
    json!({
        "projects": grant.projects.to_ids(),
        "all_projects": grant.projects == Projects::All,
        "permissions": permissions,
    })
}

/// The context of an authenticated RPC, `{ credential }`: the grant, depth, remaining time
/// and admin flag of the key or token the caller presented. Public for the benchmarks.
pub fn authenticated_context(broker: &Broker, caller: &Caller, now: i64) -> Value {
    let permissions = broker.model.expand(&caller.grant.permissions);
    let admin = caller.grant.projects == Projects::All && permissions.contains("admin");
    json!({ "credential": {
        "kind": match caller.kind {
            CredentialKind::AccessKey => "access_key",
            CredentialKind::AccessToken => "access_token",
        },
        "id": caller.credential_id,
        "depth": caller.depth,
        "grant": grant_record_json(&caller.grant, &permissions),
        "remaining_seconds": caller.grant.not_after.map(|end| (end - now).max(0)).unwrap_or(-1),
        "admin": admin,
    }})
}

/// A CreateAccessToken's context: `authenticated` plus what the new token would hold.
/// Public so benchmarks measure exactly what the auth layer builds.
pub fn mint_context(broker: &Broker, plan: &MintPlan, authenticated: Value) -> Value {
    let mut context = authenticated;
    context["requested"] = grant_json(&broker.model, &plan.grant);
    context["lifetime_seconds"] = plan.lifetime_secs.into();
    context["audience"] = plan.audience.as_str().into();
    context
}

/// An upstream as Cedar sees it: its name and vendor (empty when unknown).
fn upstream_entity(broker: &Broker, name: &str) -> Result<EntityDesc, Error> {
    let vendor = broker
        .store
        .upstream(name)?
        .and_then(|u| crate::upstream::Vendor::known(u.vendor))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    Ok(EntityDesc {
        kind: EntityKind::Upstream,
        id: name.to_owned(),
        attrs: json!({ "vendor": vendor }),
    })
}

/// A stored key; an unknown id is described as the caller's own so that the handler, not
/// policy, answers NOT_FOUND (an unknown key is unknown to everyone alike).
fn key_entity(broker: &Broker, caller: &Caller, id: &str) -> Result<EntityDesc, Error> {
    let owner = broker
        .store
        .access_key(id)?
        .map(|k| k.owner)
        .unwrap_or_else(|| caller.subject.id.clone());
    Ok(EntityDesc {
        kind: EntityKind::AccessKey,
        id: id.to_owned(),
        attrs: json!({ "owner": owner }),
    })
}

/// The key or token a caller presented, as the resource of its CreateAccessToken.
pub fn credential_entity(caller: &Caller) -> EntityDesc {
    match caller.kind {
        CredentialKind::AccessKey => EntityDesc {
            kind: EntityKind::AccessKey,
            id: caller.credential_id.clone(),
            attrs: json!({ "owner": caller.subject.id }),
        },
        CredentialKind::AccessToken => EntityDesc {
            kind: EntityKind::Token,
            id: caller.credential_id.clone(),
            attrs: json!({ "subject": caller.subject.id, "depth": caller.depth }),
        },
    }
}

/// The token as stored; an unknown one has no subject, so only admins pass ownership rules.
fn token_entity(broker: &Broker, jti: &str) -> Result<EntityDesc, Error> {
    let record = if jti.is_empty() {
        None
    } else {
        broker.store.token(jti)?
    };
    let (subject, depth) = record.map(|r| (r.subject, r.depth)).unwrap_or_default();
    Ok(token_desc(jti, &subject, depth))
}

/// A token as Cedar sees it; an unknown one has id and subject empty.
fn token_desc(jti: &str, subject: &str, depth: u32) -> EntityDesc {
    EntityDesc {
        kind: EntityKind::Token,
        id: jti.to_owned(),
        attrs: json!({ "subject": subject, "depth": depth }),
    }
}

/// A subject as Cedar's principal (or resource): name, projects and expanded permissions.
pub fn subject_entity(record: &SubjectRecord, broker: &Broker) -> EntityDesc {
    let grant = broker::grant_from_record(record.grant.as_ref(), 0);
    EntityDesc {
        kind: if record.kind == pb::SubjectKind::Service as i32 {
            EntityKind::Service
        } else {
            EntityKind::User
        },
        id: record.id.clone(),
        attrs: json!({
            "name": record.id,
            "projects": grant.projects.to_ids(),
            "permissions": broker.model.expand(&grant.permissions),
        }),
    }
}

/// A stored subject, or an attribute-less stand-in so that policy decides before the
/// handler reports NOT_FOUND (and non-admins learn nothing about who exists).
fn stored_subject_entity(broker: &Broker, id: &str) -> Result<EntityDesc, Error> {
    Ok(match broker.store.subject(id)? {
        Some(record) => subject_entity(&record, broker),
        None => subject_entity(
            &SubjectRecord {
                id: id.to_owned(),
                kind: pb::SubjectKind::User as i32,
                grant: Some(crate::pb::storage::GrantRecord {
                    projects: Vec::new(),
                    permissions: Vec::new(),
                }),
                created_at: 0,
            },
            broker,
        ),
    })
}
