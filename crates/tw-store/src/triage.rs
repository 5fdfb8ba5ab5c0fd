//! The rules of triage jobs, as pure transitions: what a claim or a completion does to a job and to
//! its incident. The engines only persist what these functions decide.
//!
//! - A job is claimed with its attempt counted; claimed after its last attempt (the worker that
//!   held it died), it fails as abandoned.
//! - A completion counts only for the attempt that was claimed, and only for a running job: a job
//!   finished or re-claimed meanwhile is left alone, so every job finishes once.
//! - A failure is retried at the worker's `retry_at` while attempts remain, else the job fails.
//! - Only the incident's latest job writes the incident's triage (engines make the incident's
//!   update conditional on [`crate::Incident`]'s latest job id): an old run finishing late must not
//!   overwrite a newer triage. A completed run moves the incident from `open` to `triaged` and
//!   applies the severity the playbook chose.

use crate::model::{IncidentStatus, TriageCompletion, TriageJob, TriageJobStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tw_core::Severity;
use tw_core::triage::TriageOutcome;

/// What an incident shows of its latest triage job: the incident's `triage` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TriageState {
    /// Waiting for a worker (new, or retrying after a failure).
    Pending {
        job_id: String,
        playbook: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
    },
    /// A worker is running it.
    Running { job_id: String, playbook: String, attempts: u32, started_at: Option<DateTime<Utc>> },
    /// The playbook ran: its verdict, score, findings, ... (the outcome's own fields, flattened).
    Completed {
        job_id: String,
        attempts: u32,
        started_at: Option<DateTime<Utc>>,
        completed_at: DateTime<Utc>,
        #[serde(flatten)]
        outcome: Box<TriageOutcome>,
    },
    /// It gave up.
    Failed {
        job_id: String,
        playbook: String,
        attempts: u32,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        started_at: Option<DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        completed_at: Option<DateTime<Utc>>,
    },
}

impl TriageState {
    /// A job just queued.
    pub fn queued(job_id: &str, playbook: &str) -> TriageState {
        TriageState::Pending { job_id: job_id.into(), playbook: playbook.into(), attempts: None, last_error: None, retry_at: None }
    }

    /// The JSON text stored on the incident, written straight from the state: through a
    /// `serde_json::Value` first, a completed run's 4 KiB (its trace) cost about 90,000 instructions
    /// to build the tree and as many again to free it, on the store's writer (callgrind of a
    /// triage drain, per job).
    pub fn to_text(&self) -> String {
        // Serializing these plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }

    /// [`TriageState::to_text`] as a value (what the tests read).
    #[cfg(test)]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.to_text()).unwrap_or_default()
    }
}

/// The job whose stored trace an incident's `triage` object lacks: a completed run stored since
/// traces are kept apart ([`JobTransition::trace`]). One stored earlier keeps its trace inline.
pub(crate) fn trace_to_fetch(triage: Option<&serde_json::Value>) -> Option<String> {
    let t = triage?.as_object()?;
    if t.get("status")?.as_str()? != "completed" {
        return None;
    }
    match t.get("trace") {
        Some(serde_json::Value::Array(steps)) if !steps.is_empty() => None,
        _ => t.get("job_id")?.as_str().map(str::to_string),
    }
}

/// Puts a stored trace (JSON text) back into an incident's `triage` object, for its detail.
pub(crate) fn put_trace(triage: Option<&mut serde_json::Value>, trace: &str) -> Result<(), crate::StoreError> {
    if let Some(serde_json::Value::Object(t)) = triage {
        let steps: serde_json::Value = serde_json::from_str(trace).map_err(|e| crate::StoreError::Corrupt(format!("triage trace: {e}")))?;
        t.insert("trace".into(), steps);
    }
    Ok(())
}

/// A listing's incidents carry their triage without its trace (the detail has it), whether it
/// was stored apart or, before, inline.
pub(crate) fn drop_trace(items: &mut [crate::model::Incident]) {
    for i in items {
        if let Some(serde_json::Value::Object(t)) = i.triage.as_mut() {
            t.remove("trace");
        }
    }
}

/// What to write on the incident, if this job is still its latest.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentTriageUpdate {
    pub triage: TriageState,
    /// Move the incident from `open` to this status (other statuses are left alone).
    pub status_from_open: Option<IncidentStatus>,
    /// The severity the playbook decided.
    pub severity: Option<Severity>,
}

