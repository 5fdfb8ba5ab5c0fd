//! What a source's settings mean outside any one request: how a `severity_mapping` is read (the
//! API and the config file read it alike), and which source a secret already belongs to (how a
//! source is shown is [`crate::api::sources::SourceView`]). Here rather than in
//! `routes/sources.rs` so the config file and the audit log need nothing from the routes.

use serde_json::Value;
use std::collections::BTreeMap;
use tw_core::{Secret, Severity, SourceName};
use tw_store::SourceRecord;

/// Parses a `severity_mapping` object: vendor value -> one of our severities.
pub fn parse_mapping(v: &Value) -> Result<BTreeMap<String, Severity>, String> {
    let obj = v.as_object().ok_or("must be an object of vendor value to severity")?;
    let mut out = BTreeMap::new();
    for (k, val) in obj {
        let s = val.as_str().ok_or_else(|| format!("'{k}': must be a string"))?;
        let sev = s.parse::<Severity>().map_err(|e| format!("'{k}': {e}"))?;
        out.insert(k.clone(), sev);
    }
    Ok(out)
}

/// The most ranges an `allowed_ips` list holds.
pub const MAX_ALLOWED_IPS: usize = 64;

/// Reads an `allowed_ips` list (`["10.0.0.0/8", "192.0.2.7"]`; `null` or `[]` for any address)
/// into ranges, or the problems as (field, message): `allowed_ips` or `allowed_ips[i]`.
pub fn parse_allowed_ips(v: &Value) -> Result<Vec<ipnet::IpNet>, Vec<(String, String)>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(vec![("allowed_ips".into(), "must be a list of addresses or CIDR ranges, e.g. [\"192.0.2.0/24\"]".into())]),
    };
    if items.len() > MAX_ALLOWED_IPS {
        return Err(vec![("allowed_ips".into(), format!("must hold at most {MAX_ALLOWED_IPS} ranges"))]);
    }
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().map(crate::client::TrustedProxies::parse_cidr) {
            Some(Ok(net)) => nets.push(net.trunc()),
            Some(Err(e)) => errors.push((format!("allowed_ips[{i}]"), e)),
            None => errors.push((format!("allowed_ips[{i}]"), "must be a string".into())),
        }
    }
    if errors.is_empty() { Ok(nets) } else { Err(errors) }
}

/// Whether `secret` fits `verification`: [`Secret::validate`]'s rules and the scheme's form.
pub fn check_secret(verification: &tw_core::Verification, secret: &str) -> Result<(), String> {
    Secret::validate(secret)?;
    verification.check_secret(secret)
}

/// The first source other than `except` that `secret` verifies for at `now` (its current secret,
/// or its previous one during a rotation's grace period). Every secret is compared in constant
/// time, whatever matches, so the time taken does not say which source (or how much) matched.
pub fn secret_owner<'a>(
    secret: &Secret,
    sources: &'a [SourceRecord],
    except: Option<&SourceName>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<&'a SourceName> {
    let mut owner = None;
    for s in sources.iter().filter(|s| Some(&s.name) != except) {
        for other in s.verifying_secrets(now) {
            if tw_core::signature::constant_time_eq(secret.expose().as_bytes(), other.expose().as_bytes()) && owner.is_none() {
                owner = Some(&s.name);
            }
        }
    }
    owner
}
