//! Triage workers: claim due jobs, run the playbook on a blocking thread, store the outcome on the
//! incident; failed runs are retried with exponential backoff up to the job's attempt limit.

use crate::state::AppState;
use std::collections::BTreeMap;
use std::time::Duration;
use tw_core::triage::{TriageIncident, TriageOutcome};
use tw_store::{ClaimedTriageJob, Incident, TriageCompletion};

const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_SECS: i64 = 300;

/// Triage settings.
#[derive(Debug, Clone, Copy)]
pub struct TriageSettings {
    pub workers: usize,
    pub max_attempts: u32,
    /// How long a stopping worker lets its running job finish before releasing it.
    pub grace: Duration,
}

/// The engine's view of a stored incident.
pub fn triage_incident(i: &Incident) -> TriageIncident {
    TriageIncident {
        id: Some(i.id.to_string()),
        incident_number: Some(i.incident_number.to_string()),
        title: i.title.clone(),
        description: i.description.clone(),
        severity: i.severity,
        source: i.source.to_string(),
        format: i.format,
        event_type: i.event_type.clone(),
        external_id: i.external_id.clone(),
        entities: i.entities.clone(),
        raw: i.raw.as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(serde_json::Value::Null),
    }
}

/// Runs a playbook by name over an incident on a playbook thread, containing panics. `wait`:
/// whether to wait for a free place in the playbook queue (triage workers) or to give up at once
/// with [`RunError::Busy`] (requests, which a client can send faster than playbooks run).
pub async fn run_playbook(
    state: &AppState,
    playbook: &str,
    incident: TriageIncident,
    variables: BTreeMap<String, serde_json::Value>,
    wait: bool,
) -> Result<TriageOutcome, RunError> {
    let resolved = state
        .playbooks
        .get(playbook)
        .await
        .map_err(|e| RunError::Transient(e.to_string()))?
        .ok_or_else(|| RunError::Permanent(format!("playbook '{playbook}' does not exist")))?;
    let intel = state.intel.current();
    let pb = resolved.playbook;
    match background(move || tw_core::triage::run(&pb, &incident, &intel, &variables), wait).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) if !e.retryable() => Err(RunError::Failed(e.to_string())),
        Ok(Err(e)) => Err(RunError::Transient(e.to_string())),
        Err(Background::Busy) => Err(RunError::Busy),
        Err(Background::Failed) => Err(RunError::Transient("the playbook engine failed unexpectedly (see the server log)".into())),
    }
}

/// Why [`background`] gave no result.
enum Background {
    /// Every place in the queue is taken.
    Busy,
    /// The run panicked (or the pool is gone).
    Failed,
}

/// The playbook threads and the places in their queue: runs waiting or running at once, at most.
struct PlaybookPool {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    places: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Runs `f` on one of the playbook threads, which run at the lowest CPU priority (nice 19) below the
/// intake: on a busy machine, acknowledging deliveries goes first and triage drains behind. With
/// playbooks on tokio's blocking threads, auto-triage took a quarter of the intake's throughput
/// on a shared core (`tw-cli bench --auto-triage`, BENCHMARKS.md). The queue is bounded (four
/// places a thread); a run whose caller has gone is skipped.
async fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static, wait: bool) -> Result<T, Background> {
    static POOL: std::sync::OnceLock<PlaybookPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("tw-playbook-{i}")).spawn(move || {
                lower_priority();
                while let Ok(job) = rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                    job();
                }
            });
            if let Err(e) = spawned {
                tracing::error!(target: "triage", error = %e, "cannot start a playbook thread");
            }
        }
        PlaybookPool { jobs, places: std::sync::Arc::new(tokio::sync::Semaphore::new(threads * 4)) }
    });
    let place = if wait {
        pool.places.clone().acquire_owned().await.map_err(|_| Background::Failed)?
    } else {
        pool.places.clone().try_acquire_owned().map_err(|_| Background::Busy)?
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _place = place;
        if reply.is_closed() {
            return;
        }
        // A panic stays in this job: the thread goes on, the caller hears of a failure.
        if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let _ = reply.send(v);
        }
    });
    pool.jobs.send(job).map_err(|_| Background::Failed)?;
    answer.await.map_err(|_| Background::Failed)
}

