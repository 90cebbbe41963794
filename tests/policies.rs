//! Cedar at work on the real server: a `forbid` narrows what attenuation allows, and a bad
//! policy stops the server at start with its file and line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use tonic::Code;

const FORBID_LONG_SERVICE_TOKENS: &str = r#"
// No Service mints a token over 1 hour.
@id("service-tokens-short")
forbid (principal is Service, action == Action::"CreateAccessToken", resource)
when { context.lifetime_seconds > 3600 };
"#;

fn policies_with(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("extra.cedar"), extra).unwrap();
    dir
}

async fn service_key(b: &Broker, admin: &str) -> String {
    b.subjects()
        .await
        .create_subject(authed(
            pb::CreateSubjectRequest {
                subject_id: "ci".into(),
                kind: pb::SubjectKind::Service as i32,
                project_ids: vec!["alpha".into()],
                permissions: vec!["read".into()],
            },
            admin,
        ))
        .await
        .unwrap();
    create_key(b, admin, "ci", &["read"]).await
}

#[tokio::test]
async fn forbid_denies_a_mint_that_attenuation_allows() {
    // Shipped policies: a service may mint a 2 h token within its grant.
    let plain = Broker::start().await;
    let admin = plain.admin_secret();
    let key = service_key(&plain, &admin).await;
    mint(&plain, &key, &[], &[], Some(2.0)).await.unwrap();

    let policies = policies_with(FORBID_LONG_SERVICE_TOKENS);
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start_in(data.path(), policies.path(), &[]).await;
    let admin = b.admin_secret();
    let key = service_key(&b, &admin).await;
    let err = mint(&b, &key, &[], &[], Some(2.0)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("service-tokens-short"),
        "{}",
        err.message()
    );
    // The default lifetime (2 h) is what policy sees when none is given.
    let err = mint(&b, &key, &[], &[], None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    mint(&b, &key, &[], &[], Some(0.5)).await.unwrap();
    // Users are not affected.
    mint(&b, &admin, &[], &[], Some(2.0)).await.unwrap();
}

fn start_fails(policies: &Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--policies")
        .arg(policies)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Waited for on a thread, so a server that keeps running fails the test after 30 s.
    let pid = child.id().to_string();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = child.wait().unwrap();
        let _ = done.send((status, stderr));
    });
    let Ok((status, stderr)) = exited.recv_timeout(Duration::from_secs(30)) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("server started on a bad policy");
    };
    assert!(!status.success());
    // Nothing was written: policies are checked before the store is opened.
    assert!(!data.path().join("db").exists());
    assert!(!data.path().join("master.key").exists());
    stderr
}

#[test]
fn bad_policies_stop_the_server_naming_file_and_line() {
    let unparsable =
        policies_with("permit (principal, action, resource);\n\nforbid (principal, action\n");
    let stderr = start_fails(unparsable.path());
    assert!(stderr.contains("extra.cedar:"), "{stderr}");

    let invalid = policies_with(
        "permit (principal, action, resource);\n\npermit (principal, action == Action::\"CreateAccessToken\", resource)\nwhen { context.nope > 1 };\n",
    );
    let stderr = start_fails(invalid.path());
    assert!(stderr.contains("extra.cedar:4"), "{stderr}");
}
