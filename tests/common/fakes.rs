//! Fake vendors: real axum HTTP servers on loopback that follow the seed documents field by
//! field and status by status, record every call, and keep the tokens they issue so a test can
//! use a returned token against the fake.
//!
//! Outage: `set_down(true)` makes the fake answer every request with HTTP 503 (the listener
//! keeps accepting, so the connector sees a vendor that is up but failing); `set_down(false)`
//! recovers. For a vendor that is gone altogether, `stop()` closes the listener; `restart()`
//! binds the same address again with the same state (tokens, calls), and `start_on(addr, ..)`
//! starts a fresh fake on a given address.
//!
//! Lost answers: `set_hang(Hang::AfterMinting)` makes the token-creating call store its token
//! (so the list calls show it) and then never answer, so the broker's request timeout fires
//! whatever the machine's speed; `Hang::BeforeMinting` never answers and stores nothing.
//! List calls page as the seeds say (`max_page_size` caps a page, so a test can make a
//! search read several).
//!
//! Hostile vendors: `echo` makes the fake answer HTTP 400 with the request's credential echoed
//! back in several encodings (a vendor that repeats the request in its errors), and
//! `oversized_replies` makes it answer 200 with a body over the broker's 1 MiB limit.
//!
//! The fakes listen on `http://127.0.0.1`, which the broker refuses by default: start brokers
//! that talk to them with [`LOOPBACK_VENDORS`] in their environment.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
};

/// Broker environment that allows the fakes' `http://127.0.0.1` destinations.
pub const LOOPBACK_VENDORS: (&str, &str) = (
    "TOKEN_BROKER_UPSTREAMS",
    "{ allow_insecure_http = true, allow_private_addresses = true }",
);

/// Text every echoed error starts with, so a test can tell vendor text from the broker's.
pub const ECHO_MARKER: &str = "vendor-echo-7f3a";

/// Which requests a hostile fake answers with an echo of the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Echo {
    /// None: the fake behaves.
    #[default]
    Never,
    /// Every request but GET, i.e. the token-creating and revoking calls (verify still works).
    Writes,
    /// Every request.
    Every,
}

/// Whether the token-creating call answers (see [`FakeServer::set_hang`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hang {
    /// It answers.
    #[default]
    Never,
    /// It never answers, and stores nothing: the vendor made no token.
    BeforeMinting,
    /// It stores the token (the list calls show it), then never answers.
    AfterMinting,
}

/// Which vendor a fake plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bitbucket,
    LaunchDarkly,
    Foreman,
    Develocity,
    GitHost,
}

/// What the fake accepts and how it behaves; `Default` gives working values for every vendor.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Basic-auth user (Bitbucket, Foreman, Git host).
    pub username: String,
    /// Basic-auth password (Bitbucket, Foreman, Git host).
    pub password: String,
    /// Header credential: Bitbucket bearer, LaunchDarkly API key, Develocity access key.
    pub token: String,
    /// Bitbucket `{userSlug}` that exists.
    pub user_slug: String,
    /// Foreman `:user_id` that exists.
    pub user_id: String,
    /// Bitbucket per-user maximum of live tokens.
    pub max_tokens: usize,
    /// LaunchDarkly: answer 429 to this many first calls.
    pub rate_limit_first: usize,
    /// LaunchDarkly: the `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Projects the stored key may reach (Develocity `projectIds`, LaunchDarkly `proj/..`);
    /// empty means any.
    pub allowed_projects: Vec<String>,
    /// Develocity permissions of the stored key; empty means any.
    pub allowed_permissions: Vec<String>,
    /// Answer these requests with HTTP 400 echoing the credential and the body.
    pub echo: Echo,
    /// Answer every request with HTTP 200 and a 2 MiB body streamed without a length.
    pub oversized_replies: bool,
    /// Most tokens one page of a list call holds, whatever the request asks.
    pub max_page_size: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: "admin-password-123".into(),
            token: "admin-api-key-456".into(),
            user_slug: "bob".into(),
            user_id: "7".into(),
            max_tokens: 100,
            rate_limit_first: 0,
            retry_after_secs: 1,
            allowed_projects: Vec::new(),
            allowed_permissions: Vec::new(),
            echo: Echo::Never,
            oversized_replies: false,
            max_page_size: 1000,
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order, repeats kept.
    pub query: Vec<(String, String)>,
    /// The JSON body, when there was one.
    pub body: Option<Value>,
    /// The raw `Authorization` header.
    pub auth: Option<String>,
}

