//! Each vendor connector against its fake vendor over real HTTP on loopback: verify, issue
//! exactly the scoped request, use the token, revoke it, and the seed's error cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::fakes::{
    FakeBitbucket, FakeConfig, FakeDevelocity, FakeForeman, FakeGitHost, FakeLaunchDarkly,
    FakeServer,
};
use serde_json::json;
use token_broker::{
    config::UpstreamSettings,
    upstream::{
        Credential, HttpClient, IssueRequest, Pause, UpstreamAccount, Vendor, VendorError,
        connector,
    },
};

const WRONG: &str = "wrong-secret-789";

/// The fakes live on `http://127.0.0.1`, which the default rules refuse.
fn loopback() -> UpstreamSettings {
    UpstreamSettings {
        allow_insecure_http: true,
        allow_private_addresses: true,
        ..UpstreamSettings::default()
    }
}

fn http() -> HttpClient {
    HttpClient::new(3, Duration::from_millis(10), loopback()).unwrap()
}

/// A pause that records each wait the client asks for and returns at once.
fn recorded_pauses() -> (Pause, Arc<Mutex<Vec<Duration>>>) {
    let waits: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let recorded = Arc::clone(&waits);
    let pause: Pause = Arc::new(move |wait| {
        recorded.lock().unwrap().push(wait);
        Box::pin(async {})
    });
    (pause, waits)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn account(
    vendor: Vendor,
    fake: &FakeServer,
    credential: Credential,
    options: &[(&str, &str)],
) -> UpstreamAccount {
    UpstreamAccount {
        vendor,
        // A trailing slash must not produce `//` in the paths.
        base_url: format!("{}/", fake.base_url()),
        credential,
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn basic(c: &FakeConfig) -> Credential {
    Credential {
        username: c.username.clone(),
        password: c.password.clone(),
        token: String::new(),
    }
}

fn keyed(c: &FakeConfig) -> Credential {
    Credential {
        username: c.username.clone(),
        password: String::new(),
        token: c.token.clone(),
    }
}

fn request(perms: &[&str], projects: &[&str], expires_at: i64) -> IssueRequest {
    IssueRequest {
        name: "lease-42".into(),
        vendor_permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
        project_ids: projects.iter().map(|s| (*s).to_owned()).collect(),
        expires_at,
        now: now(),
    }
}

/// Neither the `Display` nor the `Debug` of `err` contains any of `secrets`.
fn assert_secret_free(err: &VendorError, secrets: &[&str]) {
    let text = format!("{err} {err:?}");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(secret), "`{secret}` leaked in: {text}");
    }
}

/// Asserts an `Unauthenticated` 401 whose message names the vendor and the status.
fn assert_unauthenticated(err: &VendorError, vendor: Vendor, vendor_text: &str) {
    let VendorError::Unauthenticated {
        vendor: v, status, ..
    } = err
    else {
        panic!("expected unauthenticated, got {err:?}");
    };
    assert_eq!((*v, *status), (vendor, 401));
    let text = err.to_string();
    assert!(text.contains(vendor.as_str()), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains(vendor_text), "{text}");
}

async fn get_status(url: String, auth: (&str, String)) -> u16 {
    reqwest::Client::new()
        .get(url)
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

// === Bitbucket Server ===

#[tokio::test]
async fn bitbucket_verify_takes_basic_or_bearer_and_rejects_a_wrong_password() {
    let cfg = FakeConfig::default();
    let fake = FakeBitbucket::start(cfg.clone()).await;
    let bb = connector(Vendor::BitbucketServer, http());
    let opts = [("user_slug", "bob")];

    let verified = bb
        .verify(&account(Vendor::BitbucketServer, &fake, basic(&cfg), &opts))
        .await
        .unwrap();
    assert_eq!(verified.repo_user, "bob");
    assert_eq!(verified.repo_host, fake.base_url());
    bb.verify(&account(Vendor::BitbucketServer, &fake, keyed(&cfg), &opts))
        .await
        .unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, "/rest/access-tokens/1.0/users/bob");
    assert!(calls[0].auth.as_deref().unwrap().starts_with("Basic "));
    assert_eq!(
        calls[1].auth.as_deref(),
        Some(format!("Bearer {}", cfg.token).as_str())
    );

    let mut wrong = basic(&cfg);
    wrong.password = WRONG.into();
    let err = bb
        .verify(&account(Vendor::BitbucketServer, &fake, wrong, &opts))
        .await
        .unwrap_err();
    assert_unauthenticated(&err, Vendor::BitbucketServer, "Authentication failed");
    assert_secret_free(&err, &[WRONG, &cfg.password]);
    assert_eq!(fake.calls().len(), 3, "a 401 is not retried");
}

#[tokio::test]
async fn bitbucket_issues_exactly_the_scoped_token_and_revokes_it() {
    let cfg = FakeConfig::default();
    let fake = FakeBitbucket::start(cfg.clone()).await;
    let bb = connector(Vendor::BitbucketServer, http());
    let acct = account(
        Vendor::BitbucketServer,
        &fake,
        basic(&cfg),
        &[("user_slug", "bob")],
    );
    // Just under two days: Bitbucket counts whole days, rounded up.
    let expires_at = now() + 2 * 86_400 - 60;
    let issued = bb
        .issue(&acct, &request(&["REPO_READ"], &["*"], expires_at))
        .await
        .unwrap();

    let put = fake.calls().pop().unwrap();
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", "/rest/access-tokens/1.0/users/bob")
    );
    assert_eq!(
        put.body,
        Some(json!({"name": "lease-42", "permissions": ["REPO_READ"], "expiryDays": 2}))
    );
    assert!(issued.revocable);
    assert_eq!(issued.vendor_token_id, fake.issued_tokens()[0].id);
    let vendor_expiry = issued.vendor_expires_at.unwrap();
    assert!(vendor_expiry >= expires_at && vendor_expiry <= expires_at + 86_400);
    assert!(!format!("{issued:?}").contains(&issued.token));

    let whoami = format!("{}/rest/api/1.0/users/bob", fake.base_url());
    let bearer = ("authorization", format!("Bearer {}", issued.token));
    assert_eq!(get_status(whoami.clone(), bearer.clone()).await, 200);

    bb.revoke(&acct, &issued.vendor_token_id).await.unwrap();
    let delete = fake.calls().pop().unwrap();
    assert_eq!(delete.method, "DELETE");
    assert_eq!(
        delete.path,
        format!(
            "/rest/access-tokens/1.0/users/bob/{}",
            issued.vendor_token_id
        )
    );
    assert_eq!(get_status(whoami, bearer).await, 401);
    assert!(!fake.is_token_valid(&issued.token));
    // Gone already: the vendor's 404 counts as done.
    bb.revoke(&acct, &issued.vendor_token_id).await.unwrap();
    assert_eq!(fake.calls().last().unwrap().method, "DELETE");
}

