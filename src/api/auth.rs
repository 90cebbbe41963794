//! The auth layer: authenticates the bearer credential once, describes the request to Cedar
//! and lets it through only when the policies allow. Handlers find the verified [`Caller`]
//! in the request extensions and never authorize on their own.
//!
//! It sits inside tonic's server, before routing, so every `tokenbroker.v1` RPC passes it and
//! nothing else (health, reflection) does. It reads the one request message of a unary call
//! to give Cedar the resource and context; the bytes are handed on unchanged.

use std::{
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
    broker::{self, Broker, Caller, CredentialKind, KIND_SERVICE, KIND_USER},
    domain::{Grant, Projects},
    error::Error,
    pb::{storage::SubjectRecord, v1 as pb},
    policy::{EntityDesc, EntityKind},
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
        }
    }

    /// RPCs that answer without a credential.
    fn is_public(self) -> bool {
        self == Rpc::GetJwks
    }
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
        let Some(rpc) = Rpc::from_path(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
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

    let (principal, resource, context) = match &caller {
        Some(caller) => {
            let (resource, context) = describe(broker, rpc, caller, message, now)?;
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
        .authorize(rpc.action(), &principal, &resource, context);
    span.record("decision", if decision.allowed { "allow" } else { "deny" });
    if !decision.allowed {
        if !decision.errors.is_empty() {
            tracing::warn!(errors = ?decision.errors, "policy evaluation errors");
        }
        let by = if decision.policies.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("forbidden by policy `{}`", decision.policies.join("`, `"))
        };
        return Err(Error::PermissionDenied {
            reason: "POLICY_DENIED",
            message: format!(
                "`{}` on {} is denied for {}: {by}",
                rpc.action(),
                resource.display(),
                principal.display()
            ),
        });
    }

    let mut request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    Ok(request)
}

/// The bearer value of the `authorization` metadata, if any.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
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

/// The message of a unary gRPC request body: one uncompressed length-prefixed frame.
fn grpc_message(body: &[u8], limit: usize) -> Result<&[u8], Error> {
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

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes)
        .map_err(|e| Error::invalid("", format!("the request message does not decode: {e}")))
}

/// The resource and context Cedar sees for one call.
fn describe(
    broker: &Broker,
    rpc: Rpc,
    caller: &Caller,
    message: &[u8],
    now: i64,
) -> Result<(EntityDesc, Value), Error> {
    let credential = credential_json(broker, caller, now);
    let authenticated = json!({ "credential": credential });
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
            (
                credential_entity(caller),
                json!({
                    "credential": credential,
                    "requested": grant_json(broker, &plan.grant),
                    "lifetime_seconds": plan.lifetime_secs,
                    "audience": plan.audience,
                }),
            )
        }
        Rpc::IntrospectToken => {
            let req: pb::IntrospectTokenRequest = decode(message)?;
            let jti = broker.jwt.signed_jti(&req.token).unwrap_or_default();
            (token_entity(broker, &jti)?, authenticated)
        }
        Rpc::RevokeAccessToken => {
            let req: pb::RevokeAccessTokenRequest = decode(message)?;
            let jti = broker.revocation_target(&req.token, &req.jti)?;
            (token_entity(broker, &jti)?, authenticated)
        }
        Rpc::GetJwks => (EntityDesc::broker(), json!({})),
        Rpc::CreateSubject => {
            let req: pb::CreateSubjectRequest = decode(message)?;
            let record = broker.subject_record(
                &req.subject_id,
                req.kind,
                &req.project_ids,
                &req.permissions,
                now,
            )?;
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
            let owner = if req.owner.is_empty() {
                caller.subject.id.as_str()
            } else {
                req.owner.as_str()
            };
            let resource = stored_subject_entity(broker, owner)?;
            let requested = match broker.store.subject(owner)? {
                Some(record) => {
                    let expires_at = req.expires_at.map(|t| t.seconds).unwrap_or(0);
                    let grant = broker.key_grant(
                        &record,
                        &req.name,
                        &req.description,
                        &req.project_ids,
                        &req.permissions,
                        expires_at,
                        now,
                    )?;
                    grant_json(broker, &grant)
                }
                None => json!({ "projects": [], "all_projects": false, "permissions": [] }),
            };
            (
                resource,
                json!({ "credential": credential, "requested": requested }),
            )
        }
    })
}

fn grant_json(broker: &Broker, grant: &Grant) -> Value {
    json!({
        "projects": grant.projects.to_ids(),
        "all_projects": grant.projects == Projects::All,
        "permissions": broker.model.expand(&grant.permissions),
    })
}

fn credential_json(broker: &Broker, caller: &Caller, now: i64) -> Value {
    let permissions = broker.model.expand(&caller.grant.permissions);
    let admin = caller.grant.projects == Projects::All && permissions.contains("admin");
    json!({
        "kind": match caller.kind {
            CredentialKind::AccessKey => "access_key",
            CredentialKind::AccessToken => "access_token",
        },
        "id": caller.credential_id,
        "depth": caller.depth,
        "grant": grant_json(broker, &caller.grant),
        "remaining_seconds": caller.grant.not_after.map(|end| (end - now).max(0)).unwrap_or(-1),
        "admin": admin,
    })
}

fn credential_entity(caller: &Caller) -> EntityDesc {
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
    Ok(EntityDesc {
        kind: EntityKind::Token,
        id: jti.to_owned(),
        attrs: json!({ "subject": subject, "depth": depth }),
    })
}

fn subject_entity(record: &SubjectRecord, broker: &Broker) -> EntityDesc {
    let grant = broker::grant_from_record(record.grant.as_ref(), 0);
    EntityDesc {
        kind: if record.kind == KIND_SERVICE {
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
                kind: KIND_USER,
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
