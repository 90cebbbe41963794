//! Upstream vendor connectors: one [`Connector`] trait, one module per vendor, each speaking the
//! vendor's real HTTP API through one shared [`HttpClient`].
//!
//! A connector turns an [`IssueRequest`] (already mapped to the vendor's permission names by the
//! broker) into a native vendor token, checks stored credentials with [`Connector::verify`] and
//! revokes what it issued. Vendor failures come back as a [`VendorError`] whose kind follows the
//! HTTP status, so the broker can map them to gRPC codes the same way as its own errors.
//!
//! Architecture invariant: nothing here knows Cedar or protobuf messages (the one generated type
//! is the API's [`Vendor`] enum, so the vendor list exists once), and no credential or token ever
//! reaches an error message or a `Debug` output. Vendor text reaches a message only scrubbed
//! and cut short, and [`VendorError::summary`] gives the words that may be stored: ours only.

use std::{collections::BTreeMap, fmt, time::Duration};

mod bitbucket;
mod destination;
mod develocity;
mod foreman;
mod git_password;
mod http;
mod launchdarkly;
mod scrub;

pub use destination::{check_base_url, non_public};
pub use http::{ClientBuildError, HttpClient, Pause};
use scrub::Scrubber;

/// The vendors the broker can mint native tokens at, so a stored upstream names its connector:
/// the API's `tokenbroker.v1.Vendor`, the one list of vendors.
pub use crate::pb::v1::Vendor;

impl Vendor {
    /// The vendor of a stored or requested number; `None` for UNSPECIFIED and for a number
    /// this build does not know.
    pub fn known(number: i32) -> Option<Self> {
        Vendor::try_from(number)
            .ok()
            .filter(|v| *v != Vendor::Unspecified)
    }

    /// Every vendor, in proto order (proto enum numbers are never reused, and start at 1
    /// without gaps after UNSPECIFIED, which `vendor_numbers_have_no_gaps` checks).
    pub fn all() -> impl Iterator<Item = Self> {
        (1..).map_while(Vendor::known)
    }

    /// Whether the vendor's tokens can be limited to some projects (LaunchDarkly's inline
    /// role, Develocity's `projectIds`). The others' tokens reach whatever their account
    /// reaches: the upstream's projects.
    pub fn scopes_projects(self) -> bool {
        matches!(self, Vendor::Launchdarkly | Vendor::Develocity)
    }

    /// Whether the vendor names its tokens and lists them, so a token minted by an issue call
    /// whose answer was lost can be found by its name ([`Connector::find_tokens`]) and
    /// revoked. Develocity's tokens have no name and no list call; a git password is not
    /// minted at all.
    pub fn lists_tokens(self) -> bool {
        matches!(
            self,
            Vendor::BitbucketServer | Vendor::Launchdarkly | Vendor::Foreman
        )
    }

    /// The stable lowercase name used in configuration, storage and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Unspecified => "unspecified",
            Vendor::BitbucketServer => "bitbucket_server",
            Vendor::Launchdarkly => "launchdarkly",
            Vendor::Foreman => "foreman",
            Vendor::Develocity => "develocity",
            Vendor::GitPassword => "git_password",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The secret half of an upstream account, kept apart so its `Debug` can redact it.
#[derive(Clone, Default)]
pub struct Credential {
    /// Login name, used for basic auth where the vendor takes one.
    pub username: String,
    /// Password for basic auth; never logged.
    pub password: String,
    /// API key or access token for header auth; never logged.
    pub token: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .finish()
    }
}

impl Credential {
    /// Every form of this credential's secrets, so vendor text can be scrubbed of them.
    pub(crate) fn scrubber(&self) -> Scrubber {
        Scrubber::new(self)
    }
}

/// A stored vendor account: where the vendor lives and how the broker logs in to it.
#[derive(Clone, Debug)]
pub struct UpstreamAccount {
    /// Which connector speaks to it.
    pub vendor: Vendor,
    /// Server root, e.g. `https://bitbucket.example.com`, or for a git password upstream the
    /// repository URL, e.g. `https://git.example.com/team/repo.git`; a trailing `/` is ignored.
    pub base_url: String,
    /// How the broker authenticates to the vendor.
    pub credential: Credential,
    /// Vendor-specific settings, e.g. `user_slug` (Bitbucket) or `user_id` (Foreman).
    pub options: BTreeMap<String, String>,
}

