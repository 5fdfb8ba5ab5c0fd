//! Sources: settings, secrets encrypted with the master key, rotation, the config file's sources.
//! Every change bumps `sources_version` in its transaction, so every process's cache notices.

use super::{PgStore, execute, query, query_one, query_opt};
use crate::model::*;
use crate::rows::{SETTINGS_COLUMNS, SOURCE_COLUMNS, SettingsValues, SourceRow, settings_placeholders};
use crate::{MasterKey, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tw_core::{Secret, SourceName};

fn source_row(r: &Row) -> SourceRow {
    SourceRow {
        name: r.get(0),
        secret_enc: r.get(1),
        previous_secret_enc: r.get(2),
        previous_secret_expires_at: r.get(3),
        enabled: r.get(4),
        auto_triage: r.get(5),
        playbook: r.get(6),
        format: r.get(7),
        mode: r.get(8),
        severity_mapping: r.get(9),
        timestamp_tolerance_secs: r.get(10),
        max_body_bytes: r.get(11),
        managed_by_config: r.get(12),
        created_at: r.get(13),
        updated_at: r.get(14),
        secret_rotated_at: r.get(15),
        last_delivery_at: r.get(16),
        delivery_count: r.get(17),
        error_count: r.get(18),
        rate_limit_per_second: r.get(19),
        rate_limit_burst: r.get(20),
        verification: r.get(21),
        allowed_ips: r.get(22),
        mapping: r.get(23),
    }
}

async fn load_source(c: &impl GenericClient, key: &MasterKey, name: &str) -> Result<Option<SourceRecord>, StoreError> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = $1");
    query_opt(c, &sql, &[&name]).await?.map(|r| source_row(&r).decode(key)).transpose()
}

/// Locks and loads a source for a change, or [`StoreError::SourceNotFound`].
async fn lock_source(c: &impl GenericClient, key: &MasterKey, name: &str) -> Result<SourceRecord, StoreError> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = $1 FOR UPDATE");
    match query_opt(c, &sql, &[&name]).await? {
        Some(r) => source_row(&r).decode(key),
        None => Err(StoreError::SourceNotFound(name.to_string())),
    }
}

impl SettingsValues {
    fn pg_params(&self) -> [&(dyn ToSql + Sync); SettingsValues::COUNT] {
        [
            &self.enabled,
            &self.auto_triage,
            &self.playbook,
            &self.format,
            &self.mode,
            &self.severity_mapping,
            &self.timestamp_tolerance_secs,
            &self.max_body_bytes,
            &self.rate_limit_per_second,
            &self.rate_limit_burst,
            &self.verification,
            &self.allowed_ips,
            &self.mapping,
        ]
    }
}

async fn write_settings(c: &impl GenericClient, name: &str, s: &SourceSettings, now: DateTime<Utc>) -> Result<(), StoreError> {
    let v = SettingsValues::from(s);
    let sql = format!(
        "UPDATE sources SET ({SETTINGS_COLUMNS}, updated_at) = ({}) WHERE name = ${}",
        settings_placeholders('$', 1).join(", "),
        SettingsValues::COUNT + 2
    );
    let params: Vec<&(dyn ToSql + Sync)> = v.pg_params().into_iter().chain([&now as &(dyn ToSql + Sync), &name]).collect();
    execute(c, &sql, &params).await?;
    Ok(())
}

async fn insert_source(
    c: &impl GenericClient,
    key: &MasterKey,
    new: &NewSource,
    managed: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let enc = key.encrypt(new.name.as_str(), &new.secret)?;
    let v = SettingsValues::from(&new.settings);
    let sql = format!(
        "INSERT INTO sources ({SETTINGS_COLUMNS}, name, secret_enc, managed_by_config, created_at, updated_at) \
         VALUES ({}, ${n})",
        settings_placeholders('$', 4).join(", "),
        n = SettingsValues::COUNT + 4
    );
    let name = new.name.as_str();
    let params: Vec<&(dyn ToSql + Sync)> = v.pg_params().into_iter().chain([&name as &(dyn ToSql + Sync), &enc, &managed, &now]).collect();
    execute(c, &sql, &params).await?;
    Ok(())
}

/// Tells every process's source cache that sources changed (same transaction as the change).
async fn bump_sources_version(c: &impl GenericClient) -> Result<(), StoreError> {
    execute(c, "UPDATE store_counters SET value = value + 1 WHERE name = 'sources_version'", &[]).await?;
    Ok(())
}

