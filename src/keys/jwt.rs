//! Signing keys and access-token JWTs: signing with the current key and
//! strict verification against an algorithm allow-list.
//!
//! Verification inspects the header before any signature work: the algorithm
//! must be the one bound to the key named by `kid`, the type must be
//! `at+jwt`, and the header may carry nothing but `alg`, `kid` and `typ`
//! (no embedded keys or key references). Claims are then checked by
//! `jsonwebtoken` with every `Validation` field set explicitly, except the
//! time claims: `exp` and `nbf` are checked here against the broker's clock
//! (the crate would read the system clock), and finally by the shape of
//! [`Claims`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
#[cfg(test)]
use jsonwebtoken::EncodingKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{KeyError, random_bytes};
use crate::domain::claims::Claims;

/// The `typ` header value of every broker access token (RFC 9068).
const TOKEN_TYPE: &str = "at+jwt";
/// Largest clock-skew allowance the broker accepts.
const MAX_LEEWAY_SECS: u64 = 30;
/// Registered claims `jsonwebtoken` must find before validating.
const REQUIRED_SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "iss", "aud", "sub"];
/// Header parameters that embed or point to keys; trusting any of them lets a forger pick the key.
const KEY_HEADERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"];
/// Longest piece of attacker-supplied text echoed in an error message.
const MAX_SHOWN: usize = 64;

/// The signature algorithms the broker can sign with, kept small so the allow-list is obvious.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519 signatures (the default choice).
    EdDSA,
    /// ECDSA over P-256 with SHA-256, for verifiers that lack Ed25519.
    ES256,
}

impl SigningAlgorithm {
    /// The JOSE name, used in configuration, storage and the JWT header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// The `jsonwebtoken` algorithm for this key type.
    fn jwt_algorithm(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(Self::EdDSA),
            "ES256" => Ok(Self::ES256),
            other => Err(KeyError::UnknownAlgorithm(shown(other))),
        }
    }
}

/// The persisted form of one signing key; the caller seals `private_der` with the master key before storing it.
#[derive(Clone)]
pub struct KeyMaterial {
    /// Key id placed in token headers and the JWK set.
    pub kid: String,
    /// Algorithm the key is bound to; tokens naming any other algorithm are refused.
    pub alg: SigningAlgorithm,
    /// PKCS#8 DER private key.
    pub private_der: Vec<u8>,
    /// Raw 32-byte public key for Ed25519, SEC1 uncompressed point for P-256.
    pub public: Vec<u8>,
    /// Creation time, seconds since the Unix epoch, for rotation decisions.
    pub created_at: i64,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_der", &format_args!("<redacted>"))
            .field(
                "public",
                &format_args!("{}", URL_SAFE_NO_PAD.encode(&self.public)),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl KeyMaterial {
    /// Creates a fresh signing key for rotation, with a random key id.
    pub fn generate(alg: SigningAlgorithm, now: i64) -> Result<Self, KeyError> {
        // ed25519-dalek and p256 re-export the same `pkcs8` traits.
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;

        let (private_der, public) = match alg {
            SigningAlgorithm::EdDSA => {
                let key = ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>());
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                (
                    der.as_bytes().to_vec(),
                    key.verifying_key().to_bytes().to_vec(),
                )
            }
            SigningAlgorithm::ES256 => {
                let key = generate_p256()?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let point = key.verifying_key().to_encoded_point(false);
                (der.as_bytes().to_vec(), point.as_bytes().to_vec())
            }
        };
        Ok(Self {
            kid: URL_SAFE_NO_PAD.encode(random_bytes::<16>()),
            alg,
            private_der,
            public,
            created_at: now,
        })
    }
}

/// Draw a P-256 scalar, retrying the negligible case of zero or a value above the group order.
fn generate_p256() -> Result<p256::ecdsa::SigningKey, KeyError> {
    for _ in 0..16 {
        let bytes = random_bytes::<32>();
        if let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&bytes.into()) {
            return Ok(key);
        }
    }
    Err(KeyError::Generate(
        "no valid p-256 scalar after 16 draws".to_string(),
    ))
}

/// Token settings shared by signer and verifier, so both agree on issuer and clock skew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    /// Issuer written to and required in every token.
    pub issuer: String,
    /// Clock-skew allowance for `exp` and `nbf`, at most 30 seconds.
    pub leeway_secs: u64,
}

