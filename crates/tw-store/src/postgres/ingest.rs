//! The intake's writes: an incident or a duplicate, a queued event, a dead letter.
//!
//! How a duplicate is detected, across processes: every batch takes the same transaction-scoped
//! advisory lock first, so batches of all processes run one after another. Inside, the alerts
//! already known (`(source, dedupe_key)`, a unique index) count a delivery; the others get
//! the next numbers of their year's counter row and are inserted, all with multi-row statements.
//! Numbers are therefore gap-free: no batch can lose an insert to a concurrent one after taking
//! its numbers.

use super::{PgStore, execute, execute_pipelined, pg_opt_text, pg_text, query_one, query_planned};
use crate::StoreError;
use crate::model::*;
use crate::triage::TriageState;
use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::types::{ToSql, Type};
use tw_core::IncidentNumber;
use uuid::Uuid;

/// The advisory lock every ingest transaction holds ("tw-ingst").
pub(super) const INGEST_LOCK: i64 = 0x7477_2d69_6e67_7374;

/// The incidents that already hold the batch's alerts: `($1[k], $2[k])` is the source and dedupe
/// key of the batch's `k`-th alert; each row is that `k` (from 1), the incident's id, year and
/// number. `IS NOT DISTINCT FROM` is `=` here (sources are never null) that no index can take, so
/// `incidents_by_source` cannot be chosen over the dedupe index on a tie; the `LIMIT` keeps the
/// lookup a probe per key (a nested loop) rather than a join the planner may hash.
pub(super) const KNOWN_ALERTS: &str = "SELECT k.ord, x.id, x.year, x.seq \
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(source, dedupe_key, ord) \
     CROSS JOIN LATERAL (SELECT i.id, i.year, i.seq FROM incidents i \
         WHERE i.dedupe_key = k.dedupe_key AND i.source IS NOT DISTINCT FROM k.source LIMIT 1) AS x";

/// Deliveries of one alert within a batch: the requests' indexes, in arrival order.
struct Group {
    source: String,
    dedupe_key: String,
    items: Vec<usize>,
}

