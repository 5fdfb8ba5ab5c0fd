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
    IncidentFilter { source: source.map(name), severity, status, per_page, start: PageStart::Offset(0) }
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
                assert_eq!(Some(next), page.items.last().map(|i| i.incident_number), "{f:?}: next is the page's last item");
                f.start = PageStart::After(next);
            }
            None => break,
        }
        assert!(seen.len() <= 10_000, "{f:?}: the cursor never ends");
    }
    (seen, total.unwrap())
}

/// The numbers newest first: year, then sequence, descending.
fn newest_first(mut numbers: Vec<IncidentNumber>) -> Vec<IncidentNumber> {
    numbers.sort_by_key(|n| std::cmp::Reverse((n.year, n.seq)));
    numbers
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
    };
    store.record_delivery(delivery, None);
    let mut shown = None;
    for _ in 0..200 {
        if let Some(d) = store.get_delivery("rq-q1").await.unwrap() {
            shown = d.raw_payload;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(shown.as_deref(), Some(r#"{"raw": true}"#), "the incident's payload, once processed");

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
        trace: vec![],
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
    assert!(!store.complete_triage_job(&job.job_id, 0, TriageCompletion::Done(outcome(80))).await.unwrap());
    assert!(store.complete_triage_job(&job.job_id, 1, TriageCompletion::Done(outcome(80))).await.unwrap());
    // Finishing twice changes nothing.
    assert!(!store.complete_triage_job(&job.job_id, 1, TriageCompletion::Done(outcome(10))).await.unwrap());
    let done = store.get_incident(&IncidentKey::Id(inc.id)).await.unwrap().unwrap();
    let t = done.triage.unwrap();
    assert_eq!((t["status"].as_str(), t["score"].as_u64(), t["verdict"].as_str()), (Some("completed"), Some(80), Some("malicious")));
    assert_eq!(t["findings"].as_array().unwrap().len(), 1);
    assert_eq!(done.status, IncidentStatus::Triaged);
    assert_eq!(done.severity, Severity::Critical);
    assert_eq!(store.triage_job(&job.job_id).await.unwrap().unwrap().status, TriageJobStatus::Completed);
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
    assert!(store.complete_triage_job(&new.job_id, 1, TriageCompletion::Done(newer)).await.unwrap());
    // The old run finishes afterwards: the job is completed, the incident keeps the newer triage.
    assert!(store.complete_triage_job(&old.job_id, 1, TriageCompletion::Done(outcome(90))).await.unwrap());
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

/// Completes the incident's pending triage job with `severity` (a playbook verdict moves an open
/// incident to triaged and may change its severity).
async fn triage_to(store: &Arc<dyn Store>, incident: &IncidentRef, severity: Option<Severity>) {
    store.enqueue_triage(&IncidentKey::Id(incident.id), "malware_triage", serde_json::Map::new(), 3).await.unwrap();
    let claimed = store.claim_triage_jobs(1, 600).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].incident.id, incident.id);
    let mut done = outcome(70);
    done.severity = severity;
    assert!(store.complete_triage_job(&claimed[0].job.job_id, claimed[0].job.attempts, TriageCompletion::Done(done)).await.unwrap());
}

async fn keyset_pages_cover_every_incident_once_in_number_order(store: Arc<dyn Store>) {
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
    let expect = |f: &IncidentFilter| {
        newest_first(
            truth
                .iter()
                .filter(|i| f.source.as_ref().is_none_or(|s| *s == i.source))
                .filter(|i| f.severity.is_none_or(|s| s == i.severity))
                .filter(|i| f.status.is_none_or(|s| s == i.status))
                .map(|i| i.incident_number)
                .collect(),
        )
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
    for base in filters {
        let expected = expect(&base);
        let n = expected.len() as u32;
        // One per page, a few per page, exactly all in one page, all but one in the first.
        for per_page in [1, 4, n.max(1), n.saturating_sub(1).max(1), 200] {
            let f = IncidentFilter { per_page, ..base.clone() };
            let (seen, total) = walk(&store, &f).await;
            assert_eq!(seen, expected, "{f:?}: every incident once, newest number first");
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
    concurrent_ingests_get_distinct_gapless_numbers,
    a_failing_write_does_not_undo_its_batch,
    queue_lifecycle,
    api_keys,
    triage_jobs_finish_once,
    triage_jobs_retry_then_fail,
    only_expired_leases_are_taken_over,
    sources_version_moves_with_every_change,
    odd_text_is_stored,
    an_older_job_finishing_late_does_not_overwrite_a_newer_triage,
    playbooks_in_use_are_kept,
    keyset_pages_cover_every_incident_once_in_number_order,
    totals_follow_inserts_status_and_severity_changes,
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
    assert_eq!(version, 2);
    let raw_column: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'incidents' AND column_name = 'raw_payload')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!raw_column);
    let indexes: Vec<String> = client
        .query("SELECT indexname FROM pg_indexes WHERE tablename = 'incidents' AND indexname LIKE 'incidents_by_%' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexes, ["incidents_by_severity", "incidents_by_source", "incidents_by_status"]);
    check_migrated(&store, &old).await;
    assert_eq!(pg_count_mismatches(&client).await, 0);
}

/// Rows where `incident_counts` disagrees with a `COUNT(*)` of the incidents.
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
                    store.complete_triage_job(&c.job.job_id, c.job.attempts, TriageCompletion::Done(done)).await.unwrap();
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
