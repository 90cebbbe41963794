//! sled: the mint commit (`Store::insert_token`) without flush, with `Store::durable()`
//! (flush + fdatasync), and 16 concurrent writers sharing group commits.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use token_broker::{
    pb::storage::{AccessKeyRecord, GrantRecord, SubjectRecord, TokenRecord},
    store::{KeyOutcome, MintOutcome, Store},
};

const KEY_ID: &str = "ak_0123456789abcdef0123456789abcdef";

/// A token record of the same shape as a real mint from an access key.
fn record(now: i64) -> TokenRecord {
    TokenRecord {
        subject: "load-bench".to_owned(),
        grant: Some(GrantRecord {
            projects: vec!["load".to_owned()],
            permissions: vec!["read".to_owned()],
        }),
        parent: KEY_ID.to_owned(),
        root_key: KEY_ID.to_owned(),
        depth: 0,
        issued_at: now,
        expires_at: now + 3600,
        revoked_at: 0,
        audience: "token-broker".to_owned(),
        mint_only: false,
    }
}

fn jti(n: u64) -> String {
    format!("{n:032x}")
}

/// A store with the subject and access key every benchmark token hangs from.
fn store(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    store
        .create_subject(&SubjectRecord {
            id: "load-bench".to_owned(),
            kind: 2,
            grant: None,
            ..SubjectRecord::default()
        })
        .unwrap();
    let key = AccessKeyRecord {
        id: KEY_ID.to_owned(),
        owner: "load-bench".to_owned(),
        secret_hash: vec![7; 32],
        ..AccessKeyRecord::default()
    };
    assert_eq!(
        store.insert_access_key(&key, 100).unwrap(),
        KeyOutcome::Stored
    );
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = {
        let _guard = rt.enter();
        store(dir.path())
    };
    let now = common::now();
    let rec = record(now);
    let next = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("sled");
    g.bench_function("insert_token", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                store.insert_token(&jti(n), &rec, 0).unwrap(),
                MintOutcome::Stored
            );
        })
    });
    g.bench_function("insert_token+durable", |b| {
        b.to_async(&rt).iter(|| async {
            let n = next.fetch_add(1, Ordering::Relaxed);
            store.insert_token(&jti(n), &rec, 0).unwrap();
            store.durable().await.unwrap();
        })
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("16_writers_insert+durable", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..16 {
                let (store, rec, next) = (store.clone(), rec.clone(), Arc::clone(&next));
                tasks.spawn(async move {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    store.insert_token(&jti(n), &rec, 0).unwrap();
                    store.durable().await.unwrap();
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
