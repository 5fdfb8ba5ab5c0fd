//! Store contract tests: behaviour every `Store` implementation must have. Each check is a
//! function over `Arc<dyn Store>`, run on a real SQLite file and on a fresh PostgreSQL database
//! (skipped, with a visible line, where no PostgreSQL server answers; see `tw_store::testing`).

use chrono::{TimeZone, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use tw_core::{Alert, Format, Secret, Severity, SourceName};
use tw_store::sqlite::SqliteStore;
use tw_store::prelude::*;
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
    let (_, total) = store
        .list_incidents(&IncidentFilter { source: None, severity: None, status: None, page: Page { page: 1, per_page: 10 } })
        .await
        .unwrap();
    assert_eq!(total, 199);
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

/// A store on a fresh PostgreSQL database, or `None` when no server answers.
async fn open_pg(dir: &std::path::Path) -> Option<(Arc<dyn Store>, TestDatabase)> {
    let db = TestDatabase::create().await?;
    let key = MasterKey::load_or_create(None, dir).unwrap();
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let store = tw_store::open(&url, key, StoreOptions::default()).await.unwrap();
    Some((store, db))
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
        assert_eq!(applied, [1], "each migration applied exactly once");
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