/// Creates incidents for `reqs` or counts them on existing ones, in the caller's transaction.
/// Returns one outcome per request, in order.
pub(super) async fn ingest_in(tx: &Transaction<'_>, reqs: &[&IngestRequest]) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    for (i, req) in reqs.iter().enumerate() {
        let k = (pg_text(req.source.as_str()), pg_text(&req.dedupe_key()));
        match by_key.get(&k) {
            Some(&g) => groups[g].items.push(i),
            None => {
                by_key.insert(k.clone(), groups.len());
                groups.push(Group { source: k.0, dedupe_key: k.1, items: vec![i] });
            }
        }
    }
    let last_at = |g: &Group| g.items.iter().map(|&i| reqs[i].received_at).max().unwrap_or_else(Utc::now);
    let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; reqs.len()];

    // Alerts already known: found by one probe per key in the dedupe index, then every delivery
    // of the batch counted on them. The probe is prepared once: the source is compared in a form
    // no index can use, so `incidents_dedupe_key` (which leads with the key) is the only index
    // that answers it and the cached plan is the same on an empty, never-analyzed table as at a
    // million rows (schema v14; `a_cached_probe_plan_reads_the_dedupe_index`). Sent with the lock
    // in one round trip: the probe runs once the lock is held, so what it finds stays true until
    // the commit.
    let sources: Vec<&str> = groups.iter().map(|g| g.source.as_str()).collect();
    let keys: Vec<&str> = groups.iter().map(|g| g.dedupe_key.as_str()).collect();
    let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
    let probe = tx.prepare_cached(KNOWN_ALERTS).await?;
    let (_, found) = futures_util::future::try_join(async { Ok::<_, StoreError>(tx.execute(&lock, &[&INGEST_LOCK]).await?) }, async {
        Ok(tx.query(&probe, &[&sources, &keys]).await?)
    })
    .await?;
    let mut is_known = vec![false; groups.len()];
    if !found.is_empty() {
        // Incident id -> the batch's group and the incident's number.
        let known: HashMap<Uuid, (usize, IncidentNumber)> =
            found.iter().map(|r| (r.get(1), ((r.get::<_, i64>(0) - 1) as usize, IncidentNumber::new(r.get(2), r.get(3))))).collect();
        let ids: Vec<Uuid> = known.keys().copied().collect();
        let hit = |id: &Uuid| &groups[known[id].0];
        let found_sources: Vec<&str> = ids.iter().map(|id| hit(id).source.as_str()).collect();
        let found_keys: Vec<&str> = ids.iter().map(|id| hit(id).dedupe_key.as_str()).collect();
        let counts: Vec<i64> = ids.iter().map(|id| hit(id).items.len() as i64).collect();
        let ats: Vec<DateTime<Utc>> = ids.iter().map(|id| last_at(hit(id))).collect();
        // Rare (a replay, a retried delivery): planned for its parameters like any write whose
        // cached plan could be made on an empty table. The key is checked again, so that an
        // incident whose key changed since the probe (every writer of keys holds the ingest lock:
        // none can) is not counted; its alert would then be inserted, and the unique index decide.
        let counted = query_planned(
            &**tx,
            "UPDATE incidents i SET delivery_count = i.delivery_count + d.n, last_delivery_at = GREATEST(i.last_delivery_at, d.at) \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[]) AS d(id, source, dedupe_key, n, at) \
             WHERE i.id = d.id AND i.source = d.source AND i.dedupe_key = d.dedupe_key \
             RETURNING i.id, i.delivery_count",
            &[
                (&ids, Type::UUID_ARRAY),
                (&found_sources, Type::TEXT_ARRAY),
                (&found_keys, Type::TEXT_ARRAY),
                (&counts, Type::INT8_ARRAY),
                (&ats, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
        for row in counted {
            let Some(&(g, number)) = known.get(&row.get::<_, Uuid>(0)) else { continue };
            is_known[g] = true;
            let incident = IncidentRef { id: row.get(0), number };
            let total: i64 = row.get(1);
            let n = groups[g].items.len() as i64;
            for (k, &i) in groups[g].items.iter().enumerate() {
                let delivery_count = (total - (n - 1 - k as i64)).max(1) as u64;
                outcomes[i] = Some(IngestOutcome::Duplicate { incident, delivery_count });
            }
        }
    }

    // New alerts: numbers for the whole batch from each year's counter row, in arrival order.
    let new: Vec<usize> = (0..groups.len()).filter(|&g| !is_known[g]).collect();
    let mut per_year: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &g in &new {
        per_year.entry(reqs[groups[g].items[0]].received_at.year()).or_default().push(g);
    }
    let mut numbers: HashMap<usize, IncidentNumber> = HashMap::new();
    for (year, gs) in &per_year {
        let n = gs.len() as i64;
        let last: i64 = query_one(
            tx,
            "INSERT INTO incident_counters (year, last_seq) VALUES ($1, $2) \
             ON CONFLICT (year) DO UPDATE SET last_seq = incident_counters.last_seq + EXCLUDED.last_seq RETURNING last_seq",
            &[year, &n],
        )
        .await?
        .get(0);
        for (k, &g) in gs.iter().enumerate() {
            numbers.insert(g, IncidentNumber::new(*year, last - n + 1 + k as i64));
        }
    }

    let mut rows = IncidentRows::default();
    let mut jobs = JobRows::default();
    for &g in &new {
        let group = &groups[g];
        let req = reqs[group.items[0]];
        let a = &req.alert;
        let id = Uuid::now_v7();
        let number = numbers[&g];
        let job = match (req.auto_triage, &req.playbook) {
            // Same transaction: no incident from an auto-triage source without its job.
            (true, Some(playbook)) => {
                let job_id = crate::rows::new_id("job");
                jobs.push(&job_id, id, playbook, req.triage_max_attempts, req.received_at);
                Some((TriageState::queued(&job_id, playbook).to_text(), job_id))
            }
            _ => None,
        };
        rows.ids.push(id);
        rows.years.push(number.year);
        rows.seqs.push(number.seq);
        rows.sources.push(group.source.clone());
        rows.formats.push(a.format.as_str());
        rows.titles.push(pg_text(&a.title));
        rows.descriptions.push(pg_opt_text(&a.description));
        rows.severities.push(a.severity.as_str());
        rows.vendor_severities.push(pg_opt_text(&a.vendor_severity));
        rows.event_types.push(pg_opt_text(&a.event_type));
        rows.event_times.push(a.event_time);
        rows.received.push(req.received_at);
        rows.external_ids.push(pg_opt_text(&a.external_id));
        rows.dedupe_keys.push(group.dedupe_key.clone());
        // JSON text never holds a raw NUL: serde_json escapes control characters.
        rows.entities.push(serde_json::to_string(&a.entities).map_err(crate::rows::corrupt("entities"))?);
        rows.raws.push(&req.raw);
        rows.delivery_counts.push(group.items.len() as i64);
        rows.last_delivery.push(last_at(group));
        rows.auto_triage.push(req.auto_triage);
        rows.playbooks.push(pg_opt_text(&req.playbook));
        rows.request_ids.push(pg_opt_text(&req.request_id));
        let (triage, job_id) = job.map_or((None, None), |(t, j)| (Some(t), Some(j)));
        rows.triage.push(triage);
        rows.triage_job_ids.push(job_id);
        let incident = IncidentRef { id, number };
        for (k, &i) in group.items.iter().enumerate() {
            outcomes[i] = Some(if k == 0 {
                IngestOutcome::Created(incident)
            } else {
                IngestOutcome::Duplicate { incident, delivery_count: k as u64 + 1 }
            });
        }
    }

    // The sources' delivery counters, once per source.
    let mut per_source: BTreeMap<&str, (i64, DateTime<Utc>)> = BTreeMap::new();
    for req in reqs {
        let e = per_source.entry(req.source.as_str()).or_insert((0, req.received_at));
        e.0 += 1;
        e.1 = e.1.max(req.received_at);
    }
    let names: Vec<&str> = per_source.keys().copied().collect();
    let ns: Vec<i64> = per_source.values().map(|v| v.0).collect();
    let ats: Vec<DateTime<Utc>> = per_source.values().map(|v| v.1).collect();
    let source_params: [&(dyn ToSql + Sync); 3] = [&names, &ns, &ats];
    // The writes of the batch in one round trip, incidents before what refers to them.
    let (incident_params, payload_params, job_params) = (rows.params(), rows.payload_params(), jobs.params());
    let mut writes: Vec<(&str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(4);
    if !rows.ids.is_empty() {
        writes.push((IncidentRows::INSERT, &incident_params));
        // The payloads in their own table, so that listings read narrow rows.
        writes.push((IncidentRows::INSERT_PAYLOADS, &payload_params));
    }
    if !jobs.ids.is_empty() {
        writes.push((JobRows::INSERT, &job_params));
    }
    writes.push((
        "UPDATE sources s SET delivery_count = s.delivery_count + d.n, last_delivery_at = GREATEST(s.last_delivery_at, d.at) \
         FROM unnest($1::text[], $2::int8[], $3::timestamptz[]) AS d(name, n, at) WHERE s.name = d.name",
        &source_params,
    ));
    let done = execute_pipelined(tx, &writes).await?;
    if !rows.ids.is_empty() && done[0] != rows.ids.len() as u64 {
        return Err(StoreError::Corrupt(format!("inserted {} of {} incidents", done[0], rows.ids.len())));
    }
    outcomes.into_iter().map(|o| o.ok_or_else(|| StoreError::Corrupt("an ingest had no outcome".into()))).collect()
}

/// New incidents as columns, for one multi-row insert.
#[derive(Default)]
struct IncidentRows<'a> {
    ids: Vec<Uuid>,
    years: Vec<i32>,
    seqs: Vec<i64>,
    sources: Vec<String>,
    formats: Vec<&'static str>,
    titles: Vec<String>,
    descriptions: Vec<Option<String>>,
    severities: Vec<&'static str>,
    vendor_severities: Vec<Option<String>>,
    event_types: Vec<Option<String>>,
    event_times: Vec<Option<DateTime<Utc>>>,
    received: Vec<DateTime<Utc>>,
    external_ids: Vec<Option<String>>,
    dedupe_keys: Vec<String>,
    entities: Vec<String>,
    raws: Vec<&'a [u8]>,
    delivery_counts: Vec<i64>,
    last_delivery: Vec<DateTime<Utc>>,
    auto_triage: Vec<bool>,
    playbooks: Vec<Option<String>>,
    request_ids: Vec<Option<String>>,
    triage: Vec<Option<String>>,
    triage_job_ids: Vec<Option<String>>,
}

impl IncidentRows<'_> {
    const INSERT: &'static str = "INSERT INTO incidents (id, year, seq, source, format, title, description, severity, vendor_severity, event_type, \
         event_time, received_at, external_id, dedupe_key, entities, delivery_count, last_delivery_at, \
         auto_triage, playbook, request_id, triage, triage_job_id) \
         SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], $15::text[], \
         $16::int8[], $17::timestamptz[], $18::bool[], $19::text[], $20::text[], $21::text[], $22::text[])";
    const INSERT_PAYLOADS: &'static str =
        "INSERT INTO incident_payloads (incident_id, raw_payload) SELECT * FROM unnest($1::uuid[], $2::bytea[])";

    fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        [
            &self.ids,
            &self.years,
            &self.seqs,
            &self.sources,
            &self.formats,
            &self.titles,
            &self.descriptions,
            &self.severities,
            &self.vendor_severities,
            &self.event_types,
            &self.event_times,
            &self.received,
            &self.external_ids,
            &self.dedupe_keys,
            &self.entities,
            &self.delivery_counts,
            &self.last_delivery,
            &self.auto_triage,
            &self.playbooks,
            &self.request_ids,
            &self.triage,
            &self.triage_job_ids,
        ]
    }

    fn payload_params(&self) -> [&(dyn ToSql + Sync); 2] {
        [&self.ids, &self.raws]
    }
}

