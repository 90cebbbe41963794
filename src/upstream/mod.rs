//! TEMPORARY interface stub (replaced by the real connectors on merge).
#![allow(missing_docs, clippy::all)]
use std::{collections::BTreeMap, time::Duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    BitbucketServer,
    LaunchDarkly,
    Foreman,
    Develocity,
    GitPassword,
}
impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::BitbucketServer => "bitbucket_server",
            Vendor::LaunchDarkly => "launchdarkly",
            Vendor::Foreman => "foreman",
            Vendor::Develocity => "develocity",
            Vendor::GitPassword => "git_password",
        }
    }
}
#[derive(Clone, Default, Debug)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub token: String,
}
#[derive(Clone, Debug)]
pub struct UpstreamAccount {
    pub vendor: Vendor,
    pub base_url: String,
    pub credential: Credential,
    pub options: BTreeMap<String, String>,
}
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub name: String,
    pub vendor_permissions: Vec<String>,
    pub project_ids: Vec<String>,
    pub expires_at: i64,
}
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub vendor_token_id: String,
    pub vendor_expires_at: Option<i64>,
    pub revocable: bool,
}
#[derive(Clone, Debug)]
pub struct VerifiedAccount {
    pub repo_host: String,
    pub repo_user: String,
}
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendorError {
    #[error("x")]
    Unauthenticated {
        vendor: Vendor,
        status: u16,
        message: String,
    },
    #[error("x")]
    PermissionDenied {
        vendor: Vendor,
        status: u16,
        message: String,
    },
    #[error("x")]
    NotFound {
        vendor: Vendor,
        status: u16,
        message: String,
    },
    #[error("x")]
    InvalidArgument {
        vendor: Vendor,
        status: u16,
        message: String,
    },
    #[error("x")]
    Conflict {
        vendor: Vendor,
        status: u16,
        message: String,
    },
    #[error("x")]
    RateLimited {
        vendor: Vendor,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("x")]
    Unavailable {
        vendor: Vendor,
        status: Option<u16>,
        message: String,
    },
    #[error("x")]
    Unsupported { vendor: Vendor, message: String },
}
#[tonic::async_trait]
pub trait Connector: Send + Sync {
    async fn verify(&self, account: &UpstreamAccount) -> Result<VerifiedAccount, VendorError>;
    async fn issue(
        &self,
        account: &UpstreamAccount,
        request: &IssueRequest,
    ) -> Result<IssuedToken, VendorError>;
    async fn revoke(
        &self,
        account: &UpstreamAccount,
        vendor_token_id: &str,
    ) -> Result<(), VendorError>;
}
#[derive(Clone, Debug)]
pub struct HttpClient;
impl HttpClient {
    pub fn with_retry(_a: u32, _b: Duration) -> Result<Self, VendorError> {
        Ok(HttpClient)
    }
}
struct Stub(Vendor);
#[tonic::async_trait]
impl Connector for Stub {
    async fn verify(&self, _: &UpstreamAccount) -> Result<VerifiedAccount, VendorError> {
        Err(VendorError::Unsupported {
            vendor: self.0,
            message: String::new(),
        })
    }
    async fn issue(
        &self,
        _: &UpstreamAccount,
        _: &IssueRequest,
    ) -> Result<IssuedToken, VendorError> {
        Err(VendorError::Unsupported {
            vendor: self.0,
            message: String::new(),
        })
    }
    async fn revoke(&self, _: &UpstreamAccount, _: &str) -> Result<(), VendorError> {
        Ok(())
    }
}
pub fn connector(vendor: Vendor, _http: HttpClient) -> Box<dyn Connector> {
    Box::new(Stub(vendor))
}
