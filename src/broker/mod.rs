//! The application core: authentication, minting, introspection, revocation, subjects and
//! keys, each a method that validates, applies the domain rules, writes one transaction and
//! waits for durability. Transport-free, so it runs the same behind gRPC and in benchmarks.

mod authn;
mod core;
mod keys;
mod list;
mod mesh;
mod subjects;
mod tokens;
mod upstreams;
mod usage;

pub use authn::{AuthError, Authn};
pub use core::Core;
pub use keys::{AccessKeyError, AccessKeys, KeyPage, KeyWithSecret, NewKey, UPDATABLE};
pub use list::KeyQuery;
pub use mesh::{HttpAsk, Matched, Mesh, MeshError, under_prefix};
pub use subjects::{SubjectError, Subjects};
pub use tokens::{MintPlan, Minted, TokenError, Tokens};
pub use upstreams::{
    IssuedLease, Revoked, UpstreamError, UpstreamPlan, Upstreams, status_at, upstream_projects,
};

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    domain::{
        Exceeded, Grant, MintLimits, PermissionModel, Projects, Reach, Restrictions,
        claims::Claims, validate::quote,
    },
    error::Error,
    keys::{
        KeyError, MasterKey,
        jwt::{JwtKeys, JwtSettings, KeyMaterial, SigningAlgorithm},
    },
    pb::{
        storage::{AccessKeyRecord, GrantRecord, SigningKeyRecord, SubjectRecord, TokenRecord},
        v1::SubjectKind,
    },
    policy::{PolicyEngine, PolicyError},
    store::{Store, StoreError},
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
    /// When it authenticated: the request's one clock reading, used by every decision of it.
    pub authenticated_at: i64,
    /// What policy sees of the credential (principal, grant record), built once per
    /// credential and shared.
    pub view: Arc<crate::authz::CredentialView>,
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
    /// What policy sees of it when it is the caller's credential.
    pub view: Arc<crate::authz::CredentialView>,
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

/// A running broker: the core split by concern, each with its own state, all sharing one
/// [`Core`] (configuration, store, policy engine, signing keys, permission model).
pub struct Broker {
    core: Arc<Core>,
    /// Credentials → [`Caller`].
    pub authn: Authn,
    /// Minting and revoking access tokens.
    pub tokens: Tokens,
    /// Named long-lived access keys.
    pub keys: AccessKeys,
    /// Subjects.
    pub subjects: Subjects,
    /// Upstream vendor accounts and their leases.
    pub upstreams: Arc<Upstreams>,
    /// Sidecars' HTTP requests: routes and token exchange.
    pub mesh: Mesh,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.core.config.data_dir)
            .field("policy", &self.core.policy)
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
            Error::TooDeep(format!(
                "a token at depth {depth} may not delegate: the maximum delegation depth is {max}"
            ))
        }
        _ => Error::Exceeds(exceeded),
    }
}

/// What an authorized lookup found: the id asked for and the record, if it exists. Read once,
/// while describing the request to policy.
#[derive(Clone, Debug)]
pub struct Found<T> {
    /// The id asked for.
    pub id: String,
    /// The record, if it exists.
    pub record: Option<T>,
}

impl<T> Found<T> {
    /// A lookup's result.
    pub fn new(id: String, record: Option<T>) -> Self {
        Self { id, record }
    }

    /// The record, or the concern's `unknown` error with a message naming `what` and the id.
    pub fn or_not_found<E: Into<Error>>(
        self,
        what: &str,
        unknown: impl FnOnce(String) -> E,
    ) -> Result<T, Error> {
        self.record
            .ok_or_else(|| unknown(format!("{what} {} does not exist", quote(&self.id))).into())
    }
}

/// Default and largest page of a listing.
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 1000;

/// A listing's page size: 0 is the default, 1 to [`MAX_PAGE`] as asked.
pub fn page_size(asked: i32) -> Result<usize, Error> {
    match usize::try_from(asked) {
        Ok(0) => Ok(DEFAULT_PAGE),
        Ok(n) if n <= MAX_PAGE => Ok(n),
        _ => Err(Error::invalid(
            "page_size",
            format!("`{asked}` is out of range: give 1 to {MAX_PAGE}, or 0 for {DEFAULT_PAGE}"),
        )),
    }
}

fn unauthenticated(message: &str) -> Error {
    AuthError::Refused(message.to_owned()).into()
}

