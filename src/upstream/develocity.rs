//! Develocity short-lived access tokens: `POST /api/auth/token?projectIds=&permissions=&expiresInHours=`.
//!
//! Develocity never mints a token wider or longer-lived than the key that asks (403 otherwise),
//! and has no endpoint to revoke one: the token expires by itself at the end of the lease.

use reqwest::Method;

use super::{
    Connector, IssueRequest, IssuedToken, UpstreamAccount, Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
    seconds_left,
};

const VENDOR: Vendor = Vendor::Develocity;
/// The shortest token Develocity is asked for when verifying a key (36 seconds).
const VERIFY_HOURS: &str = "0.01";

/// Connector for Develocity.
pub(super) struct Develocity {
    http: HttpClient,
}

impl Develocity {
    pub(super) fn new(http: HttpClient) -> Self {
        Self { http }
    }

    /// `POST api/auth/token` with the stored access key as a bearer.
    fn create(
        &self,
        account: &UpstreamAccount,
        query: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, VendorError> {
        let url = join_url(VENDOR, &account.base_url, &["api", "auth", "token"])?;
        Ok(self
            .http
            .request(Method::POST, url)
            .bearer_auth(&account.credential.token)
            .query(query))
    }
}

/// Hours until the lease ends, rounded down to the millihour so the token never outlives it.
fn hours(seconds: i64) -> String {
    // 3.6 s per millihour; a lease under 3.6 s still gets the smallest non-zero lifetime.
    let millihours = (seconds * 1000 / 3600).max(1);
    format!("{}.{:03}", millihours / 1000, millihours % 1000)
}

/// Comma-separated values, the form the seed documents; `*` (or nothing) leaves the key's own scope.
fn list(values: &[String]) -> Option<String> {
    if values.is_empty() || values.iter().any(|v| v == "*") {
        None
    } else {
        Some(values.join(","))
    }
}

#[tonic::async_trait]
impl Connector for Develocity {
    /// Minting a 36-second token is the cheapest call that proves the key.
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let request = self.create(account, &[("expiresInHours", VERIFY_HOURS.to_owned())])?;
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
        let left = seconds_left(VENDOR, request)?;
        if let Some(bad) = request
            .project_ids
            .iter()
            .chain(&request.vendor_permissions)
            .find(|v| v.is_empty() || v.contains(','))
        {
            return Err(VendorError::local(
                VENDOR,
                format!("`{bad}` is not a single Develocity project id or permission"),
            ));
        }
        let mut query = Vec::new();
        if let Some(projects) = list(&request.project_ids) {
            query.push(("projectIds", projects));
        }
        if let Some(permissions) = list(&request.vendor_permissions) {
            query.push(("permissions", permissions));
        }
        query.push(("expiresInHours", hours(left)));
        let builder = self.create(account, &query)?;
        let reply = self
            .http
            .send(VENDOR, &account.credential.scrubber(), builder)
            .await?;
        let token = String::from_utf8_lossy(&reply.body).trim().to_owned();
        if token.is_empty() {
            return Err(VendorError::Unavailable {
                vendor: VENDOR,
                status: Some(reply.status),
                message: "the vendor answered with an empty token".to_owned(),
            });
        }
        Ok(IssuedToken {
            token,
            vendor_token_id: String::new(),
            vendor_expires_at: Some(request.expires_at),
            revocable: false,
        })
    }

    /// Nothing to do: a Develocity token cannot be revoked and expires by itself.
    async fn revoke(
        &self,
        _account: &UpstreamAccount,
        _vendor_token_id: &str,
    ) -> Result<(), VendorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_down_to_the_millihour() {
        assert_eq!(hours(7200), "2.000");
        assert_eq!(hours(3599), "0.999");
        assert_eq!(hours(1), "0.001");
    }
}
