//! What a source's settings mean outside any one request: how a source is shown (the API and
//! the audit log show it alike), how a `severity_mapping` is read (the API and the config file
//! read it alike), and which source a secret already belongs to. Here rather than in
//! `routes/sources.rs` so the config file and the audit log need nothing from the routes.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use tw_core::{Format, Secret, Severity, SourceName};
use tw_store::SourceRecord;

/// How a source is shown: settings and statistics, never the secret itself.
pub fn source_view(s: &SourceRecord) -> Value {
    let st = &s.settings;
    json!({
        "source": s.name,
        "enabled": st.enabled,
        "auto_triage": st.auto_triage,
        "playbook": st.playbook,
        "format": st.format.map(Format::as_str).unwrap_or("auto"),
        "mode": st.mode,
        "severity_mapping": st.severity_mapping,
        "timestamp_tolerance_secs": st.timestamp_tolerance_secs,
        "max_body_bytes": st.max_body_bytes,
        "rate_limit": st.rate_limit.map(|r| json!({"per_second": r.per_second(), "burst": r.burst()})),
        "managed_by_config": s.managed_by_config,
        "secret_fingerprint": s.secret_fingerprint,
        "secret_rotated_at": s.secret_rotated_at,
        "previous_secret_expires_at": s.previous_secret.as_ref().map(|(_, until)| until),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "last_delivery_at": s.last_delivery_at,
        "delivery_count": s.delivery_count,
        "error_count": s.error_count,
        "webhook_path": format!("/api/webhooks/{}", s.name),
    })
}

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
