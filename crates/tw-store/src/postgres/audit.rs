//! The audit log.

use super::{PgStore, query, query_one};
use crate::StoreError;
use crate::audit::{AUDIT_KEPT, ActionMatch, AuditActor, AuditFilter, AuditPage, AuditRecord, NewAuditRecord, page_of, parse_json};
use crate::rows::corrupt;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Appends `a` on `c` (inside the caller's transaction, when it has one) and prunes the log; the
/// record as stored.
pub(super) async fn insert(c: &impl GenericClient, a: NewAuditRecord) -> Result<AuditRecord, StoreError> {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| super::pg_text(&v.to_string()));
    let id = Uuid::now_v7().to_string();
    let (before, after) = (json(&a.before), json(&a.after));
    let (name, target, action) = (super::pg_text(a.actor.name()), super::pg_text(&a.target), super::pg_text(&a.action));
    let request_id = super::pg_opt_text(&a.request_id);
    let row = query_one(
        c,
        "INSERT INTO audit_log (id, at, actor_kind, actor_name, actor_key_prefix, client_ip, action, target, before_json, after_json, request_id) \
         VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq, at",
        &[&id, &a.actor.kind(), &name, &a.actor.key_prefix(), &a.client_ip, &action, &target, &before, &after, &request_id],
    )
    .await?;
    let (seq, at): (i64, DateTime<Utc>) = (row.get(0), row.get(1));
    // Sequence numbers only grow, so this keeps at most the newest AUDIT_KEPT. Bounded on both
    // sides so that the plan is a primary-key range whatever the statistics: with only `<=`, a
    // plan made without them scanned the whole kept log on every audited action.
    super::execute(c, "DELETE FROM audit_log WHERE seq <= $1 AND seq >= (SELECT min(seq) FROM audit_log)", &[&(seq - AUDIT_KEPT)]).await?;
    Ok(AuditRecord {
        id,
        seq,
        at,
        actor: a.actor,
        client_ip: a.client_ip,
        action,
        target,
        before: a.before,
        after: a.after,
        request_id: a.request_id,
    })
}

#[async_trait]
impl crate::AuditStore for PgStore {
    async fn record_audit(&self, record: NewAuditRecord) -> Result<AuditRecord, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let stored = insert(&tx, record).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let mut sql = String::from(
            "SELECT seq, id, at, actor_kind, actor_name, actor_key_prefix, client_ip, action, target, before_json, after_json, request_id \
             FROM audit_log WHERE TRUE",
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        match filter.action_match() {
            // In the index's collation ("C"), or the index cannot serve it.
            Some(ActionMatch::Exact(a)) => arg(&mut sql, " AND action COLLATE \"C\" = ?", Box::new(a)),
            // Bytewise, as on SQLite: a language collation may ignore the '.' and '/' of the bounds.
            Some(ActionMatch::Range(lo, hi)) => {
                arg(&mut sql, " AND action COLLATE \"C\" >= ?", Box::new(lo));
                arg(&mut sql, " AND action COLLATE \"C\" < ?", Box::new(hi));
            }
            None => {}
        }
        if let Some(t) = &filter.target {
            arg(&mut sql, " AND target = ?", Box::new(super::pg_text(t)));
        }
        if let Some(since) = filter.since {
            arg(&mut sql, " AND at >= ?", Box::new(since));
        }
        if let Some(seq) = filter.before_seq {
            arg(&mut sql, " AND seq < ?", Box::new(seq));
        }
        let limit = filter.page_size();
        arg(&mut sql, " ORDER BY seq DESC LIMIT ?", Box::new(limit + 1));
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let c = self.client().await?;
        let rows = query(&c, &sql, &params).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(AuditRecord {
                seq: r.get(0),
                id: r.get(1),
                at: r.get(2),
                actor: AuditActor::from_columns(r.get::<_, &str>(3), r.get(4), r.get(5)).map_err(corrupt("audit actor"))?,
                client_ip: r.get(6),
                action: r.get(7),
                target: r.get(8),
                before: parse_json(r.get(9))?,
                after: parse_json(r.get(10))?,
                request_id: r.get(11),
            });
        }
        Ok(page_of(items, limit))
    }
}
