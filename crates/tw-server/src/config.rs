//! `webhook_config.yaml`: sources declared in a file, in the spec's shape.
//!
//! ```yaml
//! sources:
//!   email-gateway:
//!     secret: "${EMAIL_GATEWAY_SECRET}"
//!     auto_triage: true
//!     playbook: phishing_triage
//!     severity_mapping: {critical: critical, high: high}
//!     rate_limit: {per_second: 10, burst: 50}   # optional; none by default
//!   splunk:
//!     secret: "${SPLUNK_TOKEN}"
//!     verification: url-token          # or {scheme: header-token, header: X-Api-Key}, ...
//!     allowed_ips: [192.0.2.0/24]      # optional; any address by default
//!     mapping: {title: /search_name}   # optional JSON pointers; the format's reading by default
//! ```
//!
//! `${VAR}` and `${VAR:-default}` are expanded inside parsed string values (never in the raw
//! text, so a variable cannot inject YAML structure); `$$` is a literal `$`.

use crate::sources::parse_mapping;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::Path;
use tw_core::{Format, Secret, SourceMode, SourceName};
use tw_store::{NewSource, SourceSettings};

/// An error in the config file, with the file and line it points at.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    sources: BTreeMap<String, FileSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    secret: Spanned<String>,
    #[serde(default)]
    auto_triage: Option<Spanned<bool>>,
    #[serde(default)]
    playbook: Option<Spanned<String>>,
    #[serde(default)]
    severity_mapping: Option<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    timestamp_tolerance_secs: Option<Spanned<i64>>,
    #[serde(default)]
    max_body_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    rate_limit: Option<FileRateLimit>,
    /// A scheme name, or `{scheme: header-token, header: X-Api-Key}`.
    #[serde(default)]
    verification: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    allowed_ips: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    mapping: Option<Spanned<serde_json::Value>>,
}

/// `rate_limit: {per_second: 10, burst: 50}` (`burst` defaults to one second's worth).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRateLimit {
    per_second: Spanned<f64>,
    #[serde(default)]
    burst: Option<Spanned<u32>>,
}

/// Reads and validates the file; `env` looks up variables (the process environment in
/// production, a map in tests).
pub fn load(path: &Path, playbooks: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<NewSource>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{file}: cannot read: {e}")))?;
    parse(&file, &text, playbooks, env)
}

