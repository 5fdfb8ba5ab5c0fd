//! Payload formats: detect which vendor sent a JSON payload and normalize it into an [`Alert`].
//!
//! Normalizing never fails on a JSON object: a payload that matches no known format is read as
//! generic with whatever title, severity, time, id and entities can be found in it.

use crate::{Alert, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub mod crowdstrike;
pub mod defender;
pub mod detect;
pub mod elastic;
pub mod entities;
pub mod generic;
pub mod mapping;
pub mod sentinel;
pub mod sentinelone;
pub mod splunk;

pub use detect::detect;
pub use mapping::{Mapping, MappingError, MappingProblem, normalize_mapped};

/// A payload format we understand.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The spec's generic format (and the fallback for unknown payloads).
    Generic,
    /// Microsoft Defender for Office 365 / Microsoft 365 Defender.
    Defender,
    /// CrowdStrike Falcon detection events.
    Crowdstrike,
    /// Splunk webhook alert action.
    Splunk,
    /// SentinelOne threats.
    Sentinelone,
    /// Microsoft Sentinel incidents and alerts (playbook triggers).
    Sentinel,
    /// Elastic Security alerts sent by the Kibana webhook connector.
    Elastic,
}

impl Format {
    /// Every format, in the order they are listed to operators.
    pub const ALL: [Format; 7] =
        [Format::Generic, Format::Defender, Format::Crowdstrike, Format::Splunk, Format::Sentinelone, Format::Sentinel, Format::Elastic];

    /// The serialized name (`"sentinelone"`), as in a source's `format` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Generic => "generic",
            Format::Defender => "defender",
            Format::Crowdstrike => "crowdstrike",
            Format::Splunk => "splunk",
            Format::Sentinelone => "sentinelone",
            Format::Sentinel => "sentinel",
            Format::Elastic => "elastic",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| {
            format!("unknown format '{s}' (expected generic, defender, crowdstrike, splunk, sentinelone, sentinel or elastic)")
        })
    }
}

/// Why a payload could not be normalized (it is then dead-lettered, never dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("payload must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

/// Normalizes a parsed payload. `pinned` forces a format (a source's `format` setting); otherwise
/// the format is detected. `severity_mapping` (the source's, keys compared case-insensitively with
/// the vendor's own severity value) wins over the format's default mapping.
pub fn normalize(payload: &Value, pinned: Option<Format>, severity_mapping: &BTreeMap<String, Severity>) -> Result<Alert, NormalizeError> {
    let obj = payload.as_object().ok_or(NormalizeError::NotAnObject(json_type(payload)))?;
    let format = pinned.unwrap_or_else(|| detect(obj));
    let mut alert = match format {
        Format::Generic => generic::normalize(obj),
        Format::Defender => defender::normalize(obj),
        Format::Crowdstrike => crowdstrike::normalize(obj),
        Format::Splunk => splunk::normalize(obj),
        Format::Sentinelone => sentinelone::normalize(obj),
        Format::Sentinel => sentinel::normalize(obj),
        Format::Elastic => elastic::normalize(obj),
    };
    alert.format = format;
    apply_severity_mapping(&mut alert, severity_mapping);
    Ok(alert)
}

/// Applies a source's `severity_mapping` to the vendor's own severity value.
pub fn apply_severity_mapping(alert: &mut Alert, mapping: &BTreeMap<String, Severity>) {
    let Some(vendor) = alert.vendor_severity.as_deref() else { return };
    let vendor = vendor.trim();
    if let Some((_, ours)) = mapping.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(vendor)) {
        alert.severity = *ours;
    }
}

/// The JSON type's name, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shorthand used by the format modules.
pub(crate) type Object = Map<String, Value>;
