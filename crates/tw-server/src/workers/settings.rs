//! The workers' settings, which [`crate::state::AppState`] carries. A file of their own, importing
//! nothing of the server, so the state does not import the workers that import the state.

use std::time::Duration;

/// How this process runs triage: its workers, the attempts a job gets, and how long a stop waits
/// for a running job.
#[derive(Debug, Clone, Copy)]
pub struct TriageSettings {
    pub workers: usize,
    pub max_attempts: u32,
    /// How long a stopping worker lets its running job finish before releasing it.
    pub grace: Duration,
}
