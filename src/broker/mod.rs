//! The application core: authentication, minting, introspection, revocation, subjects and
//! keys, each a method that validates, applies the domain rules, writes one transaction and
//! waits for durability. Transport-free, so it runs the same behind gRPC and in benchmarks.

mod keys;
mod list;
mod upstreams;

pub use keys::{KeyPage, KeyWithSecret, NewKey, UPDATABLE};
pub use list::KeyQuery;
pub use upstreams::{IssuedLease, UpstreamPlan};

use sha2::{Digest, Sha256};
use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    config::Config,
    domain::{
        Ask, End, Exceeded, Grant, MintLimits, MintRequest, PermissionModel, Projects, Reach,
        Restrictions, Rules, Yield,
        claims::Claims,
        derive::{self, within},
        grant::attenuates,
        validate::{self, FieldViolation, quote},
    },
    error::Error,
    keys::{
        KeyError, MasterKey,
        jwt::{JwtKeys, JwtSettings, KeyMaterial, SigningAlgorithm},
        secret,
    },
    pb::{
        storage::{AccessKeyRecord, GrantRecord, SigningKeyRecord, SubjectRecord, TokenRecord},
        v1::SubjectKind,
    },
    policy::{PolicyEngine, PolicyError},
    store::{MintOutcome, Store, StoreError},
};

/// The subject created on first start.
pub const ADMIN_SUBJECT: &str = "admin";
/// File under the data dir that receives the bootstrap admin secret, once.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-admin.key";
const BOOTSTRAP_MARK: &str = "bootstrap";
const SIGNING_AAD: &str = "signing-key:";

/// Why the broker could not start; printed before exit.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Policy files are invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Storage could not be opened or written.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Keys could not be loaded or generated.
    #[error("keys: {0}")]
    Key(#[from] KeyError),
    /// A file under the data dir could not be written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The shared vendor HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] crate::upstream::ClientBuildError),
}

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// The value of `TOKEN_BROKER_MASTER_KEY` (base64 of 32 bytes).
    Base64(String),
    /// The configured file, created with mode 0600 on first start.
    File,
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MasterKeySource::Base64(_) => "MasterKeySource::Base64(<redacted>)",
            MasterKeySource::File => "MasterKeySource::File",
        })
    }
}

/// Seconds since the Unix epoch: the broker's one clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How the caller proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A long-lived access key.
    AccessKey,
    /// A broker access token.
    AccessToken,
}

/// The authenticated caller, handed from the auth layer to handlers via request extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The subject acting.
    pub subject: SubjectRecord,
    /// Key or token.
    pub kind: CredentialKind,
    /// The access-key id or the token's jti.
    pub credential_id: String,
    /// Delegation depth of the credential (0 for a key).
    pub depth: u32,
    /// What the credential holds.
    pub grant: Grant,
    /// The access key at the root of the chain.
    pub root_key: String,
    /// The root key's own policies, when it has an inline policy or roles.
    pub key_policy: Option<KeyPolicy>,
    /// The root key's `updated_at` when the caller authenticated (see `Store::insert_token`).
    pub key_version: i64,
    /// A key made by a token: it sits at that token's `depth`, and its tokens go one deeper.
    pub derived_key: bool,
    /// Authenticated with a key's previous secret during its reset grace: it may mint until
    /// the grace ends, but not manage keys (a leaked old secret must not undo the reset).
    pub old_secret: bool,
}

impl Caller {
    /// What the caller's credential reaches, as the derivation rule compares it.
    pub fn reach(&self) -> Reach {
        Reach {
            grant: self.grant.clone(),
            restrictions: self
                .key_policy
                .as_ref()
                .map(|k| Restrictions::new(&k.inline_policy, &k.roles))
                .unwrap_or_default(),
            depth: match self.kind {
                CredentialKind::AccessKey if !self.derived_key => None,
                _ => Some(self.depth),
            },
        }
    }
}

/// What identifies a key's own policy set; the set itself is built once and cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The key.
    pub key_id: String,
    /// The key's `updated_at`: a changed key gets a fresh set.
    pub version: i64,
    /// Inline Cedar text.
    pub inline_policy: String,
    /// Linked role names.
    pub roles: Vec<String>,
}