impl Call {
    /// First value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A token the fake issued.
#[derive(Clone, Debug)]
pub struct FakeToken {
    pub id: String,
    pub token: String,
    pub name: String,
    /// What was asked for: the JSON body, or (Develocity) the query as an object.
    pub request: Value,
    /// Unix seconds, when the vendor expires it.
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

impl FakeToken {
    fn live(&self) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now())
    }
}

struct Shared {
    kind: Kind,
    config: FakeConfig,
    calls: Mutex<Vec<Call>>,
    tokens: Mutex<Vec<FakeToken>>,
    down: AtomicBool,
    next_id: AtomicU64,
    limited: AtomicUsize,
    /// Fires after every request the fake handled, so tests wait for a change without polling.
    handled: Notify,
    /// Whether the token-creating call answers.
    hang: Mutex<Hang>,
    /// Fires when the fake stops, ending the calls left hanging.
    released: Notify,
}

/// A running fake vendor; stops when dropped.
pub struct FakeServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

macro_rules! fake_vendor {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            /// Starts on an ephemeral loopback port.
            pub async fn start(config: FakeConfig) -> FakeServer {
                FakeServer::start($kind, config, SocketAddr::from(([127, 0, 0, 1], 0))).await
            }

            /// Starts on a given address, e.g. the one a previous fake had.
            pub async fn start_on(addr: SocketAddr, config: FakeConfig) -> FakeServer {
                FakeServer::start($kind, config, addr).await
            }
        }
    };
}

fake_vendor!(
    /// Bitbucket Server `rest/access-tokens/1.0/users/{userSlug}`; whoami is
    /// `GET rest/api/1.0/users/{userSlug}` with `Authorization: Bearer <issued token>`.
    FakeBitbucket,
    Kind::Bitbucket
);
fake_vendor!(
    /// LaunchDarkly `/api/v2/tokens`; whoami is `GET /api/v2/caller-identity` with the token.
    FakeLaunchDarkly,
    Kind::LaunchDarkly
);
fake_vendor!(
    /// Foreman `/api/users/:user_id/personal_access_tokens`; whoami is `GET /api/current_user`
    /// with basic auth `username:<token_value>`.
    FakeForeman,
    Kind::Foreman
);
fake_vendor!(
    /// Develocity `POST /api/auth/token`; whoami is `GET /api/builds` with `Bearer <token>`.
    FakeDevelocity,
    Kind::Develocity
);
fake_vendor!(
    /// A Git host taking basic auth on `GET /`.
    FakeGitHost,
    Kind::GitHost
);

impl FakeServer {
    async fn start(kind: Kind, config: FakeConfig, addr: SocketAddr) -> FakeServer {
        let shared = Arc::new(Shared {
            kind,
            config,
            calls: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            limited: AtomicUsize::new(0),
            handled: Notify::new(),
            hang: Mutex::new(Hang::Never),
            released: Notify::new(),
        });
        let mut server = FakeServer {
            shared,
            addr,
            stop: None,
            task: None,
        };
        server.listen().await;
        server
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("fake vendor cannot bind {}: {e}", self.addr));
        self.addr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
        }));
    }

    /// `http://127.0.0.1:<port>`, the vendor's server root.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address, to bring the fake back on it later.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.shared.calls.lock().unwrap().clear();
    }

    /// `true`: answer everything with 503 until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Whether (and where) the token-creating call hangs from now on.
    pub fn set_hang(&self, hang: Hang) {
        *self.shared.hang.lock().unwrap() = hang;
    }

    /// Every token issued so far, revoked ones included.
    pub fn issued_tokens(&self) -> Vec<FakeToken> {
        self.shared.tokens.lock().unwrap().clone()
    }

    /// Whether the vendor would accept `token` now (the Git host: whether it is the password).
    pub fn is_token_valid(&self, token: &str) -> bool {
        match self.shared.kind {
            Kind::GitHost => token == self.shared.config.password,
            _ => self.shared.live_token(token).is_some(),
        }
    }

    /// Waits until `check` holds, checking again after every request the fake handles;
    /// fails after [`super::WAIT`].
    pub async fn wait_until(&self, what: &str, check: impl Fn(&FakeServer) -> bool) {
        super::wait_until(&self.shared.handled, what, || check(self)).await;
    }

    /// Closes the listener (connections drain); state is kept for [`Self::restart`].
    pub async fn stop(&mut self) {
        self.shared.released.notify_waiters();
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            panic!("fake vendor on {} did not stop", self.addr);
        }
    }

    /// Binds the same address again with the same tokens and calls.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.released.notify_waiters();
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

