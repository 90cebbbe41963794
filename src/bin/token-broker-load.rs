//! `token-broker-load`, the load generator: drives one RPC path of a running broker through
//! its public gRPC API and reports throughput, latency percentiles (HDR histogram) and errors
//! by gRPC code.
//!
//! **Architecture invariant:** this binary is a client. From the `token_broker` library it
//! uses only the generated gRPC types (`token_broker::pb::v1`), plus `tonic_health` and the
//! bootstrap key file; it never links into server internals (`broker`, `store`, `policy`,
//! `keys`), so what it measures is what any client would see.
//!
//! It is bounded: every run stops by itself after `--duration` or `--requests`, and every
//! call has a timeout, so a stuck server cannot keep it running.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use token_broker::pb::v1::{
    CreateAccessKeyRequest, CreateAccessTokenRequest, CreateSubjectRequest, IntrospectTokenRequest,
    RevokeAccessTokenRequest, SubjectKind, access_key_service_client::AccessKeyServiceClient,
    subject_service_client::SubjectServiceClient, token_service_client::TokenServiceClient,
};

/// The project every load subject and token is scoped to.
const LOAD_PROJECT: &str = "load";
/// Highest latency the histogram tracks (µs); slower calls are clamped to it.
const MAX_TRACKED_US: u64 = 60_000_000;

/// Which RPC path a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Target {
    /// `grpc.health.v1.Health/Check`: the transport floor every other path pays.
    Health,
    /// `CreateAccessToken` authenticated by an access key (HMAC + sled lookups).
    MintKey,
    /// `CreateAccessToken` authenticated by an access token (JWT verify + sled lookups).
    MintToken,
    /// `IntrospectToken` over a pool of distinct live tokens, so no cache can hide the
    /// verification cost.
    Introspect,
    /// `IntrospectToken` of one token over and over (the cache-friendly best case).
    IntrospectSame,
    /// `RevokeAccessToken` by jti over a pre-minted pool.
    Revoke,
}

/// Command-line options of `token-broker-load`.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "token-broker-load",
    version,
    about = "Drive a running broker with a bounded load and report throughput and latency"
)]
struct LoadOptions {
    /// The RPC path to drive.
    #[arg(long, value_enum)]
    target: Target,
    /// Broker address (keep it on loopback: the broker speaks plaintext).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Data dir of the broker, to read `bootstrap-admin.key`.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// The bootstrap admin key file (overrides `--data-dir`).
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Number of HTTP/2 connections (tonic channels); calls are spread round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight in total.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure, e.g. `10s` (default 10s unless `--requests` is given).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Stop after this many measured calls instead of after a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Time spent calling before measuring starts (not counted).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Distinct tokens pre-minted for `introspect` and `revoke`.
    #[arg(long, default_value_t = 10_000)]
    pool: usize,
    /// With `introspect`: use one token for every call (same as `--target introspect-same`).
    #[arg(long)]
    same_token: bool,
    /// Open loop: start calls at this many per second whatever the answers do (at most
    /// `--concurrency` in flight), and measure each call's latency from the moment it was
    /// due, so a stalled server shows as latency, not as fewer calls (no coordinated
    /// omission). Without it the loop is closed: each of `--concurrency` callers starts its
    /// next call when the last one answered.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Per-call timeout; a call that takes longer counts as DEADLINE_EXCEEDED.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// The options do not make sense together.
    #[error("invalid options: {0}")]
    Options(String),
    /// The admin key file could not be read.
    #[error("cannot read the admin key `{path}`: {source}")]
    AdminKey {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The broker could not be reached.
    #[error("cannot connect to `{addr}`: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The transport failure.
        source: tonic::transport::Error,
    },
    /// Creating the load subject, key or token pool failed.
    #[error("setup failed while {step}: {status}")]
    Setup {
        /// What was being set up.
        step: &'static str,
        /// The broker's answer.
        status: Box<tonic::Status>,
    },
}