/// Parses config text; `file` names it in errors.
pub fn parse(file: &str, text: &str, playbooks: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<NewSource>, ConfigError> {
    let parsed: File = serde_saphyr::from_str(text).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        match e.location() {
            Some(l) if l.line() > 0 => ConfigError(format!("{file}:{}:{}: {first}", l.line(), l.column())),
            _ => ConfigError(format!("{file}: {first}")),
        }
    })?;
    let mut out = Vec::new();
    for (raw_name, s) in parsed.sources {
        let at = |line: u64, key: &str, msg: String| ConfigError(format!("{file}:{line}: sources.{raw_name}.{key}: {msg}"));
        let name =
            SourceName::parse(&raw_name).map_err(|e| ConfigError(format!("{file}: sources.{raw_name}: invalid source name: {e}")))?;
        let expand = |v: &Spanned<String>, key: &str| {
            expand_vars(&v.value, env)
                .map_err(|var| at(v.referenced.line(), key, format!("environment variable {var} is not set (source '{raw_name}')")))
        };
        let secret = expand(&s.secret, "secret")?;
        Secret::validate(&secret).map_err(|e| at(s.secret.referenced.line(), "secret", format!("secret {e}")))?;
        let mut settings = SourceSettings::default();
        if let Some(v) = &s.auto_triage {
            settings.auto_triage = v.value;
        }
        if let Some(v) = &s.playbook {
            let p = expand(v, "playbook")?;
            if !playbooks.contains(&p) {
                return Err(at(v.referenced.line(), "playbook", format!("unknown playbook '{p}' (known: {})", playbooks.join(", "))));
            }
            settings.playbook = Some(p);
        }
        if settings.auto_triage && settings.playbook.is_none() {
            let line = s.auto_triage.as_ref().map(|v| v.referenced.line()).unwrap_or(0);
            return Err(at(line, "playbook", "is required when auto_triage is true".into()));
        }
        if let Some(map) = &s.severity_mapping {
            for (vendor, ours) in map {
                let one = serde_json::json!({ vendor.as_str(): ours.value.as_str() });
                let parsed = parse_mapping(&one).map_err(|e| at(ours.referenced.line(), &format!("severity_mapping.{vendor}"), e))?;
                settings.severity_mapping.extend(parsed);
            }
        }
        if let Some(v) = &s.format {
            let f = expand(v, "format")?;
            settings.format = if f == "auto" { None } else { Some(f.parse::<Format>().map_err(|e| at(v.referenced.line(), "format", e))?) };
        }
        if let Some(v) = &s.mode {
            settings.mode = expand(v, "mode")?.parse::<SourceMode>().map_err(|e| at(v.referenced.line(), "mode", e))?;
        }
        if let Some(v) = s.enabled {
            settings.enabled = v;
        }
        if let Some(v) = &s.timestamp_tolerance_secs {
            if !(1..=86400).contains(&v.value) {
                return Err(at(v.referenced.line(), "timestamp_tolerance_secs", "must be from 1 to 86400".into()));
            }
            settings.timestamp_tolerance_secs = v.value;
        }
        if let Some(v) = &s.max_body_bytes {
            if v.value == 0 || v.value > 64 * 1024 * 1024 {
                return Err(at(v.referenced.line(), "max_body_bytes", "must be from 1 to 67108864".into()));
            }
            settings.max_body_bytes = v.value;
        }
        if let Some(r) = &s.rate_limit {
            let per_second = r.per_second.value;
            let burst = match &r.burst {
                Some(b) => b.value,
                None => per_second.ceil().clamp(1.0, f64::from(tw_store::RateLimit::MAX_BURST)) as u32,
            };
            let limit = tw_store::RateLimit::new(per_second, burst).map_err(|e| {
                let line = match (e, &r.burst) {
                    (tw_store::RateLimitError::Burst, Some(b)) => b.referenced.line(),
                    _ => r.per_second.referenced.line(),
                };
                at(line, &format!("rate_limit.{}", e.field()), e.to_string())
            })?;
            settings.rate_limit = Some(limit);
        }
        if let Some(v) = &s.verification {
            settings.verification = tw_core::Verification::parse(&v.value).map_err(|e| at(v.referenced.line(), &e.field, e.message))?;
        }
        let secret_line = s.verification.as_ref().map_or(s.secret.referenced.line(), |v| v.referenced.line());
        settings.verification.check_secret(&secret).map_err(|e| at(secret_line, "secret", e))?;
        if let Some(v) = &s.allowed_ips {
            settings.allowed_ips = crate::sources::parse_allowed_ips(&v.value).map_err(|problems| {
                let (field, msg) = problems.into_iter().next().unwrap_or_default();
                at(v.referenced.line(), &field, msg)
            })?;
        }
        if let Some(v) = &s.mapping {
            settings.mapping = Some(tw_core::formats::Mapping::parse(&v.value).map_err(|problems| {
                let msg = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                ConfigError(format!("{file}:{}: sources.{raw_name}.{msg}", v.referenced.line()))
            })?);
        }
        out.push(NewSource { name, secret: Secret::new(secret), settings });
    }
    Ok(out)
}

