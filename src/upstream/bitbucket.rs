//! Bitbucket Server personal access tokens: `rest/access-tokens/1.0/users/{userSlug}[/{tokenId}]`.
//!
//! Bitbucket counts expiry in whole days, so a token may outlive its lease by up to a day; the
//! broker revokes it when the lease ends. A user token cannot be limited to projects, so a
//! request naming projects is refused rather than minted wider.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    Connector, IssueRequest, IssuedToken, UpstreamAccount, Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
    only_unscoped, required_option, seconds_left,
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
}
