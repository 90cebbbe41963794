//! The master key and AEAD sealing of secrets at rest.
//!
//! Signing keys and other secrets are stored sealed with XChaCha20-Poly1305
//! under one master key, which lives either in a 0600 key file or in the
//! `TOKEN_BROKER_MASTER_KEY` environment variable. Sealed values are laid out
//! as `version (1) || nonce (24) || ciphertext+tag`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{KeyError, hmac_sha256, random_bytes};

/// Format version written as the first byte of every sealed value, so the layout can evolve.
const SEAL_VERSION: u8 = 1;
/// XChaCha20 nonce length; large enough that random nonces never collide in practice.
const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Domain-separation prefix for derived sub-keys.
const DERIVE_PREFIX: &str = "token-broker/";

/// The root secret of the broker: seals stored secrets and derives purpose-bound sub-keys.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Lets a fresh install start without operator setup while refusing key files other users can read.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key = random_bytes::<32>();
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let mut text = STANDARD.encode(key);
                text.push('\n');
                let written = file
                    .write_all(text.as_bytes())
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    // Leave no half-written key behind to be mistaken for a real one next start.
                    let _ = std::fs::remove_file(path);
                    return Err(io_err(e));
                }
                Ok(Self(key))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Read an existing key file after checking that only its owner can access it.
    fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        Self::from_base64(&text).map_err(|_| KeyError::BadKeyFile {
            path: path.to_path_buf(),
        })
    }

    /// Lets deployments inject the key through `TOKEN_BROKER_MASTER_KEY` instead of a file.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::BadMasterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadMasterKey)?;
        Ok(Self(key))
    }

    /// Protects a secret at rest; `aad` binds the sealed value to its purpose so it cannot be swapped between records.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce = random_bytes::<NONCE_LEN>();
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Recovers a value sealed by [`MasterKey::seal`], failing on any tampering or purpose mismatch.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (&version, rest) = sealed.split_first().ok_or(KeyError::SealTruncated)?;
        if version != SEAL_VERSION {
            return Err(KeyError::SealVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::SealTruncated);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Open)
    }

    /// Gives each purpose (e.g. the access-key hashing pepper) its own key so one leak does not expose the others.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut message = Vec::with_capacity(DERIVE_PREFIX.len() + label.len());
        message.extend_from_slice(DERIVE_PREFIX.as_bytes());
        message.extend_from_slice(label.as_bytes());
        hmac_sha256(&self.0, &message)
    }

    /// Build the AEAD instance for this key.
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey(random_bytes::<32>())
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key();
        let sealed = k.seal(b"private key bytes", b"signing-key/abc").unwrap();
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 17 + TAG_LEN);
        assert_eq!(
            k.open(&sealed, b"signing-key/abc").unwrap(),
            b"private key bytes"
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let k = key();
        assert_ne!(k.seal(b"x", b"a").unwrap(), k.seal(b"x", b"a").unwrap());
    }

    #[test]
    fn wrong_aad_fails() {
        let k = key();
        let sealed = k.seal(b"secret", b"purpose-a").unwrap();
        assert!(matches!(k.open(&sealed, b"purpose-b"), Err(KeyError::Open)));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = key();
        let mut sealed = k.seal(b"secret", b"aad").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(&sealed, b"aad"), Err(KeyError::Open)));
        let mut sealed = k.seal(b"secret", b"aad").unwrap();
        sealed[1 + NONCE_LEN] ^= 0x80;
        assert!(matches!(k.open(&sealed, b"aad"), Err(KeyError::Open)));
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = key().seal(b"secret", b"aad").unwrap();
        assert!(matches!(key().open(&sealed, b"aad"), Err(KeyError::Open)));
    }

    #[test]
    fn bad_version_and_truncation_fail() {
        let k = key();
        let mut sealed = k.seal(b"secret", b"aad").unwrap();
        sealed[0] = 2;
        assert!(matches!(
            k.open(&sealed, b"aad"),
            Err(KeyError::SealVersion(2))
        ));
        assert!(matches!(k.open(&[], b"aad"), Err(KeyError::SealTruncated)));
        assert!(matches!(
            k.open(&[SEAL_VERSION; 20], b"aad"),
            Err(KeyError::SealTruncated)
        ));
    }

    #[test]
    fn from_base64_requires_32_bytes() {
        let k = MasterKey::from_base64(&format!("{}\n", STANDARD.encode([9u8; 32]))).unwrap();
        assert_eq!(k.0, [9u8; 32]);
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([9u8; 31])),
            Err(KeyError::BadMasterKey)
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(KeyError::BadMasterKey)
        ));
    }

    #[test]
    fn derive_is_deterministic_and_label_bound() {
        let k = key();
        assert_eq!(k.derive("access-key-pepper"), k.derive("access-key-pepper"));
        assert_ne!(k.derive("access-key-pepper"), k.derive("other"));
        assert_ne!(
            k.derive("access-key-pepper"),
            key().derive("access-key-pepper")
        );
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(STANDARD.decode(text.trim()).unwrap(), created.0);
        let reloaded = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(created.0, reloaded.0);
    }

    #[test]
    fn group_readable_key_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn garbage_key_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "hello\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::BadKeyFile { .. })
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey([0xAB; 32]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "MasterKey(<redacted>)");
        assert!(!shown.contains(&STANDARD.encode(k.0)));
    }
}
