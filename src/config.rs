//! Typed configuration: embedded defaults that serve on a laptop, overridden by a TOML file,
//! then by `TOKEN_BROKER_*` environment variables, then by command-line flags.
//!
//! Everything is parsed and validated before any port is bound; nothing reads the environment
//! after start-up.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::upstream::Vendor;

/// Environment variables with this prefix override config keys (`TOKEN_BROKER_LISTEN` → `listen`).
pub const ENV_PREFIX: &str = "TOKEN_BROKER_";
/// The master key may come from the environment instead of a file; it is not a config key.
pub const MASTER_KEY_ENV: &str = "TOKEN_BROKER_MASTER_KEY";

/// Why a configuration was refused, naming the source, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The merged configuration does not fit the schema.
    #[error("invalid config ({origin}): {reason}")]
    Parse {
        /// Where the values came from.
        origin: String,
        /// What was wrong, with the key.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// The broker's settings; every field has a default so no file is needed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// Directory for the sled database, the master key file and the bootstrap key file.
    pub data_dir: PathBuf,
    /// Directory holding `schema.cedarschema` and the `*.cedar` policy files.
    pub policies: PathBuf,
    /// Master key file (default `<data_dir>/master.key`); `TOKEN_BROKER_MASTER_KEY` wins over it.
    pub master_key_file: Option<PathBuf>,
    /// `iss` claim of every token and the only issuer accepted.
    pub issuer: String,
    /// The broker's own audience: the only one accepted for bearer authentication.
    pub audience: String,
    /// Further audiences a caller may mint tokens for (introspection accepts them too).
    pub audiences: Vec<String>,
    /// Upper bound on any token lifetime (Develocity: 24 hours).
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Lifetime of a token minted without `expires_in_hours` (Develocity: 2 hours).
    #[serde(with = "humantime_serde")]
    pub default_token_lifetime: Duration,
    /// How many times a token may be minted from a token.
    pub max_delegation_depth: u32,
    /// The closed permission vocabulary.
    pub permissions: Vec<String>,
    /// Permission implication: each key implies the listed permissions (transitively).
    pub implies: BTreeMap<String, Vec<String>>,
    /// JWT signing algorithm: `EdDSA` (default) or `ES256`.
    pub signing_algorithm: String,
    /// Clock skew tolerated when checking `exp` and `nbf` (at most 30 s).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Most access keys one owner may hold.
    pub max_keys_per_owner: u32,
    /// Most project ids or permissions in one request.
    pub max_grant_items: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Broker permission → vendor permissions, per vendor (`bitbucket_server`,
    /// `launchdarkly`, `foreman`, `develocity`, `git_password`). A permission with no entry
    /// cannot be asked of that vendor.
    pub vendor_permissions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Attempts per vendor call on 429 and 5xx before giving up.
    pub upstream_retry_attempts: u32,
    /// First backoff between vendor attempts (doubled each time, `Retry-After` honoured).
    #[serde(with = "humantime_serde")]
    pub upstream_retry_backoff: Duration,
    /// Largest inline Cedar policy an access key may carry, in bytes: every request made
    /// with the key evaluates it, so its size is a cost every caller pays.
    pub max_inline_policy_bytes: usize,
    /// Longest grace an old secret keeps working after `ResetAccessKey` (LaunchDarkly
    /// `expiry`); past it a leaked old secret would outlive the reset meant to kill it.
    #[serde(with = "humantime_serde")]
    pub max_reset_grace: Duration,
    /// Latest expiry an access key may be given, counted from the moment it is set.
    #[serde(with = "humantime_serde")]
    pub max_key_lifetime: Duration,
    /// How long a revoked lease is kept (for `GetLease`-style audits) before it is removed.
    #[serde(with = "humantime_serde")]
    pub lease_retention: Duration,
    /// How often each upstream's credential is checked again at its vendor, so that a
    /// credential revoked or rotated at the vendor shows as UNAUTHENTICATED before a caller
    /// trips over it.
    #[serde(with = "humantime_serde")]
    pub upstream_recheck_period: Duration,
    /// How often batched key-use times are written (`last_used_at`): a key use costs no write
    /// on the request path; tests shorten it instead of waiting.
    #[serde(with = "humantime_serde")]
    pub usage_flush_period: Duration,
    /// Where vendor connectors may connect: https only and public addresses only, unless
    /// relaxed here for tests and laptops.
    pub upstreams: UpstreamSettings,
    /// How the Envoy ext_authz `Check` treats sidecars' HTTP requests: its routes, header
    /// handling and token exchange.
    pub envoy: EnvoySettings,
}

/// The `[envoy]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoySettings {
    /// Remove the caller's `authorization` header before the request reaches the service
    /// (a route with an exchange replaces it instead), so the service never holds a
    /// credential it could replay.
    pub strip_authorization: bool,
    /// Lifetime of a token minted by exchange, never beyond the caller's remaining life.
    #[serde(with = "humantime_serde")]
    pub exchange_lifetime: Duration,
    /// The routes, first match (file order) wins; a request matching none is denied.
    pub routes: Vec<EnvoyRoute>,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        Self {
            strip_authorization: true,
            exchange_lifetime: Duration::from_secs(5 * 60),
            routes: Vec::new(),
        }
    }
}

