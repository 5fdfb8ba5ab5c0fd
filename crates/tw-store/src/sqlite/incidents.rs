//! Reading incidents and dead letters.

use super::INCIDENT_RAW;
use super::{SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::StoreError;
use crate::listing::{self, Arg};
use crate::model::*;
use crate::rows::{INCIDENT_COLUMNS, IncidentRow, corrupt};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tw_core::SourceName;
use uuid::Uuid;

/// An incident from a row of [`INCIDENT_COLUMNS`] (and [`INCIDENT_RAW`] after them when `with_raw`).
pub(super) fn incident_from_row(r: &Row<'_>, with_raw: bool) -> Result<Incident, StoreError> {
    let id: String = r.get(0)?;
    IncidentRow {
        id: Uuid::parse_str(&id).map_err(corrupt("incident id"))?,
        year: r.get(1)?,
        seq: r.get(2)?,
        source: r.get(3)?,
        format: r.get(4)?,
        title: r.get(5)?,
        description: r.get(6)?,
        severity: r.get(7)?,
        vendor_severity: r.get(8)?,
        status: r.get(9)?,
        event_type: r.get(10)?,
        event_time: parse_opt_ts(r.get(11)?)?,
        received_at: parse_ts(&r.get::<_, String>(12)?)?,
        external_id: r.get(13)?,
        entities: r.get(14)?,
        delivery_count: r.get(15)?,
        last_delivery_at: parse_ts(&r.get::<_, String>(16)?)?,
        auto_triage: r.get(17)?,
        playbook: r.get(18)?,
        request_id: r.get(19)?,
        triage: r.get(20)?,
        raw: if with_raw { r.get(21)? } else { None },
    }
    .decode()
}

/// One incident with its raw payload.
pub(super) fn load_incident(conn: &Connection, id: &str) -> Result<Option<Incident>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS}, {INCIDENT_RAW} FROM incidents WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => incident_from_row(r, true).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl crate::IncidentStore for SqliteStore {
    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError> {
        let key = key.clone();
        self.read(move |conn, _| {
            let (cond, a, b): (&str, String, i64) = match &key {
                IncidentKey::Id(id) => ("id = ?1 AND ?2 = 0", id.to_string(), 0),
                IncidentKey::Number(n) => ("year = ?1 AND seq = ?2", n.year.to_string(), n.seq),
            };
            let sql = format!("SELECT {INCIDENT_COLUMNS}, {INCIDENT_RAW} FROM incidents WHERE {cond}");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![a, b])?;
            let Some(r) = rows.next()? else { return Ok(None) };
            let mut incident = incident_from_row(r, true)?;
            if let Some(job) = crate::triage::trace_to_fetch(incident.triage.as_ref()) {
                let trace: Option<String> =
                    conn.prepare_cached("SELECT trace FROM triage_traces WHERE job_id = ?1")?.query_row([job], |r| r.get(0)).optional()?;
                if let Some(trace) = trace {
                    crate::triage::put_trace(incident.triage.as_mut(), &trace)?;
                }
            }
            Ok(Some(incident))
        })
        .await
    }

    async fn list_incidents(&self, f: &IncidentFilter) -> Result<IncidentPage, StoreError> {
        let f = f.clone();
        self.read(move |conn, _| {
            let total = listing::total(&f, question);
            let count = |st: &listing::Statement<'_>| -> Result<i64, StoreError> {
                Ok(conn.prepare_cached(&st.sql)?.query_row(params_from_iter(&st.args), |r| r.get(0))?)
            };
            // One read transaction: the page and the total see the same snapshot.
            conn.execute_batch("BEGIN")?;
            let read = || -> Result<(Vec<Incident>, i64), StoreError> {
                let total = count(&total)?;
                if total <= 0 {
                    // Nothing matches: no index walk looking for rows that are not there.
                    return Ok((Vec::new(), 0));
                }
                let wanted = f.per_page as usize + 1;
                let mut items = Vec::with_capacity(wanted);
                let mut skip = listing::offset(&f);
                for step in listing::steps(&f) {
                    if items.len() >= wanted {
                        break;
                    }
                    if skip > 0
                        && let Some(held) = listing::step_total(&f, step, question)
                    {
                        let held = u64::try_from(count(&held)?).unwrap_or(0);
                        if skip >= held {
                            skip -= held;
                            continue;
                        }
                    }
                    let index = narrowest_index(conn, &listing::walk_filters(&f, step))?;
                    let page = listing::page(&f, step, wanted - items.len(), skip, index, question);
                    skip = 0;
                    let mut stmt = conn.prepare_cached(&page.sql)?;
                    let mut rows = stmt.query(params_from_iter(&page.args))?;
                    while let Some(r) = rows.next()? {
                        items.push(incident_from_row(r, false)?);
                    }
                }
                Ok((items, total))
            };
            let result = read();
            conn.execute_batch("COMMIT")?;
            let (items, total) = result?;
            Ok(listing::finish(items, f.per_page, total))
        })
        .await
    }

    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError> {
        let source = source.cloned();
        self.read(move |conn, _| {
            let s = source.as_ref().map(SourceName::as_str);
            let total: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters WHERE (?1 IS NULL OR source = ?1)", [s], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, source, reason, received_at, request_id, queue_id, raw_payload FROM dead_letters \
                 WHERE (?1 IS NULL OR source = ?1) ORDER BY received_at DESC, id DESC LIMIT +?2 OFFSET +?3",
            )?;
            let mut rows = stmt.query(params![s, page.per_page, page.offset() as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let source: String = r.get(1)?;
                let raw: Vec<u8> = r.get(6)?;
                out.push(DeadLetter {
                    id: r.get(0)?,
                    source: SourceName::parse(&source).map_err(corrupt("source"))?,
                    reason: r.get(2)?,
                    received_at: parse_ts(&r.get::<_, String>(3)?)?,
                    request_id: r.get(4)?,
                    queue_id: r.get(5)?,
                    raw_payload: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            Ok((out, total.max(0) as u64))
        })
        .await
    }

    async fn activity(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Activity, StoreError> {
        let since_at = since.max(until - ACTIVITY_SPAN);
        let (since, until) = (ts(since_at), ts(until));
        self.read(move |conn, _| {
            let mut a = Activity::default();
            // Times are stored as fixed-width RFC 3339 text: their first 13 characters are the hour.
            let mut stmt = conn.prepare_cached(
                "SELECT source, substr(received_at, 1, 13) AS hour, \
                 SUM(CASE WHEN status BETWEEN 200 AND 299 THEN COALESCE(refused_count, 1) ELSE 0 END), \
                 SUM(CASE WHEN status BETWEEN 200 AND 299 THEN 0 ELSE COALESCE(refused_count, 1) END) \
                 FROM deliveries WHERE received_at >= ?1 AND received_at < ?2 GROUP BY source, hour ORDER BY source, hour",
            )?;
            let mut rows = stmt.query(params![since, until])?;
            while let Some(r) = rows.next()? {
                let hour: String = r.get(1)?;
                a.deliveries.push(HourlyDeliveries {
                    source: r.get(0)?,
                    hour: parse_ts(&format!("{hour}:00:00Z"))?,
                    ok: r.get::<_, i64>(2)?.max(0) as u64,
                    failed: r.get::<_, i64>(3)?.max(0) as u64,
                });
            }
            // Incidents from their id's index on (`first_incident_id_since`), not the whole table.
            let first = crate::model::first_incident_id_since(since_at).to_string();
            let counts = |sql: &str| -> Result<Vec<(String, u64)>, StoreError> {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(params![since, until, first])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64));
                }
                Ok(out)
            };
            a.incidents_by_severity = counts(ACTIVITY_SEVERITIES)?;
            a.verdicts = counts(ACTIVITY_VERDICTS)?;
            let mut stmt =
                conn.prepare_cached("SELECT status, COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running') GROUP BY status")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (status, n): (String, i64) = (r.get(0)?, r.get(1)?);
                match status.as_str() {
                    "pending" => a.triage_pending = n.max(0) as u64,
                    _ => a.triage_running = n.max(0) as u64,
                }
            }
            Ok(a)
        })
        .await
    }
}

