//! External programs the tests drive as a user would (grpcurl, jq, Envoy). `cargo xtask test` (the
//! README's test command) provisions them under the target directory and names them in
//! `BROKER_TEST_TOOL_<NAME>`; under plain `cargo test` a test that needs a missing one says
//! so in one line and runs nothing else.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The grpcurl release the README's outputs were taken with.
const GRPCURL_VERSION: &str = "1.8.6";

/// Whether `program` runs and prints something containing `needle` for `args`.
fn answers(program: &Path, args: &[&str], needle: &str) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains(needle)
            || String::from_utf8_lossy(&o.stderr).contains(needle)
    })
}

/// The tool named in `BROKER_TEST_TOOL_<NAME>` (which must then work), else `name` on PATH
/// when it prints `needle` for `args`, else `None`.
fn find(name: &str, args: &[&str], needle: &str) -> Option<PathBuf> {
    let var = format!("BROKER_TEST_TOOL_{}", name.to_ascii_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        assert!(
            answers(&path, args, needle),
            "{var}={} does not answer `{}` with {needle:?}",
            path.display(),
            args.join(" ")
        );
        return Some(path);
    }
    let on_path = PathBuf::from(name);
    answers(&on_path, args, needle).then_some(on_path)
}

/// grpcurl 1.8.6, if provisioned or on PATH.
pub fn grpcurl() -> Option<PathBuf> {
    find("grpcurl", &["-version"], GRPCURL_VERSION)
}

/// Envoy 1.40, if provisioned or on PATH.
pub fn envoy() -> Option<PathBuf> {
    find("envoy", &["--version"], "/1.40.")
}

/// jq, if provisioned or on PATH.
pub fn jq() -> Option<PathBuf> {
    find("jq", &["--version"], "jq-")
}

/// Prints the one line a test that cannot run here leaves, naming what runs it. It goes to
/// the process's stderr directly, past the harness's capture, so plain `cargo test` shows it.
pub fn skipped(test: &str, missing: &str) {
    use std::io::Write as _;
    drop(writeln!(
        std::io::stderr(),
        "skipped {test}: needs {missing}; `cargo xtask test` provisions it and runs it"
    ));
}
