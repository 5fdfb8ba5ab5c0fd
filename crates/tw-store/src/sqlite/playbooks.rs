//! User playbooks.

use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::model::*;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};

#[async_trait]
impl crate::PlaybookStore for SqliteStore {
    async fn put_playbook(&self, name: &str, yaml: &str, origin: &str) -> Result<bool, StoreError> {
        let (name, yaml, origin) = (name.to_string(), yaml.to_string(), origin.to_string());
        self.writer
            .write(move |conn| {
                let now = ts(Utc::now());
                let existed: bool = conn.query_row("SELECT EXISTS(SELECT 1 FROM playbooks WHERE name = ?1)", [&name], |r| r.get(0))?;
                conn.execute(
                    "INSERT INTO playbooks (name, yaml, origin, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
                     ON CONFLICT (name) DO UPDATE SET yaml = excluded.yaml, origin = excluded.origin, updated_at = excluded.updated_at",
                    params![name, yaml, origin, now],
                )?;
                Ok(!existed)
            })
            .await
    }

    async fn get_playbook(&self, name: &str) -> Result<Option<StoredPlaybook>, StoreError> {
        let name = name.to_string();
        self.read(move |conn, _| {
            let row = conn
                .query_row("SELECT name, yaml, origin, created_at, updated_at FROM playbooks WHERE name = ?1", [&name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(name, yaml, origin, c, u)| {
                Ok(StoredPlaybook { name, yaml, origin, created_at: parse_ts(&c)?, updated_at: parse_ts(&u)? })
            })
            .transpose()
        })
        .await
    }

    async fn list_playbooks(&self) -> Result<Vec<StoredPlaybook>, StoreError> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare("SELECT name, yaml, origin, created_at, updated_at FROM playbooks ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, yaml, origin, c, u) = row?;
                out.push(StoredPlaybook { name, yaml, origin, created_at: parse_ts(&c)?, updated_at: parse_ts(&u)? });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_playbook(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                let users: Vec<String> = conn
                    .prepare("SELECT name FROM sources WHERE playbook = ?1 ORDER BY name")?
                    .query_map([&name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                if !users.is_empty() {
                    return Err(StoreError::PlaybookInUse { name, sources: users });
                }
                Ok(conn.execute("DELETE FROM playbooks WHERE name = ?1", [&name])? > 0)
            })
            .await
    }
}
