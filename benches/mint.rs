//! An in-process mint end to end, without the network: `Broker::open` on a temp dir with
//! the shipped policies, `authenticate` with the bootstrap key, `authz::authorize` (plan and Cedar), `mint`;
//! and the parts of an introspection, so BENCHMARKS.md can add up a call's CPU time.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, broker, admin) = rt.block_on(common::temp_broker());
    let projects = vec!["load".to_owned()];
    let perms = vec!["read".to_owned()];
    let now = common::now();
    let caller = broker.authn.authenticate(&admin, now).unwrap();
    let plan = broker
        .tokens
        .plan_mint(&caller, &projects, &perms, Some(1.0), "", now)
        .unwrap();
    let mint_request = || token_broker::pb::v1::CreateAccessTokenRequest {
        project_ids: projects.clone(),
        permissions: perms.clone(),
        expires_in_hours: Some(1.0),
        ..Default::default()
    };
    let authorized = |caller: &token_broker::broker::Caller| {
        token_broker::authz::authorize(&broker, caller.clone(), mint_request()).unwrap()
    };
    let minted = rt
        .block_on(broker.tokens.mint(authorized(&caller)))
        .unwrap();
    let token = minted.token.clone();

    let mut g = c.benchmark_group("broker");
    g.bench_function("authenticate_key", |b| {
        b.iter(|| broker.authn.authenticate(black_box(&admin), now).unwrap())
    });
    g.bench_function("authenticate_token", |b| {
        b.iter(|| broker.authn.authenticate(black_box(&token), now).unwrap())
    });
    g.bench_function("plan_mint", |b| {
        b.iter(|| {
            broker
                .tokens
                .plan_mint(&caller, &projects, &perms, Some(1.0), "", now)
                .unwrap()
        })
    });
    // Cedar without its decision cache, with the JSON built per call.
    g.bench_function("cedar_with_json", |b| {
        b.iter(|| {
            let (p, r, ctx) = common::caller_shapes(&broker, &caller, &plan, now);
            assert!(
                broker
                    .policy()
                    .authorize_uncached("CreateAccessToken", &p, &r, &ctx)
                    .allowed
            );
        })
    });
    g.bench_function("mint_durable", |b| {
        b.to_async(&rt)
            .iter(|| async { broker.tokens.mint(authorized(&caller)).await.unwrap() })
    });
    g.bench_function("introspect", |b| {
        b.iter(|| {
            broker
                .authn
                .introspect(black_box(&token), now)
                .unwrap()
                .unwrap()
        })
    });
    // What one CreateAccessToken costs in process: what the auth layer and the handler run
    // (authenticate, then `authorize` plans once and Cedar answers from its cache).
    g.bench_function("mint_end_to_end", |b| {
        b.to_async(&rt).iter(|| async {
            let caller = broker.authn.authenticate(&admin, broker.now()).unwrap();
            broker.tokens.mint(authorized(&caller)).await.unwrap()
        })
    });
    // What one IntrospectToken costs in process: authenticating the caller's key, then
    // `authorize` (the target verified from the cache, Cedar from its decision cache).
    g.bench_function("introspect_end_to_end", |b| {
        b.iter(|| {
            let caller = broker.authn.authenticate(&admin, broker.now()).unwrap();
            let request = token_broker::pb::v1::IntrospectTokenRequest {
                token: token.clone(),
            };
            token_broker::authz::authorize(&broker, caller, request).unwrap()
        })
    });
    g.bench_function("authenticate_key_only", |b| {
        b.iter(|| broker.authn.authenticate(black_box(&admin), now).unwrap())
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
