//! Git repository password authorization (ServiceStage style): for Git hosts with no scoped
//! tokens, the stored username and password are handed out as they are.
//!
//! The upstream's base url is a repository URL (`https://git.example.com/team/repo.git`), and
//! the password is checked the way `git ls-remote` starts: by the smart-HTTP ref advertisement.
//!
//! The broker calls [`Connector::issue`] only when Cedar permits `ReadUpstreamSecret`; nothing
//! is minted at the host, so there is nothing to revoke.

use reqwest::Method;

use super::{
    Connector, IssueRequest, IssuedToken, UpstreamAccount, Vendor, VendorError, VerifiedAccount,
    http::{HttpClient, join_url},
};
use crate::domain::validate::quote;

const VENDOR: Vendor = Vendor::GitPassword;
/// The content type a git smart-HTTP server gives `info/refs?service=git-upload-pack`.
const ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";
/// What a git password upstream's base url looks like, for messages.
const REPO_URL_EXAMPLE: &str = "`https://git.example.com/team/repo.git`";

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
    /// Asks what `git ls-remote` asks first, a basic-auth `GET {base_url}/info/refs?service=
    /// git-upload-pack`: only a git smart-HTTP repository answers it with the upload-pack
    /// advertisement, so the password is proven against the repository itself (401 and 403
    /// mean rejected), and a base url that is no repository is refused.
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        let c = &account.credential;
        if c.username.is_empty() || c.password.is_empty() {
            return Err(VendorError::local(
                VENDOR,
                "a git password authorization needs both `username` and `password`",
            ));
        }
        let url = join_url(VENDOR, &account.base_url, &["info", "refs"])?;
        let request = self
            .http
            .request(Method::GET, url)
            .query(&[("service", "git-upload-pack")])
            .basic_auth(&c.username, Some(&c.password));
        let scrubber = c.scrubber();
        match self.http.send(VENDOR, &scrubber, request).await {
            Ok(reply) if is_advertisement(&reply.content_type) => {
                Ok(VerifiedAccount::of_login(account))
            }
            Ok(reply) => Err(VendorError::InvalidArgument {
                vendor: VENDOR,
                status: reply.status,
                message: not_a_repository(&account.base_url, &scrubber.scrub(&reply.content_type)),
            }),
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
            Err(VendorError::NotFound { vendor, status, .. }) => Err(VendorError::NotFound {
                vendor,
                status,
                message: format!(
                    "the repository does not exist at base url {}: base_url must be a repository url such as {REPO_URL_EXAMPLE}",
                    quote(&account.base_url)
                ),
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

/// Whether `content_type` (parameters such as `charset` ignored) is the upload-pack
/// advertisement.
fn is_advertisement(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(ADVERTISEMENT))
}

/// Why a 2xx answer without the advertisement is refused: a web page, a login page or a
/// "dumb" HTTP server answered, not a git smart-HTTP repository.
fn not_a_repository(base_url: &str, content_type: &str) -> String {
    let got = if content_type.is_empty() {
        "no content type".to_owned()
    } else {
        format!("content type {}", quote(content_type))
    };
    format!(
        "base url {} is not a git smart-http repository: `info/refs?service=git-upload-pack` answered with {got}, where a repository answers `{ADVERTISEMENT}`; base_url must be a repository url such as {REPO_URL_EXAMPLE}",
        quote(base_url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_upload_pack_advertisement_is_a_repository() {
        assert!(is_advertisement(ADVERTISEMENT));
        assert!(is_advertisement(
            "Application/X-Git-Upload-Pack-Advertisement; charset=utf-8"
        ));
        for other in [
            "",
            "text/html",
            "text/plain",
            "application/x-git-receive-pack-advertisement",
        ] {
            assert!(!is_advertisement(other), "{other}");
        }
    }
}
