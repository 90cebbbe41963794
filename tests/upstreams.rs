//! Upstream delegation end to end: the real broker, real gRPC, and fake vendors that are real
//! HTTP servers on loopback following the seed documents.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{fakes::*, *};
use tonic::Code;

/// Short backoffs, and the fakes' `http://127.0.0.1` allowed as destinations.
const FAST_RETRY: [(&str, &str); 2] = [
    ("TOKEN_BROKER_UPSTREAM_RETRY_BACKOFF", "10ms"),
    LOOPBACK_VENDORS,
];

/// A broker on a fresh data dir with the shipped policies that may call the fakes.
async fn start_broker() -> (Broker, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    (b, data)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Presents `token` to the fake's "who am I" endpoint, as a client of the vendor would.
async fn use_at_vendor(vendor: pb::Vendor, fake: &FakeServer, token: &str) -> u16 {
    let http = reqwest::Client::new();
    let base = fake.base_url();
    let request = match vendor {
        pb::Vendor::BitbucketServer => http
            .get(format!("{base}/rest/api/1.0/users/bob"))
            .bearer_auth(token),
        pb::Vendor::Launchdarkly => http
            .get(format!("{base}/api/v2/caller-identity"))
            .header("authorization", token),
        pb::Vendor::Foreman => http
            .get(format!("{base}/api/current_user"))
            .basic_auth("admin", Some(token)),
        pb::Vendor::Develocity => http.get(format!("{base}/api/builds")).bearer_auth(token),
        _ => http
            .get(format!("{base}/"))
            .basic_auth("admin", Some(token)),
    };
    request.send().await.unwrap().status().as_u16()
}

async fn create_upstream(
    b: &Broker,
    admin: &str,
    name: &str,
    vendor: pb::Vendor,
    fake: &FakeServer,
    credential: pb::Credential,
) -> Result<pb::Upstream, tonic::Status> {
    create_upstream_at(b, admin, name, vendor, &fake.base_url(), credential).await
}

fn good_credential(vendor: pb::Vendor) -> pb::Credential {
    let c = FakeConfig::default();
    match vendor {
        pb::Vendor::Launchdarkly | pb::Vendor::Develocity => pb::Credential {
            token: c.token,
            ..Default::default()
        },
        _ => pb::Credential {
            username: c.username,
            password: c.password,
            token: String::new(),
        },
    }
}

fn wrong_credential(vendor: pb::Vendor) -> pb::Credential {
    let mut c = good_credential(vendor);
    if c.token.is_empty() {
        c.password = "wrong-password".into();
    } else {
        c.token = "wrong-key".into();
    }
    c
}

async fn issue(
    b: &Broker,
    cred: &str,
    upstream: &str,
    projects: &[&str],
    perms: &[&str],
    hours: Option<f64>,
) -> Result<pb::IssueUpstreamTokenResponse, tonic::Status> {
    b.upstreams()
        .await
        .issue_upstream_token(authed(
            pb::IssueUpstreamTokenRequest {
                upstream: upstream.to_owned(),
                permissions: strings(perms),
                project_ids: strings(projects),
                expires_in_hours: hours,
            },
            cred,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn revoke_token(b: &Broker, cred: &str, jti: &str) {
    b.tokens()
        .await
        .revoke_access_token(authed(
            pb::RevokeAccessTokenRequest {
                jti: jti.to_owned(),
                token: String::new(),
            },
            cred,
        ))
        .await
        .unwrap();
}

/// Waits until the lease worker has revoked `token` at the vendor; fails after [`WAIT`].
async fn until_revoked(fake: &FakeServer, token: &str, what: &str) {
    fake.wait_until(what, |f| !f.is_token_valid(token)).await;
}

async fn start_fake(vendor: pb::Vendor) -> FakeServer {
    let config = FakeConfig::default();
    match vendor {
        pb::Vendor::BitbucketServer => FakeBitbucket::start(config).await,
        pb::Vendor::Launchdarkly => FakeLaunchDarkly::start(config).await,
        pb::Vendor::Foreman => FakeForeman::start(config).await,
        pb::Vendor::Develocity => FakeDevelocity::start(config).await,
        _ => FakeGitHost::start(config).await,
    }
}

/// Create (good and wrong credential), issue within the grant, check the scoped request and
/// the token at the vendor, revoke the broker token and see the vendor token die.
async fn end_to_end(
    vendor: pb::Vendor,
    projects: &[&str],
    perms: &[&str],
) -> (FakeServer, Vec<common::fakes::Call>) {
    let fake = start_fake(vendor).await;
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();

    let up = create_upstream(&b, &admin, "up", vendor, &fake, good_credential(vendor))
        .await
        .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
    assert_eq!(up.vendor, vendor as i32);
    let wrong = create_upstream(&b, &admin, "wrong", vendor, &fake, wrong_credential(vendor))
        .await
        .unwrap();
    assert_eq!(wrong.status, pb::UpstreamStatus::Unauthenticated as i32);
    let err = issue(&b, &admin, "wrong", projects, perms, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    // A broker token for the caller, then a vendor token from it.
    let broker_token = mint(&b, &admin, projects, perms, Some(1.0)).await.unwrap();
    fake.clear_calls();
    let issued = issue(
        &b,
        &broker_token.access_token,
        "up",
        projects,
        perms,
        Some(0.5),
    )
    .await
    .unwrap();
    assert!(!issued.token.is_empty());
    assert!(issued.expires_at.unwrap().seconds <= broker_token.expires_at.unwrap().seconds);
    let calls = fake.calls();
    assert_eq!(
        use_at_vendor(vendor, &fake, &issued.token).await,
        200,
        "the token works at the vendor"
    );

    revoke_token(&b, &admin, &broker_token.jti).await;
    if vendor != pb::Vendor::Develocity {
        until_revoked(
            &fake,
            &issued.token,
            "vendor token revoked after the broker token",
        )
        .await;
        assert_ne!(use_at_vendor(vendor, &fake, &issued.token).await, 200);
    }
    assert!(
        !b.logs().contains(&issued.token),
        "vendor token never logged"
    );
    (fake, calls)
}

#[tokio::test]
async fn bitbucket_server_end_to_end() {
    let (fake, calls) = end_to_end(pb::Vendor::BitbucketServer, &["*"], &["read"]).await;
    let put = calls
        .iter()
        .find(|c| c.method == "PUT")
        .expect("a create call");
    assert_eq!(put.path, "/rest/access-tokens/1.0/users/bob");
    let body = put.body.as_ref().unwrap();
    assert_eq!(body["permissions"], serde_json::json!(["REPO_READ"]));
    assert_eq!(body["expiryDays"], 1);
    assert!(
        body["name"]
            .as_str()
            .unwrap()
            .starts_with("token-broker-ls_")
    );
    assert!(fake.calls().iter().any(|c| c.method == "DELETE"));
}

#[tokio::test]
async fn launchdarkly_end_to_end() {
    let (_fake, calls) = end_to_end(pb::Vendor::Launchdarkly, &["alpha"], &["read"]).await;
    let post = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("a create call");
    assert_eq!(post.path, "/api/v2/tokens");
    let role = &post.body.as_ref().unwrap()["inlineRole"][0];
    assert_eq!(
        role["resources"],
        serde_json::json!(["proj/alpha:env/*:flag/*"])
    );
    assert_eq!(role["effect"], "allow");
}

#[tokio::test]
async fn foreman_end_to_end() {
    let (_fake, calls) = end_to_end(pb::Vendor::Foreman, &["*"], &["admin"]).await;
    let post = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("a create call");
    assert_eq!(post.path, "/api/users/7/personal_access_tokens");
    assert!(post.body.as_ref().unwrap()["personal_access_token"]["expires_at"].is_string());
}

#[tokio::test]
async fn develocity_end_to_end() {
    let (_fake, calls) = end_to_end(pb::Vendor::Develocity, &["alpha"], &["read"]).await;
    let post = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("a create call");
    assert_eq!(post.path, "/api/auth/token");
    assert_eq!(post.param("projectIds"), Some("alpha"));
    assert_eq!(post.param("permissions"), Some("read"));
    let hours: f64 = post.param("expiresInHours").unwrap().parse().unwrap();
    assert!(hours > 0.4 && hours <= 0.5, "{hours}");
}

#[tokio::test]
async fn refusals_reach_no_vendor() {
    let fake = start_fake(pb::Vendor::Launchdarkly).await;
    let policies = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        policies.path().join("extra.cedar"),
        "@id(\"no-ld-writers\")\nforbid (principal, action == Action::\"IssueUpstreamToken\", resource == Upstream::\"ld\")\nwhen { context.requested.permissions.contains(\"write\") };\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(
        data.path(),
        policies.path(),
        &[
            (
                "TOKEN_BROKER_VENDOR_PERMISSIONS",
                "{ launchdarkly = { read = [\"reader\"], write = [\"writer\"] } }",
            ),
            LOOPBACK_VENDORS,
        ],
    )
    .await;
    let admin = b.admin_secret();
    create_upstream(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap();
    create_subject(&b, &admin, "alice", &["alpha"], &["read", "write"]).await;
    let key = create_key(&b, &admin, "alice", &["read", "write"]).await;
    let token = mint(&b, &key, &["alpha"], &["read"], Some(1.0))
        .await
        .unwrap()
        .access_token;
    fake.clear_calls();

    for (projects, perms, hours, code, what) in [
        (
            vec!["beta"],
            vec!["read"],
            None,
            Code::PermissionDenied,
            "`beta`",
        ),
        (
            vec!["alpha"],
            vec!["write"],
            None,
            Code::PermissionDenied,
            "`write`",
        ),
        (
            vec!["alpha"],
            vec!["read"],
            Some(3.0),
            Code::PermissionDenied,
            "lifetime",
        ),
    ] {
        let err = issue(&b, &token, "ld", &projects, &perms, hours)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(what), "{}", err.message());
    }
    // Unmapped permission (the table above maps no `admin`).
    let err = issue(&b, &admin, "ld", &["alpha"], &["admin"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`admin`"), "{}", err.message());
    // Cedar forbids writers on this upstream although attenuation allows it.
    let err = issue(&b, &key, "ld", &["alpha"], &["write"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("no-ld-writers"), "{}", err.message());
    assert!(
        fake.calls().is_empty(),
        "no call reached the vendor: {:?}",
        fake.calls()
    );
    // Bitbucket-like vendors cannot be limited to projects.
    let bb = start_fake(pb::Vendor::BitbucketServer).await;
    create_upstream(
        &b,
        &admin,
        "bb",
        pb::Vendor::BitbucketServer,
        &bb,
        good_credential(pb::Vendor::BitbucketServer),
    )
    .await
    .unwrap();
    let err = issue(&b, &key, "bb", &["alpha"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bb.calls().iter().filter(|c| c.method == "PUT").count(), 0);
    // Upstream administration is for admins.
    let err = create_upstream(
        &b,
        &key,
        "mine",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn git_password_needs_an_explicit_policy() {
    let fake = start_fake(pb::Vendor::GitPassword).await;
    let (b, _data) = start_broker().await;
    let admin = b.admin_secret();
    let up = create_upstream(
        &b,
        &admin,
        "git",
        pb::Vendor::GitPassword,
        &fake,
        good_credential(pb::Vendor::GitPassword),
    )
    .await
    .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
    assert_eq!(up.repo_user, "admin");
    assert_eq!(up.token_type, "password");
    let err = issue(&b, &admin, "git", &[], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("ReadUpstreamSecret"),
        "{}",
        err.message()
    );

    let policies = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        policies.path().join("extra.cedar"),
        "permit (principal == User::\"admin\", action == Action::\"ReadUpstreamSecret\", resource == Upstream::\"git\");\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), policies.path(), &[LOOPBACK_VENDORS]).await;
    let admin = b.admin_secret();
    create_upstream(
        &b,
        &admin,
        "git",
        pb::Vendor::GitPassword,
        &fake,
        good_credential(pb::Vendor::GitPassword),
    )
    .await
    .unwrap();
    let issued = issue(&b, &admin, "git", &[], &["read"], None)
        .await
        .unwrap();
    assert_eq!(issued.token, FakeConfig::default().password);
    assert!(!b.logs().contains(&issued.token));
}

#[tokio::test]
async fn expiry_revokes_at_the_vendor() {
    let fake = start_fake(pb::Vendor::Launchdarkly).await;
    let (b, _data) = start_broker().await;
    let admin = b.admin_secret();
    create_upstream(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap();
    // A broker token of 36 s; the lease cannot outlive it. The test moves the clock there.
    let short = mint(&b, &admin, &["alpha"], &["read"], Some(0.01))
        .await
        .unwrap();
    let issued = issue(&b, &short.access_token, "ld", &["alpha"], &["read"], None)
        .await
        .unwrap();
    let expires = issued.expires_at.unwrap().seconds;
    assert!(expires <= short.expires_at.unwrap().seconds);
    assert!(fake.is_token_valid(&issued.token));
    // Leases whose holders the test revokes: each one seen revoked at the vendor proves a
    // worker pass ran.
    let mut sentinels = Vec::new();
    for _ in 0..2 {
        let holder = mint(&b, &admin, &["alpha"], &["read"], Some(1.0))
            .await
            .unwrap();
        let lease = issue(&b, &holder.access_token, "ld", &["alpha"], &["read"], None)
            .await
            .unwrap();
        sentinels.push((holder.jti, lease.token));
    }
    // Stopped one second before the end: a whole worker pass (the one that revoked the first
    // sentinel, finished before the second is revoked) leaves the lease alone.
    b.stop_clock_at(expires - 1);
    for (jti, token) in &sentinels {
        revoke_token(&b, &admin, jti).await;
        until_revoked(&fake, token, "a sentinel lease revoked by a worker pass").await;
    }
    assert!(
        fake.is_token_valid(&issued.token),
        "not revoked before it ends"
    );
    b.advance_clock(1);
    until_revoked(
        &fake,
        &issued.token,
        "lease revoked within a few seconds of expiry",
    )
    .await;
    let now = b.now();
    assert!(
        now >= expires && now <= expires + 5,
        "revoked at {now}, lease ended {expires}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_revocations_survive_outage_and_kill_9() {
    let mut fake = start_fake(pb::Vendor::Launchdarkly).await;
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    create_upstream(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap();
    let mut issued = Vec::new();
    for _ in 0..3 {
        let t = mint(&b, &admin, &["alpha"], &["read"], Some(1.0))
            .await
            .unwrap();
        let lease = issue(&b, &t.access_token, "ld", &["alpha"], &["read"], None)
            .await
            .unwrap();
        issued.push((t.jti, lease.token, lease.lease_id));
    }
    fake.stop().await;
    for (jti, _, _) in &issued {
        revoke_token(&b, &admin, jti).await;
    }
    // The worker tries (and fails) each revocation against the vendor that is down.
    for (_, _, lease) in &issued {
        b.wait_for_log_line("a failed revocation attempt", |line| {
            line.contains("vendor revocation failed") && line.contains(lease.as_str())
        })
        .await;
    }
    b.kill9();
    for (_, token, _) in &issued {
        assert!(fake.is_token_valid(token), "nothing reached the vendor yet");
    }
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    fake.restart().await;
    // Past any retry backoff (at most a minute), so the queued revocations are due at once.
    b.advance_clock(120);
    for (_, token, _) in &issued {
        until_revoked(
            &fake,
            token,
            "queued revocation reached the vendor after restart",
        )
        .await;
    }
    drop(b);
}

#[tokio::test]
async fn credentials_and_vendor_tokens_never_stored_or_logged_in_clear() {
    let fake = start_fake(pb::Vendor::Launchdarkly).await;
    let bb = start_fake(pb::Vendor::BitbucketServer).await;
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    create_upstream(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap();
    create_upstream(
        &b,
        &admin,
        "bb",
        pb::Vendor::BitbucketServer,
        &bb,
        good_credential(pb::Vendor::BitbucketServer),
    )
    .await
    .unwrap();
    let got = get_upstream(&b, &admin, "bb").await;
    assert_eq!(got.token_type, "password");
    let ld = issue(&b, &admin, "ld", &["alpha"], &["read"], None)
        .await
        .unwrap();
    let bbt = issue(&b, &admin, "bb", &["*"], &["read"], None)
        .await
        .unwrap();
    // A failing vendor call logs its error: it must not carry the credential either.
    let _ = create_upstream(
        &b,
        &admin,
        "bad",
        pb::Vendor::BitbucketServer,
        &bb,
        wrong_credential(pb::Vendor::BitbucketServer),
    )
    .await;
    assert!(b.terminate().await.success());
    let config = FakeConfig::default();
    let secrets = [
        config.password.as_str(),
        config.token.as_str(),
        ld.token.as_str(),
        bbt.token.as_str(),
        "wrong-password",
    ];
    let logs = b.logs();
    for s in secrets {
        assert!(!logs.contains(s), "a secret reached the logs");
    }
    for file in files_under(&data.path().join("db")) {
        let bytes = std::fs::read(&file).unwrap();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret is stored in clear in {}",
                file.display()
            );
        }
    }
}

/// Upstreams bound to projects serve ordinary callers. A caller holding only `alpha` gets
/// Bitbucket Server and Foreman tokens (which cannot be limited to projects) from upstreams
/// that reach only `alpha`, asking for `alpha` or for nothing; a caller without `alpha` is
/// refused as a mint would be, before any vendor call. A LaunchDarkly token (which can be
/// limited) holds the requested projects within the upstream's, by default the caller's
/// within them. Narrowing an upstream's projects sends its leases beyond them to revocation.
#[tokio::test]
async fn project_bound_upstreams_serve_callers_holding_their_projects() {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    // `admin` on their own projects only: what Foreman's permission table maps.
    create_subject(&b, &admin, "alice", &["alpha"], &["admin"]).await;
    create_subject(&b, &admin, "bob", &["beta"], &["admin"]).await;
    let alice = create_key(&b, &admin, "alice", &["admin"]).await;
    let bob = create_key(&b, &admin, "bob", &["admin"]).await;

    for (name, vendor, perm) in [
        ("bb", pb::Vendor::BitbucketServer, "read"),
        ("fm", pb::Vendor::Foreman, "admin"),
    ] {
        let fake = start_fake(vendor).await;
        let up = create_upstream_for(
            &b,
            &admin,
            name,
            vendor,
            &fake.base_url(),
            good_credential(vendor),
            &["alpha"],
        )
        .await
        .unwrap();
        assert_eq!(up.project_ids, ["alpha"]);
        assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
        fake.clear_calls();
        let err = issue(&b, &bob, name, &[], &[perm], None).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(err.message().contains("alpha"), "{}", err.message());
        let err = issue(&b, &alice, name, &["beta"], &[perm], None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("reaches only"), "{}", err.message());
        assert!(
            fake.calls().is_empty(),
            "refusals reach no vendor: {:?}",
            fake.calls()
        );
        for asked in [&["alpha"][..], &[]] {
            let issued = issue(&b, &alice, name, asked, &[perm], Some(0.5))
                .await
                .unwrap();
            assert_eq!(issued.project_ids, ["alpha"], "{name} asked {asked:?}");
            assert_eq!(use_at_vendor(vendor, &fake, &issued.token).await, 200);
        }
    }

    let ld = start_fake(pb::Vendor::Launchdarkly).await;
    create_upstream_for(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &ld.base_url(),
        good_credential(pb::Vendor::Launchdarkly),
        &["alpha", "beta"],
    )
    .await
    .unwrap();
    let issued = issue(&b, &alice, "ld", &[], &["read"], Some(0.5))
        .await
        .unwrap();
    assert_eq!(
        issued.project_ids,
        ["alpha"],
        "the caller's within the upstream's"
    );
    let err = issue(&b, &alice, "ld", &["beta"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let err = issue(&b, &alice, "ld", &["gamma"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // The upstream now reaches only `beta`: alice's `alpha` lease goes.
    let updated = b
        .upstreams()
        .await
        .update_upstream(authed(
            pb::UpdateUpstreamRequest {
                name: "ld".to_owned(),
                project_ids: strings(&["beta"]),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.project_ids, ["beta"]);
    until_revoked(
        &ld,
        &issued.token,
        "the lease beyond the narrowed upstream revoked",
    )
    .await;
    let err = issue(&b, &alice, "ld", &[], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

/// RevokeUpstreamToken tells the truth: a LaunchDarkly token is revoked at the vendor; a
/// Develocity token, which its vendor cannot revoke, closes the lease but answers
/// `revoked_at_vendor: false` and says the token lives until its vendor expiry.
#[tokio::test]
async fn early_revocation_says_what_the_vendor_did() {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    let revoke = |lease_id: String| {
        let b = &b;
        let admin = admin.clone();
        async move {
            b.upstreams()
                .await
                .revoke_upstream_token(authed(pb::RevokeUpstreamTokenRequest { lease_id }, &admin))
                .await
                .unwrap()
                .into_inner()
        }
    };
    for (name, vendor, revocable) in [
        ("ld", pb::Vendor::Launchdarkly, true),
        ("dv", pb::Vendor::Develocity, false),
    ] {
        let fake = start_fake(vendor).await;
        create_upstream(&b, &admin, name, vendor, &fake, good_credential(vendor))
            .await
            .unwrap();
        let issued = issue(&b, &admin, name, &["*"], &["read"], Some(1.0))
            .await
            .unwrap();
        let answer = revoke(issued.lease_id.clone()).await;
        assert_eq!(answer.revoked_at_vendor, revocable, "{name}: {answer:?}");
        if revocable {
            assert!(answer.detail.is_empty(), "{name}: {answer:?}");
            assert_ne!(use_at_vendor(vendor, &fake, &issued.token).await, 200);
        } else {
            assert!(
                answer.detail.contains("until its vendor expiry"),
                "{name}: {answer:?}"
            );
        }
        // Asked again, the same answer.
        assert_eq!(revoke(issued.lease_id).await, answer, "{name}");
    }
}

/// ListUpstreams pages with signed page tokens bound to the listing, like ListAccessKeys': a
/// made-up position or a key listing's token is refused.
#[tokio::test]
async fn upstream_page_tokens_are_signed_and_bound() {
    let (b, _data) = start_broker().await;
    let admin = b.admin_secret();
    let fake = start_fake(pb::Vendor::Launchdarkly).await;
    for name in ["a", "b", "c"] {
        create_upstream(
            &b,
            &admin,
            name,
            pb::Vendor::Launchdarkly,
            &fake,
            good_credential(pb::Vendor::Launchdarkly),
        )
        .await
        .unwrap();
    }
    let list = |page_token: String| {
        let b = &b;
        let admin = admin.clone();
        async move {
            b.upstreams()
                .await
                .list_upstreams(authed(
                    pb::ListUpstreamsRequest {
                        page_size: 2,
                        page_token,
                    },
                    &admin,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = list(String::new()).await.unwrap();
    let names: Vec<&str> = first.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_ne!(
        first.next_page_token, "b",
        "the token is not the bare position"
    );
    let second = list(first.next_page_token.clone()).await.unwrap();
    let names: Vec<&str> = second.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["c"]);
    assert!(second.next_page_token.is_empty());

    // A position made up by the client (what the token used to be: the last name).
    let err = list("a".to_owned()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("page_token"), "{}", err.message());
    // A key listing's token, validly signed, continues another query.
    create_key(&b, &admin, "admin", &["read"]).await;
    let keys = b
        .keys()
        .await
        .list_access_keys(authed(
            pb::ListAccessKeysRequest {
                page_size: 1,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!keys.next_page_token.is_empty());
    let err = list(keys.next_page_token).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("another query"), "{}", err.message());
}

/// Statuses follow the credential. Past its known expiry an upstream is OVERDUE and issues
/// nothing until UpdateUpstream gives a new credential; a vendor answering 401 to an issue
/// makes it UNAUTHENTICATED, and later issues are refused without a vendor call until
/// UpdateUpstream gives a credential the vendor accepts.
#[tokio::test]
async fn statuses_follow_the_credential() {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    let mut fake = start_fake(pb::Vendor::Launchdarkly).await;
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let next_year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 365 * 86_400;
    let update = |credential: pb::Credential, expires: Option<prost_types::Timestamp>| {
        let b = &b;
        let admin = admin.clone();
        async move {
            b.upstreams()
                .await
                .update_upstream(authed(
                    pb::UpdateUpstreamRequest {
                        name: "ld".to_owned(),
                        credential: Some(credential),
                        credential_expires_at: expires,
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let get = || get_upstream(&b, &admin, "ld");

    let created = b
        .upstreams()
        .await
        .create_upstream(authed(
            pb::CreateUpstreamRequest {
                name: "ld".to_owned(),
                vendor: pb::Vendor::Launchdarkly as i32,
                base_url: fake.base_url(),
                credential: Some(good_credential(pb::Vendor::Launchdarkly)),
                credential_expires_at: at(1_000_000),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status, pb::UpstreamStatus::Overdue as i32);
    let err = issue(&b, &admin, "ld", &["*"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("OVERDUE"), "{}", err.message());
    let renewed = update(good_credential(pb::Vendor::Launchdarkly), at(next_year)).await;
    assert_eq!(renewed.status, pb::UpstreamStatus::Normal as i32);
    issue(&b, &admin, "ld", &["*"], &["read"], None)
        .await
        .unwrap();

    // The account's key is rotated at the vendor behind the broker's back.
    let addr = fake.addr();
    fake.stop().await;
    let rotated = FakeConfig {
        token: "rotated-api-key".into(),
        ..FakeConfig::default()
    };
    let fake = FakeLaunchDarkly::start_on(addr, rotated).await;
    let err = issue(&b, &admin, "ld", &["*"], &["read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(
        get().await.status,
        pb::UpstreamStatus::Unauthenticated as i32
    );
    fake.clear_calls();
    let err = issue(&b, &admin, "ld", &["*"], &["read"], None)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("UNAUTHENTICATED"),
        "{}",
        err.message()
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    let fixed = update(
        pb::Credential {
            token: "rotated-api-key".into(),
            ..Default::default()
        },
        None,
    )
    .await;
    assert_eq!(fixed.status, pb::UpstreamStatus::Normal as i32);
    assert!(
        fixed.credential_expires_at.is_none(),
        "a new credential's expiry is unknown"
    );
    issue(&b, &admin, "ld", &["*"], &["read"], None)
        .await
        .unwrap();
}

/// The worker checks each upstream's credential again every `upstream_recheck_period` (1 h by
/// default): a key rotated at the vendor shows as UNAUTHENTICATED without an issue tripping
/// over it, and UpdateUpstream with the new key makes it NORMAL.
#[tokio::test]
async fn credentials_are_rechecked_every_period() {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &FAST_RETRY).await;
    let admin = b.admin_secret();
    let mut fake = start_fake(pb::Vendor::Launchdarkly).await;
    create_upstream(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake,
        good_credential(pb::Vendor::Launchdarkly),
    )
    .await
    .unwrap();
    let status = async || get_upstream(&b, &admin, "ld").await.status;
    let addr = fake.addr();
    fake.stop().await;
    let rotated = FakeConfig {
        token: "rotated-api-key".into(),
        ..FakeConfig::default()
    };
    let _rotated = FakeLaunchDarkly::start_on(addr, rotated).await;
    assert_eq!(status().await, pb::UpstreamStatus::Normal as i32);

    b.advance_clock(3601);
    b.wait_for_log_line("the worker's re-check of `ld`", |l| {
        l.contains("re-checked at the vendor") && l.contains("upstream=ld")
    })
    .await;
    assert_eq!(status().await, pb::UpstreamStatus::Unauthenticated as i32);
    let fixed = b
        .upstreams()
        .await
        .update_upstream(authed(
            pb::UpdateUpstreamRequest {
                name: "ld".to_owned(),
                credential: Some(pb::Credential {
                    token: "rotated-api-key".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fixed.status, pb::UpstreamStatus::Normal as i32);
}

// === orphaned vendor tokens: issue calls whose answer is lost ===

/// The fakes allowed, short backoffs, and a vendor request timeout short enough for a test:
/// a fake that never answers makes the issue call fail after it, whatever the machine's speed.
const SHORT_VENDOR_TIMEOUT: [(&str, &str); 2] = [
    ("TOKEN_BROKER_UPSTREAM_RETRY_BACKOFF", "10ms"),
    (
        "TOKEN_BROKER_UPSTREAMS",
        "{ allow_insecure_http = true, allow_private_addresses = true, request_timeout = \"5s\" }",
    ),
];

/// The lease id a failed issue names in its `google.rpc.ErrorInfo`.
fn lease_id_of(err: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    err.get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("lease_id").cloned())
        .unwrap_or_else(|| panic!("no lease_id in the error: {err:?}"))
}

/// The upstream's open leases, as GetUpstream counts them.
async fn live_leases(b: &Broker, admin: &str, name: &str) -> u32 {
    get_upstream(b, admin, name).await.live_leases
}

/// An issue call whose answer is lost after the vendor minted: the caller is told UNAVAILABLE
/// and that the broker will find and revoke the token; the lease worker finds the token by
/// its name through the vendor's list call (on the list's second page: the fake's pages hold
/// two tokens and three were issued before) and revokes it, and the lease is closed.
async fn orphan_is_found_and_revoked(vendor: pb::Vendor) {
    let config = FakeConfig {
        max_page_size: 2,
        ..FakeConfig::default()
    };
    let fake = match vendor {
        pb::Vendor::BitbucketServer => FakeBitbucket::start(config).await,
        pb::Vendor::Launchdarkly => FakeLaunchDarkly::start(config).await,
        _ => FakeForeman::start(config).await,
    };
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &SHORT_VENDOR_TIMEOUT).await;
    let admin = b.admin_secret();
    create_upstream(&b, &admin, "up", vendor, &fake, good_credential(vendor))
        .await
        .unwrap();
    let perms: &[&str] = if vendor == pb::Vendor::Foreman {
        &["admin"]
    } else {
        &["read"]
    };
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(
            issue(&b, &admin, "up", &["*"], perms, Some(1.0))
                .await
                .unwrap(),
        );
    }

    fake.set_hang(Hang::AfterMinting);
    let err = issue(&b, &admin, "up", &["*"], perms, Some(1.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let lease_id = lease_id_of(&err);
    let name = format!("token-broker-{lease_id}");
    assert!(
        err.message()
            .contains(&format!("may have made a token named `{name}`"))
            && err
                .message()
                .contains("the broker will find it and revoke it"),
        "{}",
        err.message()
    );
    let orphan = fake
        .issued_tokens()
        .into_iter()
        .find(|t| t.name == name)
        .expect("the fake minted the token before hanging");

    fake.wait_until("the orphaned token revoked at the vendor", |f| {
        !f.is_token_valid(&orphan.token)
    })
    .await;
    b.wait_for_log_line("the lease reconciled", |l| {
        l.contains("lease reconciled") && l.contains(lease_id.as_str())
    })
    .await;
    assert_eq!(
        live_leases(&b, &admin, "up").await,
        3,
        "only the kept leases are open"
    );
    for lease in &kept {
        assert!(
            fake.is_token_valid(&lease.token),
            "the other tokens live on"
        );
    }
    // The search: Bitbucket and LaunchDarkly page through every token (the orphan is on the
    // second page); Foreman asks for the name.
    let searches: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            c.method == "GET"
                && ["start", "offset", "search"]
                    .iter()
                    .any(|p| c.param(p).is_some())
        })
        .collect();
    if vendor == pb::Vendor::Foreman {
        let wanted = format!("name = \"{name}\"");
        assert!(
            !searches.is_empty()
                && searches
                    .iter()
                    .all(|c| c.param("search") == Some(wanted.as_str())),
            "{searches:?}"
        );
    } else {
        assert!(
            searches
                .iter()
                .any(|c| c.param("start").or(c.param("offset")) == Some("2")),
            "{searches:?}"
        );
    }

    let answer = b
        .upstreams()
        .await
        .revoke_upstream_token(authed(
            pb::RevokeUpstreamTokenRequest {
                lease_id: lease_id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.revoked_at_vendor, "{answer:?}");
    assert!(
        answer.detail.contains("found and revoked") && answer.detail.contains(&name),
        "{answer:?}"
    );
}

#[tokio::test]
async fn bitbucket_server_orphan_is_found_and_revoked() {
    orphan_is_found_and_revoked(pb::Vendor::BitbucketServer).await;
}

#[tokio::test]
async fn launchdarkly_orphan_is_found_and_revoked() {
    orphan_is_found_and_revoked(pb::Vendor::Launchdarkly).await;
}

#[tokio::test]
async fn foreman_orphan_is_found_and_revoked() {
    orphan_is_found_and_revoked(pb::Vendor::Foreman).await;
}

/// An issue call that hangs before the vendor minted anything: the worker's search finds no
/// token, so the lease is closed with no revocation call, and RevokeUpstreamToken says so.
/// At Develocity, which cannot list its tokens, the lease is closed at once and the caller is
/// told the token (if any) lives until the lease's end.
#[tokio::test]
async fn unminted_issue_closes_its_lease_without_a_revocation() {
    let fake = FakeLaunchDarkly::start(FakeConfig::default()).await;
    let dv = FakeDevelocity::start(FakeConfig::default()).await;
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), &shipped_policies(), &SHORT_VENDOR_TIMEOUT).await;
    let admin = b.admin_secret();
    for (name, vendor, fake) in [
        ("ld", pb::Vendor::Launchdarkly, &fake),
        ("dv", pb::Vendor::Develocity, &dv),
    ] {
        create_upstream(&b, &admin, name, vendor, fake, good_credential(vendor))
            .await
            .unwrap();
        fake.set_hang(Hang::BeforeMinting);
    }

    let err = issue(&b, &admin, "ld", &["*"], &["read"], Some(1.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let lease_id = lease_id_of(&err);
    b.wait_for_log_line("the lease reconciled", |l| {
        l.contains("lease reconciled: the vendor made no token") && l.contains(lease_id.as_str())
    })
    .await;
    assert!(fake.issued_tokens().is_empty());
    assert!(
        !fake.calls().iter().any(|c| c.method == "DELETE"),
        "no revocation call: {:?}",
        fake.calls()
    );
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.method == "GET" && c.path == "/api/v2/tokens"),
        "the vendor's list was searched"
    );
    assert_eq!(live_leases(&b, &admin, "ld").await, 0);
    let answer = b
        .upstreams()
        .await
        .revoke_upstream_token(authed(pb::RevokeUpstreamTokenRequest { lease_id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.revoked_at_vendor, "{answer:?}");
    assert!(answer.detail.contains("holds no token named"), "{answer:?}");

    let err = issue(&b, &admin, "dv", &["*"], &["read"], Some(1.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("cannot list its tokens") && err.message().contains("at the latest"),
        "{}",
        err.message()
    );
    assert_eq!(live_leases(&b, &admin, "dv").await, 0, "closed at once");
}