impl Broker {
    /// Opens the store, loads policies and keys, and bootstraps the admin on first start.
    /// Policies are validated before anything is written. Runs on the system clock.
    pub async fn open(config: Config, master: MasterKeySource) -> Result<Arc<Self>, StartError> {
        Self::open_with_clock(config, master, Arc::new(SystemClock)).await
    }

    /// [`Broker::open`] on a given clock, so tests (and the binary's debug-only test clock)
    /// drive time instead of waiting for it.
    pub async fn open_with_clock(
        config: Config,
        master: MasterKeySource,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StartError> {
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
        let now = clock.now();
        let jwt = load_signing_keys(&store, &master, &config, now)?;
        let model = PermissionModel::new(&config.permissions, &config.implies);
        let http = crate::upstream::HttpClient::new(
            config.upstream_retry_attempts,
            config.upstream_retry_backoff,
            config.upstreams.clone(),
        )?;
        let pepper = master.derive("access-key-pepper");
        let page_key = master.derive("page-token");
        let core = Arc::new(Core {
            limits: MintLimits {
                default_lifetime_secs: config.default_token_lifetime.as_secs() as i64,
                max_lifetime_secs: config.max_token_lifetime.as_secs() as i64,
            },
            audiences: config.all_audiences(),
            config,
            store,
            policy,
            jwt,
            model,
            clock,
        });
        let upstreams = Arc::new(Upstreams::new(Arc::clone(&core), Arc::new(master), http));
        let broker = Arc::new(Self {
            authn: Authn::new(Arc::clone(&core), pepper),
            tokens: Tokens::new(Arc::clone(&core)),
            keys: AccessKeys::new(Arc::clone(&core), pepper, page_key, Arc::clone(&upstreams)),
            subjects: Subjects::new(Arc::clone(&core), page_key),
            upstreams,
            mesh: Mesh::new(Arc::clone(&core)),
            core,
        });
        broker.bootstrap(now).await?;
        store_durable(&broker.core.store).await?;
        usage::spawn_usage_writer(Arc::downgrade(&broker));
        tokens::spawn_sweeper(Arc::downgrade(&broker));
        upstreams::spawn_lease_worker(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// Creates the `admin` subject and its key on first start and writes the secret, once,
    /// to a 0600 file. Later starts find the marker and do nothing.
    async fn bootstrap(&self, now: i64) -> Result<(), StartError> {
        if self.core.store.meta(BOOTSTRAP_MARK)?.is_some() {
            return Ok(());
        }
        let all: Vec<String> = self.core.model.all().cloned().collect();
        let subject = SubjectRecord {
            id: ADMIN_SUBJECT.to_owned(),
            kind: SubjectKind::User as i32,
            grant: Some(GrantRecord {
                projects: vec!["*".to_owned()],
                permissions: all.clone(),
            }),
            created_at: now,
            created_nanos: self.core.nanos_within(now),
        };
        self.core.store.create_subject(&subject)?;
        let (record, secret) = self.keys.new_key_record(
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
        let path = self.core.config.data_dir.join(BOOTSTRAP_KEY_FILE);
        // The file first: if we crash before the marker, the next start writes a new key.
        write_secret_file(&path, secret.expose()).map_err(|source| StartError::Io {
            path: path.clone(),
            source,
        })?;
        self.core.store.insert_access_key(&record, u32::MAX)?;
        self.core
            .store
            .set_meta(BOOTSTRAP_MARK, record.id.as_bytes())?;
        store_durable(&self.core.store).await?;
        tracing::info!(path = %path.display(), "bootstrap admin access key written");
        Ok(())
    }

    /// The shared parts: configuration, store, policy engine, signing keys, model.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The store (tests and tools read it; the API never does).
    pub fn store(&self) -> &Store {
        &self.core.store
    }

    /// The Cedar policy engine.
    pub fn policy(&self) -> &PolicyEngine {
        &self.core.policy
    }

    /// The permission vocabulary with implication.
    pub fn model(&self) -> &PermissionModel {
        &self.core.model
    }

    /// The signing and verification keys.
    pub fn jwt(&self) -> &JwtKeys {
        &self.core.jwt
    }

    /// Seconds since the Unix epoch on the broker's clock: the one "now" of every decision
    /// (read once per request, by the auth layer).
    pub fn now(&self) -> i64 {
        self.core.now()
    }

    /// The broker's clock, for background work that outlives a request.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.core.clock()
    }
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
