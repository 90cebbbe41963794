//! Foreman personal access tokens: `/api/users/:user_id/personal_access_tokens[/:id]`.
//!
//! Foreman takes an exact `expires_at`, so the token ends with its lease. A personal access
//! token acts with all of its user's rights: a request naming permissions or projects is
//! refused rather than minted wider.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    Connector, IssueRequest, IssuedToken, MAX_SEARCH_PAGES, SEARCH_PAGE_SIZE, UpstreamAccount,
    Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
    only_unscoped, required_option, search_too_long, seconds_left,
};

const VENDOR: Vendor = Vendor::Foreman;

/// Connector for Foreman.
pub(super) struct Foreman {
    http: HttpClient,
}

/// The fields of Foreman's create answer that the broker keeps.
#[derive(Deserialize)]
struct PersonalAccessToken {
    id: serde_json::Value,
    token_value: String,
}

/// One page of the list call.
#[derive(Deserialize)]
struct TokenPage {
    #[serde(default)]
    results: Vec<ListedToken>,
    subtotal: Option<u64>,
}

/// A token as the list call shows it (no secret).
#[derive(Deserialize)]
struct ListedToken {
    id: serde_json::Value,
    #[serde(default)]
    name: String,
}

impl Foreman {
    pub(super) fn new(http: HttpClient) -> Self {
        Self { http }
    }

    /// Basic auth against `personal_access_tokens[/{id}]` of the configured `user_id`.
    fn authed(
        &self,
        account: &UpstreamAccount,
        method: Method,
        token_id: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, VendorError> {
        let user_id = required_option(account, "user_id")?;
        let mut segments = vec!["api", "users", user_id, "personal_access_tokens"];
        segments.extend(token_id);
        let url = join_url(VENDOR, &account.base_url, &segments)?;
        let c = &account.credential;
        Ok(self
            .http
            .request(method, url)
            .basic_auth(&c.username, Some(&c.password)))
    }
}

/// RFC 3339 in UTC, whole seconds, as Foreman's `DateTime` validation accepts.
fn rfc3339(unix: i64) -> Result<String, VendorError> {
    let secs = u64::try_from(unix)
        .map_err(|_| VendorError::local(VENDOR, format!("expiry `{unix}` is before 1970")))?;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

#[tonic::async_trait]
impl Connector for Foreman {
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let request = self
            .authed(account, Method::GET, None)?
            .query(&[("per_page", "1")]);
        self.http
            .send(VENDOR, &account.credential.scrubber(), request)
            .await?;
        Ok(VerifiedAccount::of_login(account))
    }

    async fn issue(
        &self,
        account: &UpstreamAccount,
        request: &IssueRequest,
    ) -> Result<IssuedToken, VendorError> {
        only_unscoped(VENDOR, "permission", &request.vendor_permissions)?;
        only_unscoped(VENDOR, "project", &request.project_ids)?;
        seconds_left(VENDOR, request)?;
        let body = json!({
            "personal_access_token": {
                "name": request.name,
                "expires_at": rfc3339(request.expires_at)?,
            }
        });
        let builder = self.authed(account, Method::POST, None)?.json(&body);
        let reply = self
            .http
            .send(VENDOR, &account.credential.scrubber(), builder)
            .await?;
        let created: PersonalAccessToken = reply.json(VENDOR)?;
        let vendor_token_id = reply.created_id(VENDOR, &created.id, "id")?;
        Ok(IssuedToken {
            token: created.token_value,
            vendor_token_id,
            vendor_expires_at: Some(request.expires_at),
            revocable: true,
        })
    }

    async fn revoke(
        &self,
        account: &UpstreamAccount,
        vendor_token_id: &str,
    ) -> Result<(), VendorError> {
        let builder = self.authed(account, Method::DELETE, Some(vendor_token_id))?;
        self.http
            .send_revoke(VENDOR, &account.credential.scrubber(), builder)
            .await
    }

    /// The list call filtered by `search=name = "…"`, page by page (`page` from 1,
    /// `per_page`) until an empty page or `subtotal`; names are compared exactly here too, since
    /// a search is not an equality test everywhere.
    async fn find_tokens(
        &self,
        account: &UpstreamAccount,
        name: &str,
    ) -> Result<Option<Vec<String>>, VendorError> {
        let search = format!("name = \"{}\"", name.replace(['"', '\\'], ""));
        let mut found = Vec::new();
        let mut seen: u64 = 0;
        for page_number in 1..=MAX_SEARCH_PAGES {
            let request = self.authed(account, Method::GET, None)?.query(&[
                ("search", search.clone()),
                ("page", page_number.to_string()),
                ("per_page", SEARCH_PAGE_SIZE.to_string()),
            ]);
            let reply = self
                .http
                .send(VENDOR, &account.credential.scrubber(), request)
                .await?;
            let page: TokenPage = reply.json(VENDOR)?;
            let count = page.results.len() as u64;
            for token in page.results.into_iter().filter(|t| t.name == name) {
                found.push(reply.listed_id(VENDOR, &token.id, "id")?);
            }
            seen += count;
            if count == 0 || page.subtotal.is_some_and(|total| seen >= total) {
                return Ok(Some(found));
            }
        }
        Err(search_too_long(VENDOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_rfc3339_utc() {
        assert_eq!(rfc3339(0).ok().as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_700_000_000).ok().as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert!(rfc3339(-1).is_err());
    }
}
