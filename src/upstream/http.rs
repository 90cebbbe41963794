//! The one HTTP client every connector shares: destination rules, timeouts, bounded retries,
//! a bounded body and the mapping of a vendor's answer to a [`VendorError`].
//!
//! Retried: HTTP 429 (waiting `Retry-After` when it is within the cap), 502/503/504, any other
//! 5xx on GET and DELETE, connect failures (the request never left), and timeouts on GET and
//! DELETE. A POST or PUT that timed out or got a plain 500 is not repeated, because the vendor
//! may have minted a token already and a retry would mint a second one.
//!
//! A vendor that cannot be reached is one [`VendorError::Unreachable`], whatever the socket
//! said: a caller must not learn from the message whether a port is closed, refused, reset,
//! not speaking HTTP or silent. The cause goes to the log.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    Method, StatusCode, Url,
    header::{CONTENT_TYPE, RETRY_AFTER},
};

use super::{
    Vendor, VendorError,
    destination::{self, GuardedResolver, ResolvedPrivate},
    scrub::Scrubber,
};
use crate::config::UpstreamSettings;

/// Longest a single connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the client waits between two attempts, `Retry-After` included.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Longest vendor error text kept in a message.
const MAX_MESSAGE_CHARS: usize = 300;
/// Largest vendor body read; every documented answer is a few KiB at most.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why the shared HTTP client could not be built, so start-up can report it and stop.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the upstream http client: {0}")]
pub struct ClientBuildError(String);

/// How the client waits between two attempts: tokio's timer unless a test replaces it (see
/// [`HttpClient::with_pause`]), so retry tests check the wait without spending it.
pub type Pause = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One pooled HTTP client with the retry policy and the destination rules, built once at
/// start-up and shared (cloned) by every connector, so vendor connections are reused.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    max_attempts: u32,
    base_backoff: Duration,
    rules: UpstreamSettings,
    pause: Option<Pause>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_attempts", &self.max_attempts)
            .field("base_backoff", &self.base_backoff)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// A successful (2xx) vendor answer.
pub(crate) struct Reply {
    /// The HTTP status, named in errors about the body.
    pub status: u16,
    /// The `Content-Type` header as sent (empty when absent or not text), for a connector
    /// that must tell what kind of server answered (a git host from a web page).
    pub content_type: String,
    /// The raw body.
    pub body: Bytes,
}

