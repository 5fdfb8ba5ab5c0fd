//! The intake's writes: an incident or a duplicate, a queued event, a dead letter.

use super::triage::{NewJob, insert_job_row};
use super::writer::Tallies;
use super::{SqliteStore, ts};
use crate::StoreError;
use crate::model::*;
use crate::rows::corrupt;
use crate::triage::TriageState;
use async_trait::async_trait;
use rusqlite::{Connection, params};
use tw_core::IncidentNumber;
use uuid::Uuid;

/// Creates the incident or counts the delivery on the existing one, in the caller's transaction;
/// the delivery is counted on its source in `counters`. Every statement is cached: this runs once
/// per accepted delivery.
pub(super) fn ingest_in(conn: &Connection, counters: &mut Tallies, req: &IngestRequest) -> Result<IngestOutcome, StoreError> {
    let dedupe_key = req.dedupe_key();
    let now = ts(req.received_at);
    counters.delivery(req.source.as_str(), now.clone());
    let year = chrono::Datelike::year(&req.received_at);
    // The next number: above both the counter (numbers are never reused) and the incidents of
    // this transaction (the counter is written once per batch, see `Tallies`). Two index reads,
    // for the first incident of a batch (or of a group replayed after a failure): the next ones
    // follow the number `counters` holds.
    let seq: i64 = match counters.last_number(year) {
        Some(last) => last + 1,
        None => conn
            .prepare_cached(
                "SELECT MAX(COALESCE((SELECT last_seq FROM incident_counters WHERE year = ?1), 0), \
                            COALESCE((SELECT MAX(seq) FROM incidents WHERE year = ?1), 0)) + 1",
            )?
            .query_row([year], |r| r.get(0))?,
    };
    let id = Uuid::now_v7();
    let a = &req.alert;
    let entities = serde_json::to_string(&a.entities).map_err(corrupt("entities"))?;
    // Same transaction: no incident from an auto-triage source without its job. The incident is
    // written once, with its triage state, and the job after it (it refers to the incident).
    let job = match (req.auto_triage, &req.playbook) {
        (true, Some(playbook)) => {
            let job_id = crate::rows::new_id("job");
            let state = TriageState::queued(&job_id, playbook).to_text();
            Some((job_id, playbook, state))
        }
        _ => None,
    };
    let id_text = id.to_string();
    // Inserted unless the alert is known: the unique (source, dedupe_key) index answers that in
    // the insert's own descent, so a new alert (the usual case) costs no lookup before it. A known
    // one leaves no trace of the attempt (the number is taken only once inserted) and is counted
    // on its incident below.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO incidents (id, year, seq, source, format, title, description, severity, vendor_severity, event_type, \
             event_time, received_at, external_id, dedupe_key, entities, last_delivery_at, auto_triage, playbook, request_id, \
             triage, triage_job_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?12, ?16, ?17, ?18, ?19, ?20) \
             ON CONFLICT (source, dedupe_key) DO NOTHING",
        )?
        .execute(params![
            id_text,
            year,
            seq,
            req.source.as_str(),
            a.format.as_str(),
            a.title,
            a.description,
            a.severity.as_str(),
            a.vendor_severity,
            a.event_type,
            a.event_time.map(ts),
            now,
            a.external_id,
            dedupe_key,
            entities,
            req.auto_triage,
            req.playbook,
            req.request_id,
            job.as_ref().map(|j| j.2.as_str()),
            job.as_ref().map(|j| j.0.as_str()),
        ])?;
    if inserted == 0 {
        let (id, year, seq, count): (String, i32, i64, i64) = conn
            .prepare_cached(
                "UPDATE incidents SET delivery_count = delivery_count + 1, last_delivery_at = ?3 \
                 WHERE source = ?1 AND dedupe_key = ?2 RETURNING id, year, seq, delivery_count",
            )?
            .query_row(params![req.source.as_str(), dedupe_key, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        let incident = IncidentRef { id: Uuid::parse_str(&id).map_err(corrupt("incident id"))?, number: IncidentNumber::new(year, seq) };
        return Ok(IngestOutcome::Duplicate { incident, delivery_count: count.max(0) as u64 });
    }
    counters.incident_number(year, seq);
    counters.incident_created(req.source.as_str(), a.severity.as_str());
    // The payload in its own table, so that listings read narrow rows.
    conn.prepare_cached("INSERT INTO incident_payloads (number, raw_payload) VALUES (?1, ?2)")?
        .execute(params![super::payload_key(year, seq), req.raw])?;
    if let Some((job_id, playbook, _)) = &job {
        let job = NewJob {
            id: job_id,
            incident_id: &id_text,
            playbook,
            variables: "{}",
            max_attempts: req.triage_max_attempts,
            requested_by: "auto",
            at: req.received_at,
        };
        insert_job_row(conn, &job)?;
    }
    Ok(IngestOutcome::Created(IncidentRef { id, number: IncidentNumber::new(year, seq) }))
}

pub(super) fn insert_dead_letter(conn: &Connection, l: &NewDeadLetter) -> Result<String, StoreError> {
    let id = crate::rows::new_id("dl");
    conn.prepare_cached(
        "INSERT INTO dead_letters (id, source, reason, raw_payload, received_at, request_id, queue_id, request_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![id, l.source.as_str(), l.reason, l.raw, ts(l.received_at), l.request_id, l.queue_id, l.request_key])?;
    Ok(id)
}

#[async_trait]
impl crate::IngestStore for SqliteStore {
    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        self.writer.write_replayable(move |conn, counters| ingest_in(conn, counters, &req)).await
    }

    async fn enqueue(&self, e: NewQueuedEvent) -> Result<String, StoreError> {
        self.writer
            .write_replayable(move |conn, _| {
                let id = crate::rows::new_id("queue");
                let now = ts(e.received_at);
                conn.prepare_cached(
                    "INSERT INTO queue (id, source, raw_payload, request_key, received_at, request_id, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
                )?
                .execute(params![id, e.source.as_str(), e.raw, e.request_key, now, e.request_id])?;
                Ok(id)
            })
            .await
    }

    async fn dead_letter(&self, letter: NewDeadLetter) -> Result<String, StoreError> {
        self.writer.write_replayable(move |conn, _| insert_dead_letter(conn, &letter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(alert_id: &str) -> IngestRequest {
        crate::model::test_request("siem", Some(alert_id), alert_id)
    }

    /// The payload the intake writes is the one the readers find: the key in Rust and in SQL agree,
    /// up to the largest number of a year.
    #[test]
    fn a_payload_is_read_back_by_the_key_it_was_written_under() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let mut counters = Tallies::default();
        let mut r = req("keyed");
        r.raw = br#"{"keyed": true}"#.to_vec();
        let created = ingest_in(&conn, &mut counters, &r).unwrap().incident();
        let sql = format!("SELECT {} FROM incidents WHERE id = ?1", super::super::INCIDENT_RAW);
        let raw: Vec<u8> = conn.query_row(&sql, [created.id.to_string()], |row| row.get(0)).unwrap();
        assert_eq!(raw, r.raw);
        for (year, seq) in [(2026, 1), (2026, 4_294_967_295), (9999, 17)] {
            let sql = concat!("SELECT ", super::super::payload_key_sql!("n"), " FROM (SELECT ?1 AS year, ?2 AS seq) AS n");
            let in_sql: i64 = conn.query_row(sql, params![year, seq], |row| row.get(0)).unwrap();
            assert_eq!(in_sql, super::super::payload_key(year, seq), "{year}-{seq}");
        }
    }

    /// In one batch (one transaction, one `Tallies`), a known alert between two new ones takes
    /// no number: its refused insert leaves no gap.
    #[test]
    fn a_known_alert_in_a_batch_takes_no_number() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let mut counters = Tallies::default();
        let mut ingest = |id: &str| ingest_in(&tx, &mut counters, &req(id)).unwrap();
        let seen = ingest("seen").incident();
        assert_eq!(seen.number.seq, 1);
        assert_eq!(ingest("new-a").incident().number.seq, 2);
        assert_eq!(ingest("seen"), IngestOutcome::Duplicate { incident: seen, delivery_count: 2 });
        assert_eq!(ingest("new-b").incident().number.seq, 3);
    }
}
