//! Triage workers: claim due jobs, run the playbook ([`crate::triage::run_playbook`]), store the
//! outcome on the incident; failed runs are retried with exponential backoff up to the job's
//! attempt limit.

use crate::state::AppState;
use crate::triage::{RunError, run_playbook, triage_incident};
use std::collections::BTreeMap;
use std::time::Duration;
use tw_store::{ClaimedTriageJob, TriageCompletion};

const IDLE_POLL: Duration = Duration::from_secs(1);
/// Sync deliveries waiting for the store from which the intake counts as saturated: a worker then
/// lets it go first ([`yield_to_intake`]).
const INTAKE_SATURATED: usize = 16;
/// The longest a worker waits for a saturated intake before it claims anyway, and how often it
/// looks again meanwhile.
const YIELD_AT_MOST: Duration = Duration::from_secs(1);
const YIELD_STEP: Duration = Duration::from_millis(20);
const MAX_BACKOFF_SECS: i64 = 300;
/// The longest a finished job's result waits to be stored with the results of the jobs after it.
const STORE_AFTER: Duration = Duration::from_millis(50);

/// Runs one worker until the server stops. Stopping, it claims nothing more, lets the job it is
/// running finish within the grace period, and releases every job it claimed and did not finish,
/// so another instance takes them at once instead of after the claim's lease.
pub async fn run(state: AppState) {
    let stopping = state.stopping.clone();
    let stopped = || {
        let mut rx = stopping.clone();
        async move {
            // A dropped sender (the server handle is gone) stops the worker too.
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    loop {
        if *stopping.borrow() {
            return;
        }
        crate::state::Heartbeats::beat(&state.heartbeats.triage);
        if !yield_to_intake(&state, &stopped).await {
            return;
        }
        match state.store.claim_triage_jobs(8, state.claim_lease_secs).await {
            Ok(jobs) if !jobs.is_empty() => work_through(&state, jobs, &stopped).await,
            Ok(_) => {
                tokio::select! {
                    _ = tokio::time::timeout(IDLE_POLL, state.triage_wakeup.notified()) => {}
                    _ = stopped() => return,
                }
            }
            Err(e) => {
                tracing::error!(target: "triage", error = %e, "claiming triage jobs failed");
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stopped() => return,
                }
            }
        }
    }
}

/// Waits while the intake is saturated (at least [`INTAKE_SATURATED`] sync deliveries waiting
/// for the store), for [`YIELD_AT_MOST`] at most; false when the server stops meanwhile. A triage
/// job costs the store's writer, which every delivery waits for, what a dozen deliveries do
/// (claiming it, storing its result and trace): during a burst, triage drains behind the intake
/// instead of slowing it (by about a tenth, measured with `tw-cli bench --auto-triage`), and
/// still moves, a claim a second, however long the burst. Playbooks themselves already run below
/// the intake's priority.
async fn yield_to_intake<F: std::future::Future<Output = ()>>(state: &AppState, stopped: &impl Fn() -> F) -> bool {
    if state.sync_writes_waiting() < INTAKE_SATURATED {
        return true;
    }
    state.metrics.count("triage_yields_total", &[], 1);
    let since = std::time::Instant::now();
    while state.sync_writes_waiting() >= INTAKE_SATURATED && since.elapsed() < YIELD_AT_MOST {
        tokio::select! {
            _ = tokio::time::sleep(YIELD_STEP) => {}
            _ = stopped() => return false,
        }
    }
    true
}

/// Runs claimed jobs one after another. Their results are stored together (one commit for
/// several), none waiting much longer than STORE_AFTER, even while a later job still runs.
/// Stopping (`stopped` completes), it starts no further job and gives the one running the grace
/// period; what ran is then stored, and what did not released.
async fn work_through<F: std::future::Future<Output = ()>>(state: &AppState, jobs: Vec<ClaimedTriageJob>, stopped: &impl Fn() -> F) {
    let claimed: Vec<(String, u32)> = jobs.iter().map(|c| (c.job.job_id.clone(), c.job.attempts)).collect();
    let mut ran = 0;
    let mut finished: Vec<Finished> = Vec::new();
    'jobs: for job in jobs {
        if *state.stopping.borrow() {
            break;
        }
        let cut_off = async {
            stopped().await;
            tokio::time::sleep(state.triage.grace).await;
        };
        let run = run_job(state, job);
        tokio::pin!(cut_off, run);
        loop {
            let store_at = finished.first().map(|f| tokio::time::Instant::from_std(f.report.ended + STORE_AFTER));
            tokio::select! {
                f = &mut run => {
                    ran += 1;
                    finished.push(f);
                    break;
                }
                _ = &mut cut_off => {
                    tracing::warn!(target: "triage", grace_secs = state.triage.grace.as_secs(), "a triage job was still running at the end of the grace period; releasing it");
                    break 'jobs;
                }
                _ = tokio::time::sleep_until(store_at.unwrap_or_else(tokio::time::Instant::now)), if store_at.is_some() => {
                    store(state, std::mem::take(&mut finished)).await;
                }
            }
        }
    }
    store(state, finished).await;
    if ran < claimed.len() {
        release(state, claimed[ran..].to_vec()).await;
    }
}

