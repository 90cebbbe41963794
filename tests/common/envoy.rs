//! A real Envoy (1.40, from `cargo xtask test`) in front of an HTTP echo service, with the
//! broker as its ext_authz cluster: the service mesh as a sidecar sees it. The echo service
//! records every request that reaches it, so a test sees what the service got (headers
//! added, replaced, removed) and whether anything got through at all.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::Request, response::IntoResponse};
use tokio::sync::Notify;

use super::WAIT;

/// One request as the service behind Envoy received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method and path as forwarded.
    pub method: String,
    pub path: String,
    /// Headers, lower-case names, every value.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Seen {
    /// The one value of `name`, if sent once.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.headers.get(name).map(Vec::as_slice) {
            Some([one]) => Some(one),
            Some(many) if many.len() > 1 => {
                panic!("header {name} sent {} times: {many:?}", many.len())
            }
            _ => None,
        }
    }
}

/// The service behind Envoy: answers 200 `ok` and records what it saw.
pub struct Echo {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Fires on every request.
    pub arrived: Arc<Notify>,
}

impl Echo {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let app = Router::new()
            .fallback(record)
            .with_state((Arc::clone(&seen), Arc::clone(&arrived)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            seen,
            arrived,
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("no request reached the service")
    }
}

/// What the echo service shares with its handler: the requests seen, and their signal.
type Recorder = (Arc<Mutex<Vec<Seen>>>, Arc<Notify>);

async fn record(
    State((seen, arrived)): State<Recorder>,
    request: Request<axum::body::Body>,
) -> impl IntoResponse {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: request.uri().to_string(),
        headers,
    });
    arrived.notify_waiters();
    "ok"
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    /// `http://127.0.0.1:<port>`, the listener sidecar traffic enters by.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// The Envoy config of the README's "Service mesh" section, as written there except for the
/// addresses (loopback, the listener on an ephemeral port, this test's service and broker),
/// an admin interface on an ephemeral port, and a 10 s check timeout for a loaded machine. A
/// README edit that these replacements no longer find fails here.
pub fn config(broker: SocketAddr, service: SocketAddr) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("```yaml\nstatic_resources:")
        .expect("the README shows no Envoy config (```yaml with static_resources)")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let mut config = readme[start..end].to_owned();
    for (from, to) in [
        (
            "address: 0.0.0.0, port_value: 10000".to_owned(),
            "address: 127.0.0.1, port_value: 0".to_owned(),
        ),
        (
            "address: 127.0.0.1, port_value: 8080".to_owned(),
            format!("address: {}, port_value: {}", service.ip(), service.port()),
        ),
        (
            "address: token-broker.internal, port_value: 50051".to_owned(),
            format!("address: {}, port_value: {}", broker.ip(), broker.port()),
        ),
        ("timeout: 2s".to_owned(), "timeout: 10s".to_owned()),
    ] {
        assert!(
            config.contains(&from),
            "the README's Envoy config no longer has `{from}`"
        );
        config = config.replace(&from, &to);
    }
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n{config}"
    )
}

impl Envoy {
    /// Starts `binary` with [`config`] and waits until its listener is up.
    pub async fn start(binary: &Path, broker: SocketAddr, service: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config(broker, service)).unwrap();
        let admin_path = dir.path().join("admin-address");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut envoy = Envoy {
            child,
            url: String::new(),
            _dir: dir,
        };
        envoy.url = envoy.listener_url(&admin_path).await;
        envoy
    }

    /// Polls the admin interface (it has no push) until the listener is bound, with the
    /// suite's generous deadline: the interval only bounds how late the test notices.
    async fn listener_url(&mut self, admin_path: &Path) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("envoy exited before it was ready: {status}");
            }
            if let Ok(admin) = std::fs::read_to_string(admin_path)
                && let Ok(reply) = client
                    .get(format!("http://{}/listeners?format=json", admin.trim()))
                    .send()
                    .await
                && let Ok(listeners) = reply.json::<serde_json::Value>().await
                && let Some(port) = listeners["listener_statuses"][0]["local_address"]
                    ["socket_address"]["port_value"]
                    .as_u64()
                && port != 0
            {
                return format!("http://127.0.0.1:{port}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy did not bind its listener within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
