//! The README's walk-throughs, run as a newcomer would paste them: every shell block of the
//! walk-through sections, in order, in one bash session with grpcurl and jq, against the real
//! broker started as the README says and the fake vendors of `cargo run --example
//! fake-vendors`, whose printed `export` lines are pasted first. Each block must succeed, and
//! where the README shows an output, the block must print it.
//!
//! Reading the README: a shell block is an indented (4-space) code block after a blank line;
//! the fenced ` ``` ` or ` ```json ` block right after it is what it prints. A block that runs
//! `cargo` (starting the broker or the fakes) is what this test does itself. In a shown
//! output, timestamps, 32-digit hex ids and `…` stand for any value, and trailing spaces
//! do not count.
//!
//! The one edit: the README's `localhost:50051` becomes the port this test's broker listens
//! on, so a broker already running on the default port does not get in the way. grpcurl
//! 1.8.6 and jq come from `cargo xtask test` (see `common::tools`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::{Broker, fakes::LOOPBACK_VENDORS, shipped_policies, tools};
use regex::Regex;

/// The README sections whose shell blocks form the walk-through, in README order.
const WALKTHROUGH_SECTIONS: &[&str] = &[
    "## Walk-through with grpcurl",
    "## Access keys",
    "### Upstreams with grpcurl",
];

/// One shell block and the output the README shows for it.
#[derive(Debug)]
struct Block {
    /// README line the block starts on, for failure messages.
    line: usize,
    /// The commands, unindented.
    script: String,
    /// The fenced output after the block, if the README shows one.
    expected: Option<String>,
}

/// The shell blocks of the walk-through sections, with their shown outputs.
fn walkthrough_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut in_walkthrough = false;
    let mut in_fence = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("```") {
            in_fence = !in_fence;
            i += 1;
            continue;
        }
        if in_fence {
            i += 1;
            continue;
        }
        if line.starts_with('#') {
            in_walkthrough = WALKTHROUGH_SECTIONS.contains(&line.trim_end());
        }
        let starts_block = line.starts_with("    ") && i > 0 && lines[i - 1].trim().is_empty();
        if !(in_walkthrough && starts_block) {
            i += 1;
            continue;
        }
        let start = i;
        let mut script = String::new();
        while i < lines.len() && (lines[i].starts_with("    ") || lines[i].trim().is_empty()) {
            // A blank line ends the block unless the next one is still indented.
            if lines[i].trim().is_empty()
                && !lines.get(i + 1).is_some_and(|l| l.starts_with("    "))
            {
                break;
            }
            script.push_str(lines[i].strip_prefix("    ").unwrap_or(""));
            script.push('\n');
            i += 1;
        }
        let mut j = i;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        let expected = matches!(lines.get(j).copied(), Some("```" | "```json")).then(|| {
            let body: Vec<&str> = lines[j + 1..]
                .iter()
                .take_while(|l| !l.starts_with("```"))
                .copied()
                .collect();
            body.join("\n")
        });
        blocks.push(Block {
            line: start + 1,
            script,
            expected,
        });
    }
    blocks
}

/// A regex for a shown output: literal text, except that timestamps, 32-digit hex ids and
/// `…` match any value of their kind.
fn output_pattern(expected: &str) -> Regex {
    let volatile = Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z|[0-9a-f]{32}|…").unwrap();
    let mut pattern = String::from(r"\A");
    let mut last = 0;
    for m in volatile.find_iter(expected) {
        pattern.push_str(&regex::escape(&expected[last..m.start()]));
        pattern.push_str(match m.as_str() {
            "…" => r"[^\n]*?",
            s if s.len() == 32 => "[0-9a-f]{32}",
            _ => r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z",
        });
        last = m.end();
    }
    pattern.push_str(&regex::escape(&expected[last..]));
    pattern.push_str(r"\z");
    Regex::new(&pattern).unwrap()
}

/// `text` without trailing whitespace on any line or at the end: grpcurl indents the empty
/// line of an empty message, which a README cannot keep.
fn trim_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

/// The fake vendors as `cargo run --example fake-vendors` starts them, and the `export`
/// lines they print.
fn start_fake_vendors() -> (Child, String) {
    // This test runs from `<target>/debug/deps/`; `cargo test` builds the examples beside it.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .ancestors()
        .nth(2)
        .unwrap()
        .join("examples")
        .join("fake-vendors");
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds it; with `--test readme` alone run `cargo build --example fake-vendors` first",
        example.display()
    );
    let mut child = Command::new(&example)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", example.display()));
    let mut exports = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The example prints its exports, then a comment on how to start the broker, then serves.
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("export ") {
            exports.push_str(&line);
        } else if line.contains("cargo run --release -- serve") {
            break;
        }
        line.clear();
    }
    assert!(
        exports.contains("BITBUCKET_URL="),
        "fake-vendors printed no exports:\n{exports}"
    );
    (child, exports)
}

