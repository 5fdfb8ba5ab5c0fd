//! Store contract tests: behaviour every `Store` implementation must have. Each check is a
//! function over `Arc<dyn Store>`, run on a real SQLite file and on a fresh PostgreSQL database
//! (skipped, with a visible line, where no PostgreSQL server answers; see `tw_store::testing`).

use chrono::{TimeZone, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use tw_core::{Alert, Format, IncidentNumber, Secret, Severity, SourceName};
use tw_store::prelude::*;
use tw_store::sqlite::SqliteStore;
use tw_store::testing::TestDatabase;
use tw_store::*;

fn name(s: &str) -> SourceName {
    SourceName::parse(s).unwrap()
}

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    let key = MasterKey::load_or_create(None, dir).unwrap();
    Arc::new(SqliteStore::open(&dir.join("tw.db"), key).unwrap())
}

fn source(n: &str, secret: &str) -> NewSource {
    NewSource { name: name(n), secret: Secret::new(secret), settings: SourceSettings::default() }
}

fn alert(id: Option<&str>) -> Alert {
    Alert {
        format: Format::Generic,
        title: "t".into(),
        description: None,
        severity: Severity::High,
        vendor_severity: Some("high".into()),
        event_time: None,
        external_id: id.map(str::to_string),
        event_type: Some("security_alert".into()),
        entities: vec![tw_core::Entity::new(tw_core::EntityKind::Ip, "192.0.2.1")],
    }
}

fn ingest_req(src: &str, id: Option<&str>, request_key: &str) -> IngestRequest {
    IngestRequest {
        source: name(src),
        alert: alert(id),
        raw: br#"{"raw": true}"#.to_vec(),
        request_key: request_key.into(),
        received_at: Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap(),
        request_id: Some("req-1".into()),
        auto_triage: false,
        playbook: None,
        triage_max_attempts: 3,
    }
}

/// A listing of the first `per_page` incidents that match.
fn filter(source: Option<&str>, severity: Option<Severity>, status: Option<IncidentStatus>, per_page: u32) -> IncidentFilter {
    IncidentFilter { source: source.map(name), severity, status, per_page, start: PageStart::Offset(0), order: IncidentOrder::Newest }
}

/// Every incident `f` matches, following the cursors from its first page to the one whose
/// `next` is `None`; checks every page on the way. Returns the numbers in listing order and the
/// total the pages reported.
async fn walk(store: &Arc<dyn Store>, f: &IncidentFilter) -> (Vec<IncidentNumber>, u64) {
    let mut f = f.clone();
    f.start = PageStart::Offset(0);
    let mut seen = Vec::new();
    let mut total = None;
    loop {
        let page = store.list_incidents(&f).await.unwrap();
        assert!(page.items.len() <= f.per_page as usize, "{f:?}: {} items", page.items.len());
        assert_eq!(*total.get_or_insert(page.total), page.total, "{f:?}: the total changed between pages");
        for i in &page.items {
            assert!(f.source.as_ref().is_none_or(|s| *s == i.source), "{f:?}: {i:?}");
            assert!(f.severity.is_none_or(|s| s == i.severity), "{f:?}: {i:?}");
            assert!(f.status.is_none_or(|s| s == i.status), "{f:?}: {i:?}");
            assert!(i.raw.is_none(), "listings do not read payloads");
        }
        seen.extend(page.items.iter().map(|i| i.incident_number));
        match page.next {
            Some(next) => {
                assert_eq!(page.items.len(), f.per_page as usize, "{f:?}: only a full page has a next");
                let last = page.items.last().unwrap();
                assert_eq!(next, last.incident_number, "{f:?}: next is the page's last item");
                f.start = match f.order {
                    IncidentOrder::Severity => PageStart::AfterSeverity(last.severity, next),
                    IncidentOrder::Newest | IncidentOrder::Oldest => PageStart::After(next),
                };
            }
            None => break,
        }
        assert!(seen.len() <= 10_000, "{f:?}: the cursor never ends");
    }
    (seen, total.unwrap())
}

async fn sources_round_trip(store: Arc<dyn Store>) {
    let created = store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    assert_eq!(created.secret.expose(), "edr-secret-1");
    assert!(!created.managed_by_config);
    assert!(matches!(store.create_source(source("edr", "other-secret")).await, Err(StoreError::SourceExists(_))));

    let patch = SourcePatch { auto_triage: Some(true), playbook: Some(Some("malware_triage".into())), ..Default::default() };
    let updated = store.update_source(&name("edr"), patch).await.unwrap();
    assert!(updated.settings.auto_triage);
    assert_eq!(updated.settings.playbook.as_deref(), Some("malware_triage"));
    assert_eq!(updated.secret.expose(), "edr-secret-1", "a settings patch keeps the secret");

    let until = Utc::now() + chrono::Duration::hours(1);
    let rotated = store.rotate_secret(&name("edr"), Secret::new("edr-secret-2"), until).await.unwrap();
    assert_eq!(rotated.secret.expose(), "edr-secret-2");
    let (old, old_until) = rotated.previous_secret.clone().unwrap();
    assert_eq!(old.expose(), "edr-secret-1");
    assert_eq!(old_until.timestamp(), until.timestamp());
    assert_eq!(rotated.verifying_secrets(Utc::now()).len(), 2);
    assert_eq!(rotated.verifying_secrets(until + chrono::Duration::seconds(1)).len(), 1);

    store.create_source(source("av", "av-secret-1")).await.unwrap();
    let names: Vec<String> = store.list_sources().await.unwrap().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["av", "edr"]);
    assert!(store.delete_source(&name("av")).await.unwrap());
    assert!(!store.delete_source(&name("av")).await.unwrap());
    assert!(store.get_source(&name("av")).await.unwrap().is_none());
    assert!(matches!(store.update_source(&name("av"), SourcePatch::default()).await, Err(StoreError::SourceNotFound(_))));
}

async fn a_duplicate_takes_no_number_even_beside_new_alerts(store: Arc<dyn Store>) {
    store.create_source(source("siem", "siem-secret")).await.unwrap();
    let first = store.ingest(ingest_req("siem", Some("seen"), "k0")).await.unwrap().incident();
    // Sent at once, so that they usually share a batch: the duplicate between two new alerts
    // leaves no gap in the numbers.
    let (a, dup, b) = tokio::join!(
        store.ingest(ingest_req("siem", Some("new-a"), "k1")),
        store.ingest(ingest_req("siem", Some("seen"), "k2")),
        store.ingest(ingest_req("siem", Some("new-b"), "k3")),
    );
    assert_eq!(dup.unwrap(), IngestOutcome::Duplicate { incident: first, delivery_count: 2 });
    let mut seqs = [a.unwrap().incident().number.seq, b.unwrap().incident().number.seq];
    seqs.sort();
    assert_eq!(seqs, [first.number.seq + 1, first.number.seq + 2]);
    let next = store.ingest(ingest_req("siem", Some("new-c"), "k4")).await.unwrap().incident();
    assert_eq!(next.number.seq, first.number.seq + 3);
}

async fn numbering_and_dedupe(store: Arc<dyn Store>) {
    store.create_source(source("siem", "siem-secret")).await.unwrap();
    let a = store.ingest(ingest_req("siem", Some("alert-1"), "k1")).await.unwrap();
    let IngestOutcome::Created(first) = a else { panic!("expected created, got {a:?}") };
    assert_eq!(first.number.to_string(), "INC-2024-0001");

    // Same alert id, another request: a duplicate that counts the delivery.
    let b = store.ingest(ingest_req("siem", Some("alert-1"), "k2")).await.unwrap();
    assert_eq!(b, IngestOutcome::Duplicate { incident: first, delivery_count: 2 });

    // No alert id: the exact request is the key.
    let c = store.ingest(ingest_req("siem", None, "k3")).await.unwrap();
    assert!(matches!(c, IngestOutcome::Created(r) if r.number.seq == 2));
    let d = store.ingest(ingest_req("siem", None, "k3")).await.unwrap();
    assert!(matches!(d, IngestOutcome::Duplicate { incident, .. } if incident == c.incident()));
    let e = store.ingest(ingest_req("siem", None, "k4")).await.unwrap();
    assert!(matches!(e, IngestOutcome::Created(r) if r.number.seq == 3));

    // Numbers are per year.
    let mut next_year = ingest_req("siem", Some("alert-2025"), "k5");
    next_year.received_at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let f = store.ingest(next_year).await.unwrap();
    assert_eq!(f.incident().number.to_string(), "INC-2025-0001");

    let inc = store.get_incident(&IncidentKey::Number(first.number)).await.unwrap().unwrap();
    assert_eq!(inc.id, first.id);
    assert_eq!(inc.delivery_count, 2);
    assert_eq!(inc.raw.as_deref(), Some(&br#"{"raw": true}"#[..]));
    assert_eq!(inc.entities.len(), 1);
    let by_id = store.get_incident(&IncidentKey::Id(first.id)).await.unwrap().unwrap();
    assert_eq!(by_id.incident_number, first.number);

    let src = store.get_source(&name("siem")).await.unwrap().unwrap();
    assert_eq!(src.delivery_count, 6);
    assert!(src.last_delivery_at.is_some());
}

async fn concurrent_ingests_get_distinct_gapless_numbers(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.ingest(ingest_req("edr", Some(&format!("a-{i}")), &format!("k{i}"))).await }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert!(matches!(out, IngestOutcome::Created(_)));
        assert!(seqs.insert(out.incident().number.seq));
    }
    assert_eq!(seqs, (1..=1000).collect::<BTreeSet<i64>>());
}

async fn a_failing_write_does_not_undo_its_batch(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    // Fire a duplicate registration in the middle of many ingests: the batch they share commits.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i == 100 {
                store.create_source(source("edr", "again-secret")).await.map(|_| None)
            } else {
                store.ingest(ingest_req("edr", Some(&format!("b-{i}")), &format!("kb{i}"))).await.map(Some)
            }
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(_)) => created += 1,
            Err(StoreError::SourceExists(_)) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, refused), (199, 1));
    assert_eq!(store.list_incidents(&filter(None, None, None, 10)).await.unwrap().total, 199);
}

