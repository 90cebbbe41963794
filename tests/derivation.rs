//! The derivation rule on the real core (DESIGN §3.1, issue 9): random callers — access keys
//! with random grants, expiries and restrictions, and tokens minted from them down random
//! chains — drive every credential-yielding operation (mint, create key, reset key, update a
//! key's grant, expiry, roles or inline policy, issue an upstream token, the Envoy `Check`
//! token exchange) with random requests.
//! Whatever a call yields is read back the way a client would obtain it (authenticating with
//! the new secret or token, the stored key, the vendor's own record) and must reach no further
//! than the caller in any dimension. The core is called directly, without the auth layer, so
//! this holds by code and not only by policy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::{collections::BTreeSet, path::Path, sync::Arc};

use common::{
    direct,
    fakes::{FakeBitbucket, FakeConfig, FakeDevelocity, FakeServer},
};
use envoy_types::{
    ext_authz::v3::pb::{Authorization, CheckRequest, HttpResponse},
    pb::envoy::service::auth::v3::attribute_context::HttpRequest,
};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestCaseError, TestRunner},
};
use token_broker::{
    api::Api,
    authz,
    broker::{Broker, Caller, CredentialKind, MasterKeySource, NewKey},
    config::{Config, EnvoyRoute, EnvoySettings, UpstreamSettings},
    domain::Projects,
    pb::v1 as pb,
};

const PROJECTS: [&str; 3] = ["a", "b", "c"];
const PERMS: [&str; 3] = ["read", "write", "admin"];
const INLINE: &str = "permit (principal, action, resource);";
const MAX_DEPTH: u32 = 2;

/// A set of projects or permissions as a bitmask: 0 is "omitted", bit 3 of projects is `*`.
fn projects(mask: u8) -> Vec<String> {
    if mask & 8 != 0 {
        return vec!["*".to_owned()];
    }
    PROJECTS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| (*p).to_owned())
        .collect()
}

fn perms(mask: u8) -> Vec<String> {
    PERMS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| (*p).to_owned())
        .collect()
}

/// The test's own implication table (`admin` ⊇ `write` ⊇ `read`), independent of the broker's.
fn expand<'a>(granted: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in granted {
        let implied: &[&str] = match p.as_str() {
            "admin" => &["admin", "write", "read"],
            "write" => &["write", "read"],
            other => &[other],
        };
        out.extend(implied.iter().map(|s| (*s).to_owned()));
    }
    out
}

/// Roles and inline policy by index: none, `reader`, `writer`, an inline permit.
fn restriction(index: u8) -> (String, Vec<String>) {
    match index % 4 {
        0 => (String::new(), Vec::new()),
        1 => (String::new(), vec!["reader".to_owned()]),
        2 => (String::new(), vec!["writer".to_owned()]),
        _ => (INLINE.to_owned(), Vec::new()),
    }
}