/// One `[[envoy.routes]]` entry: which requests it covers and what their token must hold.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyRoute {
    /// The `host` header it covers, case-insensitive, any `:port` ignored.
    pub host: String,
    /// The path prefix it covers, at a segment boundary (`/` covers every path).
    pub path_prefix: String,
    /// The permission the caller's token must hold (after implication).
    pub permission: String,
    /// A project the caller's token must hold (or `*`), if any.
    #[serde(default)]
    pub project: Option<String>,
    /// Exchange the caller's token for one with this audience, if set.
    #[serde(default)]
    pub audience: Option<String>,
}

impl EnvoyRoute {
    /// The host it covers, without the `:port` the config may carry.
    pub fn host_name(&self) -> &str {
        self.host.split(':').next().unwrap_or("")
    }
}

/// The `[upstreams]` table: what destinations a vendor `base_url` may name, and how long a
/// vendor call may take.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Accept `http://` base URLs (credentials then cross the network in clear).
    pub allow_insecure_http: bool,
    /// Accept destinations that resolve to loopback, private, link-local or unspecified
    /// addresses (checked on the resolved address at connect time).
    pub allow_private_addresses: bool,
    /// Longest one vendor HTTP request (connect, send, read the answer) may take; an issue
    /// call that runs out leaves its lease to be reconciled by name. Tests shorten it.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            allow_insecure_http: false,
            allow_private_addresses: false,
            request_timeout: Duration::from_secs(15),
        }
    }
}

