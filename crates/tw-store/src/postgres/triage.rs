//! Triage jobs. The rules are [`crate::triage`]'s; this file only persists what they decide.
//! Claims use `FOR UPDATE SKIP LOCKED` and a lease: only expired leases are taken over.

use super::incidents::load_incident;
use super::{PgStore, execute, query_one, query_opt, query_planned};
use crate::StoreError;
use crate::model::*;
use crate::rows::{JOB_COLUMNS, JobRow, count};
use crate::triage::{ClaimDecision, IncidentTriageUpdate, JobTransition, TriageState, on_claim, on_complete};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

fn job_from_row(r: &Row) -> Result<TriageJob, StoreError> {
    JobRow {
        id: r.get(0),
        incident_id: r.get(1),
        playbook: r.get(2),
        variables: r.get(3),
        status: r.get(4),
        attempts: r.get(5),
        max_attempts: r.get(6),
        run_after: r.get(7),
        error: r.get(8),
        requested_by: r.get(9),
        created_at: r.get(10),
        started_at: r.get(11),
        completed_at: r.get(12),
    }
    .decode()
}

async fn load_job(c: &impl GenericClient, id: &str) -> Result<Option<TriageJob>, StoreError> {
    query_opt(c, &format!("SELECT {JOB_COLUMNS} FROM triage_jobs WHERE id = $1"), &[&id]).await?.map(|r| job_from_row(&r)).transpose()
}

/// Writes the incident's side of a transition, only while `job_id` is the incident's latest job.
async fn write_incident_triage(c: &impl GenericClient, incident: Uuid, job_id: &str, u: &IncidentTriageUpdate) -> Result<bool, StoreError> {
    let n = execute(
        c,
        "UPDATE incidents SET triage = $3, \
         status = CASE WHEN status = 'open' AND $4::text IS NOT NULL THEN $4 ELSE status END, \
         severity = COALESCE($5, severity) \
         WHERE id = $1 AND triage_job_id = $2",
        &[
            &incident,
            &job_id,
            &u.triage.to_text(),
            &u.status_from_open.map(IncidentStatus::as_str),
            &u.severity.map(tw_core::Severity::as_str),
        ],
    )
    .await?;
    Ok(n > 0)
}

/// Persists a job's transition and its incident's side; a completed run's trace goes to
/// `triage_traces` ([`JobTransition::trace`]).
async fn apply(c: &impl GenericClient, job: &TriageJob, t: JobTransition) -> Result<(), StoreError> {
    if let Some(text) = &t.trace {
        execute(
            c,
            "INSERT INTO triage_traces (job_id, trace) VALUES ($1, $2) ON CONFLICT (job_id) DO UPDATE SET trace = excluded.trace",
            // JSON text never holds a raw NUL: serde_json escapes control characters.
            &[&job.job_id, text],
        )
        .await?;
    }
    execute(
        c,
        "UPDATE triage_jobs SET status = $2, error = $3, run_after = COALESCE($4, run_after), completed_at = $5, lease_until = NULL \
         WHERE id = $1",
        &[&job.job_id, &t.status.as_str(), &t.error.as_deref().map(super::pg_text), &t.run_after, &t.completed_at],
    )
    .await?;
    write_incident_triage(c, job.incident_id, &job.job_id, &t.incident).await?;
    Ok(())
}

async fn insert_triage_job(
    c: &impl GenericClient,
    incident_id: Uuid,
    playbook: &str,
    variables: &serde_json::Map<String, serde_json::Value>,
    max_attempts: u32,
    requested_by: &str,
    now: DateTime<Utc>,
) -> Result<TriageJob, StoreError> {
    let id = crate::rows::new_id("job");
    let vars = serde_json::Value::Object(variables.clone()).to_string();
    execute(
        c,
        "INSERT INTO triage_jobs (id, incident_id, playbook, variables, status, max_attempts, run_after, requested_by, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $6)",
        &[&id, &incident_id, &playbook, &vars, &i64::from(max_attempts.max(1)), &now, &requested_by],
    )
    .await?;
    execute(
        c,
        "UPDATE incidents SET triage = $2, triage_job_id = $3 WHERE id = $1",
        &[&incident_id, &TriageState::queued(&id, playbook).to_text(), &id],
    )
    .await?;
    load_job(c, &id).await?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
}

