//! Every token `verify` must refuse, crafted and signed with the broker's own key.

use super::*;

fn both() -> Vec<(JwtKeys, KeyMaterial)> {
    vec![ring(SigningAlgorithm::EdDSA), ring(SigningAlgorithm::ES256)]
}

#[test]
fn malformed_tokens() {
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let good = keys.sign(&claims()).unwrap();
    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        &format!("{good}.x"),
    ] {
        assert!(
            matches!(verify(&keys, bad), Err(VerifyError::Malformed(_))),
            "{bad}"
        );
    }
    let not_object = format!("{}.{}.x", URL_SAFE_NO_PAD.encode("[1]"), b64(&payload()));
    assert!(matches!(
        verify(&keys, &not_object),
        Err(VerifyError::Malformed(_))
    ));
    let array_payload = craft(&m, &header(&m), &json!([1, 2]));
    assert!(matches!(
        verify(&keys, &array_payload),
        Err(VerifyError::MalformedClaims)
    ));
}

#[test]
fn alg_none_refused() {
    for (keys, m) in both() {
        for none in ["none", "None", "NONE"] {
            let mut h = header(&m);
            h["alg"] = json!(none);
            let token = format!("{}.{}.", b64(&h), b64(&payload()));
            assert_eq!(verify(&keys, &token), Err(VerifyError::AlgorithmNone));
        }
    }
}

#[test]
fn hs256_with_public_key_as_secret_refused() {
    for (keys, m) in both() {
        let mut h = header(&m);
        h["alg"] = json!("HS256");
        let message = format!("{}.{}", b64(&h), b64(&payload()));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(&m.public),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{message}.{sig}");
        assert_eq!(
            verify(&keys, &token),
            Err(VerifyError::WrongAlgorithm("HS256".to_string()))
        );
    }
}

#[test]
fn other_asymmetric_alg_refused() {
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let token = with_header(&m, "alg", json!("ES256"));
    assert!(matches!(
        verify(&keys, &token),
        Err(VerifyError::WrongAlgorithm(_))
    ));
}

#[test]
fn unknown_and_missing_kid_refused() {
    for (keys, m) in both() {
        assert_eq!(
            verify(&keys, &with_header(&m, "kid", json!("abc"))),
            Err(VerifyError::UnknownKid("abc".to_string()))
        );
        assert_eq!(
            verify(&keys, &without_header(&m, "kid")),
            Err(VerifyError::MissingKid)
        );
    }
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let err = verify(&keys, &with_header(&m, "kid", json!("abc"))).unwrap_err();
    assert_eq!(err.to_string(), "token key id `abc` is unknown");
}

#[test]
fn key_material_in_header_refused() {
    for (keys, m) in both() {
        let jwk = serde_json::to_value(&keys.jwks().keys[0]).unwrap();
        let cases = [
            ("jwk", jwk),
            ("jku", json!("https://evil.test/jwks.json")),
            ("x5u", json!("https://evil.test/cert.pem")),
            ("x5c", json!(["MIIB"])),
            ("x5t", json!("abc")),
        ];
        for (name, value) in cases {
            let err = verify(&keys, &with_header(&m, name, value)).unwrap_err();
            assert!(matches!(err, VerifyError::KeyInHeader(n) if n == name));
            assert!(err.to_string().contains(&format!("(`{name}`)")));
        }
        assert_eq!(
            verify(&keys, &with_header(&m, "crit", json!(["exp"]))),
            Err(VerifyError::CriticalHeader)
        );
        assert_eq!(
            verify(&keys, &with_header(&m, "cty", json!("JWT"))),
            Err(VerifyError::UnexpectedHeader("cty".to_string()))
        );
    }
}

#[test]
fn wrong_or_missing_typ_refused() {
    for (keys, m) in both() {
        assert_eq!(
            verify(&keys, &with_header(&m, "typ", json!("JWT"))),
            Err(VerifyError::WrongType("JWT".to_string()))
        );
        assert_eq!(
            verify(&keys, &without_header(&m, "typ")),
            Err(VerifyError::MissingType)
        );
    }
}

#[test]
fn wrong_issuer_and_audience_refused() {
    for (keys, m) in both() {
        assert_eq!(
            verify(&keys, &with_claim(&m, "iss", json!("https://evil.test"))),
            Err(VerifyError::WrongIssuer)
        );
        let token = with_claim(&m, "aud", json!("svc-b"));
        assert_eq!(verify(&keys, &token), Err(VerifyError::WrongAudience));
        assert!(keys.verify(&token, &["svc-c", "svc-b"], now()).is_ok());
        assert_eq!(
            keys.verify(&token, &[], now()),
            Err(VerifyError::NoAudience)
        );
    }
}

#[test]
fn missing_claims_refused() {
    for (keys, m) in both() {
        for claim in ["exp", "iss", "aud", "nbf", "sub", "jti", "par"] {
            assert_eq!(
                verify(&keys, &without_claim(&m, claim)),
                Err(VerifyError::MissingClaim(claim.to_string())),
                "{claim}"
            );
        }
    }
}