#[tokio::test]
async fn bitbucket_maximum_and_bad_permissions_are_invalid_arguments_with_the_vendor_message() {
    let cfg = FakeConfig {
        max_tokens: 1,
        ..FakeConfig::default()
    };
    let fake = FakeBitbucket::start(cfg.clone()).await;
    let bb = connector(Vendor::BitbucketServer, http());
    let acct = account(
        Vendor::BitbucketServer,
        &fake,
        basic(&cfg),
        &[("user_slug", "bob")],
    );
    let req = request(&["REPO_WRITE"], &[], now() + 3600);
    bb.issue(&acct, &req).await.unwrap();
    let err = bb.issue(&acct, &req).await.unwrap_err();
    let VendorError::InvalidArgument {
        status, message, ..
    } = &err
    else {
        panic!("expected invalid argument, got {err:?}");
    };
    assert_eq!(*status, 400);
    assert!(message.contains("maximum number of tokens"), "{message}");
    assert!(err.to_string().contains("bitbucket_server"));
    assert_secret_free(&err, &[&cfg.password]);

    let err = bb
        .issue(&acct, &request(&["REPO_OWNER"], &[], now() + 3600))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::InvalidArgument { status: 400, message, .. } if message.contains("REPO_OWNER")),
        "{err:?}"
    );
}

