//! Writing the audit log: who changed what, from where, before and after.
//!
//! Handlers that change things take [`Admin`] (an admin key, the client's address and the request
//! id) and call [`Admin::record`] once the change succeeded. The store's change and its record are
//! two writes: the record follows the change, so a change is never refused because its record
//! could not be written; a record that fails is logged (`api`, error level) with everything it
//! held but the snapshots. Refused requests (401, 403, 404, 409, 422) change nothing and write
//! nothing.
//!
//! Snapshots never hold a secret: sources are shown as the API shows them (the secret's
//! fingerprint only), playbooks by their YAML (capped), intel by the entries added (capped).

use crate::ApiError;
use crate::auth::AdminAccess;
use crate::client::ClientIp;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{Value, json};
use std::sync::Arc;
use tw_store::{ApiKeyRecord, AuditActor, NewAuditRecord, SourceRecord, Store};

/// Playbook YAML kept in a snapshot; beyond it the text is cut and its digest says what it was.
pub const MAX_SNAPSHOT_TEXT: usize = 16 * 1024;
/// Intel entries kept in a snapshot; the count says how many there were.
pub const MAX_SNAPSHOT_ENTRIES: usize = 100;

/// An admin caller, with what the audit log records about them.
pub struct Admin {
    pub key: ApiKeyRecord,
    pub ip: ClientIp,
    /// The caller's `X-Request-Id` when it sent a sane one, else one made for this request.
    pub request_id: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AdminAccess(key) = AdminAccess::from_request_parts(parts, state).await?;
        Ok(Admin {
            key,
            ip: ClientIp::of(parts, &state.trusted_proxies),
            request_id: crate::request_ids::RequestIds::of(&parts.headers).echoed().to_string(),
        })
    }
}

impl Admin {
    /// Records a change this caller made.
    pub async fn record(&self, state: &AppState, action: &str, target: &str, before: Option<Value>, after: Option<Value>) {
        let record = NewAuditRecord {
            actor: AuditActor::ApiKey { name: self.key.name.clone(), key_prefix: self.key.prefix.clone() },
            client_ip: Some(self.ip.0.to_string()),
            action: action.to_string(),
            target: target.to_string(),
            before,
            after,
            request_id: Some(self.request_id.clone()),
        };
        write(&state.store, record).await;
    }
}

/// Appends `record`; a failure is logged, never returned (the change it describes is done).
pub async fn write(store: &Arc<dyn Store>, record: NewAuditRecord) {
    let (action, target, actor) = (record.action.clone(), record.target.clone(), record.actor.to_string());
    let ip = record.client_ip.clone().unwrap_or_else(|| "-".into());
    match store.record_audit(record).await {
        Ok(r) => {
            tracing::info!(target: "api", audit = %action, audit_target = %target, actor = %actor, client_ip = %ip, audit_id = %r.id, "audit record written")
        }
        Err(e) => {
            tracing::error!(target: "api", audit = %action, audit_target = %target, actor = %actor, client_ip = %ip, error = %e.chain(), "audit record could not be written; the change itself was made")
        }
    }
}

/// A source as the audit log shows it: its settings and secret fingerprint, without the
/// statistics that move with every delivery.
pub fn source_snapshot(s: &SourceRecord) -> Value {
    let mut v = serde_json::to_value(crate::api::sources::SourceView::from(s)).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for volatile in ["delivery_count", "error_count", "last_delivery_at", "webhook_path", "secret"] {
            m.remove(volatile);
        }
    }
    v
}

/// A playbook's YAML for a snapshot: whole up to [`MAX_SNAPSHOT_TEXT`], with its size and SHA-256.
pub fn playbook_snapshot(yaml: &str, origin: &str) -> Value {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(yaml.as_bytes()));
    let mut v = json!({"origin": origin, "yaml_bytes": yaml.len(), "yaml_sha256": digest});
    if yaml.len() <= MAX_SNAPSHOT_TEXT {
        v["yaml"] = Value::String(yaml.to_string());
    } else {
        let mut end = MAX_SNAPSHOT_TEXT;
        while !yaml.is_char_boundary(end) {
            end -= 1;
        }
        v["yaml"] = Value::String(yaml[..end].to_string());
        v["yaml_truncated"] = Value::Bool(true);
    }
    v
}

/// Entries added to an intel list, for a snapshot: the first [`MAX_SNAPSHOT_ENTRIES`] and the count.
pub fn intel_snapshot(entries: &[String], added: usize) -> Value {
    json!({
        "entries": entries.iter().take(MAX_SNAPSHOT_ENTRIES).collect::<Vec<_>>(),
        "entries_sent": entries.len(),
        "added": added,
    })
}

/// Records a source the config file created or changed at start (nothing when it is unchanged,
/// so restarts do not fill the log).
pub async fn config_source(store: &Arc<dyn Store>, path: &std::path::Path, before: Option<&SourceRecord>, after: &SourceRecord) {
    let stable = |s: &SourceRecord| {
        let mut v = source_snapshot(s);
        if let Some(m) = v.as_object_mut() {
            m.remove("updated_at");
        }
        v
    };
    let action = match before {
        None => "source.create",
        Some(b) if stable(b) != stable(after) => "source.update",
        Some(_) => return,
    };
    let record = NewAuditRecord {
        actor: AuditActor::ConfigFile { path: path.display().to_string() },
        client_ip: None,
        action: action.to_string(),
        target: after.name.to_string(),
        before: before.map(source_snapshot),
        after: Some(source_snapshot(after)),
        request_id: None,
    };
    write(store, record).await;
}

/// Records a source handed back to the API because the config file no longer declares it.
pub async fn config_released(store: &Arc<dyn Store>, path: Option<&std::path::Path>, name: &str) {
    let record = NewAuditRecord {
        actor: AuditActor::ConfigFile { path: path.map_or_else(|| "(none)".to_string(), |p| p.display().to_string()) },
        client_ip: None,
        action: "source.release".to_string(),
        target: name.to_string(),
        before: Some(json!({"managed_by_config": true})),
        after: Some(json!({"managed_by_config": false})),
        request_id: None,
    };
    write(store, record).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_playbooks_are_cut_on_a_character_boundary_and_keep_their_digest() {
        let yaml = "é".repeat(MAX_SNAPSHOT_TEXT);
        let v = playbook_snapshot(&yaml, "api");
        let kept = v["yaml"].as_str().unwrap();
        assert!(kept.len() <= MAX_SNAPSHOT_TEXT && yaml.starts_with(kept));
        assert_eq!(v["yaml_truncated"], true);
        assert_eq!(v["yaml_bytes"], yaml.len());
        assert_eq!(v["yaml_sha256"].as_str().unwrap().len(), 64);
        assert!(playbook_snapshot("name: x", "api").get("yaml_truncated").is_none());
    }

    #[test]
    fn intel_snapshots_are_capped() {
        let entries: Vec<String> = (0..1000).map(|i| format!("d{i}.example")).collect();
        let v = intel_snapshot(&entries, 1000);
        assert_eq!(v["entries"].as_array().unwrap().len(), MAX_SNAPSHOT_ENTRIES);
        assert_eq!(v["entries_sent"], 1000);
    }
}
