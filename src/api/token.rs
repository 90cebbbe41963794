//! `TokenService`: mint, introspect, revoke, publish keys.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Api, auth::Routine, status::to_status, timestamp};
use crate::{
    authz::{self, Described, Guarded, Route},
    broker::{Broker, Caller, MintPlan, VerifiedToken},
    error::Error,
    pb::v1::{
        CreateAccessTokenRequest, CreateAccessTokenResponse, GetJwksRequest, GetJwksResponse,
        IntrospectTokenRequest, IntrospectTokenResponse, Jwk, RevokeAccessTokenRequest,
        RevokeAccessTokenResponse, token_service_server::TokenService,
    },
    policy::{EntityDesc, Record},
};

impl Guarded for CreateAccessTokenRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.TokenService/CreateAccessToken",
        "CreateAccessToken",
    )
    .mint_only();
    type Plan = MintPlan;

    /// Policy sees the presented credential and exactly the token the derivation rule allows.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<MintPlan>, Error> {
        let plan = broker.tokens.plan_mint(
            caller,
            &self.project_ids,
            &self.permissions,
            self.expires_in_hours,
            &self.audience,
            now,
        )?;
        Ok(mint_described(broker, caller, now, plan))
    }
}

/// What Cedar sees of a mint, for `CreateAccessToken` and for the Envoy token exchange alike:
/// the caller's credential as resource, the planned grant, lifetime and audience in the
/// context.
pub(super) fn mint_described(
    broker: &Broker,
    caller: &Caller,
    now: i64,
    plan: MintPlan,
) -> Described<MintPlan> {
    let context = authz::mint_context(broker, &plan, authz::authenticated_context(caller, now));
    Described::new(authz::credential_entity(caller), context, plan)
}

impl Guarded for IntrospectTokenRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.TokenService/IntrospectToken",
        "IntrospectToken",
    )
    .mint_only();
    /// The target token when active: verified (and cached) once, here.
    type Plan = Option<Arc<VerifiedToken>>;

    /// The target as a `Token` (id and subject empty when inactive): the cached record's
    /// subject and depth never change, so describing reads no store.
    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<Self::Plan>, Error> {
        let active = broker.authn.introspect(&self.token, now)?;
        let resource = match &active {
            Some(v) => authz::token_desc(&v.claims.jti, &v.record.subject, v.record.depth),
            None => authz::token_desc("", "", 0),
        };
        Ok(Described::new(
            resource,
            authz::authenticated_context(caller, now),
            active,
        ))
    }
}

impl Guarded for RevokeAccessTokenRequest {
    const ROUTE: Route = Route::new(
        "/tokenbroker.v1.TokenService/RevokeAccessToken",
        "RevokeAccessToken",
    );
    /// The jti to revoke.
    type Plan = String;

    fn describe(
        self,
        broker: &Broker,
        caller: &Caller,
        now: i64,
    ) -> Result<Described<String>, Error> {
        let jti = broker.tokens.revocation_target(&self.token, &self.jti)?;
        let resource = authz::token_entity(broker, &jti)?;
        Ok(Described::new(
            resource,
            authz::authenticated_context(caller, now),
            jti,
        ))
    }
}

impl Guarded for GetJwksRequest {
    const ROUTE: Route = Route::new("/tokenbroker.v1.TokenService/GetJwks", "GetJwks")
        .public()
        .mint_only();
    type Plan = ();

    fn describe(self, _: &Broker, _: &Caller, _: i64) -> Result<Described<()>, Error> {
        Ok(Described::new(EntityDesc::broker(), Record::new(), ()))
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_access_token(
        &self,
        request: Request<CreateAccessTokenRequest>,
    ) -> Result<Response<CreateAccessTokenResponse>, Status> {
        let authorized = self.authorize(request)?;
        let minted = self
            .broker
            .tokens
            .mint(authorized)
            .await
            .map_err(to_status)?;
        tracing::debug!(jti = %minted.claims.jti, depth = minted.claims.dep, "minted access token");
        let claims = minted.claims;
        Ok(Response::new(CreateAccessTokenResponse {
            access_token: minted.token,
            expires_at: timestamp(claims.exp),
            project_ids: claims.prj,
            permissions: claims.perm,
            jti: claims.jti,
            depth: claims.dep,
            parent: claims.par,
        }))
    }

    async fn introspect_token(
        &self,
        request: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        let (_, active, _) = self.authorize(request)?.into_parts();
        let Some(verified) = active else {
            return Ok(Response::new(IntrospectTokenResponse::default()));
        };
        let claims = verified.claims.clone();
        let mut response = Response::new(IntrospectTokenResponse {
            active: true,
            subject: claims.sub,
            jti: claims.jti,
            project_ids: claims.prj,
            permissions: claims.perm,
            expires_at: timestamp(claims.exp),
            parent: claims.par,
            depth: claims.dep,
            audience: claims.aud,
            issued_at: timestamp(claims.iat),
        });
        // An active token's introspection is what a resource server does for every request
        // it serves; an inactive one (unknown, revoked, expired: maybe a probe) is not.
        response.extensions_mut().insert(Routine);
        Ok(response)
    }

    async fn revoke_access_token(
        &self,
        request: Request<RevokeAccessTokenRequest>,
    ) -> Result<Response<RevokeAccessTokenResponse>, Status> {
        let authorized = self.authorize(request)?;
        let jti = authorized.plan().clone();
        let revoked_count = self
            .broker
            .tokens
            .revoke(authorized)
            .await
            .map_err(to_status)?;
        tracing::info!(jti = %jti, revoked_count, "revoked access token");
        Ok(Response::new(RevokeAccessTokenResponse { revoked_count }))
    }

    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        // Public: anyone may read the verification keys, but policy still decides.
        if request.extensions().get::<Caller>().is_some() {
            self.authorize(request)?;
        } else {
            authz::authorize_anonymous::<GetJwksRequest>(&self.broker).map_err(to_status)?;
        }
        let set = self.broker.jwt().jwks();
        let value = serde_json::to_value(&set)
            .map_err(|e| to_status(Error::Internal(format!("cannot encode the key set: {e}"))))?;
        let text = |key: &serde_json::Value, name: &str| {
            key.get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let keys = value
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .map(|keys| {
                keys.iter()
                    .map(|k| Jwk {
                        kty: text(k, "kty"),
                        kid: text(k, "kid"),
                        alg: text(k, "alg"),
                        r#use: text(k, "use"),
                        crv: text(k, "crv"),
                        x: text(k, "x"),
                        y: text(k, "y"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(GetJwksResponse {
            jwks_json: value.to_string(),
            keys,
        }))
    }
}
