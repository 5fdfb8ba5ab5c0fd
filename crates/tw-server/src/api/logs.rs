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

/// Which server-sent event of `GET /api/logs?follow=true` this is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogEventKind {
    /// `data` is one log record's JSON ([`LogRecord`]).
    Message,
    /// The last event: `data` says why the stream ended (`max_lifetime`, `key_refused`, `stopping`).
    End,
}

/// One server-sent event of `GET /api/logs?follow=true`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogEvent {
    /// Absent on records (`message`, the default event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<LogEventKind>,
    /// A log record's JSON, or the reason the stream ended.
    pub data: String,
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
    #[param(min_length = 1)]
    pub filter: Option<String>,
    /// The lowest level.
    #[param(value_type = Option<LogLevel>, inline)]
    pub level: Option<String>,
    /// Only records newer than this: 30s, 10m, 2h, 1d, 2w.
    #[param(pattern = "^[0-9]{1,9}[smhdw]$")]
    pub since: Option<String>,
    /// Only records about this source.
    #[param(min_length = 1)]
    pub source: Option<String>,
    /// How many recent records (default 100, at most 10000).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 10000)]
    pub tail: Option<String>,
    /// `true`: answer with server-sent events, the tail then new records as they come.
    #[param(value_type = Option<bool>)]
    pub follow: Option<String>,
}