/// One key able to verify tokens.
struct VerifyingKey {
    /// Algorithm bound to the key.
    alg: SigningAlgorithm,
    /// Public key in the form `jsonwebtoken` expects.
    decoding: DecodingKey,
    /// Public key bytes as stored, to recognise the same key listed twice.
    public: Vec<u8>,
    /// Public JWK published for other verifiers.
    jwk: Jwk,
}

/// Holds the current signing key plus every key still able to verify live tokens, so rotation never breaks them.
pub struct JwtKeys {
    /// Issuer and leeway.
    settings: JwtSettings,
    /// Key id of the signing key.
    current_kid: String,
    /// Algorithm of the signing key.
    current_alg: SigningAlgorithm,
    /// Private signing key, parsed once (jsonwebtoken's rust_crypto backend re-parses the
    /// PKCS#8 DER on every `encode`, which cost more than the signature).
    signer: Signer,
    /// The base64url header of every token this key signs, encoded once.
    header_b64: String,
    /// Verifying keys by key id.
    verifying: HashMap<String, VerifyingKey>,
    /// Key ids in publication order: current first.
    order: Vec<String>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("settings", &self.settings)
            .field("current_kid", &self.current_kid)
            .field("current_alg", &self.current_alg)
            .field("verifying_kids", &self.order)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Builds the key ring: `current` signs; `current` and `verify_only` verify.
    pub fn new(
        settings: JwtSettings,
        current: &KeyMaterial,
        verify_only: &[KeyMaterial],
    ) -> Result<Self, KeyError> {
        if settings.leeway_secs > MAX_LEEWAY_SECS {
            return Err(KeyError::LeewayTooLarge(settings.leeway_secs));
        }
        let signer = check_private_matches_public(current)?;
        let header = serde_json::json!({
            "typ": TOKEN_TYPE,
            "alg": current.alg.as_str(),
            "kid": current.kid,
        });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut verifying = HashMap::new();
        let mut order = Vec::new();
        for material in std::iter::once(current).chain(verify_only) {
            if let Some(existing) = verifying.get(&material.kid) {
                if !same_public(existing, material) {
                    return Err(KeyError::DuplicateKid(material.kid.clone()));
                }
                continue;
            }
            verifying.insert(material.kid.clone(), verifying_key(material)?);
            order.push(material.kid.clone());
        }
        Ok(Self {
            settings,
            current_kid: current.kid.clone(),
            current_alg: current.alg,
            signer,
            header_b64,
            verifying,
            order,
        })
    }