fn hours(index: u8) -> Option<f64> {
    [None, Some(0.5), Some(1.0), Some(3.0), Some(30.0)][usize::from(index % 5)]
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// What an obtained credential reaches, as the test reads it back.
#[derive(Debug)]
struct Obtained {
    what: &'static str,
    projects: Vec<String>,
    permissions: Vec<String>,
    /// Unix seconds; `None` never ends.
    end: Option<i64>,
    /// `(inline, roles)` when known (keys and tokens); vendor tokens carry none.
    restrictions: Option<(String, BTreeSet<String>)>,
    depth: Option<u32>,
}

impl Obtained {
    fn of_caller(what: &'static str, c: &Caller) -> Self {
        let (inline, roles) = c
            .key_policy
            .as_ref()
            .map(|k| {
                (
                    k.inline_policy.trim().to_owned(),
                    k.roles.iter().cloned().collect(),
                )
            })
            .unwrap_or_default();
        Self {
            what,
            projects: c.grant.projects.to_ids(),
            permissions: c.grant.permissions.iter().cloned().collect(),
            end: c.grant.not_after,
            restrictions: Some((inline, roles)),
            depth: (c.kind == CredentialKind::AccessToken).then_some(c.depth),
        }
    }
}

/// The property: `got` reaches no further than `caller`, dimension by dimension.
fn assert_within(got: &Obtained, caller: &Caller) -> Result<(), TestCaseError> {
    let what = got.what;
    if caller.grant.projects != Projects::All {
        let held: BTreeSet<String> = caller.grant.projects.to_ids().into_iter().collect();
        for p in &got.projects {
            prop_assert!(held.contains(p), "{what}: project `{p}` beyond {held:?}");
        }
    }
    let held = expand(&caller.grant.permissions);
    let asked = expand(&got.permissions);
    prop_assert!(asked.is_subset(&held), "{what}: {asked:?} beyond {held:?}");
    if let Some(end) = caller.grant.not_after {
        prop_assert!(
            got.end.is_some_and(|e| e <= end),
            "{what}: ends {:?}, after the caller's {end}",
            got.end
        );
    }
    if let (Some(k), Some((inline, roles))) = (&caller.key_policy, &got.restrictions) {
        prop_assert_eq!(
            inline.as_str(),
            k.inline_policy.trim(),
            "{}: inline policy",
            what
        );
        let caller_roles: BTreeSet<String> = k.roles.iter().cloned().collect();
        prop_assert_eq!(roles, &caller_roles, "{}: roles", what);
    }
    if let Some(depth) = got.depth {
        let expected = match caller.kind {
            CredentialKind::AccessKey => 0,
            CredentialKind::AccessToken => caller.depth + 1,
        };
        if what == "minted token" || what == "exchanged token" {
            prop_assert_eq!(depth, expected, "{}: depth", what);
        }
        prop_assert!(depth <= MAX_DEPTH, "{what}: depth {depth}");
    }
    Ok(())
}

/// One random case: who calls (built from a subject, a key and a chain of mints) and what.
#[derive(Clone, Debug)]
struct Case {
    subject_projects: u8,
    subject_perms: u8,
    key_projects: u8,
    key_perms: u8,
    key_hours: u8,
    key_restriction: u8,
    chain: Vec<(u8, u8, u8)>,
    op: u8,
    req_projects: u8,
    req_perms: u8,
    req_hours: u8,
    req_restriction: u8,
    mask: u8,
    /// Half the requests are cut down to what the caller holds, so that most operations
    /// succeed and their results are checked; the other half are anything at all.
    fit: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1u8..16, 1u8..8, 0u8..16, 1u8..8, 0u8..5, 0u8..4),
        proptest::collection::vec((0u8..16, 0u8..8, 0u8..5), 0..4),
        (0u8..7, 0u8..16, 0u8..8, 0u8..5, 0u8..5, 0u8..32),
        any::<bool>(),
    )
        .prop_map(|(k, chain, r, fit)| Case {
            fit,
            subject_projects: k.0,
            subject_perms: k.1,
            key_projects: k.2,
            key_perms: k.3,
            key_hours: k.4,
            key_restriction: k.5,
            chain,
            op: r.0,
            req_projects: r.1,
            req_perms: r.2,
            req_hours: r.3,
            req_restriction: r.4,
            mask: r.5,
        })
}

struct World {
    broker: Arc<Broker>,
    admin: Caller,
    _vendors: [FakeServer; 2],
}

/// The upstreams vendor tokens are issued from: a Develocity account reaching every project,
/// one reaching `a` and `b` (a token holds the requested projects within them), and a
/// Bitbucket Server account reaching only `a` (its tokens cannot be limited: they reach `a`).
const UPSTREAMS: [(&str, &[&str]); 3] = [("dv", &[]), ("dv-ab", &["a", "b"]), ("bb-a", &["a"])];

