//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the function
//! its `cargo fuzz` target calls, on stable: what the fuzzer once reached keeps working, and
//! a crash it found and we fixed stays fixed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

use token_broker::fuzzing;

/// Runs `target` on each file of its corpus, naming the file that fails.
fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{name}: only {} corpus files",
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            panic!("{name}: {} fails", file.display());
        }
    }
}

#[test]
fn bearer_corpus_replays() {
    replay("bearer", fuzzing::bearer);
}

#[test]
fn inline_policy_corpus_replays() {
    replay("inline_policy", fuzzing::inline_policy);
}

#[test]
fn request_decoding_corpus_replays() {
    replay("request_decoding", fuzzing::request_decoding);
}
