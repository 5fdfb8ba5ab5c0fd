//! Reading incidents and dead letters.

use super::{PgStore, query, query_one, query_opt, query_planned};
use crate::StoreError;
use crate::listing::{self, Arg};
use crate::model::*;
use crate::rows::{INCIDENT_COLUMNS, IncidentRow, corrupt, count};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, Row};
use tw_core::SourceName;
use uuid::Uuid;

/// The incident's raw payload, selected after [`INCIDENT_COLUMNS`] from `incidents`: payloads live
/// in a table of their own so that listings read narrow rows.
const INCIDENT_RAW: &str = "(SELECT p.raw_payload FROM incident_payloads p WHERE p.incident_id = incidents.id)";

/// An incident from a row of [`INCIDENT_COLUMNS`] (and [`INCIDENT_RAW`] after them when `with_raw`).
pub(super) fn incident_from_row(r: &Row, with_raw: bool) -> Result<Incident, StoreError> {
    IncidentRow {
        id: r.get(0),
        year: r.get(1),
        seq: r.get(2),
        source: r.get(3),
        format: r.get(4),
        title: r.get(5),
        description: r.get(6),
        severity: r.get(7),
        vendor_severity: r.get(8),
        status: r.get(9),
        event_type: r.get(10),
        event_time: r.get(11),
        received_at: r.get(12),
        external_id: r.get(13),
        entities: r.get(14),
        delivery_count: r.get(15),
        last_delivery_at: r.get(16),
        auto_triage: r.get(17),
        playbook: r.get(18),
        request_id: r.get(19),
        triage: r.get(20),
        raw: if with_raw { r.get(21) } else { None },
    }
    .decode()
}

/// One incident with its raw payload.
pub(super) async fn load_incident(c: &impl GenericClient, id: Uuid) -> Result<Option<Incident>, StoreError> {
    let sql = format!("SELECT {INCIDENT_COLUMNS}, {INCIDENT_RAW} FROM incidents WHERE id = $1");
    query_opt(c, &sql, &[&id]).await?.map(|r| incident_from_row(&r, true)).transpose()
}

/// A page of incidents read on `c`: the total, then the index walks of [`listing::steps`].
async fn list_in(c: &impl GenericClient, f: &IncidentFilter) -> Result<IncidentPage, StoreError> {
    let total = listing::total(f, dollar);
    let total: i64 = query_one(c, &total.sql, &values(&total.args)).await?.get(0);
    if total <= 0 {
        // Nothing matches: no index walk looking for rows that are not there.
        return Ok(listing::finish(Vec::new(), f.per_page, 0));
    }
    let wanted = f.per_page as usize + 1;
    let mut items = Vec::with_capacity(wanted);
    let mut skip = listing::offset(f);
    for step in listing::steps(f) {
        if items.len() >= wanted {
            break;
        }
        if skip > 0
            && let Some(held) = listing::step_total(f, step, dollar)
        {
            let held: i64 = query_one(c, &held.sql, &values(&held.args)).await?.get(0);
            let held = u64::try_from(held).unwrap_or(0);
            if skip >= held {
                skip -= held;
                continue;
            }
        }
        let page = listing::page(f, step, wanted - items.len(), skip, None, dollar);
        skip = 0;
        for r in query(c, &page.sql, &values(&page.args)).await? {
            items.push(incident_from_row(&r, false)?);
        }
    }
    Ok(listing::finish(items, f.per_page, total))
}

#[async_trait]
impl crate::IncidentStore for PgStore {
    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError> {
        let c = self.client().await?;
        let incident = match key {
            IncidentKey::Id(id) => load_incident(&c, *id).await?,
            IncidentKey::Number(n) => {
                let sql = format!("SELECT {INCIDENT_COLUMNS}, {INCIDENT_RAW} FROM incidents WHERE year = $1 AND seq = $2");
                query_opt(&c, &sql, &[&n.year, &n.seq]).await?.map(|r| incident_from_row(&r, true)).transpose()?
            }
        };
        let Some(mut incident) = incident else { return Ok(None) };
        if let Some(job) = crate::triage::trace_to_fetch(incident.triage.as_ref())
            && let Some(row) = query_opt(&c, "SELECT trace FROM triage_traces WHERE job_id = $1", &[&job]).await?
        {
            crate::triage::put_trace(incident.triage.as_mut(), row.get(0))?;
        }
        Ok(Some(incident))
    }

