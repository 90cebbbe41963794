//! Cedar authorization of a CreateAccessToken, with the shipped policies and with 100 extra
//! policies that all apply to the action (so none is skipped by scope).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::{fmt::Write as _, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use token_broker::policy::PolicyEngine;

/// A copy of `policies/` plus `extra.cedar` with 50 `forbid` and 50 `permit` policies on
/// CreateAccessToken whose conditions do not hold for the benchmark request.
fn with_extra_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::shipped_policies()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut text = String::new();
    for n in 0..50 {
        writeln!(
            text,
            "@id(\"extra-forbid-{n}\")\nforbid (principal, action == Action::\"CreateAccessToken\", resource)\nwhen {{ context.requested.projects.contains(\"blocked-{n}\") || context.lifetime_seconds > {} }};\n",
            86400 + n
        )
        .unwrap();
        writeln!(
            text,
            "@id(\"extra-permit-{n}\")\npermit (principal is Service, action == Action::\"CreateAccessToken\", resource)\nwhen {{ principal.name == \"svc-{n}\" && context.credential.depth < 3 }};\n"
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("extra.cedar"), text).unwrap();
    dir
}

fn bench(c: &mut Criterion) {
    let model = common::model();
    let now = common::now();
    let (principal, resource, context) = common::mint_request_shapes(&model, now);
    let shipped = PolicyEngine::load(&common::shipped_policies()).unwrap();
    let extra_dir = with_extra_policies();
    let extra = PolicyEngine::load(extra_dir.path()).unwrap();
    assert!(extra.policy_count() >= 100);

    let mut g = c.benchmark_group("cedar_create_access_token");
    for (name, engine) in [("shipped", &shipped), ("shipped+100", &extra)] {
        assert!(
            engine
                .authorize("CreateAccessToken", &principal, &resource, &context)
                .allowed
        );
        // Cedar itself: entities, context, request, evaluation (no decision cache).
        g.bench_function(name, |b| {
            b.iter(|| {
                engine.authorize_uncached(
                    "CreateAccessToken",
                    black_box(&principal),
                    black_box(&resource),
                    black_box(&context),
                )
            })
        });
        // What the auth layer pays when the same input was decided before.
        g.bench_function(format!("{name}/decision_cache_hit"), |b| {
            b.iter(|| {
                engine.authorize(
                    "CreateAccessToken",
                    black_box(&principal),
                    black_box(&resource),
                    black_box(&context),
                )
            })
        });
    }
    // The records authz builds per call, without Cedar, to separate the two costs.
    g.bench_function("build_request_records", |b| {
        b.iter(|| common::mint_request_shapes(black_box(&model), now))
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