    /// Lets callers record which key signed a token.
    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    /// Lets callers report the signing algorithm (e.g. in discovery metadata).
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.current_alg
    }

    /// Issues a token with a minimal header: the current key's `alg`, its `kid` and `typ` `at+jwt`.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.signer.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Accepts a token only if every header, signature and claim check passes for one of
    /// `audiences`, with `exp` and `nbf` checked against `now` (the broker's clock).
    pub fn verify(&self, token: &str, audiences: &[&str], now: i64) -> Result<Claims, VerifyError> {
        if audiences.is_empty() {
            return Err(VerifyError::NoAudience);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("it does not have three parts"));
        };
        let key = self.check_header(header_b64)?;

        let validation = self.validation(key.alg, audiences);
        let data = match jsonwebtoken::decode::<Value>(token, &key.decoding, &validation) {
            Ok(data) => data,
            // The crate checks the time claims after the signature and the required claims
            // but before issuer and audience: keep that order of refusals.
            Err(e) => {
                let kind = e.into_kind();
                if matches!(kind, ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience) {
                    let payload = URL_SAFE_NO_PAD
                        .decode(payload_b64)
                        .ok()
                        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                        .unwrap_or(Value::Null);
                    self.check_time(&payload, now)?;
                }
                return Err(map_jwt_error(kind, payload_b64));
            }
        };
        self.check_time(&data.claims, now)?;
        claims_from_value(data.claims)
    }

    /// `exp` and `nbf` against `now` with the configured leeway, read as `jsonwebtoken` reads
    /// them (a non-negative number, a fraction rounded); presence and type were checked by the
    /// crate already.
    fn check_time(&self, claims: &Value, now: i64) -> Result<(), VerifyError> {
        let leeway = i128::from(self.settings.leeway_secs);
        let now = i128::from(now);
        let read = |name: &str| -> Option<i128> {
            let value = claims.get(name)?;
            value.as_u64().map(i128::from).or_else(|| {
                value
                    .as_f64()
                    .filter(|v| v.is_finite() && *v >= 0.0 && *v < u64::MAX as f64)
                    .map(|v| v.round() as i128)
            })
        };
        if read("exp").is_some_and(|exp| exp < now - leeway) {
            return Err(VerifyError::Expired);
        }
        if read("nbf").is_some_and(|nbf| nbf > now + leeway) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }

    /// The `jti` of a token this broker signed, whatever its age or audience: revocation
    /// must work on expired tokens too, and only the signature proves the token is ours.
    pub fn signed_jti(&self, token: &str) -> Result<String, VerifyError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("it does not have three parts"));
        };
        let key = self.check_header(header_b64)?;
        let mut validation = self.validation(key.alg, &[]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.aud = None;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|e| map_jwt_error(e.into_kind(), payload_b64))?;
        data.claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| VerifyError::MissingClaim("jti".to_owned()))
    }

    /// Publishes every verifying key (RFC 7517), each with `kid`, `alg` and `use` `sig`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .order
                .iter()
                .filter_map(|kid| self.verifying.get(kid))
                .map(|key| key.jwk.clone())
                .collect(),
        }
    }

    /// Check the raw header and pick the key it names, before any signature work.
    fn check_header(&self, header_b64: &str) -> Result<&VerifyingKey, VerifyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| VerifyError::Malformed("the header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| VerifyError::Malformed("the header is not a json object"))?;

        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err(VerifyError::Malformed("the header has no `alg` string")),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(VerifyError::AlgorithmNone);
        }
        for name in KEY_HEADERS {
            if header.contains_key(name) {
                return Err(VerifyError::KeyInHeader(name));
            }
        }
        if header.contains_key("crit") {
            return Err(VerifyError::CriticalHeader);
        }
        if let Some(name) = header
            .keys()
            .find(|name| !matches!(name.as_str(), "alg" | "kid" | "typ"))
        {
            return Err(VerifyError::UnexpectedHeader(shown(name)));
        }
        match header.get("typ") {
            None => return Err(VerifyError::MissingType),
            Some(Value::String(typ)) if typ == TOKEN_TYPE => {}
            Some(Value::String(typ)) => return Err(VerifyError::WrongType(shown(typ))),
            Some(_) => return Err(VerifyError::Malformed("the header `typ` is not a string")),
        }
        let kid = match header.get("kid") {
            None => return Err(VerifyError::MissingKid),
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(VerifyError::Malformed("the header `kid` is not a string")),
        };
        let key = self
            .verifying
            .get(kid)
            .ok_or_else(|| VerifyError::UnknownKid(shown(kid)))?;
        if alg != key.alg.as_str() {
            return Err(VerifyError::WrongAlgorithm(shown(alg)));
        }
        Ok(key)
    }

    /// The `jsonwebtoken` validation for one key and audience set, with every field set on purpose.
    fn validation(&self, alg: SigningAlgorithm, audiences: &[&str]) -> Validation {
        let mut validation = Validation::new(alg.jwt_algorithm());
        validation.required_spec_claims =
            REQUIRED_SPEC_CLAIMS.iter().map(|c| c.to_string()).collect();
        // The time claims are checked by `check_time` against the broker's clock; the crate
        // would check them against the system clock.
        validation.leeway = self.settings.leeway_secs;
        validation.reject_tokens_expiring_in_less_than = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.aud = Some(audiences.iter().map(|a| a.to_string()).collect());
        validation.iss = Some(HashSet::from([self.settings.issuer.clone()]));
        validation.sub = None;
        validation.algorithms = vec![alg.jwt_algorithm()];
        validation
    }
}

