//! Triage jobs. The rules are [`crate::triage`]'s; this file only persists what they decide.

use super::incidents::load_incident;
use super::{SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::StoreError;
use crate::model::*;
use crate::rows::{JOB_COLUMNS, JobRow, corrupt};
use crate::triage::{ClaimDecision, IncidentTriageUpdate, JobTransition, TriageState, on_claim, on_complete};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

fn job_from_row(r: &Row<'_>) -> Result<TriageJob, StoreError> {
    let incident_id: String = r.get(1)?;
    JobRow {
        id: r.get(0)?,
        incident_id: Uuid::parse_str(&incident_id).map_err(corrupt("incident id"))?,
        playbook: r.get(2)?,
        variables: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        run_after: parse_ts(&r.get::<_, String>(7)?)?,
        error: r.get(8)?,
        requested_by: r.get(9)?,
        created_at: parse_ts(&r.get::<_, String>(10)?)?,
        started_at: parse_opt_ts(r.get(11)?)?,
        completed_at: parse_opt_ts(r.get(12)?)?,
    }
    .decode()
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<TriageJob>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM triage_jobs WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => job_from_row(r).map(Some),
        None => Ok(None),
    }
}

/// Writes the incident's side of a transition, only while `job_id` is the incident's latest job.
/// True when written.
///
/// A transition that moves neither status nor severity (a claim, most completions) writes the
/// triage column alone: SQLite rewrites the entries of every index whose columns an `UPDATE`
/// assigns, even to the value they hold, and status and severity are in all three listing
/// indexes (and fire the counts' trigger check).
fn write_incident_triage(conn: &Connection, incident_id: &str, job_id: &str, u: &IncidentTriageUpdate) -> Result<bool, StoreError> {
    if u.status_from_open.is_none() && u.severity.is_none() {
        let n = conn.prepare_cached("UPDATE incidents SET triage = ?3 WHERE id = ?1 AND triage_job_id = ?2")?.execute(params![
            incident_id,
            job_id,
            u.triage.to_text()
        ])?;
        return Ok(n > 0);
    }
    let n = conn
        .prepare_cached(
            "UPDATE incidents SET triage = ?3, \
             status = CASE WHEN status = 'open' AND ?4 IS NOT NULL THEN ?4 ELSE status END, \
             severity = COALESCE(?5, severity) \
             WHERE id = ?1 AND triage_job_id = ?2",
        )?
        .execute(params![
            incident_id,
            job_id,
            u.triage.to_text(),
            u.status_from_open.map(IncidentStatus::as_str),
            u.severity.map(tw_core::Severity::as_str)
        ])?;
    Ok(n > 0)
}

/// Persists a job's transition and its incident's side; a completed run's trace goes to
/// `triage_traces` ([`JobTransition::trace`]).
fn apply(conn: &Connection, job: &TriageJob, t: JobTransition) -> Result<(), StoreError> {
    if let Some(text) = &t.trace {
        conn.prepare_cached(
            "INSERT INTO triage_traces (job_id, trace) VALUES (?1, ?2) ON CONFLICT (job_id) DO UPDATE SET trace = excluded.trace",
        )?
        .execute(params![job.job_id, text])?;
    }
    conn.prepare_cached(
        "UPDATE triage_jobs SET status = ?2, error = ?3, run_after = COALESCE(?4, run_after), completed_at = ?5, lease_until = NULL \
         WHERE id = ?1",
    )?
    .execute(params![job.job_id, t.status.as_str(), t.error, t.run_after.map(ts), t.completed_at.map(ts)])?;
    write_incident_triage(conn, &job.incident_id.to_string(), &job.job_id, &t.incident)?;
    Ok(())
}

/// A pending job to insert.
pub(super) struct NewJob<'a> {
    pub id: &'a str,
    pub incident_id: &'a str,
    pub playbook: &'a str,
    /// The playbook's variables, as JSON text.
    pub variables: &'a str,
    pub max_attempts: u32,
    pub requested_by: &'a str,
    pub at: DateTime<Utc>,
}

/// Inserts a pending job; the incident's triage columns are the caller's to set.
pub(super) fn insert_job_row(conn: &Connection, job: &NewJob<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO triage_jobs (id, incident_id, playbook, variables, status, max_attempts, run_after, requested_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?6)",
    )?
    .execute(params![job.id, job.incident_id, job.playbook, job.variables, job.max_attempts.max(1), ts(job.at), job.requested_by])?;
    Ok(())
}

/// Claims the due jobs (parameters lease_until, now, limit): pending ones and those whose lease
/// expired, read in `triage_jobs_ready` order apart, `limit` of each at most (see
/// `claim_triage_jobs`). The counts are written `+?3` ([`crate::rows::bound_count`]).
pub(super) const CLAIM_JOBS: &str = "UPDATE triage_jobs SET status = 'running', attempts = attempts + 1, lease_until = ?1, \
     started_at = COALESCE(started_at, ?2) \
     WHERE rowid IN ( \
         SELECT r FROM ( \
             SELECT * FROM (SELECT rowid AS r, run_after FROM triage_jobs \
                            WHERE status = 'pending' AND run_after <= ?2 ORDER BY run_after, rowid LIMIT +?3) \
             UNION ALL \
             SELECT * FROM (SELECT rowid AS r, run_after FROM triage_jobs \
                            WHERE status = 'running' AND lease_until < ?2 ORDER BY run_after, rowid LIMIT +?3)) \
         ORDER BY run_after, r LIMIT +?3) \
     RETURNING id";