/// New auto-triage jobs as columns.
#[derive(Default)]
struct JobRows {
    ids: Vec<String>,
    incidents: Vec<Uuid>,
    playbooks: Vec<String>,
    max_attempts: Vec<i64>,
    run_after: Vec<DateTime<Utc>>,
}

impl JobRows {
    fn push(&mut self, id: &str, incident: Uuid, playbook: &str, max_attempts: u32, at: DateTime<Utc>) {
        self.ids.push(id.to_string());
        self.incidents.push(incident);
        self.playbooks.push(pg_text(playbook));
        self.max_attempts.push(i64::from(max_attempts.max(1)));
        self.run_after.push(at);
    }

    const INSERT: &str = "INSERT INTO triage_jobs (id, incident_id, playbook, variables, status, max_attempts, run_after, requested_by, created_at) \
         SELECT id, incident_id, playbook, '{}', 'pending', max_attempts, run_after, 'auto', run_after \
         FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int8[], $5::timestamptz[]) \
              AS j(id, incident_id, playbook, max_attempts, run_after)";

    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [&self.ids, &self.incidents, &self.playbooks, &self.max_attempts, &self.run_after]
    }
}

/// Stores queued events in one statement; returns their ids in order.
pub(super) async fn enqueue_in(tx: &impl GenericClient, events: &[&NewQueuedEvent]) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = events.iter().map(|_| crate::rows::new_id("queue")).collect();
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let raws: Vec<&[u8]> = events.iter().map(|e| e.raw.as_slice()).collect();
    let keys: Vec<String> = events.iter().map(|e| pg_text(&e.request_key)).collect();
    let received: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    let request_ids: Vec<Option<String>> = events.iter().map(|e| pg_opt_text(&e.request_id)).collect();
    execute(
        tx,
        "INSERT INTO queue (id, source, raw_payload, request_key, received_at, request_id, status) \
         SELECT id, source, raw, key, at, rid, 'pending' \
         FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::timestamptz[], $6::text[]) AS q(id, source, raw, key, at, rid)",
        &[&ids, &sources, &raws, &keys, &received, &request_ids],
    )
    .await?;
    Ok(ids)
}