#[async_trait]
impl crate::SourceStore for PgStore {
    async fn create_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        match insert_source(&tx, &self.key, &new, false, Utc::now()).await {
            Err(StoreError::UniqueViolation(_)) => return Err(StoreError::SourceExists(new.name.to_string())),
            other => other?,
        }
        bump_sources_version(&tx).await?;
        let rec = load_source(&tx, &self.key, new.name.as_str()).await?.ok_or_else(|| StoreError::SourceNotFound(new.name.to_string()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn upsert_config_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let name = new.name.as_str();
        let now = Utc::now();
        // Instances starting together load the same file: the first inserts, the rest update.
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtext('tw-source:' || $1))", &[&name]).await?;
        match load_source(&tx, &self.key, name).await? {
            None => insert_source(&tx, &self.key, &new, true, now).await?,
            Some(old) => {
                write_settings(&tx, name, &new.settings, now).await?;
                execute(&tx, "UPDATE sources SET managed_by_config = TRUE WHERE name = $1", &[&name]).await?;
                if old.secret != new.secret {
                    // The config file changed the secret: the old one keeps its grace.
                    let enc = self.key.encrypt(name, &new.secret)?;
                    let old_enc = self.key.encrypt(name, &old.secret)?;
                    let until = now + chrono::Duration::hours(24);
                    execute(
                        &tx,
                        "UPDATE sources SET secret_enc = $2, previous_secret_enc = $3, previous_secret_expires_at = $4, \
                         secret_rotated_at = $5 WHERE name = $1",
                        &[&name, &enc, &old_enc, &until, &now],
                    )
                    .await?;
                }
            }
        }
        bump_sources_version(&tx).await?;
        let rec = load_source(&tx, &self.key, name).await?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn release_config_sources(&self, keep: &[SourceName]) -> Result<Vec<String>, StoreError> {
        let keep: Vec<&str> = keep.iter().map(SourceName::as_str).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = query(
            &tx,
            "UPDATE sources SET managed_by_config = FALSE WHERE managed_by_config AND NOT (name = ANY($1)) RETURNING name",
            &[&keep],
        )
        .await?;
        if !rows.is_empty() {
            bump_sources_version(&tx).await?;
        }
        tx.commit().await?;
        let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        names.sort();
        Ok(names)
    }

    async fn get_source(&self, name: &SourceName) -> Result<Option<SourceRecord>, StoreError> {
        let c = self.client().await?;
        load_source(&c, &self.key, name.as_str()).await
    }

    async fn list_sources(&self) -> Result<Vec<SourceRecord>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name");
        query(&c, &sql, &[]).await?.iter().map(|r| source_row(r).decode(&self.key)).collect()
    }

    async fn update_source(&self, name: &SourceName, patch: SourcePatch) -> Result<SourceRecord, StoreError> {
        let n = name.as_str();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = Utc::now();
        let mut current = lock_source(&tx, &self.key, n).await?;
        patch.apply(&mut current.settings);
        write_settings(&tx, n, &current.settings, now).await?;
        if let Some(secret) = &patch.secret {
            let enc = self.key.encrypt(n, secret)?;
            execute(
                &tx,
                "UPDATE sources SET secret_enc = $2, previous_secret_enc = NULL, previous_secret_expires_at = NULL, \
                 secret_rotated_at = $3 WHERE name = $1",
                &[&n, &enc, &now],
            )
            .await?;
        }
        bump_sources_version(&tx).await?;
        let rec = load_source(&tx, &self.key, n).await?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn delete_source(&self, name: &SourceName) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = execute(&tx, "DELETE FROM sources WHERE name = $1", &[&name.as_str()]).await?;
        bump_sources_version(&tx).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn rotate_secret(&self, name: &SourceName, new_secret: Secret, grace_until: DateTime<Utc>) -> Result<SourceRecord, StoreError> {
        let n = name.as_str();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let current = lock_source(&tx, &self.key, n).await?;
        let now = Utc::now();
        execute(
            &tx,
            "UPDATE sources SET secret_enc = $2, previous_secret_enc = $3, previous_secret_expires_at = $4, \
             secret_rotated_at = $5, updated_at = $5 WHERE name = $1",
            &[&n, &self.key.encrypt(n, &new_secret)?, &self.key.encrypt(n, &current.secret)?, &grace_until, &now],
        )
        .await?;
        bump_sources_version(&tx).await?;
        let rec = load_source(&tx, &self.key, n).await?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn sources_version(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(query_one(&c, "SELECT value FROM store_counters WHERE name = 'sources_version'", &[]).await?.get(0))
    }
}
