//! The audit log.

use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::audit::{AUDIT_KEPT, ActionMatch, AuditActor, AuditFilter, AuditPage, AuditRecord, NewAuditRecord, page_of, parse_json};
use crate::rows::corrupt;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Appends `a` on `conn` (inside the caller's transaction) and prunes the log; the record as
/// stored.
pub(super) fn insert(conn: &Connection, a: NewAuditRecord) -> Result<AuditRecord, StoreError> {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(serde_json::Value::to_string);
    let (id, at) = (Uuid::now_v7().to_string(), Utc::now());
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, actor_kind, actor_name, actor_key_prefix, client_ip, action, target, before_json, after_json, request_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        id,
        ts(at),
        a.actor.kind(),
        a.actor.name(),
        a.actor.key_prefix(),
        a.client_ip,
        a.action,
        a.target,
        json(&a.before),
        json(&a.after),
        a.request_id
    ])?;
    let seq = conn.last_insert_rowid();
    // Sequence numbers only grow, so this keeps at most the newest AUDIT_KEPT (through the
    // primary key: nothing is scanned when there is nothing to prune).
    conn.prepare_cached("DELETE FROM audit_log WHERE seq <= ?1")?.execute([seq - AUDIT_KEPT])?;
    Ok(AuditRecord {
        id,
        seq,
        at,
        actor: a.actor,
        client_ip: a.client_ip,
        action: a.action,
        target: a.target,
        before: a.before,
        after: a.after,
        request_id: a.request_id,
    })
}

#[async_trait]
impl crate::AuditStore for SqliteStore {
    async fn record_audit(&self, record: NewAuditRecord) -> Result<AuditRecord, StoreError> {
        self.writer.write(move |conn| insert(conn, record)).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let filter = filter.clone();
        self.read(move |conn, _| {
            let mut sql = String::from(
                "SELECT seq, id, at, actor_kind, actor_name, actor_key_prefix, client_ip, action, target, before_json, after_json, request_id \
                 FROM audit_log WHERE 1 = 1",
            );
            let mut args: Vec<Sql> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, v: Sql| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            match filter.action_match() {
                Some(ActionMatch::Exact(a)) => arg(&mut sql, " AND action = ?", Sql::Text(a)),
                Some(ActionMatch::Range(lo, hi)) => {
                    arg(&mut sql, " AND action >= ?", Sql::Text(lo));
                    arg(&mut sql, " AND action < ?", Sql::Text(hi));
                }
                None => {}
            }
            if let Some(t) = &filter.target {
                arg(&mut sql, " AND target = ?", Sql::Text(t.clone()));
            }
            if let Some(since) = filter.since {
                arg(&mut sql, " AND at >= ?", Sql::Text(ts(since)));
            }
            if let Some(seq) = filter.before_seq {
                arg(&mut sql, " AND seq < ?", Sql::Integer(seq));
            }
            let limit = filter.page_size();
            arg(&mut sql, " ORDER BY seq DESC LIMIT +?", Sql::Integer(limit + 1));
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                ))
            })?;
            let mut items = Vec::new();
            for row in rows {
                let (seq, id, at, kind, name, prefix, client_ip, action, target, before, after, request_id) = row?;
                items.push(AuditRecord {
                    id,
                    seq,
                    at: parse_ts(&at)?,
                    actor: AuditActor::from_columns(&kind, name, prefix).map_err(corrupt("audit actor"))?,
                    client_ip,
                    action,
                    target,
                    before: parse_json(before)?,
                    after: parse_json(after)?,
                    request_id,
                });
            }
            Ok(page_of(items, limit))
        })
        .await
    }
}