/// Latency percentiles of the successful calls, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
struct Latency {
    /// Median.
    p50: u64,
    /// 90th percentile.
    p90: u64,
    /// 99th percentile.
    p99: u64,
    /// 99.9th percentile.
    p999: u64,
    /// Slowest call.
    max: u64,
    /// Arithmetic mean.
    mean: f64,
}

/// The outcome of one run, printed as a table or as JSON.
#[derive(Clone, Debug, Serialize)]
struct Report {
    /// The path driven.
    target: Target,
    /// The broker address.
    addr: String,
    /// Connections used.
    connections: usize,
    /// Calls in flight.
    concurrency: usize,
    /// The open-loop rate asked for (calls/s), when `--rate` was given.
    target_rate: Option<f64>,
    /// Length of the measured window in seconds.
    elapsed_secs: f64,
    /// Successful measured calls.
    successes: u64,
    /// Failed measured calls, all codes together.
    error_total: u64,
    /// Failed measured calls by gRPC code name (`INACTIVE` for an introspection that
    /// answered OK but not active, which the load tool never expects).
    errors: BTreeMap<String, u64>,
    /// Successful calls per second over the measured window.
    requests_per_sec: f64,
    /// Latency of the successful calls.
    latency_us: Latency,
    /// Tokens pre-minted before timing (pool size).
    pre_minted: usize,
    /// Revocations that found the token already revoked (the pool wrapped around).
    already_revoked: u64,
    /// Seconds spent on setup (subject, key, pool).
    setup_secs: f64,
    /// Wall-clock start of the measured window (Unix seconds), to line the run up with
    /// outside samples such as the server's CPU time in `/proc/<pid>/stat`.
    window_start_unix: f64,
    /// Wall-clock end of the measured window (Unix seconds).
    window_end_unix: f64,
}

impl Report {
    /// The report as pretty JSON, for scripts and the integration test.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a human-readable table.
    fn table(&self) -> String {
        let l = &self.latency_us;
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let mut out = String::new();
        let target = serde_json::to_value(self.target)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "target        {target}\naddr          {}\nconnections   {}\nconcurrency   {}\n",
            self.addr, self.connections, self.concurrency
        ));
        if let Some(rate) = self.target_rate {
            out.push_str(&format!(
                "rate          {rate:.0} calls/s asked (open loop; latency from each call's due time)\n"
            ));
        }
        if self.pre_minted > 0 {
            out.push_str(&format!(
                "pool          {} tokens (setup {:.1} s)\n",
                self.pre_minted, self.setup_secs
            ));
        }
        out.push_str(&format!(
            "elapsed       {:.2} s\nsuccesses     {}\nerrors        {}\nthroughput    {:.0} calls/s\n",
            self.elapsed_secs, self.successes, self.error_total, self.requests_per_sec
        ));
        out.push_str(&format!(
            "latency       p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.3} ms\n",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.mean / 1000.0
        ));
        for (code, n) in &self.errors {
            out.push_str(&format!("  {code:<24} {n}\n"));
        }
        if self.already_revoked > 0 {
            out.push_str(&format!(
                "note          {} revocations found the token already revoked (pool wrapped)\n",
                self.already_revoked
            ));
        }
        out
    }
}

/// The stable upper-case name of a gRPC code, as in the gRPC spec.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// mimalloc, as in the server: the load tool shares the cores with the broker it measures,
/// so its own allocation cost is kept as low as the server's (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the flags, runs one bounded load and prints its report (table or JSON).
fn main() -> ExitCode {
    let options = <LoadOptions as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(run(&options)) {
        Ok(report) if options.json => {
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("token-broker-load: {error}");
    ExitCode::FAILURE
}

// === setup ===

type Bearer = MetadataValue<tonic::metadata::Ascii>;

fn bearer(secret: &str) -> Result<Bearer, LoadError> {
    MetadataValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| LoadError::Options("the credential is not valid ascii metadata".to_owned()))
}

fn authed<T>(message: T, credential: &Bearer) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", credential.clone());
    request
}