// === request handling ===

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

impl Shared {
    fn live_token(&self, token: &str) -> Option<FakeToken> {
        self.tokens
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.token == token && t.live())
            .cloned()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    fn basic_ok(&self, headers: &HeaderMap) -> bool {
        basic(headers).is_some_and(|(u, p)| u == self.config.username && p == self.config.password)
    }
}

fn auth_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = auth_header(headers)?.strip_prefix("Basic ")?.to_owned();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    auth_header(headers)?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hang = if creates_token(s.kind, &method, uri.path()) {
        *s.hang.lock().unwrap()
    } else {
        Hang::Never
    };
    if hang == Hang::BeforeMinting {
        record(&s, &method, &uri, &headers, &body);
        s.handled.notify_waiters();
        s.released.notified().await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let response = answer(&s, method, uri, headers, body);
    s.handled.notify_waiters();
    if hang == Hang::AfterMinting {
        // Minted and stored: the answer is what gets lost.
        s.released.notified().await;
    }
    response
}

/// Whether the request is the vendor's token-creating call.
fn creates_token(kind: Kind, method: &Method, path: &str) -> bool {
    let path: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match (kind, path.as_slice()) {
        (Kind::Bitbucket, ["rest", "access-tokens", "1.0", "users", _]) => method == Method::PUT,
        (Kind::LaunchDarkly, ["api", "v2", "tokens"])
        | (Kind::Foreman, ["api", "users", _, "personal_access_tokens"])
        | (Kind::Develocity, ["api", "auth", "token"]) => method == Method::POST,
        _ => false,
    }
}

/// Records a call; returns its decoded query and JSON body.
fn record(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Vec<(String, String)>, Option<Value>) {
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let json: Option<Value> = serde_json::from_slice(body).ok();
    s.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: query.clone(),
        body: json.clone(),
        auth: auth_header(headers),
    });
    (query, json)
}

/// The `name` query parameter parsed as a number, or `default`.
fn number_param(query: &[(String, String)], name: &str, default: usize) -> usize {
    query
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

fn answer(s: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let (query, json) = record(s, &method, &uri, &headers, &body);
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response();
    }
    if s.config.oversized_replies {
        return oversized();
    }
    let echo = match s.config.echo {
        Echo::Never => false,
        Echo::Writes => method != Method::GET,
        Echo::Every => true,
    };
    if echo {
        return echoed(&headers, &uri, &body);
    }
    let path: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
    let req = Req {
        method,
        path: &path,
        query: &query,
        headers: &headers,
        json,
    };
    match s.kind {
        Kind::Bitbucket => bitbucket(s, req),
        Kind::LaunchDarkly => launchdarkly(s, req),
        Kind::Foreman => foreman(s, req),
        Kind::Develocity => develocity(s, req),
        Kind::GitHost => git_host(s, req),
    }
}

