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
        assert_eq!(keys.verify(&token, &["token-broker"], now).unwrap(), claims);
        g.bench_function(format!("sign_{alg}"), |b| {
            b.iter(|| keys.sign(black_box(&claims)).unwrap())
        });
        g.bench_function(format!("verify_{alg}"), |b| {
            b.iter(|| {
                keys.verify(black_box(&token), &["token-broker"], now)
                    .unwrap()
            })
        });
        // What the auth layer's `describe` runs for IntrospectToken and RevokeAccessToken.
        g.bench_function(format!("signed_jti_{alg}"), |b| {
            b.iter(|| keys.signed_jti(black_box(&token)).unwrap())
        });
    }
    g.finish();

    // The raw Ed25519 primitives of the candidate implementations, on the same signing input,
    // to choose the signer by measurement.
    let input = vec![b'x'; 300];
    let mut raw = c.benchmark_group("ed25519_raw");
    let seed = [7u8; 32];
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    let dalek_public = dalek.verifying_key();
    let ring_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let dalek_sig = {
        use ed25519_dalek::Signer as _;
        dalek.sign(&input)
    };
    raw.bench_function("sign_ed25519_dalek", |b| {
        use ed25519_dalek::Signer as _;
        b.iter(|| dalek.sign(black_box(&input)))
    });
    raw.bench_function("sign_ring", |b| b.iter(|| ring_key.sign(black_box(&input))));
    raw.bench_function("verify_ed25519_dalek", |b| {
        use ed25519_dalek::Verifier as _;
        b.iter(|| dalek_public.verify(black_box(&input), &dalek_sig).unwrap())
    });
    let ring_public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, dalek_public.to_bytes());
    raw.bench_function("verify_ring", |b| {
        b.iter(|| {
            ring_public
                .verify(black_box(&input), &dalek_sig.to_bytes())
                .unwrap()
        })
    });
    raw.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = bench }
criterion_main!(benches);
