//! Webhook sources: the name that appears in the URL and how the source's events are processed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A registered sender's name, as in `POST /api/webhooks/:source`. Always matches
/// `^[a-z0-9][a-z0-9_-]{0,63}$` and is never one of the [`RESERVED`] path words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceName(String);

/// Names that are API paths under `/api/webhooks/` and so cannot name a source.
pub const RESERVED: &[&str] = &["queue"];

/// Why a string cannot be a source name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceNameError {
    #[error("must be 1 to 64 characters: lowercase letters, digits, '-' or '_', starting with a letter or digit")]
    Invalid,
    #[error("'{0}' is reserved")]
    Reserved(String),
}

impl SourceName {
    /// Validates a source name.
    pub fn parse(s: &str) -> Result<SourceName, SourceNameError> {
        let bytes = s.as_bytes();
        let ok_first = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if !ok_first || !ok_rest || bytes.len() > 64 {
            return Err(SourceNameError::Invalid);
        }
        if RESERVED.contains(&s) {
            return Err(SourceNameError::Reserved(s.to_string()));
        }
        Ok(SourceName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SourceName {
    type Err = SourceNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceName::parse(s)
    }
}

impl<'de> Deserialize<'de> for SourceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SourceName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How a source's accepted events become incidents.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// The incident is created before the response (201 accepted).
    #[default]
    Sync,
    /// The raw event is stored durably, answered 202 queued, and turned into an incident by a worker.
    Async,
}

impl SourceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceMode::Sync => "sync",
            SourceMode::Async => "async",
        }
    }
}

impl FromStr for SourceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(SourceMode::Sync),
            "async" => Ok(SourceMode::Async),
            other => Err(format!("unknown mode '{other}' (expected sync or async)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["email-gateway", "edr", "siem_1", "0day", &"a".repeat(64)] {
            assert!(SourceName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in ["", "-edr", "_x", "Email", "a b", "a/b", "é", &"a".repeat(65), "edr\n"] {
            assert_eq!(SourceName::parse(bad), Err(SourceNameError::Invalid), "{bad:?}");
        }
        assert!(matches!(SourceName::parse("queue"), Err(SourceNameError::Reserved(_))));
    }
}