/// HTTP 400 whose message repeats the credential as sent, decoded, percent-encoded and
/// base64-encoded alone, then the query and body: the worst a vendor's error could carry.
fn echoed(headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Response {
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth = auth_header(headers).unwrap_or_default();
    let secret = match basic(headers) {
        Some((_, password)) => password,
        None => auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned(),
    };
    let decoded = basic(headers)
        .map(|(user, password)| format!("{user}:{password}"))
        .unwrap_or_default();
    let percent: String = auth
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let message = format!(
        "{ECHO_MARKER} cannot process: authorization={auth} decoded={decoded} secret={secret} b64={} percent={percent} query={} body={}",
        b64.encode(&secret),
        uri.query().unwrap_or_default(),
        String::from_utf8_lossy(body),
    );
    json_reply(
        StatusCode::BAD_REQUEST,
        json!({"message": message, "errors": [{"message": message}]}),
    )
}

/// HTTP 200 with 2 MiB of JSON-ish bytes, streamed in chunks and without `Content-Length`, so
/// only a reader that counts can stop it.
fn oversized() -> Response {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let chunks = (0..32).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let body = axum::body::Body::from_stream(tokio_stream::iter(chunks));
    (StatusCode::OK, body).into_response()
}

struct Req<'a> {
    method: Method,
    path: &'a [&'a str],
    query: &'a [(String, String)],
    headers: &'a HeaderMap,
    json: Option<Value>,
}

// === Bitbucket Server ===

const BITBUCKET_PERMISSIONS: [&str; 6] = [
    "REPO_READ",
    "REPO_WRITE",
    "REPO_ADMIN",
    "PROJECT_READ",
    "PROJECT_WRITE",
    "PROJECT_ADMIN",
];

fn bb_error(status: StatusCode, message: &str, exception: &str) -> Response {
    json_reply(
        status,
        json!({"errors": [{"context": null, "message": message, "exceptionName": exception}]}),
    )
}

fn bb_token_json(t: &FakeToken, with_secret: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "createdDate": 1_700_000_000_000_i64,
        "name": t.name,
        "permissions": t.request["permissions"],
        "expiryDays": t.request["expiryDays"],
        "expiryDate": t.expires_at.map(|s| s * 1000),
        "user": {"name": "bob", "slug": "bob", "type": "NORMAL", "active": true},
    });
    if with_secret {
        v["token"] = json!(t.token);
    }
    v
}