/// Why a presented token was refused; each refusal has its own variant so logs and metrics can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The verifier was asked to accept no audience at all (a caller bug).
    #[error("verifier accepts no audience")]
    NoAudience,
    /// The token is not a compact JWS with a JSON header and payload.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The header asks for no signature.
    #[error("token algorithm `none` is not allowed")]
    AlgorithmNone,
    /// The header names an algorithm other than the one bound to its key.
    #[error("token algorithm `{0}` is not allowed for its key")]
    WrongAlgorithm(String),
    /// The header has no key id.
    #[error("token has no key id (`kid`)")]
    MissingKid,
    /// The key id names no verifying key.
    #[error("token key id `{0}` is unknown")]
    UnknownKid(String),
    /// The header embeds or references key material.
    #[error("token header carries key material (`{0}`)")]
    KeyInHeader(&'static str),
    /// The header marks extensions as critical, which the broker never issues.
    #[error("token header has critical extensions (`crit`)")]
    CriticalHeader,
    /// The header holds a parameter the broker never issues.
    #[error("token header parameter `{0}` is not allowed")]
    UnexpectedHeader(String),
    /// The header has no `typ`.
    #[error("token has no type (`typ`): expected `at+jwt`")]
    MissingType,
    /// The header `typ` is not `at+jwt`.
    #[error("token type `{0}` is not accepted: expected `at+jwt`")]
    WrongType(String),
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The payload is not a JSON object of claims.
    #[error("token claims are malformed")]
    MalformedClaims,
    /// A required claim is absent.
    #[error("token is missing the `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong JSON type (e.g. `exp` given as a string).
    #[error("token claim `{0}` has the wrong type")]
    ClaimWrongType(String),
    /// The issuer is not this broker.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// The audience is not one this verifier accepts.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The token is past its expiry, beyond the leeway.
    #[error("token is expired")]
    Expired,
    /// The token's `nbf` lies in the future, beyond the leeway.
    #[error("token is not yet valid")]
    NotYetValid,
    /// Verification failed for a reason outside the token (e.g. an unusable key).
    #[error("token could not be verified: {0}")]
    Internal(&'static str),
}

/// Translate a `jsonwebtoken` failure; `payload_b64` (signature already checked) tells a missing claim from a mistyped one.
fn map_jwt_error(kind: ErrorKind, payload_b64: &str) -> VerifyError {
    match kind {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::InvalidAlgorithm => VerifyError::WrongAlgorithm("?".to_string()),
        ErrorKind::InvalidClaimFormat(claim) => VerifyError::ClaimWrongType(shown(&claim)),
        ErrorKind::MissingRequiredClaim(claim) => {
            // jsonwebtoken reports a present but non-numeric `exp`/`nbf` as missing.
            let present = URL_SAFE_NO_PAD
                .decode(payload_b64)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
                .is_some_and(|payload| payload.get(&claim).is_some_and(|v| !v.is_null()));
            if present {
                VerifyError::ClaimWrongType(shown(&claim))
            } else {
                VerifyError::MissingClaim(shown(&claim))
            }
        }
        ErrorKind::Base64(_) => VerifyError::Malformed("a part is not base64url"),
        ErrorKind::Utf8(_) => VerifyError::Malformed("a part is not utf-8"),
        ErrorKind::InvalidToken => VerifyError::Malformed("it is not a compact jws"),
        ErrorKind::Json(_) => VerifyError::MalformedClaims,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
            VerifyError::Internal("the verifying key is unusable")
        }
        _ => VerifyError::Internal("unexpected verification failure"),
    }
}

/// The JSON shape each [`Claims`] field must have.
#[derive(Clone, Copy)]
enum Shape {
    /// A JSON string.
    Text,
    /// A JSON integer fitting `i64`.
    Int,
    /// A JSON integer fitting `u32`.
    Small,
    /// A JSON array of strings.
    TextList,
}

/// Every claim the broker requires, with its shape.
const CLAIM_SHAPES: [(&str, Shape); 11] = [
    ("iss", Shape::Text),
    ("sub", Shape::Text),
    ("aud", Shape::Text),
    ("iat", Shape::Int),
    ("nbf", Shape::Int),
    ("exp", Shape::Int),
    ("jti", Shape::Text),
    ("prj", Shape::TextList),
    ("perm", Shape::TextList),
    ("par", Shape::Text),
    ("dep", Shape::Small),
];

/// Turn verified claims into [`Claims`], naming the first missing or mistyped claim.
fn claims_from_value(value: Value) -> Result<Claims, VerifyError> {
    let Value::Object(map) = &value else {
        return Err(VerifyError::MalformedClaims);
    };
    for (name, shape) in CLAIM_SHAPES {
        let ok = match (map.get(name), shape) {
            (None | Some(Value::Null), _) => {
                return Err(VerifyError::MissingClaim(name.to_string()));
            }
            (Some(v), Shape::Text) => v.is_string(),
            (Some(v), Shape::Int) => v.as_i64().is_some(),
            (Some(v), Shape::Small) => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
            (Some(v), Shape::TextList) => v
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
        };
        if !ok {
            return Err(VerifyError::ClaimWrongType(name.to_string()));
        }
    }
    serde_json::from_value(value).map_err(|_| VerifyError::MalformedClaims)
}

