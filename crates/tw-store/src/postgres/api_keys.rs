//! API keys (hashes only), with expiry, revocation and last use.

use super::{PgStore, execute, query, query_opt};
use crate::StoreError;
use crate::api_key::{ApiKeyRecord, ApiKeySpec};
use crate::audit::NewAuditRecord;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

const COLUMNS: &str = "id, name, prefix, scope, created_at, expires_at, revoked_at, last_used_at";

fn decode(r: &Row) -> Result<ApiKeyRecord, StoreError> {
    let scope: String = r.get(3);
    Ok(ApiKeyRecord {
        id: r.get(0),
        name: r.get(1),
        prefix: r.get(2),
        scope: scope.parse().map_err(crate::rows::corrupt("scope"))?,
        created_at: r.get(4),
        expires_at: r.get(5),
        revoked_at: r.get(6),
        last_used_at: r.get(7),
    })
}

#[async_trait]
impl crate::ApiKeyStore for PgStore {
    async fn add_api_key(&self, spec: ApiKeySpec, audit: Option<NewAuditRecord>) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord { name: super::pg_text(&spec.name), ..spec.record() };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        execute(
            &tx,
            "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&record.id, &record.name, &record.prefix, &&spec.hash[..], &record.scope.as_str(), &record.created_at, &record.expires_at],
        )
        .await?;
        if let Some(a) = audit {
            super::audit::insert(&tx, a).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1 AND NOT revoked");
        query_opt(&c, &sql, &[&&hash[..]]).await?.as_ref().map(decode).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        query(&c, &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"), &[]).await?.iter().map(decode).collect()
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>, audit: Option<NewAuditRecord>) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = execute(&tx, "UPDATE api_keys SET revoked = TRUE, revoked_at = $2 WHERE id = $1 AND NOT revoked", &[&id, &at]).await?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(a) = audit {
            super::audit::insert(&tx, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn record_api_key_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = used.into_iter().unzip();
        let c = self.client().await?;
        // One statement for the whole set; a time older than the stored one (another instance
        // saw a later use) is left alone.
        execute(
            &c,
            "UPDATE api_keys k SET last_used_at = u.at FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at) \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
            &[&ids, &times],
        )
        .await?;
        Ok(())
    }
}