/// A job's new state and what its incident shows.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTransition {
    pub status: TriageJobStatus,
    pub error: Option<String>,
    /// When the job may run again (a retry); `None` keeps it.
    pub run_after: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub incident: IncidentTriageUpdate,
    /// A completed run's step trace, as JSON text, stored apart from the incident (in
    /// `triage_traces`, by job): on the incident's row it made every listing page carry it (228 KB
    /// for 50 triaged incidents, against 39 KB) and every completion grow the row in place. The
    /// incident's state keeps an empty `trace`; its detail puts the stored one back.
    pub trace: Option<String>,
}

/// What a claim (which already counted the attempt) means for `job`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimDecision {
    /// Hand it to the worker; the incident shows it running.
    Run(TriageState),
    /// Claimed again after its last attempt was lost (a crash): give up on it.
    Abandon(JobTransition),
}

/// Decides a freshly claimed job's fate.
pub fn on_claim(job: &TriageJob, now: DateTime<Utc>) -> ClaimDecision {
    if job.attempts > job.max_attempts {
        let error = format!("abandoned after {} attempts (the worker stopped mid-run)", job.max_attempts);
        let triage = TriageState::Failed {
            job_id: job.job_id.clone(),
            playbook: job.playbook.clone(),
            attempts: job.max_attempts,
            error: error.clone(),
            started_at: None,
            completed_at: None,
        };
        return ClaimDecision::Abandon(JobTransition {
            status: TriageJobStatus::Failed,
            error: Some(error),
            run_after: None,
            completed_at: Some(now),
            incident: IncidentTriageUpdate { triage, status_from_open: None, severity: None },
            trace: None,
        });
    }
    ClaimDecision::Run(TriageState::Running {
        job_id: job.job_id.clone(),
        playbook: job.playbook.clone(),
        attempts: job.attempts,
        started_at: job.started_at,
    })
}

/// What finishing `job` with `completion` does, or `None` when the completion no longer counts
/// (the job is not running, or was re-claimed since `attempt`).
pub fn on_complete(job: &TriageJob, attempt: u32, completion: TriageCompletion, now: DateTime<Utc>) -> Option<JobTransition> {
    if job.status != TriageJobStatus::Running || job.attempts != attempt {
        return None;
    }
    let (job_id, playbook) = (job.job_id.clone(), job.playbook.clone());
    Some(match completion {
        TriageCompletion::Done { outcome, trace } => {
            let severity = outcome.severity;
            JobTransition {
                status: TriageJobStatus::Completed,
                error: None,
                run_after: None,
                completed_at: Some(now),
                incident: IncidentTriageUpdate {
                    triage: TriageState::Completed {
                        job_id,
                        attempts: job.attempts,
                        started_at: job.started_at,
                        completed_at: now,
                        outcome,
                    },
                    status_from_open: Some(IncidentStatus::Triaged),
                    severity,
                },
                trace: Some(trace),
            }
        }
        TriageCompletion::Failed { error, retry_at } => match retry_at.filter(|_| job.attempts < job.max_attempts) {
            Some(at) => JobTransition {
                status: TriageJobStatus::Pending,
                error: Some(error.clone()),
                run_after: Some(at),
                completed_at: None,
                incident: IncidentTriageUpdate {
                    triage: TriageState::Pending {
                        job_id,
                        playbook,
                        attempts: Some(job.attempts),
                        last_error: Some(error),
                        retry_at: Some(at),
                    },
                    status_from_open: None,
                    severity: None,
                },
                trace: None,
            },
            None => JobTransition {
                status: TriageJobStatus::Failed,
                error: Some(error.clone()),
                run_after: None,
                completed_at: Some(now),
                incident: IncidentTriageUpdate {
                    triage: TriageState::Failed {
                        job_id,
                        playbook,
                        attempts: job.attempts,
                        error,
                        started_at: job.started_at,
                        completed_at: Some(now),
                    },
                    status_from_open: None,
                    severity: None,
                },
                trace: None,
            },
        },
    })
}