/// Envoy routes that exchange the caller's token for one of audience `svc`: (host,
/// permission, project).
const ROUTES: [(&str, &str, Option<&str>); 3] = [
    ("read.mesh", "read", None),
    ("write-a.mesh", "write", Some("a")),
    ("admin-b.mesh", "admin", Some("b")),
];

/// The service's audience the routes exchange to.
const SERVICE: &str = "svc";

async fn world(dir: &Path) -> World {
    let vendor = FakeDevelocity::start(FakeConfig::default()).await;
    let config = Config {
        data_dir: dir.to_owned(),
        policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        max_delegation_depth: MAX_DEPTH,
        audiences: vec![SERVICE.to_owned()],
        envoy: EnvoySettings {
            routes: ROUTES
                .iter()
                .map(|(host, permission, project)| EnvoyRoute {
                    host: (*host).to_owned(),
                    path_prefix: "/".to_owned(),
                    permission: (*permission).to_owned(),
                    project: project.map(str::to_owned),
                    audience: Some(SERVICE.to_owned()),
                })
                .collect(),
            ..EnvoySettings::default()
        },
        upstreams: UpstreamSettings {
            allow_insecure_http: true,
            allow_private_addresses: true,
            ..UpstreamSettings::default()
        },
        ..Config::default()
    };
    let broker = Broker::open(config, MasterKeySource::File).await.unwrap();
    let secret = std::fs::read_to_string(dir.join("bootstrap-admin.key")).unwrap();
    let admin = broker
        .authn
        .authenticate(secret.trim(), broker.now())
        .unwrap();
    let bitbucket = FakeBitbucket::start(FakeConfig::default()).await;
    for (name, reach) in UPSTREAMS {
        let (vendor_kind, fake, credential) = if name.starts_with("bb") {
            let c = FakeConfig::default();
            let credential = pb::Credential {
                username: c.username,
                password: c.password,
                ..Default::default()
            };
            (pb::Vendor::BitbucketServer, &bitbucket, credential)
        } else {
            let credential = pb::Credential {
                token: FakeConfig::default().token,
                ..Default::default()
            };
            (pb::Vendor::Develocity, &vendor, credential)
        };
        let request = pb::CreateUpstreamRequest {
            name: name.to_owned(),
            vendor: vendor_kind as i32,
            base_url: fake.base_url(),
            credential: Some(credential),
            options: [("user_slug".to_owned(), "bob".to_owned())].into(),
            project_ids: reach.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        };
        broker
            .upstreams
            .create_upstream(authz::authorize(&broker, admin.clone(), request).unwrap())
            .await
            .unwrap();
    }
    World {
        broker,
        admin,
        _vendors: [vendor, bitbucket],
    }
}

/// Builds the caller of a case, with its root key's id and the bearer it presents (the key's
/// secret or the last token of the chain); `None` when the random setup itself is refused (a
/// key wider than its subject, a chain that cannot go on), which says nothing about the
/// property.
async fn caller_of(w: &World, n: usize, c: &Case) -> Option<(Caller, String, String)> {
    let b = &w.broker;
    let now = b.now();
    let subject = format!("s{n}");
    let request = pb::CreateSubjectRequest {
        subject_id: subject.clone(),
        kind: pb::SubjectKind::User as i32,
        project_ids: projects(c.subject_projects),
        permissions: perms(c.subject_perms),
    };
    b.subjects
        .create_subject(authz::authorize(b, w.admin.clone(), request).unwrap())
        .await
        .map_err(|e| eprintln!("subject: {e}"))
        .ok()?;
    // The setup stays within what it is built from, so most cases reach the operation.
    let within = |mask: u8, bound: u8| {
        if bound & 8 != 0 {
            mask
        } else {
            mask & bound & 7
        }
    };
    let key_projects = within(c.key_projects, c.subject_projects);
    let key_perms = match c.key_perms & c.subject_perms {
        0 => c.subject_perms,
        m => m,
    };
    let (inline, roles) = restriction(c.key_restriction);
    let key = direct::create_key(
        b,
        &w.admin,
        NewKey {
            owner: &subject,
            name: "k",
            project_ids: &projects(key_projects),
            permissions: &perms(key_perms),
            inline_policy: &inline,
            roles: &roles,
            expires_at: hours(c.key_hours).map(|h| timestamp(now + (h * 3600.0) as i64)),
            ..NewKey::default()
        },
    )
    .await
    .ok()?;
    let mut caller = b.authn.authenticate(key.secret.expose(), now).ok()?;
    let mut bearer = key.secret.expose().to_owned();
    let mut bound = if key_projects == 0 {
        c.subject_projects
    } else {
        key_projects
    };
    for (p, q, h) in &c.chain {
        let p = within(*p, bound);
        if p != 0 {
            bound = p;
        }
        let minted = direct::mint(b, &caller, &projects(p), &perms(*q & key_perms), hours(*h))
            .await
            .ok()?;
        caller = b.authn.authenticate(&minted.token, now).ok()?;
        bearer = minted.token;
    }
    Some((caller, key.record.id, bearer))
}

