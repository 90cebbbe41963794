//! The auth layer: routes fail closed and authenticates the bearer credential once, from the
//! metadata. Handlers find the verified [`crate::broker::Caller`] in the request extensions and authorize
//! through [`crate::authz::authorize`], which their core calls require.
//!
//! It sits inside tonic's server, before routing, so every call passes it. A path with a
//! [`Route`] in [`super::ROUTES`] is authenticated (unless public), the [`PUBLIC_SERVICES`]
//! (health, reflection) pass untouched, and any other path is refused UNIMPLEMENTED before any
//! handler. It never decodes the message: it only holds the body to the transport limits
//! (size, no compression, exactly one message) and hands the bytes on unchanged.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Buf;
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

use super::status::to_status;
use crate::{
    authz::Route,
    broker::{AuthError, Broker, Caller},
    error::Error,
};

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
        let Some(route) = super::route(path) else {
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
        let started = Instant::now();
        // Authentication reads only the metadata, so it runs before the span exists and the
        // span is born with its subject. The span carries who called what and (recorded by
        // `authz`) the decision; the closing event adds the status code and latency. Each
        // field recorded later is formatted on the spot, and this is every call's path.
        let caller = authenticate(&broker, route, request.headers());
        let subject = match &caller {
            Ok(Some(caller)) => Some(caller.subject.id.as_str()),
            _ => None,
        };
        let span = tracing::info_span!("rpc", method = route.method(), subject, decision = Empty);
        Box::pin(
            async move {
                let response = match admit(&broker, caller, request).await {
                    Ok(request) => inner.call(request).await?,
                    Err(error) => to_status(error).into_http(),
                };
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0");
                let latency_us = started.elapsed().as_micros() as u64;
                if code == "0" && response.extensions().get::<Routine>().is_some() {
                    tracing::debug!(code, latency_us, "rpc finished");
                } else {
                    tracing::info!(code, latency_us, "rpc finished");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Marks a successful response as routine: a call made for every request a resource server
/// serves (the introspection of an active token). Its `rpc finished` line logs at debug
/// instead of info, so that the log is not one line per upstream request; refusals, failures
/// and inactive tokens still log at info.
#[derive(Clone, Copy, Debug)]
pub struct Routine;

/// Why the auth layer refused a request before any handler saw it: its transport, not its
/// content.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The `authorization` metadata is not `Bearer <credential>`.
    #[error("{0}")]
    MalformedBearer(String),
    /// The body is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The body is compressed, which the broker does not offer.
    #[error("{0}")]
    Compressed(String),
    /// The body is not exactly one gRPC message; answered as an invalid request.
    #[error("invalid request: : {0}")]
    NotOneMessage(&'static str),
    /// The body could not be read (the call ended first).
    #[error("{0}")]
    Unreadable(String),
}

/// The caller named by the `authorization` metadata; refused when a credential is needed and
/// missing, malformed or not valid. A public route needs none, so one that does not
/// authenticate (malformed, expired, unknown) is ignored and the call is anonymous, as it
/// would be without it; a valid one is still used.
fn authenticate(
    broker: &Broker,
    route: Route,
    headers: &http::HeaderMap,
) -> Result<Option<Caller>, Error> {
    if route.credential_in_message {
        return Ok(None);
    }
    if route.public {
        return Ok(bearer(headers)
            .ok()
            .flatten()
            .and_then(|value| broker.authn.authenticate(value, broker.now()).ok()));
    }
    match bearer(headers)? {
        Some(value) => Ok(Some(broker.authn.authenticate(value, broker.now())?)),
        None => Err(AuthError::Missing(
            "missing credential: send the metadata `authorization: Bearer <access key or access token>`".to_owned(),
        )
        .into()),
    }
}

/// Checks the body's framing (size, compression, one message) without decoding it, once
/// the caller is known; returns the request to pass on with the [`Caller`] in its
/// extensions. Policy is asked later, by the handler, through [`crate::authz::authorize`].
async fn admit(
    broker: &Broker,
    caller: Result<Option<Caller>, Error>,
    request: http::Request<Body>,
) -> Result<http::Request<Body>, Error> {
    let caller = caller?;
    let (parts, body) = request.into_parts();
    let limit = broker.config().max_request_bytes;
    let bytes = Limited::new(body, limit + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large(limit)
            } else {
                RequestError::Unreadable("the request body could not be read".to_owned()).into()
            }
        })?
        .to_bytes();
    grpc_message(&bytes, limit)?;
    let mut request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    Ok(request)
}

/// The bearer value of the `authorization` metadata, if any. Public for the fuzz target
/// (`crate::fuzzing`): it reads attacker-controlled bytes before anything else does.
pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        Error::from(RequestError::MalformedBearer(
            "the `authorization` metadata must be `Bearer <access key or access token>`".to_owned(),
        ))
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(credential.trim()))
}

fn too_large(limit: usize) -> Error {
    RequestError::TooLarge(format!(
        "request message is larger than the limit of {limit} bytes: send a smaller request"
    ))
    .into()
}

/// The message of a unary gRPC request body: one uncompressed length-prefixed frame. Public
/// for the fuzz target (`crate::fuzzing`).
pub fn grpc_message(body: &[u8], limit: usize) -> Result<&[u8], Error> {
    let mut header = body;
    if header.remaining() < 5 {
        return Err(RequestError::NotOneMessage("the request holds no gRPC message").into());
    }
    let compressed = header.get_u8();
    let len = header.get_u32() as usize;
    if compressed != 0 {
        return Err(RequestError::Compressed(
            "compressed requests are not supported: send them uncompressed".to_owned(),
        )
        .into());
    }
    if len > limit {
        return Err(too_large(limit));
    }
    if header.len() != len {
        return Err(RequestError::NotOneMessage(
            "the request body is not exactly one gRPC message",
        )
        .into());
    }
    Ok(header)
}

/// Decodes a request message as the RPC's request type; a refusal is INVALID_ARGUMENT.
/// Public for the fuzz target (`crate::fuzzing`).
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes)
        .map_err(|e| Error::invalid("", format!("the request message does not decode: {e}")))
}
