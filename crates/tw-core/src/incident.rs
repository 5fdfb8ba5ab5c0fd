//! Incident numbers: `INC-<year>-<seq>`, the handle analysts say out loud.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A human incident number, unique per year: `INC-2024-0001`. The sequence is zero-padded to four
/// digits and simply grows wider past 9999 (`INC-2024-10000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentNumber {
    pub year: i32,
    pub seq: i64,
}

impl IncidentNumber {
    pub fn new(year: i32, seq: i64) -> Self {
        IncidentNumber { year, seq }
    }
}

impl fmt::Display for IncidentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{}-{:04}", self.year, self.seq)
    }
}

/// Error for text that is not an incident number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an incident number (expected INC-<year>-<number>, e.g. INC-2024-0001)")]
pub struct BadIncidentNumber(pub String);

impl FromStr for IncidentNumber {
    type Err = BadIncidentNumber;

    /// Parses `INC-2024-0001` (case-insensitive prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadIncidentNumber(s.to_string());
        let rest = s.get(..4).filter(|p| p.eq_ignore_ascii_case("INC-")).map(|_| &s[4..]).ok_or_else(bad)?;
        let (year, seq) = rest.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || !digits(year) || !digits(seq) {
            return Err(bad());
        }
        Ok(IncidentNumber { year: year.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

impl Serialize for IncidentNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IncidentNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_zero_padded() {
        assert_eq!(IncidentNumber::new(2024, 1).to_string(), "INC-2024-0001");
        assert_eq!(IncidentNumber::new(2024, 12345).to_string(), "INC-2024-12345");
    }

    #[test]
    fn parses_round_trip_and_rejects_junk() {
        let n: IncidentNumber = "INC-2024-0042".parse().unwrap();
        assert_eq!(n, IncidentNumber::new(2024, 42));
        assert_eq!("inc-2024-0042".parse::<IncidentNumber>().unwrap(), n);
        for bad in ["", "INC-", "INC-24-1", "INC-2024-", "INC-2024-x1", "2024-0001", "INC-2024-1-2"] {
            assert!(bad.parse::<IncidentNumber>().is_err(), "{bad}");
        }
    }
}
