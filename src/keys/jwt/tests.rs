//! Tests for signing and, above all, for every refusal of `JwtKeys::verify`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;

const ISSUER: &str = "https://broker.test";
const AUD: &str = "svc-a";
const LEEWAY: u64 = 10;
const LEEWAY_I: i64 = 10;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn settings() -> JwtSettings {
    JwtSettings {
        issuer: ISSUER.to_string(),
        leeway_secs: LEEWAY,
    }
}

fn ring(alg: SigningAlgorithm) -> (JwtKeys, KeyMaterial) {
    let material = KeyMaterial::generate(alg, now()).unwrap();
    (JwtKeys::new(settings(), &material, &[]).unwrap(), material)
}

fn claims() -> Claims {
    let t = now();
    Claims {
        iss: ISSUER.to_string(),
        sub: "user-1".to_string(),
        aud: AUD.to_string(),
        iat: t,
        nbf: t,
        exp: t + 300,
        jti: "jti-1".to_string(),
        prj: vec!["*".to_string()],
        perm: vec!["read".to_string()],
        par: "ak-1".to_string(),
        dep: 0,
    }
}

fn payload() -> Value {
    serde_json::to_value(claims()).unwrap()
}

fn header(m: &KeyMaterial) -> Value {
    json!({ "alg": m.alg.as_str(), "kid": m.kid, "typ": "at+jwt" })
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn encoding(m: &KeyMaterial) -> EncodingKey {
    match m.alg {
        SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(&m.private_der),
        SigningAlgorithm::ES256 => EncodingKey::from_ec_der(&m.private_der),
    }
}

/// Sign arbitrary header and payload JSON with the broker's own key.
fn craft(m: &KeyMaterial, header: &Value, payload: &Value) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &encoding(m), m.alg.jwt_algorithm())
        .unwrap();
    format!("{message}.{sig}")
}

fn with_header(m: &KeyMaterial, key: &str, value: Value) -> String {
    let mut h = header(m);
    h[key] = value;
    craft(m, &h, &payload())
}

fn without_header(m: &KeyMaterial, key: &str) -> String {
    let mut h = header(m);
    h.as_object_mut().unwrap().remove(key);
    craft(m, &h, &payload())
}

fn with_claim(m: &KeyMaterial, key: &str, value: Value) -> String {
    let mut p = payload();
    p[key] = value;
    craft(m, &header(m), &p)
}

fn without_claim(m: &KeyMaterial, key: &str) -> String {
    let mut p = payload();
    p.as_object_mut().unwrap().remove(key);
    craft(m, &header(m), &p)
}

fn verify(keys: &JwtKeys, token: &str) -> Result<Claims, VerifyError> {
    keys.verify(token, &[AUD], now())
}

mod keys;
mod refusals;