/// Lowers the calling thread's CPU priority as far as it goes without starving it: `SCHED_BATCH`
/// at nice 19 (Linux; elsewhere it stays as it is). Competing with the intake for a core, a
/// nice-19 thread gets about 1.5% of it (nice 10 got about 10%, enough to cost the intake 13-29%
/// with `tw-cli bench --auto-triage`); on an idle core it runs at full speed, so triage drains
/// whenever deliveries leave room, and a playbook test from the API still finishes under load.
/// `SCHED_IDLE` would starve both under sustained load.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls act on this thread only (pid 0 / its own tid) with a valid parameter;
    // a failure only leaves the priority as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Why a run did not produce an outcome.
#[derive(Debug)]
pub enum RunError {
    /// Worth retrying.
    Transient(String),
    /// Retrying cannot help (the playbook is gone).
    Permanent(String),
    /// The run itself failed for good: the same playbook on the same incident fails again (its
    /// result outgrew [`tw_core::triage::engine::MAX_TRIAGE_BYTES`]).
    Failed(String),
    /// Every place in the playbook queue is taken: try again later.
    Busy,
}

impl RunError {
    /// What went wrong, for the job's record and the log.
    pub fn message(self) -> String {
        match self {
            RunError::Transient(m) | RunError::Permanent(m) | RunError::Failed(m) => m,
            RunError::Busy => "the playbook queue is full".into(),
        }
    }
}

/// Runs one worker until the server stops. Stopping, it claims nothing more, lets the job it is
/// running finish within the grace period, and releases every job it claimed and did not finish,
/// so another instance takes them at once instead of after the claim's lease.
pub async fn run_worker(state: AppState) {
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
        match state.store.claim_triage_jobs(8, state.claim_lease_secs).await {
            Ok(jobs) if !jobs.is_empty() => {
                let mut pending: Vec<(String, u32)> = jobs.iter().map(|c| (c.job.job_id.clone(), c.job.attempts)).collect();
                pending.reverse();
                for job in jobs {
                    if *stopping.borrow() {
                        break;
                    }
                    let cut_off = async {
                        stopped().await;
                        tokio::time::sleep(state.triage.grace).await;
                    };
                    tokio::select! {
                        _ = process(&state, job) => { pending.pop(); }
                        _ = cut_off => {
                            tracing::warn!(target: "triage", grace_secs = state.triage.grace.as_secs(), "a triage job was still running at the end of the grace period; releasing it");
                            break;
                        }
                    }
                }
                if !pending.is_empty() {
                    release(&state, pending).await;
                }
            }
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

async fn process(state: &AppState, claimed: ClaimedTriageJob) {
    let job = &claimed.job;
    let started = std::time::Instant::now();
    let variables: BTreeMap<String, serde_json::Value> = job.variables.clone().into_iter().collect();
    let result = run_playbook(state, &job.playbook, triage_incident(&claimed.incident), variables, true).await;
    state.metrics.observe("triage_duration_seconds", &[("playbook", &job.playbook)], started.elapsed().as_secs_f64());
    let (completion, summary, verdict, status) = match result {
        Ok(outcome) => {
            let summary = format!("{:?} score {}", outcome.verdict, outcome.score).to_lowercase();
            let verdict = serde_json::to_value(outcome.verdict).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            (TriageCompletion::Done(outcome), summary, verdict, "completed")
        }
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
    match state.store.complete_triage_job(&job.job_id, job.attempts, completion).await {
        Ok(true) => {
            state.metrics.count("triage_jobs_total", &[("playbook", &job.playbook), ("verdict", &verdict), ("status", status)], 1);
            tracing::info!(
                target: "triage",
                job_id = %job.job_id,
                incident = %claimed.incident.incident_number,
                playbook = %job.playbook,
                attempt = job.attempts,
                result = %summary,
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "triage job finished"
            )
        }
        Ok(false) => tracing::warn!(target: "triage", job_id = %job.job_id, "triage job was taken over by another worker; result dropped"),
        Err(e) => {
            tracing::error!(target: "triage", job_id = %job.job_id, error = %e, "storing a triage result failed; the job will run again")
        }
    }
}
