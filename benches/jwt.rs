//! JWT sign and verify with the crate's crypto backend (jsonwebtoken `rust_crypto`), for
//! EdDSA and ES256.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use token_broker::{
    domain::claims::Claims,
    keys::jwt::{JwtKeys, JwtSettings, KeyMaterial, SigningAlgorithm},
};

fn bench(c: &mut Criterion) {
    let now = common::now();
    let claims = Claims {
        iss: "token-broker".to_owned(),
        sub: "load-bench".to_owned(),
        aud: "token-broker".to_owned(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: "0123456789abcdef0123456789abcdef".to_owned(),
        prj: vec!["load".to_owned()],
        perm: vec!["read".to_owned()],
        par: "ak_0123456789abcdef0123456789abcdef".to_owned(),
        dep: 0,
    };
    let mut g = c.benchmark_group("jwt");
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let material = KeyMaterial::generate(alg, now).unwrap();
        let settings = JwtSettings {
            issuer: "token-broker".to_owned(),
            leeway_secs: 30,
        };
        let keys = JwtKeys::new(settings, &material, &[]).unwrap();
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token, &["token-broker"]).unwrap(), claims);
        g.bench_function(format!("sign_{alg}"), |b| {
            b.iter(|| keys.sign(black_box(&claims)).unwrap())
        });
        g.bench_function(format!("verify_{alg}"), |b| {
            b.iter(|| keys.verify(black_box(&token), &["token-broker"]).unwrap())
        });
        // What the auth layer's `describe` runs for IntrospectToken and RevokeAccessToken.
        g.bench_function(format!("signed_jti_{alg}"), |b| {
            b.iter(|| keys.signed_jti(black_box(&token)).unwrap())
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