/// The index a walk with two or three filters must take: the one of the filter that holds the
/// fewest incidents (from `incident_counts`, a few rows). Without statistics SQLite picks one of
/// the filters' indexes by its shape and tests the others on every entry: `source = <a rare
/// source> AND status = 'open'` walked every open incident to fill its page (43 ms at 300,000
/// incidents). With one filter (or none) its choice is already the only one.
fn narrowest_index(conn: &Connection, filters: &[listing::Filter<'_>]) -> Result<Option<&'static str>, StoreError> {
    if filters.len() < 2 {
        return Ok(None);
    }
    let mut narrowest: Option<(i64, &'static str)> = None;
    for filter in filters {
        let sql = format!("SELECT COALESCE(SUM(n), 0) FROM incident_counts WHERE {} = ?1", filter.column);
        let held: i64 = conn.prepare_cached(&sql)?.query_row([filter.value], |r| r.get(0))?;
        if narrowest.is_none_or(|(least, _)| held < least) {
            narrowest = Some((held, filter.index));
        }
    }
    Ok(narrowest.map(|(_, index)| index))
}

/// The day's incidents by severity (`?1`..`?2` their receipt, `?3` the least id they can have).
/// `+severity`: grouped in a temporary b-tree, or SQLite would rather scan the whole severity index
/// in order than search the id's.
const ACTIVITY_SEVERITIES: &str = "SELECT severity, COUNT(*) FROM incidents WHERE id >= ?3 AND received_at >= ?1 AND received_at < ?2 \
     GROUP BY +severity ORDER BY 1";

/// The day's triage verdicts, with the same parameters.
const ACTIVITY_VERDICTS: &str = "SELECT v, COUNT(*) FROM (SELECT json_extract(triage, '$.verdict') AS v FROM incidents \
     WHERE id >= ?3 AND received_at >= ?1 AND received_at < ?2 AND triage IS NOT NULL AND json_valid(triage)) \
     WHERE v IS NOT NULL GROUP BY v ORDER BY v";

/// SQLite's numbered placeholders.
fn question(n: usize) -> String {
    format!("?{n}")
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Text(s) => ToSqlOutput::from(s),
            Arg::Year(y) => ToSqlOutput::from(y),
            Arg::Int(i) => ToSqlOutput::from(i),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentStatus::{Closed, Open};
    use tw_core::Severity;

    /// A walk with several filters takes the index of the filter that holds the fewest incidents,
    /// and the statement names it; one filter leaves SQLite's choice alone.
    #[test]
    fn a_walk_with_several_filters_takes_the_narrowest_filters_index() {
        let conn = super::super::plans::migrated();
        conn.execute_batch(
            "INSERT INTO incident_counts (source, status, severity, n) VALUES \
             ('rare', 'open', 'low', 3), ('common', 'open', 'low', 90000), ('common', 'closed', 'high', 40), ('common', 'open', 'high', 5000)",
        )
        .unwrap();
        let filter = |source: Option<&str>, status: Option<IncidentStatus>, severity: Option<Severity>| IncidentFilter {
            source: source.map(|s| SourceName::parse(s).unwrap()),
            severity,
            status,
            per_page: 50,
            start: PageStart::Offset(0),
            order: IncidentOrder::Newest,
        };
        let choose = |f: &IncidentFilter| narrowest_index(&conn, &listing::walk_filters(f, listing::steps(f)[0])).unwrap();
        assert_eq!(choose(&filter(Some("rare"), Some(Open), None)), Some("incidents_by_source"));
        assert_eq!(choose(&filter(Some("common"), Some(Closed), None)), Some("incidents_by_status"));
        assert_eq!(choose(&filter(Some("common"), Some(Open), Some(Severity::High))), Some("incidents_by_severity"));
        assert_eq!(choose(&filter(None, Some(Open), None)), None);

        let f = filter(Some("rare"), Some(Open), None);
        let step = listing::steps(&f)[0];
        let index = choose(&f);
        let page = listing::page(&f, step, 51, 0, index, question);
        let plan = super::super::plans::plan(&conn, &page.sql, params_from_iter(&page.args));
        assert!(plan.contains("SEARCH incidents USING INDEX incidents_by_source (source=?)"), "{plan}");
    }

    /// The day's counts search the incidents' id index from the day's least id, whatever the
    /// table holds: they never scan it (a million incidents over a year: 362 ms for a scan).
    #[test]
    fn the_days_counts_search_the_id_index_instead_of_scanning_incidents() {
        let conn = super::super::plans::migrated();
        for sql in [ACTIVITY_SEVERITIES, ACTIVITY_VERDICTS] {
            let plan = super::super::plans::plan(&conn, sql, params!["2026-01-01", "2026-01-02", "0"]);
            assert!(plan.contains("SEARCH incidents USING INDEX sqlite_autoindex_incidents_1 (id>?)"), "{plan}");
            assert!(!plan.contains("SCAN incidents"), "{plan}");
        }
    }
}
