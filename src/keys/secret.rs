//! Access-key secrets: generation, format checking and keyed hashing.
//!
//! A secret reads `tbk_` + 43 base62 characters (32 random bytes, left-padded
//! with `0`) + 6 base62 characters of CRC32 over everything before it. The
//! prefix makes leaked secrets easy to spot and route; the checksum lets typos
//! fail before any store lookup. Only an HMAC of the secret is ever stored.

use std::fmt;

use subtle::ConstantTimeEq;

use super::{hmac_sha256, random_bytes};

/// Marker that starts every access-key secret.
const PREFIX: &str = "tbk_";
/// Base62 width of 32 bytes (62^43 > 2^256).
const BODY_LEN: usize = 43;
/// Base62 width of a CRC32 (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// Total length of a well-formed secret.
const SECRET_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Length of the non-secret display prefix.
const DISPLAY_PREFIX_LEN: usize = 8;
/// Base62 digits in ascending value.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented access-key secret was rejected before any lookup, so callers can tell users what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `tbk_`.
    #[error("access key secret must start with `tbk_`")]
    WrongPrefix,
    /// The text is not exactly the length of a secret.
    #[error("access key secret has length {found}, expected {expected}: check it was copied whole")]
    WrongLength {
        /// Length that was presented.
        found: usize,
        /// Length of every well-formed secret.
        expected: usize,
    },
    /// The text holds a character outside the base62 alphabet.
    #[error("access key secret has a character outside `0-9A-Za-z` at position {position}")]
    BadCharacter {
        /// Zero-based byte position of the first offending character.
        position: usize,
    },
    /// The checksum does not match the rest of the secret.
    #[error("access key secret has a bad checksum: check for a typo")]
    BadChecksum,
}

/// An access-key secret in clear text, shown to its owner exactly once and never logged.
///
/// Deliberately not `PartialEq`: secrets are compared only through [`hash`] and [`hashes_equal`].
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(\"{}…\")", self.prefix())
    }
}

impl Secret {
    /// Mints a new high-entropy secret for a freshly created access key.
    pub fn generate() -> Self {
        let body = base62_fixed(&random_bytes::<32>(), BODY_LEN);
        let mut text = String::with_capacity(SECRET_LEN);
        text.push_str(PREFIX);
        text.push_str(&body);
        let sum = checksum(&text);
        text.push_str(&sum);
        Self(text)
    }

    /// The single deliberate way to read the secret, used once in the create response.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Lets operators and logs identify a key without revealing it.
    pub fn prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }
}

/// Cheap structural check (prefix, length, alphabet, checksum) run before any lookup, so typos fail fast.
pub fn check_format(text: &str) -> Result<(), SecretError> {
    if !text.starts_with(PREFIX) {
        return Err(SecretError::WrongPrefix);
    }
    if text.len() != SECRET_LEN {
        return Err(SecretError::WrongLength {
            found: text.len(),
            expected: SECRET_LEN,
        });
    }
    if let Some(position) = text
        .bytes()
        .skip(PREFIX.len())
        .position(|b| !b.is_ascii_alphanumeric())
    {
        return Err(SecretError::BadCharacter {
            position: position + PREFIX.len(),
        });
    }
    let (head, sum) = text.split_at(PREFIX.len() + BODY_LEN);
    if checksum(head) != sum {
        return Err(SecretError::BadChecksum);
    }
    Ok(())
}

