//! API keys (hashes only).

use super::{PgStore, execute, query_opt};
use crate::StoreError;
use crate::api_key::{ApiKeyRecord, Scope};
use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

#[async_trait]
impl crate::ApiKeyStore for PgStore {
    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: Uuid::now_v7().to_string(),
            name: name.to_string(),
            prefix: prefix.to_string(),
            scope,
            created_at: Utc::now(),
        };
        let c = self.client().await?;
        execute(
            &c,
            "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&record.id, &super::pg_text(&record.name), &record.prefix, &&hash[..], &record.scope.as_str(), &record.created_at],
        )
        .await?;
        Ok(record)
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let row = query_opt(&c, "SELECT id, name, prefix, scope, created_at FROM api_keys WHERE hash = $1 AND NOT revoked", &[&&hash[..]])
            .await?;
        row.map(|r| {
            let scope: String = r.get(3);
            Ok(ApiKeyRecord {
                id: r.get(0),
                name: r.get(1),
                prefix: r.get(2),
                scope: scope.parse().map_err(crate::rows::corrupt("scope"))?,
                created_at: r.get(4),
            })
        })
        .transpose()
    }
}
