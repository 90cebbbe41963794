//! Bitbucket Server personal access tokens: `rest/access-tokens/1.0/users/{userSlug}[/{tokenId}]`.
//!
//! Bitbucket counts expiry in whole days, so a token may outlive its lease by up to a day; the
//! broker revokes it when the lease ends. A user token cannot be limited to projects, so a
//! request naming projects is refused rather than minted wider.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    Connector, IssueRequest, IssuedToken, MAX_SEARCH_PAGES, SEARCH_PAGE_SIZE, UpstreamAccount,
    Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
    only_unscoped, required_option, search_too_long, seconds_left,
};

const VENDOR: Vendor = Vendor::BitbucketServer;
const DAY: i64 = 86_400;

/// Connector for Bitbucket Server.
pub(super) struct Bitbucket {
    http: HttpClient,
}

/// The fields of Bitbucket's `accessToken` answer that the broker keeps.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessToken {
    id: serde_json::Value,
    token: String,
    /// Milliseconds since the epoch.
    expiry_date: Option<i64>,
}

/// One page of `get_tokens`: Bitbucket's paged collection.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenPage {
    #[serde(default)]
    values: Vec<ListedToken>,
    #[serde(default)]
    is_last_page: bool,
    next_page_start: Option<u64>,
}

/// A token as `get_tokens` lists it (no secret).
#[derive(Deserialize)]
struct ListedToken {
    id: serde_json::Value,
    #[serde(default)]
    name: String,
}

impl Bitbucket {
    pub(super) fn new(http: HttpClient) -> Self {
        Self { http }
    }

    fn url(account: &UpstreamAccount, token_id: Option<&str>) -> Result<reqwest::Url, VendorError> {
        let slug = required_option(account, "user_slug")?;
        let mut segments = vec!["rest", "access-tokens", "1.0", "users", slug];
        segments.extend(token_id);
        join_url(VENDOR, &account.base_url, &segments)
    }

    /// Basic auth when a password is stored, else the stored token as a bearer.
    fn authed(
        &self,
        account: &UpstreamAccount,
        method: Method,
        url: reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let c = &account.credential;
        let builder = self.http.request(method, url);
        if c.password.is_empty() {
            builder.bearer_auth(&c.token)
        } else {
            builder.basic_auth(&c.username, Some(&c.password))
        }
    }
}

#[tonic::async_trait]
impl Connector for Bitbucket {
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let url = Self::url(account, None)?;
        let request = self
            .authed(account, Method::GET, url)
            .query(&[("limit", "1")]);
        self.http
            .send(VENDOR, &account.credential.scrubber(), request)
            .await?;
        Ok(VerifiedAccount {
            repo_host: account.base_url.trim_end_matches('/').to_owned(),
            repo_user: required_option(account, "user_slug")?.to_owned(),
        })
    }

    async fn issue(
        &self,
        account: &UpstreamAccount,
        request: &IssueRequest,
    ) -> Result<IssuedToken, VendorError> {
        only_unscoped(VENDOR, "project", &request.project_ids)?;
        let left = seconds_left(VENDOR, request)?;
        let expiry_days = ((left + DAY - 1) / DAY).max(1);
        let body = json!({
            "name": request.name,
            "permissions": request.vendor_permissions,
            "expiryDays": expiry_days,
        });
        let url = Self::url(account, None)?;
        let builder = self.authed(account, Method::PUT, url).json(&body);
        let reply = self
            .http
            .send(VENDOR, &account.credential.scrubber(), builder)
            .await?;
        let created: AccessToken = reply.json(VENDOR)?;
        let vendor_token_id = reply.created_id(VENDOR, &created.id, "id")?;
        let vendor_expires_at = created
            .expiry_date
            .map(|ms| ms.div_euclid(1000))
            .or(Some(request.now.saturating_add(expiry_days * DAY)));
        Ok(IssuedToken {
            token: created.token,
            vendor_token_id,
            vendor_expires_at,
            revocable: true,
        })
    }

    async fn revoke(
        &self,
        account: &UpstreamAccount,
        vendor_token_id: &str,
    ) -> Result<(), VendorError> {
        let url = Self::url(account, Some(vendor_token_id))?;
        let builder = self.authed(account, Method::DELETE, url);
        self.http
            .send_revoke(VENDOR, &account.credential.scrubber(), builder)
            .await
    }

    /// `get_tokens`, page by page (`start`, `limit`) until `isLastPage`.
    async fn find_tokens(
        &self,
        account: &UpstreamAccount,
        name: &str,
    ) -> Result<Option<Vec<String>>, VendorError> {
        let mut found = Vec::new();
        let mut start: u64 = 0;
        for _ in 0..MAX_SEARCH_PAGES {
            let url = Self::url(account, None)?;
            let request = self.authed(account, Method::GET, url).query(&[
                ("start", start.to_string()),
                ("limit", SEARCH_PAGE_SIZE.to_string()),
            ]);
            let reply = self
                .http
                .send(VENDOR, &account.credential.scrubber(), request)
                .await?;
            let page: TokenPage = reply.json(VENDOR)?;
            let count = page.values.len() as u64;
            for token in page.values.into_iter().filter(|t| t.name == name) {
                found.push(reply.listed_id(VENDOR, &token.id, "id")?);
            }
            if page.is_last_page || count == 0 {
                return Ok(Some(found));
            }
            start = page.next_page_start.unwrap_or(start + count).max(start + 1);
        }
        Err(search_too_long(VENDOR))
    }
}
