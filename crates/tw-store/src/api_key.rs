//! API keys: `tw_` plus 32 random bytes in hex, stored only as their SHA-256.

use crate::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// What a key may do.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub created_at: DateTime<Utc>,
    /// After this the key is refused (401, "expired"); `None`: it does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key is refused at once by every server on the database.
    pub revoked_at: Option<DateTime<Utc>>,
    /// About when it was last accepted: servers write it at most once a minute per key, so it may
    /// lag the real last use by that much.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// True once `now` reached the key's expiry.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// `revoked`, `expired` or `active`, as listings show it.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.is_expired(now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What the store keeps of a new key: its hash, never its plaintext.
#[derive(Debug, Clone)]
pub struct ApiKeySpec {
    pub name: String,
    pub scope: Scope,
    pub hash: [u8; 32],
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKeySpec {
    /// The record of this key as it is created now (the engines store it).
    pub fn record(&self) -> ApiKeyRecord {
        ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            scope: self.scope,
            created_at: Utc::now(),
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
        }
    }
}

/// The longest duration [`parse_duration`] accepts: far beyond any key's life or log's age, and
/// far inside what a timestamp can hold, so adding it to now never overflows.
pub const MAX_DURATION_DAYS: i64 = 100 * 366;

/// A duration as operators type it: `90s`, `30m`, `12h`, `90d`, `2w`, at least one second and at
/// most [`MAX_DURATION_DAYS`]. The error says what is accepted.
pub fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let t = text.trim();
    let explain = || format!("'{t}' is not a duration like 90s, 30m, 12h, 90d or 2w (at most {MAX_DURATION_DAYS}d)");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(explain)?;
    let (num, unit) = t.split_at(split);
    // More digits than any accepted value has: refused before parsing, so no overflow is possible.
    if num.is_empty() || num.len() > 12 {
        return Err(explain());
    }
    let n: i64 = num.parse().map_err(|_| explain())?;
    let secs_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(explain()),
    };
    let secs = n.checked_mul(secs_per_unit).filter(|s| (1..=MAX_DURATION_DAYS * 86_400).contains(s)).ok_or_else(explain)?;
    Ok(chrono::Duration::seconds(secs))
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

    #[test]
    fn durations_parse_within_bounds_and_never_overflow() {
        assert_eq!(parse_duration("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(parse_duration(" 2w ").unwrap(), chrono::Duration::weeks(2));
        assert_eq!(parse_duration("30m").unwrap(), chrono::Duration::minutes(30));
        for bad in ["", "d", "90", "90x", "-5d", "0s", "99999999999d", "9999999999999999999999s", "1.5h", "36601d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration(&format!("{MAX_DURATION_DAYS}d")).is_ok());
    }

    #[test]
    fn status_says_revoked_before_expired() {
        let now = Utc::now();
        let mut k = ApiKeyRecord {
            id: "1".into(),
            name: "n".into(),
            prefix: "tw_1".into(),
            scope: Scope::Read,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(k.status(now), "active");
        k.expires_at = Some(now);
        assert!(k.is_expired(now));
        assert_eq!(k.status(now), "expired");
        k.revoked_at = Some(now);
        assert_eq!(k.status(now), "revoked");
    }
}