fn bitbucket(s: &Shared, r: Req<'_>) -> Response {
    let c = &s.config;
    match (r.method.clone(), r.path) {
        (Method::GET, ["rest", "api", "1.0", "users", slug]) => {
            match bearer(r.headers).and_then(|t| s.live_token(&t)) {
                Some(_) if *slug == c.user_slug => json_reply(
                    StatusCode::OK,
                    json!({"name": slug, "slug": slug, "active": true}),
                ),
                _ => bb_unauthorized(),
            }
        }
        (method, ["rest", "access-tokens", "1.0", "users", slug, rest @ ..]) => {
            let authed = s.basic_ok(r.headers) || bearer(r.headers).is_some_and(|t| t == c.token);
            if !authed {
                return bb_unauthorized();
            }
            if *slug != c.user_slug {
                return bb_error(
                    StatusCode::NOT_FOUND,
                    &format!("User {slug} does not exist."),
                    "com.atlassian.bitbucket.user.NoSuchUserException",
                );
            }
            match (method, rest) {
                (Method::GET, []) => {
                    let start = number_param(r.query, "start", 0);
                    let limit = number_param(r.query, "limit", 25).min(c.max_page_size);
                    let tokens = s.tokens.lock().unwrap();
                    let live: Vec<&FakeToken> = tokens.iter().filter(|t| !t.revoked).collect();
                    let values: Vec<Value> = live
                        .iter()
                        .skip(start)
                        .take(limit)
                        .map(|t| bb_token_json(t, false))
                        .collect();
                    let end = start + values.len();
                    let mut page = json!({"size": values.len(), "limit": limit, "isLastPage": end >= live.len(), "start": start, "values": values});
                    if end < live.len() {
                        page["nextPageStart"] = json!(end);
                    }
                    json_reply(StatusCode::OK, page)
                }
                (Method::PUT, []) => bb_create(s, r.json.unwrap_or(Value::Null)),
                (Method::GET, [id]) => match s
                    .tokens
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|t| t.id == *id && !t.revoked)
                {
                    Some(t) => json_reply(StatusCode::OK, bb_token_json(t, false)),
                    None => bb_no_token(id),
                },
                (Method::DELETE, [id]) => {
                    let mut tokens = s.tokens.lock().unwrap();
                    match tokens.iter_mut().find(|t| t.id == *id && !t.revoked) {
                        Some(t) => {
                            t.revoked = true;
                            StatusCode::NO_CONTENT.into_response()
                        }
                        None => bb_no_token(id),
                    }
                }
                _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn bb_unauthorized() -> Response {
    bb_error(
        StatusCode::UNAUTHORIZED,
        "Authentication failed. Please check your credentials and try again.",
        "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
    )
}

fn bb_no_token(id: &str) -> Response {
    bb_error(
        StatusCode::NOT_FOUND,
        &format!("No access token exists with ID {id}."),
        "com.atlassian.bitbucket.auth.NoSuchAccessTokenException",
    )
}

fn bb_create(s: &Shared, body: Value) -> Response {
    const BAD: &str = "com.atlassian.bitbucket.validation.ArgumentValidationException";
    let name = body["name"].as_str().unwrap_or_default();
    if name.trim().is_empty() {
        return bb_error(
            StatusCode::BAD_REQUEST,
            "The request does not contain a token name.",
            BAD,
        );
    }
    let permissions: Vec<&str> = body["permissions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if permissions.is_empty() {
        return bb_error(
            StatusCode::BAD_REQUEST,
            "The request does not contain a list of permissions, or the list of permissions is empty.",
            BAD,
        );
    }
    if let Some(unknown) = permissions
        .iter()
        .find(|p| !BITBUCKET_PERMISSIONS.contains(p))
    {
        return bb_error(
            StatusCode::BAD_REQUEST,
            &format!("The permission level '{unknown}' is unknown."),
            BAD,
        );
    }
    let mut tokens = s.tokens.lock().unwrap();
    if tokens.iter().filter(|t| t.live()).count() >= s.config.max_tokens {
        return bb_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "The user already has their maximum number of tokens ({}).",
                s.config.max_tokens
            ),
            "com.atlassian.bitbucket.auth.AccessTokenLimitReachedException",
        );
    }
    let expires_at = body["expiryDays"].as_i64().map(|d| now() + d * 86_400);
    let token = FakeToken {
        id: format!("{:012}", 100_000_000_000 + s.next_id()),
        token: format!("BBDC-{}", uuid::Uuid::new_v4().simple()),
        name: name.to_owned(),
        request: body.clone(),
        expires_at,
        revoked: false,
    };
    let reply = bb_token_json(&token, true);
    tokens.push(token);
    json_reply(StatusCode::OK, reply)
}

// === LaunchDarkly ===

fn ld_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_reply(status, json!({"code": code, "message": message}))
}

fn ld_token_json(t: &FakeToken, with_secret: bool) -> Value {
    let mut v = json!({
        "_id": t.id,
        "ownerId": "owner-1",
        "memberId": "member-1",
        "name": t.name,
        "creationDate": 1_700_000_000_000_i64,
        "lastModified": 1_700_000_000_000_i64,
        "inlineRole": t.request["inlineRole"],
        "serviceToken": t.request["serviceToken"].as_bool().unwrap_or(false),
        "defaultApiVersion": 20_220_603,
        "_links": {"self": {"href": format!("/api/v2/tokens/{}", t.id), "type": "application/json"}},
    });
    if with_secret {
        v["token"] = json!(t.token);
    } else {
        v["token"] = json!(format!("****{}", &t.token[t.token.len() - 4..]));
    }
    v
}