#[async_trait]
impl crate::TriageStore for SqliteStore {
    async fn enqueue_triage(
        &self,
        incident: &IncidentKey,
        playbook: &str,
        variables: serde_json::Map<String, serde_json::Value>,
        max_attempts: u32,
    ) -> Result<TriageJob, StoreError> {
        let key = incident.clone();
        let playbook = playbook.to_string();
        self.writer
            .write(move |conn| {
                let id: Option<String> = match &key {
                    IncidentKey::Id(id) => {
                        conn.query_row("SELECT id FROM incidents WHERE id = ?1", [id.to_string()], |r| r.get(0)).optional()?
                    }
                    IncidentKey::Number(n) => conn
                        .query_row("SELECT id FROM incidents WHERE year = ?1 AND seq = ?2", params![n.year, n.seq], |r| r.get(0))
                        .optional()?,
                };
                let incident_id = id.ok_or_else(|| StoreError::IncidentNotFound(format!("{key:?}")))?;
                let id = crate::rows::new_id("job");
                let variables = serde_json::Value::Object(variables).to_string();
                let job = NewJob {
                    id: &id,
                    incident_id: &incident_id,
                    playbook: &playbook,
                    variables: &variables,
                    max_attempts,
                    requested_by: "api",
                    at: Utc::now(),
                };
                insert_job_row(conn, &job)?;
                let state = TriageState::queued(&id, &playbook).to_text();
                conn.prepare_cached("UPDATE incidents SET triage = ?2, triage_job_id = ?3 WHERE id = ?1")?.execute(params![
                    incident_id,
                    state,
                    id
                ])?;
                load_job(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
            })
            .await
    }

    async fn claim_triage_jobs(&self, limit: usize, lease_secs: i64) -> Result<Vec<ClaimedTriageJob>, StoreError> {
        // The due jobs are read in `triage_jobs_ready` order, pending and expired-running apart,
        // `limit` of each at most: a claim reads a few index entries however long the backlog.
        // (One `OR` over both, ordered by `run_after, id`, sorted every pending job on every
        // claim: 0.8 ms a claim at 5,000 pending, and triage drained at ~1,000 incidents/s.)
        let claimed: Vec<TriageJob> = self
            .writer
            .write(move |conn| {
                let now = Utc::now();
                let ids: Vec<String> = conn
                    .prepare_cached(CLAIM_JOBS)?
                    .query_map(params![ts(now + chrono::Duration::seconds(lease_secs)), ts(now), limit as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let job = load_job(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
                    let incident_id = job.incident_id.to_string();
                    match on_claim(&job, now) {
                        ClaimDecision::Abandon(t) => apply(conn, &job, t)?,
                        ClaimDecision::Run(running) => {
                            let update = IncidentTriageUpdate { triage: running, status_from_open: None, severity: None };
                            // Not written when a newer job is the incident's latest (this one still
                            // runs, and writes nothing), nor when the incident is gone: the read
                            // below leaves its job out.
                            write_incident_triage(conn, &incident_id, &id, &update)?;
                            out.push(job);
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        // The incidents the jobs run over (their whole rows, payloads included), read by a
        // reader once the claim is committed: on the writer, which every delivery waits for, they
        // were a tenth of a triage job's cost there.
        self.read(move |conn, _| {
            let mut out = Vec::with_capacity(claimed.len());
            for job in claimed {
                if let Some(incident) = load_incident(conn, &job.incident_id.to_string())? {
                    out.push(ClaimedTriageJob { job, incident });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn complete_triage_job(&self, job_id: &str, attempt: u32, completion: TriageCompletion) -> Result<bool, StoreError> {
        let job_id = job_id.to_string();
        self.writer
            .write(move |conn| {
                let Some(job) = load_job(conn, &job_id)? else { return Ok(false) };
                let Some(t) = on_complete(&job, attempt, completion, Utc::now()) else { return Ok(false) };
                apply(conn, &job, t)?;
                Ok(true)
            })
            .await
    }

    async fn complete_triage_jobs(&self, jobs: Vec<(String, u32, TriageCompletion)>) -> Vec<Result<bool, StoreError>> {
        let n = jobs.len();
        // One write for all, each job in its own savepoint: one that cannot be stored does not
        // undo the others.
        self.writer
            .write(move |conn| {
                let mut out = Vec::with_capacity(jobs.len());
                for (job_id, attempt, completion) in jobs {
                    out.push(super::writer::in_savepoint(conn, || {
                        let Some(job) = load_job(conn, &job_id)? else { return Ok(false) };
                        let Some(t) = on_complete(&job, attempt, completion, Utc::now()) else { return Ok(false) };
                        apply(conn, &job, t)?;
                        Ok(true)
                    })?);
                }
                Ok(out)
            })
            .await
            .unwrap_or_else(|e| (0..n).map(|_| Err(e.again())).collect())
    }

    async fn release_triage_jobs(&self, jobs: &[(String, u32)]) -> Result<usize, StoreError> {
        let jobs = jobs.to_vec();
        self.writer
            .write(move |conn| {
                let now = Utc::now();
                let mut released = 0;
                for (id, attempt) in jobs {
                    let n = conn
                        .prepare_cached(
                            "UPDATE triage_jobs SET status = 'pending', attempts = attempts - 1, lease_until = NULL, run_after = ?3 \
                             WHERE id = ?1 AND status = 'running' AND attempts = ?2",
                        )?
                        .execute(params![id, attempt, ts(now)])?;
                    if n == 0 {
                        continue;
                    }
                    released += 1;
                    let Some(job) = load_job(conn, &id)? else { continue };
                    write_incident_triage(conn, &job.incident_id.to_string(), &id, &crate::triage::released(&job))?;
                }
                Ok(released)
            })
            .await
    }

    async fn triage_job(&self, job_id: &str) -> Result<Option<TriageJob>, StoreError> {
        let id = job_id.to_string();
        self.read(move |conn, _| load_job(conn, &id)).await
    }

    async fn triage_depth(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running')", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}
