//! Key handling for the broker: the master key that seals secrets at rest,
//! access-key secrets, and the signing keys behind access tokens.
//!
//! Everything here is self-contained so the cryptographic surface of the
//! broker can be reviewed in one place.

pub mod jwt;
pub mod seal;
pub mod secret;

pub use jwt::{JwtKeys, JwtSettings, KeyMaterial, SigningAlgorithm, VerifyError};
pub use seal::MasterKey;
pub use secret::{Secret, SecretError};

use std::path::PathBuf;

use hmac::{Hmac, Mac, digest::KeyInit};
use rand::RngCore;
use sha2::Sha256;

/// Failures while loading, using or generating broker keys, kept apart from token verification failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The master key file could not be read or written.
    #[error("master key file `{}` could not be accessed: {source}", path.display())]
    Io {
        /// Path of the key file.
        path: PathBuf,
        /// Underlying I/O failure.
        source: std::io::Error,
    },
    /// The master key file is readable or writable by group or other users.
    #[error(
        "master key file `{}` has mode {mode:o}, which allows group or other access: run `chmod 600` on it",
        path.display()
    )]
    InsecurePermissions {
        /// Path of the key file.
        path: PathBuf,
        /// Permission bits found on the file.
        mode: u32,
    },
    /// The master key file does not hold a valid key.
    #[error("master key file `{}` does not hold base64 of exactly 32 bytes", path.display())]
    BadKeyFile {
        /// Path of the key file.
        path: PathBuf,
    },
    /// The master key text (e.g. from the environment) is not a valid key.
    #[error("master key is not base64 (standard alphabet) of exactly 32 bytes")]
    BadMasterKey,
    /// Sealing a value failed.
    #[error("sealing a value failed")]
    Seal,
    /// A sealed value could not be opened: wrong key, wrong purpose, or tampered data.
    #[error("sealed value could not be opened: wrong key, wrong purpose or corrupted data")]
    Open,
    /// A sealed value uses a format version this build does not understand.
    #[error("sealed value has unsupported format version {0}")]
    SealVersion(u8),
    /// A sealed value is too short to hold a version, nonce and tag.
    #[error("sealed value is truncated")]
    SealTruncated,
    /// An algorithm name is not one the broker signs with.
    #[error("signing algorithm `{0}` is not supported: use `EdDSA` or `ES256`")]
    UnknownAlgorithm(String),
    /// A signing key could not be generated or encoded.
    #[error("signing key could not be generated: {0}")]
    Generate(String),
    /// Stored signing key material is unusable.
    #[error("signing key `{kid}` is invalid: {reason}")]
    BadKeyMaterial {
        /// Key id of the offending key.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two verifying keys share one key id, which would make verification ambiguous.
    #[error("signing key id `{0}` appears more than once")]
    DuplicateKid(String),
    /// The configured leeway exceeds the broker's limit.
    #[error("token leeway of {0} seconds is too large: at most 30 seconds is allowed")]
    LeewayTooLarge(u64),
    /// Signing a token failed.
    #[error("token could not be signed: {0}")]
    Sign(String),
}

/// Fill a fixed-size buffer from the thread-local CSPRNG, so every module draws randomness the same way.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// HMAC-SHA-256 keyed by a 32-byte key; infallible because the key is zero-padded to the block size exactly as RFC 2104 does.
pub(crate) fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_hmac_matches_variable_key_hmac() {
        let key = [7u8; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"hello");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, b"hello"), expected);
    }
}
