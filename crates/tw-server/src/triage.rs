//! Running a playbook on an incident: on the playbook threads, below the intake's CPU priority,
//! with panics contained. The triage workers ([`crate::workers::triage`]) run jobs with it, and
//! `POST /api/playbooks/:name/test` runs one on request.

use crate::state::AppState;
use std::collections::BTreeMap;
use tw_core::triage::{TriageIncident, TriageOutcome};
use tw_store::Incident;

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

/// Runs a playbook by name over the incident `incident` makes, and `finish` over its outcome, all
/// on a playbook thread (below the intake's priority), containing panics. `wait`: whether to wait
/// for a free place in the playbook queue (triage workers) or to give up at once with
/// [`RunError::Busy`] (requests, which a client can send faster than playbooks run).
pub async fn run_playbook<T: Send + 'static>(
    state: &AppState,
    playbook: &str,
    incident: impl FnOnce() -> TriageIncident + Send + 'static,
    variables: BTreeMap<String, serde_json::Value>,
    wait: bool,
    finish: impl FnOnce(TriageOutcome) -> T + Send + 'static,
) -> Result<T, RunError> {
    let resolved = state
        .playbooks
        .get(playbook)
        .await
        .map_err(|e| RunError::Transient(e.to_string()))?
        .ok_or_else(|| RunError::Permanent(format!("playbook '{playbook}' does not exist")))?;
    let intel = state.intel.current();
    let pb = resolved.playbook;
    match background(move || pb.run(incident(), &intel, &variables).map(finish), wait).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) if !e.retryable() => Err(RunError::Failed(e.to_string())),
        Ok(Err(e)) => Err(RunError::Transient(e.to_string())),
        Err(Background::Busy) => Err(RunError::Busy),
        Err(Background::Failed) => Err(RunError::Transient("the playbook engine failed unexpectedly (see the server log)".into())),
    }
}

/// The playbook threads, and the triage workers a server runs by default: one per core, at least
/// two. A worker waits on the store while it claims jobs and stores their results, and a second
/// keeps the playbook threads busy meanwhile: on one core, a backlog of 5,000 jobs drained at
/// 1,239-1,353 jobs/s with one worker and 1,782-1,981 with two.
pub fn playbook_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
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
        let threads = playbook_threads();
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