fn launchdarkly(s: &Shared, r: Req<'_>) -> Response {
    let c = &s.config;
    if s.limited.load(Ordering::SeqCst) < c.rate_limit_first {
        s.limited.fetch_add(1, Ordering::SeqCst);
        let mut reply = ld_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "You've exceeded the API rate limit. Try again later.",
        );
        reply.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&c.retry_after_secs.to_string()).unwrap(),
        );
        return reply;
    }
    let key = auth_header(r.headers);
    if let (Method::GET, ["api", "v2", "caller-identity"]) = (r.method.clone(), r.path) {
        return match key.as_deref().and_then(|k| s.live_token(k)) {
            Some(t) => json_reply(
                StatusCode::OK,
                json!({"tokenId": t.id, "tokenName": t.name}),
            ),
            None => ld_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Invalid access token",
            ),
        };
    }
    if key.as_deref() != Some(c.token.as_str()) {
        return ld_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid access token",
        );
    }
    match (r.method.clone(), r.path) {
        (Method::GET, ["api", "v2", "tokens"]) => {
            let limit = number_param(r.query, "limit", 25).min(c.max_page_size);
            let offset = number_param(r.query, "offset", 0);
            let tokens = s.tokens.lock().unwrap();
            let live: Vec<&FakeToken> = tokens.iter().filter(|t| !t.revoked).collect();
            let items: Vec<Value> = live
                .iter()
                .skip(offset)
                .take(limit)
                .map(|t| ld_token_json(t, false))
                .collect();
            json_reply(
                StatusCode::OK,
                json!({"items": items, "totalCount": live.len(), "_links": {}}),
            )
        }
        (Method::POST, ["api", "v2", "tokens"]) => ld_create(s, r.json.unwrap_or(Value::Null)),
        (Method::GET, ["api", "v2", "tokens", id]) => {
            match s
                .tokens
                .lock()
                .unwrap()
                .iter()
                .find(|t| t.id == *id && !t.revoked)
            {
                Some(t) => json_reply(StatusCode::OK, ld_token_json(t, false)),
                None => ld_not_found(),
            }
        }
        (Method::DELETE, ["api", "v2", "tokens", id]) => {
            let mut tokens = s.tokens.lock().unwrap();
            match tokens.iter_mut().find(|t| t.id == *id && !t.revoked) {
                Some(t) => {
                    t.revoked = true;
                    StatusCode::NO_CONTENT.into_response()
                }
                None => ld_not_found(),
            }
        }
        _ => ld_not_found(),
    }
}

fn ld_not_found() -> Response {
    ld_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "Invalid resource identifier",
    )
}

fn ld_create(s: &Shared, body: Value) -> Response {
    let bad = |m: &str| ld_error(StatusCode::BAD_REQUEST, "invalid_request", m);
    let name = body["name"].as_str().unwrap_or_default();
    if name.trim().is_empty() {
        return bad("name is required");
    }
    let statements = body["inlineRole"].as_array().cloned().unwrap_or_default();
    if statements.is_empty() && body["role"].is_null() && body["customRoleIds"].is_null() {
        return bad("a role, custom roles or an inline policy is required");
    }
    for st in &statements {
        if !matches!(st["effect"].as_str(), Some("allow" | "deny")) {
            return bad("inlineRole: effect must be allow or deny");
        }
        let non_empty = |f: &str| st[f].as_array().is_some_and(|a| !a.is_empty());
        if !non_empty("actions") || !non_empty("resources") {
            return bad("inlineRole: actions and resources are required");
        }
        for res in st["resources"].as_array().into_iter().flatten() {
            let Some(project) = res
                .as_str()
                .and_then(|r| r.strip_prefix("proj/"))
                .map(|r| r.split([':', ';']).next().unwrap_or_default())
            else {
                return bad(&format!("inlineRole: invalid resource {res}"));
            };
            let allowed = &s.config.allowed_projects;
            if !allowed.is_empty() && !allowed.iter().any(|a| a == project) {
                return ld_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Access to the requested resource was denied",
                );
            }
        }
    }
    let token = FakeToken {
        id: format!("{:024x}", s.next_id()),
        token: format!("api-{}", uuid::Uuid::new_v4()),
        name: name.to_owned(),
        request: body.clone(),
        expires_at: None,
        revoked: false,
    };
    let reply = ld_token_json(&token, true);
    s.tokens.lock().unwrap().push(token);
    json_reply(StatusCode::CREATED, reply)
}

// === Foreman ===

fn fm_error(status: StatusCode, message: &str) -> Response {
    json_reply(status, json!({"error": {"message": message}}))
}