#[test]
fn string_timestamps_refused() {
    for (keys, m) in both() {
        let t = now();
        for (claim, value) in [("exp", t + 300), ("nbf", t)] {
            let token = with_claim(&m, claim, json!(value.to_string()));
            let err = verify(&keys, &token).unwrap_err();
            assert_eq!(err, VerifyError::ClaimWrongType(claim.to_string()));
            assert_eq!(
                err.to_string(),
                format!("token claim `{claim}` has the wrong type")
            );
        }
        let token = with_claim(&m, "aud", json!([AUD]));
        assert_eq!(
            verify(&keys, &token),
            Err(VerifyError::ClaimWrongType("aud".to_string()))
        );
    }
}

#[test]
fn expiry_with_leeway() {
    for (keys, m) in both() {
        let t = now();
        let expired = with_claim(&m, "exp", json!(t - LEEWAY_I - 5));
        assert_eq!(verify(&keys, &expired), Err(VerifyError::Expired));
        assert_eq!(
            verify(&keys, &expired).unwrap_err().to_string(),
            "token is expired"
        );
        let within = with_claim(&m, "exp", json!(t - LEEWAY_I + 5));
        assert!(verify(&keys, &within).is_ok());
    }
}

#[test]
fn not_before_with_leeway() {
    for (keys, m) in both() {
        let t = now();
        let early = with_claim(&m, "nbf", json!(t + LEEWAY_I + 5));
        assert_eq!(verify(&keys, &early), Err(VerifyError::NotYetValid));
        let within = with_claim(&m, "nbf", json!(t + LEEWAY_I - 5));
        assert!(verify(&keys, &within).is_ok());
    }
}

#[test]
fn tampered_signature_refused() {
    for (keys, _) in both() {
        let token = keys.sign(&claims()).unwrap();
        let dot = token.rfind('.').unwrap();
        let mut bytes = token.into_bytes();
        bytes[dot + 1] = if bytes[dot + 1] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(verify(&keys, &tampered), Err(VerifyError::BadSignature));
    }
}

#[test]
fn tampered_payload_refused() {
    for (keys, _) in both() {
        let token = keys.sign(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut p = payload();
        p["perm"] = json!(["admin"]);
        let tampered = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
        assert_eq!(verify(&keys, &tampered), Err(VerifyError::BadSignature));
    }
}

#[test]
fn token_from_foreign_key_with_known_kid_refused() {
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let mut foreign = KeyMaterial::generate(SigningAlgorithm::EdDSA, now()).unwrap();
    foreign.kid = m.kid.clone();
    let token = craft(&foreign, &header(&m), &payload());
    assert_eq!(verify(&keys, &token), Err(VerifyError::BadSignature));
}

#[test]
fn echoed_input_is_bounded() {
    let (keys, m) = ring(SigningAlgorithm::EdDSA);
    let long = "k".repeat(500);
    let Err(VerifyError::UnknownKid(shown)) = verify(&keys, &with_header(&m, "kid", json!(long)))
    else {
        panic!("expected unknown kid");
    };
    assert!(shown.chars().count() <= MAX_SHOWN + 1);
}

#[test]
fn time_claims_are_checked_against_the_given_clock() {
    for (keys, m) in both() {
        let t = now();
        let token = keys.sign(&claims()).unwrap();
        // Live for 300 s from `t` by the clock the broker passes, whatever the system says.
        assert!(keys.verify(&token, &[AUD], t + 300 + LEEWAY_I).is_ok());
        assert_eq!(
            keys.verify(&token, &[AUD], t + 301 + LEEWAY_I),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            keys.verify(&token, &[AUD], t - LEEWAY_I - 1),
            Err(VerifyError::NotYetValid)
        );
        // Expired an hour ago by the system clock, live by a clock set back.
        let old = with_claim(&m, "exp", json!(t - 3600));
        assert_eq!(verify(&keys, &old), Err(VerifyError::Expired));
        let mut p = payload();
        p["nbf"] = json!(t - 3700);
        p["exp"] = json!(t - 3600);
        let old = craft(&m, &header(&m), &p);
        assert!(keys.verify(&old, &[AUD], t - 3650).is_ok());
    }
}

#[test]
fn expiry_is_reported_before_issuer_and_audience() {
    for (keys, m) in both() {
        let t = now();
        let mut p = payload();
        p["exp"] = json!(t - LEEWAY_I - 5);
        p["iss"] = json!("https://evil.test");
        assert_eq!(
            verify(&keys, &craft(&m, &header(&m), &p)),
            Err(VerifyError::Expired)
        );
        p["iss"] = json!(ISSUER);
        p["aud"] = json!("svc-z");
        assert_eq!(
            verify(&keys, &craft(&m, &header(&m), &p)),
            Err(VerifyError::Expired)
        );
        p["exp"] = json!(t + 300);
        assert_eq!(
            verify(&keys, &craft(&m, &header(&m), &p)),
            Err(VerifyError::WrongAudience)
        );
    }
}