/// What the broker wants minted at the vendor, already mapped to the vendor's vocabulary.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// Token name shown in the vendor's UI, so an operator can trace it back to the lease.
    pub name: String,
    /// Vendor permission names (e.g. `REPO_READ`, LaunchDarkly `reader`), never broker names.
    pub vendor_permissions: Vec<String>,
    /// Vendor project identifiers the token is limited to; `*` means every project.
    pub project_ids: Vec<String>,
    /// Unix seconds: the exact end of the lease.
    pub expires_at: i64,
    /// Unix seconds on the broker's clock when the request was made: what the remaining
    /// lifetime is counted from, so a connector never reads the wall clock itself.
    pub now: i64,
}

/// A native token minted at the vendor; `Debug` redacts the token itself.
#[derive(Clone)]
pub struct IssuedToken {
    /// The secret the caller presents to the vendor.
    pub token: String,
    /// The vendor's id for the token, needed to revoke it; empty when it cannot be revoked.
    pub vendor_token_id: String,
    /// Unix seconds at which the vendor itself expires the token, when it does.
    pub vendor_expires_at: Option<i64>,
    /// Whether [`Connector::revoke`] can end the token before it expires.
    pub revocable: bool,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &redacted(&self.token))
            .field("vendor_token_id", &self.vendor_token_id)
            .field("vendor_expires_at", &self.vendor_expires_at)
            .field("revocable", &self.revocable)
            .finish()
    }
}

/// Who the vendor says the stored credential belongs to, recorded with the upstream.
#[derive(Clone, Debug)]
pub struct VerifiedAccount {
    /// The host the credential was checked against.
    pub repo_host: String,
    /// The vendor-side user the credential acts as.
    pub repo_user: String,
}

impl VerifiedAccount {
    /// The account as its login names it: the base URL's host and the credential's user.
    pub(crate) fn of_login(account: &UpstreamAccount) -> Self {
        Self {
            repo_host: account.base_url.trim_end_matches('/').to_owned(),
            repo_user: account.credential.username.clone(),
        }
    }
}

/// Why a vendor call failed, by kind, so the broker can map it like its own errors.
///
/// A `status` of 0 means the connector refused the request before sending it. Messages name
/// the vendor, the HTTP status and the vendor's own error text, scrubbed of every form of the
/// credential; [`VendorError::summary`] leaves the vendor's text out.
#[derive(Debug, Clone)]
pub enum VendorError {
    /// The vendor rejected the stored credential (HTTP 401).
    Unauthenticated {
        /// Vendor that answered.
        vendor: Vendor,
        /// HTTP status it answered with.
        status: u16,
        /// The vendor's error text.
        message: String,
    },
    /// The credential is valid but may not do this (HTTP 403).
    PermissionDenied {
        /// Vendor that answered.
        vendor: Vendor,
        /// HTTP status it answered with.
        status: u16,
        /// The vendor's error text.
        message: String,
    },
    /// The user, token or resource does not exist at the vendor (HTTP 404).
    NotFound {
        /// Vendor that answered.
        vendor: Vendor,
        /// HTTP status it answered with.
        status: u16,
        /// The vendor's error text.
        message: String,
    },
    /// The request was malformed or over a vendor limit (HTTP 400 or 422), refused locally
    /// (status 0), or answered 2xx with something the request cannot use (e.g. a web page
    /// where a git repository was expected).
    InvalidArgument {
        /// Vendor that answered; 0 when the connector refused before sending.
        vendor: Vendor,
        /// HTTP status it answered with.
        status: u16,
        /// The vendor's error text, or what the connector found wrong.
        message: String,
    },
    /// The vendor's state conflicts with the request (HTTP 409).
    Conflict {
        /// Vendor that answered.
        vendor: Vendor,
        /// HTTP status it answered with.
        status: u16,
        /// The vendor's error text.
        message: String,
    },
    /// The vendor kept answering HTTP 429 after the bounded retries.
    RateLimited {
        /// Vendor that answered.
        vendor: Vendor,
        /// How long the vendor asked to wait, from `Retry-After`.
        retry_after: Option<Duration>,
        /// The vendor's error text.
        message: String,
    },
    /// The vendor answered but kept failing (5xx) or answered something unusable.
    Unavailable {
        /// Vendor that failed.
        vendor: Vendor,
        /// Last HTTP status, if any answer came back.
        status: Option<u16>,
        /// The vendor's error text, or what was wrong with its answer.
        message: String,
    },
    /// No HTTP answer came back: refused, reset, timed out, not HTTP. One kind for all, so the
    /// message cannot tell an open port from a closed one; the cause is logged.
    Unreachable {
        /// Vendor that was called.
        vendor: Vendor,
        /// `host:port` of the base URL.
        target: String,
    },
    /// The destination breaks the `[upstreams]` rules (plain http, or a non-public address,
    /// literal or resolved); nothing was sent.
    Refused {
        /// Vendor that was to be called.
        vendor: Vendor,
        /// `host:port` of the base URL.
        target: String,
        /// Which rule, and the config key that would allow it.
        reason: String,
    },
}

