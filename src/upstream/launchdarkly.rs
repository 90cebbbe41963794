//! LaunchDarkly API access tokens: `/api/v2/tokens` create, list (to verify) and delete.
//!
//! The token's scope is an inline policy: one `allow` statement whose actions follow the
//! requested role and whose resources are the requested projects' flags. LaunchDarkly tokens
//! do not expire, so the broker must revoke them when the lease ends.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    Connector, IssueRequest, IssuedToken, MAX_SEARCH_PAGES, SEARCH_PAGE_SIZE, UpstreamAccount,
    Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
    search_too_long,
};

const VENDOR: Vendor = Vendor::Launchdarkly;

/// Connector for LaunchDarkly.
pub(super) struct LaunchDarkly {
    http: HttpClient,
}

/// The fields of LaunchDarkly's `Token` answer that the broker keeps.
#[derive(Deserialize)]
struct Token {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    token: String,
}

/// One page of `get_tokens` (`Tokens`).
#[derive(Deserialize)]
struct TokenPage {
    #[serde(default)]
    items: Vec<ListedToken>,
    #[serde(rename = "totalCount")]
    total_count: Option<u64>,
}

/// A token as `get_tokens` lists it (its secret masked).
#[derive(Deserialize)]
struct ListedToken {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    #[serde(default)]
    name: String,
}

impl LaunchDarkly {
    pub(super) fn new(http: HttpClient) -> Self {
        Self { http }
    }

    /// LaunchDarkly takes the raw API key in `Authorization`, with no scheme.
    fn authed(
        &self,
        account: &UpstreamAccount,
        method: Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, VendorError> {
        let url = join_url(VENDOR, &account.base_url, segments)?;
        Ok(self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, &account.credential.token))
    }
}

/// Actions for the requested roles; the widest role wins.
fn actions(roles: &[String]) -> Result<Vec<&'static str>, VendorError> {
    let mut write = false;
    for role in roles {
        match role.as_str() {
            "reader" => {}
            "writer" | "admin" => write = true,
            other => {
                return Err(VendorError::local(
                    VENDOR,
                    format!("unknown role `{other}`: expected `reader`, `writer` or `admin`"),
                ));
            }
        }
    }
    if roles.is_empty() {
        return Err(VendorError::local(
            VENDOR,
            "no role asked for: expected `reader`, `writer` or `admin`",
        ));
    }
    Ok(if write {
        vec!["*"]
    } else {
        vec!["viewProject"]
    })
}

/// Flag resources of the requested projects; `*` stands for every project.
fn resources(projects: &[String]) -> Result<Vec<String>, VendorError> {
    if projects.is_empty() {
        return Err(VendorError::local(
            VENDOR,
            "no project asked for: name project keys or `*`",
        ));
    }
    if projects.iter().any(|p| p == "*") {
        return Ok(vec!["proj/*:env/*:flag/*".to_owned()]);
    }
    projects
        .iter()
        .map(|p| {
            // A key with policy syntax in it would widen or break the statement.
            if p.is_empty() || p.contains([':', '/', ';', '*', ',']) {
                Err(VendorError::local(
                    VENDOR,
                    format!("project key `{p}` is not a plain LaunchDarkly project key"),
                ))
            } else {
                Ok(format!("proj/{p}:env/*:flag/*"))
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Connector for LaunchDarkly {
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let request = self
            .authed(account, Method::GET, &["api", "v2", "tokens"])?
            .query(&[("limit", "1")]);
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
        super::seconds_left(VENDOR, request)?;
        let body = json!({
            "name": request.name,
            "inlineRole": [{
                "effect": "allow",
                "actions": actions(&request.vendor_permissions)?,
                "resources": resources(&request.project_ids)?,
            }],
        });
        let builder = self
            .authed(account, Method::POST, &["api", "v2", "tokens"])?
            .json(&body);
        let reply = self
            .http
            .send(VENDOR, &account.credential.scrubber(), builder)
            .await?;
        let created: Token = reply.json(VENDOR)?;
        let vendor_token_id = reply.created_id(VENDOR, &created.id, "_id")?;
        Ok(IssuedToken {
            token: created.token,
            vendor_token_id,
            vendor_expires_at: None,
            revocable: true,
        })
    }

    async fn revoke(
        &self,
        account: &UpstreamAccount,
        vendor_token_id: &str,
    ) -> Result<(), VendorError> {
        let builder = self.authed(
            account,
            Method::DELETE,
            &["api", "v2", "tokens", vendor_token_id],
        )?;
        self.http
            .send_revoke(VENDOR, &account.credential.scrubber(), builder)
            .await
    }

    /// `get_tokens`, page by page (`limit`, `offset`) until an empty page or `totalCount`; the
    /// tokens the broker mints belong to its own key's member, which the list shows without
    /// `showAll`.
    async fn find_tokens(
        &self,
        account: &UpstreamAccount,
        name: &str,
    ) -> Result<Option<Vec<String>>, VendorError> {
        let mut found = Vec::new();
        let mut offset: u64 = 0;
        for _ in 0..MAX_SEARCH_PAGES {
            let request = self
                .authed(account, Method::GET, &["api", "v2", "tokens"])?
                .query(&[
                    ("limit", SEARCH_PAGE_SIZE.to_string()),
                    ("offset", offset.to_string()),
                ]);
            let reply = self
                .http
                .send(VENDOR, &account.credential.scrubber(), request)
                .await?;
            let page: TokenPage = reply.json(VENDOR)?;
            let count = page.items.len() as u64;
            for token in page.items.into_iter().filter(|t| t.name == name) {
                found.push(reply.listed_id(VENDOR, &token.id, "_id")?);
            }
            offset += count;
            if count == 0 || page.total_count.is_some_and(|total| offset >= total) {
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
    fn widest_role_wins_and_unknown_is_refused() {
        let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(actions(&roles(&["reader"])).ok(), Some(vec!["viewProject"]));
        assert_eq!(actions(&roles(&["reader", "writer"])).ok(), Some(vec!["*"]));
        assert!(actions(&roles(&["owner"])).is_err());
        assert!(actions(&[]).is_err());
    }

    #[test]
    fn projects_become_flag_resources() {
        let p = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            resources(&p(&["web", "api"])).ok(),
            Some(vec![
                "proj/web:env/*:flag/*".to_owned(),
                "proj/api:env/*:flag/*".to_owned()
            ])
        );
        assert_eq!(
            resources(&p(&["*"])).ok(),
            Some(vec!["proj/*:env/*:flag/*".to_owned()])
        );
        assert!(resources(&p(&["a:b"])).is_err());
    }
}
