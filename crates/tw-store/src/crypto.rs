//! Secret encryption at rest: XChaCha20-Poly1305 under a 32-byte master key, with the source
//! name as associated data so a ciphertext cannot be moved to another source.

use crate::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;
use tw_core::Secret;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// The key file created in the data dir when `TW_MASTER_KEY` is not set.
pub const KEY_FILE: &str = "master.key";

/// The master key that encrypts source secrets. `Debug` is redacted.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Parses a key given as 64 hex digits or as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, StoreError> {
        use base64::Engine;
        let text = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if text.len() == 64 && hex::decode_to_slice(text, &mut key[..]).is_ok() {
            return Ok(MasterKey(key));
        }
        for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
            if let Ok(bytes) = engine.decode(text) {
                let bytes = Zeroizing::new(bytes);
                if bytes.len() == 32 {
                    key.copy_from_slice(&bytes);
                    return Ok(MasterKey(key));
                }
            }
        }
        Err(StoreError::Config("master key must be 32 bytes, written as 64 hex digits or base64".into()))
    }

    /// A fresh random key.
    pub fn generate() -> Result<MasterKey, StoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(|e| StoreError::Config(format!("no randomness: {e}")))?;
        Ok(MasterKey(key))
    }

    /// The key from `env_value` (TW_MASTER_KEY) when given, else from `<data_dir>/master.key`,
    /// which is created with mode 0600 on first start.
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<MasterKey, StoreError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return MasterKey::parse(v).map_err(|e| StoreError::Config(format!("TW_MASTER_KEY: {e}")));
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => MasterKey::parse(&text).map_err(|e| StoreError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate()?;
                write_private(&path, &hex::encode(&key.0[..]))?;
                Ok(key)
            }
            Err(e) => Err(StoreError::Config(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// A short label that tells which secret is configured without helping anyone guess it:
    /// `hmac:` and 8 hex digits of HMAC-SHA256 under a key derived from the master key (an
    /// unkeyed hash would let anyone who sees it test guesses at a weak secret offline).
    pub fn fingerprint(&self, secret: &Secret) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(b"tw-secret-fingerprint\0");
        mac.update(secret.expose().as_bytes());
        format!("hmac:{}", hex::encode(&mac.finalize().into_bytes()[..4]))
    }

    /// Encrypts a secret for `aad` (the source name).
    pub fn encrypt(&self, aad: &str, secret: &Secret) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Config(format!("no randomness: {e}")))?;
        let ct = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret.expose().as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| StoreError::Crypto)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::encrypt`] produced for the same `aad`.
    pub fn decrypt(&self, aad: &str, blob: &[u8]) -> Result<Secret, StoreError> {
        if blob.len() < 1 + NONCE_LEN || blob[0] != VERSION {
            return Err(StoreError::Crypto);
        }
        let (nonce, ct) = blob[1..].split_at(NONCE_LEN);
        let pt =
            self.cipher().decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() }).map_err(|_| StoreError::Crypto)?;
        let pt = Zeroizing::new(pt);
        let text = std::str::from_utf8(&pt).map_err(|_| StoreError::Crypto)?;
        Ok(Secret::new(text))
    }
}

const KEY_CHECK_AAD: &str = "tw-key-check";
const KEY_CHECK_TEXT: &str = "tw master key check";

/// A known text encrypted with `key`, stored once per database: every process that opens the
/// database later must hold the same key.
pub(crate) fn key_check(key: &MasterKey) -> Result<Vec<u8>, StoreError> {
    key.encrypt(KEY_CHECK_AAD, &Secret::new(KEY_CHECK_TEXT))
}

/// Refuses `key` unless it decrypts the database's stored [`key_check`].
pub(crate) fn verify_key_check(key: &MasterKey, blob: &[u8]) -> Result<(), StoreError> {
    match key.decrypt(KEY_CHECK_AAD, blob) {
        Ok(s) if s.expose() == KEY_CHECK_TEXT => Ok(()),
        _ => Err(StoreError::Config(
            "the master key does not match this database: every instance on one database must use the key it was created with \
             (set TW_MASTER_KEY to it, or restore the data dir's master.key)"
                .into(),
        )),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), StoreError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::Config(format!("cannot write {}: {e}", path.display())))
}

/// A new secret of 256 random bits in the form `verification` needs (`whsec_` and hex, or
/// `whsec_` and base64 for Standard Webhooks): usable as an HMAC key, a header value and a URL
/// path segment alike, except the base64 form, which only Standard Webhooks uses.
pub fn generate_secret(verification: &tw_core::Verification) -> Result<Secret, StoreError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut bytes[..]).map_err(|e| StoreError::Config(format!("no randomness: {e}")))?;
    Ok(Secret::new(verification.secret_from(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bound_to_source() {
        let key = MasterKey::generate().unwrap();
        let blob = key.encrypt("edr", &Secret::new("my-secret-value")).unwrap();
        assert!(!blob.windows(15).any(|w| w == b"my-secret-value"));
        assert_eq!(key.decrypt("edr", &blob).unwrap().expose(), "my-secret-value");
        assert!(matches!(key.decrypt("siem", &blob), Err(StoreError::Crypto)));
        let other = MasterKey::generate().unwrap();
        assert!(matches!(other.decrypt("edr", &blob), Err(StoreError::Crypto)));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(None, dir.path()).unwrap();
        let b = MasterKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(&a.0[..], &b.0[..]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        let s = Secret::new("a-weak-secret");
        assert_eq!(a.fingerprint(&s), a.fingerprint(&s));
        assert_ne!(a.fingerprint(&s), b.fingerprint(&s), "another key gives another fingerprint");
        assert_ne!(a.fingerprint(&s), a.fingerprint(&Secret::new("another-secret")));
        assert!(a.fingerprint(&s).starts_with("hmac:") && a.fingerprint(&s).len() == 5 + 8);
    }

    #[test]
    fn parses_hex_and_base64() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        assert!(MasterKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(MasterKey::parse("too-short").is_err());
    }
}