#[tokio::test]
async fn bitbucket_refuses_locally_what_it_cannot_express() {
    let cfg = FakeConfig::default();
    let fake = FakeBitbucket::start(cfg.clone()).await;
    let bb = connector(Vendor::BitbucketServer, http());

    let no_slug = account(Vendor::BitbucketServer, &fake, basic(&cfg), &[]);
    let err = bb.verify(&no_slug).await.unwrap_err();
    assert!(
        matches!(&err, VendorError::InvalidArgument { status: 0, message, .. } if message.contains("`user_slug`")),
        "{err:?}"
    );

    let acct = account(
        Vendor::BitbucketServer,
        &fake,
        basic(&cfg),
        &[("user_slug", "bob")],
    );
    let err = bb
        .issue(&acct, &request(&["REPO_READ"], &["PRJ"], now() + 3600))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        VendorError::InvalidArgument { status: 0, .. }
    ));
    let err = bb
        .issue(&acct, &request(&["REPO_READ"], &[], now() - 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        VendorError::InvalidArgument { status: 0, .. }
    ));
    assert!(fake.calls().is_empty(), "nothing was sent");

    let ghost = account(
        Vendor::BitbucketServer,
        &fake,
        basic(&cfg),
        &[("user_slug", "nobody")],
    );
    let err = bb.verify(&ghost).await.unwrap_err();
    assert!(matches!(err, VendorError::NotFound { status: 404, .. }));
}

#[tokio::test]
async fn a_vendor_that_is_down_is_unavailable_after_bounded_retries_and_recovers() {
    let cfg = FakeConfig::default();
    let mut fake = FakeBitbucket::start(cfg.clone()).await;
    let bb = connector(Vendor::BitbucketServer, http());
    let acct = account(
        Vendor::BitbucketServer,
        &fake,
        basic(&cfg),
        &[("user_slug", "bob")],
    );
    let issued = bb
        .issue(&acct, &request(&["REPO_READ"], &[], now() + 3600))
        .await
        .unwrap();

    fake.set_down(true);
    fake.clear_calls();
    let err = bb.verify(&acct).await.unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Unavailable {
                vendor: Vendor::BitbucketServer,
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.calls().len(), 3, "three attempts, then give up");
    fake.set_down(false);
    bb.verify(&acct).await.unwrap();

    // Gone altogether: connection refused, then back on the same address with the same state.
    fake.stop().await;
    let err = bb.verify(&acct).await.unwrap_err();
    assert!(
        matches!(&err, VendorError::Unreachable { vendor: Vendor::BitbucketServer, target }
            if *target == fake.addr().to_string()),
        "{err:?}"
    );
    let addr = fake.addr();
    fake.restart().await;
    assert_eq!(fake.addr(), addr);
    bb.verify(&acct).await.unwrap();
    assert!(fake.is_token_valid(&issued.token));
}

// === LaunchDarkly ===

#[tokio::test]
async fn launchdarkly_verify_sends_the_raw_key_and_rejects_a_wrong_one() {
    let cfg = FakeConfig::default();
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let ld = connector(Vendor::Launchdarkly, http());
    ld.verify(&account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]))
        .await
        .unwrap();
    let call = fake.calls().pop().unwrap();
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("GET", "/api/v2/tokens")
    );
    assert_eq!(call.param("limit"), Some("1"));
    assert_eq!(call.auth.as_deref(), Some(cfg.token.as_str()));

    let mut wrong = keyed(&cfg);
    wrong.token = WRONG.into();
    let err = ld
        .verify(&account(Vendor::Launchdarkly, &fake, wrong, &[]))
        .await
        .unwrap_err();
    assert_unauthenticated(&err, Vendor::Launchdarkly, "Invalid access token");
    assert_secret_free(&err, &[WRONG, &cfg.token]);
}