/// Runs the case's operation; `Some` is what the caller obtained when the call succeeded.
async fn run(
    w: &World,
    n: usize,
    c: &Case,
    caller: &Caller,
    root: &str,
    bearer: &str,
) -> Option<Obtained> {
    let b = &w.broker;
    let now = b.now();
    let mut req_projects = projects(c.req_projects);
    let mut req_perms = perms(c.req_perms);
    let (mut inline, mut roles) = restriction(c.req_restriction);
    let mut req_hours = hours(c.req_hours);
    if c.fit {
        req_projects.retain(|p| p != "*" && caller.grant.projects.covers(p));
        let held = expand(&caller.grant.permissions);
        req_perms.retain(|p| held.contains(p));
        req_hours = req_hours.filter(|h| *h <= 0.5);
        if let Some(k) = &caller.key_policy {
            inline = k.inline_policy.clone();
            roles = k.roles.clone();
        }
    }
    match c.op {
        0 => {
            let minted = direct::mint(b, caller, &req_projects, &req_perms, req_hours)
                .await
                .ok()?;
            let got = b.authn.authenticate(&minted.token, now).unwrap();
            Some(Obtained::of_caller("minted token", &got))
        }
        1 => {
            let (inline, roles) = if c.req_restriction == 4 {
                (String::new(), Vec::new())
            } else {
                (inline, roles)
            };
            let created = direct::create_key(
                b,
                caller,
                NewKey {
                    name: &format!("made-{n}"),
                    project_ids: &req_projects,
                    permissions: &if req_perms.is_empty() {
                        vec!["read".to_owned()]
                    } else {
                        req_perms
                    },
                    inline_policy: &inline,
                    roles: &roles,
                    expires_at: req_hours.map(|h| timestamp(now + (h * 3600.0) as i64)),
                    ..NewKey::default()
                },
            )
            .await
            .ok()?;
            let got = b.authn.authenticate(created.secret.expose(), now).unwrap();
            Some(Obtained::of_caller("created key", &got))
        }
        2 => {
            let reset = direct::reset_key(b, caller, root).await.ok()?;
            let got = b.authn.authenticate(reset.secret.expose(), now).unwrap();
            Some(Obtained::of_caller("reset own root key", &got))
        }
        3 => {
            // A sibling key of the same owner made by the admin: as wide as the owner, or,
            // for a fitting case, no wider than the caller.
            let owner = caller.subject.grant.clone().unwrap();
            let (projects, permissions, end, inline, roles) = if c.fit {
                let k = caller.key_policy.clone();
                (
                    caller.grant.projects.to_ids(),
                    caller.grant.permissions.iter().cloned().collect(),
                    caller.grant.not_after,
                    k.as_ref()
                        .map(|k| k.inline_policy.clone())
                        .unwrap_or_default(),
                    k.map(|k| k.roles).unwrap_or_default(),
                )
            } else {
                (
                    Vec::new(),
                    owner.permissions,
                    None,
                    String::new(),
                    Vec::new(),
                )
            };
            let sibling = direct::create_key(
                b,
                &w.admin,
                NewKey {
                    owner: &caller.subject.id,
                    name: "sibling",
                    project_ids: &projects,
                    permissions: &permissions,
                    expires_at: end.map(timestamp),
                    inline_policy: &inline,
                    roles: &roles,
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
            let reset = direct::reset_key(b, caller, &sibling.record.id)
                .await
                .ok()?;
            let got = b.authn.authenticate(reset.secret.expose(), now).unwrap();
            Some(Obtained::of_caller("reset sibling key", &got))
        }
        4 => {
            let fields = [
                "project_ids",
                "permissions",
                "expires_at",
                "inline_policy",
                "roles",
            ];
            let mut paths: Vec<String> = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| c.mask & (1 << i) != 0)
                .map(|(_, f)| (*f).to_owned())
                .collect();
            let mut expires_at = req_hours.map(|h| timestamp(now + (h * 3600.0) as i64));
            if c.fit && caller.grant.not_after.is_some() {
                // A key changed by an expiring credential must end within it.
                paths.retain(|p| p != "expires_at");
                paths.push("expires_at".to_owned());
                expires_at = caller.grant.not_after.map(timestamp);
            }
            let changes = pb::AccessKey {
                project_ids: req_projects,
                permissions: req_perms,
                expires_at,
                inline_policy: inline,
                roles,
                ..pb::AccessKey::default()
            };
            let (key, _) = direct::update_key(b, caller, root, &paths, &changes)
                .await
                .ok()?;
            if paths.is_empty() {
                return None;
            }
            let grant = key.grant.unwrap_or_default();
            Some(Obtained {
                what: "updated root key",
                projects: grant.projects,
                permissions: grant.permissions,
                end: (key.expires_at > 0).then_some(key.expires_at),
                restrictions: Some((
                    key.inline_policy.trim().to_owned(),
                    key.roles.into_iter().collect(),
                )),
                depth: None,
            })
        }
        5 => {
            let (upstream, _) = UPSTREAMS[n % UPSTREAMS.len()];
            if c.fit && upstream.starts_with("bb") {
                // A token that cannot be limited fits only when it asks for the upstream's
                // projects: omitted.
                req_projects.clear();
            }
            let issued = direct::issue(b, caller, upstream, &req_projects, &req_perms, req_hours)
                .await
                .ok()?;
            // The broker grant the vendor token was issued under: what the rule bounds (the
            // vendor's own permission names differ per vendor).
            let grant = issued.lease.grant.clone().unwrap_or_default();
            Some(Obtained {
                what: upstream,
                projects: grant.projects,
                permissions: grant.permissions,
                end: Some(issued.lease.expires_at),
                restrictions: None,
                depth: None,
            })
        }
        _ => {
            // Envoy sends an access token: a key caller first mints one inheriting all it holds.
            let token = match caller.kind {
                CredentialKind::AccessToken => bearer.to_owned(),
                CredentialKind::AccessKey => {
                    direct::mint(b, caller, &[], &[], None).await.ok()?.token
                }
            };
            exchange(w, n, caller, &token).await
        }
    }
}

/// Sends `token` through `Check` on one of the exchanging routes, as Envoy would, and reads
/// back the exchanged token the service would receive.
async fn exchange(w: &World, n: usize, caller: &Caller, token: &str) -> Option<Obtained> {
    let b = &w.broker;
    let (host, _, _) = ROUTES[n % ROUTES.len()];
    let mut http = HttpRequest {
        method: "GET".to_owned(),
        host: host.to_owned(),
        path: "/x".to_owned(),
        ..HttpRequest::default()
    };
    http.headers
        .insert("authorization".to_owned(), format!("Bearer {token}"));
    let mut request = CheckRequest::default();
    request
        .attributes
        .get_or_insert_default()
        .request
        .get_or_insert_default()
        .http = Some(http);
    let answer = Api::new(Arc::clone(b))
        .check(tonic::Request::new(request))
        .await
        .ok()?
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = answer.http_response else {
        return None;
    };
    let exchanged = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "authorization")
        .and_then(|h| h.value.strip_prefix("Bearer "))
        .expect("an allowed exchanging route sets the exchanged token")
        .to_owned();
    let got = b
        .authn
        .authenticate_mesh(&exchanged, Some(SERVICE), b.now())
        .unwrap();
    let mut obtained = Obtained::of_caller("exchanged token", &got);
    if caller.kind == CredentialKind::AccessKey {
        // Two steps below a key: the inherited token (depth 0), then the exchange (depth 1).
        obtained.what = "exchanged token via a key";
    }
    Some(obtained)
}