/// Kills the fake vendors when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

/// What running the blocks printed, block by block, and whether each had a failing command.
fn run_blocks(dir: &Path, path: &str, exports: &str, blocks: &[Block]) -> Vec<(String, bool)> {
    let mut script = String::from("exec 2>&1\nset -o pipefail\ntrap 'echo \"@@failed $?\"' ERR\n");
    script.push_str(exports);
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!(
            "echo '@@block {i}'\n{}echo '@@end {i}'\n",
            block.script
        ));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut results = Vec::new();
    let mut current: Option<(String, bool)> = None;
    for line in text.lines() {
        if line.starts_with("@@block ") {
            current = Some((String::new(), false));
        } else if line.starts_with("@@end ") {
            results.extend(current.take());
        } else if line.starts_with("@@failed") {
            if let Some(c) = current.as_mut() {
                c.1 = true;
            }
        } else if let Some(c) = current.as_mut() {
            c.0.push_str(line);
            c.0.push('\n');
        }
    }
    assert_eq!(
        results.len(),
        blocks.len(),
        "the walk-through stopped early; it printed:\n{text}"
    );
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks: Vec<Block> = walkthrough_blocks(&readme)
        .into_iter()
        .filter(|b| !b.script.contains("cargo "))
        .collect();
    assert!(
        blocks.len() > 20,
        "found only {} walk-through blocks: has the README's layout changed?",
        blocks.len()
    );

    let (Some(grpcurl), Some(jq)) = (tools::grpcurl(), tools::jq()) else {
        tools::skipped("readme_walkthrough_runs_as_written", "grpcurl 1.8.6 and jq");
        return;
    };
    let (fakes, exports) = start_fake_vendors();
    let _fakes = Reaped(fakes);

    // The README runs the broker with embedded defaults from one directory: data in ./data,
    // policies from ./policies.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let broker = Broker::start_in(&data, &shipped_policies(), &[LOOPBACK_VENDORS]).await;
    let port = broker.addr.rsplit(':').next().unwrap().to_owned();
    let blocks: Vec<Block> = blocks
        .into_iter()
        .map(|b| Block {
            script: b
                .script
                .replace("localhost:50051", &format!("localhost:{port}")),
            ..b
        })
        .collect();

    let mut path: Vec<PathBuf> = [&grpcurl, &jq]
        .iter()
        .filter_map(|p| p.parent().filter(|d| !d.as_os_str().is_empty()))
        .map(Path::to_owned)
        .collect();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).unwrap();
    let results = run_blocks(dir.path(), path.to_str().unwrap(), &exports, &blocks);

    let mut problems = Vec::new();
    for (block, (output, failed)) in blocks.iter().zip(&results) {
        let shows_error = block
            .expected
            .as_deref()
            .is_some_and(|e| e.starts_with("ERROR:"));
        if *failed && !shows_error {
            problems.push(format!(
                "README line {}: a command failed:\n{}\nit printed:\n{output}",
                block.line, block.script
            ));
            continue;
        }
        if let Some(expected) = &block.expected
            && !output_pattern(&trim_lines(expected)).is_match(&trim_lines(output))
        {
            problems.push(format!(
                "README line {}: the output differs from the README's:\n{}\nREADME shows:\n{expected}\nit printed:\n{output}",
                block.line, block.script
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} walk-through blocks do not run as written:\n\n{}\n\nbroker logs:\n{}",
        problems.len(),
        blocks.len(),
        problems.join("\n\n"),
        broker.logs()
    );
}

#[test]
fn shown_outputs_match_only_their_own_shape() {
    let p = output_pattern(
        "{\n  \"jti\": \"8eb5ef698d9e4923aecbe61554b94a49\",\n  \"at\": \"2026-11-26T09:52:42Z\",\n  \"id\": \"ak_…\"\n}",
    );
    assert!(p.is_match("{\n  \"jti\": \"0123456789abcdef0123456789abcdef\",\n  \"at\": \"2027-01-02T03:04:05.123Z\",\n  \"id\": \"ak_42\"\n}"));
    assert!(!p.is_match(
        "{\n  \"jti\": \"0123\",\n  \"at\": \"2027-01-02T03:04:05Z\",\n  \"id\": \"ak_42\"\n}"
    ));
    assert!(!p.is_match("{\n  \"jti\": \"0123456789abcdef0123456789abcdef\",\n  \"at\": \"2027-01-02T03:04:05Z\",\n  \"id\": \"ak_42\",\n  \"more\": 1\n}"));
}