#[tokio::test]
async fn launchdarkly_issues_an_inline_policy_for_the_projects_and_revokes_it() {
    let cfg = FakeConfig::default();
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let ld = connector(Vendor::Launchdarkly, http());
    let acct = account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]);
    let issued = ld
        .issue(&acct, &request(&["reader"], &["web", "api"], now() + 3600))
        .await
        .unwrap();
    let post = fake.calls().pop().unwrap();
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/api/v2/tokens")
    );
    assert_eq!(
        post.body,
        Some(json!({
            "name": "lease-42",
            "inlineRole": [{
                "effect": "allow",
                "actions": ["viewProject"],
                "resources": ["proj/web:env/*:flag/*", "proj/api:env/*:flag/*"],
            }],
        }))
    );
    assert_eq!(issued.vendor_expires_at, None);
    assert!(issued.revocable);

    ld.issue(&acct, &request(&["writer"], &["*"], now() + 3600))
        .await
        .unwrap();
    let statement = &fake.calls().pop().unwrap().body.unwrap()["inlineRole"][0];
    assert_eq!(statement["actions"], json!(["*"]));
    assert_eq!(statement["resources"], json!(["proj/*:env/*:flag/*"]));

    let whoami = format!("{}/api/v2/caller-identity", fake.base_url());
    let auth = ("authorization", issued.token.clone());
    assert_eq!(get_status(whoami.clone(), auth.clone()).await, 200);
    ld.revoke(&acct, &issued.vendor_token_id).await.unwrap();
    let delete = fake.calls().pop().unwrap();
    assert_eq!(
        (delete.method.as_str(), delete.path),
        (
            "DELETE",
            format!("/api/v2/tokens/{}", issued.vendor_token_id)
        )
    );
    assert_eq!(get_status(whoami, auth).await, 401);
    ld.revoke(&acct, &issued.vendor_token_id).await.unwrap();
}

#[tokio::test]
async fn launchdarkly_429_is_retried_after_retry_after() {
    let cfg = FakeConfig {
        rate_limit_first: 1,
        retry_after_secs: 1,
        ..FakeConfig::default()
    };
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let (pauses, waits) = recorded_pauses();
    let ld = connector(Vendor::Launchdarkly, http().with_pause(pauses));
    let acct = account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]);
    ld.issue(&acct, &request(&["reader"], &["web"], now() + 3600))
        .await
        .unwrap();
    assert_eq!(
        *waits.lock().unwrap(),
        vec![Duration::from_secs(1)],
        "waited Retry-After"
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].body, calls[1].body,
        "the same request was replayed"
    );
    assert_eq!(fake.issued_tokens().len(), 1);
}

#[tokio::test]
async fn launchdarkly_persistent_429_is_rate_limited_and_403_is_permission_denied() {
    let cfg = FakeConfig {
        rate_limit_first: 100,
        retry_after_secs: 1,
        ..FakeConfig::default()
    };
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let (pauses, waits) = recorded_pauses();
    let ld = connector(
        Vendor::Launchdarkly,
        HttpClient::new(2, Duration::from_millis(10), loopback())
            .unwrap()
            .with_pause(pauses),
    );
    let err = ld
        .verify(&account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::RateLimited { retry_after: Some(d), message, .. }
            if *d == Duration::from_secs(1) && message.contains("rate limit")),
        "{err:?}"
    );
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(*waits.lock().unwrap(), vec![Duration::from_secs(1)]);

    let cfg = FakeConfig {
        allowed_projects: vec!["web".into()],
        ..FakeConfig::default()
    };
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let acct = account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]);
    let err = ld
        .issue(&acct, &request(&["reader"], &["billing"], now() + 3600))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::PermissionDenied { status: 403, message, .. }
            if message == "Access to the requested resource was denied"),
        "{err:?}"
    );
    let err = ld.revoke(&acct, "ffff").await;
    assert!(err.is_ok(), "an unknown id (404) is already revoked");
}

// === Foreman ===

