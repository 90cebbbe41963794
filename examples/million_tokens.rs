//! Storage and start-up at scale: inserts N token records (default 1 000 000) of the same
//! shape as real mints straight through `Store::insert_token` into a data dir, then reports
//! the database size per live token, and the time of `Broker::open` plus the first
//! authenticated mint and introspection on the filled store.
//!
//!     cargo run --release --example million_tokens -- /tmp/million [N]
//!
//! It runs in process, without the network; the served start-up (process start to the
//! first answered RPC) is measured separately with `token-broker serve` on the same dir
//! (see BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::{path::PathBuf, time::Instant};

use token_broker::{
    broker::{Broker, MasterKeySource, grant_record},
    config::Config,
    domain::{Grant, Projects},
    pb::storage::TokenRecord,
    store::MintOutcome,
};

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                use std::os::unix::fs::MetadataExt;
                meta.blocks() * 512
            }
        })
        .sum()
}

async fn open(dir: &std::path::Path) -> std::sync::Arc<Broker> {
    let config = Config {
        data_dir: dir.to_owned(),
        policies: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"),
        ..Config::default()
    };
    Broker::open(config, MasterKeySource::File).await.unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/million".to_owned()));
    let n: u64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let admin_file = dir.join("bootstrap-admin.key");

    if !admin_file.exists() {
        let broker = open(&dir).await;
        let admin = std::fs::read_to_string(&admin_file).unwrap();
        let t = broker.now();
        let caller = broker.authn.authenticate(admin.trim(), t).unwrap();
        let grant = Grant {
            projects: Projects::from_ids(["load"]),
            permissions: ["read".to_owned()].into_iter().collect(),
            not_after: Some(t + 86_000),
        };
        let before = dir_size(&dir.join("db"));
        let started = Instant::now();
        for i in 0..n {
            // Same shape as `Broker::mint`: uuid jti, one project, one permission.
            let record = TokenRecord {
                subject: caller.subject.id.clone(),
                grant: Some(grant_record(&grant)),
                parent: caller.credential_id.clone(),
                // As `Broker::mint` at depth 0: the parent is the root key.
                root_key: String::new(),
                depth: 0,
                issued_at: t,
                expires_at: t + 86_000,
                revoked_at: 0,
                audience: "token-broker".to_owned(),
                mint_only: false,
            };
            let jti = uuid::Uuid::new_v4().simple().to_string();
            assert_eq!(
                broker
                    .store()
                    .insert_token(&jti, &record, caller.key_version)
                    .unwrap(),
                MintOutcome::Stored
            );
            if i % 100_000 == 99_999 {
                broker.store().durable().await.unwrap();
                eprintln!(
                    "{} records, {:.1} s",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        broker.store().durable().await.unwrap();
        broker.store().flush_now().unwrap();
        let inserted = started.elapsed();
        drop(broker);
        // Let sled's background flusher finish with the files before sizing them.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let after = dir_size(&dir.join("db"));
        println!(
            "inserted {n} tokens in {:.1} s ({:.0}/s); db {} → {} bytes: {:.0} bytes per token",
            inserted.as_secs_f64(),
            n as f64 / inserted.as_secs_f64(),
            before,
            after,
            (after - before) as f64 / n as f64
        );
        return;
    }

    // Second invocation on the filled dir: start-up time.
    let started = Instant::now();
    let broker = open(&dir).await;
    let opened = started.elapsed();
    let admin = std::fs::read_to_string(&admin_file).unwrap();
    let t = broker.now();
    let caller = broker.authn.authenticate(admin.trim(), t).unwrap();
    let request = token_broker::pb::v1::CreateAccessTokenRequest {
        project_ids: vec!["load".to_owned()],
        permissions: vec!["read".to_owned()],
        expires_in_hours: Some(1.0),
        ..Default::default()
    };
    let authorized = token_broker::authz::authorize(&broker, caller, request).unwrap();
    let minted = broker.tokens.mint(authorized).await.unwrap();
    assert!(broker.authn.introspect(&minted.token, t).unwrap().is_some());
    let first = started.elapsed();
    println!(
        "{} token records; Broker::open {:.3} s; open + first mint + introspect {:.3} s; db {} bytes",
        broker.store().token_count(),
        opened.as_secs_f64(),
        first.as_secs_f64(),
        dir_size(&dir.join("db"))
    );
}
