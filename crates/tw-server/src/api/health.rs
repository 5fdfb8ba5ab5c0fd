//! Liveness and readiness: `GET /api/health`, `GET /api/ready`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `ok`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// The server's version.
    pub version: String,
}

/// Ready or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

/// `not_ready`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotReadyCode {
    NotReady,
}

/// Why the server is not ready: every failing check, in one message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotReady {
    #[schema(inline)]
    pub code: NotReadyCode,
    pub message: String,
}

/// `GET /api/ready`: every check, and on 503 the failing ones in `error`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: ReadinessStatus,
    /// store, store_writes (the store can commit: false while the disk is full), migrations,
    /// queue_workers, triage_workers.
    pub checks: BTreeMap<String, super::Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<NotReady>,
}
