//! Issue 9, attacks 5 and 9, against the real server: a vendor that echoes the request cannot
//! make the broker show or store the upstream credential, and an upstream cannot point the
//! broker at plain http, at a non-public address or at a port scan, nor feed it an unbounded
//! body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::net::SocketAddr;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{create_upstream_at as create, fakes::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::Code;

async fn issue(
    b: &Broker,
    credential: &str,
    upstream: &str,
    perms: &[&str],
) -> Result<pb::IssueUpstreamTokenResponse, tonic::Status> {
    b.upstreams()
        .await
        .issue_upstream_token(authed(
            pb::IssueUpstreamTokenRequest {
                upstream: upstream.to_owned(),
                permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
                project_ids: vec!["*".to_owned()],
                expires_in_hours: None,
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn basic_credential(c: &FakeConfig) -> pb::Credential {
    pb::Credential {
        username: c.username.clone(),
        password: c.password.clone(),
        token: String::new(),
    }
}

fn token_credential(c: &FakeConfig) -> pb::Credential {
    pb::Credential {
        username: c.username.clone(),
        password: String::new(),
        token: c.token.clone(),
    }
}

/// Every form of the fakes' credential that must never be shown or stored.
fn credential_forms(c: &FakeConfig) -> Vec<String> {
    let mut forms = Vec::new();
    for secret in [&c.password, &c.token] {
        let pair = STANDARD.encode(format!("{}:{secret}", c.username));
        forms.push(secret.clone());
        forms.push(STANDARD.encode(secret));
        forms.push(format!("Basic {pair}"));
        forms.push(pair.trim_end_matches('=').to_owned());
        forms.push(format!("Bearer {secret}"));
    }
    forms
}

/// Neither the message nor the details of `status` carry any of `forms`.
fn assert_status_clean(status: &tonic::Status, forms: &[String]) {
    let details = String::from_utf8_lossy(status.details()).into_owned();
    for form in forms {
        assert!(
            !status.message().contains(form.as_str()) && !details.contains(form.as_str()),
            "`{form}` reached the caller: {}",
            status.message()
        );
    }
}

/// No file under `dir` holds any of `needles`.
fn assert_not_stored(dir: &std::path::Path, needles: &[String]) {
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "`{needle}` is stored in {}",
                file.display()
            );
        }
    }
}

// === attack 5: a vendor that echoes the request ===

#[tokio::test]
async fn an_echoing_vendor_shows_and_stores_no_credential_when_issuing() {
    let config = FakeConfig {
        echo: Echo::Writes,
        ..FakeConfig::default()
    };
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    let admin = b.admin_secret();
    let bb = FakeBitbucket::start(config.clone()).await;
    let ld = FakeLaunchDarkly::start(config.clone()).await;
    let fm = FakeForeman::start(config.clone()).await;
    // Basic auth, a bearer token, a raw key in `Authorization`, basic auth again.
    let upstreams = [
        (
            "bb-basic",
            pb::Vendor::BitbucketServer,
            &bb,
            basic_credential(&config),
            "read",
        ),
        (
            "bb-bearer",
            pb::Vendor::BitbucketServer,
            &bb,
            token_credential(&config),
            "read",
        ),
        (
            "ld",
            pb::Vendor::Launchdarkly,
            &ld,
            token_credential(&config),
            "read",
        ),
        (
            "fm",
            pb::Vendor::Foreman,
            &fm,
            basic_credential(&config),
            "admin",
        ),
    ];
    let forms = credential_forms(&config);
    for (name, vendor, fake, credential, perm) in upstreams {
        let up = create(&b, &admin, name, vendor, &fake.base_url(), credential)
            .await
            .unwrap();
        assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
        let err = issue(&b, &admin, name, &[perm]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        // The vendor's text does reach the caller, scrubbed: the echo was there to leak.
        assert!(
            err.message().contains(ECHO_MARKER),
            "{name}: {}",
            err.message()
        );
        assert!(
            err.message().contains("[redacted]"),
            "{name}: {}",
            err.message()
        );
        assert_status_clean(&err, &forms);
    }
    assert!(
        [&bb, &ld, &fm]
            .iter()
            .all(|fake| fake.calls().iter().any(|c| c.method != "GET")),
        "every vendor was asked to issue"
    );
    // The failed leases are stored with our words only: no credential, no vendor text.
    let mut needles = forms;
    needles.push(ECHO_MARKER.to_owned());
    assert_not_stored(data.path(), &needles);
    assert_serving(&mut b).await;
}

#[tokio::test]
async fn an_echoing_vendor_shows_and_stores_no_credential_when_verifying() {
    let config = FakeConfig {
        echo: Echo::Every,
        ..FakeConfig::default()
    };
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    let admin = b.admin_secret();
    let dv = FakeDevelocity::start(config.clone()).await;
    let git = FakeGitHost::start(config.clone()).await;
    let forms = credential_forms(&config);
    for (name, vendor, fake, credential) in [
        ("dv", pb::Vendor::Develocity, &dv, token_credential(&config)),
        (
            "git",
            pb::Vendor::GitPassword,
            &git,
            basic_credential(&config),
        ),
    ] {
        let err = create(&b, &admin, name, vendor, &fake.base_url(), credential)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        assert!(
            err.message().contains(ECHO_MARKER),
            "{name}: {}",
            err.message()
        );
        assert_status_clean(&err, &forms);
        assert_eq!(fake.calls().len(), 1, "{name}: the vendor was asked");
    }
    let mut needles = forms;
    needles.push(ECHO_MARKER.to_owned());
    assert_not_stored(data.path(), &needles);
    assert_serving(&mut b).await;
}

// === attack 9: where the broker may be sent ===

#[tokio::test]
async fn plain_http_is_refused_without_the_flag() {
    let fake = FakeLaunchDarkly::start(FakeConfig::default()).await;
    let config = FakeConfig::default();
    let mut b = Broker::start().await;
    let admin = b.admin_secret();
    for url in [fake.base_url(), "http://vendor.example.com".to_owned()] {
        let err = create(
            &b,
            &admin,
            "ld",
            pb::Vendor::Launchdarkly,
            &url,
            token_credential(&config),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{url}: {}",
            err.message()
        );
        assert!(err.message().contains("base_url"), "{}", err.message());
        assert!(
            err.message().contains("upstreams.allow_insecure_http"),
            "{}",
            err.message()
        );
    }
    assert!(fake.calls().is_empty(), "nothing reached the vendor");
    assert_serving(&mut b).await;
}

#[tokio::test]
async fn non_public_addresses_are_refused_without_the_flag() {
    let config = FakeConfig::default();
    let fake = FakeLaunchDarkly::start(config.clone()).await;
    let port = fake.addr().port();
    // Plain http allowed, so only the address rule is in play.
    let insecure = [("TOKEN_BROKER_UPSTREAMS", "{ allow_insecure_http = true }")];
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &insecure).await;
    let admin = b.admin_secret();
    let literals = [
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
        "https://10.1.2.3".to_owned(),
        "https://169.254.169.254".to_owned(),
        format!("https://[::1]:{port}"),
        format!("https://[::ffff:127.0.0.1]:{port}"),
        "https://100.64.0.1".to_owned(),
        format!("https://0.0.0.0:{port}"),
        "https://[fd00::1]".to_owned(),
        "https://[fe80::1]".to_owned(),
    ];
    // A host name that resolves to loopback is refused at connect time, by the resolver.
    let by_name = format!("http://localhost:{port}");
    for url in literals.iter().chain([&by_name]) {
        let err = create(
            &b,
            &admin,
            "ld",
            pb::Vendor::Launchdarkly,
            url,
            token_credential(&config),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{url}: {}",
            err.message()
        );
        assert!(
            err.message().contains("base_url"),
            "{url}: {}",
            err.message()
        );
        assert!(
            err.message().contains("upstreams.allow_private_addresses"),
            "{url}: {}",
            err.message()
        );
    }
    assert!(
        fake.calls().is_empty(),
        "nothing reached the vendor: {:?}",
        fake.calls()
    );
    assert_serving(&mut b).await;

    // With the flag the same host name is reached: the refusal above was the rule.
    let data = tempfile::tempdir().unwrap();
    let mut open = Broker::start_in(data.path(), &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    let admin = open.admin_secret();
    let up = create(
        &open,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &by_name,
        token_credential(&config),
    )
    .await
    .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
    assert_eq!(fake.calls().len(), 1);
    assert_serving(&mut open).await;
}

/// A port that nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A listener that handles each connection with `serve` (in the background).
async fn listener<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

#[tokio::test]
async fn open_and_closed_ports_are_indistinguishable() {
    let config = FakeConfig::default();
    let data = tempfile::tempdir().unwrap();
    // One attempt per call, so the silent listener costs one request timeout, not three.
    let env = [
        LOOPBACK_VENDORS,
        ("TOKEN_BROKER_UPSTREAM_RETRY_ATTEMPTS", "1"),
    ];
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &env).await;
    let admin = b.admin_secret();
    let targets = [
        ("closed", closed_port().await),
        (
            "reset",
            listener(|stream| async move { drop(stream) }).await,
        ),
        (
            "not http",
            listener(|mut stream| async move {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
            })
            .await,
        ),
        (
            "silent",
            listener(|mut stream| async move {
                // Read and never answered, until the broker gives up and closes.
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await,
        ),
    ];
    let mut messages = Vec::new();
    for (what, addr) in targets {
        let url = format!("http://{addr}");
        let err = create(
            &b,
            &admin,
            "ld",
            pb::Vendor::Launchdarkly,
            &url,
            token_credential(&config),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{what}: {}", err.message());
        assert!(
            err.message().contains("launchdarkly"),
            "{what}: {}",
            err.message()
        );
        messages.push((what, err.message().replace(&addr.to_string(), "ADDR")));
    }
    let (_, first) = &messages[0];
    assert!(first.contains("`ADDR` cannot be reached"), "{first}");
    for (what, message) in &messages {
        assert_eq!(message, first, "{what} told apart from closed");
    }
    assert_serving(&mut b).await;
}

#[tokio::test]
async fn an_oversized_vendor_body_is_refused() {
    let config = FakeConfig {
        oversized_replies: true,
        ..FakeConfig::default()
    };
    let fake = FakeLaunchDarkly::start(config.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let mut b = Broker::start_in(data.path(), &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    let admin = b.admin_secret();
    let err = create(
        &b,
        &admin,
        "ld",
        pb::Vendor::Launchdarkly,
        &fake.base_url(),
        token_credential(&config),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("launchdarkly"), "{}", err.message());
    assert!(err.message().contains("1 MiB"), "{}", err.message());
    assert_eq!(fake.calls().len(), 1, "not retried");
    assert_serving(&mut b).await;
}