impl KeyPolicy {
    /// The policy part of a key record, if it has any.
    pub fn of(key: &AccessKeyRecord) -> Option<Self> {
        (!key.inline_policy.trim().is_empty() || !key.roles.is_empty()).then(|| Self {
            key_id: key.id.clone(),
            version: key.updated_at,
            inline_policy: key.inline_policy.clone(),
            roles: key.roles.clone(),
        })
    }
}

/// What a verified token carries for later requests: its claims, its record and its subject.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The verified claims.
    pub claims: Claims,
    /// The stored record as it was when first verified (revocation is checked separately).
    pub record: TokenRecord,
    /// The subject it acts for (subjects never change; deleting one revokes its tokens).
    pub subject: SubjectRecord,
}

/// The access key at the root of a token's chain: stored only below depth 0, where the
/// parent is not the key itself.
pub fn root_key_of(record: &TokenRecord) -> &str {
    if record.depth == 0 && record.root_key.is_empty() {
        &record.parent
    } else {
        &record.root_key
    }
}

/// Most verified tokens remembered.
const TOKEN_CACHE_CAPACITY: u64 = 100_000;

/// Keeps each cached token until its own expiry.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            (value.record.expires_at - now()).max(0) as u64,
        ))
    }
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

/// Shared state of a running broker.
pub struct Broker {
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
    master: MasterKey,
    pepper: [u8; 32],
    page_key: [u8; 32],
    limits: MintLimits,
    audiences: Vec<String>,
    key_sets: keys::KeyPolicyCache,
    usage: keys::UsageBatch,
    token_cache: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    /// The one vendor HTTP client (pool, retries, destination rules), built at start-up.
    http: crate::upstream::HttpClient,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.config.data_dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Converts a stored grant and an end time into a domain grant.
pub fn grant_from_record(record: Option<&GrantRecord>, not_after: i64) -> Grant {
    let (projects, permissions) = record
        .map(|g| (g.projects.as_slice(), g.permissions.as_slice()))
        .unwrap_or_default();
    Grant {
        projects: Projects::from_ids(projects.iter().cloned()),
        permissions: permissions.iter().cloned().collect(),
        not_after: (not_after > 0).then_some(not_after),
    }
}

/// Converts a domain grant into its stored form.
pub fn grant_record(grant: &Grant) -> GrantRecord {
    GrantRecord {
        projects: grant.projects.to_ids(),
        permissions: grant.permissions.iter().cloned().collect(),
    }
}

/// A refusal of the derivation rule: a depth refusal alone keeps its own reason, anything
/// else is GRANT_EXCEEDED naming every dimension that exceeded.
fn exceeded_error(exceeded: Exceeded) -> Error {
    match exceeded.depth {
        Some((depth, max))
            if exceeded
                == (Exceeded {
                    depth: exceeded.depth,
                    ..Exceeded::default()
                }) =>
        {
            Error::PermissionDenied {
                reason: "DELEGATION_DEPTH_EXCEEDED",
                message: format!(
                    "a token at depth {depth} may not delegate: the maximum delegation depth is {max}"
                ),
            }
        }
        _ => Error::Exceeds(exceeded),
    }
}

fn unauthenticated(message: &str) -> Error {
    Error::Unauthenticated(message.to_owned())
}

impl Broker {
    /// Opens the store, loads policies and keys, and bootstraps the admin on first start.
    /// Policies are validated before anything is written.
    pub async fn open(config: Config, master: MasterKeySource) -> Result<Arc<Self>, StartError> {
        let policy = PolicyEngine::load(&config.policies)?
            .with_max_inline_policy_bytes(config.max_inline_policy_bytes);
        private_dir(&config.data_dir).map_err(|source| StartError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let master = match master {
            MasterKeySource::Base64(text) => MasterKey::from_base64(&text)?,
            MasterKeySource::File => MasterKey::load_or_create(&config.master_key_path())?,
        };
        let store = Store::open(&config.data_dir)?;
        let now = now();
        let jwt = load_signing_keys(&store, &master, &config, now)?;
        let model = PermissionModel::new(&config.permissions, &config.implies);
        let broker = Arc::new(Self {
            limits: MintLimits {
                default_lifetime_secs: config.default_token_lifetime.as_secs() as i64,
                max_lifetime_secs: config.max_token_lifetime.as_secs() as i64,
            },
            audiences: config.all_audiences(),
            pepper: master.derive("access-key-pepper"),
            page_key: master.derive("page-token"),
            master,
            key_sets: keys::KeyPolicyCache::default(),
            token_cache: moka::sync::Cache::builder()
                .max_capacity(TOKEN_CACHE_CAPACITY)
                .expire_after(UntilExpiry)
                .build(),
            usage: keys::UsageBatch::default(),
            http: crate::upstream::HttpClient::new(
                config.upstream_retry_attempts,
                config.upstream_retry_backoff,
                config.upstreams.clone(),
            )?,
            config,
            store,
            policy,
            jwt,
            model,
        });
        broker.bootstrap(now).await?;
        store_durable(&broker.store).await?;
        keys::spawn_usage_writer(Arc::downgrade(&broker));
        spawn_sweeper(Arc::downgrade(&broker));
        upstreams::spawn_lease_worker(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// Creates the `admin` subject and its key on first start and writes the secret, once,
    /// to a 0600 file. Later starts find the marker and do nothing.
    async fn bootstrap(&self, now: i64) -> Result<(), StartError> {
        if self.store.meta(BOOTSTRAP_MARK)?.is_some() {
            return Ok(());
        }
        let all: Vec<String> = self.model.all().cloned().collect();
        let subject = SubjectRecord {
            id: ADMIN_SUBJECT.to_owned(),
            kind: SubjectKind::User as i32,
            grant: Some(GrantRecord {
                projects: vec!["*".to_owned()],
                permissions: all.clone(),
            }),
            created_at: now,
        };
        self.store.create_subject(&subject)?;
        let (record, secret) = self.new_key_record(
            ADMIN_SUBJECT,
            keys::NewKey {
                name: "bootstrap",
                description: "created on first start",
                ..keys::NewKey::default()
            },
            subject.grant.clone(),
            false,
            now,
        );
        let path = self.config.data_dir.join(BOOTSTRAP_KEY_FILE);
        // The file first: if we crash before the marker, the next start writes a new key.
        write_secret_file(&path, secret.expose()).map_err(|source| StartError::Io {
            path: path.clone(),
            source,
        })?;
        self.store.insert_access_key(&record, u32::MAX)?;
        self.store.set_meta(BOOTSTRAP_MARK, record.id.as_bytes())?;
        store_durable(&self.store).await?;
        tracing::info!(path = %path.display(), "bootstrap admin access key written");
        Ok(())
    }

    /// The configured lifetime limits.
    pub fn limits(&self) -> MintLimits {
        self.limits
    }

    /// The configured bounds of the derivation rule (lifetimes and delegation depth).
    pub fn rules(&self) -> Rules {
        Rules {
            limits: self.limits,
            max_depth: self.config.max_delegation_depth,
        }
    }

    // === authentication ===

    /// Resolves a bearer value (access-key secret or access token) to the caller.
    pub fn authenticate(&self, bearer: &str, now: i64) -> Result<Caller, Error> {
        if secret::looks_like_secret(bearer) {
            self.authenticate_key(bearer, now)
        } else {
            self.authenticate_token(bearer, now)
        }
    }

    fn authenticate_key(&self, text: &str, now: i64) -> Result<Caller, Error> {
        secret::check_format(text).map_err(|e| Error::Unauthenticated(e.to_string()))?;
        let hash = secret::hash(&self.pepper, text);
        let key = self
            .store
            .access_key_by_hash(&hash)?
            .ok_or_else(|| unauthenticated("access key is unknown or was deleted"))?;
        let current = secret::hashes_equal(&key.secret_hash, &hash);
        let grace =
            key.old_secret_expires_at > now && secret::hashes_equal(&key.old_secret_hash, &hash);
        if !current && !grace {
            return Err(unauthenticated("access key secret was reset"));
        }
        if key.expires_at > 0 && key.expires_at <= now {
            return Err(unauthenticated("access key has expired"));
        }
        if !self.maker_alive(&key, now)? {
            return Err(unauthenticated(
                "access key was made by a token that has been revoked or has expired",
            ));
        }
        let subject = self
            .store
            .subject(&key.owner)?
            .ok_or_else(|| unauthenticated("the owner of this access key no longer exists"))?;
        self.usage.saw(&key, now);
        // The old secret during its grace holds the key's reach only until the grace ends.
        let old_secret = !current;
        let end = match (old_secret, key.expires_at) {
            (false, end) => end,
            (true, 0) => key.old_secret_expires_at,
            (true, end) => end.min(key.old_secret_expires_at),
        };
        Ok(Caller {
            subject,
            kind: CredentialKind::AccessKey,
            depth: key.depth,
            derived_key: !key.derived_from.is_empty(),
            old_secret,
            grant: grant_from_record(key.grant.as_ref(), end),
            root_key: key.id.clone(),
            key_policy: KeyPolicy::of(&key),
            key_version: key.updated_at,
            credential_id: key.id,
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
                let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
                let claims = self
                    .jwt
                    .verify(token, &audiences)
                    .map_err(|e| Error::Unauthenticated(format!("access token refused: {e}")))?;
                let record = self
                    .store
                    .token(&claims.jti)?
                    .ok_or_else(|| unauthenticated("access token is unknown to this broker"))?;
                if record.revoked_at != 0 {
                    return Err(unauthenticated("access token has been revoked"));
                }
                let subject = self.store.subject(&record.subject)?.ok_or_else(|| {
                    unauthenticated("the subject of this access token no longer exists")
                })?;
                let v = Arc::new(VerifiedToken {
                    claims,
                    record,
                    subject,
                });
                self.token_cache.insert(key, Arc::clone(&v));
                v
            }
        };
        if self.store.is_revoked(&verified.claims.jti) {
            return Err(unauthenticated("access token has been revoked"));
        }
        // The broker is its own clock: the stored expiry is exact, the JWT leeway is for
        // verifiers elsewhere.
        if verified.record.expires_at <= now {
            return Err(unauthenticated("access token has expired"));
        }
        Ok(verified)
    }

    fn authenticate_token(&self, token: &str, now: i64) -> Result<Caller, Error> {
        let verified = self.verified(token, now)?;
        if verified.claims.aud != self.config.audience {
            return Err(unauthenticated(
                "access token refused: its audience is not this broker",
            ));
        }
        let record = &verified.record;
        // The chain's root key: gone or expired means the token is dead too, and its own
        // policies narrow every request made with the token.
        let root_key = root_key_of(record);
        let root = self.store.access_key(root_key)?.ok_or_else(|| {
            unauthenticated("the access key this token descends from was deleted")
        })?;
        if root.expires_at > 0 && root.expires_at <= now {
            return Err(unauthenticated(
                "the access key this token descends from has expired",
            ));
        }
        if !self.maker_alive(&root, now)? {
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
        })
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

    // === derivation ===

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

    // === minting ===

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
        let mut request: MintRequest = validate::mint_request(
            project_ids,
            permissions,
            expires_in_hours,
            self.config.max_grant_items,
            self.limits.max_lifetime_secs,
            &self.model,
        )
        .map_err(Error::InvalidArgument)?;
        let audience = if audience.is_empty() {
            self.config.audience.clone()
        } else if self.audiences.iter().any(|a| a == audience) {
            audience.to_owned()
        } else {
            return Err(Error::invalid(
                "audience",
                format!(
                    "audience {} is not configured: use one of `{}`",
                    quote(audience),
                    self.audiences.join("`, `")
                ),
            ));
        };
        // An explicit "*" from a caller that holds every project is the same as inheriting.
        if matches!(request.projects, Some(Projects::All)) && caller.grant.projects == Projects::All
        {
            request.projects = None;
        }
        let reach = self.derive(
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

    /// Signs and stores a planned token; answers only once the record is durable.
    pub async fn mint(&self, caller: &Caller, plan: MintPlan, now: i64) -> Result<Minted, Error> {
        // INVARIANT: only grants that attenuate the caller's are ever signed.
        if !attenuates(&plan.grant, &caller.grant, &self.model) {
            return Err(Error::Exceeds(Exceeded::default()));
        }
        let jti = uuid::Uuid::new_v4().simple().to_string();
        // The plan's end is authoritative: it was checked against the authoriser's, even if
        // the plan was made a moment earlier (by the auth layer).
        let expires_at = plan.grant.not_after.unwrap_or(now + plan.lifetime_secs);
        let claims = Claims {
            iss: self.config.issuer.clone(),
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
        let token = self.jwt.sign(&claims)?;
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
        match self.store.insert_token(&jti, &record, caller.key_version)? {
            MintOutcome::Stored => {}
            MintOutcome::ParentGone => {
                return Err(unauthenticated(
                    "the authorising credential was revoked or changed while minting: retry",
                ));
            }
        }
        self.store.durable().await?;
        Ok(Minted { token, claims })
    }

    // === introspection and revocation ===

    /// Returns the claims of an active token, or `None` for anything inactive.
    pub fn introspect(&self, token: &str, now: i64) -> Result<Option<Arc<VerifiedToken>>, Error> {
        match self.verified(token, now) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Unauthenticated(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The jti a revocation request names: the `jti` field, or the jti of a token this
    /// broker signed (expired tokens may still be revoked, so only the signature is checked).
    pub fn revocation_target(&self, token: &str, jti: &str) -> Result<String, Error> {
        match (token.is_empty(), jti.is_empty()) {
            (true, true) => Err(Error::invalid("token", "give `token` or `jti`")),
            (false, false) => Err(Error::invalid("jti", "give `token` or `jti`, not both")),
            (true, false) => Ok(jti.to_owned()),
            (false, true) => self
                .jwt
                .signed_jti(token)
                .map_err(|e| Error::invalid("token", format!("not a token of this broker: {e}"))),
        }
    }

    /// Revokes a token and its descendants; durable before it returns.
    pub async fn revoke(&self, jti: &str, now: i64) -> Result<u32, Error> {
        if self.store.token(jti)?.is_none() {
            return Err(Error::NotFound(format!(
                "token {} does not exist",
                quote(jti)
            )));
        }
        let revoked = self.store.revoke_token(jti, now)?;
        self.store.durable().await?;
        Ok(revoked)
    }

    // === subjects ===

    /// Validates and stores a new subject.
    pub async fn create_subject(
        &self,
        id: &str,
        kind: i32,
        project_ids: &[String],
        permissions: &[String],
        now: i64,
    ) -> Result<SubjectRecord, Error> {
        let record = self.subject_record(id, kind, project_ids, permissions, now)?;
        if !self.store.create_subject(&record)? {
            return Err(Error::AlreadyExists(format!(
                "subject {} already exists",
                quote(id)
            )));
        }
        self.store.durable().await?;
        Ok(record)
    }

    /// Validates the fields of a subject without storing it (also used by the auth layer to
    /// describe the resource of CreateSubject).
    pub fn subject_record(
        &self,
        id: &str,
        kind: i32,
        project_ids: &[String],
        permissions: &[String],
        now: i64,
    ) -> Result<SubjectRecord, Error> {
        let mut violations = Vec::new();
        if !validate::is_subject_id(id) {
            violations.push(FieldViolation::new(
                "subject_id",
                format!(
                    "subject id {} is malformed: use `[a-z0-9][a-z0-9._@-]{{0,127}}`",
                    quote(id)
                ),
            ));
        }
        if !matches!(
            SubjectKind::try_from(kind),
            Ok(SubjectKind::User | SubjectKind::Service)
        ) {
            violations.push(FieldViolation::new("kind", "set `kind` to USER or SERVICE"));
        }
        let max = self.config.max_grant_items;
        let projects = validate::projects("project_ids", project_ids, max, &mut violations);
        let perms = validate::permissions(
            "permissions",
            permissions,
            max,
            &self.model,
            &mut violations,
        );
        if project_ids.is_empty() {
            violations.push(FieldViolation::new(
                "project_ids",
                "give at least one project id or `*`",
            ));
        }
        if permissions.is_empty() {
            violations.push(FieldViolation::new(
                "permissions",
                "give at least one permission",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        Ok(SubjectRecord {
            id: id.to_owned(),
            kind,
            grant: Some(GrantRecord {
                projects: projects.map(|p| p.to_ids()).unwrap_or_default(),
                permissions: perms.map(|p| p.into_iter().collect()).unwrap_or_default(),
            }),
            created_at: now,
        })
    }

    /// Deletes a subject, its keys and every token minted from them.
    pub async fn delete_subject(&self, id: &str, now: i64) -> Result<(u32, u32), Error> {
        if id == ADMIN_SUBJECT {
            return Err(Error::PermissionDenied {
                reason: "BOOTSTRAP_SUBJECT",
                message: "the bootstrap subject `admin` cannot be deleted".to_owned(),
            });
        }
        let outcome = self
            .store
            .delete_subject(id, now)?
            .ok_or_else(|| Error::NotFound(format!("subject {} does not exist", quote(id))))?;
        self.store.durable().await?;
        Ok(outcome)
    }
}

/// How often expired token records are swept.
const SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// Records are kept this long past their expiry (beyond the JWT leeway) before sweeping.
const SWEEP_GRACE_SECS: i64 = 60;

/// Removes expired token records in the background until the broker is dropped.
fn spawn_sweeper(broker: std::sync::Weak<Broker>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_PERIOD);
        loop {
            tick.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let cutoff = now() - broker.config.leeway.as_secs() as i64 - SWEEP_GRACE_SECS;
            let store = broker.store.clone();
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

async fn store_durable(store: &Store) -> Result<(), StartError> {
    store.durable().await.map_err(StartError::Store)
}

/// Creates the data dir 0700, or narrows an existing one to 0700: it holds the sealed keys,
/// the hashed secrets and the store, which are nobody else's business.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data dir was open to others: set to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a secret to a new 0600 file (replacing a leftover from an interrupted bootstrap).
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Loads the signing keys, generating (and sealing) one on first start or when the
/// configured algorithm changes; retired keys keep verifying until their tokens expire.
fn load_signing_keys(
    store: &Store,
    master: &MasterKey,
    config: &Config,
    now: i64,
) -> Result<JwtKeys, StartError> {
    let alg: SigningAlgorithm = config
        .signing_algorithm
        .parse()
        .map_err(|_| KeyError::UnknownAlgorithm(config.signing_algorithm.clone()))?;
    let max_life = config.max_token_lifetime.as_secs() as i64;
    let mut records = store.signing_keys()?;
    records.sort_by_key(|r| r.created_at);
    let mut current = None;
    let mut verify_only = Vec::new();
    for record in records.iter().rev() {
        let material = open_signing_key(master, record)?;
        if current.is_none() && record.retired_at == 0 && material.alg == alg {
            current = Some(material);
        } else {
            let retired_at = if record.retired_at == 0 {
                let mut retired = record.clone();
                retired.retired_at = now;
                store.put_signing_key(&retired)?;
                now
            } else {
                record.retired_at
            };
            if retired_at + max_life + 60 > now {
                verify_only.push(material);
            }
        }
    }
    let current = match current {
        Some(c) => c,
        None => {
            let material = KeyMaterial::generate(alg, now)?;
            let aad = format!("{SIGNING_AAD}{}", material.kid);
            store.put_signing_key(&SigningKeyRecord {
                kid: material.kid.clone(),
                alg: alg.as_str().to_owned(),
                sealed_private: master.seal(&material.private_der, aad.as_bytes())?,
                public: material.public.clone(),
                created_at: now,
                retired_at: 0,
            })?;
            tracing::info!(kid = %material.kid, alg = alg.as_str(), "generated signing key");
            material
        }
    };
    let settings = JwtSettings {
        issuer: config.issuer.clone(),
        leeway_secs: config.leeway.as_secs(),
    };
    Ok(JwtKeys::new(settings, &current, &verify_only)?)
}

fn open_signing_key(
    master: &MasterKey,
    record: &SigningKeyRecord,
) -> Result<KeyMaterial, StartError> {
    let alg: SigningAlgorithm = record
        .alg
        .parse()
        .map_err(|_| KeyError::UnknownAlgorithm(record.alg.clone()))?;
    let aad = format!("{SIGNING_AAD}{}", record.kid);
    Ok(KeyMaterial {
        kid: record.kid.clone(),
        alg,
        private_der: master.open(&record.sealed_private, aad.as_bytes())?,
        public: record.public.clone(),
        created_at: record.created_at,
    })
}
