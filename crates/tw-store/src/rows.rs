//! Rows as both engines read them, before decoding: one decoder per record, whichever engine
//! read it.

use crate::model::{SourceRecord, SourceSettings};
use crate::{MasterKey, StoreError};
use chrono::{DateTime, Utc};
use tw_core::{Format, SourceMode, SourceName};

/// The `sources` columns, in the order [`SourceRow`] is read.
pub(crate) const SOURCE_COLUMNS: &str = "name, secret_enc, previous_secret_enc, previous_secret_expires_at, enabled, auto_triage, \
    playbook, format, mode, severity_mapping, timestamp_tolerance_secs, max_body_bytes, managed_by_config, created_at, \
    updated_at, secret_rotated_at, last_delivery_at, delivery_count, error_count";

/// A `sources` row with its secrets still encrypted.
pub(crate) struct SourceRow {
    pub name: String,
    pub secret_enc: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    pub format: Option<String>,
    pub mode: String,
    pub severity_mapping: String,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: i64,
    pub managed_by_config: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub delivery_count: i64,
    pub error_count: i64,
}

pub(crate) fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

impl SourceRow {
    /// Decrypts the secrets (bound to the source's name) and parses the settings.
    pub fn decode(self, key: &MasterKey) -> Result<SourceRecord, StoreError> {
        let name = SourceName::parse(&self.name).map_err(corrupt("source name"))?;
        let secret = key.decrypt(name.as_str(), &self.secret_enc)?;
        let previous_secret = match (self.previous_secret_enc, self.previous_secret_expires_at) {
            (Some(blob), Some(until)) => Some((key.decrypt(name.as_str(), &blob)?, until)),
            _ => None,
        };
        let settings = SourceSettings {
            enabled: self.enabled,
            auto_triage: self.auto_triage,
            playbook: self.playbook,
            format: self.format.as_deref().map(str::parse::<Format>).transpose().map_err(corrupt("format"))?,
            mode: self.mode.parse::<SourceMode>().map_err(corrupt("mode"))?,
            severity_mapping: serde_json::from_str(&self.severity_mapping).map_err(corrupt("severity_mapping"))?,
            timestamp_tolerance_secs: self.timestamp_tolerance_secs,
            max_body_bytes: self.max_body_bytes.max(0) as u64,
        };
        Ok(SourceRecord {
            secret_fingerprint: key.fingerprint(&secret),
            name,
            secret,
            previous_secret,
            settings,
            managed_by_config: self.managed_by_config,
            created_at: self.created_at,
            updated_at: self.updated_at,
            secret_rotated_at: self.secret_rotated_at,
            last_delivery_at: self.last_delivery_at,
            delivery_count: self.delivery_count.max(0) as u64,
            error_count: self.error_count.max(0) as u64,
        })
    }
}

/// How a source's severity mapping is stored.
pub(crate) fn mapping_json(s: &SourceSettings) -> String {
    serde_json::to_string(&s.severity_mapping).unwrap_or_else(|_| "{}".into())
}