fn default_vendor_permissions() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let table = |pairs: [(&str, &str); 3]| {
        pairs
            .into_iter()
            .map(|(ours, theirs)| (ours.to_owned(), vec![theirs.to_owned()]))
            .collect::<BTreeMap<_, _>>()
    };
    BTreeMap::from([
        (
            Vendor::BitbucketServer.as_str().to_owned(),
            table([
                ("read", "REPO_READ"),
                ("write", "REPO_WRITE"),
                ("admin", "REPO_ADMIN"),
            ]),
        ),
        (
            Vendor::Launchdarkly.as_str().to_owned(),
            table([("read", "reader"), ("write", "writer"), ("admin", "admin")]),
        ),
        // A Foreman personal access token carries all of its user's rights and cannot be
        // narrowed, so only `admin` maps to it.
        (
            Vendor::Foreman.as_str().to_owned(),
            BTreeMap::from([("admin".to_owned(), vec!["*".to_owned()])]),
        ),
        (
            Vendor::Develocity.as_str().to_owned(),
            table([("read", "read"), ("write", "write"), ("admin", "admin")]),
        ),
        (
            Vendor::GitPassword.as_str().to_owned(),
            table([("read", "read"), ("write", "write"), ("admin", "admin")]),
        ),
    ])
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            policies: PathBuf::from("policies"),
            master_key_file: None,
            issuer: "token-broker".to_owned(),
            audience: "token-broker".to_owned(),
            audiences: Vec::new(),
            max_token_lifetime: Duration::from_secs(24 * 3600),
            default_token_lifetime: Duration::from_secs(2 * 3600),
            max_delegation_depth: 5,
            permissions: ["read", "write", "admin"].map(str::to_owned).to_vec(),
            implies: BTreeMap::from([
                ("admin".to_owned(), vec!["write".to_owned()]),
                ("write".to_owned(), vec!["read".to_owned()]),
            ]),
            signing_algorithm: "EdDSA".to_owned(),
            leeway: Duration::from_secs(30),
            max_keys_per_owner: 100,
            max_grant_items: 1000,
            max_request_bytes: 4 * 1024 * 1024,
            log_format: "text".to_owned(),
            vendor_permissions: default_vendor_permissions(),
            upstream_retry_attempts: 3,
            upstream_retry_backoff: Duration::from_millis(250),
            max_inline_policy_bytes: 16 * 1024,
            max_reset_grace: Duration::from_secs(30 * 24 * 3600),
            max_key_lifetime: Duration::from_secs(3650 * 24 * 3600),
            lease_retention: Duration::from_secs(7 * 24 * 3600),
            upstream_recheck_period: Duration::from_secs(3600),
            usage_flush_period: Duration::from_secs(5),
            upstreams: UpstreamSettings::default(),
            envoy: EnvoySettings::default(),
        }
    }
}