/// Bound and sanitise attacker-supplied text before it goes into an error message.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() || c == '`' { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

/// A parsed private key; JWS signatures are Ed25519 (64 bytes) or ES256 `r || s` (64 bytes).
enum Signer {
    /// Ed25519.
    Ed(ed25519_dalek::SigningKey),
    /// ECDSA P-256 with SHA-256.
    Es(p256::ecdsa::SigningKey),
}

impl Signer {
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        match self {
            Signer::Ed(key) => key.sign(input).to_bytes().to_vec(),
            Signer::Es(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input);
                signature.to_bytes().to_vec()
            }
        }
    }
}

/// Refuse a signing key whose private half does not produce its recorded public half; on
/// success the parsed key signs from then on.
fn check_private_matches_public(material: &KeyMaterial) -> Result<Signer, KeyError> {
    // ed25519-dalek and p256 re-export the same `pkcs8` traits.
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;

    let bad = |reason: &str| KeyError::BadKeyMaterial {
        kid: material.kid.clone(),
        reason: reason.to_string(),
    };
    let (signer, public) = match material.alg {
        SigningAlgorithm::EdDSA => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(&material.private_der)
                .map_err(|_| bad("private key is not ed25519 pkcs#8"))?;
            let public = key.verifying_key().to_bytes().to_vec();
            (Signer::Ed(key), public)
        }
        SigningAlgorithm::ES256 => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(&material.private_der)
                .map_err(|_| bad("private key is not p-256 pkcs#8"))?;
            let public = key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec();
            (Signer::Es(key), public)
        }
    };
    if public != material.public {
        return Err(bad("private key does not match the public key"));
    }
    Ok(signer)
}

/// Whether an already-registered verifying key is the same key as `material`.
fn same_public(existing: &VerifyingKey, material: &KeyMaterial) -> bool {
    existing.alg == material.alg && existing.public == material.public
}

/// Validate a public key and build its verifier and JWK.
fn verifying_key(material: &KeyMaterial) -> Result<VerifyingKey, KeyError> {
    let bad = |reason: &str| KeyError::BadKeyMaterial {
        kid: material.kid.clone(),
        reason: reason.to_string(),
    };
    let common = |alg: KeyAlgorithm| CommonParameters {
        public_key_use: Some(PublicKeyUse::Signature),
        key_algorithm: Some(alg),
        key_id: Some(material.kid.clone()),
        ..CommonParameters::default()
    };
    match material.alg {
        SigningAlgorithm::EdDSA => {
            let raw: [u8; 32] = material
                .public
                .as_slice()
                .try_into()
                .map_err(|_| bad("ed25519 public key is not 32 bytes"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map_err(|_| bad("ed25519 public key is not a curve point"))?;
            Ok(VerifyingKey {
                alg: material.alg,
                decoding: DecodingKey::from_ed_der(&raw),
                public: material.public.clone(),
                jwk: Jwk {
                    common: common(KeyAlgorithm::EdDSA),
                    algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                        key_type: OctetKeyPairType::OctetKeyPair,
                        curve: EllipticCurve::Ed25519,
                        x: URL_SAFE_NO_PAD.encode(raw),
                    }),
                },
            })
        }
        SigningAlgorithm::ES256 => {
            let (Some(0x04), Some(x), Some(y), 65) = (
                material.public.first().copied(),
                material.public.get(1..33),
                material.public.get(33..65),
                material.public.len(),
            ) else {
                return Err(bad("p-256 public key is not an uncompressed sec1 point"));
            };
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&material.public)
                .map_err(|_| bad("p-256 public key is not a curve point"))?;
            Ok(VerifyingKey {
                alg: material.alg,
                decoding: DecodingKey::from_ec_der(&material.public),
                public: material.public.clone(),
                jwk: Jwk {
                    common: common(KeyAlgorithm::ES256),
                    algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                        key_type: EllipticCurveKeyType::EC,
                        curve: EllipticCurve::P256,
                        x: URL_SAFE_NO_PAD.encode(x),
                        y: URL_SAFE_NO_PAD.encode(y),
                    }),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests;