/// The mint every load path uses: the load project, `read`, one hour (so tokens minted from
/// a two-hour parent token never outlive it).
fn mint_request() -> CreateAccessTokenRequest {
    CreateAccessTokenRequest {
        project_ids: vec![LOAD_PROJECT.to_owned()],
        permissions: vec!["read".to_owned()],
        expires_in_hours: Some(1.0),
        audience: String::new(),
    }
}

fn setup_error(step: &'static str) -> impl FnOnce(tonic::Status) -> LoadError {
    move |status| LoadError::Setup {
        step,
        status: Box::new(status),
    }
}

async fn connect(addr: &str) -> Result<Channel, LoadError> {
    let connect_error = |source| LoadError::Connect {
        addr: addr.to_owned(),
        source,
    };
    Endpoint::from_shared(addr.to_owned())
        .map_err(connect_error)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(connect_error)
}

/// What the workers need: the credential they present and the tokens they operate on.
struct Fixture {
    credential: Bearer,
    /// Access tokens (introspect) or jtis (revoke).
    pool: Vec<String>,
}

/// Creates a fresh subject `load-<random>` and its access key with the admin key, then
/// whatever the target needs before timing starts.
async fn setup(
    opts: &LoadOptions,
    target: Target,
    channel: &Channel,
) -> Result<Fixture, LoadError> {
    let path = opts
        .admin_key_file
        .clone()
        .unwrap_or_else(|| opts.data_dir.join("bootstrap-admin.key"));
    let admin =
        std::fs::read_to_string(&path).map_err(|source| LoadError::AdminKey { path, source })?;
    let admin = bearer(admin.trim())?;
    if target == Target::Health {
        return Ok(Fixture {
            credential: admin,
            pool: Vec::new(),
        });
    }

    let subject_id = format!("load-{}", uuid::Uuid::new_v4().simple());
    SubjectServiceClient::new(channel.clone())
        .create_subject(authed(
            CreateSubjectRequest {
                subject_id: subject_id.clone(),
                kind: SubjectKind::Service as i32,
                project_ids: vec![LOAD_PROJECT.to_owned()],
                permissions: vec!["read".to_owned(), "write".to_owned()],
            },
            &admin,
        ))
        .await
        .map_err(setup_error("creating the load subject"))?;
    let key = AccessKeyServiceClient::new(channel.clone())
        .create_access_key(authed(
            CreateAccessKeyRequest {
                owner: subject_id.clone(),
                name: "load".to_owned(),
                description: "created by token-broker-load".to_owned(),
                permissions: vec!["read".to_owned(), "write".to_owned()],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .map_err(setup_error("creating the load access key"))?
        .into_inner();
    let key = bearer(&key.secret)?;

    let tokens = TokenServiceClient::new(channel.clone());
    match target {
        Target::Health | Target::MintKey => Ok(Fixture {
            credential: key,
            pool: Vec::new(),
        }),
        Target::MintToken => {
            let parent = tokens
                .clone()
                .create_access_token(authed(
                    CreateAccessTokenRequest {
                        expires_in_hours: Some(2.0),
                        ..mint_request()
                    },
                    &key,
                ))
                .await
                .map_err(setup_error("minting the parent token"))?
                .into_inner();
            Ok(Fixture {
                credential: bearer(&parent.access_token)?,
                pool: Vec::new(),
            })
        }
        Target::Introspect | Target::IntrospectSame | Target::Revoke => {
            let size = match (target, opts.same_token) {
                (Target::IntrospectSame, _) | (Target::Introspect, true) => 1,
                (Target::Revoke, _) => opts
                    .requests
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(opts.pool))
                    .unwrap_or(opts.pool)
                    .max(1),
                _ => opts.pool.max(1),
            };
            let pool = pre_mint(&tokens, &key, size, opts.concurrency.max(1)).await?;
            let pool = if target == Target::Revoke {
                pool.into_iter().map(|(_, jti)| jti).collect()
            } else {
                pool.into_iter().map(|(token, _)| token).collect()
            };
            Ok(Fixture {
                credential: key,
                pool,
            })
        }
    }
}

/// Mints `size` tokens with `parallel` calls in flight; returns (token, jti) pairs.
async fn pre_mint(
    tokens: &TokenServiceClient<Channel>,
    key: &Bearer,
    size: usize,
    parallel: usize,
) -> Result<Vec<(String, String)>, LoadError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.min(size) {
        let (mut client, key, next) = (tokens.clone(), key.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut minted = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < size as u64 {
                let reply = client
                    .create_access_token(authed(mint_request(), &key))
                    .await?
                    .into_inner();
                minted.push((reply.access_token, reply.jti));
            }
            Ok::<_, tonic::Status>(minted)
        });
    }
    let mut pool = Vec::with_capacity(size);
    while let Some(joined) = tasks.join_next().await {
        let minted = joined
            .map_err(|e| tonic::Status::internal(e.to_string()))
            .and_then(|r| r)
            .map_err(setup_error("pre-minting the token pool"))?;
        pool.extend(minted);
    }
    Ok(pool)
}

