//! API keys: `tw_` plus 32 random bytes in hex, stored only as their SHA-256.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything, including registering sources.
    Admin,
    /// Reading sources, incidents and queue state.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            other => Err(format!("unknown scope '{other}' (expected admin or read)")),
        }
    }
}

/// A newly generated key: the plaintext is shown once, only the hash is stored.
pub struct NewApiKey {
    pub plaintext: String,
    pub hash: [u8; 32],
    /// The first characters, safe to display to tell keys apart.
    pub prefix: String,
}

/// The prefix every key starts with.
pub const PREFIX: &str = "tw_";

/// Generates a new key.
pub fn generate() -> Result<NewApiKey, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Config(format!("no randomness: {e}")))?;
    let plaintext = format!("{PREFIX}{}", hex::encode(bytes));
    Ok(NewApiKey { hash: hash(&plaintext), prefix: plaintext[..PREFIX.len() + 8].to_string(), plaintext })
}

/// The stored form of a presented key.
pub fn hash(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// A stored key, without its secret part.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scope: Scope,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_hash_stable() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with("tw_") && a.plaintext.len() == 3 + 64);
        assert_eq!(hash(&a.plaintext), a.hash);
        assert!(a.plaintext.starts_with(&a.prefix));
    }
}
