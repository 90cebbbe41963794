//! Round trips, key rotation, JWKS and key-material handling.

use super::*;

#[test]
fn round_trip_both_algorithms() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let (keys, m) = ring(alg);
        assert_eq!(keys.algorithm(), alg);
        assert_eq!(keys.current_kid(), m.kid);
        let c = claims();
        let token = keys.sign(&c).unwrap();
        assert_eq!(verify(&keys, &token).unwrap(), c);
        // Crafted tokens with the standard header verify too, proving the helpers are sound.
        assert_eq!(
            verify(&keys, &craft(&m, &header(&m), &payload())).unwrap(),
            c
        );
    }
}

#[test]
fn header_is_minimal() {
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let token = keys.sign(&claims()).unwrap();
    let first = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap();
    assert_eq!(h, header(&m));
}

#[test]
fn verify_only_key_still_verifies_and_is_published() {
    let old = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    let old_keys = JwtKeys::new(settings(), &old, &[]).unwrap();
    let token = old_keys.sign(&claims()).unwrap();

    let new = KeyMaterial::generate(SigningAlgorithm::ES256, now()).unwrap();
    let keys = JwtKeys::new(settings(), &new, std::slice::from_ref(&old)).unwrap();
    assert_eq!(verify(&keys, &token).unwrap(), claims_of(&token, &old_keys));
    assert_eq!(keys.current_kid(), new.kid);

    let set = keys.jwks();
    assert_eq!(set.keys.len(), 2);
    assert!(set.find(&new.kid).is_some());
    assert!(set.find(&old.kid).is_some());
    let json = serde_json::to_value(&set).unwrap();
    assert_eq!(json["keys"][0]["kid"], new.kid.as_str());
    assert_eq!(json["keys"][0]["alg"], "ES256");
    assert_eq!(json["keys"][0]["use"], "sig");
    assert_eq!(json["keys"][0]["kty"], "EC");
    assert_eq!(json["keys"][0]["crv"], "P-256");
    assert_eq!(json["keys"][1]["alg"], "EdDSA");
    assert_eq!(json["keys"][1]["kty"], "OKP");
    assert_eq!(json["keys"][1]["crv"], "Ed25519");

    // Dropping the old key makes its tokens unverifiable.
    let rotated = JwtKeys::new(settings(), &new, &[]).unwrap();
    assert!(matches!(
        verify(&rotated, &token),
        Err(VerifyError::UnknownKid(_))
    ));
}

fn claims_of(token: &str, keys: &JwtKeys) -> Claims {
    keys.verify(token, &[AUD], now()).unwrap()
}

#[test]
fn published_jwk_verifies_tokens() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let (keys, m) = ring(alg);
        let token = keys.sign(&claims()).unwrap();
        let jwk = keys.jwks().find(&m.kid).unwrap().clone();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(alg.jwt_algorithm());
        validation.set_audience(&[AUD]);
        assert!(jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).is_ok());
    }
}

#[test]
fn current_listed_again_in_verify_only_is_tolerated() {
    let m = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    let keys = JwtKeys::new(settings(), &m, std::slice::from_ref(&m)).unwrap();
    assert_eq!(keys.jwks().keys.len(), 1);
    let mut other = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    other.kid = m.kid.clone();
    assert!(matches!(
        JwtKeys::new(settings(), &m, &[other]),
        Err(KeyError::DuplicateKid(_))
    ));
}

#[test]
fn leeway_above_30_refused() {
    let m = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    let s = JwtSettings {
        issuer: ISSUER.to_string(),
        leeway_secs: 31,
    };
    assert!(matches!(
        JwtKeys::new(s, &m, &[]),
        Err(KeyError::LeewayTooLarge(31))
    ));
}

#[test]
fn mismatched_or_broken_material_refused() {
    let a = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    let b = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    let mut mixed = a.clone();
    mixed.public = b.public.clone();
    assert!(matches!(
        JwtKeys::new(settings(), &mixed, &[]),
        Err(KeyError::BadKeyMaterial { .. })
    ));
    let mut wrong_alg = a.clone();
    wrong_alg.alg = SigningAlgorithm::ES256;
    assert!(matches!(
        JwtKeys::new(settings(), &wrong_alg, &[]),
        Err(KeyError::BadKeyMaterial { .. })
    ));
    let mut short = b.clone();
    short.public.pop();
    assert!(matches!(
        JwtKeys::new(settings(), &a, &[short]),
        Err(KeyError::BadKeyMaterial { .. })
    ));
}

#[test]
fn generated_material_shapes() {
    let ed = KeyMaterial::generate(SigningAlgorithm::EdDSA, 42).unwrap();
    assert_eq!(ed.public.len(), 32);
    assert_eq!(ed.created_at, 42);
    assert_eq!(URL_SAFE_NO_PAD.decode(&ed.kid).unwrap().len(), 16);
    let ec = KeyMaterial::generate(SigningAlgorithm::ES256, 42).unwrap();
    assert_eq!(ec.public.len(), 65);
    assert_eq!(ec.public[0], 4);
    assert_ne!(ed.kid, ec.kid);
}

#[test]
fn algorithm_names_round_trip() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        assert_eq!(alg.as_str().parse::<SigningAlgorithm>().unwrap(), alg);
    }
    assert!(matches!(
        "HS256".parse::<SigningAlgorithm>(),
        Err(KeyError::UnknownAlgorithm(_))
    ));
}

#[test]
fn debug_of_key_material_is_redacted() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let m = KeyMaterial::generate(alg, now()).unwrap();
        let shown = format!("{m:?}");
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains(&m.kid));
        assert!(!shown.contains(&format!("{:?}", m.private_der)));
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(&m.private_der)));
        let secret: Vec<u8> = match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                ed25519_dalek::SigningKey::from_pkcs8_der(&m.private_der)
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            }
            SigningAlgorithm::ES256 => {
                use p256::pkcs8::DecodePrivateKey as _;
                p256::ecdsa::SigningKey::from_pkcs8_der(&m.private_der)
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            }
        };
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(&secret)));
        assert!(!shown.contains(&format!("{secret:?}")));
        let (keys, _) = ring(alg);
        assert!(!format!("{keys:?}").contains(&format!("{:?}", m.private_der)));
    }
}
