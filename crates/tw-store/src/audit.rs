//! The audit log: one record per administrative change (a source registered, changed, rotated or
//! deleted; an API key created or revoked; a playbook or intel list changed), saying who, from
//! where, what, and the state before and after. Snapshots never hold a secret: the callers build
//! them from views that show a secret's fingerprint at most.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Records kept; older ones are pruned as new ones are written. Administrative changes are rare
/// (a busy installation makes tens a day), so this is years of history in a few tens of MB.
pub const AUDIT_KEPT: i64 = 100_000;

/// The largest page of audit records one read returns.
pub const AUDIT_MAX_PAGE: u32 = 500;

/// Who made a change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditActor {
    /// An API request, named by its key's name and displayable prefix (never the key itself).
    ApiKey { name: String, key_prefix: String },
    /// `tw-cli` working on the store directly, named by the operating-system user that ran it.
    Cli { user: String },
    /// The server applying its config file at start.
    ConfigFile { path: String },
}

impl AuditActor {
    /// The stored kind: `api_key`, `cli` or `config_file`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditActor::ApiKey { .. } => "api_key",
            AuditActor::Cli { .. } => "cli",
            AuditActor::ConfigFile { .. } => "config_file",
        }
    }

    /// The stored name: the key's name, the user, or the config file's path.
    pub fn name(&self) -> &str {
        match self {
            AuditActor::ApiKey { name, .. } => name,
            AuditActor::Cli { user } => user,
            AuditActor::ConfigFile { path } => path,
        }
    }

    /// The key prefix, for a change made with an API key.
    pub fn key_prefix(&self) -> Option<&str> {
        match self {
            AuditActor::ApiKey { key_prefix, .. } => Some(key_prefix),
            _ => None,
        }
    }

    /// Rebuilds an actor from its stored columns.
    pub fn from_columns(kind: &str, name: String, key_prefix: Option<String>) -> Result<AuditActor, String> {
        match kind {
            "api_key" => Ok(AuditActor::ApiKey { name, key_prefix: key_prefix.unwrap_or_default() }),
            "cli" => Ok(AuditActor::Cli { user: name }),
            "config_file" => Ok(AuditActor::ConfigFile { path: name }),
            other => Err(format!("unknown actor kind '{other}'")),
        }
    }
}

impl std::fmt::Display for AuditActor {
    /// `ops (tw_1a2b3c4d)`, `cli:alice`, `config file /etc/tw/webhook_config.yaml`: for log lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditActor::ApiKey { name, key_prefix } => write!(f, "{name} ({key_prefix})"),
            AuditActor::Cli { user } => write!(f, "cli:{user}"),
            AuditActor::ConfigFile { path } => write!(f, "config file {path}"),
        }
    }
}

/// A change to record.
#[derive(Debug, Clone)]
pub struct NewAuditRecord {
    pub actor: AuditActor,
    /// The client's address (behind trusted proxies, the one they report); `None` for local
    /// changes (the CLI, the config file).
    pub client_ip: Option<String>,
    /// `source.create`, `source.update`, `source.rotate_secret`, `source.delete`, ...
    pub action: String,
    /// What was changed: a source or playbook name, a key prefix, an intel list.
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The request's id, for an API change.
    pub request_id: Option<String>,
}

/// A recorded change.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: String,
    /// Orders the log and pages it (newest first).
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    pub client_ip: Option<String>,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

/// Which records to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// An exact action (`source.create`), or a family without a dot (`source`: every `source.*`).
    pub action: Option<String>,
    /// An exact target.
    pub target: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records older than this position (a page's `next`).
    pub before_seq: Option<i64>,
    /// At most this many (capped at [`AUDIT_MAX_PAGE`]).
    pub limit: u32,
}

impl AuditFilter {
    /// The action bounds the engines match: `[low, high)` for a family, or the exact action.
    pub(crate) fn action_match(&self) -> Option<ActionMatch> {
        let a = self.action.as_deref()?;
        Some(if a.contains('.') {
            ActionMatch::Exact(a.to_string())
        } else {
            // Every `family.*`: the range from "family." up to "family/" ('/' follows '.').
            ActionMatch::Range(format!("{a}."), format!("{a}/"))
        })
    }

    /// The page size the engines use.
    pub(crate) fn page_size(&self) -> i64 {
        i64::from(self.limit.clamp(1, AUDIT_MAX_PAGE))
    }
}

/// How an action filter is matched.
pub(crate) enum ActionMatch {
    Exact(String),
    Range(String, String),
}

/// A page of the audit log, newest first, and where the next (older) page starts.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// Pass as [`AuditFilter::before_seq`] for the next page; `None` on the last.
    pub next: Option<i64>,
}

/// Splits one row too many off a page read with `limit + 1`, into the page and its `next`.
pub(crate) fn page_of(mut items: Vec<AuditRecord>, limit: i64) -> AuditPage {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = if more { items.last().map(|r| r.seq) } else { None };
    AuditPage { items, next }
}

/// Parses a stored JSON snapshot.
pub(crate) fn parse_json(text: Option<String>) -> Result<Option<Value>, crate::StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| crate::StoreError::Corrupt(format!("audit snapshot: {e}")))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_through_their_columns() {
        for a in [
            AuditActor::ApiKey { name: "ops".into(), key_prefix: "tw_12345678".into() },
            AuditActor::Cli { user: "root".into() },
            AuditActor::ConfigFile { path: "/etc/tw/webhook_config.yaml".into() },
        ] {
            let back = AuditActor::from_columns(a.kind(), a.name().to_string(), a.key_prefix().map(str::to_string)).unwrap();
            assert_eq!(back, a);
        }
        assert!(AuditActor::from_columns("robot", "x".into(), None).is_err());
    }

    #[test]
    fn a_family_matches_every_action_in_it_and_nothing_else() {
        let f = AuditFilter { action: Some("source".into()), ..Default::default() };
        let Some(ActionMatch::Range(lo, hi)) = f.action_match() else { panic!("a family is a range") };
        for inside in ["source.create", "source.rotate_secret", "source.delete"] {
            assert!(inside >= lo.as_str() && inside < hi.as_str(), "{inside}");
        }
        for outside in ["sources.create", "source", "playbook.put", "sourcf.x"] {
            assert!(!(outside >= lo.as_str() && outside < hi.as_str()), "{outside}");
        }
    }

    #[test]
    fn a_page_read_one_long_says_where_the_next_starts() {
        let rec = |seq: i64| AuditRecord {
            id: seq.to_string(),
            seq,
            at: Utc::now(),
            actor: AuditActor::Cli { user: "u".into() },
            client_ip: None,
            action: "a.b".into(),
            target: "t".into(),
            before: None,
            after: None,
            request_id: None,
        };
        let page = page_of(vec![rec(5), rec(4), rec(3)], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next, Some(4));
        assert_eq!(page_of(vec![rec(5), rec(4)], 2).next, None);
    }
}
