//! The load tool against the real server: a short bounded run per path must report exactly
//! the requested number of successes and no error (a failed call is never a success).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::*;

/// Runs `token-broker-load --json` for `target` with 200 requests; returns the report.
async fn load(b: &Broker, target: &str, extra: &[&str]) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_token-broker-load"));
    cmd.args(["--target", target])
        .arg("--addr")
        .arg(format!("http://{}", b.addr))
        .arg("--data-dir")
        .arg(&b.data_dir)
        .args(["--requests", "200", "--warmup", "0s"])
        .args(["--connections", "2", "--concurrency", "8", "--json"])
        .args(extra);
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "load failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not json ({e}): {stdout}"))
}

#[tokio::test]
async fn bounded_mint_and_introspect_runs_count_every_call() {
    let b = Broker::start().await;
    for (target, extra) in [("mint-key", &[][..]), ("introspect", &["--pool", "50"][..])] {
        let report = load(&b, target, extra).await;
        assert_eq!(report["target"], target, "{report}");
        assert_eq!(report["successes"], 200, "{report}");
        assert_eq!(report["error_total"], 0, "{report}");
        assert!(
            report["latency_us"]["p50"].as_u64().unwrap() > 0,
            "{report}"
        );
    }
    // The pool of the introspect run was minted through the API too.
    let logs = b.logs();
    let mints = logs
        .lines()
        .filter(|l| l.contains("method=\"CreateAccessToken\"") && l.contains("code=\"0\""))
        .count();
    assert!(mints >= 250, "{logs}");
}

/// The open loop paces calls: 200 calls at 400/s take about half a second, and the report
/// carries the rate asked for.
#[tokio::test]
async fn open_loop_paces_calls_at_the_rate_asked() {
    let b = Broker::start().await;
    let report = load(&b, "health", &["--rate", "400"]).await;
    assert_eq!(report["successes"], 200, "{report}");
    assert_eq!(report["error_total"], 0, "{report}");
    assert_eq!(report["target_rate"], 400.0, "{report}");
    // Paced, not as fast as possible: the last call was due at 199/400 s.
    let elapsed = report["elapsed_secs"].as_f64().unwrap();
    assert!(elapsed >= 0.45, "finished too early for the rate: {report}");
}

/// A rate that is not a positive number is refused before anything is called.
#[test]
fn open_loop_refuses_a_meaningless_rate() {
    for bad in ["0", "-5", "fast", "NaN", "inf"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_token-broker-load"))
            .args(["--target", "health"])
            .arg(format!("--rate={bad}"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "rate {bad} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("calls per second"), "{bad}: {stderr}");
    }
}

/// The old spelling `token-broker load …` runs nothing: it names the new binary and exits 2,
/// whatever flags follow (including `--help`).
#[test]
fn old_load_subcommand_points_to_the_new_binary() {
    for args in [
        &["load"][..],
        &["load", "--target", "mint-key", "--duration", "1s"][..],
        &["load", "--help"][..],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("`token-broker-load`")
                && stderr.contains("cargo run --release --bin token-broker-load --"),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: ran something");
    }
}