impl Reply {
    /// Decodes a JSON answer; a body that doesn't fit means the vendor is not what we expect.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        vendor: Vendor,
    ) -> Result<T, VendorError> {
        // serde's own message quotes the body, which is vendor text: give the position only.
        serde_json::from_slice(&self.body).map_err(|e| VendorError::Unavailable {
            vendor,
            status: Some(self.status),
            message: format!(
                "unexpected answer from the vendor: not the documented JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    /// The id of a token the vendor just created (`field` names it in the error): a vendor
    /// that answers 2xx without one is not behaving as documented.
    pub(crate) fn created_id(
        &self,
        vendor: Vendor,
        id: &serde_json::Value,
        field: &str,
    ) -> Result<String, VendorError> {
        id_text(id).ok_or_else(|| VendorError::Unavailable {
            vendor,
            status: Some(self.status),
            message: format!("the created token has no `{field}`"),
        })
    }

    /// The id of a token in a list answer; like [`Self::created_id`], a token without one
    /// means the vendor is not behaving as documented.
    pub(crate) fn listed_id(
        &self,
        vendor: Vendor,
        id: &serde_json::Value,
        field: &str,
    ) -> Result<String, VendorError> {
        id_text(id).ok_or_else(|| VendorError::Unavailable {
            vendor,
            status: Some(self.status),
            message: format!("a listed token has no `{field}`"),
        })
    }
}

/// A vendor id that may come as a JSON string or number.
fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl HttpClient {
    /// The shared client: `max_attempts` counts the first attempt (0 is read as 1), the
    /// backoff doubles from `base_backoff`, and `rules` say where it may connect.
    pub fn new(
        max_attempts: u32,
        base_backoff: Duration,
        rules: UpstreamSettings,
    ) -> Result<Self, ClientBuildError> {
        // TLS is rustls with the ring provider (reqwest's `rustls-tls-webpki-roots`): reqwest
        // picks ring itself unless the process installed another default provider.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(rules.request_timeout)
            // A redirect could carry the credential to another host, and would skip the
            // destination checks; vendors' APIs don't redirect.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the vendor's host itself, out of reach of the resolver
            // below, so the destination rules could not hold.
            .no_proxy()
            .https_only(!rules.allow_insecure_http)
            .user_agent(concat!("token-broker/", env!("CARGO_PKG_VERSION")));
        if !rules.allow_private_addresses {
            builder = builder.dns_resolver(std::sync::Arc::new(GuardedResolver));
        }
        let client = builder
            .build()
            .map_err(|e| ClientBuildError(error_chain(&e)))?;
        Ok(Self {
            client,
            max_attempts: max_attempts.max(1),
            base_backoff,
            rules,
            pause: None,
        })
    }

    /// The same client waiting between attempts with `pause` instead of tokio's timer: a
    /// test records the waits (`Retry-After`, backoff) and returns at once.
    pub fn with_pause(mut self, pause: Pause) -> Self {
        self.pause = Some(pause);
        self
    }

    /// Waits `wait` before the next attempt.
    async fn pause(&self, wait: Duration) {
        match &self.pause {
            Some(pause) => pause(wait).await,
            None => tokio::time::sleep(wait).await,
        }
    }

    /// Starts a request; the connector adds auth, body and query, then calls [`Self::send`].
    pub(crate) fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a revocation: a token the vendor no longer knows (404) is as revoked as it gets.
    pub(crate) async fn send_revoke(
        &self,
        vendor: Vendor,
        scrubber: &Scrubber,
        builder: reqwest::RequestBuilder,
    ) -> Result<(), VendorError> {
        match self.send(vendor, scrubber, builder).await {
            Ok(_) | Err(VendorError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends with the retry policy; any non-2xx answer becomes a [`VendorError`] whose message
    /// is the vendor's text with every form of the account's secrets scrubbed out.
    pub(crate) async fn send(
        &self,
        vendor: Vendor,
        scrubber: &Scrubber,
        builder: reqwest::RequestBuilder,
    ) -> Result<Reply, VendorError> {
        let request = builder.build().map_err(|_| {
            VendorError::local(
                vendor,
                "the request cannot be built from the stored account: check the credential and options for characters HTTP does not allow",
            )
        })?;
        let target = target_of(request.url());
        // An IP literal never reaches the resolver: check it (and the scheme) here.
        destination::check_url(request.url(), &self.rules).map_err(|reason| {
            VendorError::Refused {
                vendor,
                target: target.clone(),
                reason,
            }
        })?;
        let idempotent = matches!(*request.method(), Method::GET | Method::DELETE);
        let mut attempt = 1;
        loop {
            let Some(this_try) = request.try_clone() else {
                return Err(VendorError::local(
                    vendor,
                    "the request body cannot be replayed",
                ));
            };
            let last = attempt >= self.max_attempts;
            let response = match self.client.execute(this_try).await {
                Ok(response) => response,
                Err(e) => {
                    if let Some(refused) = source_of::<ResolvedPrivate>(&e) {
                        return Err(VendorError::Refused {
                            vendor,
                            target,
                            reason: refused.to_string(),
                        });
                    }
                    let retry = e.is_connect() || (idempotent && e.is_timeout());
                    if retry && !last {
                        self.pause(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(unreachable(vendor, target, scrubber, &e));
                }
            };
            let status = response.status();
            let retry_after = retry_after(&response);
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = match read_body(response).await {
                Ok(body) => body,
                Err(BodyError::TooLarge) => {
                    return Err(VendorError::Unavailable {
                        vendor,
                        status: Some(status.as_u16()),
                        message: format!(
                            "the answer is larger than {} MiB, more than any documented answer",
                            MAX_BODY_BYTES / (1024 * 1024)
                        ),
                    });
                }
                Err(BodyError::Transport(e)) => {
                    return Err(unreachable(vendor, target, scrubber, &e));
                }
            };
            if status.is_success() {
                return Ok(Reply {
                    status: status.as_u16(),
                    content_type,
                    body,
                });
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || matches!(status.as_u16(), 502..=504)
                || (idempotent && status.is_server_error());
            if retryable && !last {
                // A Retry-After beyond the cap means "not soon": give up now and say so.
                let wait = match retry_after {
                    Some(wait) if wait > MAX_WAIT => None,
                    Some(wait) => Some(wait),
                    None => Some(self.backoff(attempt)),
                };
                if let Some(wait) = wait {
                    self.pause(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            // Scrub before cutting: a cut through a secret would leave most of it behind.
            let message = truncate(&scrubber.scrub(&vendor_message(status, &body)));
            return Err(status_error(vendor, status, retry_after, message));
        }
    }

    /// Exponential backoff with up to 50% jitter, so retrying brokers don't stampede a vendor.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let millis = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        let jitter = if millis >= 2 {
            rand::random_range(0..=millis / 2)
        } else {
            0
        };
        Duration::from_millis(millis.saturating_add(jitter)).min(MAX_WAIT)
    }
}

/// Joins `segments` onto the server root, percent-encoding each, ignoring a trailing `/`.
pub(crate) fn join_url(vendor: Vendor, base: &str, segments: &[&str]) -> Result<Url, VendorError> {
    let bad = |why: &str| VendorError::local(vendor, format!("base url `{base}` {why}"));
    let mut url = Url::parse(base.trim_end_matches('/')).map_err(|_| bad("is not a url"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with `https://` or `http://`"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry a query or fragment"));
    }
    url.path_segments_mut()
        .map_err(|()| bad("cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `host:port` of a URL, the way messages name a vendor's address.
fn target_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The first error of type `T` among `e`'s sources, e.g. the resolver's refusal inside a
/// connect error.
fn source_of<'e, T: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut cause = Some(e);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        cause = current.source();
    }
    None
}

/// The one error for a vendor that cannot be reached; the socket error goes to the log only.
fn unreachable(
    vendor: Vendor,
    target: String,
    scrubber: &Scrubber,
    e: &reqwest::Error,
) -> VendorError {
    tracing::warn!(
        vendor = %vendor,
        target = %target,
        timeout = e.is_timeout(),
        cause = %scrubber.scrub(&error_chain(e)),
        "vendor cannot be reached"
    );
    VendorError::Unreachable { vendor, target }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body, read chunk by chunk up to [`MAX_BODY_BYTES`]: a vendor (or something posing as
/// one) cannot make the broker buffer an unbounded answer.
async fn read_body(mut response: reqwest::Response) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these vendors).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn status_error(
    vendor: Vendor,
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> VendorError {
    let code = status.as_u16();
    match code {
        401 => VendorError::Unauthenticated {
            vendor,
            status: code,
            message,
        },
        403 => VendorError::PermissionDenied {
            vendor,
            status: code,
            message,
        },
        404 => VendorError::NotFound {
            vendor,
            status: code,
            message,
        },
        409 => VendorError::Conflict {
            vendor,
            status: code,
            message,
        },
        429 => VendorError::RateLimited {
            vendor,
            retry_after,
            message,
        },
        400..=499 => VendorError::InvalidArgument {
            vendor,
            status: code,
            message,
        },
        _ => VendorError::Unavailable {
            vendor,
            status: Some(code),
            message,
        },
    }
}

/// The vendor's own error text, from whichever documented error shape the body has:
/// Bitbucket `{"errors":[{"message"}]}`, LaunchDarkly `{"code","message"}`, Foreman
/// `{"error":{"message"|"full_messages"}}`, problem+json `{"detail"|"title"}`, else plain text.
fn vendor_message(status: StatusCode, body: &[u8]) -> String {
    let fallback = || {
        status
            .canonical_reason()
            .unwrap_or("no error text")
            .to_lowercase()
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => json_message(&json).unwrap_or_else(fallback),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() || text.starts_with('<') {
                fallback()
            } else {
                text.to_owned()
            }
        }
    }
}

fn json_message(json: &serde_json::Value) -> Option<String> {
    let str_at = |pointer: &str| {
        json.pointer(pointer)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let join = |list: &Vec<serde_json::Value>, field: Option<&str>| {
        let parts: Vec<&str> = list
            .iter()
            .filter_map(|item| match field {
                Some(field) => item.get(field).and_then(|m| m.as_str()),
                None => item.as_str(),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    };
    if let Some(errors) = json.get("errors").and_then(|e| e.as_array())
        && let Some(text) = join(errors, Some("message"))
    {
        return Some(text);
    }
    if let Some(text) = str_at("/message").or_else(|| str_at("/error/message")) {
        return Some(text);
    }
    if let Some(list) = json
        .pointer("/error/full_messages")
        .and_then(|e| e.as_array())
        && let Some(text) = join(list, None)
    {
        return Some(text);
    }
    str_at("/detail")
        .or_else(|| str_at("/title"))
        .or_else(|| str_at("/error"))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_each_vendor_shape() {
        let cases: [(&str, &str); 5] = [
            (r#"{"errors":[{"message":"too many"}]}"#, "too many"),
            (r#"{"code":"forbidden","message":"denied"}"#, "denied"),
            (r#"{"error":{"message":"no user"}}"#, "no user"),
            (
                r#"{"error":{"full_messages":["Name can't be blank"]}}"#,
                "Name can't be blank",
            ),
            (r#"{"title":"Forbidden","detail":"not yours"}"#, "not yours"),
        ];
        for (body, want) in cases {
            assert_eq!(
                vendor_message(StatusCode::BAD_REQUEST, body.as_bytes()),
                want
            );
        }
        assert_eq!(
            vendor_message(StatusCode::SERVICE_UNAVAILABLE, b"<html>"),
            "service unavailable"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn join_url_trims_and_encodes() {
        let url = join_url(
            Vendor::BitbucketServer,
            "https://h.example/bb/",
            &["rest", "users", "a b"],
        );
        assert_eq!(
            url.map(|u| u.to_string()).ok().as_deref(),
            Some("https://h.example/bb/rest/users/a%20b")
        );
        assert!(join_url(Vendor::Foreman, "ftp://x", &[]).is_err());
    }
}
