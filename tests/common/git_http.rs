//! A real git smart-HTTP host on loopback: the installed git's `git http-backend`, run as CGI
//! for every request behind basic auth the way Apache or nginx run it in front of a git host,
//! serving a bare repository with one commit (`team/repo.git`, branch `main`).
//!
//! Besides the repository it answers every path under `/web` with HTTP 200 and an HTML page,
//! as a web front page or a login page would, so a test can give a base url that is a server
//! but not a repository. The password can be changed while it runs ([`GitHttp::set_password`]),
//! as an operator rotating it at the host would.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex, OnceLock},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{Html, IntoResponse, Response},
};
use base64::Engine as _;

use super::WAIT;

/// The repository's path under the server root.
pub const REPO: &str = "team/repo.git";
/// The basic-auth user the host accepts.
pub const USER: &str = "ci-bot";

/// A running git host; the server stops when it is dropped.
pub struct GitHttp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

struct Shared {
    /// `GIT_PROJECT_ROOT`: the directory holding `team/repo.git`.
    projects: PathBuf,
    /// `HOME` of every git process, so no user's configuration is read.
    home: PathBuf,
    password: Mutex<String>,
    /// `METHOD /path?query` of every request, in order.
    calls: Mutex<Vec<String>>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl GitHttp {
    /// Creates the repository and serves it on `127.0.0.1`, accepting [`USER`] and `password`.
    pub async fn start(password: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let projects = root.path().join("projects");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(projects.join("team")).unwrap();
        let work = root.path().join("work");
        let work_s = work.to_str().unwrap();
        git(&home, &["init", "-q", "-b", "main", work_s]);
        git(
            &home,
            &[
                "-C",
                work_s,
                "-c",
                "user.name=Test Author",
                "-c",
                "user.email=author@example.com",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "first commit",
            ],
        );
        let bare = projects.join(REPO);
        git(
            &home,
            &["clone", "-q", "--bare", work_s, bare.to_str().unwrap()],
        );

        let shared = Arc::new(Shared {
            projects,
            home,
            password: Mutex::new(password.to_owned()),
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            shared,
            server,
            _root: root,
        }
    }

    /// The repository's URL: what a git password upstream's `base_url` is.
    pub fn repo_url(&self) -> String {
        format!("http://{}/{REPO}", self.addr)
    }

    /// The server root, which is no repository (git http-backend answers 404 there).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A web page answering HTTP 200 to everything under it, with no auth.
    pub fn web_url(&self) -> String {
        format!("http://{}/web", self.addr)
    }

    /// Changes the password the host accepts from now on.
    pub fn set_password(&self, password: &str) {
        *self.shared.password.lock().unwrap() = password.to_owned();
    }

    /// `METHOD /path?query` of every request so far.
    pub fn calls(&self) -> Vec<String> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Runs `git ls-remote` on the repository with [`USER`] and `password`: its output, or
    /// git's error text.
    pub async fn ls_remote(&self, password: &str) -> Result<String, String> {
        let url = format!("http://{USER}:{password}@{}/{REPO}", self.addr);
        let home = self.shared.home.clone();
        let output = tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || {
                git_command(&home)
                    .args(["ls-remote", &url])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("git ls-remote took longer than {WAIT:?}"))
        .unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// `git` with no system or user configuration and no terminal prompt.
fn git_command(home: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// Runs git and fails the test when it fails.
fn git(home: &Path, args: &[&str]) {
    let output = git_command(home).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where the installed git keeps `git-http-backend` (`git --exec-path`, e.g.
/// `/usr/lib/git-core` on Debian).
fn http_backend() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let output = Command::new("git").arg("--exec-path").output().unwrap();
        assert!(output.status.success(), "git --exec-path failed");
        let dir = String::from_utf8(output.stdout).unwrap();
        let backend = Path::new(dir.trim()).join("git-http-backend");
        assert!(backend.exists(), "no {}", backend.display());
        backend
    })
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    s.calls.lock().unwrap().push(format!(
        "{method} {}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    ));
    if uri.path() == "/web" || uri.path().starts_with("/web/") {
        return Html("<!doctype html><title>Welcome</title><p>Please sign in</p>").into_response();
    }
    let password = s.password.lock().unwrap().clone();
    if basic(&headers) != Some((USER.to_owned(), password)) {
        let mut reply = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return reply;
    }
    let cgi = Cgi {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        headers,
        body,
    };
    let shared = s.clone();
    match tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || cgi.run(&shared))).await {
        Ok(Ok(Ok(output))) if output.status.success() => cgi_response(&output.stdout),
        Ok(Ok(Ok(output))) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "git http-backend failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        )
            .into_response(),
        Ok(Ok(Err(e))) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("git http-backend took longer than {WAIT:?}"),
        )
            .into_response(),
    }
}

/// The `user:password` of a basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// One authenticated request, handed to `git http-backend` with the CGI environment.
struct Cgi {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Cgi {
    fn header(&self, name: HeaderName) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs the backend once (blocking): its stdout is the CGI answer.
    fn run(&self, s: &Shared) -> std::io::Result<Output> {
        let mut command = Command::new(http_backend());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &s.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_PROJECT_ROOT", &s.projects)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", &self.method)
            .env("PATH_INFO", &self.path)
            .env("QUERY_STRING", &self.query)
            .env("REMOTE_USER", USER)
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("CONTENT_TYPE", self.header(header::CONTENT_TYPE))
            .env("CONTENT_LENGTH", self.body.len().to_string())
            .current_dir(&s.projects)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Protocol v2 and gzip request bodies, as a web server passes them on.
        for (name, var) in [
            ("git-protocol", "HTTP_GIT_PROTOCOL"),
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ] {
            if let Some(value) = self.headers.get(name).and_then(|v| v.to_str().ok()) {
                command.env(var, value);
            }
        }
        let mut child = command.spawn()?;
        // Written from another thread: the backend may answer before reading it all.
        let mut stdin = child.stdin.take();
        let body = self.body.clone();
        let writer = std::thread::spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                // A backend that stops reading early closes the pipe: not an error here.
                let _ = stdin.write_all(&body);
            }
        });
        let output = child.wait_with_output()?;
        let _ = writer.join();
        Ok(output)
    }
}

/// An HTTP answer from CGI output: header lines (`Status:` gives the status, 200 without
/// one), a blank line, the body.
fn cgi_response(stdout: &[u8]) -> Response {
    let (head, body) = match find(stdout, b"\r\n\r\n") {
        Some(at) => (&stdout[..at], &stdout[at + 4..]),
        None => match find(stdout, b"\n\n") {
            Some(at) => (&stdout[..at], &stdout[at + 2..]),
            None => (stdout, &[][..]),
        },
    };
    let mut reply = Response::new(axum::body::Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("500");
            *reply.status_mut() = StatusCode::from_bytes(code.as_bytes()).unwrap();
        } else {
            reply.headers_mut().append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
    }
    reply
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