impl Config {
    /// Builds the config from an optional TOML file and an environment (any iterator of
    /// pairs, so tests feed a map), then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        let mut origin = String::from("defaults");
        let mut file_text = None;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file_origin = format!("file `{}`", path.display());
            // The file alone first, from its own text, so an error's span names the key (or
            // table) and the line as the file has them.
            let parse = |e: toml::de::Error| ConfigError::Parse {
                origin: file_origin.clone(),
                reason: located(&text, &e),
            };
            table = toml::from_str(&text).map_err(parse)?;
            toml::from_str::<Config>(&text).map_err(parse)?;
            origin = file_origin.clone();
            file_text = Some((file_origin, text));
        }
        let mut env_keys = Vec::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == MASTER_KEY_ENV || name == crate::clock::TEST_CLOCK_ENV {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let value = env_value(&value);
            // Each override alone over the defaults, so a refusal names its variable.
            toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())]))
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    origin: format!("environment `{name}`"),
                    reason: format!("key `{key}`: {}", e.message()),
                })?;
            table.insert(key, value);
            env_keys.push(name);
        }
        if !env_keys.is_empty() {
            origin = format!("{origin} and environment {}", env_keys.join(", "));
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin,
                    reason: e.message().to_owned(),
                })?;
        // A refused value is named where it was set: its variable, or its line in the file.
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason } => {
                // A key inside a table (`envoy.routes`) is set by the table's variable, and
                // found in the file by the table's name.
                let top = key.split('.').next().unwrap_or(key);
                let var = format!("{ENV_PREFIX}{}", top.to_ascii_uppercase());
                let line = file_text.as_ref().and_then(|(origin, text)| {
                    let doc = toml::de::DeTable::parse(text).ok()?;
                    let (name, _) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == top)?;
                    let line = text[..name.span().start].matches('\n').count() + 1;
                    Some((origin.clone(), line))
                });
                if env_keys.contains(&var) {
                    ConfigError::Parse {
                        origin: format!("environment `{var}`"),
                        reason: format!("key `{key}`: {reason}"),
                    }
                } else if let Some((origin, line)) = line {
                    ConfigError::Parse {
                        origin,
                        reason: format!("line {line}, key `{key}`: {reason}"),
                    }
                } else {
                    ConfigError::Invalid { key, reason }
                }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks the relations between values that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.leeway > Duration::from_secs(30) {
            return invalid("leeway", "must be at most 30s".into());
        }
        if self.upstream_recheck_period < Duration::from_secs(1) {
            return invalid(
                "upstream_recheck_period",
                "must be at least 1s (the default is 1h)".into(),
            );
        }
        if self.upstreams.request_timeout < Duration::from_secs(1)
            || self.upstreams.request_timeout > Duration::from_secs(60)
        {
            return invalid(
                "upstreams",
                "`request_timeout` must be between 1s and 60s (the default is 15s)".into(),
            );
        }
        if self.usage_flush_period.is_zero() {
            return invalid("usage_flush_period", "must be longer than 0s".into());
        }
        if self.max_token_lifetime.as_secs() == 0 {
            return invalid("max_token_lifetime", "must be at least 1s".into());
        }
        if self.default_token_lifetime.as_secs() == 0 {
            return invalid("default_token_lifetime", "must be at least 1s".into());
        }
        if self.permissions.is_empty() {
            return invalid("permissions", "must list at least one permission".into());
        }
        let known: BTreeSet<&str> = self.permissions.iter().map(String::as_str).collect();
        for (from, tos) in &self.implies {
            for p in std::iter::once(from).chain(tos) {
                if !known.contains(p.as_str()) {
                    return invalid("implies", format!("`{p}` is not in `permissions`"));
                }
            }
        }
        if self.issuer.is_empty() {
            return invalid("issuer", "must not be empty".into());
        }
        if self.audience.is_empty() {
            return invalid("audience", "must not be empty".into());
        }
        if !matches!(self.signing_algorithm.as_str(), "EdDSA" | "ES256") {
            return invalid(
                "signing_algorithm",
                format!(
                    "`{}` is not supported: use `EdDSA` or `ES256`",
                    self.signing_algorithm
                ),
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid(
                "log_format",
                format!(
                    "`{}` is not supported: use `text` or `json`",
                    self.log_format
                ),
            );
        }
        for (vendor, table) in &self.vendor_permissions {
            if !Vendor::all().any(|v| v.as_str() == vendor) {
                return invalid(
                    "vendor_permissions",
                    format!(
                        "vendor `{vendor}` is unknown: use one of `{}`",
                        Vendor::all()
                            .map(Vendor::as_str)
                            .collect::<Vec<_>>()
                            .join("`, `")
                    ),
                );
            }
            if let Some(p) = table.keys().find(|p| !known.contains(p.as_str())) {
                return invalid(
                    "vendor_permissions",
                    format!("`{vendor}` maps `{p}`, which is not in `permissions`"),
                );
            }
        }
        if self.upstream_retry_attempts == 0 {
            return invalid("upstream_retry_attempts", "must be at least 1".into());
        }
        if self.max_inline_policy_bytes == 0 {
            return invalid("max_inline_policy_bytes", "must be at least 1".into());
        }
        if self.max_key_lifetime.as_secs() == 0 {
            return invalid("max_key_lifetime", "must be at least 1s".into());
        }
        if self.max_grant_items == 0 {
            return invalid("max_grant_items", "must be at least 1".into());
        }
        self.validate_envoy(&known)
    }

    /// Checks `[envoy]`: a usable exchange lifetime and routes that can match and whose
    /// permission, project and audience the broker knows.
    fn validate_envoy(&self, permissions: &BTreeSet<&str>) -> Result<(), ConfigError> {
        let envoy = &self.envoy;
        if envoy.exchange_lifetime.as_secs() == 0
            || envoy.exchange_lifetime > self.max_token_lifetime
        {
            return Err(ConfigError::Invalid {
                key: "envoy.exchange_lifetime",
                reason: format!(
                    "must be between 1s and `max_token_lifetime` ({})",
                    humantime::format_duration(self.max_token_lifetime)
                ),
            });
        }
        for (i, route) in envoy.routes.iter().enumerate() {
            let refuse = |reason: String| {
                Err(ConfigError::Invalid {
                    key: "envoy.routes",
                    reason: format!(
                        "route {} (host `{}`, path_prefix `{}`): {reason}",
                        i + 1,
                        route.host,
                        route.path_prefix
                    ),
                })
            };
            let host = route.host_name();
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return refuse(
                    "`host` must be a host name such as `orders.mesh.local` (a `:port` is ignored)"
                        .into(),
                );
            }
            let prefix = &route.path_prefix;
            let dotted = prefix.split('/').any(|seg| seg == "." || seg == "..");
            if !prefix.starts_with('/')
                || prefix.contains(['?', '#', '%', ';', '\\'])
                || prefix.contains("//")
                || dotted
            {
                return refuse(
                    "`path_prefix` must start with `/` and hold no query, percent-encoding, `;`, backslash, empty or dot segment (`/` covers every path)"
                        .into(),
                );
            }
            // First match wins: a route an earlier one covers entirely would never apply, so
            // its (maybe stricter) requirement would silently not hold.
            if let Some(j) = envoy.routes[..i].iter().position(|earlier| {
                earlier.host_name().eq_ignore_ascii_case(host)
                    && crate::broker::under_prefix(prefix, &earlier.path_prefix)
            }) {
                return refuse(format!(
                    "route {} (path_prefix `{}`) comes first and covers every request of this one, which would never apply: put the more specific route first",
                    j + 1,
                    envoy.routes[j].path_prefix
                ));
            }
            if !permissions.contains(route.permission.as_str()) {
                return refuse(format!(
                    "permission `{}` is not in `permissions`",
                    route.permission
                ));
            }
            if let Some(project) = &route.project
                && project != crate::domain::grant::ALL_PROJECTS
                && !crate::domain::validate::is_project_id(project)
            {
                return refuse(format!(
                    "project `{project}` is malformed: use `[a-z0-9][a-z0-9._-]{{0,127}}` or `*`"
                ));
            }
            if route.audience.as_deref() == Some(self.audience.as_str()) {
                return refuse(format!(
                    "audience `{}` is the broker's own: an exchanged token must not be a credential for the broker itself",
                    self.audience
                ));
            }
            if let Some(audience) = &route.audience
                && !self.all_audiences().contains(audience)
            {
                return refuse(format!(
                    "audience `{audience}` is not an accepted audience: add it to `audiences`"
                ));
            }
        }
        Ok(())
    }

    /// The master key file in effect.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Every audience a token may be minted for, the broker's own first.
    pub fn all_audiences(&self) -> Vec<String> {
        let mut all = vec![self.audience.clone()];
        all.extend(
            self.audiences
                .iter()
                .filter(|a| **a != self.audience)
                .cloned(),
        );
        all
    }
}