// === the run ===

/// One worker's tallies, merged at the end.
struct Tally {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    already_revoked: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn new(histogram: Histogram<u64>) -> Self {
        Self {
            histogram,
            errors: BTreeMap::new(),
            already_revoked: 0,
            last_done: None,
        }
    }
}

/// What one call ended in.
enum Outcome {
    Ok,
    AlreadyRevoked,
    Failed(&'static str),
}

/// The clients one worker calls through, bound to one connection.
struct Clients {
    tokens: TokenServiceClient<Channel>,
    health: HealthClient<Channel>,
}

/// Issues one call of `target`; `n` picks the pool entry.
async fn call(
    clients: &mut Clients,
    target: Target,
    fixture: &Fixture,
    n: u64,
    timeout: Duration,
) -> Outcome {
    let pick = || {
        let len = fixture.pool.len().max(1) as u64;
        fixture
            .pool
            .get((n % len) as usize)
            .cloned()
            .unwrap_or_default()
    };
    let credential = &fixture.credential;
    let call = async {
        match target {
            Target::Health => clients
                .health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| Outcome::Ok),
            Target::MintKey | Target::MintToken => clients
                .tokens
                .create_access_token(authed(mint_request(), credential))
                .await
                .map(|_| Outcome::Ok),
            Target::Introspect | Target::IntrospectSame => clients
                .tokens
                .introspect_token(authed(IntrospectTokenRequest { token: pick() }, credential))
                .await
                .map(|r| {
                    if r.into_inner().active {
                        Outcome::Ok
                    } else {
                        Outcome::Failed("INACTIVE")
                    }
                }),
            Target::Revoke => clients
                .tokens
                .revoke_access_token(authed(
                    RevokeAccessTokenRequest {
                        token: String::new(),
                        jti: pick(),
                    },
                    credential,
                ))
                .await
                .map(|r| {
                    if r.into_inner().revoked_count == 0 {
                        Outcome::AlreadyRevoked
                    } else {
                        Outcome::Ok
                    }
                }),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(status)) => Outcome::Failed(code_name(status.code())),
        Err(_) => Outcome::Failed(code_name(Code::DeadlineExceeded)),
    }
}

