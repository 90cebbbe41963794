//! Test harness: starts the real `token-broker` binary on an ephemeral loopback port with a
//! temp data dir, captures its logs, and hands out real tonic clients. Every broker runs on a
//! test clock (`TOKEN_BROKER_TEST_CLOCK_FILE`, honoured by debug builds only) that tests move
//! with [`Broker::advance_clock`] instead of sleeping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
#![allow(dead_code, reason = "each test crate uses a different subset")]

pub mod direct;
pub mod envoy;
pub mod fakes;
pub mod tools;
mod wait;

pub use wait::{WAIT, wait_until};

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pb::{
    access_key_service_client::AccessKeyServiceClient,
    subject_service_client::SubjectServiceClient, token_service_client::TokenServiceClient,
    upstream_service_client::UpstreamServiceClient,
};
pub use token_broker::pb::v1 as pb;
use tokio::{sync::Notify, time::Instant};
use tonic::{Request, transport::Channel};

/// A running broker process.
pub struct Broker {
    child: Arc<Mutex<Child>>,
    pub addr: String,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    logs: Arc<Mutex<String>>,
    /// Fires after every log line, so tests wait for a line instead of polling.
    logged: Arc<Notify>,
    /// The file the broker reads its clock from, and what the test wrote there.
    clock_file: PathBuf,
    time: Mutex<TestTime>,
    _clock_dir: tempfile::TempDir,
    _temp: Option<tempfile::TempDir>,
}

/// The broker's test clock: the wall clock shifted, or stopped at a moment.
#[derive(Clone, Copy, Debug)]
enum TestTime {
    Offset(i64),
    Stopped(i64),
}

/// Unix seconds on the wall clock.
pub fn wall_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
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
        let clock_dir = tempfile::tempdir().unwrap();
        let clock_file = clock_dir.path().join("clock-offset");
        std::fs::write(&clock_file, "0").unwrap();
        let (child, logs, logged, ready) = spawn(data_dir, policies, &clock_file, env);
        let addr = tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("broker did not report its address"));
        Self {
            child: Arc::new(Mutex::new(child)),
            addr,
            data_dir: data_dir.to_owned(),
            policies: policies.to_owned(),
            logs,
            logged,
            clock_file,
            time: Mutex::new(TestTime::Offset(0)),
            _clock_dir: clock_dir,
            _temp: None,
        }
    }

    /// Moves the broker's clock forward by `secs`: every expiry, grace and lease decision
    /// after this call sees the later time. A stopped clock stays stopped.
    pub fn advance_clock(&self, secs: i64) {
        let mut time = self.time.lock().unwrap();
        *time = match *time {
            TestTime::Offset(offset) => TestTime::Offset(offset + secs),
            TestTime::Stopped(at) => TestTime::Stopped(at + secs),
        };
        self.write_clock(*time);
    }

    /// Stops the broker's clock at `at` (Unix seconds): it reads `at` until moved again, so a
    /// test can watch a worker pass at one moment while real time goes on.
    pub fn stop_clock_at(&self, at: i64) {
        let mut time = self.time.lock().unwrap();
        *time = TestTime::Stopped(at);
        self.write_clock(*time);
    }

    fn write_clock(&self, time: TestTime) {
        let text = match time {
            TestTime::Offset(offset) => offset.to_string(),
            TestTime::Stopped(at) => format!("@{at}"),
        };
        // Written whole, then renamed: the broker never reads a half-written file.
        let next = self.clock_file.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &self.clock_file).unwrap();
    }

    /// Unix seconds on the broker's clock (the wall clock plus what the test advanced, or
    /// where it stopped it).
    pub fn now(&self) -> i64 {
        match *self.time.lock().unwrap() {
            TestTime::Offset(offset) => wall_now() + offset,
            TestTime::Stopped(at) => at,
        }
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until one log line satisfies `matches`; fails after [`WAIT`].
    pub async fn wait_for_log_line(&self, what: &str, matches: impl Fn(&str) -> bool) {
        wait_until(&self.logged, what, || self.logs().lines().any(&matches)).await;
    }

    /// Waits until the logs hold `needle` at least `times` times; fails after [`WAIT`].
    pub async fn wait_for_log(&self, needle: &str, times: usize) {
        wait_until(
            &self.logged,
            &format!("{times} log line(s) with `{needle}`"),
            || self.logs().matches(needle).count() >= times,
        )
        .await;
    }

    /// The bootstrap admin secret written on first start.
    pub fn admin_secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bootstrap-admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn channel(&self) -> Channel {
        // The broker listens before it reports its address, so the first attempt connects;
        // the retry is for a loaded machine's refused connection.
        let deadline = Instant::now() + WAIT;
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
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM and wait for a clean exit, without blocking the test's runtime (its client
    /// connections must be able to see the server's GOAWAY).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.lock().unwrap().id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let child = Arc::clone(&self.child);
        let waited = tokio::task::spawn_blocking(move || child.lock().unwrap().wait().unwrap());
        match tokio::time::timeout(WAIT, waited).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // Unblocks the waiting thread (and so the lock) before failing.
                let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
                panic!("broker did not stop within {WAIT:?} after SIGTERM");
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(
    data_dir: &Path,
    policies: &Path,
    clock_file: &Path,
    env: &[(&str, &str)],
) -> (
    Child,
    Arc<Mutex<String>>,
    Arc<Notify>,
    mpsc::Receiver<String>,
) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_token-broker"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policies")
        .arg(policies)
        .env("RUST_LOG", "info")
        .env("TOKEN_BROKER_TEST_CLOCK_FILE", clock_file)
        .env_remove("TOKEN_BROKER_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let logged = Arc::new(Notify::new());
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let logs = Arc::clone(&logs);
        let logged = Arc::clone(&logged);
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
                {
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                logged.notify_waiters();
            }
        });
    }
    (child, logs, logged, rx)
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
    let exited = b.child.lock().unwrap().try_wait().unwrap();
    assert!(exited.is_none(), "the broker process died:\n{}", b.logs());
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

/// `GetUpstream` of `name`, which must exist.
pub async fn get_upstream(b: &Broker, credential: &str, name: &str) -> pb::Upstream {
    b.upstreams()
        .await
        .get_upstream(authed(
            pb::GetUpstreamRequest {
                name: name.to_owned(),
            },
            credential,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// `CreateUpstream` with the options every fake vendor takes (`user_slug`, `user_id`),
/// reaching every project.
pub async fn create_upstream_at(
    b: &Broker,
    admin: &str,
    name: &str,
    vendor: pb::Vendor,
    base_url: &str,
    credential: pb::Credential,
) -> Result<pb::Upstream, tonic::Status> {
    create_upstream_for(b, admin, name, vendor, base_url, credential, &[]).await
}

/// `CreateUpstream` with the fakes' options, reaching `projects` (empty: every project).
pub async fn create_upstream_for(
    b: &Broker,
    admin: &str,
    name: &str,
    vendor: pb::Vendor,
    base_url: &str,
    credential: pb::Credential,
    projects: &[&str],
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
                project_ids: projects.iter().map(|p| (*p).to_owned()).collect(),
                credential_expires_at: None,
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
