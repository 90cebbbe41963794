//! Git password upstreams against a real git smart-HTTP host (`git http-backend` behind basic
//! auth on loopback): the broker checks the password the way `git ls-remote` starts, with
//! `GET {base_url}/info/refs?service=git-upload-pack`, at create, at update and in the
//! periodic re-check, and refuses a base url that is no repository.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;
#[path = "common/git_http.rs"]
mod git_server;

use common::{fakes::LOOPBACK_VENDORS, *};
use git_server::{GitHttp, REPO, USER};
use tonic::Code;

const PASSWORD: &str = "first-password-1";
const ROTATED: &str = "rotated-password-2";
const ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";

/// A broker that may call loopback vendors, with a policy letting the admin read the
/// password of the git upstream `repo`.
async fn start_broker() -> (Broker, tempfile::TempDir, tempfile::TempDir) {
    let policies = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        policies.path().join("git-secrets.cedar"),
        "permit (principal == User::\"admin\", action == Action::\"ReadUpstreamSecret\", resource == Upstream::\"repo\");\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), policies.path(), &[LOOPBACK_VENDORS]).await;
    (b, data, policies)
}

fn credential(password: &str) -> pb::Credential {
    pb::Credential {
        username: USER.to_owned(),
        password: password.to_owned(),
        token: String::new(),
    }
}

async fn create(
    b: &Broker,
    admin: &str,
    name: &str,
    base_url: &str,
    password: &str,
) -> Result<pb::Upstream, tonic::Status> {
    b.upstreams()
        .await
        .create_upstream(authed(
            pb::CreateUpstreamRequest {
                name: name.to_owned(),
                vendor: pb::Vendor::GitPassword as i32,
                base_url: base_url.to_owned(),
                credential: Some(credential(password)),
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn issue(b: &Broker, admin: &str, name: &str) -> Result<String, tonic::Status> {
    b.upstreams()
        .await
        .issue_upstream_token(authed(
            pb::IssueUpstreamTokenRequest {
                upstream: name.to_owned(),
                permissions: vec!["read".to_owned()],
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().token)
}

async fn status(b: &Broker, admin: &str, name: &str) -> i32 {
    get_upstream(b, admin, name).await.status
}

/// The one request a password check sends.
fn info_refs() -> String {
    format!("GET /{REPO}/info/refs?service=git-upload-pack")
}

#[tokio::test]
async fn a_password_the_git_host_accepts_is_normal_and_handed_out() {
    let host = GitHttp::start(PASSWORD).await;
    let (b, _data, _policies) = start_broker().await;
    let admin = b.admin_secret();

    let up = create(&b, &admin, "repo", &host.repo_url(), PASSWORD)
        .await
        .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);
    assert_eq!(up.repo_host, host.repo_url());
    assert_eq!(up.repo_user, USER);
    assert_eq!(host.calls(), vec![info_refs()]);

    let token = issue(&b, &admin, "repo").await.unwrap();
    assert_eq!(token, PASSWORD);
    // What was handed out opens the repository with git itself.
    let refs = host.ls_remote(&token).await.unwrap();
    assert!(refs.contains("refs/heads/main"), "{refs}");
    assert!(host.ls_remote("not-the-password").await.is_err());
}

#[tokio::test]
async fn a_password_the_git_host_rejects_is_stored_unauthenticated() {
    let host = GitHttp::start(PASSWORD).await;
    let (b, _data, _policies) = start_broker().await;
    let admin = b.admin_secret();

    let up = create(&b, &admin, "repo", &host.repo_url(), "wrong-password")
        .await
        .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Unauthenticated as i32);
    assert_eq!(host.calls(), vec![info_refs()]);
    let err = issue(&b, &admin, "repo").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("UNAUTHENTICATED"),
        "{}",
        err.message()
    );
    assert!(!b.logs().contains("wrong-password"));
}

#[tokio::test]
async fn a_password_changed_at_the_host_is_found_by_the_recheck_and_fixed_by_update() {
    let host = GitHttp::start(PASSWORD).await;
    let (b, _data, _policies) = start_broker().await;
    let admin = b.admin_secret();
    let up = create(&b, &admin, "repo", &host.repo_url(), PASSWORD)
        .await
        .unwrap();
    assert_eq!(up.status, pb::UpstreamStatus::Normal as i32);

    host.set_password(ROTATED);
    assert!(host.ls_remote(PASSWORD).await.is_err());
    b.advance_clock(3601);
    b.wait_for_log_line("the worker's re-check of `repo`", |l| {
        l.contains("re-checked at the vendor") && l.contains("upstream=repo")
    })
    .await;
    assert_eq!(
        status(&b, &admin, "repo").await,
        pb::UpstreamStatus::Unauthenticated as i32
    );
    assert_eq!(host.calls().last(), Some(&info_refs()));
    let err = issue(&b, &admin, "repo").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("UNAUTHENTICATED"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("UpdateUpstream"),
        "{}",
        err.message()
    );

    let fixed = b
        .upstreams()
        .await
        .update_upstream(authed(
            pb::UpdateUpstreamRequest {
                name: "repo".to_owned(),
                credential: Some(credential(ROTATED)),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fixed.status, pb::UpstreamStatus::Normal as i32);
    let token = issue(&b, &admin, "repo").await.unwrap();
    assert_eq!(token, ROTATED);
    let refs = host.ls_remote(&token).await.unwrap();
    assert!(refs.contains("refs/heads/main"), "{refs}");
}

#[tokio::test]
async fn a_base_url_that_is_no_repository_is_refused() {
    let host = GitHttp::start(PASSWORD).await;
    let (b, _data, _policies) = start_broker().await;
    let admin = b.admin_secret();

    // The server root: git http-backend finds no repository there.
    let err = create(&b, &admin, "root", &host.root_url(), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    for fragment in [
        "the repository does not exist at base url",
        &host.root_url(),
        "must be a repository url such as `https://git.example.com/team/repo.git`",
    ] {
        assert!(err.message().contains(fragment), "{}", err.message());
    }

    // A web page answering 200 to anything, as a front page or a login page does.
    let err = create(&b, &admin, "web", &host.web_url(), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    for fragment in [
        "is not a git smart-http repository",
        &host.web_url(),
        "content type `text/html; charset=utf-8`",
        ADVERTISEMENT,
        "must be a repository url such as `https://git.example.com/team/repo.git`",
    ] {
        assert!(err.message().contains(fragment), "{}", err.message());
    }
    assert!(!err.message().contains(PASSWORD));
    assert_eq!(
        host.calls(),
        vec![
            "GET /info/refs?service=git-upload-pack".to_owned(),
            "GET /web/info/refs?service=git-upload-pack".to_owned(),
        ]
    );

    // Nothing was stored.
    for name in ["root", "web"] {
        let err = b
            .upstreams()
            .await
            .get_upstream(authed(
                pb::GetUpstreamRequest {
                    name: name.to_owned(),
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name}: {}", err.message());
    }
}
