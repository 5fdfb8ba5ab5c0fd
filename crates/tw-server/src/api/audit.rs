//! The audit log and API keys: `GET /api/audit`, `GET /api/keys`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_store::{ApiKeyRecord, AuditActor, Scope};
use utoipa::{IntoParams, ToSchema};

/// `GET /api/audit` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// An action (`source.create`) or a family of them (`source`: every `source.*`).
    #[param(pattern = "^[a-z_]+(\\.[a-z_]+)?$", max_length = 64)]
    pub action: Option<String>,
    /// A target exactly: a source or playbook name, an API key prefix, an intel list.
    #[param(min_length = 1, max_length = 256)]
    pub target: Option<String>,
    /// Only records at or after this: an RFC 3339 time, or a duration back from now (`12h`, `90d`,
    /// `2w`; one reaching back before any record means all of them).
    #[param(
        pattern = "^([0-9]{1,9}[smhdw]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// The `meta.next_cursor` of the previous page: the page holds the records older than it.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
    /// Records per page (default 50, at most 200).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub per_page: Option<String>,
}

/// One administrative change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// The client's address (behind trusted proxies, the one they report); null for local changes.
    #[schema(required = true)]
    pub client_ip: Option<String>,
    /// `source.create`, `source.update`, `source.rotate_secret`, `source.delete`, `source.release`,
    /// `api_key.create`, `api_key.revoke`, `playbook.create`, `playbook.put`, `playbook.delete`,
    /// `intel.add`.
    pub action: String,
    pub target: String,
    /// The state before (null for a creation); never a secret, at most its fingerprint.
    #[schema(required = true)]
    pub before: Option<Value>,
    /// The state after (null for a deletion); never a secret, at most its fingerprint.
    #[schema(required = true)]
    pub after: Option<Value>,
    #[schema(required = true)]
    pub request_id: Option<String>,
}

impl From<tw_store::AuditRecord> for AuditRecord {
    fn from(r: tw_store::AuditRecord) -> Self {
        AuditRecord {
            id: r.id,
            at: r.at,
            actor: r.actor,
            client_ip: r.client_ip,
            action: r.action,
            target: r.target,
            before: r.before,
            after: r.after,
            request_id: r.request_id,
        }
    }
}

/// Paging of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditMeta {
    pub per_page: u32,
    /// Send as `?cursor=` for older records; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /api/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditRecord>,
    pub meta: AuditMeta,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An API key as listed (never the key).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, safe to show.
    pub prefix: String,
    pub scope: Scope,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Written at most once a minute per key and server, so it may lag by that much.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyView {
    /// A key as listings show it at `now` (the CLI's `api-key list -o json` too).
    pub fn new(k: &ApiKeyRecord, now: DateTime<Utc>) -> ApiKeyView {
        let status = if k.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if k.is_expired(now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        };
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scope: k.scope,
            status,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// `GET /api/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
}