/// Lets the authenticator route a bearer value to access-key handling rather than JWT verification.
pub fn looks_like_secret(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Keyed hash stored instead of the secret, so a store leak does not yield usable keys.
pub fn hash(pepper: &[u8; 32], text: &str) -> [u8; 32] {
    hmac_sha256(pepper, text.as_bytes())
}

/// Compares stored and computed hashes in constant time so timing leaks nothing.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Base62 checksum of the `tbk_` + body text.
fn checksum(head: &str) -> String {
    base62_fixed(
        &crc32fast::hash(head.as_bytes()).to_be_bytes(),
        CHECKSUM_LEN,
    )
}

/// Big-endian base62 of `bytes`, left-padded with `0` to `width` (callers choose a width that always fits).
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while number.iter().any(|&b| b != 0) {
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_known_values() {
        assert_eq!(base62_fixed(&[0], 3), "000");
        assert_eq!(base62_fixed(&[61], 1), "z");
        assert_eq!(base62_fixed(&[62], 2), "10");
        assert_eq!(base62_fixed(&[0xff; 4], 6), "4gfFC3");
        assert_eq!(base62_fixed(&[0xff; 32], BODY_LEN).len(), BODY_LEN);
    }

    #[test]
    fn generated_secret_is_well_formed() {
        for _ in 0..50 {
            let s = Secret::generate();
            assert_eq!(s.expose().len(), SECRET_LEN);
            assert!(looks_like_secret(s.expose()));
            assert_eq!(check_format(s.expose()), Ok(()));
            assert_eq!(s.prefix().len(), 8);
            assert!(s.expose().starts_with(&s.prefix()));
        }
        assert_ne!(Secret::generate().expose(), Secret::generate().expose());
    }

    #[test]
    fn changed_character_is_bad_checksum() {
        let s = Secret::generate();
        let text = s.expose();
        for position in [4, 20, SECRET_LEN - 1] {
            let mut bytes = text.as_bytes().to_vec();
            bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(check_format(&changed), Err(SecretError::BadChecksum));
        }
    }

    #[test]
    fn wrong_prefix_length_and_alphabet() {
        let s = Secret::generate();
        let text = s.expose();
        assert_eq!(
            check_format(&text.replacen("tbk_", "tbx_", 1)),
            Err(SecretError::WrongPrefix)
        );
        assert_eq!(check_format("bearer"), Err(SecretError::WrongPrefix));
        assert!(matches!(
            check_format(&text[..SECRET_LEN - 1]),
            Err(SecretError::WrongLength {
                found: 52,
                expected: 53
            })
        ));
        assert!(matches!(
            check_format(&format!("{text}x")),
            Err(SecretError::WrongLength { .. })
        ));
        let bad = format!("{}-{}", &text[..10], &text[11..]);
        assert_eq!(
            check_format(&bad),
            Err(SecretError::BadCharacter { position: 10 })
        );
        assert!(!looks_like_secret("eyJhbGciOi"));
    }

    #[test]
    fn error_messages_do_not_echo_input() {
        let s = Secret::generate();
        let mut bytes = s.expose().as_bytes().to_vec();
        bytes[30] = b'#';
        let err = check_format(&String::from_utf8(bytes).unwrap()).unwrap_err();
        assert!(!err.to_string().contains(&s.expose()[5..20]));
        assert_eq!(
            SecretError::BadChecksum.to_string(),
            "access key secret has a bad checksum: check for a typo"
        );
    }

    #[test]
    fn hash_is_deterministic_per_pepper() {
        let s = Secret::generate();
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(hash(&a, s.expose()), hash(&a, s.expose()));
        assert_ne!(hash(&a, s.expose()), hash(&b, s.expose()));
        assert_ne!(hash(&a, s.expose()), hash(&a, Secret::generate().expose()));
        assert!(hashes_equal(&hash(&a, s.expose()), &hash(&a, s.expose())));
        assert!(!hashes_equal(&hash(&a, s.expose()), &hash(&b, s.expose())));
        assert!(!hashes_equal(&[1, 2, 3], &[1, 2]));
    }

    #[test]
    fn debug_shows_only_prefix() {
        let s = Secret::generate();
        let shown = format!("{s:?}");
        assert_eq!(shown, format!("Secret(\"{}…\")", s.prefix()));
        assert!(!shown.contains(&s.expose()[8..]));
        assert!(!shown.contains(&s.expose()[10..20]));
    }
}
