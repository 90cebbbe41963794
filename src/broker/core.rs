//! What every concern of the core shares: configuration, the store, the policy engine, the
//! signing keys, the permission model, the clock, and the one derivation rule.

use std::sync::Arc;

use crate::{
    clock::Clock,
    config::Config,
    domain::{
        Ask, Exceeded, MintLimits, PermissionModel, Reach, Rules,
        derive::{self, within},
    },
    error::Error,
    keys::jwt::JwtKeys,
    pb::storage::AccessKeyRecord,
    policy::PolicyEngine,
    store::Store,
};

use super::{Caller, exceeded_error};

/// The parts every concern shares; each concern holds it behind an `Arc`.
pub struct Core {
    /// The validated configuration.
    pub config: Config,
    /// Persistent state.
    pub store: Store,
    /// Cedar policies.
    pub policy: PolicyEngine,
    /// Signing and verification keys.
    pub jwt: JwtKeys,
    /// Permission vocabulary with implication.
    pub model: PermissionModel,
    pub(super) limits: MintLimits,
    pub(super) audiences: Vec<String>,
    /// Where every expiry, grace, lease and sweep decision reads the time.
    pub(super) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("data_dir", &self.config.data_dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The broker's clock, for background work that outlives a request.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The configured lifetime limits.
    pub fn limits(&self) -> MintLimits {
        self.limits
    }

    /// The broker's clock, in unix seconds: read once per request, by the auth layer.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The nanoseconds stored with a record created or changed at `secs` (this request's
    /// reading), so listings keep the order records were made in (see
    /// [`crate::clock::nanos_within`]).
    pub fn nanos_within(&self, secs: i64) -> i32 {
        crate::clock::nanos_within(self.clock.as_ref(), secs)
    }

    /// The configured bounds of the derivation rule (lifetimes and delegation depth).
    pub fn rules(&self) -> Rules {
        Rules {
            limits: self.limits,
            max_depth: self.config.max_delegation_depth,
        }
    }

    /// Whether the token that made `key` (if a token made it) is still live: a key made by a
    /// token dies at the token's revocation (memory index) and at its end, even if the key's
    /// own expiry was later changed (the token's record is read; once swept, it is gone).
    pub fn maker_alive(&self, key: &AccessKeyRecord, now: i64) -> Result<bool, Error> {
        let Some(jti) = key.derived_from.last() else {
            return Ok(true);
        };
        if self.store.is_revoked(jti) {
            return Ok(false);
        }
        Ok(self
            .store
            .token(jti)?
            .is_some_and(|t| t.revoked_at == 0 && t.expires_at > now))
    }

    /// The derivation rule applied to `caller` (see [`crate::domain::derive`]): every
    /// credential-yielding call asks here, with what it would yield.
    pub fn derive(&self, caller: &Caller, ask: &Ask, now: i64) -> Result<Reach, Error> {
        let caller_reach = caller.reach();
        match derive::derive(&caller_reach, ask, now, &self.rules(), &self.model) {
            // INVARIANT: `derive` never returns a reach beyond its caller; checked again
            // because everything the broker yields depends on it.
            Ok(reach) if within(&reach, &caller_reach, &self.model) => Ok(reach),
            Ok(_) => Err(Error::Exceeds(Exceeded::default())),
            Err(exceeded) => Err(exceeded_error(exceeded)),
        }
    }
}