/// Refuses a file where two sources share a secret, or where a source takes the secret another
/// registered source (one not in the file) verifies with: either would accept the other's
/// deliveries, since the signature does not cover the source name. Names both sources (the file
/// is the operator's own); compares in constant time.
pub fn refuse_shared_secrets(
    path: &Path,
    declared: &[NewSource],
    registered: &[tw_store::SourceRecord],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ConfigError> {
    let file = path.display();
    let same = |a: &Secret, b: &Secret| tw_core::signature::constant_time_eq(a.expose().as_bytes(), b.expose().as_bytes());
    for (i, a) in declared.iter().enumerate() {
        if let Some(b) = declared[..i].iter().find(|b| same(&a.secret, &b.secret)) {
            return Err(ConfigError(format!(
                "{file}: sources.{}.secret: the same secret as source '{}'; each source needs its own secret (either would accept the other's deliveries)",
                a.name, b.name
            )));
        }
    }
    let others: Vec<tw_store::SourceRecord> = registered.iter().filter(|r| !declared.iter().any(|d| d.name == r.name)).cloned().collect();
    for a in declared {
        if let Some(owner) = crate::sources::secret_owner(&a.secret, &others, None, now) {
            return Err(ConfigError(format!(
                "{file}: sources.{}.secret: the secret of registered source '{owner}'; each source needs its own secret (either would accept the other's deliveries)",
                a.name
            )));
        }
    }
    Ok(())
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$`. Returns the name of a missing variable.
pub fn expand_vars(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                out.push_str(&rest[i..]);
                return Ok(out);
            };
            let expr = &inner[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            match (env(var).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(var.to_string()),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "EMAIL_GATEWAY_SECRET" => Some("email-secret-123".into()),
            "EDR_SECRET" => Some("edr-secret-456".into()),
            _ => None,
        }
    }

    fn playbooks() -> Vec<String> {
        vec!["phishing_triage".into(), "malware_triage".into()]
    }

    const SPEC: &str = r#"# webhook_config.yaml
sources:
  email-gateway:
    secret: "${EMAIL_GATEWAY_SECRET}"
    auto_triage: true
    playbook: phishing_triage
    severity_mapping:
      critical: critical
      high: high
      medium: medium
      low: low

  edr:
    secret: "${EDR_SECRET}"
    auto_triage: true
    playbook: malware_triage
"#;

    #[test]
    fn verification_allow_list_and_mapping_are_read_and_checked() {
        let text = "sources:\n  splunk:\n    secret: abcdefgh-12345678\n    verification: url-token\n    allowed_ips: [192.0.2.0/24, 2001:db8::1]\n    mapping: {title: /search_name, entities: {ip: [/result/src_ip]}}\n  kibana:\n    secret: abcdefgh-87654321\n    verification: {scheme: header-token, header: X-Api-Key}\n";
        let sources = parse("w.yaml", text, &playbooks(), &env).unwrap();
        let get = |n: &str| &sources.iter().find(|s| s.name.as_str() == n).unwrap().settings;
        assert_eq!(get("splunk").verification, tw_core::Verification::UrlToken);
        assert_eq!(get("splunk").allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(), ["192.0.2.0/24", "2001:db8::1/128"]);
        assert_eq!(get("splunk").mapping.as_ref().unwrap().title(), Some("/search_name"));
        assert_eq!(get("kibana").verification.to_value(), serde_json::json!({"scheme": "header-token", "header": "x-api-key"}));

        let err = |text: &str| parse("w.yaml", text, &playbooks(), &env).unwrap_err().0;
        let e = err("sources:\n  s:\n    secret: abcdefgh-12345678\n    verification: {scheme: header-token}\n");
        assert!(e.starts_with("w.yaml:4: sources.s.verification.header: header-token needs"), "{e}");
        let e = err("sources:\n  s:\n    secret: abcdefgh-12345678\n    verification: standard-webhooks\n");
        assert!(e.starts_with("w.yaml:4: sources.s.secret: a standard-webhooks secret is 'whsec_'"), "{e}");
        let e = err("sources:\n  s:\n    secret: abcdefgh-12345678\n    allowed_ips: [10.0.0.0/33]\n");
        assert!(e.starts_with("w.yaml:4: sources.s.allowed_ips[0]: '10.0.0.0/33' is not"), "{e}");
        let e = err("sources:\n  s:\n    secret: abcdefgh-12345678\n    mapping: {title: name}\n");
        assert!(e.starts_with("w.yaml:4: sources.s.mapping.title: is not a JSON pointer"), "{e}");
    }

    #[test]
    fn parses_the_spec_example() {
        let sources = parse("webhook_config.yaml", SPEC, &playbooks(), &env).unwrap();
        assert_eq!(sources.len(), 2);
        let email = sources.iter().find(|s| s.name.as_str() == "email-gateway").unwrap();
        assert_eq!(email.secret.expose(), "email-secret-123");
        assert!(email.settings.auto_triage);
        assert_eq!(email.settings.playbook.as_deref(), Some("phishing_triage"));
        assert_eq!(email.settings.severity_mapping.len(), 4);
        let edr = sources.iter().find(|s| s.name.as_str() == "edr").unwrap();
        assert_eq!(edr.secret.expose(), "edr-secret-456");
    }

    #[test]
    fn missing_variable_names_variable_source_and_line() {
        let text = SPEC.replace("EDR_SECRET", "NOT_SET_ANYWHERE");
        let err = parse("webhook_config.yaml", &text, &playbooks(), &env).unwrap_err().0;
        assert!(err.contains("NOT_SET_ANYWHERE") && err.contains("'edr'") && err.contains("webhook_config.yaml:14:"), "{err}");
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let text = SPEC.replace("playbook: malware_triage", "playbook: nope");
        let err = parse("w.yaml", &text, &playbooks(), &env).unwrap_err().0;
        assert!(err.starts_with("w.yaml:16: sources.edr.playbook: unknown playbook 'nope'"), "{err}");
        let text = SPEC.replace("high: high", "high: severe");
        let err = parse("w.yaml", &text, &playbooks(), &env).unwrap_err().0;
        assert!(err.starts_with("w.yaml:9: sources.email-gateway.severity_mapping.high: 'high': unknown severity 'severe'"), "{err}");
        let err = parse("w.yaml", "sources:\n  edr:\n    secret: abcdefgh\n    colour: blue\n", &playbooks(), &env).unwrap_err().0;
        assert!(err.starts_with("w.yaml:4:") && err.contains("colour"), "{err}");
        let err = parse("w.yaml", "sources:\n  edr: [\n", &playbooks(), &env).unwrap_err().0;
        assert!(err.starts_with("w.yaml:"), "{err}");
    }

    #[test]
    fn rate_limits_parse_with_a_default_burst_and_refuse_bad_values_by_line() {
        let text = "sources:\n  edr:\n    secret: abcdefgh\n    rate_limit: {per_second: 2.5, burst: 10}\n  av:\n    secret: abcdefgh\n    rate_limit:\n      per_second: 0.5\n  mail:\n    secret: abcdefgh\n";
        let sources = parse("w.yaml", text, &playbooks(), &env).unwrap();
        let limit = |n: &str| sources.iter().find(|s| s.name.as_str() == n).unwrap().settings.rate_limit;
        assert_eq!(limit("edr").map(|r| (r.per_second(), r.burst())), Some((2.5, 10)));
        assert_eq!(limit("av").map(|r| (r.per_second(), r.burst())), Some((0.5, 1)));
        assert_eq!(limit("mail"), None);
        let err = parse("w.yaml", "sources:\n  edr:\n    secret: abcdefgh\n    rate_limit:\n      per_second: 0\n", &playbooks(), &env)
            .unwrap_err()
            .0;
        assert!(err.starts_with("w.yaml:5: sources.edr.rate_limit.per_second: must be"), "{err}");
        let err =
            parse("w.yaml", "sources:\n  edr:\n    secret: abcdefgh\n    rate_limit: {per_second: 1, burst: 0}\n", &playbooks(), &env)
                .unwrap_err()
                .0;
        assert!(err.starts_with("w.yaml:4: sources.edr.rate_limit.burst: must be"), "{err}");
        let err =
            parse("w.yaml", "sources:\n  edr:\n    secret: abcdefgh\n    rate_limit: {per_second: 1, brust: 3}\n", &playbooks(), &env)
                .unwrap_err()
                .0;
        assert!(err.starts_with("w.yaml:4") && err.contains("brust"), "{err}");
    }

    #[test]
    fn a_shared_secret_is_refused() {
        let text = SPEC.replace("${EDR_SECRET}", "${EMAIL_GATEWAY_SECRET}");
        let sources = parse("w.yaml", &text, &playbooks(), &env).unwrap();
        let err = refuse_shared_secrets(Path::new("w.yaml"), &sources, &[], chrono::Utc::now()).unwrap_err().0;
        assert!(err.contains("the same secret as source") && err.contains("sources.email-gateway.secret"), "{err}");
        assert!(!err.contains("email-secret-123"), "the secret itself is never printed: {err}");
        let distinct = parse("w.yaml", SPEC, &playbooks(), &env).unwrap();
        refuse_shared_secrets(Path::new("w.yaml"), &distinct, &[], chrono::Utc::now()).unwrap();
    }

    #[test]
    fn expansion_forms() {
        assert_eq!(expand_vars("${EDR_SECRET}", &env).unwrap(), "edr-secret-456");
        assert_eq!(expand_vars("a-${MISSING:-dflt}-b", &env).unwrap(), "a-dflt-b");
        assert_eq!(expand_vars("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        assert_eq!(expand_vars("${MISSING}", &env).unwrap_err(), "MISSING");
        // A value that looks like YAML stays a plain string.
        let injected = |_: &str| Some("x\nplaybook: evil".to_string());
        assert_eq!(expand_vars("${ANY}", &injected).unwrap(), "x\nplaybook: evil");
    }
}
