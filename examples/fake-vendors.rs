//! The test suite's fake vendors on loopback, so the README's upstream walk-through runs on a
//! laptop without a Bitbucket, LaunchDarkly, Foreman, Develocity or git server:
//!
//!     cargo run --example fake-vendors
//!
//! It prints `export` lines naming each fake's base URL; paste them into the shell you run
//! grpcurl from. The fakes accept exactly the credentials the README's commands use, follow
//! the vendors' documented APIs, and run until Ctrl-C. The broker must be allowed to call
//! `http://127.0.0.1` (see the printed `serve` command).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a developer tool built on the test suite's fakes, which panic on setup failure"
)]

#[path = "../tests/common/wait.rs"]
#[allow(dead_code, reason = "the fakes' waits are for tests")]
mod wait;

#[path = "../tests/common/fakes.rs"]
#[allow(
    dead_code,
    reason = "the example uses only the fakes' start and base URL"
)]
mod fakes;

use fakes::{
    FakeBitbucket, FakeConfig, FakeDevelocity, FakeForeman, FakeGitHost, FakeLaunchDarkly,
};
#[allow(
    unused_imports,
    reason = "the fakes reach their wait helper as `super::`"
)]
use wait::{WAIT, wait_until};

/// The Bitbucket Server account of the README: basic auth or an HTTP access token (the
/// README's rotation), and the user whose tokens the broker manages.
fn bitbucket() -> FakeConfig {
    FakeConfig {
        username: "svc-broker".into(),
        password: "app-password".into(),
        token: "MDM5NzQ1NjQ3NjQ4OuS6wVNY0Zz7ZJsM6zQ6gvUCU7zX".into(),
        user_slug: "svc-broker".into(),
        ..FakeConfig::default()
    }
}

/// The LaunchDarkly API access token of the README.
fn launchdarkly() -> FakeConfig {
    FakeConfig {
        token: "api-00000000-0000-0000-0000-000000000000".into(),
        ..FakeConfig::default()
    }
}

/// The Foreman account of the README and its user id.
fn foreman() -> FakeConfig {
    FakeConfig {
        username: "svc-broker".into(),
        password: "secret".into(),
        user_id: "7".into(),
        ..FakeConfig::default()
    }
}

/// The Develocity access key of the README.
fn develocity() -> FakeConfig {
    FakeConfig {
        token: "develocity-access-key".into(),
        ..FakeConfig::default()
    }
}

/// The git host login of the README.
fn git_host() -> FakeConfig {
    FakeConfig {
        username: "ci-bot".into(),
        password: "secret".into(),
        ..FakeConfig::default()
    }
}

#[tokio::main]
async fn main() {
    let bitbucket = FakeBitbucket::start(bitbucket()).await;
    let launchdarkly = FakeLaunchDarkly::start(launchdarkly()).await;
    let foreman = FakeForeman::start(foreman()).await;
    let develocity = FakeDevelocity::start(develocity()).await;
    let git = FakeGitHost::start(git_host()).await;
    println!(
        "# Fake vendors on loopback until Ctrl-C. Paste these lines into the shell you run grpcurl from:"
    );
    println!("export BITBUCKET_URL={}", bitbucket.base_url());
    println!("export LAUNCHDARKLY_URL={}", launchdarkly.base_url());
    println!("export FOREMAN_URL={}", foreman.base_url());
    println!("export DEVELOCITY_URL={}", develocity.base_url());
    println!("export GIT_URL={}", git.base_url());
    println!(
        "# The broker may call them only when told it may use http:// and loopback addresses:"
    );
    println!(
        "#   TOKEN_BROKER_UPSTREAMS='{{ allow_insecure_http = true, allow_private_addresses = true }}' cargo run --release -- serve"
    );
    tokio::signal::ctrl_c()
        .await
        .expect("cannot wait for Ctrl-C");
}