/// Keeps an event that could not be normalized, in the caller's transaction.
pub(super) async fn insert_dead_letter(tx: &impl GenericClient, l: &NewDeadLetter) -> Result<String, StoreError> {
    let id = crate::rows::new_id("dl");
    execute(
        tx,
        "INSERT INTO dead_letters (id, source, reason, raw_payload, received_at, request_id, queue_id, request_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &l.source.as_str(),
            &pg_text(&l.reason),
            &l.raw,
            &l.received_at,
            &pg_opt_text(&l.request_id),
            &l.queue_id,
            &pg_opt_text(&l.request_key),
        ],
    )
    .await?;
    Ok(id)
}

#[async_trait]
impl crate::IngestStore for PgStore {
    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        self.writer.ingest(req).await
    }

    async fn enqueue(&self, event: NewQueuedEvent) -> Result<String, StoreError> {
        self.writer.enqueue(event).await
    }

    async fn dead_letter(&self, letter: NewDeadLetter) -> Result<String, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = insert_dead_letter(&tx, &letter).await?;
        tx.commit().await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::{KNOWN_ALERTS, ingest_in};
    use crate::model::{IngestOutcome, IngestRequest, test_request as request};

    /// What one batch's outcomes say: `(created, number, delivery count)` per request.
    fn summary(outcomes: &[IngestOutcome]) -> Vec<(bool, i64, u64)> {
        outcomes
            .iter()
            .map(|o| match o {
                IngestOutcome::Created(i) => (true, i.number.seq, 1),
                IngestOutcome::Duplicate { incident, delivery_count } => (false, incident.number.seq, *delivery_count),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_counts_known_alerts_and_numbers_the_new_ones_without_gaps() {
        let Some((db, _)) = crate::postgres::plans::migrated().await else { return };
        let pool = super::super::pool(&db.url, &crate::StoreOptions::default()).unwrap();
        let batch = |reqs: Vec<IngestRequest>| {
            let pool = pool.clone();
            async move {
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                let out = ingest_in(&tx, &reqs.iter().collect::<Vec<_>>()).await.unwrap();
                tx.commit().await.unwrap();
                summary(&out)
            }
        };
        // Known before the batch: edr's a1 (number 1) and a2 (2), delivered once each.
        let first = batch(vec![request("edr", Some("a1"), "k1"), request("edr", Some("a2"), "k2")]).await;
        assert_eq!(first, vec![(true, 1, 1), (true, 2, 1)]);
        // New, known, the same known alert again, new, a known key under another source, a
        // second alert known, and one without an id (its request decides).
        let second = batch(vec![
            request("edr", Some("n1"), "k3"),
            request("edr", Some("a2"), "k4"),
            request("edr", Some("a2"), "k5"),
            request("edr", Some("n2"), "k6"),
            request("siem", Some("a1"), "k7"),
            request("edr", Some("a1"), "k8"),
            request("edr", None, "k9"),
        ])
        .await;
        assert_eq!(second, vec![(true, 3, 1), (false, 2, 2), (false, 2, 3), (true, 4, 1), (true, 5, 1), (false, 1, 2), (true, 6, 1)]);
        // The same request again is known by its key; the stored counts add up.
        assert_eq!(batch(vec![request("edr", None, "k9")]).await, vec![(false, 6, 2)]);
        let c = crate::testing::connect(&db.url).await.unwrap();
        let counts: Vec<(i64, i64)> = c
            .query("SELECT seq, delivery_count FROM incidents ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(counts, vec![(1, 2), (2, 3), (3, 1), (4, 1), (5, 1), (6, 2)]);
    }

    /// The plan PostgreSQL caches for the probe of known alerts (a generic plan, as a prepared
    /// statement gets after five runs).
    async fn cached_plan(c: &tokio_postgres::Client) -> String {
        c.batch_execute(&format!("SET plan_cache_mode = force_generic_plan; PREPARE known_alerts (text[], text[]) AS {KNOWN_ALERTS}"))
            .await
            .unwrap();
        let rows = c.query("EXPLAIN EXECUTE known_alerts ('{a,b}', '{k1,k2}')", &[]).await.unwrap();
        c.batch_execute("DEALLOCATE known_alerts; RESET plan_cache_mode").await.unwrap();
        crate::postgres::plans::text(&rows)
    }

    #[tokio::test]
    async fn a_cached_probe_plan_reads_the_dedupe_index() {
        let Some((_db, c)) = crate::postgres::plans::migrated().await else { return };
        let probes_the_key = |plan: &str| {
            plan.contains("Nested Loop")
                && plan.contains("Index Scan using incidents_dedupe_key")
                && plan.contains("Index Cond: (dedupe_key = k.dedupe_key)")
                && !plan.contains("Seq Scan on incidents")
                && !plan.contains("incidents_by_source")
        };
        // Empty and never analyzed: where a tie once chose `incidents_by_source`.
        let empty = cached_plan(&c).await;
        assert!(probes_the_key(&empty), "{empty}");
        // Two sources of 30,000 incidents each, analyzed.
        c.batch_execute(
            "INSERT INTO incidents (id, year, seq, source, format, title, severity, received_at, dedupe_key, entities, \
                 last_delivery_at, auto_triage) \
             SELECT gen_random_uuid(), 2026, g, 'src' || g % 2, 'generic', 't', 'high', now(), 'ext:' || g, '[]', now(), false \
             FROM generate_series(1, 60000) AS g; ANALYZE incidents",
        )
        .await
        .unwrap();
        let filled = cached_plan(&c).await;
        assert!(probes_the_key(&filled), "{filled}");
        // And it finds what it should: the k-th key's incident, by source.
        let rows = c
            .query(&format!("{KNOWN_ALERTS} ORDER BY 1"), &[&vec!["src1", "src0", "src1"], &vec!["ext:7", "ext:7", "ext:nope"]])
            .await
            .unwrap();
        let found: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(3))).collect();
        assert_eq!(found, vec![(1, 7)]);
    }
}