impl VendorError {
    /// Our own words about the failure (vendor, HTTP status, kind), never the vendor's text:
    /// the only form of a vendor failure that may be stored.
    pub fn summary(&self) -> String {
        match self {
            VendorError::Unauthenticated { vendor, status, .. } => {
                format!(
                    "{vendor} rejected the stored credential{}",
                    status_part(*status)
                )
            }
            VendorError::PermissionDenied { vendor, status, .. } => {
                format!("{vendor} refused the request{}", status_part(*status))
            }
            VendorError::NotFound { vendor, status, .. } => {
                format!("{vendor} found no such resource{}", status_part(*status))
            }
            // A 2xx answer the connector cannot use: the vendor rejected nothing.
            VendorError::InvalidArgument {
                vendor,
                status: status @ 200..=299,
                ..
            } => format!("{vendor} answered (HTTP {status}) but not as the request expects"),
            VendorError::InvalidArgument { vendor, status, .. } => {
                format!("{vendor} rejected the request{}", status_part(*status))
            }
            VendorError::Conflict { vendor, status, .. } => {
                format!("{vendor} reported a conflict{}", status_part(*status))
            }
            VendorError::RateLimited {
                vendor,
                retry_after,
                ..
            } => format!(
                "{vendor} is rate limiting (HTTP 429){}",
                retry_part(*retry_after)
            ),
            VendorError::Unavailable { vendor, status, .. } => format!(
                "{vendor} is unavailable{}",
                status.map(status_part).unwrap_or_default()
            ),
            VendorError::Unreachable { vendor, target } => format!(
                "vendor `{vendor}` at `{target}` cannot be reached: check the upstream's base url and that the vendor is up, then retry"
            ),
            VendorError::Refused { vendor, target, .. } => {
                format!("vendor `{vendor}` at `{target}` is not an allowed destination")
            }
        }
    }

    /// The detail after the summary: the vendor's scrubbed text, our reason, or nothing.
    fn detail(&self) -> Option<&str> {
        match self {
            VendorError::Unauthenticated { message, .. }
            | VendorError::PermissionDenied { message, .. }
            | VendorError::NotFound { message, .. }
            | VendorError::InvalidArgument { message, .. }
            | VendorError::Conflict { message, .. }
            | VendorError::RateLimited { message, .. }
            | VendorError::Unavailable { message, .. } => Some(message),
            VendorError::Refused { reason, .. } => Some(reason),
            VendorError::Unreachable { .. } => None,
        }
    }
}

impl fmt::Display for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        match self.detail() {
            Some(detail) if !detail.is_empty() => write!(f, ": {detail}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for VendorError {}

impl VendorError {
    /// Whether the vendor may have carried out the request although the broker got no usable
    /// answer, so a token-creating call may have minted a token nobody holds.
    ///
    /// Yes for [`VendorError::Unreachable`] (no answer: a timeout or a connection reset after
    /// sending; a connection that was refused never sent anything, but the kind does not tell
    /// it apart, and looking costs one list call) and [`VendorError::Unavailable`] (a 5xx, which
    /// may come after the vendor did the work, or a 2xx the broker could not read). No for
    /// every 4xx (the vendor refused: nothing was made) and for [`VendorError::Refused`] and a
    /// local refusal (nothing was sent).
    pub fn may_have_acted(&self) -> bool {
        matches!(
            self,
            VendorError::Unreachable { .. } | VendorError::Unavailable { .. }
        )
    }

    /// A request the connector refuses before sending, naming what was wrong.
    pub(crate) fn local(vendor: Vendor, message: impl Into<String>) -> Self {
        VendorError::InvalidArgument {
            vendor,
            status: 0,
            message: message.into(),
        }
    }
}

fn status_part(status: u16) -> String {
    if status == 0 {
        " before any call".to_owned()
    } else {
        format!(" (HTTP {status})")
    }
}

fn retry_part(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(", retry after {}s", d.as_secs().max(1))
    })
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "\"\""
    } else {
        "\"[redacted]\""
    }
}