/// Gives claimed jobs back to the store for any instance to run now.
async fn release(state: &AppState, jobs: Vec<(String, u32)>) {
    match state.store.release_triage_jobs(&jobs).await {
        Ok(n) => tracing::info!(target: "triage", released = n, "server stopping; claimed triage jobs released for another instance"),
        Err(e) => tracing::error!(
            target: "triage",
            error = %e,
            jobs = jobs.len(),
            "releasing claimed triage jobs failed; they are taken over when their lease ends"
        ),
    }
}

/// A job that ran: what to store, and what to report once it is stored.
struct Finished {
    completion: TriageCompletion,
    report: Report,
}

/// What is counted and logged of a finished job.
struct Report {
    job_id: String,
    attempt: u32,
    playbook: String,
    incident: String,
    summary: String,
    verdict: String,
    status: &'static str,
    started: std::time::Instant,
    ended: std::time::Instant,
}

/// Runs one claimed job's playbook; stores nothing.
async fn run_job(state: &AppState, claimed: ClaimedTriageJob) -> Finished {
    let ClaimedTriageJob { job, incident } = claimed;
    let number = incident.incident_number.to_string();
    let started = std::time::Instant::now();
    let variables: BTreeMap<String, serde_json::Value> = job.variables.clone().into_iter().collect();
    // The incident is read into the engine's view (its raw payload parsed), and the outcome's
    // trace rendered for the store, on the playbook thread, below the intake's priority, not here
    // on the intake's runtime nor on the store's writer.
    let finish = |outcome: tw_core::triage::TriageOutcome| {
        let summary = format!("{:?} score {}", outcome.verdict, outcome.score).to_lowercase();
        let verdict = serde_json::to_value(outcome.verdict).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        (TriageCompletion::done(outcome), summary, verdict)
    };
    let result = run_playbook(state, &job.playbook, move || triage_incident(&incident), variables, true, finish).await;
    state.metrics.observe("triage_duration_seconds", &[("playbook", &job.playbook)], started.elapsed().as_secs_f64());
    let (completion, summary, verdict, status) = match result {
        Ok((done, summary, verdict)) => (done, summary, verdict, "completed"),
        Err(RunError::Permanent(error) | RunError::Failed(error)) => {
            (TriageCompletion::Failed { error: error.clone(), retry_at: None }, error, "none".into(), "failed")
        }
        // Workers wait for a place in the playbook queue, so `Busy` does not come back here; were
        // it to, it would be retried like any transient failure.
        Err(e @ (RunError::Transient(_) | RunError::Busy)) => {
            let error = e.message();
            let backoff = 2i64.saturating_pow(job.attempts).min(MAX_BACKOFF_SECS);
            let retry_at = state.clock.now() + chrono::Duration::seconds(backoff);
            let status = if job.attempts < job.max_attempts { "retried" } else { "failed" };
            (TriageCompletion::Failed { error: error.clone(), retry_at: Some(retry_at) }, error, "none".into(), status)
        }
    };
    let report = Report {
        job_id: job.job_id.clone(),
        attempt: job.attempts,
        playbook: job.playbook.clone(),
        incident: number,
        summary,
        verdict,
        status,
        started,
        ended: std::time::Instant::now(),
    };
    Finished { completion, report }
}

/// Stores the results of jobs that ran, together, and reports each.
async fn store(state: &AppState, finished: Vec<Finished>) {
    if finished.is_empty() {
        return;
    }
    let (writes, reports): (Vec<_>, Vec<_>) =
        finished.into_iter().map(|f| ((f.report.job_id.clone(), f.report.attempt, f.completion), f.report)).unzip();
    let results = state.store.complete_triage_jobs(writes).await;
    for (f, result) in reports.into_iter().zip(results) {
        match result {
            Ok(true) => {
                state.metrics.count("triage_jobs_total", &[("playbook", &f.playbook), ("verdict", &f.verdict), ("status", f.status)], 1);
                tracing::info!(
                    target: "triage",
                    job_id = %f.job_id,
                    incident = %f.incident,
                    playbook = %f.playbook,
                    attempt = f.attempt,
                    result = %f.summary,
                    duration_ms = (f.ended - f.started).as_secs_f64() * 1000.0,
                    "triage job finished"
                )
            }
            Ok(false) => {
                tracing::warn!(target: "triage", job_id = %f.job_id, "triage job was taken over by another worker; result dropped")
            }
            Err(e) => {
                tracing::error!(target: "triage", job_id = %f.job_id, error = %e, "storing a triage result failed; the job will run again")
            }
        }
    }
}