fn fm_token_json(t: &FakeToken, with_secret: bool, user_id: &str) -> Value {
    let expires = t.expires_at.map(|at| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at.try_into().unwrap()))
            .to_string()
    });
    let mut v = json!({
        "id": t.id.parse::<u64>().unwrap(),
        "name": t.name,
        "user_id": user_id.parse::<u64>().ok(),
        "expires_at": expires,
        "created_at": "2023-11-14 22:13:20 UTC",
        "last_used_at": null,
        "active?": t.live(),
    });
    if with_secret {
        v["token_value"] = json!(t.token);
    }
    v
}

fn foreman(s: &Shared, r: Req<'_>) -> Response {
    let c = &s.config;
    if let (Method::GET, ["api", "current_user"]) = (r.method.clone(), r.path) {
        return match basic(r.headers) {
            Some((u, p)) if u == c.username && (p == c.password || s.live_token(&p).is_some()) => {
                json_reply(StatusCode::OK, json!({"id": c.user_id, "login": u}))
            }
            _ => fm_unauthorized(c),
        };
    }
    let ["api", "users", user_id, "personal_access_tokens", rest @ ..] = r.path else {
        return fm_error(StatusCode::NOT_FOUND, "Route not found");
    };
    if !s.basic_ok(r.headers) {
        return fm_unauthorized(c);
    }
    if *user_id != c.user_id {
        return fm_error(
            StatusCode::NOT_FOUND,
            &format!("Resource user not found by id '{user_id}'"),
        );
    }
    let not_found = |id: &str| {
        fm_error(
            StatusCode::NOT_FOUND,
            &format!("Resource personal_access_token not found by id '{id}'"),
        )
    };
    match (r.method.clone(), rest) {
        (Method::GET, []) => {
            let search = r.query.iter().find(|(k, _)| k == "search").map(|(_, v)| v);
            // The one search form the broker sends: `name = "…"`.
            let wanted = search.and_then(|q| {
                let value = q.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_owned())
            });
            let page = number_param(r.query, "page", 1).max(1);
            let per_page = number_param(r.query, "per_page", 20).min(c.max_page_size);
            let tokens = s.tokens.lock().unwrap();
            let matching: Vec<&FakeToken> = tokens
                .iter()
                .filter(|t| wanted.as_ref().is_none_or(|name| t.name == *name))
                .collect();
            let results: Vec<Value> = matching
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|t| fm_token_json(t, false, user_id))
                .collect();
            json_reply(
                StatusCode::OK,
                json!({"total": tokens.len(), "subtotal": matching.len(), "page": page, "per_page": per_page,
                       "search": search, "sort": {"by": null, "order": null}, "results": results}),
            )
        }
        (Method::GET, [id]) => match s.tokens.lock().unwrap().iter().find(|t| t.id == *id) {
            Some(t) => json_reply(StatusCode::OK, fm_token_json(t, false, user_id)),
            None => not_found(id),
        },
        (Method::POST, []) => {
            let body = r.json.unwrap_or(Value::Null);
            let pat = &body["personal_access_token"];
            let name = pat["name"].as_str().unwrap_or_default();
            if !pat.is_object() || name.trim().is_empty() {
                return fm_invalid("name", "can't be blank", "Name can't be blank");
            }
            let expires_at = match &pat["expires_at"] {
                Value::Null => None,
                Value::String(text) => match humantime::parse_rfc3339_weak(text) {
                    Ok(at) => Some(
                        i64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap(),
                    ),
                    Err(_) => {
                        return fm_invalid("expires_at", "is invalid", "Expires at is invalid");
                    }
                },
                _ => return fm_invalid("expires_at", "is invalid", "Expires at is invalid"),
            };
            let token = FakeToken {
                id: s.next_id().to_string(),
                token: uuid::Uuid::new_v4().simple().to_string(),
                name: name.to_owned(),
                request: body.clone(),
                expires_at,
                revoked: false,
            };
            let reply = fm_token_json(&token, true, user_id);
            s.tokens.lock().unwrap().push(token);
            json_reply(StatusCode::CREATED, reply)
        }
        // Revoked tokens are out of the revocable scope: a second revoke is a 404.
        (Method::DELETE, [id]) => {
            let mut tokens = s.tokens.lock().unwrap();
            match tokens.iter_mut().find(|t| t.id == *id && !t.revoked) {
                Some(t) => {
                    t.revoked = true;
                    json_reply(StatusCode::OK, fm_token_json(t, false, user_id))
                }
                None => not_found(id),
            }
        }
        _ => fm_error(StatusCode::NOT_FOUND, "Route not found"),
    }
}

