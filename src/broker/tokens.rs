//! Access tokens: planning a mint by the derivation rule, signing and storing it, revoking a
//! token with everything below it, and sweeping expired records.

use std::sync::Arc;

use super::{Broker, Caller, core::Core, grant_record};
use crate::{
    authz::Authorized,
    domain::{
        Ask, End, Exceeded, Grant, MintRequest, Projects, Yield,
        claims::Claims,
        grant::attenuates,
        validate::{self, quote},
    },
    error::Error,
    pb::storage::TokenRecord,
    store::MintOutcome,
};

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token to act on is not known to this broker.
    #[error("{0}")]
    Unknown(String),
    /// The authorising credential was revoked or changed while the token was minted.
    #[error("{0}")]
    ParentChanged(String),
}

/// A mint that passed validation and attenuation, ready for policy and signing.
#[derive(Clone, Debug)]
pub struct MintPlan {
    /// The grant the new token will hold.
    pub grant: Grant,
    /// Its lifetime in seconds.
    pub lifetime_secs: i64,
    /// Its audience.
    pub audience: String,
    /// Its depth.
    pub depth: u32,
}

/// A freshly minted token.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The signed JWT; returned once.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// Minting and revoking access tokens.
#[derive(Debug)]
pub struct Tokens {
    core: Arc<Core>,
}

impl Tokens {
    /// Tokens over `core`.
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Validates a mint request and applies the attenuation rule; the result is what policy
    /// is asked about and what [`Broker::mint`] signs.
    pub fn plan_mint(
        &self,
        caller: &Caller,
        project_ids: &[String],
        permissions: &[String],
        expires_in_hours: Option<f64>,
        audience: &str,
        now: i64,
    ) -> Result<MintPlan, Error> {
        let request: MintRequest = validate::mint_request(
            project_ids,
            permissions,
            expires_in_hours,
            self.core.config.max_grant_items,
            self.core.limits().max_lifetime_secs,
            &self.core.model,
        )
        .map_err(Error::Invalid)?;
        self.plan_request(caller, request, audience, now)
    }

    /// [`Self::plan_mint`] for a request already validated (the Envoy token exchange builds
    /// one from its route, with a lifetime in whole seconds): the audience check and the
    /// derivation rule.
    pub fn plan_request(
        &self,
        caller: &Caller,
        mut request: MintRequest,
        audience: &str,
        now: i64,
    ) -> Result<MintPlan, Error> {
        let audience = if audience.is_empty() {
            self.core.config.audience.clone()
        } else if self.core.audiences.iter().any(|a| a == audience) {
            audience.to_owned()
        } else {
            return Err(Error::invalid(
                "audience",
                format!(
                    "audience {} is not configured: use one of `{}`",
                    quote(audience),
                    self.core.audiences.join("`, `")
                ),
            ));
        };
        // An explicit "*" from a caller that holds every project is the same as inheriting.
        if matches!(request.projects, Some(Projects::All)) && caller.grant.projects == Projects::All
        {
            request.projects = None;
        }
        let reach = self.core.derive(
            caller,
            &Ask {
                kind: Yield::Token,
                projects: request.projects,
                permissions: request.permissions,
                end: End::Lifetime(request.lifetime_secs),
                restrictions: None,
            },
            now,
        )?;
        let depth = reach.depth.unwrap_or(0);
        let grant = reach.grant;
        let lifetime_secs = grant.not_after.map(|end| end - now).unwrap_or(0);
        Ok(MintPlan {
            grant,
            lifetime_secs,
            audience,
            depth,
        })
    }

