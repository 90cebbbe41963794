//! Git repository password authorization (ServiceStage style): for Git hosts with no scoped
//! tokens, the stored username and password are handed out as they are.
//!
//! The broker calls [`Connector::issue`] only when Cedar permits `ReadUpstreamSecret`; nothing
//! is minted at the host, so there is nothing to revoke.

use reqwest::Method;

use super::{
    Connector, IssueRequest, IssuedToken, UpstreamAccount, Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
};

const VENDOR: Vendor = Vendor::GitPassword;

/// Connector for password-authorized Git hosts.
pub(super) struct GitPassword {
    http: HttpClient,
}

impl GitPassword {
    pub(super) fn new(http: HttpClient) -> Self {
        Self { http }
    }
}

#[tonic::async_trait]
impl Connector for GitPassword {
    /// A basic-auth `GET` of the host root proves the password (ServiceStage status 0, normal).
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let c = &account.credential;
        if c.username.is_empty() || c.password.is_empty() {
            return Err(VendorError::local(
                VENDOR,
                "a git password authorization needs both `username` and `password`",
            ));
        }
        let url = join_url(VENDOR, &account.base_url, &[])?;
        let request = self
            .http
            .request(Method::GET, url)
            .basic_auth(&c.username, Some(&c.password));
        match self.http.send(VENDOR, &c.scrubber(), request).await {
            Ok(_) => Ok(VerifiedAccount::of_login(account)),
            // The host answers 403 to a wrong password as often as 401: both mean "unauthenticated".
            Err(VendorError::PermissionDenied {
                vendor,
                status,
                message,
            }) => Err(VendorError::Unauthenticated {
                vendor,
                status,
                message,
            }),
            Err(e) => Err(e),
        }
    }

    async fn issue(
        &self,
        account: &UpstreamAccount,
        _request: &IssueRequest,
    ) -> Result<IssuedToken, VendorError> {
        if account.credential.password.is_empty() {
            return Err(VendorError::local(
                VENDOR,
                "the upstream account stores no password",
            ));
        }
        Ok(IssuedToken {
            token: account.credential.password.clone(),
            vendor_token_id: String::new(),
            vendor_expires_at: None,
            revocable: false,
        })
    }

    /// Nothing to do: the password was not minted for this lease and stays valid at the host.
    async fn revoke(
        &self,
        _account: &UpstreamAccount,
        _vendor_token_id: &str,
    ) -> Result<(), VendorError> {
        Ok(())
    }
}
