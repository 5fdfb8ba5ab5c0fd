//! Sources: settings, secrets encrypted with the master key, rotation, the config file's sources.

use super::{SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::MasterKey;
use crate::StoreError;
use crate::model::*;
use crate::rows::corrupt;
use crate::rows::{SETTINGS_COLUMNS, SOURCE_COLUMNS, SettingsValues, SourceRow, settings_placeholders};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use tw_core::{Secret, SourceName};

fn source_row(r: &Row<'_>) -> Result<SourceRow, StoreError> {
    Ok(SourceRow {
        name: r.get(0)?,
        secret_enc: r.get(1)?,
        previous_secret_enc: r.get(2)?,
        previous_secret_expires_at: parse_opt_ts(r.get(3)?)?,
        enabled: r.get(4)?,
        auto_triage: r.get(5)?,
        playbook: r.get(6)?,
        format: r.get(7)?,
        mode: r.get(8)?,
        severity_mapping: r.get(9)?,
        timestamp_tolerance_secs: r.get(10)?,
        max_body_bytes: r.get(11)?,
        managed_by_config: r.get(12)?,
        created_at: parse_ts(&r.get::<_, String>(13)?)?,
        updated_at: parse_ts(&r.get::<_, String>(14)?)?,
        secret_rotated_at: parse_opt_ts(r.get(15)?)?,
        last_delivery_at: parse_opt_ts(r.get(16)?)?,
        delivery_count: r.get(17)?,
        error_count: r.get(18)?,
        rate_limit_per_second: r.get(19)?,
        rate_limit_burst: r.get(20)?,
        verification: r.get(21)?,
        allowed_ips: r.get(22)?,
        mapping: r.get(23)?,
    })
}

pub(super) fn load_source(conn: &Connection, key: &MasterKey, name: &str) -> Result<Option<SourceRecord>, StoreError> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([name])?;
    match rows.next()? {
        Some(r) => source_row(r)?.decode(key).map(Some),
        None => Ok(None),
    }
}

impl SettingsValues {
    fn sqlite_params(&self) -> [&dyn rusqlite::ToSql; SettingsValues::COUNT] {
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

fn write_settings(conn: &Connection, name: &str, s: &SourceSettings, now: &str) -> Result<(), StoreError> {
    let v = SettingsValues::from(s);
    let sql = format!(
        "UPDATE sources SET ({SETTINGS_COLUMNS}, updated_at) = ({}) WHERE name = ?{}",
        settings_placeholders('?', 1).join(", "),
        SettingsValues::COUNT + 2
    );
    let rest: [&dyn rusqlite::ToSql; 2] = [&now, &name];
    conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(v.sqlite_params().into_iter().chain(rest)))?;
    Ok(())
}

fn insert_source(conn: &Connection, key: &MasterKey, new: &NewSource, managed: bool, now: &str) -> Result<(), StoreError> {
    let enc = key.encrypt(new.name.as_str(), &new.secret)?;
    let v = SettingsValues::from(&new.settings);
    let sql = format!(
        "INSERT INTO sources ({SETTINGS_COLUMNS}, name, secret_enc, managed_by_config, created_at, updated_at) \
         VALUES ({}, ?{n})",
        settings_placeholders('?', 4).join(", "),
        n = SettingsValues::COUNT + 4
    );
    let rest: [&dyn rusqlite::ToSql; 4] = [&new.name.as_str(), &enc, &managed, &now];
    conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(v.sqlite_params().into_iter().chain(rest)))?;
    Ok(())
}

/// Tells every process's source cache that sources changed (same transaction as the change).
fn bump_sources_version(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE store_counters SET value = value + 1 WHERE name = 'sources_version'")?.execute([])?;
    Ok(())
}

