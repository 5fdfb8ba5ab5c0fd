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
    /// Written by hand for the usual numbers (a year of four digits, a sequence that is not
    /// negative): the intake writes one three times per delivery (its answer, its log line, its
    /// delivery record), and `write!` with two padded arguments cost about 900 instructions each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, seq) = (self.year, self.seq);
        if !(1000..=9999).contains(&year) || seq < 0 {
            return write!(f, "INC-{year}-{seq:04}");
        }
        // "INC-" + 4 + "-" + up to 19 digits.
        let mut buf = *b"INC-0000-0000000000000000000";
        let mut y = year as u32;
        for d in buf[4..8].iter_mut().rev() {
            *d = b'0' + (y % 10) as u8;
            y /= 10;
        }
        let mut rest = seq as u64;
        let mut end = buf.len();
        let mut digits = 0;
        while rest > 0 || digits < 4 {
            end -= 1;
            buf[end] = b'0' + (rest % 10) as u8;
            rest /= 10;
            digits += 1;
        }
        let start = end - 9;
        buf.copy_within(0..9, start);
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&buf[start..]).unwrap_or_default())
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

    /// The hand-written digits say what `format!` says, at every width and past the fast path.
    #[test]
    fn formats_as_format_would() {
        let mut seqs = vec![0, 1, 9, 10, 999, 1000, 9999, 10_000, 4_294_967_295, i64::MAX, -1, i64::MIN];
        seqs.extend((0..19).map(|p| 10i64.pow(p) - 1));
        seqs.extend((0..19).map(|p| 10i64.pow(p)));
        for year in [0, 7, 999, 2026, 9999, -1, 10_000, i32::MAX, i32::MIN] {
            for &seq in &seqs {
                let n = IncidentNumber::new(year, seq);
                assert_eq!(n.to_string(), format!("INC-{year}-{seq:04}"), "{year} {seq}");
            }
        }
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