    async fn list_incidents(&self, f: &IncidentFilter) -> Result<IncidentPage, StoreError> {
        let mut c = self.client().await?;
        // One snapshot for the whole page: the total and every index walk (a severity listing
        // takes up to five, one per severity, and counts the ones an offset skips) see the same
        // rows, as SQLite's one read transaction does, so an incident triaged to another severity
        // between two walks is neither shown twice nor missed, and the total matches the items.
        // Read only and REPEATABLE READ: no lock, no serialization failure, no write. It costs
        // the BEGIN's round trip and no more: the transaction ends by being dropped, which queues
        // its ROLLBACK (for a read-only transaction the same as a COMMIT) on the connection
        // without waiting for the answer; whoever uses the connection next is behind it.
        let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        list_in(&tx, f).await
    }

    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError> {
        let c = self.client().await?;
        let s = source.map(SourceName::as_str);
        // Both planned for these parameters (see `query_planned`): a generic plan cannot drop the
        // `IS NULL` arm, and scanned and sorted every dead letter for each page.
        let total: i64 =
            query_planned(&**c, "SELECT COUNT(*) FROM dead_letters WHERE ($1::text IS NULL OR source = $1)", &[(&s, Type::TEXT)])
                .await?
                .first()
                .map_or(0, |r| r.get(0));
        let rows = query_planned(
            &**c,
            "SELECT id, source, reason, received_at, request_id, queue_id, raw_payload FROM dead_letters \
             WHERE ($1::text IS NULL OR source = $1) ORDER BY received_at DESC, id DESC LIMIT $2 OFFSET $3",
            &[(&s, Type::TEXT), (&i64::from(page.per_page), Type::INT8), (&(page.offset() as i64), Type::INT8)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let source: String = r.get(1);
            let raw: Vec<u8> = r.get(6);
            out.push(DeadLetter {
                id: r.get(0),
                source: SourceName::parse(&source).map_err(corrupt("source"))?,
                reason: r.get(2),
                received_at: r.get(3),
                request_id: r.get(4),
                queue_id: r.get(5),
                raw_payload: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        Ok((out, count(total)))
    }

    async fn activity(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Activity, StoreError> {
        let since = since.max(until - ACTIVITY_SPAN);
        let c = self.client().await?;
        let mut a = Activity::default();
        let rows = query(
            &c,
            "SELECT source, to_timestamp(floor(extract(epoch FROM received_at) / 3600) * 3600) AS hour, \
             SUM(CASE WHEN status BETWEEN 200 AND 299 THEN COALESCE(refused_count, 1) ELSE 0 END)::BIGINT, \
             SUM(CASE WHEN status BETWEEN 200 AND 299 THEN 0 ELSE COALESCE(refused_count, 1) END)::BIGINT \
             FROM deliveries WHERE received_at >= $1 AND received_at < $2 GROUP BY source, hour ORDER BY source, hour",
            &[&since, &until],
        )
        .await?;
        for r in rows {
            a.deliveries.push(HourlyDeliveries { source: r.get(0), hour: r.get(1), ok: count(r.get(2)), failed: count(r.get(3)) });
        }
        let pairs = |rows: Vec<Row>| rows.into_iter().map(|r| (r.get::<_, String>(0), count(r.get(1)))).collect::<Vec<_>>();
        // Incidents from their id's index on (`first_incident_id_since`), not the whole table.
        let first = crate::model::first_incident_id_since(since);
        a.incidents_by_severity = pairs(
            query(
                &c,
                "SELECT severity, COUNT(*) FROM incidents WHERE id >= $3 AND received_at >= $1 AND received_at < $2 \
                 GROUP BY severity ORDER BY severity",
                &[&since, &until, &first],
            )
            .await?,
        );
        a.verdicts = pairs(
            query(
                &c,
                "SELECT v, COUNT(*) FROM (SELECT triage::jsonb ->> 'verdict' AS v FROM incidents \
                 WHERE id >= $3 AND received_at >= $1 AND received_at < $2 AND triage IS NOT NULL) t WHERE v IS NOT NULL GROUP BY v ORDER BY v",
                &[&since, &until, &first],
            )
            .await?,
        );
        for r in query(&c, "SELECT status, COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running') GROUP BY status", &[]).await? {
            let status: String = r.get(0);
            match status.as_str() {
                "pending" => a.triage_pending = count(r.get(1)),
                _ => a.triage_running = count(r.get(1)),
            }
        }
        Ok(a)
    }
}

/// PostgreSQL's numbered placeholders.
fn dollar(n: usize) -> String {
    format!("${n}")
}

/// A listing's values as the driver takes them.
fn values<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Year(y) => y as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}