fn fm_unauthorized(c: &FakeConfig) -> Response {
    fm_error(
        StatusCode::UNAUTHORIZED,
        &format!("Unable to authenticate user {}", c.username),
    )
}

fn fm_invalid(field: &str, error: &str, full: &str) -> Response {
    json_reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": {"id": null, "errors": {field: [error]}, "full_messages": [full]}}),
    )
}

// === Develocity ===

fn dv_problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let mut reply = json_reply(
        status,
        json!({"type": format!("urn:gradle:develocity:api:problems:{}", title.to_lowercase().replace(' ', "-")),
               "title": title, "status": status.as_u16(), "detail": detail}),
    );
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    reply
}

/// Comma-separated values and repeated parameters, as the seed allows both.
fn dv_values(query: &[(String, String)], name: &str) -> Vec<String> {
    query
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn develocity(s: &Shared, r: Req<'_>) -> Response {
    let c = &s.config;
    match (r.method.clone(), r.path) {
        (Method::GET, ["api", "builds"]) => {
            match bearer(r.headers).and_then(|t| s.live_token(&t)) {
                Some(_) => json_reply(StatusCode::OK, json!([])),
                None => dv_unauthorized(),
            }
        }
        (Method::POST, ["api", "auth", "token"]) => {
            if bearer(r.headers).as_deref() != Some(c.token.as_str()) {
                return dv_unauthorized();
            }
            let hours = match r.query.iter().find(|(k, _)| k == "expiresInHours") {
                None => 2.0,
                Some((_, v)) => match v.parse::<f64>() {
                    Ok(h) if h > 0.0 && h.is_finite() => h,
                    _ => {
                        return dv_problem(
                            StatusCode::BAD_REQUEST,
                            "Bad Request",
                            &format!("expiresInHours must be a positive number, not '{v}'"),
                        );
                    }
                },
            };
            let projects = dv_values(r.query, "projectIds");
            let permissions = dv_values(r.query, "permissions");
            let outside = |asked: &[String], held: &[String]| {
                asked
                    .iter()
                    .find(|a| !held.is_empty() && !held.contains(a))
                    .cloned()
            };
            if let Some(p) = outside(&projects, &c.allowed_projects) {
                return dv_problem(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!("Project '{p}' is not assigned to this user"),
                );
            }
            if let Some(p) = outside(&permissions, &c.allowed_permissions) {
                return dv_problem(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!("Permission '{p}' is not assigned to this user"),
                );
            }
            #[allow(clippy::cast_possible_truncation, reason = "hours are small")]
            let lifetime = (hours * 3600.0) as i64;
            let token = FakeToken {
                id: s.next_id().to_string(),
                token: format!("dv.{}", uuid::Uuid::new_v4().simple()),
                name: String::new(),
                request: json!({"projectIds": projects, "permissions": permissions, "expiresInHours": hours}),
                expires_at: Some(now() + lifetime),
                revoked: false,
            };
            let secret = token.token.clone();
            s.tokens.lock().unwrap().push(token);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                secret,
            )
                .into_response()
        }
        _ => dv_problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "The referenced resource does not exist",
        ),
    }
}

fn dv_unauthorized() -> Response {
    dv_problem(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "A valid access key or access token is required",
    )
}

// === Git host (password authorization) ===

fn git_host(s: &Shared, r: Req<'_>) -> Response {
    let upload_pack = r
        .query
        .iter()
        .any(|(k, v)| k == "service" && v == "git-upload-pack");
    match (r.method, r.path) {
        // The smart-HTTP ref advertisement `git ls-remote` asks for first.
        (Method::GET, ["info", "refs"]) if upload_pack && s.basic_ok(r.headers) => (
            [(
                header::CONTENT_TYPE,
                "application/x-git-upload-pack-advertisement",
            )],
            "001e# service=git-upload-pack\n0000",
        )
            .into_response(),
        (Method::GET, ["info", "refs"]) if upload_pack => {
            let mut reply = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            reply
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