#[async_trait]
impl crate::TriageStore for PgStore {
    async fn enqueue_triage(
        &self,
        incident: &IncidentKey,
        playbook: &str,
        variables: serde_json::Map<String, serde_json::Value>,
        max_attempts: u32,
    ) -> Result<TriageJob, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Locks the incident: two requests for it at once queue their jobs one after the other.
        let row = match incident {
            IncidentKey::Id(id) => query_opt(&tx, "SELECT id FROM incidents WHERE id = $1 FOR UPDATE", &[id]).await?,
            IncidentKey::Number(n) => {
                query_opt(&tx, "SELECT id FROM incidents WHERE year = $1 AND seq = $2 FOR UPDATE", &[&n.year, &n.seq]).await?
            }
        };
        let id: Uuid = row.map(|r| r.get(0)).ok_or_else(|| StoreError::IncidentNotFound(format!("{incident:?}")))?;
        let job = insert_triage_job(&tx, id, &super::pg_text(playbook), &variables, max_attempts, "api", Utc::now()).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim_triage_jobs(&self, limit: usize, lease_secs: i64) -> Result<Vec<ClaimedTriageJob>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = Utc::now();
        // Planned for this backlog (see `query_planned`): a generic plan made on an empty table
        // read the whole backlog and sorted it on every claim (56-74 ms at 100,000 pending).
        let rows = query_planned(
            &*tx,
            &format!(
                "UPDATE triage_jobs SET status = 'running', attempts = attempts + 1, lease_until = $1, started_at = COALESCE(started_at, $2) \
                 WHERE id IN (SELECT id FROM triage_jobs WHERE (status = 'pending' AND run_after <= $2) \
                              OR (status = 'running' AND lease_until < $2) ORDER BY run_after, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING {JOB_COLUMNS}"
            ),
            &[(&(now + chrono::Duration::seconds(lease_secs)), Type::TIMESTAMPTZ), (&now, Type::TIMESTAMPTZ), (&(limit as i64), Type::INT8)],
        )
        .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| (a.run_after, &a.job_id).cmp(&(b.run_after, &b.job_id)));
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            match on_claim(&job, now) {
                ClaimDecision::Abandon(t) => apply(&tx, &job, t).await?,
                ClaimDecision::Run(running) => {
                    let Some(incident) = load_incident(&tx, job.incident_id).await? else { continue };
                    let update = IncidentTriageUpdate { triage: running, status_from_open: None, severity: None };
                    write_incident_triage(&tx, job.incident_id, &job.job_id, &update).await?;
                    out.push(ClaimedTriageJob { job, incident });
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn complete_triage_job(&self, job_id: &str, attempt: u32, completion: TriageCompletion) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = query_opt(&tx, &format!("SELECT {JOB_COLUMNS} FROM triage_jobs WHERE id = $1 FOR UPDATE"), &[&job_id]).await?;
        let Some(job) = row.map(|r| job_from_row(&r)).transpose()? else { return Ok(false) };
        let Some(t) = on_complete(&job, attempt, completion, Utc::now()) else { return Ok(false) };
        apply(&tx, &job, t).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release_triage_jobs(&self, jobs: &[(String, u32)]) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = Utc::now();
        let mut released = 0;
        for (id, attempt) in jobs {
            let row = query_opt(
                &tx,
                &format!(
                    "UPDATE triage_jobs SET status = 'pending', attempts = attempts - 1, lease_until = NULL, run_after = $3 \
                     WHERE id = $1 AND status = 'running' AND attempts = $2 RETURNING {JOB_COLUMNS}"
                ),
                &[id, &i64::from(*attempt), &now],
            )
            .await?;
            let Some(job) = row.map(|r| job_from_row(&r)).transpose()? else { continue };
            released += 1;
            write_incident_triage(&tx, job.incident_id, &job.job_id, &crate::triage::released(&job)).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn triage_job(&self, job_id: &str) -> Result<Option<TriageJob>, StoreError> {
        let c = self.client().await?;
        load_job(&c, job_id).await
    }

    async fn triage_depth(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        Ok(count(query_one(&c, "SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running')", &[]).await?.get(0)))
    }
}
