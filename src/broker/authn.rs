//! Authentication: a bearer credential (an access key's secret or an access token) becomes
//! a [`Caller`], or is refused. Tokens are verified once and then served from a cache.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{
    Caller, CredentialKind, KeyPolicy, VerifiedToken, core::Core, grant_from_record, root_key_of,
    unauthenticated, usage::UsageBatch,
};
use crate::{
    authz::CredentialView,
    clock::Clock,
    error::Error,
    keys::secret,
    pb::storage::{AccessKeyRecord, SubjectRecord},
};

/// Why a request carries no usable credential; every variant answers UNAUTHENTICATED.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was sent to an RPC that needs one.
    #[error("{0}")]
    Missing(String),
    /// The credential was refused (unknown, reset, expired, revoked, its owner gone, …).
    #[error("{0}")]
    Refused(String),
}

/// Most verified tokens remembered.
const TOKEN_CACHE_CAPACITY: u64 = 100_000;

/// Most access keys remembered (by the hash of their secret).
const KEY_CACHE_CAPACITY: u64 = 10_000;

/// An access key as read from the store, with its owner and what policy sees of it, valid
/// while the store's generation is the one it was read at.
struct KnownKey {
    generation: u64,
    key: AccessKeyRecord,
    /// `None` when the owner no longer exists (the key is then refused).
    subject: Option<SubjectRecord>,
    view: Option<Arc<CredentialView>>,
}

/// Keeps each cached token until its own expiry, as the broker's clock reads it.
struct UntilExpiry(Arc<dyn Clock>);

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            (value.record.expires_at - self.0.now()).max(0) as u64,
        ))
    }
}

/// Credentials → [`Caller`]: the access-key pepper, the verified-token cache and the batch
/// of key usage times to write.
pub struct Authn {
    core: Arc<Core>,
    pepper: [u8; 32],
    usage: UsageBatch,
    token_cache: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    /// Keys by secret hash; an entry serves only while the store's generation is unchanged,
    /// so any write to a key or subject makes the next authentication read the store again.
    key_cache: moka::sync::Cache<[u8; 32], Arc<KnownKey>>,
    /// Root keys of token chains by id, under the same generation rule: a token caller
    /// needs its root key's expiry and policies on every call.
    root_cache: moka::sync::Cache<String, Arc<(u64, Arc<AccessKeyRecord>)>>,
}

