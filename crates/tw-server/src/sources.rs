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