#[async_trait]
impl crate::SourceStore for SqliteStore {
    async fn create_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        self.writer
            .write(move |conn| {
                bump_sources_version(conn)?;
                let now = ts(Utc::now());
                match insert_source(conn, &key, &new, false, &now) {
                    Err(StoreError::UniqueViolation(_)) => {
                        return Err(StoreError::SourceExists(new.name.to_string()));
                    }
                    other => other?,
                }
                load_source(conn, &key, new.name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(new.name.to_string()))
            })
            .await
    }

    async fn upsert_config_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        self.writer
            .write(move |conn| {
                bump_sources_version(conn)?;
                let now = ts(Utc::now());
                let name = new.name.as_str();
                match load_source(conn, &key, name)? {
                    None => insert_source(conn, &key, &new, true, &now)?,
                    Some(old) => {
                        write_settings(conn, name, &new.settings, &now)?;
                        conn.execute("UPDATE sources SET managed_by_config = 1 WHERE name = ?1", [name])?;
                        if old.secret != new.secret {
                            // The config file changed the secret: the old one keeps its grace.
                            let enc = key.encrypt(name, &new.secret)?;
                            let old_enc = key.encrypt(name, &old.secret)?;
                            let until = Utc::now() + chrono::Duration::hours(24);
                            conn.execute(
                                "UPDATE sources SET secret_enc = ?2, previous_secret_enc = ?3, previous_secret_expires_at = ?4, \
                                 secret_rotated_at = ?5 WHERE name = ?1",
                                params![name, enc, old_enc, ts(until), now],
                            )?;
                        }
                    }
                }
                load_source(conn, &key, name)?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))
            })
            .await
    }

    async fn release_config_sources(&self, keep: &[SourceName]) -> Result<Vec<String>, StoreError> {
        let keep = serde_json::to_string(&keep.iter().map(SourceName::as_str).collect::<Vec<_>>()).map_err(corrupt("names"))?;
        self.writer
            .write(move |conn| {
                let names = conn
                    .prepare(
                        "UPDATE sources SET managed_by_config = 0 WHERE managed_by_config = 1 \
                         AND name NOT IN (SELECT value FROM json_each(?1)) RETURNING name",
                    )?
                    .query_map([keep], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                if !names.is_empty() {
                    bump_sources_version(conn)?;
                }
                Ok(names)
            })
            .await
    }

    async fn get_source(&self, name: &SourceName) -> Result<Option<SourceRecord>, StoreError> {
        let name = name.clone();
        self.read(move |conn, key| load_source(conn, key, name.as_str())).await
    }

    async fn list_sources(&self) -> Result<Vec<SourceRecord>, StoreError> {
        self.read(move |conn, key| {
            let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name");
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(source_row(r)?.decode(key)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_source(&self, name: &SourceName, patch: SourcePatch) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        let name = name.clone();
        self.writer
            .write(move |conn| {
                bump_sources_version(conn)?;
                let now = ts(Utc::now());
                let mut current = load_source(conn, &key, name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))?;
                patch.apply(&mut current.settings);
                write_settings(conn, name.as_str(), &current.settings, &now)?;
                if let Some(secret) = &patch.secret {
                    let enc = key.encrypt(name.as_str(), secret)?;
                    conn.execute(
                        "UPDATE sources SET secret_enc = ?2, previous_secret_enc = NULL, previous_secret_expires_at = NULL, \
                         secret_rotated_at = ?3 WHERE name = ?1",
                        params![name.as_str(), enc, now],
                    )?;
                }
                load_source(conn, &key, name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))
            })
            .await
    }

    async fn delete_source(&self, name: &SourceName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.writer
            .write(move |conn| {
                bump_sources_version(conn)?;
                Ok(conn.execute("DELETE FROM sources WHERE name = ?1", [name.as_str()])? > 0)
            })
            .await
    }

    async fn rotate_secret(&self, name: &SourceName, new_secret: Secret, grace_until: DateTime<Utc>) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        let name = name.clone();
        self.writer
            .write(move |conn| {
                bump_sources_version(conn)?;
                let n = name.as_str();
                let current = load_source(conn, &key, n)?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))?;
                let now = Utc::now();
                conn.execute(
                    "UPDATE sources SET secret_enc = ?2, previous_secret_enc = ?3, previous_secret_expires_at = ?4, \
                     secret_rotated_at = ?5, updated_at = ?5 WHERE name = ?1",
                    params![n, key.encrypt(n, &new_secret)?, key.encrypt(n, &current.secret)?, ts(grace_until), ts(now)],
                )?;
                load_source(conn, &key, n)?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))
            })
            .await
    }

    async fn sources_version(&self) -> Result<i64, StoreError> {
        self.read(|conn, _| Ok(conn.query_row("SELECT value FROM store_counters WHERE name = 'sources_version'", [], |r| r.get(0))?)).await
    }
}