/// What a job's incident shows once the job is given back unrun ([`crate::TriageStore::release_triage_jobs`],
/// a process stopping): pending again, with the attempts it had before the claim.
pub fn released(job: &TriageJob) -> IncidentTriageUpdate {
    IncidentTriageUpdate {
        triage: TriageState::Pending {
            job_id: job.job_id.clone(),
            playbook: job.playbook.clone(),
            attempts: Some(job.attempts).filter(|n| *n > 0),
            last_error: job.error.clone(),
            retry_at: None,
        },
        status_from_open: None,
        severity: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tw_core::triage::Verdict;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn job(status: TriageJobStatus, attempts: u32, max: u32) -> TriageJob {
        TriageJob {
            job_id: "job-1".into(),
            incident_id: uuid::Uuid::nil(),
            playbook: "malware_triage".into(),
            variables: Default::default(),
            status,
            attempts,
            max_attempts: max,
            run_after: t(0),
            error: None,
            requested_by: "auto".into(),
            created_at: t(0),
            started_at: Some(t(1)),
            completed_at: None,
        }
    }

    fn outcome(severity: Option<Severity>) -> TriageOutcome {
        TriageOutcome {
            playbook: "malware_triage".into(),
            playbook_version: "1".into(),
            verdict: Verdict::Malicious,
            score: 90,
            findings: vec![],
            recommended_actions: vec![],
            severity,
            trace: vec![],
        }
    }

    #[test]
    fn the_stored_text_is_the_state_serialized() {
        let mut o = outcome(Some(Severity::High));
        o.findings = vec![tw_core::triage::Finding {
            rule: "intel_bad_ip".into(),
            detail: "203.0.113.9 \"listed\"".into(),
            weight: 40,
            indicator: Some("203.0.113.9".into()),
        }];
        o.trace = vec![tw_core::triage::TraceStep {
            step: "Look up".into(),
            action: "lookup_intel".into(),
            skipped: false,
            inputs: serde_json::json!({"ips": ["203.0.113.9"], "z": 1, "a": [null, {"k": "v"}]}),
            outputs: serde_json::json!({"matches": 1}),
            duration_us: 7,
        }];
        let states = [
            TriageState::queued("job-1", "phishing_triage"),
            TriageState::Running { job_id: "job-1".into(), playbook: "p".into(), attempts: 2, started_at: Some(t(1)) },
            TriageState::Completed { job_id: "job-1".into(), attempts: 1, started_at: None, completed_at: t(9), outcome: Box::new(o) },
            TriageState::Failed {
                job_id: "job-1".into(),
                playbook: "p".into(),
                attempts: 3,
                error: "boom".into(),
                started_at: None,
                completed_at: Some(t(9)),
            },
        ];
        for s in states {
            let text: serde_json::Value = serde_json::from_str(&s.to_text()).unwrap();
            assert_eq!(text, serde_json::to_value(&s).unwrap(), "{s:?}");
            assert_eq!(s.to_json(), text);
        }
    }

    #[test]
    fn a_trace_is_fetched_only_for_a_completed_run_stored_without_one() {
        let json = |v: serde_json::Value| Some(v);
        assert_eq!(
            trace_to_fetch(json(serde_json::json!({"status": "completed", "job_id": "job-1", "trace": []})).as_ref()),
            Some("job-1".into())
        );
        assert_eq!(trace_to_fetch(json(serde_json::json!({"status": "completed", "job_id": "job-1"})).as_ref()), Some("job-1".into()));
        // Stored inline before traces were kept apart.
        assert_eq!(
            trace_to_fetch(json(serde_json::json!({"status": "completed", "job_id": "job-1", "trace": [{"step": "a"}]})).as_ref()),
            None
        );
        assert_eq!(trace_to_fetch(json(serde_json::json!({"status": "running", "job_id": "job-1"})).as_ref()), None);
        assert_eq!(trace_to_fetch(None), None);
        let mut t = json(serde_json::json!({"status": "completed", "job_id": "job-1", "trace": []}));
        put_trace(t.as_mut(), r#"[{"step": "a"}]"#).unwrap();
        assert_eq!(t.unwrap()["trace"], serde_json::json!([{"step": "a"}]));
    }

    #[test]
    fn a_completed_run_gives_up_its_trace_and_keeps_the_rest() {
        let mut o = outcome(None);
        o.trace = vec![tw_core::triage::TraceStep {
            step: "s".into(),
            action: "score".into(),
            skipped: false,
            inputs: serde_json::Value::Null,
            outputs: serde_json::json!({"score": 90}),
            duration_us: 1,
        }];
        let done = on_complete(&job(TriageJobStatus::Running, 1, 3), 1, TriageCompletion::done(o), t(9)).unwrap();
        let trace: serde_json::Value = serde_json::from_str(done.trace.as_deref().unwrap()).unwrap();
        assert_eq!((trace.as_array().map(Vec::len), trace[0]["outputs"]["score"].as_u64()), (Some(1), Some(90)));
        let v = done.incident.triage.to_json();
        assert_eq!(
            (v["status"].as_str(), v["verdict"].as_str(), v["score"].as_u64(), v["trace"].as_array().map(Vec::len)),
            (Some("completed"), Some("malicious"), Some(90), Some(0))
        );
        // Only a completed run has a trace to store.
        let failed = TriageCompletion::Failed { error: "x".into(), retry_at: None };
        assert_eq!(on_complete(&job(TriageJobStatus::Running, 1, 3), 1, failed, t(9)).unwrap().trace, None);
    }

    #[test]
    fn queued_state_has_the_stored_shape() {
        let v = TriageState::queued("job-1", "phishing_triage").to_json();
        assert_eq!(v, serde_json::json!({"status": "pending", "job_id": "job-1", "playbook": "phishing_triage"}));
    }

    #[test]
    fn a_claim_runs_until_attempts_are_spent() {
        match on_claim(&job(TriageJobStatus::Running, 3, 3), t(5)) {
            ClaimDecision::Run(s) => assert_eq!(
                s.to_json(),
                serde_json::json!({"status": "running", "job_id": "job-1", "playbook": "malware_triage", "attempts": 3, "started_at": t(1)})
            ),
            other => panic!("{other:?}"),
        }
        match on_claim(&job(TriageJobStatus::Running, 4, 3), t(5)) {
            ClaimDecision::Abandon(tr) => {
                assert_eq!(tr.status, TriageJobStatus::Failed);
                assert_eq!(tr.completed_at, Some(t(5)));
                let v = tr.incident.triage.to_json();
                assert_eq!((v["status"].as_str(), v["attempts"].as_u64()), (Some("failed"), Some(3)));
                assert!(v["error"].as_str().unwrap().contains("abandoned after 3 attempts"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_counts_only_for_the_claimed_running_attempt() {
        let done = || TriageCompletion::done(outcome(None));
        assert!(on_complete(&job(TriageJobStatus::Running, 2, 3), 1, done(), t(9)).is_none(), "re-claimed since");
        assert!(on_complete(&job(TriageJobStatus::Completed, 2, 3), 2, done(), t(9)).is_none(), "finished already");
        assert!(on_complete(&job(TriageJobStatus::Pending, 2, 3), 2, done(), t(9)).is_none());
        assert!(on_complete(&job(TriageJobStatus::Running, 2, 3), 2, done(), t(9)).is_some());
    }

    #[test]
    fn a_completed_run_triages_the_incident_with_its_outcome() {
        let tr =
            on_complete(&job(TriageJobStatus::Running, 1, 3), 1, TriageCompletion::done(outcome(Some(Severity::Critical))), t(9)).unwrap();
        assert_eq!((tr.status, tr.completed_at, tr.error), (TriageJobStatus::Completed, Some(t(9)), None));
        assert_eq!(tr.incident.status_from_open, Some(IncidentStatus::Triaged));
        assert_eq!(tr.incident.severity, Some(Severity::Critical));
        let v = tr.incident.triage.to_json();
        assert_eq!(v["status"], "completed");
        assert_eq!(v["job_id"], "job-1");
        assert_eq!(v["verdict"], "malicious");
        assert_eq!(v["score"], 90);
        assert_eq!(v["playbook"], "malware_triage");
        assert_eq!(v["completed_at"], serde_json::to_value(t(9)).unwrap());
    }

    #[test]
    fn failures_retry_while_attempts_remain_then_fail() {
        let fail = |retry: Option<i64>| TriageCompletion::Failed { error: "boom".into(), retry_at: retry.map(t) };
        let tr = on_complete(&job(TriageJobStatus::Running, 1, 3), 1, fail(Some(30)), t(9)).unwrap();
        assert_eq!((tr.status, tr.run_after, tr.completed_at), (TriageJobStatus::Pending, Some(t(30)), None));
        let v = tr.incident.triage.to_json();
        assert_eq!((v["status"].as_str(), v["last_error"].as_str(), v["attempts"].as_u64()), (Some("pending"), Some("boom"), Some(1)));
        assert_eq!(tr.incident.status_from_open, None, "a failed run does not triage the incident");

        let tr = on_complete(&job(TriageJobStatus::Running, 3, 3), 3, fail(Some(30)), t(9)).unwrap();
        assert_eq!((tr.status, tr.completed_at), (TriageJobStatus::Failed, Some(t(9))), "no attempts left");
        let tr = on_complete(&job(TriageJobStatus::Running, 1, 3), 1, fail(None), t(9)).unwrap();
        assert_eq!(tr.status, TriageJobStatus::Failed, "a permanent failure is not retried");
        assert_eq!(tr.incident.triage.to_json()["error"], "boom");
    }
}