#[test]
fn no_call_yields_a_credential_wider_than_its_caller() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = rt.block_on(world(dir.path()));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 384,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let yielded: [std::sync::atomic::AtomicUsize; 7] = Default::default();
    let from_upstream: [std::sync::atomic::AtomicUsize; UPSTREAMS.len()] = Default::default();
    runner
        .run(&case(), |c| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(async {
                let Some((caller, root, bearer)) = caller_of(&w, n, &c).await else {
                    return Ok(());
                };
                if let Some(got) = run(&w, n, &c, &caller, &root, &bearer).await {
                    yielded[usize::from(c.op)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(i) = UPSTREAMS.iter().position(|(name, _)| *name == got.what) {
                        from_upstream[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    assert_within(&got, &caller)?;
                }
                Ok(())
            })
        })
        .unwrap();
    // The property must have been exercised, not vacuously true: every operation yielded.
    let yielded = yielded.map(std::sync::atomic::AtomicUsize::into_inner);
    eprintln!(
        "credentials yielded by mint, create key, reset own key, reset sibling, update, issue upstream, exchange: {yielded:?}"
    );
    assert!(yielded.iter().all(|n| *n > 0), "{yielded:?}");
    let from_upstream = from_upstream.map(std::sync::atomic::AtomicUsize::into_inner);
    eprintln!("vendor tokens issued from {UPSTREAMS:?}: {from_upstream:?}");
    // About 3 to 6 from each per run: required together (as likely as any one operation
    // yielding), so that project-bound upstreams are exercised without the check being flaky.
    assert!(from_upstream[1] + from_upstream[2] > 0, "{from_upstream:?}");
}

/// A key made by a token dies at the token's end, even after an admin extended the key: the
/// key's own expiry cannot revive what its maker no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_token_made_key_ends_with_its_token_even_when_extended() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path()).await;
    let b = &w.broker;
    let now = b.now();
    let minted = direct::mint(b, &w.admin, &[], &["read".to_owned()], Some(1.0))
        .await
        .unwrap();
    let token = b.authn.authenticate(&minted.token, now).unwrap();
    let made = direct::create_key(
        b,
        &token,
        NewKey {
            name: "made",
            permissions: &["read".to_owned()],
            ..NewKey::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(made.record.expires_at, minted.claims.exp);
    direct::update_key(
        b,
        &w.admin,
        &made.record.id,
        &["expires_at".to_owned()],
        &pb::AccessKey {
            expires_at: Some(timestamp(now + 10 * 3600)),
            ..pb::AccessKey::default()
        },
    )
    .await
    .unwrap();
    assert!(b.authn.authenticate(made.secret.expose(), now).is_ok());
    let after_token = minted.claims.exp + 1;
    let err = b
        .authn
        .authenticate(made.secret.expose(), after_token)
        .unwrap_err();
    assert!(err.to_string().contains("made by a token"), "{err}");
}
