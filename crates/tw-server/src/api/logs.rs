//! This server's own log records: `GET /api/logs`.

use crate::logs::LogRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /api/logs` without `follow`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    /// Oldest first.
    pub data: Vec<LogRecord>,
}

/// A log level, the lowest shown.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level named exactly as the API spells it (lowercase).
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

/// Filters of `GET /api/logs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// A component (webhook, triage, store, api, auth) or free text.
    pub filter: Option<String>,
    /// The lowest level.
    #[param(value_type = Option<LogLevel>, inline)]
    pub level: Option<String>,
    /// Only records newer than this: 30s, 10m, 2h, 1d (at most 366d; more is a 422 naming `since`).
    #[param(pattern = "^[0-9]{1,9}[smhd]$")]
    pub since: Option<String>,
    /// Only records about this source.
    pub source: Option<String>,
    /// How many recent records (default 100, at most 10000).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 10000)]
    pub tail: Option<String>,
    /// `true`: answer with server-sent events, the tail then new records as they come.
    #[param(value_type = Option<bool>)]
    pub follow: Option<String>,
}
