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

/// One line of a [`recipe`]: what the vendor's form calls it, and what to paste.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLine {
    pub label: &'static str,
    pub value: String,
}

/// What to paste into the sending tool's webhook form for a source of `verification`: its URL
/// (`base`: how the sender reaches this server, e.g. `https://tw.example.com`), and the header,
/// credentials or signing secret the scheme takes. Holds the secret: shown once, to an admin.
pub fn recipe(verification: &tw_core::Verification, base: &str, source: &SourceName, secret: &str) -> Vec<RecipeLine> {
    use tw_core::Verification as V;
    let line = |label, value: String| RecipeLine { label, value };
    let base = base.trim_end_matches('/');
    let url = format!("{base}/api/webhooks/{source}");
    let mut lines = vec![line("Method", "POST, Content-Type: application/json".into())];
    match verification {
        V::Hmac => {
            lines.insert(0, line("URL", url));
            lines.push(line("Secret", secret.to_string()));
            lines.push(line(
                "Sign",
                "X-Webhook-Timestamp: <unix seconds>; X-Webhook-Signature: sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">".into(),
            ));
        }
        V::StandardWebhooks => {
            lines.insert(0, line("Endpoint URL", url));
            lines.push(line("Signing secret", secret.to_string()));
            lines.push(line(
                "Sign",
                "the sender's Standard Webhooks / Svix library signs (webhook-id, webhook-timestamp, webhook-signature)".into(),
            ));
        }
        V::Github => {
            lines.insert(0, line("Payload URL", url));
            lines.push(line("Secret", secret.to_string()));
            lines.push(line("Sign", "X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>".into()));
        }
        V::HeaderToken { header } => {
            lines.insert(0, line("URL", url));
            lines.push(line("Header name", header_display(header.as_str())));
            lines.push(line("Header value", secret.to_string()));
        }
        V::Basic => {
            lines.insert(0, line("URL", url));
            lines.push(line("Authentication", "Basic".into()));
            lines.push(line("Username", "any (e.g. tw)".into()));
            lines.push(line("Password", secret.to_string()));
        }
        V::UrlToken => {
            lines.insert(0, line("URL", format!("{url}/{secret}")));
            lines.push(line("Note", "the URL holds the token: treat it as the secret".into()));
        }
    }
    lines
}

/// A header name as senders write it (`X-Api-Key` for the stored `x-api-key`).
pub fn header_display(lower: &str) -> String {
    lower
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}
