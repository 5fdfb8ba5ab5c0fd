//! Our severity scale and the default mapping from vendors' own words to it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Incident severity, most severe first. Ordering follows severity: `Critical > Info`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    /// The lowercase name used in the API, the config file and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Maps a vendor's own severity word to ours, case-insensitively, accepting the synonyms real
    /// vendors use (`informational`, `moderate`, `severe`, `crit`, ...). `None` when unknown.
    pub fn from_vendor_word(word: &str) -> Option<Severity> {
        let w = word.trim().to_ascii_lowercase();
        Some(match w.as_str() {
            "critical" | "crit" | "severe" | "emergency" | "fatal" | "5" => Severity::Critical,
            "high" | "error" | "major" | "4" => Severity::High,
            "medium" | "moderate" | "med" | "warning" | "warn" | "3" => Severity::Medium,
            "low" | "minor" | "2" => Severity::Low,
            "info" | "informational" | "information" | "informative" | "notice" | "debug" | "none" | "unknown" | "1" | "0" => {
                Severity::Info
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that is not one of our five severity names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity '{0}' (expected critical, high, medium, low or info)")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    /// Parses exactly our own names (case-insensitive); vendor synonyms go through
    /// [`Severity::from_vendor_word`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            "info" | "informational" => Ok(Severity::Info),
            _ => Err(UnknownSeverity(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_words_map_case_insensitively() {
        assert_eq!(Severity::from_vendor_word("High"), Some(Severity::High));
        assert_eq!(Severity::from_vendor_word("INFORMATIONAL"), Some(Severity::Info));
        assert_eq!(Severity::from_vendor_word(" moderate "), Some(Severity::Medium));
        assert_eq!(Severity::from_vendor_word("bogus"), None);
    }

    #[test]
    fn ordering_is_by_severity() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low > Severity::Info);
    }

    #[test]
    fn parses_only_our_names() {
        assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("severe".parse::<Severity>().is_err());
    }
}
