//! User playbooks.

use super::{PgStore, execute, query, query_opt};
use crate::StoreError;
use crate::model::*;
use async_trait::async_trait;
use tokio_postgres::Row;

fn playbook_from_row(r: &Row) -> StoredPlaybook {
    StoredPlaybook { name: r.get(0), yaml: r.get(1), origin: r.get(2), created_at: r.get(3), updated_at: r.get(4) }
}

#[async_trait]
impl crate::PlaybookStore for PgStore {
    async fn put_playbook(&self, name: &str, yaml: &str, origin: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        // xmax = 0 only on a row this statement inserted.
        let row = super::query_one(
            &c,
            "INSERT INTO playbooks (name, yaml, origin, created_at, updated_at) VALUES ($1, $2, $3, now(), now()) \
             ON CONFLICT (name) DO UPDATE SET yaml = EXCLUDED.yaml, origin = EXCLUDED.origin, updated_at = EXCLUDED.updated_at \
             RETURNING (xmax = 0)",
            &[&name, &super::pg_text(yaml), &origin],
        )
        .await?;
        Ok(row.get(0))
    }

    async fn get_playbook(&self, name: &str) -> Result<Option<StoredPlaybook>, StoreError> {
        let c = self.client().await?;
        let row = query_opt(&c, "SELECT name, yaml, origin, created_at, updated_at FROM playbooks WHERE name = $1", &[&name]).await?;
        Ok(row.as_ref().map(playbook_from_row))
    }

    async fn list_playbooks(&self) -> Result<Vec<StoredPlaybook>, StoreError> {
        let c = self.client().await?;
        Ok(query(&c, "SELECT name, yaml, origin, created_at, updated_at FROM playbooks ORDER BY name", &[])
            .await?
            .iter()
            .map(playbook_from_row)
            .collect())
    }

    async fn delete_playbook(&self, name: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Locks the sources naming it, so none starts using it while it goes.
        let users: Vec<String> = query(&tx, "SELECT name FROM sources WHERE playbook = $1 ORDER BY name FOR SHARE", &[&name])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !users.is_empty() {
            return Err(StoreError::PlaybookInUse { name: name.to_string(), sources: users });
        }
        let n = execute(&tx, "DELETE FROM playbooks WHERE name = $1", &[&name]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