async fn queue_lifecycle(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let new = |k: &str| NewQueuedEvent {
        source: name("mail"),
        raw: br#"{"event_type":"x"}"#.to_vec(),
        request_key: k.into(),
        received_at: Utc::now(),
        request_id: Some(format!("rq-{k}")),
    };
    let q1 = store.enqueue(new("q1")).await.unwrap();
    let q2 = store.enqueue(new("q2")).await.unwrap();
    assert!(q1.starts_with("queue-"));
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    assert_eq!(store.queue_entry(&q1).await.unwrap().unwrap().status, QueueStatus::Pending);

    let claimed = store.claim_queued(10, 60).await.unwrap();
    assert_eq!(claimed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [q1.clone(), q2.clone()]);
    assert!(store.claim_queued(10, 60).await.unwrap().is_empty(), "leased events are not claimed twice");

    let done = store.complete_queued(&q1, Ok(ingest_req("mail", Some("m-1"), "q1"))).await.unwrap();
    assert_eq!(done.status, QueueStatus::Processed);
    assert_eq!(done.incident_number.unwrap().seq, 1);
    // Finishing again (a second worker after a lease ran out) changes nothing.
    let again = store.complete_queued(&q1, Ok(ingest_req("mail", Some("m-1"), "q1"))).await.unwrap();
    assert_eq!(again.incident_id, done.incident_id);
    let inc = store.get_incident(&IncidentKey::Id(done.incident_id.unwrap())).await.unwrap().unwrap();
    assert_eq!(inc.delivery_count, 1);

    // The delivery of a processed queued event still shows its payload (now the incident's).
    let delivery = Delivery {
        request_id: "rq-q1".into(),
        source: name("mail"),
        received_at: Utc::now(),
        status: 202,
        code: None,
        incident_id: None,
        incident_number: None,
        queue_id: Some(q1.clone()),
        duplicate: false,
        body_len: Some(18),
        latency_ms: 1.0,
        verified: true,
        raw_payload: None,
        sender_request_id: None,
        refused_count: None,
        last_received_at: None,
        headers: Some("content-type: application/json\nx-signature: [redacted]".into()),
    };
    store.record_delivery(delivery, None);
    let mut shown = None;
    for _ in 0..200 {
        if let Some(d) = store.get_delivery("rq-q1").await.unwrap() {
            shown = Some(d);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let shown = shown.expect("the delivery is recorded");
    assert_eq!(shown.raw_payload.as_deref(), Some(r#"{"raw": true}"#), "the incident's payload, once processed");
    // One delivery comes with its headers; a listing reads none.
    assert_eq!(shown.headers.as_deref(), Some("content-type: application/json\nx-signature: [redacted]"));
    let listed = store.list_deliveries(&name("mail"), DeliveryFilter::All, 10).await.unwrap();
    assert!(listed.iter().any(|d| d.request_id == "rq-q1") && listed.iter().all(|d| d.headers.is_none()), "{listed:?}");

    let failed = store.complete_queued(&q2, Err("not normalizable".into())).await.unwrap();
    assert_eq!(failed.status, QueueStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("not normalizable"));
    let (letters, total) = store.list_dead_letters(None, Page { page: 1, per_page: 10 }).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(letters[0].queue_id.as_deref(), Some(q2.as_str()));
    assert_eq!(letters[0].raw_payload, r#"{"event_type":"x"}"#);
    assert_eq!(store.queue_depth().await.unwrap(), 0);

    // The dead letter keeps the request id, for tracing the delivery end to end.
    assert_eq!(letters[0].request_id.as_deref(), Some("rq-q2"));

    // An expired lease makes an event claimable again.
    let q3 = store.enqueue(new("q3")).await.unwrap();
    assert_eq!(store.claim_queued(10, -1).await.unwrap().len(), 1);
    let reclaimed = store.claim_queued(10, -1).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, q3);
    assert_eq!(reclaimed[0].attempts, 2);

    // An event that keeps being claimed without finishing is dead-lettered, not retried forever.
    for _ in 0..3 {
        assert_eq!(store.claim_queued(10, -1).await.unwrap().len(), 1);
    }
    assert!(store.claim_queued(10, -1).await.unwrap().is_empty(), "the sixth claim gives up");
    let poisoned = store.queue_entry(&q3).await.unwrap().unwrap();
    assert_eq!(poisoned.status, QueueStatus::Failed);
    assert!(poisoned.error.as_deref().unwrap().contains("gave up after 5 attempts"), "{poisoned:?}");
    assert_eq!(store.list_dead_letters(None, Page { page: 1, per_page: 10 }).await.unwrap().1, 2);
}

fn outcome(score: u8) -> tw_core::triage::TriageOutcome {
    tw_core::triage::TriageOutcome {
        playbook: "malware_triage".into(),
        playbook_version: "1".into(),
        verdict: tw_core::triage::Verdict::Malicious,
        score,
        findings: vec![tw_core::triage::Finding {
            rule: "intel_bad_hash".into(),
            detail: "known bad".into(),
            weight: 60,
            indicator: Some("abc".into()),
        }],
        recommended_actions: vec![],
        severity: Some(Severity::Critical),
        trace: vec![tw_core::triage::TraceStep {
            step: "Look up".into(),
            action: "lookup_intel".into(),
            skipped: false,
            inputs: serde_json::json!({"hashes": ["abc"]}),
            outputs: serde_json::json!({"matches": [{"indicator": "abc", "score": score}]}),
            duration_us: 12,
        }],
    }
}

async fn triage_jobs_finish_once(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    // An auto-triage incident gets its job in the same transaction.
    let mut req = ingest_req("edr", Some("t-1"), "t1");
    req.auto_triage = true;
    req.playbook = Some("malware_triage".into());
    let inc = store.ingest(req.clone()).await.unwrap().incident();
    // A duplicate delivery does not queue a second job.
    store.ingest(req).await.unwrap();
    assert_eq!(store.triage_depth().await.unwrap(), 1);
    let pending = store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().unwrap();
    assert_eq!(pending.triage.as_ref().unwrap()["status"], "pending");

    let claimed = store.claim_triage_jobs(10, 60).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0].job;
    assert_eq!((job.attempts, job.playbook.as_str()), (1, "malware_triage"));
    assert_eq!(claimed[0].incident.id, inc.id);
    assert!(claimed[0].incident.raw.is_some());
    assert!(store.claim_triage_jobs(10, 60).await.unwrap().is_empty());

    // A stale attempt number (a worker whose lease was taken over) is refused.
    assert!(!store.complete_triage_job(&job.job_id, 0, TriageCompletion::done(outcome(80))).await.unwrap());
    assert!(store.complete_triage_job(&job.job_id, 1, TriageCompletion::done(outcome(80))).await.unwrap());
    // Finishing twice changes nothing.
    assert!(!store.complete_triage_job(&job.job_id, 1, TriageCompletion::done(outcome(10))).await.unwrap());
    let done = store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().unwrap();
    let t = done.triage.unwrap();
    assert_eq!((t["status"].as_str(), t["score"].as_u64(), t["verdict"].as_str()), (Some("completed"), Some(80), Some("malicious")));
    assert_eq!(t["findings"].as_array().unwrap().len(), 1);
    // The run's trace is the detail's; a listing shows the run without it.
    assert_eq!(t["trace"], serde_json::to_value(&outcome(80).trace).unwrap(), "{t}");
    let listed = store.list_incidents(&filter(None, None, None, 10)).await.unwrap().items;
    let lt = listed.iter().find(|i| i.id == inc.id).unwrap().triage.as_ref().unwrap();
    assert_eq!((lt["status"].as_str(), lt["score"].as_u64()), (Some("completed"), Some(80)));
    assert!(lt.get("trace").is_none(), "{lt}");
    let by_number = store.get_incident(&IncidentKey::Number(inc.number)).await.unwrap().unwrap();
    assert_eq!(by_number.triage.unwrap()["trace"], t["trace"]);
    assert_eq!(done.status, IncidentStatus::Triaged);
    assert_eq!(done.severity, Severity::Critical);
    assert_eq!(store.triage_job(&job.job_id).await.unwrap().unwrap().status, TriageJobStatus::Completed);
    assert_eq!(store.triage_depth().await.unwrap(), 0);
}

async fn triage_jobs_finish_together_each_on_its_own(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let mut incidents = Vec::new();
    for i in 0..3 {
        let mut req = ingest_req("edr", Some(&format!("tt-{i}")), &format!("tt{i}"));
        req.auto_triage = true;
        req.playbook = Some("malware_triage".into());
        incidents.push(store.ingest(req).await.unwrap().incident());
    }
    // Claimed oldest first, a few at a time.
    let first = store.claim_triage_jobs(2, 60).await.unwrap();
    let rest = store.claim_triage_jobs(2, 60).await.unwrap();
    let claimed: Vec<_> = first.iter().chain(&rest).collect();
    assert_eq!(claimed.iter().map(|c| c.incident.id).collect::<Vec<_>>(), incidents.iter().map(|i| i.id).collect::<Vec<_>>());
    let job = |k: usize| claimed[k].job.job_id.clone();
    let results = store
        .complete_triage_jobs(vec![
            (job(0), 1, TriageCompletion::done(outcome(80))),
            // A stale attempt is refused without undoing the others.
            (job(1), 0, TriageCompletion::done(outcome(80))),
            (job(2), 1, TriageCompletion::Failed { error: "boom".into(), retry_at: None }),
            ("job_no_such_job".into(), 1, TriageCompletion::done(outcome(80))),
        ])
        .await;
    let results: Vec<bool> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, [true, false, true, false]);
    let status = |k: usize| {
        let store = store.clone();
        let id = job(k);
        async move { store.triage_job(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(
        (status(0).await, status(1).await, status(2).await),
        (TriageJobStatus::Completed, TriageJobStatus::Running, TriageJobStatus::Failed)
    );
    let done = store.get_incident(&IncidentKey::Id(incidents[0].id)).await.unwrap().unwrap();
    assert_eq!((done.status, done.triage.unwrap()["score"].as_u64()), (IncidentStatus::Triaged, Some(80)));
    let failed = store.get_incident(&IncidentKey::Id(incidents[2].id)).await.unwrap().unwrap();
    assert_eq!(failed.triage.unwrap()["status"].as_str(), Some("failed"));
    // The refused one still finishes with its own attempt.
    assert_eq!(
        store
            .complete_triage_jobs(vec![(job(1), 1, TriageCompletion::done(outcome(20)))])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        [true]
    );
    assert_eq!(store.triage_depth().await.unwrap(), 0);
}

async fn triage_jobs_retry_then_fail(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let inc = store.ingest(ingest_req("edr", Some("t-2"), "t2")).await.unwrap().incident();
    let job = store.enqueue_triage(&IncidentKey::Number(inc.number), "malware_triage", serde_json::Map::new(), 2).await.unwrap();
    assert_eq!(job.requested_by, "api");
    let c = store.claim_triage_jobs(1, 60).await.unwrap();
    let retry = TriageCompletion::Failed { error: "boom".into(), retry_at: Some(Utc::now() - chrono::Duration::seconds(1)) };
    assert!(store.complete_triage_job(&job.job_id, c[0].job.attempts, retry).await.unwrap());
    let j = store.triage_job(&job.job_id).await.unwrap().unwrap();
    assert_eq!((j.status, j.error.as_deref()), (TriageJobStatus::Pending, Some("boom")));
    let c = store.claim_triage_jobs(1, 60).await.unwrap();
    assert_eq!(c[0].job.attempts, 2);
    // The last attempt failing marks the job and the incident's triage failed, even with a retry time.
    let retry = TriageCompletion::Failed { error: "boom again".into(), retry_at: Some(Utc::now()) };
    assert!(store.complete_triage_job(&job.job_id, 2, retry).await.unwrap());
    assert_eq!(store.triage_job(&job.job_id).await.unwrap().unwrap().status, TriageJobStatus::Failed);
    let i = store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().unwrap();
    assert_eq!((i.triage.as_ref().unwrap()["status"].as_str(), i.status.as_str()), (Some("failed"), "open"));
    assert!(matches!(
        store.enqueue_triage(&IncidentKey::Id(uuid::Uuid::now_v7()), "malware_triage", serde_json::Map::new(), 3).await,
        Err(StoreError::IncidentNotFound(_))
    ));
}

async fn an_older_job_finishing_late_does_not_overwrite_a_newer_triage(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let inc = store.ingest(ingest_req("edr", Some("t-4"), "t4")).await.unwrap().incident();
    let key = IncidentKey::Id(inc.id);
    let old = store.enqueue_triage(&key, "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    let claimed_old = store.claim_triage_jobs(1, 600).await.unwrap();
    assert_eq!(claimed_old[0].job.job_id, old.job_id);
    let new = store.enqueue_triage(&key, "phishing_triage", serde_json::Map::new(), 3).await.unwrap();
    let claimed_new = store.claim_triage_jobs(1, 600).await.unwrap();
    assert_eq!(claimed_new[0].job.job_id, new.job_id);
    let mut newer = outcome(30);
    newer.playbook = "phishing_triage".into();
    newer.severity = None;
    assert!(store.complete_triage_job(&new.job_id, 1, TriageCompletion::done(newer)).await.unwrap());
    // The old run finishes afterwards: the job is completed, the incident keeps the newer triage.
    assert!(store.complete_triage_job(&old.job_id, 1, TriageCompletion::done(outcome(90))).await.unwrap());
    assert_eq!(store.triage_job(&old.job_id).await.unwrap().unwrap().status, TriageJobStatus::Completed);
    let i = store.get_incident(&key).await.unwrap().unwrap();
    let t = i.triage.unwrap();
    assert_eq!((t["job_id"].as_str(), t["score"].as_u64()), (Some(new.job_id.as_str()), Some(30)));
    assert_eq!(i.severity, Severity::High, "the old run's severity change is not applied");
}

async fn only_expired_leases_are_taken_over(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let inc = store.ingest(ingest_req("edr", Some("t-3"), "t3")).await.unwrap().incident();
    store.enqueue_triage(&IncidentKey::Id(inc.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    // A live claim (long lease) is nobody else's to take.
    assert_eq!(store.claim_triage_jobs(1, 600).await.unwrap().len(), 1);
    assert!(store.claim_triage_jobs(1, 600).await.unwrap().is_empty(), "a live lease is not taken over");

    let inc2 = store.ingest(ingest_req("edr", Some("t-4"), "t4")).await.unwrap().incident();
    store.enqueue_triage(&IncidentKey::Id(inc2.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    // A claimer that dies: its lease (1 s) runs out, and any instance may take the job over.
    let first = store.claim_triage_jobs(1, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.claim_triage_jobs(1, 1).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let again = store.claim_triage_jobs(5, 600).await.unwrap();
    assert_eq!(again.len(), 1, "only the expired claim is taken over");
    assert_eq!((again[0].job.job_id.as_str(), again[0].job.attempts), (first[0].job.job_id.as_str(), 2));
    // The first claimer's late completion no longer counts.
    let outcome = TriageCompletion::Failed { error: "late".into(), retry_at: None };
    assert!(!store.complete_triage_job(&first[0].job.job_id, 1, outcome).await.unwrap());

    // The same for queued events.
    store
        .enqueue(NewQueuedEvent {
            source: name("edr"),
            raw: br#"{"q": 1}"#.to_vec(),
            request_key: "q1".into(),
            received_at: Utc::now(),
            request_id: None,
        })
        .await
        .unwrap();
    assert_eq!(store.claim_queued(5, 1).await.unwrap().len(), 1);
    assert!(store.claim_queued(5, 1).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let q = store.claim_queued(5, 600).await.unwrap();
    assert_eq!((q.len(), q[0].attempts), (1, 2));
}

async fn sources_version_moves_with_every_change(store: Arc<dyn Store>) {
    let v0 = store.sources_version().await.unwrap();
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let v1 = store.sources_version().await.unwrap();
    assert!(v1 > v0);
    store.rotate_secret(&name("edr"), Secret::new("edr-secret-2"), Utc::now()).await.unwrap();
    let v2 = store.sources_version().await.unwrap();
    assert!(v2 > v1);
    store.update_source(&name("edr"), SourcePatch { enabled: Some(false), ..Default::default() }).await.unwrap();
    let v3 = store.sources_version().await.unwrap();
    assert!(v3 > v2);
    store.delete_source(&name("edr")).await.unwrap();
    assert!(store.sources_version().await.unwrap() > v3);
    // Reads and deliveries do not move it.
    store.create_source(source("av", "av-secret-1")).await.unwrap();
    let v4 = store.sources_version().await.unwrap();
    store.list_sources().await.unwrap();
    store.ingest(ingest_req("av", Some("v-1"), "v1")).await.unwrap();
    assert_eq!(store.sources_version().await.unwrap(), v4);
}

async fn odd_text_is_stored(store: Arc<dyn Store>) {
    // NUL characters are valid JSON string content; PostgreSQL text cannot hold them.
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let mut req = ingest_req("edr", Some("nul\u{0}id"), "n1");
    req.alert.title = "bad\u{0}title".into();
    req.alert.entities = vec![tw_core::Entity::new(tw_core::EntityKind::User, "a\u{0}b")];
    let out = store.ingest(req.clone()).await.unwrap();
    assert!(matches!(out, IngestOutcome::Created(_)));
    let i = store.get_incident(&IncidentKey::Id(out.incident().id)).await.unwrap().unwrap();
    // SQLite keeps the NUL; PostgreSQL stores U+FFFD in its place. Nothing else changes.
    assert!(["bad\u{0}title", "bad\u{FFFD}title"].contains(&i.title.as_str()), "{:?}", i.title);
    assert_eq!(i.entities.len(), 1);
    assert!(["a\u{0}b", "a\u{FFFD}b"].contains(&i.entities[0].value.as_str()), "{:?}", i.entities);
    // The same alert again is recognised by its (odd) id.
    let mut again = req;
    again.request_key = "n2".into();
    match store.ingest(again).await.unwrap() {
        IngestOutcome::Duplicate { incident, delivery_count } => assert_eq!((incident, delivery_count), (out.incident(), 2)),
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

async fn playbooks_in_use_are_kept(store: Arc<dyn Store>) {
    assert!(store.put_playbook("custom", "name: custom", "api").await.unwrap());
    assert!(!store.put_playbook("custom", "name: custom\nversion: '2'", "api").await.unwrap());
    assert_eq!(store.get_playbook("custom").await.unwrap().unwrap().yaml, "name: custom\nversion: '2'");
    let mut s = source("mail", "mail-secret");
    s.settings.playbook = Some("custom".into());
    store.create_source(s).await.unwrap();
    match store.delete_playbook("custom").await {
        Err(StoreError::PlaybookInUse { sources, .. }) => assert_eq!(sources, ["mail"]),
        other => panic!("expected in use, got {other:?}"),
    }
    store.delete_source(&name("mail")).await.unwrap();
    assert!(store.delete_playbook("custom").await.unwrap());
    assert!(store.list_playbooks().await.unwrap().is_empty());
}

async fn api_keys(store: Arc<dyn Store>) {
    let k = api_key::generate().unwrap();
    store.create_api_key("ops", Scope::Read, k.hash, &k.prefix).await.unwrap();
    let found = store.find_api_key(api_key::hash(&k.plaintext)).await.unwrap().unwrap();
    assert_eq!((found.name.as_str(), found.scope), ("ops", Scope::Read));
    assert!(store.find_api_key(api_key::hash("tw_nope")).await.unwrap().is_none());
}

async fn api_keys_expire_revoke_and_remember_their_use(store: Arc<dyn Store>) {
    let at = |s: i64| Utc.timestamp_opt(1_900_000_000 + s, 0).unwrap();
    let k = api_key::generate().unwrap();
    let spec = ApiKeySpec { name: "ci".into(), scope: Scope::Admin, hash: k.hash, prefix: k.prefix.clone(), expires_at: Some(at(3600)) };
    let audit = NewAuditRecord {
        actor: AuditActor::Cli { user: "alice".into() },
        client_ip: None,
        action: "api_key.create".into(),
        target: k.prefix.clone(),
        before: None,
        after: Some(serde_json::json!({"prefix": k.prefix})),
        request_id: None,
    };
    let created = store.add_api_key(spec, Some(audit.clone())).await.unwrap();
    assert_eq!(created.expires_at, Some(at(3600)));
    let found = store.find_api_key(k.hash).await.unwrap().expect("an expired key is still found; the caller refuses it");
    assert_eq!((found.id.as_str(), found.expires_at, found.last_used_at), (created.id.as_str(), Some(at(3600)), None));
    assert!(!found.is_expired(at(3599)) && found.is_expired(at(3600)));
    // The key and its audit record were written together.
    let page = store.list_audit(&AuditFilter { action: Some("api_key.create".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].actor, audit.actor);

    // Last use: only ever moves forward, whichever instance reports it.
    store.record_api_key_use(vec![(created.id.clone(), at(10))]).await.unwrap();
    store.record_api_key_use(vec![(created.id.clone(), at(5)), ("no-such-key".into(), at(5))]).await.unwrap();
    assert_eq!(store.find_api_key(k.hash).await.unwrap().unwrap().last_used_at, Some(at(10)));

    let other = api_key::generate().unwrap();
    store.create_api_key("other", Scope::Read, other.hash, &other.prefix).await.unwrap();
    let revoke = NewAuditRecord { action: "api_key.revoke".into(), ..audit };
    assert!(store.revoke_api_key(&created.id, at(20), Some(revoke.clone())).await.unwrap());
    assert!(store.find_api_key(k.hash).await.unwrap().is_none(), "a revoked key is not found");
    assert!(!store.revoke_api_key(&created.id, at(30), Some(revoke)).await.unwrap(), "revoked once");
    assert_eq!(
        store
            .list_audit(&AuditFilter { action: Some("api_key.revoke".into()), limit: 10, ..Default::default() })
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let keys = store.list_api_keys().await.unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ci", "other"]);
    assert_eq!((keys[0].revoked_at, keys[0].status(at(0))), (Some(at(20)), "revoked"));
    assert_eq!((keys[1].revoked_at, keys[1].status(at(0))), (None, "active"));
    assert!(store.find_api_key(other.hash).await.unwrap().is_some());
}

async fn console_sessions_slide_are_bounded_and_pruned(store: Arc<dyn Store>) {
    let at = |s: i64| Utc.timestamp_opt(1_900_000_000 + s, 0).unwrap();
    let key = |name: &'static str| {
        let store = store.clone();
        async move {
            let k = api_key::generate().unwrap();
            (store.create_api_key(name, Scope::Read, k.hash, &k.prefix).await.unwrap(), k.hash)
        }
    };
    let ((a, a_hash), (b, b_hash)) = (key("a").await, key("b").await);
    let session = |n: u8, k: &ApiKeyRecord, hash: [u8; 32], t: i64| NewConsoleSession {
        id_hash: [n; 32],
        key_id: k.id.clone(),
        key_hash: hash,
        created_at: at(t),
        expires_at: at(t + 1800),
    };
    let roomy = SessionLimits { per_key: 20, total: 1000 };

    // Opened, found while alive, moved on by a later use only.
    assert_eq!(store.open_console_session(session(1, &a, a_hash, 0), roomy).await.unwrap(), 0);
    let s = store.console_session([1; 32], at(1)).await.unwrap().expect("alive");
    assert_eq!(
        (s.key_id.as_str(), s.key_hash, s.created_at, s.last_seen_at, s.expires_at),
        (a.id.as_str(), a_hash, at(0), at(0), at(1800))
    );
    assert!(store.console_session([9; 32], at(1)).await.unwrap().is_none(), "no such session");
    assert!(store.touch_console_session([1; 32], at(60), at(1860)).await.unwrap());
    assert!(!store.touch_console_session([1; 32], at(30), at(1830)).await.unwrap(), "an older use is ignored");
    let s = store.console_session([1; 32], at(61)).await.unwrap().unwrap();
    assert_eq!((s.last_seen_at, s.expires_at), (at(60), at(1860)));
    assert!(store.console_session([1; 32], at(1860)).await.unwrap().is_none(), "ended at expires_at");
    assert!(!store.touch_console_session([1; 32], at(1860), at(3660)).await.unwrap(), "an expired session is not revived");

    // Per key: the least recently used of the key's own sessions is closed, nobody else's.
    assert!(store.close_console_session([1; 32]).await.unwrap(), "a's first session ends (sign-out)");
    assert_eq!(store.open_console_session(session(2, &b, b_hash, 100), roomy).await.unwrap(), 0);
    let per_key = SessionLimits { per_key: 3, total: 1000 };
    for (n, t) in [(10, 110), (11, 111), (12, 112)] {
        assert_eq!(store.open_console_session(session(n, &a, a_hash, t), per_key).await.unwrap(), 0);
    }
    assert!(store.touch_console_session([10; 32], at(200), at(2000)).await.unwrap());
    assert_eq!(store.open_console_session(session(13, &a, a_hash, 201), per_key).await.unwrap(), 1);
    assert!(store.console_session([11; 32], at(202)).await.unwrap().is_none(), "the key's least recently used was closed");
    for n in [10, 12, 13, 2] {
        assert!(store.console_session([n; 32], at(202)).await.unwrap().is_some(), "session {n} stays");
    }

    // In all: past the total, the least recently used of everyone's goes (here b's).
    let total = SessionLimits { per_key: 20, total: 4 };
    assert_eq!(store.open_console_session(session(14, &a, a_hash, 210), total).await.unwrap(), 1);
    assert!(store.console_session([2; 32], at(211)).await.unwrap().is_none());
    for n in [10, 12, 13, 14] {
        assert!(store.console_session([n; 32], at(211)).await.unwrap().is_some(), "session {n} stays");
    }

    // Sign-out, once.
    assert!(store.close_console_session([14; 32]).await.unwrap());
    assert!(!store.close_console_session([14; 32]).await.unwrap());
    assert!(store.console_session([14; 32], at(212)).await.unwrap().is_none());

    // Expired rows are pruned, and only those; opening a session removes them too.
    assert_eq!(store.prune_console_sessions(at(1500)).await.unwrap(), 0);
    assert_eq!(store.prune_console_sessions(at(1913)).await.unwrap(), 1, "12 expired; 10 was used later, 13 opened later");
    assert_eq!(store.prune_console_sessions(at(1913)).await.unwrap(), 0);
    assert_eq!(
        store.open_console_session(session(15, &b, b_hash, 5000), total).await.unwrap(),
        0,
        "10 and 13 expired: nothing live closed"
    );
    for n in [10, 13] {
        assert!(store.console_session([n; 32], at(1999)).await.unwrap().is_none(), "{n} was deleted with the expired ones");
    }
    assert_eq!(store.prune_console_sessions(at(5001)).await.unwrap(), 0);
}

async fn audit_records_page_newest_first_and_filter(store: Arc<dyn Store>) {
    let record = |action: &str, target: &str| NewAuditRecord {
        actor: AuditActor::ApiKey { name: "ops".into(), key_prefix: "tw_12345678".into() },
        client_ip: Some("203.0.113.7".into()),
        action: action.into(),
        target: target.into(),
        before: Some(serde_json::json!({"enabled": true, "odd": "nul\u{0}"})),
        after: None,
        request_id: Some("req-1".into()),
    };
    let started = Utc::now() - chrono::Duration::seconds(5);
    let mut written = Vec::new();
    for (action, target) in [
        ("source.create", "a"),
        ("source.update", "a"),
        ("playbook.put", "p"),
        ("sources.create", "x"),
        ("source.delete", "a"),
        ("intel.add", "bad-ips"),
    ] {
        written.push(store.record_audit(record(action, target)).await.unwrap());
    }
    let all = |f: AuditFilter| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let mut f = f;
            loop {
                let page = store.list_audit(&f).await.unwrap();
                assert!(page.items.len() <= f.limit as usize);
                out.extend(page.items.into_iter().map(|r| (r.action, r.target)));
                match page.next {
                    Some(n) => f.before_seq = Some(n),
                    None => return out,
                }
            }
        }
    };
    let newest_first: Vec<(String, String)> = written.iter().rev().map(|r| (r.action.clone(), r.target.clone())).collect();
    assert_eq!(all(AuditFilter { limit: 2, ..Default::default() }).await, newest_first);
    let family = all(AuditFilter { action: Some("source".into()), limit: 10, ..Default::default() }).await;
    assert_eq!(family.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(), ["source.delete", "source.update", "source.create"]);
    assert_eq!(all(AuditFilter { target: Some("a".into()), limit: 10, ..Default::default() }).await.len(), 3);
    assert_eq!(all(AuditFilter { since: Some(started), limit: 10, ..Default::default() }).await.len(), 6);
    assert!(all(AuditFilter { since: Some(Utc::now() + chrono::Duration::hours(1)), limit: 10, ..Default::default() }).await.is_empty());
    let one = store.list_audit(&AuditFilter { action: Some("intel.add".into()), limit: 1, ..Default::default() }).await.unwrap();
    let r = &one.items[0];
    assert_eq!((r.client_ip.as_deref(), r.request_id.as_deref(), r.after.as_ref()), (Some("203.0.113.7"), Some("req-1"), None));
    assert_eq!(r.before.as_ref().unwrap()["enabled"], true);
    // A NUL (which PostgreSQL's text cannot hold) neither fails the write nor loses the value.
    assert!(r.before.as_ref().unwrap()["odd"].as_str().is_some_and(|s| s.starts_with("nul")), "{:?}", r.before);
    assert_eq!(r.actor, AuditActor::ApiKey { name: "ops".into(), key_prefix: "tw_12345678".into() });
}

/// Completes the incident's pending triage job with `severity` (a playbook verdict moves an open
/// incident to triaged and may change its severity).
async fn triage_to(store: &Arc<dyn Store>, incident: &IncidentRef, severity: Option<Severity>) {
    store.enqueue_triage(&IncidentKey::Id(incident.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    let claimed = store.claim_triage_jobs(1, 600).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].incident.id, incident.id);
    let mut done = outcome(70);
    done.severity = severity;
    assert!(store.complete_triage_job(&claimed[0].job.job_id, claimed[0].job.attempts, TriageCompletion::done(done)).await.unwrap());
}

async fn keyset_pages_cover_every_incident_once_in_every_order(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    store.create_source(source("siem", "siem-secret")).await.unwrap();
    let severities = [Severity::High, Severity::Low, Severity::Critical, Severity::Medium, Severity::Info];
    let mut created = Vec::new();
    for i in 0..23 {
        let src = if i % 3 == 0 { "siem" } else { "edr" };
        let mut req = ingest_req(src, Some(&format!("k-{i}")), &format!("r{i}"));
        req.alert.severity = severities[i % severities.len()];
        // Two years, interleaved: the listing's order is the number's, not the arrival's.
        if i % 2 == 0 {
            req.received_at = Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap();
        }
        created.push(store.ingest(req).await.unwrap().incident());
    }
    // Some are triaged, one of them with a new severity.
    triage_to(&store, &created[4], None).await;
    triage_to(&store, &created[9], Some(Severity::Critical)).await;
    triage_to(&store, &created[12], None).await;
    // The truth, one incident at a time.
    let mut truth = Vec::new();
    for r in &created {
        truth.push(store.get_incident(&IncidentKey::Id(r.id)).await.unwrap().unwrap());
    }
    // In the filter's order: by number, or most severe first and newest first within a severity.
    let expect = |f: &IncidentFilter| {
        let mut matching: Vec<&Incident> = truth
            .iter()
            .filter(|i| f.source.as_ref().is_none_or(|s| *s == i.source))
            .filter(|i| f.severity.is_none_or(|s| s == i.severity))
            .filter(|i| f.status.is_none_or(|s| s == i.status))
            .collect();
        matching.sort_by_key(|i| std::cmp::Reverse((i.incident_number.year, i.incident_number.seq)));
        match f.order {
            IncidentOrder::Newest => {}
            IncidentOrder::Oldest => matching.reverse(),
            IncidentOrder::Severity => matching.sort_by_key(|i| std::cmp::Reverse(i.severity)),
        }
        matching.into_iter().map(|i| i.incident_number).collect::<Vec<_>>()
    };
    let mut filters = vec![filter(None, None, None, 1)];
    for src in ["edr", "siem", "nobody"] {
        filters.push(filter(Some(src), None, None, 1));
    }
    for sev in severities {
        filters.push(filter(None, Some(sev), None, 1));
    }
    for st in IncidentStatus::ALL {
        filters.push(filter(None, None, Some(st), 1));
        filters.push(filter(Some("edr"), None, Some(st), 1));
    }
    filters.push(filter(Some("edr"), Some(Severity::Critical), Some(IncidentStatus::Triaged), 1));
    filters.push(filter(Some("siem"), Some(Severity::High), None, 1));
    let filters: Vec<IncidentFilter> =
        IncidentOrder::ALL.into_iter().flat_map(|order| filters.iter().map(move |f| IncidentFilter { order, ..f.clone() })).collect();
    for base in filters {
        let expected = expect(&base);
        let n = expected.len() as u32;
        // One per page, a few per page, exactly all in one page, all but one in the first.
        for per_page in [1, 4, n.max(1), n.saturating_sub(1).max(1), 200] {
            let f = IncidentFilter { per_page, ..base.clone() };
            let (seen, total) = walk(&store, &f).await;
            assert_eq!(seen, expected, "{f:?}: every incident once, in the filter's order");
            assert_eq!(total, expected.len() as u64, "{f:?}: the total is the number of incidents listed");
            // The same pages by offset.
            for (k, chunk) in expected.chunks(per_page as usize).enumerate() {
                let at = IncidentFilter { start: PageStart::Offset(k as u64 * u64::from(per_page)), ..f.clone() };
                let page = store.list_incidents(&at).await.unwrap();
                assert_eq!(page.items.iter().map(|i| i.incident_number).collect::<Vec<_>>(), chunk, "{at:?}");
                let last = (k + 1) * per_page as usize >= expected.len();
                assert_eq!(page.next, if last { None } else { chunk.last().copied() }, "{at:?}");
            }
        }
    }
    // Past the end, and after a number the filter never listed: the older ones that match.
    let oldest = *expect(&filter(None, None, None, 1)).last().unwrap();
    let past = IncidentFilter { start: PageStart::After(oldest), ..filter(None, None, None, 10) };
    let page = store.list_incidents(&past).await.unwrap();
    assert!(page.items.is_empty() && page.next.is_none(), "{page:?}");
    assert_eq!(page.total, 23);
    let siem = expect(&filter(Some("siem"), None, None, 1));
    let edr_newest = expect(&filter(Some("edr"), None, None, 1))[0];
    let from_edr = IncidentFilter { start: PageStart::After(edr_newest), ..filter(Some("siem"), None, None, 100) };
    let listed: Vec<_> = store.list_incidents(&from_edr).await.unwrap().items.iter().map(|i| i.incident_number).collect();
    let older: Vec<_> = siem.into_iter().filter(|n| (n.year, n.seq) < (edr_newest.year, edr_newest.seq)).collect();
    assert_eq!(listed, older);
    // A severity position resumes within its severity, then goes on to the lower ones; a filter
    // on a severity above the position's lists nothing more.
    let by_severity = expect(&IncidentFilter { order: IncidentOrder::Severity, ..filter(None, None, None, 1) });
    let at = truth.iter().find(|i| i.incident_number == by_severity[5]).unwrap();
    let rest = IncidentFilter {
        order: IncidentOrder::Severity,
        start: PageStart::AfterSeverity(at.severity, at.incident_number),
        ..filter(None, None, None, 100)
    };
    let listed: Vec<_> = store.list_incidents(&rest).await.unwrap().items.iter().map(|i| i.incident_number).collect();
    assert_eq!(listed, by_severity[6..]);
    let above = IncidentFilter { severity: Some(Severity::Critical), ..rest.clone() };
    assert!(at.severity == Severity::Critical || store.list_incidents(&above).await.unwrap().items.is_empty());
}

/// A page by severity is read from one snapshot: while triage moves incidents between severities,
/// a page that holds them all shows each exactly once and as many as its total.
async fn a_severity_page_is_one_snapshot_while_severities_change(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let mut incidents = Vec::new();
    for i in 0..40 {
        incidents.push(store.ingest(ingest_req("edr", Some(&format!("e-{i}")), &format!("e{i}"))).await.unwrap().incident());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Back and forth between the first and the last severity walked.
                let to = if round.is_multiple_of(2) { Severity::Info } else { Severity::Critical };
                for incident in incidents.iter().skip(round % 4).step_by(4) {
                    triage_to(&store, incident, Some(to)).await;
                }
                round += 1;
            }
            round
        })
    };
    for _ in 0..60 {
        for start in [PageStart::Offset(0), PageStart::Offset(5)] {
            let f = IncidentFilter { start, order: IncidentOrder::Severity, ..filter(None, None, None, 100) };
            let page = store.list_incidents(&f).await.unwrap();
            let numbers: BTreeSet<_> = page.items.iter().map(|i| i.incident_number).collect();
            assert_eq!(numbers.len(), page.items.len(), "an incident shown twice: {f:?}");
            assert_eq!(page.total, 40);
            let skipped = if matches!(start, PageStart::Offset(5)) { 5 } else { 0 };
            assert_eq!(page.items.len() + skipped, 40, "an incident missed: {f:?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(changer.await.unwrap() > 0, "severities changed meanwhile");
}

async fn totals_follow_inserts_status_and_severity_changes(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    store.create_source(source("siem", "siem-secret")).await.unwrap();
    // Every total checked twice: against what the test expects and against the listing itself.
    /// (source, severity, status) and the total expected.
    type Expected<'a> = (Option<&'a str>, Option<Severity>, Option<IncidentStatus>, u64);
    async fn totals(store: &Arc<dyn Store>, expected: &[Expected<'_>]) {
        for &(src, sev, st, n) in expected {
            let f = filter(src, sev, st, 7);
            let (seen, total) = walk(store, &f).await;
            assert_eq!((total, seen.len() as u64), (n, n), "{f:?}");
        }
    }
    use IncidentStatus::{Open, Triaged};
    use Severity::{Critical, High, Low};
    totals(&store, &[(None, None, None, 0), (Some("edr"), None, None, 0), (None, Some(High), Some(Open), 0)]).await;
    let mut edr = Vec::new();
    for i in 0..10 {
        edr.push(store.ingest(ingest_req("edr", Some(&format!("e-{i}")), &format!("e{i}"))).await.unwrap().incident());
    }
    for i in 0..5 {
        let mut req = ingest_req("siem", Some(&format!("s-{i}")), &format!("s{i}"));
        req.alert.severity = Low;
        store.ingest(req).await.unwrap();
    }
    // A duplicate delivery is not an incident.
    store.ingest(ingest_req("edr", Some("e-0"), "again")).await.unwrap();
    totals(
        &store,
        &[
            (None, None, None, 15),
            (Some("edr"), None, None, 10),
            (Some("siem"), None, None, 5),
            (None, Some(High), None, 10),
            (None, Some(Low), None, 5),
            (None, None, Some(Open), 15),
            (None, None, Some(Triaged), 0),
            (Some("siem"), Some(High), None, 0),
        ],
    )
    .await;
    // Triage completing moves open -> triaged; with a new severity it moves that count too.
    triage_to(&store, &edr[0], None).await;
    triage_to(&store, &edr[1], Some(Critical)).await;
    totals(
        &store,
        &[
            (None, None, None, 15),
            (None, None, Some(Open), 13),
            (None, None, Some(Triaged), 2),
            (Some("edr"), None, Some(Open), 8),
            (Some("edr"), Some(High), Some(Triaged), 1),
            (None, Some(Critical), None, 1),
            (None, Some(High), None, 9),
            (Some("edr"), Some(Critical), Some(Triaged), 1),
        ],
    )
    .await;
    // Triaged again: the status stays, the severity moves (critical -> low).
    triage_to(&store, &edr[1], Some(Low)).await;
    // A run that fails changes neither.
    store.enqueue_triage(&IncidentKey::Id(edr[2].id), "malware_triage", serde_json::Map::new(), 1).await.unwrap();
    let c = store.claim_triage_jobs(1, 600).await.unwrap();
    let failed = TriageCompletion::Failed { error: "boom".into(), retry_at: None };
    assert!(store.complete_triage_job(&c[0].job.job_id, c[0].job.attempts, failed).await.unwrap());
    totals(
        &store,
        &[
            (None, None, None, 15),
            (None, None, Some(Open), 13),
            (None, None, Some(Triaged), 2),
            (None, Some(Critical), None, 0),
            (None, Some(Low), None, 6),
            (Some("edr"), Some(Low), Some(Triaged), 1),
            (Some("siem"), Some(Low), Some(Open), 5),
        ],
    )
    .await;
}

/// A store on a fresh PostgreSQL database, or `None` when no server answers.
/// A delivery record of `edr` at `at`.
fn delivery_at(id: &str, at: chrono::DateTime<Utc>, status: u16, refused_count: Option<u64>) -> Delivery {
    Delivery {
        request_id: id.into(),
        source: name("edr"),
        received_at: at,
        status,
        code: (status >= 300).then(|| "invalid_signature".into()),
        incident_id: None,
        incident_number: None,
        queue_id: None,
        duplicate: false,
        body_len: Some(2),
        latency_ms: 1.0,
        verified: status < 300,
        raw_payload: None,
        sender_request_id: None,
        refused_count,
        last_received_at: refused_count.map(|_| at),
        headers: None,
    }
}

async fn activity_counts_a_day_by_hour_severity_and_verdict(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let at = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2024, 1, d, h, m, 0).unwrap();
    let first = store.ingest(ingest_req("edr", Some("a-1"), "k1")).await.unwrap().incident();
    let second = store.ingest(ingest_req("edr", Some("a-2"), "k2")).await.unwrap().incident();
    triage_to(&store, &first, None).await;
    store.enqueue_triage(&IncidentKey::Id(second.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    store.record_delivery(delivery_at("rq-ok", at(15, 10, 5), 201, None), None);
    store.record_delivery(delivery_at("rq-bad", at(15, 10, 30), 401, None), None);
    store.record_delivery(delivery_at("rq-many", at(15, 11, 10), 401, Some(5)), None);
    // More than a day before `until`: outside the span, however early `since` is.
    store.record_delivery(delivery_at("rq-old", at(14, 6, 0), 201, None), None);
    store.flush().await.unwrap();

    let a = store.activity(at(10, 0, 0), at(15, 12, 0)).await.unwrap();
    assert_eq!(
        a.deliveries,
        vec![
            HourlyDeliveries { source: "edr".into(), hour: at(15, 10, 0), ok: 1, failed: 1 },
            HourlyDeliveries { source: "edr".into(), hour: at(15, 11, 0), ok: 0, failed: 5 },
        ]
    );
    assert_eq!(a.incidents_by_severity, vec![("high".to_string(), 2)]);
    assert_eq!(a.verdicts, vec![("malicious".to_string(), 1)]);
    assert_eq!((a.triage_pending, a.triage_running), (1, 0));

    // A span with nothing in it counts nothing but the backlog.
    let empty = store.activity(at(16, 0, 0), at(16, 12, 0)).await.unwrap();
    assert!(empty.deliveries.is_empty() && empty.incidents_by_severity.is_empty() && empty.verdicts.is_empty(), "{empty:?}");
    assert_eq!(empty.triage_pending, 1);
}

/// The day's counts read incidents from their id's index on (ids are UUIDv7s taken at insert):
/// an incident whose receipt is stamped by a clock ahead of the real one (a server clock set
/// elsewhere, a test's) is still counted, and one received before the span is not, whatever its id.
async fn activity_counts_incidents_whatever_the_clock_that_stamped_them(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let ahead = Utc::now() + chrono::TimeDelta::days(3);
    let mut req = ingest_req("edr", Some("ahead-1"), "k-ahead");
    req.received_at = ahead;
    store.ingest(req).await.unwrap().incident();
    let mut old = ingest_req("edr", Some("old-1"), "k-old");
    old.received_at = ahead - chrono::TimeDelta::days(2);
    store.ingest(old).await.unwrap().incident();
    let a = store.activity(ahead - chrono::TimeDelta::hours(1), ahead + chrono::TimeDelta::hours(1)).await.unwrap();
    assert_eq!(a.incidents_by_severity, vec![("high".to_string(), 1)]);
    let both = store.activity(ahead - chrono::TimeDelta::days(3), ahead - chrono::TimeDelta::days(1)).await.unwrap();
    assert_eq!(both.incidents_by_severity, vec![("high".to_string(), 1)], "only the older one is in that day");
}

async fn open_pg(dir: &std::path::Path) -> Option<(Arc<dyn Store>, TestDatabase)> {
    let db = TestDatabase::create().await?;
    let key = MasterKey::load_or_create(None, dir).unwrap();
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let store = tw_store::open(&url, key, StoreOptions::default()).await.unwrap();
    Some((store, db))
}

/// A second instance on the database of `db` (the key file in `dir` must be the first's).
async fn open_pg_existing(db: &TestDatabase, dir: &std::path::Path) -> Arc<dyn Store> {
    let key = MasterKey::load_or_create(None, dir).unwrap();
    tw_store::open(&DatabaseUrl::parse(&db.url).unwrap(), key, StoreOptions::default()).await.unwrap()
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::open(dir.path())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let Some((store, _db)) = super::open_pg(dir.path()).await else { return };
                    super::$name(store).await;
                }
            )*
        }
    };
}

contract!(
    sources_round_trip,
    numbering_and_dedupe,
    a_duplicate_takes_no_number_even_beside_new_alerts,
    concurrent_ingests_get_distinct_gapless_numbers,
    a_failing_write_does_not_undo_its_batch,
    queue_lifecycle,
    api_keys,
    api_keys_expire_revoke_and_remember_their_use,
    console_sessions_slide_are_bounded_and_pruned,
    audit_records_page_newest_first_and_filter,
    triage_jobs_finish_once,
    triage_jobs_finish_together_each_on_its_own,
    triage_jobs_retry_then_fail,
    only_expired_leases_are_taken_over,
    sources_version_moves_with_every_change,
    odd_text_is_stored,
    an_older_job_finishing_late_does_not_overwrite_a_newer_triage,
    playbooks_in_use_are_kept,
    keyset_pages_cover_every_incident_once_in_every_order,
    a_severity_page_is_one_snapshot_while_severities_change,
    totals_follow_inserts_status_and_severity_changes,
    deliveries_have_unique_own_ids_and_are_found_by_the_senders,
    refused_counts_add_up_in_one_row_whichever_write_comes_first,
    retention_keeps_the_newest_per_source_and_drops_the_expired,
    refused_records_cannot_push_verified_ones_out,
    records_written_beside_intake_batches_are_all_kept_and_refusals_counted,
    reprocessing_updates_incidents_in_place_and_never_duplicates,
    reprocessed_dead_letters_are_ingested_once_or_kept,
    activity_counts_a_day_by_hour_severity_and_verdict,
    activity_counts_incidents_whatever_the_clock_that_stamped_them,
);

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_need_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_source(source("edr", "distinctive-secret-XYZZY")).await.unwrap();
    // Scan while the store is open: the fresh write is in the WAL file then.
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "master.key" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        assert!(!bytes.windows(24).any(|w| w == b"distinctive-secret-XYZZY"), "secret in {}", path.display());
    }
    assert!(scanned >= 2, "the database and its WAL were scanned");
    #[cfg(unix)]
    for file in ["tw.db", "tw.db-wal"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
    drop(store);
    let wrong = MasterKey::generate().unwrap();
    let err = SqliteStore::open(&dir.path().join("tw.db"), wrong).err().expect("wrong key must be refused");
    assert!(err.to_string().contains("master key does not match"), "{err}");
    // The right key still opens it, and the secret is intact.
    let store = open(dir.path());
    assert_eq!(store.get_source(&name("edr")).await.unwrap().unwrap().secret.expose(), "distinctive-secret-XYZZY");
}

#[tokio::test]
async fn postgres_instances_must_share_the_master_key_and_a_known_schema() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((store, db)) = open_pg(a.path()).await else { return };
    store.create_source(source("edr", "distinctive-secret-XYZZY")).await.unwrap();
    let url = DatabaseUrl::parse(&db.url).unwrap();
    // A second instance with its own (different) key is refused, saying why.
    let other = MasterKey::load_or_create(None, b.path()).unwrap();
    let err = tw_store::open(&url, other, StoreOptions::default()).await.err().expect("another key must be refused");
    assert!(err.to_string().contains("every instance on one database must use the key"), "{err}");
    // The same key opens it.
    let same = MasterKey::load_or_create(None, a.path()).unwrap();
    let second = tw_store::open(&url, same, StoreOptions::default()).await.unwrap();
    assert_eq!(second.get_source(&name("edr")).await.unwrap().unwrap().secret.expose(), "distinctive-secret-XYZZY");
    // The secret is not stored in clear.
    let client = tw_store::testing::connect(&db.url).await.unwrap();
    let row = client.query_one("SELECT secret_enc FROM sources WHERE name = 'edr'", &[]).await.unwrap();
    let enc: Vec<u8> = row.get(0);
    assert!(!enc.windows(24).any(|w| w == b"distinctive-secret-XYZZY"));

    // Status and migrate report the schema; a database from a newer build is refused.
    let status = tw_store::migration_status(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(status.current(), status.latest);
    assert!(tw_store::migrate(&url, &StoreOptions::default()).await.unwrap().is_empty(), "nothing left to apply");
    client.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, now())", &[]).await.unwrap();
    let key = MasterKey::load_or_create(None, a.path()).unwrap();
    let err = tw_store::open(&url, key, StoreOptions::default()).await.err().expect("a newer schema must be refused");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
}

/// Incidents as a database of the previous schema holds them: (source, status, severity, payload).
fn old_incidents() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..40u32 {
        let source = ["edr", "siem", "mail"][i as usize % 3];
        let status = if i % 4 == 0 { "triaged" } else { "open" };
        let severity = ["high", "low", "critical", "medium", "info"][i as usize % 5];
        v.push((source, status, severity, format!(r#"{{"n": {i}, "pad": "{}"}}"#, "x".repeat(i as usize * 50)).into_bytes()));
    }
    v
}

/// Checks a store migrated from the previous schema: every payload moved, every total counted,
/// and new incidents counted on top.
async fn check_migrated(store: &Arc<dyn Store>, old: &[(&str, &str, &str, Vec<u8>)]) {
    for (k, (_, _, _, raw)) in old.iter().enumerate() {
        let n = IncidentNumber::new(2024, k as i64 + 1);
        let i = store.get_incident(&IncidentKey::Number(n)).await.unwrap().unwrap();
        assert_eq!(i.raw.as_deref(), Some(raw.as_slice()), "{n}");
    }
    let count = |src: Option<&str>, st: Option<&str>, sev: Option<&str>| {
        old.iter().filter(|o| src.is_none_or(|s| s == o.0) && st.is_none_or(|s| s == o.1) && sev.is_none_or(|s| s == o.2)).count() as u64
    };
    for src in [None, Some("edr"), Some("siem"), Some("mail")] {
        for st in [None, Some(IncidentStatus::Open), Some(IncidentStatus::Triaged)] {
            for sev in [None, Some(Severity::High), Some(Severity::Critical)] {
                let f = filter(src, sev, st, 9);
                let (seen, total) = walk(store, &f).await;
                let expected = count(src, st.map(IncidentStatus::as_str), sev.map(Severity::as_str));
                assert_eq!((total, seen.len() as u64), (expected, expected), "{f:?}");
            }
        }
    }
    // An alert stored before the migration is still recognised (the dedupe index was rebuilt),
    // and takes no number.
    match store.ingest(ingest_req(old[7].0, Some("old-7"), "o7")).await.unwrap() {
        IngestOutcome::Duplicate { incident, delivery_count } => {
            assert_eq!((incident.number, delivery_count), (IncidentNumber::new(2024, 8), 2));
        }
        other => panic!("expected a duplicate of an old incident, got {other:?}"),
    }
    let created = store.ingest(ingest_req("edr", Some("after-migration"), "am")).await.unwrap().incident();
    assert_eq!(created.number, IncidentNumber::new(2024, old.len() as i64 + 1));
    assert_eq!(store.list_incidents(&filter(None, None, None, 1)).await.unwrap().total, old.len() as u64 + 1);
    let (first, _) = walk(store, &filter(Some("edr"), Some(Severity::High), Some(IncidentStatus::Open), 100)).await;
    assert_eq!(first[0], created.number);
    assert_eq!(store.get_incident(&IncidentKey::Id(created.id)).await.unwrap().unwrap().raw.as_deref(), Some(&br#"{"raw": true}"#[..]));
}

#[tokio::test]
async fn sqlite_v5_moves_payloads_out_of_incidents_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tw.db");
    let old = old_incidents();
    {
        // A database as the previous build left it: schema v4, incidents with their payloads.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)").unwrap();
        for (v, sql) in [
            (1, include_str!("../src/sqlite/schema_v1.sql")),
            (2, include_str!("../src/sqlite/schema_v2.sql")),
            (3, include_str!("../src/sqlite/schema_v3.sql")),
            (4, include_str!("../src/sqlite/schema_v4.sql")),
        ] {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, '2025-01-01T00:00:00.000000Z')", [v]).unwrap();
        }
        for (k, (source, status, severity, raw)) in old.iter().enumerate() {
            conn.execute(
                "INSERT INTO incidents (id, year, seq, source, format, title, severity, status, received_at, dedupe_key, entities, \
                 raw_payload, last_delivery_at, auto_triage) \
                 VALUES (?1, 2024, ?2, ?3, 'generic', 't', ?4, ?5, '2024-01-15T10:00:00.000000Z', ?6, '[]', ?7, \
                 '2024-01-15T10:00:00.000000Z', 0)",
                rusqlite::params![uuid::Uuid::now_v7().to_string(), k as i64 + 1, source, severity, status, format!("id:old-{k}"), raw],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO incident_counters (year, last_seq) VALUES (2024, ?1)", [old.len() as i64]).unwrap();
    }
    let store = open(dir.path());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0)).unwrap();
    assert_eq!(version, tw_store::sqlite::latest());
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('incidents')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!columns.iter().any(|c| c == "raw_payload"), "{columns:?}");
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'incidents' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(indexes, ["incidents_by_severity", "incidents_by_source", "incidents_by_status"]);
    check_migrated(&store, &old).await;
    // The counts table agrees with a count of the rows.
    let mismatched: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT source, status, severity, COUNT(*) AS n FROM incidents GROUP BY 1, 2, 3) AS c \
             FULL JOIN (SELECT * FROM incident_counts WHERE n <> 0) AS k USING (source, status, severity) WHERE c.n IS NOT k.n",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0);
}

#[tokio::test]
async fn postgres_v2_moves_payloads_out_of_incidents_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDatabase::create().await else { return };
    let old = old_incidents();
    let client = tw_store::testing::connect(&db.url).await.unwrap();
    // A database as the previous build left it: schema v1, incidents with their payloads.
    client.batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)").await.unwrap();
    client.batch_execute(include_str!("../src/postgres/schema_v1.sql")).await.unwrap();
    client.batch_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1, now())").await.unwrap();
    for (k, (source, status, severity, raw)) in old.iter().enumerate() {
        client
            .execute(
                "INSERT INTO incidents (id, year, seq, source, format, title, severity, status, received_at, dedupe_key, entities, \
                 raw_payload, last_delivery_at, auto_triage) \
                 VALUES ($1, 2024, $2, $3, 'generic', 't', $4, $5, now(), $6, '[]', $7, now(), false)",
                &[&uuid::Uuid::now_v7(), &(k as i64 + 1), source, severity, status, &format!("id:old-{k}"), raw],
            )
            .await
            .unwrap();
    }
    client.execute("INSERT INTO incident_counters (year, last_seq) VALUES (2024, $1)", &[&(old.len() as i64)]).await.unwrap();

    let key = MasterKey::load_or_create(None, dir.path()).unwrap();
    let store = tw_store::open(&DatabaseUrl::parse(&db.url).unwrap(), key, StoreOptions::default()).await.unwrap();
    let version: i64 = client.query_one("SELECT MAX(version) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(version, tw_store::postgres::latest());
    let raw_column: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'incidents' AND column_name = 'raw_payload')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!raw_column);
    // The listing indexes (v2), and the dedupe index leading with the key (v14) where the
    // `(source, dedupe_key)` constraint was.
    let indexes: Vec<(String, bool)> = client
        .query(
            "SELECT indexname, indexdef LIKE '%UNIQUE INDEX % (dedupe_key, source)' FROM pg_indexes \
             WHERE tablename = 'incidents' AND (indexname LIKE 'incidents_by_%' OR indexdef LIKE '%dedupe_key%') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected =
        [("incidents_by_severity", false), ("incidents_by_source", false), ("incidents_by_status", false), ("incidents_dedupe_key", true)];
    assert_eq!(indexes, expected.map(|(n, d)| (n.to_string(), d)));
    check_migrated(&store, &old).await;
    assert_eq!(pg_count_mismatches(&client).await, 0);
}

/// Rows where `incident_counts` disagrees with a `COUNT(*)` of the incidents.
/// An intake batch whose writes fail is rolled back whole (not its delivery counts, not its
/// numbers), its connection goes back to the pool outside any transaction, and the next batches
/// on it commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failed_intake_batch_leaves_no_transaction_open() {
    let dir = tempfile::tempdir().unwrap();
    let Some((store, db)) = open_pg(dir.path()).await else { return };
    let client = tw_store::testing::connect(&db.url).await.unwrap();
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    store.ingest(ingest_req("edr", Some("first"), "k1")).await.unwrap().incident();
    // The counter set back: the next new alert takes a number that is already used.
    client.batch_execute("UPDATE incident_counters SET last_seq = 0").await.unwrap();
    let err = store.ingest(ingest_req("edr", Some("second"), "k2")).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    let open: i64 = client
        .query_one("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "a connection was left inside a transaction");
    // Nothing of the failed batch stayed: not its delivery count, not its number.
    let (incidents, deliveries, last): (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM incidents), (SELECT delivery_count FROM sources WHERE name = 'edr'), \
                 (SELECT last_seq FROM incident_counters)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((incidents, deliveries, last), (1, 1, 0));
    client.batch_execute("UPDATE incident_counters SET last_seq = 1").await.unwrap();
    for i in 0..20 {
        store.ingest(ingest_req("edr", Some(&format!("after-{i}")), &format!("ka{i}"))).await.unwrap().incident();
    }
    assert_eq!(store.list_incidents(&filter(None, None, None, 10)).await.unwrap().total, 21);
}

async fn pg_count_mismatches(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT COUNT(*) FROM (SELECT source, status, severity, COUNT(*) AS n FROM incidents GROUP BY 1, 2, 3) AS c \
             FULL JOIN (SELECT * FROM incident_counts WHERE n <> 0) AS k USING (source, status, severity) \
             WHERE c.n IS DISTINCT FROM k.n",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_stay_exact_with_instances_writing_at_once() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((first, db)) = open_pg(a.path()).await else { return };
    std::fs::copy(a.path().join("master.key"), b.path().join("master.key")).unwrap();
    let second = open_pg_existing(&db, b.path()).await;
    let mut auto = source("edr", "edr-secret-1");
    auto.settings.auto_triage = true;
    auto.settings.playbook = Some("malware_triage".into());
    first.create_source(auto).await.unwrap();
    first.create_source(source("siem", "siem-secret")).await.unwrap();
    let severities = [Severity::High, Severity::Low, Severity::Critical];
    // Two instances take deliveries (some of them twice, at both) while both finish triage jobs
    // that move incidents from open to triaged and change their severity.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400usize {
        let store = if i % 2 == 0 { first.clone() } else { second.clone() };
        tasks.spawn(async move {
            let src = if i % 5 == 0 { "siem" } else { "edr" };
            let mut req = ingest_req(src, Some(&format!("c-{}", i % 350)), &format!("c{i}"));
            req.alert.severity = severities[i % 3];
            req.auto_triage = src == "edr";
            req.playbook = req.auto_triage.then(|| "malware_triage".to_string());
            store.ingest(req).await.unwrap();
        });
    }
    let delivered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for store in [first.clone(), second.clone()] {
        let delivered = delivered.clone();
        workers.spawn(async move {
            for round in 0.. {
                let claimed = store.claim_triage_jobs(8, 600).await.unwrap();
                if claimed.is_empty() {
                    if delivered.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                for c in claimed {
                    let mut done = outcome(60);
                    done.severity = Some(severities[round % 3]);
                    store.complete_triage_job(&c.job.job_id, c.job.attempts, TriageCompletion::done(done)).await.unwrap();
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    delivered.store(true, std::sync::atomic::Ordering::SeqCst);
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let client = tw_store::testing::connect(&db.url).await.unwrap();
    let (incidents, triaged): (i64, i64) = {
        let r = client.query_one("SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'triaged') FROM incidents", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((incidents, triaged), (350, 280), "every edr incident was triaged");
    assert_eq!(pg_count_mismatches(&client).await, 0);
    for store in [&first, &second] {
        assert_eq!(store.list_incidents(&filter(None, None, None, 1)).await.unwrap().total, 350);
        let (seen, total) = walk(store, &filter(None, None, Some(IncidentStatus::Triaged), 50)).await;
        assert_eq!((total, seen.len() as u64), (triaged as u64, triaged as u64));
    }
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("tw.db")).unwrap();
    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, '2030-01-01T00:00:00.000000Z')", []).unwrap();
    drop(conn);
    let key = MasterKey::load_or_create(None, dir.path()).unwrap();
    let err = SqliteStore::open(&dir.path().join("tw.db"), key).err().expect("a newer schema must be refused");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { connect_timeout: std::time::Duration::from_secs(1), ..Default::default() };
    // A port nothing listens on refuses at once.
    let refused = DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/none").unwrap();
    let key = MasterKey::load_or_create(None, dir.path()).unwrap();
    let err = tw_store::open(&refused, key, opts.clone()).await.err().expect("nothing listens there");
    assert!(err.is_unavailable(), "{}", err.chain());
    // A server that accepts and never answers is given up on after the connect timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = DatabaseUrl::parse(&format!("postgres://postgres@{}/none", silent.local_addr().unwrap())).unwrap();
    let key = MasterKey::load_or_create(None, dir.path()).unwrap();
    let opened = tokio::time::timeout(std::time::Duration::from_secs(30), tw_store::open(&url, key, opts)).await;
    let err = opened.expect("bounded by the connect timeout, not hung").err().expect("it never answers");
    assert!(err.is_unavailable(), "{}", err.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_in_turn() {
    // A collision is a race: several rounds of eight migrators each make it near certain to show.
    for _ in 0..5 {
        let Some(db) = TestDatabase::create().await else { return };
        let url = DatabaseUrl::parse(&db.url).unwrap();
        let opts = StoreOptions::default();
        // Several migrators on an empty database at the same moment, as instances started together.
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let (url, opts) = (url.clone(), opts.clone());
                async move { tw_store::migrate(&url, &opts).await }
            })
            .collect();
        let mut applied = Vec::new();
        for r in futures_join(runs).await {
            applied.extend(r.expect("every concurrent migration succeeds"));
        }
        applied.sort();
        let latest = tw_store::migration_status(&url, &opts).await.unwrap().latest;
        assert_eq!(applied, (1..=latest).collect::<Vec<_>>(), "each migration applied exactly once");
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Per-source rate limits (SQLite v6, PostgreSQL v3)

/// A source's `rate_limit` is stored, read back exactly (fractions too), changed, removed, kept by
/// patches that do not name it, and set by the config file's upsert; none by default.
async fn rate_limits_round_trip(store: Arc<dyn Store>) {
    let limit = |per_second: f64, burst: u32| Some(RateLimit::new(per_second, burst).unwrap());
    let plain = store.create_source(source("plain", "plain-secret-1")).await.unwrap();
    assert_eq!(plain.settings.rate_limit, None, "no limit unless asked for");

    let mut limited = source("limited", "limited-secret-1");
    limited.settings.rate_limit = limit(2.5, 7);
    assert_eq!(store.create_source(limited).await.unwrap().settings.rate_limit, limit(2.5, 7));
    assert_eq!(store.get_source(&name("limited")).await.unwrap().unwrap().settings.rate_limit, limit(2.5, 7));

    let changed = SourcePatch { rate_limit: Some(limit(0.001, 1_000_000)), ..Default::default() };
    assert_eq!(store.update_source(&name("limited"), changed).await.unwrap().settings.rate_limit, limit(0.001, 1_000_000));
    let other = SourcePatch { enabled: Some(false), ..Default::default() };
    assert_eq!(store.update_source(&name("limited"), other).await.unwrap().settings.rate_limit, limit(0.001, 1_000_000));
    let listed = store.list_sources().await.unwrap();
    let by_name = |n: &str| listed.iter().find(|s| s.name.as_str() == n).unwrap().settings.rate_limit;
    assert_eq!((by_name("plain"), by_name("limited")), (None, limit(0.001, 1_000_000)));

    let removed = SourcePatch { rate_limit: Some(None), ..Default::default() };
    assert_eq!(store.update_source(&name("limited"), removed).await.unwrap().settings.rate_limit, None);

    let mut declared = source("from-file", "from-file-secret-1");
    declared.settings.rate_limit = limit(100.0, 250);
    assert_eq!(store.upsert_config_source(declared.clone()).await.unwrap().settings.rate_limit, limit(100.0, 250));
    declared.settings.rate_limit = None;
    assert_eq!(store.upsert_config_source(declared).await.unwrap().settings.rate_limit, None);
}

#[test]
fn rate_limits_are_validated_where_they_are_made() {
    assert!(RateLimit::new(0.0, 1).is_err());
    assert!(RateLimit::new(f64::NAN, 1).is_err());
    assert!(RateLimit::new(f64::INFINITY, 1).is_err());
    assert_eq!(RateLimit::new(-1.0, 1).unwrap_err().field(), "per_second");
    assert_eq!(RateLimit::new(1.0, 0).unwrap_err().field(), "burst");
    assert_eq!(RateLimit::new(1.0, 1_000_001).unwrap_err().field(), "burst");
    assert!(RateLimit::new(0.001, 1).is_ok() && RateLimit::new(1_000_000.0, 1_000_000).is_ok());
}

mod rate_limit_column {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        super::rate_limits_round_trip(super::open(dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let dir = tempfile::tempdir().unwrap();
        let Some((store, _db)) = super::open_pg(dir.path()).await else { return };
        super::rate_limits_round_trip(store).await;
    }
}

/// A stopping instance gives its claimed triage jobs back: due at once for any instance, the
/// attempt not counted; a job claimed again since, or finished, is not touched.
async fn released_triage_jobs_are_claimable_at_once(store: Arc<dyn Store>) {
    store.create_source(source("edr", "edr-secret-release")).await.unwrap();
    for i in 0..3 {
        let inc = store.ingest(ingest_req("edr", Some(&format!("r-{i}")), &format!("r{i}"))).await.unwrap().incident();
        store.enqueue_triage(&IncidentKey::Id(inc.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    }
    // Claimed with an hour's lease: without a release nobody else could take them for an hour.
    let claimed = store.claim_triage_jobs(3, 3600).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(store.claim_triage_jobs(3, 3600).await.unwrap().is_empty());
    let finished = &claimed[2].job;
    assert!(store.complete_triage_job(&finished.job_id, finished.attempts, TriageCompletion::done(outcome(80))).await.unwrap());

    let mut give_back: Vec<(String, u32)> = claimed.iter().map(|c| (c.job.job_id.clone(), c.job.attempts)).collect();
    // A stale attempt number is somebody else's claim: left alone.
    give_back.push((claimed[0].job.job_id.clone(), 7));
    assert_eq!(store.release_triage_jobs(&give_back).await.unwrap(), 2, "the finished job and the stale claim are not released");
    assert_eq!(store.release_triage_jobs(&give_back).await.unwrap(), 0, "releasing twice changes nothing");

    for c in &claimed[..2] {
        let job = store.triage_job(&c.job.job_id).await.unwrap().unwrap();
        assert_eq!((job.status, job.attempts), (TriageJobStatus::Pending, 0), "pending again, the attempt not counted");
        let inc = store.get_incident(&IncidentKey::Id(c.incident.id)).await.unwrap().unwrap();
        assert_eq!(inc.triage.unwrap()["status"], "pending");
    }
    assert_eq!(store.triage_job(&finished.job_id).await.unwrap().unwrap().status, TriageJobStatus::Completed);
    // Another instance takes them now, not after the hour; each runs as its first attempt.
    let again = store.claim_triage_jobs(5, 60).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|c| c.job.attempts == 1));
    assert!(store.complete_triage_job(&again[0].job.job_id, 1, TriageCompletion::done(outcome(50))).await.unwrap());
}

mod triage_release {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        super::released_triage_jobs_are_claimable_at_once(super::open(dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let dir = tempfile::tempdir().unwrap();
        let Some((store, _db)) = super::open_pg(dir.path()).await else { return };
        super::released_triage_jobs_are_claimable_at_once(store).await;
    }
}

// ---- delivery records (hardening: unique ids, aggregated refusals, retention) ----

fn delivery(own: &str, src: &str, sender: Option<&str>, status: u16, verified: bool, at: chrono::DateTime<Utc>) -> Delivery {
    Delivery {
        request_id: own.into(),
        sender_request_id: sender.map(str::to_string),
        source: name(src),
        received_at: at,
        status,
        code: (status >= 400).then(|| "invalid_signature".to_string()),
        incident_id: None,
        incident_number: None,
        queue_id: None,
        duplicate: false,
        body_len: Some(2),
        latency_ms: 1.0,
        verified,
        raw_payload: None,
        refused_count: None,
        last_received_at: None,
        headers: None,
    }
}

/// Waits until the fire-and-forget record `own` is stored.
async fn recorded(store: &Arc<dyn Store>, own: &str) -> Delivery {
    for _ in 0..500 {
        if let Some(d) = store.get_delivery(own).await.unwrap().filter(|d| d.request_id == own) {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("delivery {own} never recorded");
}

async fn deliveries_have_unique_own_ids_and_are_found_by_the_senders(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let t = Utc::now();
    store.record_delivery(delivery("req_a", "mail", Some("theirs-1"), 201, true, t), None);
    store.record_delivery(delivery("req_b", "mail", Some("theirs-1"), 401, false, t), None);
    store.record_delivery(delivery("req_c", "mail", None, 201, true, t), None);
    // The same own id again is not a second row.
    store.record_delivery(delivery("req_c", "mail", Some("other"), 500, true, t), None);
    store.record_delivery(delivery("req_d", "mail", None, 201, true, t), None);
    recorded(&store, "req_d").await;
    let all = store.list_deliveries(&name("mail"), DeliveryFilter::All, 100).await.unwrap();
    assert_eq!(all.iter().map(|d| d.request_id.as_str()).collect::<Vec<_>>(), ["req_d", "req_c", "req_b", "req_a"]);
    let c = store.get_delivery("req_c").await.unwrap().unwrap();
    assert_eq!((c.status, c.sender_request_id.as_deref(), c.refused_count), (201, None, None), "the first write of an id stands");
    // By the sender's id: the verified one, though the unverified one is newer.
    let a = store.get_delivery("theirs-1").await.unwrap().unwrap();
    assert_eq!((a.request_id.as_str(), a.sender_request_id.as_deref()), ("req_a", Some("theirs-1")));
    let same = store.deliveries_by_sender_request_id("theirs-1", 10).await.unwrap();
    assert_eq!(same.iter().map(|d| d.request_id.as_str()).collect::<Vec<_>>(), ["req_b", "req_a"]);
    assert!(store.get_delivery("nobody").await.unwrap().is_none());
}

async fn refused_counts_add_up_in_one_row_whichever_write_comes_first(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 14, 2, 7).unwrap();
    let count = |id: &str, n: u64, first: i64, last: i64| RefusedCount {
        request_id: id.into(),
        source: name("mail"),
        status: 401,
        code: "invalid_signature".into(),
        first_at: t0 + chrono::Duration::seconds(first),
        last_at: t0 + chrono::Duration::seconds(last),
        count: n,
    };
    let anchor = |id: &str| Delivery { refused_count: Some(1), last_received_at: Some(t0), ..delivery(id, "mail", None, 401, false, t0) };
    // The row written first, its counts after (as the intake does).
    store.record_delivery(anchor("req_agg1"), None);
    recorded(&store, "req_agg1").await;
    store.record_refusals(vec![count("req_agg1", 10, 1, 20)]).await.unwrap();
    store.record_refusals(vec![count("req_agg1", 5, 21, 52)]).await.unwrap();
    // The counts first (the row's own write was late or dropped), then the row.
    store.record_refusals(vec![count("req_agg2", 7, 1, 30)]).await.unwrap();
    store.record_delivery(anchor("req_agg2"), None);
    store.record_delivery(delivery("req_after", "mail", None, 201, true, t0), None);
    recorded(&store, "req_after").await;
    let rows = store.list_deliveries(&name("mail"), DeliveryFilter::Failed, 100).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let one = rows.iter().find(|d| d.request_id == "req_agg1").unwrap();
    assert_eq!((one.refused_count, one.received_at, one.last_received_at), (Some(16), t0, Some(t0 + chrono::Duration::seconds(52))));
    let two = rows.iter().find(|d| d.request_id == "req_agg2").unwrap();
    assert_eq!((two.refused_count, two.received_at), (Some(8), t0), "{two:?}");
    assert_eq!(two.code.as_deref(), Some("invalid_signature"));
    // Every refused request is in the source's error count.
    let src = store.get_source(&name("mail")).await.unwrap().unwrap();
    assert_eq!(src.error_count, 24);
}

/// Delivery records fired while incidents are being ingested share the writer's batches with
/// them (on PostgreSQL, accepted ones are committed beside the batch on a connection of their own,
/// refused ones in it): every record is kept, whichever way it went, and every refused one is in
/// its source's error count exactly once.
async fn records_written_beside_intake_batches_are_all_kept_and_refusals_counted(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    store.create_source(source("edr", "edr-secret-1")).await.unwrap();
    let t = Utc::now();
    let mut ingests = Vec::new();
    for i in 0..120 {
        let src = if i % 2 == 0 { "mail" } else { "edr" };
        let status = if i % 5 == 0 { 401 } else { 201 };
        store.record_delivery(delivery(&format!("req_mix{i:03}"), src, None, status, status < 300, t), None);
        let store = store.clone();
        ingests.push(tokio::spawn(async move { store.ingest(ingest_req(src, Some(&format!("mix-{i}")), &format!("k-mix-{i}"))).await }));
    }
    for i in ingests {
        assert!(matches!(i.await.unwrap().unwrap(), IngestOutcome::Created(_)));
    }
    store.flush().await.unwrap();
    for src in ["mail", "edr"] {
        let all = store.list_deliveries(&name(src), DeliveryFilter::All, 500).await.unwrap();
        let failed = store.list_deliveries(&name(src), DeliveryFilter::Failed, 500).await.unwrap();
        assert_eq!((all.len(), failed.len()), (60, 12), "{src}");
        let counted = store.get_source(&name(src)).await.unwrap().unwrap();
        assert_eq!((counted.delivery_count, counted.error_count), (60, 12), "{src}");
    }
}

async fn retention_keeps_the_newest_per_source_and_drops_the_expired(store: Arc<dyn Store>) {
    for s in ["busy", "quiet"] {
        store.create_source(source(s, &format!("{s}-secret"))).await.unwrap();
    }
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    // Two expired records of the quiet source, then fresh ones of both.
    for i in 0..2 {
        store.record_delivery(delivery(&format!("req_q_old{i}"), "quiet", None, 201, true, old), None);
    }
    for i in 0..7 {
        store.record_delivery(delivery(&format!("req_b{i}"), "busy", None, 201, true, now), None);
    }
    for i in 0..3 {
        store.record_delivery(delivery(&format!("req_q{i}"), "quiet", None, 201, true, now), None);
    }
    recorded(&store, "req_q2").await;
    // An incident: never touched by the retention.
    let inc = store.ingest(ingest_req("busy", Some("kept"), "k1")).await.unwrap().incident();
    let retention =
        DeliveryRetention { keep_per_source: 4, keep_refused_per_source: 4, max_age: Some(chrono::Duration::days(30)), batch: 2 };
    assert_eq!(store.prune_deliveries(retention, now).await.unwrap(), 5);
    let ids = |rows: Vec<Delivery>| rows.into_iter().map(|d| d.request_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_deliveries(&name("busy"), DeliveryFilter::All, 100).await.unwrap()),
        ["req_b6", "req_b5", "req_b4", "req_b3"]
    );
    assert_eq!(ids(store.list_deliveries(&name("quiet"), DeliveryFilter::All, 100).await.unwrap()), ["req_q2", "req_q1", "req_q0"]);
    assert_eq!(store.prune_deliveries(retention, now).await.unwrap(), 0, "nothing more to do");
    // Everything expires; the incident stays.
    assert_eq!(store.prune_deliveries(retention, now + chrono::Duration::days(31)).await.unwrap(), 7);
    assert!(store.list_deliveries(&name("busy"), DeliveryFilter::All, 100).await.unwrap().is_empty());
    assert!(store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().is_some());
    // No age limit: only the count binds.
    for i in 0..3 {
        store.record_delivery(delivery(&format!("req_n{i}"), "busy", None, 201, true, old), None);
    }
    recorded(&store, "req_n2").await;
    let count_only = DeliveryRetention { max_age: None, keep_per_source: 2, ..retention };
    assert_eq!(store.prune_deliveries(count_only, now).await.unwrap(), 1);
}

/// Refused requests are anyone's to send: however many, they are counted apart from the verified
/// deliveries, which keep their own number; the age limit binds both.
async fn refused_records_cannot_push_verified_ones_out(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let now = Utc::now();
    let ids = |rows: Vec<Delivery>| rows.into_iter().map(|d| d.request_id).collect::<Vec<_>>();
    // Four verified deliveries, then a flood of refused ones (samples and an aggregate row),
    // then two more verified ones and a few more refused.
    for i in 0..4 {
        store.record_delivery(delivery(&format!("req_v{i}"), "mail", None, 201, true, now), None);
    }
    for i in 0..30 {
        store.record_delivery(delivery(&format!("req_r{i:02}"), "mail", None, 401, false, now), None);
    }
    store.record_delivery(Delivery { refused_count: Some(1), ..delivery("req_agg", "mail", None, 401, false, now) }, None);
    for i in 4..6 {
        store.record_delivery(delivery(&format!("req_v{i}"), "mail", None, 201, true, now), None);
    }
    for i in 30..33 {
        store.record_delivery(delivery(&format!("req_r{i:02}"), "mail", None, 401, false, now), None);
    }
    recorded(&store, "req_r32").await;
    let n = RefusedCount {
        request_id: "req_agg".into(),
        source: name("mail"),
        status: 401,
        code: "invalid_signature".into(),
        first_at: now,
        last_at: now,
        count: 500,
    };
    store.record_refusals(vec![n]).await.unwrap();
    let retention =
        DeliveryRetention { keep_per_source: 5, keep_refused_per_source: 4, max_age: Some(chrono::Duration::days(30)), batch: 3 };
    // Of 34 refused records 4 stay; of 6 verified ones 5.
    assert_eq!(store.prune_deliveries(retention, now).await.unwrap(), 30 + 1);
    let ok = ids(store.list_deliveries(&name("mail"), DeliveryFilter::Ok, 100).await.unwrap());
    assert_eq!(ok, ["req_v5", "req_v4", "req_v3", "req_v2", "req_v1"]);
    let refused = ids(store.list_deliveries(&name("mail"), DeliveryFilter::Failed, 100).await.unwrap());
    assert_eq!(refused, ["req_r32", "req_r31", "req_r30", "req_agg"]);
    assert_eq!(store.prune_deliveries(retention, now).await.unwrap(), 0, "nothing more to do");
    // The age limit binds both classes, under their keeps or not.
    let roomy = DeliveryRetention { keep_per_source: 100, keep_refused_per_source: 100, ..retention };
    assert_eq!(store.prune_deliveries(roomy, now + chrono::Duration::days(31)).await.unwrap(), 9);
    assert!(store.list_deliveries(&name("mail"), DeliveryFilter::All, 100).await.unwrap().is_empty());
}

/// Request ids as builds before v7 (SQLite) / v4 (PostgreSQL) stored them: a generated one, a
/// sender's, a sender's twice, and a generated one a sender copied.
const OLD_REQUEST_IDS: [&str; 6] = [
    "req_0193f1c2a4b87c3e9d5a0b1c2d3e4f50",
    "senders-own",
    "twice",
    "twice",
    "req_0193f1c2a4b87c3e9d5a0b1c2d3e4f51",
    "req_0193f1c2a4b87c3e9d5a0b1c2d3e4f51",
];

/// After the migration: the generated id alone stays; every other one moved beside a new
/// unique id, and can still be found by.
async fn check_request_ids_migrated(store: &Arc<dyn Store>) {
    let rows = store.list_deliveries(&name("mail"), DeliveryFilter::All, 100).await.unwrap();
    assert_eq!(rows.len(), OLD_REQUEST_IDS.len());
    let own: BTreeSet<&str> = rows.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(own.len(), rows.len(), "unique: {rows:?}");
    let kept = store.get_delivery(OLD_REQUEST_IDS[0]).await.unwrap().unwrap();
    assert_eq!((kept.request_id.as_str(), kept.sender_request_id.as_deref()), (OLD_REQUEST_IDS[0], None));
    for moved in &OLD_REQUEST_IDS[1..] {
        let d = store.get_delivery(moved).await.unwrap().unwrap();
        assert_eq!(d.sender_request_id.as_deref(), Some(*moved), "{d:?}");
        assert!(d.request_id.starts_with("req_0000000000000000") && d.request_id.len() == 36, "{d:?}");
    }
    assert_eq!(store.deliveries_by_sender_request_id("twice", 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_v7_makes_stored_request_ids_unique() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tw.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)").unwrap();
        for (v, sql) in [
            (1, include_str!("../src/sqlite/schema_v1.sql")),
            (2, include_str!("../src/sqlite/schema_v2.sql")),
            (3, include_str!("../src/sqlite/schema_v3.sql")),
            (4, include_str!("../src/sqlite/schema_v4.sql")),
            (5, include_str!("../src/sqlite/schema_v5.sql")),
            (6, include_str!("../src/sqlite/schema_v6.sql")),
        ] {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, '2025-01-01T00:00:00.000000Z')", [v]).unwrap();
        }
        for rid in OLD_REQUEST_IDS {
            conn.execute(
                "INSERT INTO deliveries (request_id, source, received_at, status, latency_ms, verified) \
                 VALUES (?1, 'mail', '2026-01-01T00:00:00.000000Z', 201, 1.0, 1)",
                [rid],
            )
            .unwrap();
        }
    }
    let store = open(dir.path());
    check_request_ids_migrated(&store).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let unique: i64 = conn
        .query_row("SELECT \"unique\" FROM pragma_index_list('deliveries') WHERE name = 'deliveries_by_request'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unique, 1);
}

#[tokio::test]
async fn postgres_v4_makes_stored_request_ids_unique() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDatabase::create().await else { return };
    let client = tw_store::testing::connect(&db.url).await.unwrap();
    client.batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)").await.unwrap();
    for (v, sql) in [
        (1_i64, include_str!("../src/postgres/schema_v1.sql")),
        (2, include_str!("../src/postgres/schema_v2.sql")),
        (3, include_str!("../src/postgres/schema_v3.sql")),
    ] {
        client.batch_execute(sql).await.unwrap();
        client.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", &[&v]).await.unwrap();
    }
    for rid in OLD_REQUEST_IDS {
        client
            .execute(
                "INSERT INTO deliveries (request_id, source, received_at, status, latency_ms, verified) VALUES ($1, 'mail', now(), 201, 1.0, true)",
                &[&rid],
            )
            .await
            .unwrap();
    }
    let key = MasterKey::load_or_create(None, dir.path()).unwrap();
    let store = tw_store::open(&DatabaseUrl::parse(&db.url).unwrap(), key, StoreOptions::default()).await.unwrap();
    check_request_ids_migrated(&store).await;
    let unique: bool = client
        .query_one("SELECT indisunique FROM pg_index WHERE indexrelid = 'deliveries_by_request'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert!(unique);
}

// ---- queued events given back at a stop ----

async fn released_queued_events_are_claimable_at_once(store: Arc<dyn Store>) {
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let new = |k: &str| NewQueuedEvent {
        source: name("mail"),
        raw: br#"{"event_type":"x"}"#.to_vec(),
        request_key: k.into(),
        received_at: Utc::now(),
        request_id: None,
    };
    for k in ["r1", "r2", "r3"] {
        store.enqueue(new(k)).await.unwrap();
    }
    // Claimed for an hour by a process that then stops.
    let claimed = store.claim_queued(10, 3600).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(store.claim_queued(10, 3600).await.unwrap().is_empty(), "claimed events are not claimable");
    let (first, rest) = claimed.split_first().unwrap();
    // The first was processed before the stop; a stale claim (wrong attempt) is not released.
    store.complete_queued(&first.id, Err("processed".into())).await.unwrap();
    let mut claims: Vec<(String, u32)> = claimed.iter().map(|e| (e.id.clone(), e.attempts)).collect();
    claims.push((rest[0].id.clone(), rest[0].attempts + 7));
    assert_eq!(store.release_queued(&claims).await.unwrap(), 2);
    // Pending again, the interrupted claim not counted, and claimable without waiting for the lease.
    for e in rest {
        let entry = store.queue_entry(&e.id).await.unwrap().unwrap();
        assert_eq!((entry.status, entry.attempts), (QueueStatus::Pending, 0), "{entry:?}");
    }
    let again = store.claim_queued(10, 60).await.unwrap();
    let mut ids: Vec<&str> = again.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(again.iter().all(|e| e.attempts == 1));
    assert_ne!(store.queue_entry(&first.id).await.unwrap().unwrap().status, QueueStatus::Pending);
}

mod queue_release {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        super::released_queued_events_are_claimable_at_once(super::open(dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let dir = tempfile::tempdir().unwrap();
        let Some((store, _db)) = super::open_pg(dir.path()).await else { return };
        super::released_queued_events_are_claimable_at_once(store).await;
    }
}

/// Another process's writer locks a source's row, then adds to an aggregate delivery row; a
/// refusal flush meanwhile must take the rows in that order too, or one of them dies deadlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusal_flush_locks_in_the_writers_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some((store, db)) = open_pg(dir.path()).await else { return };
    store.create_source(source("mail", "mail-secret")).await.unwrap();
    let now = Utc::now();
    store.record_delivery(Delivery { refused_count: Some(1), ..delivery("req_agg", "mail", None, 401, false, now) }, None);
    recorded(&store, "req_agg").await;
    let other = tw_store::testing::connect(&db.url).await.unwrap();
    other.batch_execute("BEGIN; UPDATE sources SET error_count = error_count + 1 WHERE name = 'mail'").await.unwrap();
    let count = RefusedCount {
        request_id: "req_agg".into(),
        source: name("mail"),
        status: 401,
        code: "invalid_signature".into(),
        first_at: now,
        last_at: now,
        count: 10,
    };
    let flush = tokio::spawn({
        let store = store.clone();
        async move { store.record_refusals(vec![count]).await }
    });
    // The flush waits for the source's row (before the fix: holding the aggregate row).
    let watch = tw_store::testing::connect(&db.url).await.unwrap();
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut tries = 0;
    while watch.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        tries += 1;
        assert!(tries < 3000, "the flush never waited for the source's row");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    other.batch_execute("UPDATE deliveries SET refused_count = refused_count + 1 WHERE request_id = 'req_agg'; COMMIT").await.unwrap();
    flush.await.unwrap().unwrap();
    let d = store.get_delivery("req_agg").await.unwrap().unwrap();
    assert_eq!(d.refused_count, Some(12));
}

fn payload_page<K>(src: &str, after: Option<K>, limit: u32) -> PayloadPage<K> {
    PayloadPage { source: name(src), since: None, after, limit }
}

/// Normalizing stored incidents again updates them in place (same id and number, status and
/// delivery count), moves the dedupe key with a changed alert id unless another incident holds
/// it, and writes nothing when nothing changed.
async fn reprocessing_updates_incidents_in_place_and_never_duplicates(store: Arc<dyn Store>) {
    store.create_source(source("edr", "s")).await.unwrap();
    store.create_source(source("other", "s")).await.unwrap();
    let a = store.ingest(ingest_req("edr", Some("a1"), "k1")).await.unwrap().incident();
    let b = store.ingest(ingest_req("edr", Some("b1"), "k2")).await.unwrap().incident();
    let c = store.ingest(ingest_req("edr", None, "k3")).await.unwrap().incident();
    store.ingest(ingest_req("other", Some("a1"), "k4")).await.unwrap();
    store.ingest(ingest_req("edr", Some("a1"), "k1b")).await.unwrap();

    // Pages by number, the source's only, with their payloads.
    let first = store.incident_payloads(&payload_page("edr", None, 2)).await.unwrap();
    assert_eq!(first.iter().map(|p| p.number).collect::<Vec<_>>(), vec![a.number, b.number]);
    assert_eq!(first[0].raw, br#"{"raw": true}"#.to_vec());
    assert_eq!(first[0].id, a.id);
    let rest = store.incident_payloads(&payload_page("edr", Some(b.number), 2)).await.unwrap();
    assert_eq!(rest.iter().map(|p| p.number).collect::<Vec<_>>(), vec![c.number]);
    assert!(store.incident_payloads(&payload_page("edr", Some(c.number), 2)).await.unwrap().is_empty());
    let mut later = payload_page("edr", None, 10);
    later.since = Some(Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 1).unwrap());
    assert!(store.incident_payloads(&later).await.unwrap().is_empty(), "received before `since`");

    let mut new_a = alert(Some("a2"));
    new_a.title = "renamed".into();
    new_a.severity = Severity::Low;
    let taken = alert(Some("a2"));
    let outcomes = store
        .renormalize_incidents(
            &name("edr"),
            vec![(a.id, new_a.clone()), (b.id, taken), (c.id, alert(None)), (uuid::Uuid::now_v7(), alert(None))],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![Renormalized::Updated, Renormalized::Conflict { holder: a.number }, Renormalized::Unchanged, Renormalized::NotFound]
    );
    let got = store.get_incident(&IncidentKey::Id(a.id)).await.unwrap().unwrap();
    assert_eq!((got.incident_number, got.title.as_str(), got.severity), (a.number, "renamed", Severity::Low));
    assert_eq!((got.external_id.as_deref(), got.delivery_count, got.status), (Some("a2"), 2, IncidentStatus::Open));
    let kept = store.get_incident(&IncidentKey::Id(b.id)).await.unwrap().unwrap();
    assert_eq!(kept.external_id.as_deref(), Some("b1"), "a conflict leaves the incident as it was");
    // The totals follow the severity.
    assert_eq!(walk(&store, &filter(Some("edr"), Some(Severity::Low), None, 10)).await.1, 1);
    assert_eq!(walk(&store, &filter(Some("edr"), Some(Severity::High), None, 10)).await.1, 2);

    // Again: nothing to write. An incident of another source is not touched.
    assert_eq!(store.renormalize_incidents(&name("edr"), vec![(a.id, new_a)]).await.unwrap(), vec![Renormalized::Unchanged]);
    assert_eq!(store.renormalize_incidents(&name("other"), vec![(a.id, alert(None))]).await.unwrap(), vec![Renormalized::NotFound]);

    // The dedupe key moved: the new id is a duplicate of the same incident, the old one is free.
    let again = store.ingest(ingest_req("edr", Some("a2"), "k5")).await.unwrap();
    assert_eq!(again, IngestOutcome::Duplicate { incident: a, delivery_count: 3 });
    assert!(matches!(store.ingest(ingest_req("edr", Some("a1"), "k6")).await.unwrap(), IngestOutcome::Created(_)));
}

/// A dead letter that now normalizes becomes an incident (deduped like a live delivery) and
/// leaves the dead letters in the same transaction, exactly once; one that still fails stays,
/// with its new reason.
async fn reprocessed_dead_letters_are_ingested_once_or_kept(store: Arc<dyn Store>) {
    store.create_source(source("edr", "s")).await.unwrap();
    let letter = |raw: &str, key: Option<&str>| NewDeadLetter {
        source: name("edr"),
        raw: raw.as_bytes().to_vec(),
        reason: "no title".into(),
        received_at: Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap(),
        request_id: Some("rq".into()),
        queue_id: None,
        request_key: key.map(str::to_string),
    };
    let d1 = store.dead_letter(letter("{\"n\":1}", Some("dk1"))).await.unwrap();
    let d2 = store.dead_letter(letter("{\"n\":2}", None)).await.unwrap();
    let d3 = store.dead_letter(letter("{\"n\":3}", Some("dk3"))).await.unwrap();
    let page = store.dead_letter_payloads(&payload_page("edr", None, 2)).await.unwrap();
    assert_eq!(page.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![d1.as_str(), d2.as_str()]);
    assert_eq!((page[0].request_key.as_deref(), page[1].request_key.as_deref()), (Some("dk1"), None));
    assert_eq!(page[0].raw, b"{\"n\":1}".to_vec());
    let rest = store.dead_letter_payloads(&payload_page("edr", Some(d2.clone()), 2)).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![d3.as_str()]);

    let done = store
        .resolve_dead_letters(vec![
            (d1.clone(), Ok(ingest_req("edr", Some("x1"), "dk1"))),
            (d2.clone(), Err("still no title".into())),
            (d3.clone(), Ok(ingest_req("edr", Some("x1"), "dk3"))),
        ])
        .await
        .unwrap();
    let DeadLetterResolution::Ingested(IngestOutcome::Created(inc)) = done[0] else { panic!("{done:?}") };
    assert_eq!(done[1], DeadLetterResolution::StillFailing);
    assert_eq!(done[2], DeadLetterResolution::Ingested(IngestOutcome::Duplicate { incident: inc, delivery_count: 2 }));
    let (left, total) = store.list_dead_letters(Some(&name("edr")), Page { page: 1, per_page: 10 }).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!((left[0].id.as_str(), left[0].reason.as_str()), (d2.as_str(), "still no title"));

    // A second run finds them gone: no second incident, no second count.
    let again = store.resolve_dead_letters(vec![(d1, Ok(ingest_req("edr", Some("x2"), "dk1")))]).await.unwrap();
    assert_eq!(again, vec![DeadLetterResolution::Gone]);
    assert_eq!(walk(&store, &filter(Some("edr"), None, None, 10)).await.0, vec![inc.number]);
    assert_eq!(store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().unwrap().delivery_count, 2);
}