/// Runs the load described by `opts` and reports on the measured window. Always stops:
/// after the duration (default 10 s) or the request count, each call bounded by the timeout.
async fn run(opts: &LoadOptions) -> Result<Report, LoadError> {
    if opts.connections == 0 || opts.concurrency == 0 {
        return Err(LoadError::Options(
            "`--connections` and `--concurrency` must be at least 1".to_owned(),
        ));
    }
    if opts.requests == Some(0) {
        return Err(LoadError::Options(
            "`--requests` must be at least 1".to_owned(),
        ));
    }
    let target = match (opts.target, opts.same_token) {
        (Target::Introspect, true) => Target::IntrospectSame,
        (t, _) => t,
    };
    let mut channels = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        channels.push(connect(&opts.addr).await?);
    }
    let setup_started = Instant::now();
    let fixture = Arc::new(setup(opts, target, &channels[0]).await?);
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let start = Instant::now();
    let wall_start = unix_secs(std::time::SystemTime::now());
    let measure_from = start + opts.warmup;
    let deadline = match opts.requests {
        Some(_) => None,
        None => Some(measure_from + opts.duration.unwrap_or(Duration::from_secs(10))),
    };
    let empty = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3)
        .map_err(|e| LoadError::Options(format!("histogram: {e}")))?;
    let tickets = Arc::new(AtomicU64::new(0));
    let picks = Arc::new(AtomicU64::new(0));
    // Open loop: call k is due at start + k / rate.
    let due = Arc::new(AtomicU64::new(0));
    let rate = opts.rate;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..opts.concurrency {
        let channel = channels[i % channels.len()].clone();
        let mut clients = Clients {
            tokens: TokenServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        };
        let (fixture, tickets, picks, due) = (
            Arc::clone(&fixture),
            Arc::clone(&tickets),
            Arc::clone(&picks),
            Arc::clone(&due),
        );
        let (limit, timeout) = (opts.requests, opts.timeout);
        let mut tally = Tally::new(empty.clone());
        workers.spawn(async move {
            loop {
                let began = match rate {
                    Some(rate) => {
                        let k = due.fetch_add(1, Ordering::Relaxed);
                        let at = start + Duration::from_secs_f64(k as f64 / rate);
                        if deadline.is_some_and(|d| at >= d) {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                if deadline.is_some_and(|d| began >= d) {
                    break;
                }
                let counted = began >= measure_from;
                if counted
                    && let Some(limit) = limit
                    && tickets.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    break;
                }
                let n = picks.fetch_add(1, Ordering::Relaxed);
                let outcome = call(&mut clients, target, &fixture, n, timeout).await;
                let done = Instant::now();
                if !counted {
                    continue;
                }
                tally.last_done = Some(done);
                match outcome {
                    Outcome::Ok | Outcome::AlreadyRevoked => {
                        if matches!(outcome, Outcome::AlreadyRevoked) {
                            tally.already_revoked += 1;
                        }
                        let us = done.duration_since(began).as_micros();
                        tally
                            .histogram
                            .saturating_record(u64::try_from(us).unwrap_or(MAX_TRACKED_US).max(1));
                    }
                    Outcome::Failed(code) => *tally.errors.entry(code.to_owned()).or_default() += 1,
                }
            }
            tally
        });
    }

    let mut total = Tally::new(empty);
    while let Some(joined) = workers.join_next().await {
        let tally = match joined {
            Ok(t) => t,
            Err(_) => {
                // A worker that died is a failure of its calls, never a silent success.
                *total.errors.entry("WORKER_FAILED".to_owned()).or_default() += 1;
                continue;
            }
        };
        // Same bounds on both sides, so adding cannot fail.
        let _ = total.histogram.add(&tally.histogram);
        for (code, n) in tally.errors {
            *total.errors.entry(code).or_default() += n;
        }
        total.already_revoked += tally.already_revoked;
        total.last_done = total.last_done.max(tally.last_done);
    }

    let elapsed_secs = total
        .last_done
        .map(|t| t.saturating_duration_since(measure_from).as_secs_f64())
        .unwrap_or(0.0);
    let h = &total.histogram;
    let successes = h.len();
    Ok(Report {
        target,
        addr: opts.addr.clone(),
        connections: opts.connections,
        concurrency: opts.concurrency,
        target_rate: opts.rate,
        elapsed_secs,
        successes,
        error_total: total.errors.values().sum(),
        errors: total.errors,
        requests_per_sec: if elapsed_secs > 0.0 {
            successes as f64 / elapsed_secs
        } else {
            0.0
        },
        latency_us: if successes == 0 {
            Latency::default()
        } else {
            Latency {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            }
        },
        pre_minted: fixture.pool.len(),
        already_revoked: total.already_revoked,
        setup_secs,
        window_start_unix: wall_start + opts.warmup.as_secs_f64(),
        window_end_unix: wall_start + opts.warmup.as_secs_f64() + elapsed_secs,
    })
}

/// A positive, finite calls-per-second figure.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of calls per second"
        )),
    }
}

fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