#[tokio::test]
async fn foreman_verify_and_wrong_password() {
    let cfg = FakeConfig::default();
    let fake = FakeForeman::start(cfg.clone()).await;
    let fm = connector(Vendor::Foreman, http());
    let opts = [("user_id", "7")];
    fm.verify(&account(Vendor::Foreman, &fake, basic(&cfg), &opts))
        .await
        .unwrap();
    assert_eq!(fake.calls()[0].path, "/api/users/7/personal_access_tokens");

    let mut wrong = basic(&cfg);
    wrong.password = WRONG.into();
    let err = fm
        .verify(&account(Vendor::Foreman, &fake, wrong, &opts))
        .await
        .unwrap_err();
    assert_unauthenticated(&err, Vendor::Foreman, "Unable to authenticate user admin");
    assert_secret_free(&err, &[WRONG, &cfg.password]);

    let err = fm
        .verify(&account(
            Vendor::Foreman,
            &fake,
            basic(&cfg),
            &[("user_id", "99")],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::NotFound { status: 404, message, .. } if message.contains("'99'")),
        "{err:?}"
    );
}

#[tokio::test]
async fn foreman_issues_with_the_exact_expiry_and_revokes() {
    let cfg = FakeConfig::default();
    let fake = FakeForeman::start(cfg.clone()).await;
    let fm = connector(Vendor::Foreman, http());
    let acct = account(Vendor::Foreman, &fake, basic(&cfg), &[("user_id", "7")]);
    let expires_at = 4_102_444_800; // 2100-01-01T00:00:00Z
    let issued = fm
        .issue(&acct, &request(&[], &[], expires_at))
        .await
        .unwrap();
    let post = fake.calls().pop().unwrap();
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/api/users/7/personal_access_tokens")
    );
    assert_eq!(
        post.body,
        Some(
            json!({"personal_access_token": {"name": "lease-42", "expires_at": "2100-01-01T00:00:00Z"}})
        )
    );
    assert_eq!(issued.vendor_expires_at, Some(expires_at));
    assert_eq!(fake.issued_tokens()[0].expires_at, Some(expires_at));

    let whoami = format!("{}/api/current_user", fake.base_url());
    let basic_token = |token: &str| {
        use base64::Engine as _;
        let pair = format!("{}:{token}", cfg.username);
        (
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ),
        )
    };
    assert_eq!(
        get_status(whoami.clone(), basic_token(&issued.token)).await,
        200
    );
    fm.revoke(&acct, &issued.vendor_token_id).await.unwrap();
    assert_eq!(
        fake.calls().pop().unwrap().path,
        format!(
            "/api/users/7/personal_access_tokens/{}",
            issued.vendor_token_id
        )
    );
    assert_eq!(get_status(whoami, basic_token(&issued.token)).await, 401);
    fm.revoke(&acct, &issued.vendor_token_id).await.unwrap();

    let mut nameless = request(&[], &[], expires_at);
    nameless.name = String::new();
    let err = fm.issue(&acct, &nameless).await.unwrap_err();
    assert!(
        matches!(&err, VendorError::InvalidArgument { status: 422, message, .. } if message == "Name can't be blank"),
        "{err:?}"
    );
    let err = fm
        .issue(&acct, &request(&["view_hosts"], &[], expires_at))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        VendorError::InvalidArgument { status: 0, .. }
    ));
}

// === Develocity ===