/// Speaks one vendor's token API, so the broker can treat every vendor alike.
#[tonic::async_trait]
pub trait Connector: Send + Sync {
    /// checks the credential against the vendor before it is stored
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError>;
    /// asks the vendor for a native token scoped to the request
    async fn issue(
        &self,
        account: &UpstreamAccount,
        request: &IssueRequest,
    ) -> Result<IssuedToken, VendorError>;
    /// revokes a token at the vendor; a 404 counts as done (Ok)
    async fn revoke(
        &self,
        account: &UpstreamAccount,
        vendor_token_id: &str,
    ) -> Result<(), VendorError>;
    /// finds the vendor's ids of the account's tokens named exactly `name` (empty: none), so a
    /// token minted by an issue call whose answer was lost can be revoked; `None` when the
    /// vendor has no way to list its tokens by name (see [`Vendor::lists_tokens`])
    async fn find_tokens(
        &self,
        _account: &UpstreamAccount,
        _name: &str,
    ) -> Result<Option<Vec<String>>, VendorError> {
        Ok(None)
    }
}

/// Most pages a token search reads before giving up: with the hundred tokens a page holds,
/// more than any account the broker mints for should have. Past it the search fails (and the
/// lease worker retries later) rather than say the token is not there.
pub(crate) const MAX_SEARCH_PAGES: usize = 50;
/// Tokens asked for per page of a token search.
pub(crate) const SEARCH_PAGE_SIZE: usize = 100;

/// The failure of a token search that read [`MAX_SEARCH_PAGES`] pages without reaching the end.
pub(crate) fn search_too_long(vendor: Vendor) -> VendorError {
    VendorError::Unavailable {
        vendor,
        status: None,
        message: format!(
            "the token list is longer than {MAX_SEARCH_PAGES} pages of {SEARCH_PAGE_SIZE}: delete unused tokens at the vendor"
        ),
    }
}

/// The connector for `vendor`, sharing `http` (and so its connection pool and retry policy).
/// UNSPECIFIED names no vendor ([`Vendor::known`] never yields it): its connector refuses
/// every call before sending.
pub fn connector(vendor: Vendor, http: HttpClient) -> Box<dyn Connector> {
    match vendor {
        Vendor::Unspecified => Box::new(Unspecified),
        Vendor::BitbucketServer => Box::new(bitbucket::Bitbucket::new(http)),
        Vendor::Launchdarkly => Box::new(launchdarkly::LaunchDarkly::new(http)),
        Vendor::Foreman => Box::new(foreman::Foreman::new(http)),
        Vendor::Develocity => Box::new(develocity::Develocity::new(http)),
        Vendor::GitPassword => Box::new(git_password::GitPassword::new(http)),
    }
}

/// The connector of [`Vendor::Unspecified`]: refuses every call, naming what is missing.
struct Unspecified;

impl Unspecified {
    fn refusal() -> VendorError {
        VendorError::local(
            Vendor::Unspecified,
            "the upstream names no vendor: set `vendor` to a known vendor",
        )
    }
}

#[tonic::async_trait]
impl Connector for Unspecified {
    async fn verify(&self, _: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        Err(Self::refusal())
    }

    async fn issue(
        &self,
        _: &UpstreamAccount,
        _: &IssueRequest,
    ) -> Result<IssuedToken, VendorError> {
        Err(Self::refusal())
    }

    async fn revoke(&self, _: &UpstreamAccount, _: &str) -> Result<(), VendorError> {
        Err(Self::refusal())
    }
}

// === shared helpers for the vendor modules ===

