//! API keys (hashes only), with expiry, revocation and last use.

use super::{SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::StoreError;
use crate::api_key::{ApiKeyRecord, ApiKeySpec};
use crate::audit::NewAuditRecord;
use crate::rows::corrupt;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

const COLUMNS: &str = "id, name, prefix, scope, created_at, expires_at, revoked_at, last_used_at";

type KeyRow = (String, String, String, String, String, Option<String>, Option<String>, Option<String>);

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn decode((id, name, prefix, scope, created_at, expires_at, revoked_at, last_used_at): KeyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id,
        name,
        prefix,
        scope: scope.parse().map_err(corrupt("scope"))?,
        created_at: parse_ts(&created_at)?,
        expires_at: parse_opt_ts(expires_at)?,
        revoked_at: parse_opt_ts(revoked_at)?,
        last_used_at: parse_opt_ts(last_used_at)?,
    })
}

#[async_trait]
impl crate::ApiKeyStore for SqliteStore {
    async fn add_api_key(&self, spec: ApiKeySpec, audit: Option<NewAuditRecord>) -> Result<ApiKeyRecord, StoreError> {
        let record = spec.record();
        let (r, hash) = (record.clone(), spec.hash);
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![r.id, r.name, r.prefix, &hash[..], r.scope.as_str(), ts(r.created_at), r.expires_at.map(ts)],
                )?;
                if let Some(a) = audit {
                    super::audit::insert(conn, a)?;
                }
                Ok(())
            })
            .await?;
        Ok(record)
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |conn, _| {
            let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1 AND revoked = 0");
            conn.prepare_cached(&sql)?.query_row([&hash[..]], key_row).optional()?.map(decode).transpose()
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(move |conn, _| {
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"))?;
            let rows = stmt.query_map([], key_row)?;
            rows.map(|r| decode(r?)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>, audit: Option<NewAuditRecord>) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.writer
            .write(move |conn| {
                let n =
                    conn.execute("UPDATE api_keys SET revoked = 1, revoked_at = ?2 WHERE id = ?1 AND revoked = 0", params![id, ts(at)])?;
                if n == 0 {
                    return Ok(false);
                }
                if let Some(a) = audit {
                    super::audit::insert(conn, a)?;
                }
                Ok(true)
            })
            .await
    }

    async fn record_api_key_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.writer
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                )?;
                for (id, at) in &used {
                    stmt.execute(params![id, ts(*at)])?;
                }
                Ok(())
            })
            .await
    }
}
