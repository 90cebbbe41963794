//! The attenuation check (`domain::attenuate`): the pure rule every mint runs twice (auth
//! layer and handler).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use token_broker::domain::{
    Grant, MintLimits, MintRequest, Projects, attenuate, grant::attenuates,
};

fn bench(c: &mut Criterion) {
    let model = common::model();
    let now = common::now();
    let limits = MintLimits {
        default_lifetime_secs: 7200,
        max_lifetime_secs: 86400,
    };
    let caller = Grant {
        projects: Projects::from_ids(["load"]),
        permissions: ["read", "write"].map(str::to_owned).into_iter().collect(),
        not_after: Some(now + 7200),
    };
    let request = MintRequest {
        projects: Some(Projects::from_ids(["load"])),
        permissions: Some(["read".to_owned()].into_iter().collect()),
        lifetime_secs: Some(3600),
    };
    let mut g = c.benchmark_group("domain");
    g.bench_function("attenuate", |b| {
        b.iter(|| attenuate(black_box(&caller), black_box(&request), now, limits, &model).unwrap())
    });
    let child = attenuate(&caller, &request, now, limits, &model).unwrap();
    g.bench_function("attenuates", |b| {
        b.iter(|| attenuates(black_box(&child), black_box(&caller), &model))
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