    /// Signs and stores an authorized token; answers only once the record is durable.
    pub async fn mint(&self, authorized: Authorized<MintPlan>) -> Result<Minted, Error> {
        let (caller, plan, now) = authorized.into_parts();
        let caller = &caller;
        // INVARIANT: only grants that attenuate the caller's are ever signed.
        if !attenuates(&plan.grant, &caller.grant, &self.core.model) {
            return Err(Error::Exceeds(Exceeded::default()));
        }
        let jti = uuid::Uuid::new_v4().simple().to_string();
        // The plan's end is authoritative: it was checked against the authoriser's, even if
        // the plan was made a moment earlier (by the auth layer).
        let expires_at = plan.grant.not_after.unwrap_or(now + plan.lifetime_secs);
        let claims = Claims {
            iss: self.core.config.issuer.clone(),
            sub: caller.subject.id.clone(),
            aud: plan.audience.clone(),
            iat: now,
            nbf: now,
            exp: expires_at,
            jti: jti.clone(),
            prj: plan.grant.projects.to_ids(),
            perm: plan.grant.permissions.iter().cloned().collect(),
            par: caller.credential_id.clone(),
            dep: plan.depth,
        };
        let token = self.core.jwt.sign(&claims)?;
        let record = TokenRecord {
            subject: claims.sub.clone(),
            grant: Some(grant_record(&plan.grant)),
            parent: caller.credential_id.clone(),
            // Depth 0: the parent is the root key (see `root_key_of`).
            root_key: if plan.depth == 0 {
                String::new()
            } else {
                caller.root_key.clone()
            },
            depth: plan.depth,
            issued_at: now,
            expires_at,
            revoked_at: 0,
            audience: plan.audience,
            mint_only: caller.old_secret,
        };
        match self
            .core
            .store
            .insert_token(&jti, &record, caller.key_version)?
        {
            MintOutcome::Stored => {}
            MintOutcome::ParentGone => {
                return Err(TokenError::ParentChanged(
                    "the authorising credential was revoked or changed while minting: retry"
                        .to_owned(),
                )
                .into());
            }
        }
        self.core.store.durable().await?;
        Ok(Minted { token, claims })
    }

    /// The jti a revocation request names: the `jti` field, or the jti of a token this
    /// broker signed (expired tokens may still be revoked, so only the signature is checked).
    pub fn revocation_target(&self, token: &str, jti: &str) -> Result<String, Error> {
        match (token.is_empty(), jti.is_empty()) {
            (true, true) => Err(Error::invalid("token", "give `token` or `jti`")),
            (false, false) => Err(Error::invalid("jti", "give `token` or `jti`, not both")),
            (true, false) => Ok(jti.to_owned()),
            (false, true) => {
                self.core.jwt.signed_jti(token).map_err(|e| {
                    Error::invalid("token", format!("not a token of this broker: {e}"))
                })
            }
        }
    }

    /// Revokes an authorized token (by jti) and its descendants; durable before it returns.
    pub async fn revoke(&self, authorized: Authorized<String>) -> Result<u32, Error> {
        let (_, jti, now) = authorized.into_parts();
        let jti = jti.as_str();
        if self.core.store.token(jti)?.is_none() {
            return Err(TokenError::Unknown(format!("token {} does not exist", quote(jti))).into());
        }
        let revoked = self.core.store.revoke_token(jti, now)?;
        self.core.store.durable().await?;
        Ok(revoked)
    }
}

/// How often expired token records are swept.
const SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// Records are kept this long past their expiry (beyond the JWT leeway) before sweeping.
const SWEEP_GRACE_SECS: i64 = 60;

/// Removes expired token records in the background until the broker is dropped.
pub(super) fn spawn_sweeper(broker: std::sync::Weak<Broker>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_PERIOD);
        loop {
            tick.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let cutoff =
                broker.now() - broker.core().config.leeway.as_secs() as i64 - SWEEP_GRACE_SECS;
            let store = broker.core().store.clone();
            drop(broker);
            match tokio::task::spawn_blocking(move || store.sweep_expired_tokens(cutoff, 100_000))
                .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(swept = n, "removed expired token records"),
                Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired tokens failed"),
                Err(e) => tracing::warn!(error = %e, "sweeper task failed"),
            }
        }
    });
}
