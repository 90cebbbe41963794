//! Test harness: starts the real `token-broker` binary on an ephemeral loopback port with a
//! temp data dir, captures its logs, and hands out real tonic clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
#![allow(dead_code, reason = "each test crate uses a different subset")]

pub mod direct;
pub mod fakes;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use pb::{
    access_key_service_client::AccessKeyServiceClient,
    subject_service_client::SubjectServiceClient, token_service_client::TokenServiceClient,
    upstream_service_client::UpstreamServiceClient,
};
pub use token_broker::pb::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, transport::Channel};

/// A running broker process.
pub struct Broker {
    child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    logs: Arc<Mutex<String>>,
    _temp: Option<tempfile::TempDir>,
}

/// The shipped policy directory.
pub fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

impl Broker {
    /// Starts a broker on a fresh temp data dir with the shipped policies.
    pub async fn start() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut b = Self::start_in(temp.path(), &shipped_policies(), &[]).await;
        b._temp = Some(temp);
        b
    }

    /// Starts a broker on `data_dir` with `policies`, plus extra environment variables.
    pub async fn start_in(data_dir: &Path, policies: &Path, env: &[(&str, &str)]) -> Self {
        let (child, logs, ready) = spawn(data_dir, policies, env);
        let addr = tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("broker did not report its address"));
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            policies: policies.to_owned(),
            logs,
            _temp: None,
        }
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The bootstrap admin secret written on first start.
    pub fn admin_secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bootstrap-admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                Ok(ch) => return ch,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    pub async fn subjects(&self) -> SubjectServiceClient<Channel> {
        SubjectServiceClient::new(self.channel().await)
    }

    pub async fn keys(&self) -> AccessKeyServiceClient<Channel> {
        AccessKeyServiceClient::new(self.channel().await)
    }

    pub async fn upstreams(&self) -> UpstreamServiceClient<Channel> {
        UpstreamServiceClient::new(self.channel().await)
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit, without blocking the test's runtime (its client
    /// connections must be able to see the server's GOAWAY).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    data_dir: &Path,
    policies: &Path,
    env: &[(&str, &str)],
) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_token-broker"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policies")
        .arg(policies)
        .env("RUST_LOG", "info")
        .env_remove("TOKEN_BROKER_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let logs = Arc::clone(&logs);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .contains("listening")
                    .then(|| line.split("addr=").nth(1))
                    .flatten()
                {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    (child, logs, rx)
}

/// Every file below `dir`, for scans of the data dir for secrets.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Attaches `authorization: Bearer <credential>`.
pub fn authed<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    request
}

/// Creates a subject with the admin credential.
pub async fn create_subject(b: &Broker, admin: &str, id: &str, projects: &[&str], perms: &[&str]) {
    b.subjects()
        .await
        .create_subject(authed(
            pb::CreateSubjectRequest {
                subject_id: id.to_owned(),
                kind: pb::SubjectKind::User as i32,
                project_ids: projects.iter().map(|s| (*s).to_owned()).collect(),
                permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
            },
            admin,
        ))
        .await
        .unwrap();
}

/// Creates an access key for `owner` holding `perms` (and the owner's projects); returns
/// its secret.
pub async fn create_key(b: &Broker, admin: &str, owner: &str, perms: &[&str]) -> String {
    b.keys()
        .await
        .create_access_key(authed(
            pb::CreateAccessKeyRequest {
                owner: owner.to_owned(),
                name: format!("{owner}-key"),
                permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// Mints a token with `credential`.
pub async fn mint(
    b: &Broker,
    credential: &str,
    projects: &[&str],
    perms: &[&str],
    hours: Option<f64>,
) -> Result<pb::CreateAccessTokenResponse, tonic::Status> {
    b.tokens()
        .await
        .create_access_token(authed(
            pb::CreateAccessTokenRequest {
                project_ids: projects.iter().map(|s| (*s).to_owned()).collect(),
                permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
                expires_in_hours: hours,
                audience: String::new(),
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Introspects with `credential`.
pub async fn introspect(b: &Broker, credential: &str, token: &str) -> pb::IntrospectTokenResponse {
    b.tokens()
        .await
        .introspect_token(authed(
            pb::IntrospectTokenRequest {
                token: token.to_owned(),
            },
            credential,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Asserts the broker process is alive and answers health SERVING, after an attack.
pub async fn assert_serving(b: &mut Broker) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "the broker process died:\n{}",
        b.logs()
    );
    let status = HealthClient::new(b.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

/// Owned strings from literals, for repeated request fields.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The `field` of each `google.rpc.BadRequest` violation in a status.
pub fn field_of(err: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    err.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// `CreateAccessKey` with `cred`, the status kept for assertions.
pub async fn create_access_key(
    b: &Broker,
    cred: &str,
    req: pb::CreateAccessKeyRequest,
) -> Result<pb::CreateAccessKeyResponse, tonic::Status> {
    b.keys()
        .await
        .create_access_key(authed(req, cred))
        .await
        .map(tonic::Response::into_inner)
}

/// `UpdateAccessKey` of the fields named in `paths`, with `cred`.
pub async fn update_access_key(
    b: &Broker,
    cred: &str,
    id: &str,
    paths: &[&str],
    key: pb::AccessKey,
) -> Result<pb::AccessKey, tonic::Status> {
    b.keys()
        .await
        .update_access_key(authed(
            pb::UpdateAccessKeyRequest {
                id: id.to_owned(),
                update_mask: Some(prost_types::FieldMask {
                    paths: strings(paths),
                }),
                key: Some(key),
            },
            cred,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// `CreateUpstream` with the options every fake vendor takes (`user_slug`, `user_id`).
pub async fn create_upstream_at(
    b: &Broker,
    admin: &str,
    name: &str,
    vendor: pb::Vendor,
    base_url: &str,
    credential: pb::Credential,
) -> Result<pb::Upstream, tonic::Status> {
    let options = std::collections::HashMap::from([
        ("user_slug".to_owned(), "bob".to_owned()),
        ("user_id".to_owned(), "7".to_owned()),
    ]);
    b.upstreams()
        .await
        .create_upstream(authed(
            pb::CreateUpstreamRequest {
                name: name.to_owned(),
                vendor: vendor as i32,
                base_url: base_url.to_owned(),
                credential: Some(credential),
                options,
            },
            admin,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// `DeleteAccessKey` with `cred`; answers how many tokens it revoked.
pub async fn delete_access_key(b: &Broker, cred: &str, id: &str) -> Result<u32, tonic::Status> {
    b.keys()
        .await
        .delete_access_key(authed(
            pb::DeleteAccessKeyRequest { id: id.to_owned() },
            cred,
        ))
        .await
        .map(|r| r.into_inner().revoked_tokens)
}