#[tokio::test]
async fn develocity_issues_within_the_key_and_refuses_beyond_it() {
    let cfg = FakeConfig {
        allowed_projects: vec!["a".into(), "b".into()],
        allowed_permissions: vec!["x".into(), "y".into()],
        ..FakeConfig::default()
    };
    let fake = FakeDevelocity::start(cfg.clone()).await;
    let dv = connector(Vendor::Develocity, http());
    let acct = account(Vendor::Develocity, &fake, keyed(&cfg), &[]);
    dv.verify(&acct).await.unwrap();

    let expires_at = now() + 2 * 3600;
    let issued = dv
        .issue(&acct, &request(&["x", "y"], &["a", "b"], expires_at))
        .await
        .unwrap();
    let post = fake.calls().pop().unwrap();
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/api/auth/token")
    );
    assert_eq!(post.param("projectIds"), Some("a,b"));
    assert_eq!(post.param("permissions"), Some("x,y"));
    let hours: f64 = post.param("expiresInHours").unwrap().parse().unwrap();
    assert!((1.99..=2.0).contains(&hours), "{hours}");
    assert_eq!(
        post.auth.as_deref(),
        Some(format!("Bearer {}", cfg.token).as_str())
    );
    assert!(!issued.revocable);
    assert_eq!(issued.vendor_expires_at, Some(expires_at));
    let fake_expiry = fake.issued_tokens().last().unwrap().expires_at.unwrap();
    assert!(fake_expiry <= expires_at, "never outlives the lease");

    let builds = format!("{}/api/builds", fake.base_url());
    let bearer = ("authorization", format!("Bearer {}", issued.token));
    assert_eq!(get_status(builds, bearer).await, 200);
    let before = fake.calls().len();
    dv.revoke(&acct, &issued.vendor_token_id).await.unwrap();
    assert_eq!(fake.calls().len(), before, "revoke is a documented no-op");

    let err = dv
        .issue(&acct, &request(&["x"], &["a", "c"], expires_at))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::PermissionDenied { status: 403, message, .. }
            if message.contains("'c'")),
        "{err:?}"
    );

    let mut wrong = keyed(&cfg);
    wrong.token = WRONG.into();
    let err = dv
        .verify(&account(Vendor::Develocity, &fake, wrong, &[]))
        .await
        .unwrap_err();
    assert_unauthenticated(&err, Vendor::Develocity, "access key");
    assert_secret_free(&err, &[WRONG, &cfg.token]);
}

// === Git password ===

#[tokio::test]
async fn git_password_verifies_and_hands_out_the_password() {
    let cfg = FakeConfig::default();
    let fake = FakeGitHost::start(cfg.clone()).await;
    let git = connector(Vendor::GitPassword, http());
    let acct = account(Vendor::GitPassword, &fake, basic(&cfg), &[]);
    let verified = git.verify(&acct).await.unwrap();
    assert_eq!(verified.repo_host, fake.base_url());
    assert_eq!(verified.repo_user, cfg.username);

    let issued = git
        .issue(&acct, &request(&[], &[], now() + 60))
        .await
        .unwrap();
    assert!(fake.is_token_valid(&issued.token));
    assert!(!issued.revocable && issued.vendor_token_id.is_empty());
    assert_eq!(issued.vendor_expires_at, None);
    git.revoke(&acct, "").await.unwrap();

    let mut wrong = basic(&cfg);
    wrong.password = WRONG.into();
    let err = git
        .verify(&account(Vendor::GitPassword, &fake, wrong, &[]))
        .await
        .unwrap_err();
    assert_unauthenticated(&err, Vendor::GitPassword, "Unauthorized");
    assert_secret_free(&err, &[WRONG, &cfg.password]);
}

// === Destination rules ===

#[tokio::test]
async fn the_default_rules_send_nothing_to_a_loopback_vendor() {
    let cfg = FakeConfig::default();
    let fake = FakeLaunchDarkly::start(cfg.clone()).await;
    let strict =
        HttpClient::new(1, Duration::from_millis(10), UpstreamSettings::default()).unwrap();
    let insecure_only = UpstreamSettings {
        allow_insecure_http: true,
        allow_private_addresses: false,
        ..UpstreamSettings::default()
    };
    let no_private = HttpClient::new(1, Duration::from_millis(10), insecure_only).unwrap();
    let ld = account(Vendor::Launchdarkly, &fake, keyed(&cfg), &[]);
    let by_name = UpstreamAccount {
        base_url: format!("http://localhost:{}", fake.addr().port()),
        ..ld.clone()
    };
    for (client, acct, rule) in [
        (strict, &ld, "upstreams.allow_insecure_http"),
        (no_private.clone(), &ld, "upstreams.allow_private_addresses"),
        (no_private, &by_name, "upstreams.allow_private_addresses"),
    ] {
        let err = connector(Vendor::Launchdarkly, client)
            .verify(acct)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, VendorError::Refused { reason, .. } if reason.contains(rule)),
            "{err:?}"
        );
    }
    assert!(fake.calls().is_empty(), "nothing reached the vendor");
}