/// Where in `text` a TOML error is, for a message: the line and the key or table at its
/// span (`line 3, key `upstreams.allow_http``), then what toml says was wrong.
fn located(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let at = toml::de::DeTable::parse(text)
        .ok()
        .and_then(|doc| key_at(doc.get_ref(), span.start))
        .map(|(path, is_table)| {
            if is_table {
                format!(", table `[{path}]`")
            } else {
                format!(", key `{path}`")
            }
        })
        .unwrap_or_default();
    format!("line {line}{at}: {}", e.message())
}

/// The dotted path of the innermost key whose name or value covers byte `at`, and whether
/// its value is a table.
fn key_at(table: &toml::de::DeTable<'_>, at: usize) -> Option<(String, bool)> {
    table.iter().find_map(|(key, value)| {
        let inner = value
            .get_ref()
            .as_table()
            .and_then(|t| key_at(t, at))
            .map(|(path, is_table)| (format!("{}.{path}", key.get_ref()), is_table));
        inner.or_else(|| {
            (key.span().contains(&at) || value.span().contains(&at)).then(|| {
                (
                    key.get_ref().to_string(),
                    value.get_ref().as_table().is_some(),
                )
            })
        })
    })
}

/// Reads an environment value as a TOML value when it is one (`5`, `true`, `["a"]`), else as
/// a string (`127.0.0.1:9000`, `24h`).
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.max_token_lifetime, Duration::from_secs(86400));
        assert_eq!(c.max_inline_policy_bytes, 16 * 1024);
        assert!(!c.upstreams.allow_insecure_http && !c.upstreams.allow_private_addresses);
    }

    #[test]
    fn upstream_table_from_env() {
        let env = vec![(
            "TOKEN_BROKER_UPSTREAMS".to_owned(),
            "{ allow_insecure_http = true, allow_private_addresses = true }".to_owned(),
        )];
        let c = Config::load(None, env).unwrap();
        assert!(c.upstreams.allow_insecure_http && c.upstreams.allow_private_addresses);
        assert_eq!(c.upstreams.request_timeout, Duration::from_secs(15));
    }

    #[test]
    fn upstream_request_timeout_is_bounded() {
        let with = |value: &str| {
            let env = vec![(
                "TOKEN_BROKER_UPSTREAMS".to_owned(),
                format!("{{ request_timeout = \"{value}\" }}"),
            )];
            Config::load(None, env)
        };
        assert_eq!(
            with("3s").unwrap().upstreams.request_timeout,
            Duration::from_secs(3)
        );
        for bad in ["500ms", "61s"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains("TOKEN_BROKER_UPSTREAMS") && err.contains("between 1s and 60s"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn env_overrides_and_names_bad_keys() {
        let env = vec![
            (
                "TOKEN_BROKER_MAX_DELEGATION_DEPTH".to_owned(),
                "2".to_owned(),
            ),
            (
                "TOKEN_BROKER_MAX_TOKEN_LIFETIME".to_owned(),
                "1h".to_owned(),
            ),
            ("TOKEN_BROKER_MASTER_KEY".to_owned(), "ignored".to_owned()),
            (
                "TOKEN_BROKER_TEST_CLOCK_FILE".to_owned(),
                "not a config key".to_owned(),
            ),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.max_delegation_depth, 2);
        assert_eq!(c.max_token_lifetime, Duration::from_secs(3600));

        let err = Config::load(None, vec![("TOKEN_BROKER_NOPE".to_owned(), "1".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("TOKEN_BROKER_NOPE"),
            "{err}"
        );
    }

    /// The message of loading `text` as the config file.
    fn file_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.toml"), "{err}");
        err
    }

    #[test]
    fn each_kind_of_file_error_names_its_key_and_line() {
        // (file, the key or table named, its line, words of the reason)
        let cases = [
            (
                "audiences = [\"a\"]\nhttp_listen = \"127.0.0.1:9090\"\n",
                "key `http_listen`",
                2,
                "unknown field `http_listen`",
            ),
            (
                "audiences = [\n  \"a\",\n]\n\n[rate_limit]\nper_second = 5\n",
                "table `[rate_limit]`",
                5,
                "unknown field `rate_limit`",
            ),
            (
                "listen = \"127.0.0.1:1\"\n[upstreams]\nallow_insecure_http = true\nallow_http = true\n",
                "key `upstreams.allow_http`",
                4,
                "unknown field `allow_http`",
            ),
            (
                "audiences = []\nmax_delegation_depth = \"x\"\n",
                "key `max_delegation_depth`",
                2,
                "invalid type",
            ),
            (
                "[upstreams]\nallow_insecure_http = \"yes\"\n",
                "key `upstreams.allow_insecure_http`",
                2,
                "invalid type",
            ),
            (
                "issuer = \"me\"\nleeway = \"soon\"\n",
                "key `leeway`",
                2,
                "",
            ),
            ("issuer = \"me\"\nlisten = = 1\n", "line 2", 2, ""),
        ];
        for (text, named, line, reason) in cases {
            let err = file_error(text);
            assert!(err.contains(named), "{text:?}: {err}");
            assert!(err.contains(&format!("line {line}")), "{text:?}: {err}");
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        // A value that parses but is refused names its key and line.
        let err = file_error("issuer = \"me\"\nleeway = \"60s\"\n");
        assert!(
            err.contains("line 2, key `leeway`") && err.contains("30s"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_environment_override_names_its_variable_and_key() {
        for (name, value, reason) in [
            ("TOKEN_BROKER_MAX_DELEGATION_DEPTH", "many", "invalid type"),
            ("TOKEN_BROKER_LEEWAY", "soon", ""),
            (
                "TOKEN_BROKER_HTTP_LISTEN",
                "127.0.0.1:9090",
                "unknown field",
            ),
            (
                "TOKEN_BROKER_UPSTREAMS",
                "{ allow_http = true }",
                "allow_http",
            ),
            ("TOKEN_BROKER_LEEWAY", "1h", "at most 30s"),
        ] {
            let err = Config::load(None, vec![(name.to_owned(), value.to_owned())])
                .unwrap_err()
                .to_string();
            let key = name.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
            assert!(
                err.contains(&format!("`{name}`")) && err.contains(&format!("key `{key}`")),
                "{err}"
            );
            assert!(err.contains(reason), "{err}");
        }
        // With a valid file, the override is still the one named.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, "issuer = \"me\"\n").unwrap();
        let err = Config::load(
            Some(&path),
            vec![("TOKEN_BROKER_LISTEN".to_owned(), "nowhere".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`TOKEN_BROKER_LISTEN`") && err.contains("key `listen`"),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, "leeway = \"60s\"\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("leeway"), "{err}");
        std::fs::write(&path, "max_delegation_depth = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broker.toml") && err.contains("max_delegation_depth"),
            "{err}"
        );
    }

    #[test]
    fn envoy_routes_are_checked_at_start() {
        let route = |extra: &str| {
            format!(
                "audiences = [\"orders\"]\n[[envoy.routes]]\nhost = \"orders.mesh.local\"\npath_prefix = \"/orders\"\npermission = \"read\"\n{extra}"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, route("project = \"alpha\"\naudience = \"orders\"\n")).unwrap();
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert!(c.envoy.strip_authorization);
        assert_eq!(c.envoy.exchange_lifetime, Duration::from_secs(300));
        assert_eq!(c.envoy.routes[0].audience.as_deref(), Some("orders"));
        // (route text, words of the refusal)
        let cases = [
            (
                route("audience = \"billing\"\n"),
                "audience `billing` is not an accepted audience",
            ),
            (
                route("project = \"Alpha!\"\n"),
                "project `Alpha!` is malformed",
            ),
            (
                route("").replace("\"read\"", "\"delete\""),
                "permission `delete` is not in `permissions`",
            ),
            (
                route("").replace("\"/orders\"", "\"orders\""),
                "`path_prefix` must start with `/`",
            ),
            (
                route("").replace("orders.mesh.local", "orders mesh"),
                "`host` must be a host name",
            ),
            (route("color = \"red\"\n"), "unknown field `color`"),
            (
                route("audience = \"token-broker\"\n"),
                "is the broker's own",
            ),
            (
                route("").replace("\"/orders\"", "\"/orders/%61\""),
                "percent-encoding",
            ),
            (
                route("").replace("\"/orders\"", "\"/\"")
                    + "[[envoy.routes]]\nhost = \"Orders.Mesh.Local:80\"\npath_prefix = \"/orders\"\npermission = \"admin\"\n",
                "route 1 (path_prefix `/`) comes first and covers every request of this one",
            ),
            (
                "[envoy]\nexchange_lifetime = \"0s\"\n".to_owned(),
                "envoy.exchange_lifetime",
            ),
        ];
        for (text, words) in cases {
            let err = file_error(&text);
            assert!(err.contains(words), "{text:?}: {err}");
        }
        assert!(
            file_error(&route("audience = \"billing\"\n"))
                .contains("route 1 (host `orders.mesh.local`, path_prefix `/orders`)")
        );
    }
}
