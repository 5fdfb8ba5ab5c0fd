//! RFC 3339 UTC timestamps, written the way chrono writes them, without chrono's general
//! formatter. The intake writes three or four per delivery (the store's text columns, the log
//! line, the log file's JSON), and chrono spends about 800 instructions on each (callgrind:
//! `to_rfc3339_opts` and its `Serialize`, through `fmt::write` and its offset formatter); these
//! take a tenth of that. Years outside 0000-9999 are left to chrono, which writes them with a sign.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Appends `t` exactly as `t.to_rfc3339_opts(precision, true)` writes it (`Z`, never `+00:00`).
/// `SecondsFormat::AutoSi` is also how chrono's `Serialize` writes a `DateTime<Utc>`.
pub fn push(out: &mut String, t: &DateTime<Utc>, precision: SecondsFormat) {
    // Every accessor of a `DateTime` converts it to local time again (an offset addition with
    // its overflow checks): read the UTC date and time once.
    let naive = t.naive_utc();
    let (date, time) = (naive.date(), naive.time());
    let year = date.year();
    if !(0..=9999).contains(&year) {
        out.push_str(&t.to_rfc3339_opts(precision, true));
        return;
    }
    let (secs, mut nano) = (time.num_seconds_from_midnight(), time.nanosecond());
    let mut sec = secs % 60;
    // A leap second: chrono keeps it in the nanoseconds and writes it as second 60.
    if nano >= 1_000_000_000 {
        sec += 1;
        nano -= 1_000_000_000;
    }
    // `YYYY-MM-DDTHH:MM:SS`, then the fraction and `Z`.
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut buf[0..4], year as u32);
    put(&mut buf[5..7], date.month());
    put(&mut buf[8..10], date.day());
    put(&mut buf[11..13], secs / 3600);
    put(&mut buf[14..16], secs / 60 % 60);
    put(&mut buf[17..19], sec);
    let fraction = match precision {
        SecondsFormat::Secs => None,
        SecondsFormat::Millis => Some((nano / 1_000_000, 3)),
        SecondsFormat::Micros => Some((nano / 1_000, 6)),
        SecondsFormat::AutoSi if nano == 0 => None,
        SecondsFormat::AutoSi if nano % 1_000_000 == 0 => Some((nano / 1_000_000, 3)),
        SecondsFormat::AutoSi if nano % 1_000 == 0 => Some((nano / 1_000, 6)),
        _ => Some((nano, 9)),
    };
    let mut n = 19;
    if let Some((value, width)) = fraction {
        put(&mut buf[20..20 + width], value);
        n = 20 + width;
    }
    buf[n] = b'Z';
    let n = n + 1;
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
}

/// Writes `value` in decimal into all of `digits`, zero-padded (the caller's width holds it).
fn put(digits: &mut [u8], mut value: u32) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `t` as [`push`] writes it.
pub fn format(t: &DateTime<Utc>, precision: SecondsFormat) -> String {
    let mut s = String::with_capacity(30);
    push(&mut s, t, precision);
    s
}

/// For `#[serde(serialize_with = ...)]`: the same text as chrono's own `Serialize`.
pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t, SecondsFormat::AutoSi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    const ALL: [SecondsFormat; 5] =
        [SecondsFormat::Secs, SecondsFormat::Millis, SecondsFormat::Micros, SecondsFormat::Nanos, SecondsFormat::AutoSi];

    fn same_as_chrono(t: DateTime<Utc>) {
        for p in ALL {
            assert_eq!(format(&t, p), t.to_rfc3339_opts(p, true), "{t:?} {p:?}");
        }
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", format(&t, SecondsFormat::AutoSi)), "{t:?}");
    }

    /// Every field at its edges and a spread of instants in between, each precision, and the
    /// nanoseconds that select each of AutoSi's widths.
    #[test]
    fn writes_what_chrono_writes() {
        let nanos = [0, 1, 999, 1_000, 123_000, 999_999, 1_000_000, 7_000_000, 123_456_789, 999_999_999];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut instants = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 12, 5, 9).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
        ];
        for _ in 0..2000 {
            // xorshift: repeatable, spread over years 0000-9999.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 315_537_897_600) as i64 - 62_167_219_200;
            instants.push(Utc.timestamp_opt(secs, 0).unwrap());
        }
        for (i, t) in instants.into_iter().enumerate() {
            for nano in [nanos[i % nanos.len()], nanos[(i * 7 + 3) % nanos.len()]] {
                same_as_chrono(t.with_nanosecond(nano).unwrap());
            }
        }
    }

    #[test]
    fn a_leap_second_and_years_past_four_digits_as_chrono_writes_them() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_250_000_000).unwrap().and_utc();
        same_as_chrono(leap);
        assert_eq!(format(&leap, SecondsFormat::Millis), "2016-12-31T23:59:60.250Z");
        for year in [-1, 10_000, 262_000] {
            same_as_chrono(Utc.with_ymd_and_hms(year, 6, 1, 8, 0, 0).unwrap().with_nanosecond(5_000).unwrap());
        }
    }
}
