//! `envoy.service.auth.v3.Authorization/Check`: Envoy's ext_authz filter (and Istio's CUSTOM
//! action) asks before forwarding each HTTP request a sidecar receives. The caller of the RPC
//! is Envoy; the credential is the HTTP request's `authorization` header, in the message, so
//! the auth layer passes this route without reading metadata and the handler authenticates.
//!
//! Order of the answer: 401 unless the header holds a live access token of this broker whose
//! audience is the broker's or the matched route's; then 403 unless a route covers the
//! request, the token holds its permission and project, and Cedar (`HttpRequest`) allows;
//! then OK with the token's subject, projects and permissions as headers, the caller's
//! `authorization` removed or, on a route with an `audience`, replaced by an exchanged token.

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use tonic::{Request, Response, Status};

use super::{Api, auth::Routine, status};
use crate::{
    authz::{self, Described, Guarded, Route},
    broker::{Broker, Caller, HttpAsk, Matched, MintPlan, TokenError},
    error::Error,
    policy::{EntityDesc, EntityKind, Record},
};

/// The `www-authenticate` of every 401 (RFC 6750).
const CHALLENGE: &str = r#"Bearer realm="token-broker", error="invalid_token""#;

/// A sidecar's request once its route is known: what Cedar is asked about.
#[derive(Debug)]
pub struct MeshRequest<'a> {
    ask: HttpAsk,
    matched: Matched<'a>,
}

impl Guarded for MeshRequest<'_> {
    const ROUTE: Route = Route::new("/envoy.service.auth.v3.Authorization/Check", "HttpRequest")
        .credential_in_message();
    /// The exchanged token's mint, on a route with an `audience`.
    type Plan = Option<MintPlan>;

    /// The matched route as a `Route` entity; the context adds the method, host and path to
    /// the credential. A route that exchanges plans its mint here, so a mint the derivation
    /// rule refuses (delegation depth) refuses the request before policy.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let matched = self.matched;
        let plan = broker
            .mesh
            .plan_exchange(&broker.tokens, caller, &matched, now)?;
        let route = matched.route;
        let resource = EntityDesc {
            kind: EntityKind::Route,
            id: (matched.index + 1).to_string(),
            attrs: Record::new()
                .with("host", route.host_name().to_ascii_lowercase())
                .with("path_prefix", route.path_prefix.as_str())
                .with("permission", route.permission.as_str()),
        };
        let context = authz::authenticated_context(caller, now)
            .with("method", self.ask.method.as_str())
            .with("host", self.ask.host.as_str())
            .with("path", self.ask.path.as_str());
        Ok(Described::new(resource, context, plan))
    }
}

/// The mint of an exchanged token, asked of Cedar as `CreateAccessToken` with exactly the
/// description a `CreateAccessToken` call would have: the caller's credential as resource,
/// the planned grant, lifetime and audience in the context.
#[derive(Debug)]
pub struct ExchangeMint(MintPlan);

impl Guarded for ExchangeMint {
    const ROUTE: Route = Route::new(
        "/envoy.service.auth.v3.Authorization/Check",
        "CreateAccessToken",
    )
    .credential_in_message();
    type Plan = MintPlan;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<MintPlan>, Error> {
        Ok(super::token::mint_described(broker, caller, now, self.0))
    }
}

/// One header set on the forwarded request, replacing any value the caller sent.
fn overwrite(key: &str, value: String) -> HeaderValueOption {
    #[allow(
        deprecated,
        reason = "`append` is deprecated in favour of `append_action`, set here"
    )]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: true,
    }
}

/// A denial Envoy sends back to the client as is: `status`, the extra headers, and a JSON
/// body whose `reason` says why.
fn denied(
    code: tonic::Code,
    http: HttpStatusCode,
    reason: &str,
    headers: Vec<HeaderValueOption>,
) -> CheckResponse {
    let mut headers = headers;
    headers.push(overwrite("content-type", "application/json".to_owned()));
    CheckResponse {
        status: Some(envoy_types::pb::google::rpc::Status {
            code: code.into(),
            message: reason.to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http.into() }),
            headers,
            body: serde_json::json!({ "reason": reason }).to_string(),
        })),
        ..CheckResponse::default()
    }
}

/// 401 with the RFC 6750 challenge.
fn unauthenticated(reason: &str) -> CheckResponse {
    tracing::Span::current().record("decision", "unauthenticated");
    denied(
        tonic::Code::Unauthenticated,
        HttpStatusCode::Unauthorized,
        reason,
        vec![overwrite("www-authenticate", CHALLENGE.to_owned())],
    )
}