impl std::fmt::Debug for Authn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authn")
            .field("cached_tokens", &self.token_cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl Authn {
    /// Authentication over `core`, hashing secrets with `pepper`.
    pub(super) fn new(core: Arc<Core>, pepper: [u8; 32]) -> Self {
        Self {
            token_cache: moka::sync::Cache::builder()
                .max_capacity(TOKEN_CACHE_CAPACITY)
                .expire_after(UntilExpiry(Arc::clone(&core.clock)))
                .build(),
            key_cache: moka::sync::Cache::new(KEY_CACHE_CAPACITY),
            root_cache: moka::sync::Cache::new(KEY_CACHE_CAPACITY),
            core,
            pepper,
            usage: UsageBatch::default(),
        }
    }

    /// Resolves a bearer value (access-key secret or access token) to the caller.
    pub fn authenticate(&self, bearer: &str, now: i64) -> Result<Caller, Error> {
        if secret::looks_like_secret(bearer) {
            self.authenticate_key(bearer, now)
        } else {
            self.authenticate_token(bearer, now)
        }
    }

    /// The key whose secret `text` hashes to `hash`, from the cache while no subject or key
    /// was written since it was read, else from the store once `text` is a well-formed
    /// secret (a cached key's secret is one: only well-formed secrets are ever stored).
    fn known_key(&self, text: &str, hash: [u8; 32]) -> Result<Option<Arc<KnownKey>>, Error> {
        // Read before the records: a write after this bumps it, so the entry made below
        // is never newer than the generation it is stamped with.
        let generation = self.core.store.generation();
        if let Some(known) = self.key_cache.get(&hash)
            && known.generation == generation
        {
            return Ok(Some(known));
        }
        secret::check_format(text).map_err(|e| AuthError::Refused(e.to_string()))?;
        let Some(key) = self.core.store.access_key_by_hash(&hash)? else {
            return Ok(None);
        };
        let subject = self.core.store.subject(&key.owner)?;
        let view = subject.as_ref().map(|subject| {
            let grant = grant_from_record(key.grant.as_ref(), 0);
            Arc::new(CredentialView::new(&self.core.model, subject, &grant))
        });
        let known = Arc::new(KnownKey {
            generation,
            key,
            subject,
            view,
        });
        self.key_cache.insert(hash, Arc::clone(&known));
        Ok(Some(known))
    }

    /// The access key `id` at the root of a token chain, from the cache while no subject or
    /// key was written since it was read, else from the store.
    fn root_key(&self, id: &str) -> Result<Option<Arc<AccessKeyRecord>>, Error> {
        // Read before the record, as in `known_key`.
        let generation = self.core.store.generation();
        if let Some(hit) = self.root_cache.get(id)
            && hit.0 == generation
        {
            return Ok(Some(Arc::clone(&hit.1)));
        }
        let Some(key) = self.core.store.access_key(id)? else {
            return Ok(None);
        };
        let key = Arc::new(key);
        self.root_cache
            .insert(id.to_owned(), Arc::new((generation, Arc::clone(&key))));
        Ok(Some(key))
    }

    fn authenticate_key(&self, text: &str, now: i64) -> Result<Caller, Error> {
        let hash = secret::hash(&self.pepper, text);
        let known = self
            .known_key(text, hash)?
            .ok_or_else(|| unauthenticated("access key is unknown or was deleted"))?;
        let key = &known.key;
        let current = secret::hashes_equal(&key.secret_hash, &hash);
        let grace =
            key.old_secret_expires_at > now && secret::hashes_equal(&key.old_secret_hash, &hash);
        if !current && !grace {
            return Err(unauthenticated(
                "access key secret was reset: use the new secret that ResetAccessKey returned",
            ));
        }
        if key.expires_at > 0 && key.expires_at <= now {
            return Err(unauthenticated("access key has expired"));
        }
        if !self.core.maker_alive(key, now)? {
            return Err(unauthenticated(
                "access key was made by a token that has been revoked or has expired",
            ));
        }
        let (Some(subject), Some(view)) = (&known.subject, &known.view) else {
            return Err(unauthenticated(
                "the owner of this access key no longer exists",
            ));
        };
        self.usage.saw(key, now);
        // The old secret during its grace holds the key's reach only until the grace ends.
        let old_secret = !current;
        let end = match (old_secret, key.expires_at) {
            (false, end) => end,
            (true, 0) => key.old_secret_expires_at,
            (true, end) => end.min(key.old_secret_expires_at),
        };
        Ok(Caller {
            subject: subject.clone(),
            kind: CredentialKind::AccessKey,
            depth: key.depth,
            derived_key: !key.derived_from.is_empty(),
            old_secret,
            authenticated_at: now,
            grant: grant_from_record(key.grant.as_ref(), end),
            root_key: key.id.clone(),
            key_policy: KeyPolicy::of(key),
            key_version: key.updated_at,
            credential_id: key.id.clone(),
            view: Arc::clone(view),
        })
    }

    /// A token this broker signed, verified once and then served from a bounded cache keyed
    /// by the token's SHA-256 (never its text). The revoked index and the exact expiry are
    /// checked on every call, so a cached token dies at its revocation and at its `exp`.
    pub fn verified(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = match self.token_cache.get(&key) {
            Some(v) => v,
            None => {
                let audiences: Vec<&str> = self.core.audiences.iter().map(String::as_str).collect();
                let claims = self
                    .core
                    .jwt
                    .verify(token, &audiences, now)
                    .map_err(|e| AuthError::Refused(format!("access token refused: {e}")))?;
                let record = self
                    .core
                    .store
                    .token(&claims.jti)?
                    .ok_or_else(|| unauthenticated("access token is unknown to this broker"))?;
                if record.revoked_at != 0 {
                    return Err(unauthenticated("access token has been revoked"));
                }
                let subject = self.core.store.subject(&record.subject)?.ok_or_else(|| {
                    unauthenticated("the subject of this access token no longer exists")
                })?;
                let grant = grant_from_record(record.grant.as_ref(), 0);
                let view = Arc::new(CredentialView::new(&self.core.model, &subject, &grant));
                let v = Arc::new(VerifiedToken {
                    claims,
                    record,
                    subject,
                    view,
                });
                self.token_cache.insert(key, Arc::clone(&v));
                v
            }
        };
        if self.core.store.is_revoked(&verified.claims.jti) {
            return Err(unauthenticated("access token has been revoked"));
        }
        // The broker is its own clock: the stored expiry is exact, the JWT leeway is for
        // verifiers elsewhere.
        if verified.record.expires_at <= now {
            return Err(unauthenticated("access token has expired"));
        }
        Ok(verified)
    }

    /// Resolves an access token sent through a sidecar (Envoy `Check`): access tokens only,
    /// never an access-key secret, with the broker's own audience or `also` (the matched
    /// route's exchange audience).
    pub fn authenticate_mesh(
        &self,
        token: &str,
        also: Option<&str>,
        now: i64,
    ) -> Result<Caller, Error> {
        if secret::looks_like_secret(token) {
            return Err(unauthenticated(
                "an access key is not accepted here: send an access token minted from it",
            ));
        }
        self.authenticate_token_for(token, also, now)
    }

    fn authenticate_token(&self, token: &str, now: i64) -> Result<Caller, Error> {
        self.authenticate_token_for(token, None, now)
    }

    fn authenticate_token_for(
        &self,
        token: &str,
        also: Option<&str>,
        now: i64,
    ) -> Result<Caller, Error> {
        let verified = self.verified(token, now)?;
        let aud = verified.claims.aud.as_str();
        if aud != self.core.config.audience && Some(aud) != also {
            return Err(unauthenticated(
                "access token refused: its audience is not this broker",
            ));
        }
        let record = &verified.record;
        // The chain's root key: gone or expired means the token is dead too, and its own
        // policies narrow every request made with the token.
        let root_key = root_key_of(record);
        let root = self.root_key(root_key)?.ok_or_else(|| {
            unauthenticated("the access key this token descends from was deleted")
        })?;
        if root.expires_at > 0 && root.expires_at <= now {
            return Err(unauthenticated(
                "the access key this token descends from has expired",
            ));
        }
        if !self.core.maker_alive(&root, now)? {
            return Err(unauthenticated(
                "the access key this token descends from was made by a token that is no longer live",
            ));
        }
        Ok(Caller {
            subject: verified.subject.clone(),
            kind: CredentialKind::AccessToken,
            depth: record.depth,
            grant: grant_from_record(record.grant.as_ref(), record.expires_at),
            root_key: root_key.to_owned(),
            key_policy: KeyPolicy::of(&root),
            key_version: root.updated_at,
            credential_id: verified.claims.jti.clone(),
            derived_key: false,
            old_secret: record.mint_only,
            authenticated_at: now,
            view: Arc::clone(&verified.view),
        })
    }

    /// Returns the claims of an active token, or `None` for anything inactive.
    pub fn introspect(&self, token: &str, now: i64) -> Result<Option<Arc<VerifiedToken>>, Error> {
        match self.verified(token, now) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Auth(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the batched `last_used_at` times (at most one write per key per minute).
    pub fn flush_usage(&self) {
        self.usage.flush(&self.core.store);
    }
}
