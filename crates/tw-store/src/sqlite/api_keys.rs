//! API keys (hashes only).

use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::api_key::{ApiKeyRecord, Scope};
use crate::rows::corrupt;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

#[async_trait]
impl crate::ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: Uuid::now_v7().to_string(),
            name: name.to_string(),
            prefix: prefix.to_string(),
            scope,
            created_at: Utc::now(),
        };
        let r = record.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![r.id, r.name, r.prefix, &hash[..], r.scope.as_str(), ts(r.created_at)],
                )?;
                Ok(())
            })
            .await?;
        Ok(record)
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |conn, _| {
            let row = conn
                .query_row("SELECT id, name, prefix, scope, created_at FROM api_keys WHERE hash = ?1 AND revoked = 0", [&hash[..]], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(id, name, prefix, scope, created_at)| {
                Ok(ApiKeyRecord { id, name, prefix, scope: scope.parse().map_err(corrupt("scope"))?, created_at: parse_ts(&created_at)? })
            })
            .transpose()
        })
        .await
    }
}