/// 403 naming what the token lacks or which policy refused.
fn forbidden(reason: &str) -> CheckResponse {
    tracing::Span::current().record("decision", "deny");
    denied(
        tonic::Code::PermissionDenied,
        HttpStatusCode::Forbidden,
        reason,
        Vec::new(),
    )
}

/// The access token of an `authorization: Bearer <token>` header.
fn bearer_token(value: Option<&String>) -> Result<&str, &'static str> {
    let value = value.ok_or("missing `authorization` header: send `Bearer <access token>`")?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("the `authorization` header must be `Bearer <access token>`");
    }
    Ok(token.trim())
}

impl Api {
    /// The decision for one sidecar request (see the module doc for its order). Only a
    /// failure of the broker itself is a gRPC error, which Envoy (`failure_mode_allow:
    /// false`) turns into a denial.
    async fn decide(&self, request: CheckRequest) -> Result<CheckResponse, Status> {
        let broker = &self.broker;
        let now = broker.now();
        let Some(http) = request
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
        else {
            return Ok(forbidden(
                "the check request carries no HTTP request attributes",
            ));
        };
        let ask = HttpAsk::new(&http.method, &http.host, &http.path);
        let matched = broker.mesh.route_for(&ask);
        let audience = matched
            .as_ref()
            .ok()
            .and_then(|m| m.route.audience.as_deref());
        let token = match bearer_token(http.headers.get("authorization")) {
            Ok(token) => token,
            Err(reason) => return Ok(unauthenticated(reason)),
        };
        // A credential refused, now or while it minted, is a 401; the other refusals of the
        // request are 403s; a failure of the broker is a gRPC error.
        let refuse = |e: Error| match e {
            Error::Auth(e) => Ok(unauthenticated(&e.to_string())),
            Error::Token(TokenError::ParentChanged(reason)) => Ok(unauthenticated(&reason)),
            e => match status::mesh_refusal(&e) {
                Some(reason) => Ok(forbidden(&reason)),
                None => Err(status::to_status(e)),
            },
        };
        let caller = match broker.authn.authenticate_mesh(token, audience, now) {
            Ok(caller) => caller,
            Err(e) => return refuse(e),
        };
        tracing::Span::current().record("subject", caller.subject.id.as_str());
        let matched = match matched.and_then(|m| broker.mesh.check_route(&caller, &m).map(|()| m)) {
            Ok(matched) => matched,
            Err(e) => return refuse(e),
        };
        let (index, exchanging) = (matched.index, matched.route.audience.is_some());
        // Only an exchange needs the caller again, for its mint's own authorization.
        let minter = exchanging.then(|| caller.clone());
        let subject = caller.subject.id.clone();
        let projects = caller.grant.projects.to_ids().join(",");
        let permissions = caller
            .grant
            .permissions
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        let authorized = match authz::authorize(broker, caller, MeshRequest { ask, matched }) {
            Ok(authorized) => authorized,
            Err(e) => return refuse(e),
        };
        let mut headers = vec![
            overwrite("x-token-subject", subject),
            overwrite("x-token-projects", projects),
            overwrite("x-token-permissions", permissions),
        ];
        let mut headers_to_remove = Vec::new();
        match (authorized.into_parts().1, minter) {
            (Some(plan), Some(minter)) => {
                // The exchange is a mint: the policies that govern CreateAccessToken (global
                // and the root key's) must allow it too, as if the caller had asked itself.
                let mint = match authz::authorize(broker, minter, ExchangeMint(plan)) {
                    Ok(mint) => mint,
                    Err(e) => return refuse(e),
                };
                // Envoy applies removals after sets, so the exchanged token is set, never
                // removed.
                match broker.mesh.exchange(&broker.tokens, index, mint).await {
                    Ok(token) => {
                        headers.push(overwrite("authorization", format!("Bearer {token}")));
                    }
                    Err(e) => return refuse(e),
                }
            }
            _ if broker.config().envoy.strip_authorization => {
                headers_to_remove.push("authorization".to_owned());
            }
            _ => {}
        }
        Ok(CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove,
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        })
    }
}

#[tonic::async_trait]
impl Authorization for Api {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let decision = self.decide(request.into_inner()).await?;
        let allowed = decision.status.as_ref().is_some_and(|s| s.code == 0);
        let mut response = Response::new(decision);
        // An allowed request is what a sidecar asks for every request its service serves,
        // like an active token's introspection: its line logs at debug; every denial at info.
        if allowed {
            response.extensions_mut().insert(Routine);
        }
        Ok(response)
    }
}
