//! `TokenService`: mint, introspect, revoke, publish keys.

use tonic::{Request, Response, Status};

use super::{Api, caller, from_layer, status::to_status, timestamp};
use crate::{
    broker::MintPlan,
    error::Error,
    pb::v1::{
        CreateAccessTokenRequest, CreateAccessTokenResponse, GetJwksRequest, GetJwksResponse,
        IntrospectTokenRequest, IntrospectTokenResponse, Jwk, RevokeAccessTokenRequest,
        RevokeAccessTokenResponse, token_service_server::TokenService,
    },
};

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_access_token(
        &self,
        request: Request<CreateAccessTokenRequest>,
    ) -> Result<Response<CreateAccessTokenResponse>, Status> {
        let caller = caller(&request)?;
        // The auth layer validated and attenuated the mint to show policy what it would sign.
        let plan: MintPlan = from_layer(&request)?;
        let now = self.broker.now();
        let minted = self
            .broker
            .mint(&caller, plan, now)
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
        let req = request.into_inner();
        let active = self
            .broker
            .introspect(&req.token, self.broker.now())
            .map_err(to_status)?;
        let Some(verified) = active else {
            return Ok(Response::new(IntrospectTokenResponse::default()));
        };
        let claims = verified.claims.clone();
        Ok(Response::new(IntrospectTokenResponse {
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
        }))
    }

    async fn revoke_access_token(
        &self,
        request: Request<RevokeAccessTokenRequest>,
    ) -> Result<Response<RevokeAccessTokenResponse>, Status> {
        let req = request.into_inner();
        let jti = self
            .broker
            .revocation_target(&req.token, &req.jti)
            .map_err(to_status)?;
        let revoked_count = self
            .broker
            .revoke(&jti, self.broker.now())
            .await
            .map_err(to_status)?;
        tracing::info!(jti = %jti, revoked_count, "revoked access token");
        Ok(Response::new(RevokeAccessTokenResponse { revoked_count }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let set = self.broker.jwt.jwks();
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