/// Seconds left of the request's lease at its `now`, refusing a lease that has already ended.
pub(crate) fn seconds_left(vendor: Vendor, request: &IssueRequest) -> Result<i64, VendorError> {
    let expires_at = request.expires_at;
    let left = expires_at.saturating_sub(request.now);
    if left <= 0 {
        return Err(VendorError::local(
            vendor,
            format!("the lease ended at `{expires_at}`: ask for an expiry in the future"),
        ));
    }
    Ok(left)
}

/// A required entry of `account.options`, named in the error when missing.
pub(crate) fn required_option<'a>(
    account: &'a UpstreamAccount,
    key: &str,
) -> Result<&'a str, VendorError> {
    match account.options.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(VendorError::local(
            account.vendor,
            format!("the upstream account needs the option `{key}`"),
        )),
    }
}

/// Refuses a scope the vendor cannot express, rather than silently minting a wider token.
///
/// Accepts an empty list or exactly `*`.
pub(crate) fn only_unscoped(
    vendor: Vendor,
    what: &str,
    values: &[String],
) -> Result<(), VendorError> {
    match values {
        [] => Ok(()),
        [one] if one == "*" => Ok(()),
        _ => Err(VendorError::local(
            vendor,
            format!(
                "{vendor} tokens cannot be limited by {what} `{}`: ask for `*` or none",
                values.join(",")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let credential = Credential {
            username: "bob".into(),
            password: "hunter2".into(),
            token: "tok-123".into(),
        };
        let issued = IssuedToken {
            token: "native-secret".into(),
            vendor_token_id: "7".into(),
            vendor_expires_at: None,
            revocable: true,
        };
        let text = format!("{credential:?} {issued:?}");
        assert!(!text.contains("hunter2") && !text.contains("tok-123"));
        assert!(!text.contains("native-secret"));
        assert!(text.contains("bob") && text.contains("\"7\""));
    }

    /// `Vendor::all` stops at the first unknown number, so a gap would hide later vendors.
    #[test]
    fn vendor_numbers_have_no_gaps() {
        let all: Vec<Vendor> = Vendor::all().collect();
        let numbered: Vec<Vendor> = (1..1000).filter_map(Vendor::known).collect();
        assert_eq!(all, numbered);
        assert!(all.len() >= 5, "{all:?}");
        assert_eq!(Vendor::known(0), None);
        for v in all {
            assert_eq!(Vendor::known(v as i32), Some(v));
        }
    }

    #[test]
    fn display_names_vendor_and_status() {
        let err = VendorError::Unauthenticated {
            vendor: Vendor::Foreman,
            status: 401,
            message: "unable to authenticate user admin".into(),
        };
        assert_eq!(
            err.to_string(),
            "foreman rejected the stored credential (HTTP 401): unable to authenticate user admin"
        );
        assert_eq!(
            err.summary(),
            "foreman rejected the stored credential (HTTP 401)"
        );
        let down = VendorError::Unreachable {
            vendor: Vendor::Develocity,
            target: "h:443".into(),
        };
        assert_eq!(
            down.to_string(),
            "vendor `develocity` at `h:443` cannot be reached: check the upstream's base url and that the vendor is up, then retry"
        );
        assert_eq!(down.to_string(), down.summary());
    }

    #[test]
    fn summary_never_carries_vendor_text() {
        let echo = "echoed: Basic YWRtaW46c2VjcmV0";
        let vendor = Vendor::Launchdarkly;
        let errors = [
            VendorError::Unauthenticated {
                vendor,
                status: 401,
                message: echo.into(),
            },
            VendorError::PermissionDenied {
                vendor,
                status: 403,
                message: echo.into(),
            },
            VendorError::NotFound {
                vendor,
                status: 404,
                message: echo.into(),
            },
            VendorError::InvalidArgument {
                vendor,
                status: 400,
                message: echo.into(),
            },
            VendorError::Conflict {
                vendor,
                status: 409,
                message: echo.into(),
            },
            VendorError::RateLimited {
                vendor,
                retry_after: None,
                message: echo.into(),
            },
            VendorError::Unavailable {
                vendor,
                status: Some(502),
                message: echo.into(),
            },
        ];
        for e in errors {
            assert!(e.to_string().contains(echo), "{e}");
            assert!(!e.summary().contains("echoed"), "{}", e.summary());
            assert!(e.summary().contains("launchdarkly"), "{}", e.summary());
        }
    }
}
