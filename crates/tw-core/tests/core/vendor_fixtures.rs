//! Every vendor fixture (`shared/fixtures/vendors` and `tests/core/fixtures`) normalized: formats detected, titles,
//! severities, times, ids and entities checked against values read in the fixtures, console
//! links never extracted, and every normalized alert snapshotted with insta.

use crate::fixtures::{all_fixture_names, load};
use serde_json::Value;
use std::collections::BTreeMap;
use tw_core::{Alert, Entity, EntityKind, Format, Severity, normalize};

fn norm(name: &str) -> Alert {
    normalize(&load(name), None, &BTreeMap::new()).expect("fixtures are objects")
}

fn has(a: &Alert, kind: EntityKind, value: &str) -> bool {
    a.entities.iter().any(|e| e.kind == kind && e.value == value)
}

fn role_of<'a>(a: &'a Alert, kind: EntityKind, value: &str) -> Option<&'a str> {
    a.entities.iter().find(|e| e.kind == kind && e.value == value).and_then(|e| e.role.as_deref())
}

fn time(a: &Alert) -> String {
    a.event_time.expect("event time").to_rfc3339()
}

#[test]
fn snapshot_every_fixture() {
    let names = all_fixture_names();
    assert!(names.len() >= 28, "expected the whole fixture set, found {}", names.len());
    for name in names {
        let alert = norm(&name);
        insta::assert_json_snapshot!(name.trim_end_matches(".json").to_string(), alert);
    }
}

/// What every fixture normalizes to with each other format pinned (a source configured with a
/// fixed `format`): the normalizers' output on shapes that are not theirs is pinned too.
#[test]
fn snapshot_every_fixture_with_each_other_format_pinned() {
    for name in all_fixture_names() {
        let payload = load(&name);
        let detected = norm(&name).format;
        let pinned: BTreeMap<&str, Alert> = Format::ALL
            .into_iter()
            .filter(|f| *f != detected)
            .map(|f| (f.as_str(), normalize(&payload, Some(f), &BTreeMap::new()).expect("fixtures are objects")))
            .collect();
        insta::assert_json_snapshot!(format!("{}-pinned", name.trim_end_matches(".json")), pinned);
    }
}

#[test]
fn spec_vendors_are_detected() {
    for name in all_fixture_names() {
        let a = norm(&name);
        let want = if name.starts_with("crowdstrike-") {
            Format::Crowdstrike
        } else if name.starts_with("defender-") {
            Format::Defender
        } else if name.starts_with("splunk-") {
            Format::Splunk
        } else if name.starts_with("sentinelone-") {
            Format::Sentinelone
        } else if name.starts_with("sentinel-") {
            Format::Sentinel
        } else if name.starts_with("elastic-") {
            Format::Elastic
        } else {
            Format::Generic
        };
        assert_eq!(a.format, want, "{name}");
        assert!(!a.title.is_empty() && !a.title.starts_with("Untitled"), "{name}: {:?}", a.title);
        assert!(a.title.chars().count() <= 512 && a.title == a.title.trim(), "{name}");
    }
}

#[test]
fn generic_fixtures() {
    let a = norm("generic-full.json");
    assert_eq!(a.title, "security_alert: Credential phishing message delivered to three mailboxes");
    assert_eq!(a.description.as_deref(), Some("Gateway sandbox rated the linked page as a credential harvester after delivery."));
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(time(&a), "2024-06-10T15:01:12+00:00");
    assert_eq!(a.external_id.as_deref(), Some("alert-20240610-0002"));
    assert_eq!(a.event_type.as_deref(), Some("security_alert"));
    assert_eq!(role_of(&a, EntityKind::Email, "billing@invoices.example.net"), Some("sender"));
    for r in ["jdoe@corp.example.com", "asmith@corp.example.com", "finance-team@corp.example.com"] {
        assert_eq!(role_of(&a, EntityKind::Email, r), Some("recipient"), "{r}");
    }
    assert_eq!(role_of(&a, EntityKind::Ip, "198.51.100.77"), Some("sender"));
    assert!(has(&a, EntityKind::Url, "https://login.example.net/session/renew?id=7731"));
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/inv/44817.html"));
    assert!(has(&a, EntityKind::FileHash, "659a0ec46c7a1d7055f81acb198db537db65aab9cce2d705acfd6905f559bbda"));
    assert!(has(&a, EntityKind::File, "invoice_44817.html"));

    let a = norm("generic-minimal.json");
    assert_eq!(a.title, "security_alert from email-gateway");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(time(&a), "2024-06-10T14:58:00+00:00");
    assert_eq!(a.external_id.as_deref(), Some("alert-20240610-0001"));
    assert!(a.entities.is_empty());

    let a = norm("generic-missing-optional.json");
    assert_eq!(a.title, "security_alert");
    assert_eq!(a.severity, Severity::Medium, "documented default");
    assert_eq!(a.vendor_severity, None);
    assert_eq!(a.event_time, None);
    assert_eq!(a.external_id.as_deref(), Some("alert-20240610-0003"));
}

#[test]
fn crowdstrike_fixtures() {
    let a = norm("crowdstrike-detection-summary-high.json");
    assert_eq!(a.title, "Suspicious Activity");
    assert_eq!(a.description.as_deref(), Some("An Office document spawned a script interpreter that fetched and ran remote content."));
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.vendor_severity.as_deref(), Some("4"));
    assert_eq!(time(&a), "2024-06-10T14:58:32+00:00", "eventCreationTime is epoch ms");
    assert_eq!(a.external_id.as_deref(), Some("ldt:bec7b02d059cd42f60128272db10e8ec:219902325555"));
    assert_eq!(a.event_type.as_deref(), Some("DetectionSummaryEvent"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "WS-FIN-0427", "host"));
    assert_eq!(role_of(&a, EntityKind::Ip, "192.0.2.57"), Some("host"));
    assert!(has(&a, EntityKind::User, "jdoe"));
    assert!(has(&a, EntityKind::FileHash, "b9c088258bf895c0fe8ab2d26860aa1719a6e533729a62bf405c0d29bdff1d21"));
    assert!(has(&a, EntityKind::FileHash, "da16cc2bbd7dbc782aabb7489d3f0d6c"));
    assert!(has(&a, EntityKind::File, "\\Device\\HarddiskVolume3\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"));
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/a/run.ps1"), "URL inside the command line");
    let parent = a.entities.iter().find(|e| e.role.as_deref() == Some("parent_process") && e.kind == EntityKind::Process).unwrap();
    assert!(parent.value.contains("WINWORD.EXE"));

    let a = norm("crowdstrike-detection-summary-critical.json");
    assert_eq!((a.title.as_str(), a.severity), ("Process Terminated", Severity::Critical));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "FS-02", "host"));
    for ip in ["203.0.113.66", "198.51.100.140", "192.0.2.80"] {
        assert_eq!(role_of(&a, EntityKind::Ip, ip), Some("remote"), "{ip}");
    }
    assert!(has(&a, EntityKind::File, "\\Device\\HarddiskVolume2\\ProgramData\\SysHelper\\wipe_vss.bat"));
    assert!(has(&a, EntityKind::File, "\\Device\\HarddiskVolume2\\Shares\\HR\\payroll_2024-05.pdf"));
    // IOCValue repeats SHA256String: deduplicated.
    let sha = "2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f";
    assert_eq!(a.entities.iter().filter(|e| e.value == sha).count(), 1);

    let a = norm("crowdstrike-detection-summary-informational.json");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Info, Some("1")));

    let a = norm("crowdstrike-detection-summary-sparse.json");
    assert_eq!((a.title.as_str(), a.severity), ("NGAV", Severity::Low));
    assert_eq!(time(&a), "2024-06-10T17:20:02+00:00");
    assert!(!a.entities.iter().any(|e| e.value.is_empty()));
    assert!(!a.entities.iter().any(|e| e.kind == EntityKind::Process), "CommandLine is \"\"");
    assert!(!a.entities.iter().any(|e| e.kind == EntityKind::Ip), "LocalIP is \"\"");
    assert!(has(&a, EntityKind::File, "\\Device\\HarddiskVolume3\\Users\\Public\\Downloads\\toolbar_setup.exe"));

    let a = norm("crowdstrike-epp-detection-summary.json");
    assert_eq!(a.title, "Suspicious Activity");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("70")));
    assert_eq!(time(&a), "2024-06-10T18:00:55+00:00");
    assert_eq!(
        a.external_id.as_deref(),
        Some("eeddb406c62772dca48d88e1d1707608:ind:7ccc2f2f5d347a0a97f7fcd6673a76c1:220177310044-10197-904411")
    );
    assert_eq!(a.event_type.as_deref(), Some("EppDetectionSummaryEvent"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "DEV-LT-118", "host"));
    assert!(has(&a, EntityKind::File, "/usr/bin/curl"));
    assert!(has(&a, EntityKind::FileHash, "f858ecaeabb582aeadb4fe3966058d26a7547f70f7f0022e81944da8df0635ee"));
    assert!(!a.entities.iter().any(|e| e.value.chars().all(|c| c == '0')), "all-zero SHA1 dropped");
    assert!(has(&a, EntityKind::Url, "https://get.example.net/bootstrap.sh"));
}

#[test]
fn defender_fixtures() {
    let a = norm("defender-o365-phish-typical.json");
    assert_eq!(a.title, "Email messages containing malicious URL removed after delivery");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("medium")));
    assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-06-10T15:01:44.213381700+00:00");
    assert_eq!(a.external_id.as_deref(), Some("fa7251d13d-7226-7d37-8fd1-9e8b7152e851"));
    assert_eq!(a.event_type.as_deref(), Some("InitialAccess"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Email, "billing@invoices.example.net", "sender"));
    assert_eq!(role_of(&a, EntityKind::Email, "jdoe@corp.example.com"), Some("recipient"));
    assert_eq!(role_of(&a, EntityKind::Ip, "198.51.100.77"), Some("sender"));
    assert!(has(&a, EntityKind::Url, "https://login.example.net/session/renew?id=7731"));

    let a = norm("defender-o365-phish-many-urls.json");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.entities.iter().filter(|e| e.kind == EntityKind::Url).count(), 5, "deduplicated across messages");
    assert!(has(&a, EntityKind::FileHash, "7b11f100c4c52985b4d04e91f43618ce44bb35050dce0e10ab13a3e79c6c4fbd"));
    assert!(has(&a, EntityKind::Email, "asmith@corp.example.com"));

    let a = norm("defender-o365-alert-nulls.json");
    assert_eq!(a.title, "Email reported by user as malware or phish");
    assert_eq!(a.description, None, "empty description is none");
    assert_eq!(a.severity, Severity::Info);
    assert_eq!(time(&a), "2024-06-10T16:20:03+00:00");
    assert_eq!(a.entities, vec![Entity::with_role(EntityKind::Email, "rkim@corp.example.com", "recipient")]);

    let a = norm("defender-o365-mgmt-activity-alert.json");
    assert_eq!(a.title, "Email reported by user as malware or phish");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Low, Some("Low")));
    assert_eq!(time(&a), "2024-06-10T16:20:03+00:00", "zone-less is UTC");
    assert_eq!(a.external_id.as_deref(), Some("c8d78072-ac8b-4b0c-5bdc-02fafd436ce5"));
    assert_eq!(a.description.as_deref(), Some("Email subject: Action required: confirm your June payroll details"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Email, "payroll@hr-portal.example.net", "sender"));
    assert_eq!(role_of(&a, EntityKind::Email, "rkim@corp.example.com"), Some("recipient"));
    assert_eq!(role_of(&a, EntityKind::Ip, "203.0.113.201"), Some("sender"));
    // RecordType as a string (Elastic's sample) is the same record.
    let mut v = load("defender-o365-mgmt-activity-alert.json");
    v["RecordType"] = Value::from("40");
    let b = normalize(&v, None, &BTreeMap::new()).unwrap();
    assert_eq!((b.format, b.external_id), (Format::Defender, a.external_id.clone()));

    let a = norm("defender-m365d-incident-phish.json");
    assert_eq!(a.title, "Phishing campaign detected and removed after delivery involving multiple users");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.event_time.unwrap().timestamp(), 1718032330);
    assert_eq!(a.external_id.as_deref(), Some("48123"));
    assert_eq!(role_of(&a, EntityKind::Email, "payroll@hr-portal.example.net"), Some("sender"));
    assert_eq!(role_of(&a, EntityKind::Email, "jdoe@corp.example.com"), Some("recipient"));
    assert!(has(&a, EntityKind::Ip, "203.0.113.201"));
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/inv/44817.html"));
    assert!(has(&a, EntityKind::FileHash, "5593ed836093d51cddef0269e6f2afed3ad8bb83"));
    assert!(has(&a, EntityKind::File, "payroll_confirm_June.htm"));
    assert!(has(&a, EntityKind::User, "jdoe"));
}

#[test]
fn splunk_fixtures() {
    let a = norm("splunk-alert-failed-login.json");
    assert_eq!(a.title, "Failed Login Alert");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, None), "Splunk default");
    assert_eq!(time(&a), "2024-06-10T14:59:00+00:00", "result._time, epoch seconds as a string");
    assert_eq!(a.external_id.as_deref(), Some("scheduler__admin__search__RMD5c41f2a9e07b3d518_at_1718031600_4521"));
    assert_eq!(role_of(&a, EntityKind::Ip, "203.0.113.45"), Some("src"));
    assert!(has(&a, EntityKind::User, "jdoe"));
    assert!(!has(&a, EntityKind::User, "-"));
    assert_eq!(role_of(&a, EntityKind::Hostname, "dc01.corp.example.com"), Some("dest"));
    assert!(has(&a, EntityKind::Hostname, "WS-0427"));

    let a = norm("splunk-alert-null-search-name.json");
    assert_eq!(a.title, "Splunk alert scheduler__nobody__search__RMD5e6d1c07fa2b94c33_at_1718038800_902");
    assert_eq!(a.external_id.as_deref(), Some("scheduler__nobody__search__RMD5e6d1c07fa2b94c33_at_1718038800_902"));
    assert_eq!(a.event_time, None, "the fixture has no time at all");
    assert!(a.entities.is_empty());

    let a = norm("splunk-alert-process-many-entities.json");
    assert_eq!(a.title, "Endpoint - Office Child Process Downloads Script - Rule");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("high")), "ES urgency");
    assert_eq!(time(&a), "2024-06-10T15:55:11+00:00", "firstTime");
    for h in [
        "66a41197bf657cac97458cb33d8d3ba8bfee5aabea4e22496019a7a32af3bc1b",
        "dd0c44ebc9512e815ad4678944128d53d0cb1857",
        "6c0f52fc08e479e61ff6f7d06c6c7cf0",
        "0ae8533960cdd7d52b96a7f68aeca4fafbfb6ac51dbb9a6b5618d7bc0bcb381c",
    ] {
        assert!(has(&a, EntityKind::FileHash, h), "{h}");
    }
    assert!(!has(&a, EntityKind::FileHash, "15a19baf7b8c57a3c45afb479b541966"), "IMPHASH is not a file hash");
    assert_eq!(role_of(&a, EntityKind::Ip, "192.0.2.58"), Some("src"));
    assert_eq!(role_of(&a, EntityKind::Ip, "198.51.100.140"), Some("dest"));
    assert_eq!(role_of(&a, EntityKind::Email, "billing@invoices.example.net"), Some("sender"));
    assert_eq!(role_of(&a, EntityKind::Email, "jdoe@corp.example.com"), Some("recipient"));
    assert!(has(&a, EntityKind::Url, "https://files.example.net/drop/stage2.bin"));
    assert_eq!(role_of(&a, EntityKind::Hostname, "ws-0427.corp.example.com"), Some("dest"));
    assert!(a.entities.iter().any(|e| e.role.as_deref() == Some("parent_process") && e.value.contains("WINWORD.EXE")));
}

#[test]
fn sentinelone_fixtures() {
    let v = load("sentinelone-threat.json");
    let a = norm("sentinelone-threat.json");
    assert_eq!(
        a.title,
        format!("{}: {}", v["threatInfo"]["classification"].as_str().unwrap(), v["threatInfo"]["threatName"].as_str().unwrap())
    );
    assert_eq!(a.title, "Trojan: zoom_update_5.17.exe");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("malicious")), "confidenceLevel malicious");
    assert_eq!(time(&a), "2024-06-10T15:22:41.517302+00:00", "createdAt");
    assert_eq!(a.external_id.as_deref(), v["threatInfo"]["threatId"].as_str());
    assert_eq!(a.external_id.as_deref(), Some("1968443120875512321"));
    assert_eq!(a.event_type.as_deref(), Some("Trojan"));
    assert_eq!(a.description, None, "no indicators");
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "WS-SALES-0211", "host"));
    assert_eq!(role_of(&a, EntityKind::Ip, "192.0.2.211"), Some("host"));
    assert_eq!(role_of(&a, EntityKind::Ip, "198.51.100.9"), Some("external"));
    assert!(has(&a, EntityKind::User, "CORP\\bchen"));
    assert_eq!(role_of(&a, EntityKind::Process, "msedge.exe"), Some("originator"), "originatorProcess");
    assert!(has(&a, EntityKind::File, "\\Device\\HarddiskVolume3\\Users\\bchen\\Downloads\\zoom_update_5.17.exe"));
    for h in [
        "52e21c166c94691fcf6090aa4bd5e7ae11e3383d3a8a3fd40952aa5072dde9c0",
        "e510e371615d50dd44d458a3f1d325bb86df9450",
        "6ec33172719759ecf0331967b59efc0e",
    ] {
        assert!(has(&a, EntityKind::FileHash, h), "{h}");
    }
    assert!(!has(&a, EntityKind::Ip, "23.4.2.14"), "agentVersion is not an IP");

    let a = norm("sentinelone-threat-suspicious-nulls.json");
    assert_eq!(a.title, "PUA: helperd");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("suspicious")));
    assert_eq!(a.external_id.as_deref(), Some("1968533309128811004"));
    assert_eq!(time(&a), "2024-06-10T18:44:09.100+00:00");
    assert!(has(&a, EntityKind::FileHash, "4283d308f134bc6ff90f4889bd48b0257bfffbb4"));
    assert!(!a.entities.iter().any(|e| e.kind == EntityKind::User), "processUser and logged-in user are \"\"");
    assert!(has(&a, EntityKind::File, "/Users/Shared/.cache/helperd"));

    let a = norm("sentinelone-threat-many-indicators.json");
    assert_eq!(a.title, "Malware: vcruntime_ext.dll");
    assert_eq!(a.external_id.as_deref(), Some("1968501177340028877"), "threatId");
    assert_eq!(role_of(&a, EntityKind::Ip, "2001:db8:10::103"), Some("host"), "IPv6");
    assert_eq!(role_of(&a, EntityKind::Ip, "198.51.100.103"), Some("host"));
    assert!(has(&a, EntityKind::Url, "https://sync.example.net/api/v2/beacon"), "URL in the process arguments");
    assert!(
        a.entities
            .iter()
            .any(|e| e.kind == EntityKind::Process && e.role.as_deref() == Some("process") && e.value.starts_with("rundll32.exe"))
    );
    let d = a.description.as_deref().unwrap();
    assert!(d.starts_with("File flagged by on-write static model.\nScheduled task registered"), "{d}");
    assert_eq!(d.lines().count(), 5);
}

#[test]
fn sentinel_fixtures() {
    let v = load("sentinel-incident.json");
    let a = norm("sentinel-incident.json");
    let p = &v["object"]["properties"];
    assert_eq!(a.title, p["title"].as_str().unwrap());
    assert_eq!(a.title, "Multiple failed sign-ins followed by a success from a new country");
    assert_eq!(a.description.as_deref(), p["description"].as_str());
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("Medium")));
    assert_eq!(time(&a), "2024-06-10T15:06:30.886666700+00:00", "createdTimeUtc");
    assert_eq!(a.external_id.as_deref(), Some("3187"), "incidentNumber");
    assert_eq!(a.event_type.as_deref(), Some("Incident"));
    assert_eq!(a.entities, vec![Entity::new(EntityKind::User, "jdoe"), Entity::new(EntityKind::Ip, "203.0.113.45")]);

    // An Update of the same incident carries the same id: the store recognises it.
    let u = norm("sentinel-incident-update.json");
    assert_eq!(u.format, Format::Sentinel);
    assert_eq!(u.external_id, a.external_id);
    assert_eq!(u.title, a.title);
    assert_eq!((u.severity, u.vendor_severity.as_deref()), (Severity::Low, Some("Low")));
    assert_eq!(u.event_time, a.event_time, "createdTimeUtc does not move on update");
    assert!(!has(&u, EntityKind::Email, "soc-lead@corp.example.com"), "the owner is not an entity");

    let a = norm("sentinel-incident-minimal-nulls.json");
    assert_eq!(a.title, "Rare process observed on server");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Info, Some("Informational")));
    assert_eq!(a.description, None);
    assert_eq!(a.external_id.as_deref(), Some("3201"));
    assert_eq!(time(&a), "2024-06-10T19:00:04.810+00:00");
    assert!(a.entities.is_empty());

    let a = norm("sentinel-incident-many-entities.json");
    assert_eq!(a.title, "Phishing link click followed by malware execution on endpoint");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.external_id.as_deref(), Some("3190"));
    assert_eq!(role_of(&a, EntityKind::Hostname, "ws-0427.corp.example.com"), Some("host"));
    for ip in ["192.0.2.57", "203.0.113.66", "198.51.100.77"] {
        assert!(has(&a, EntityKind::Ip, ip), "{ip}");
    }
    assert!(has(&a, EntityKind::Url, "https://login.example.net/session/renew?id=7731"));
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/a/run.ps1"));
    assert!(has(&a, EntityKind::FileHash, "b9c088258bf895c0fe8ab2d26860aa1719a6e533729a62bf405c0d29bdff1d21"));
    assert!(has(&a, EntityKind::FileHash, "d3efb95a3e2ae4b40402ea7d1885420c"));
    assert!(has(&a, EntityKind::File, "C:\\Users\\jdoe\\Downloads\\remittance_0610.docm"));
    assert_eq!(role_of(&a, EntityKind::Process, "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA"), Some("process"));
    assert_eq!(role_of(&a, EntityKind::Email, "billing@invoices.example.net"), Some("sender"));
    assert_eq!(role_of(&a, EntityKind::Email, "jdoe@corp.example.com"), Some("recipient"));
    assert!(has(&a, EntityKind::User, "jdoe"));
    assert!(!has(&a, EntityKind::Email, "soc-lead@corp.example.com"), "the owner is not an entity");

    let v = load("sentinel-alert-trigger.json");
    let a = norm("sentinel-alert-trigger.json");
    assert_eq!(a.title, "Suspicious PowerShell command line");
    assert_eq!(a.description.as_deref(), v["Description"].as_str());
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("High")));
    assert_eq!(time(&a), "2024-06-10T15:01:31.442+00:00", "StartTimeUtc");
    assert_eq!(a.external_id.as_deref(), v["SystemAlertId"].as_str());
    assert_eq!(a.event_type.as_deref(), Some("Execution"), "Intent");
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "ws-0427.corp.example.com", "host"));
    assert!(has(&a, EntityKind::User, "jdoe"));
    assert!(has(&a, EntityKind::Ip, "203.0.113.66"));
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/a/run.ps1"));
    assert!(has(&a, EntityKind::FileHash, "b9c088258bf895c0fe8ab2d26860aa1719a6e533729a62bf405c0d29bdff1d21"));
    assert!(has(&a, EntityKind::Process, "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA"));
}

#[test]
fn elastic_fixtures() {
    let v = load("elastic-security-alert.json");
    let a = norm("elastic-security-alert.json");
    assert_eq!(a.title, v["rule_name"].as_str().unwrap());
    assert_eq!(a.title, "Encoded PowerShell Launched by Office Application");
    assert_eq!(a.description.as_deref(), v["alerts"][0]["kibana"]["alert"]["reason"].as_str(), "the alert's reason");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("high")));
    assert_eq!(time(&a), "2024-06-10T15:01:31.442+00:00", "original_time");
    assert_eq!(a.external_id.as_deref(), Some("7957ed1b-52bf-5f2c-4f9f-b66cf2da10ed"), "kibana.alert.uuid");
    assert_eq!(a.event_type.as_deref(), Some("query"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "ws-0427", "host"));
    assert_eq!(role_of(&a, EntityKind::Ip, "192.0.2.57"), Some("host"));
    assert!(has(&a, EntityKind::User, "jdoe"));
    assert_eq!(role_of(&a, EntityKind::Process, "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA"), Some("process"));
    assert!(
        a.entities
            .iter()
            .any(|e| e.role.as_deref() == Some("parent_process") && e.kind == EntityKind::Process && e.value.contains("WINWORD.EXE"))
    );
    assert!(has(&a, EntityKind::File, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"));
    for h in [
        "b9c088258bf895c0fe8ab2d26860aa1719a6e533729a62bf405c0d29bdff1d21",
        "da16cc2bbd7dbc782aabb7489d3f0d6c",
        "fb874e7aceed8dda9a17809df8005c4beb4e0322",
    ] {
        assert_eq!(role_of(&a, EntityKind::FileHash, h), Some("process"), "{h}");
    }
    assert!(!has(&a, EntityKind::FileHash, "798df62af1a42baa86c7d9e581d00f4b"), "host.id is not a hash");

    let a = norm("elastic-security-alert-minimal.json");
    assert_eq!(a.title, "Threshold - Excessive Failed SSH Logins");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Low, Some("low")));
    assert_eq!(a.description.as_deref(), Some("event created low alert Threshold - Excessive Failed SSH Logins."));
    assert_eq!(time(&a), "2024-06-10T19:14:00+00:00");
    assert_eq!(a.external_id.as_deref(), Some("2ce91a9a-683d-bd81-9645-022ab9a25942"));
    assert_eq!(a.event_type.as_deref(), Some("threshold"));
    assert_eq!(
        a.entities,
        vec![Entity::with_role(EntityKind::Ip, "198.51.100.250", "src")],
        "rule_url \"\" and results_link are not entities"
    );

    let a = norm("elastic-security-alert-many-entities.json");
    assert_eq!(a.title, "Office Child Process Downloads From Newly Seen Domain");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Critical, Some("critical")));
    assert_eq!(time(&a), "2024-06-10T15:01:33.905+00:00", "the first alert's original_time");
    assert_eq!(a.external_id.as_deref(), Some("eb36350a-66d1-100d-e8cd-e6485022006d"), "the first alert's uuid");
    assert!(has(&a, EntityKind::FileHash, "67d8e67b69e8d92b991e4b871ae3e0a6bf6deeece09c78990775e9a48ee5da93"), "from the second alert");
    assert!(has(&a, EntityKind::File, "C:\\Users\\jdoe\\AppData\\Local\\Temp\\stage2.bin"));
    assert_eq!(role_of(&a, EntityKind::Ip, "203.0.113.66"), Some("dest"));
    assert_eq!(role_of(&a, EntityKind::Ip, "192.0.2.57"), Some("host"));
    assert!(has(&a, EntityKind::Ip, "198.51.100.140"), "related.ip");
    assert!(has(&a, EntityKind::Url, "http://cdn.example.org/a/run.ps1"));
    assert!(has(&a, EntityKind::Domain, "cdn.example.org"));
    assert_eq!(role_of(&a, EntityKind::Email, "billing@invoices.example.net"), Some("sender"));
    assert!(has(&a, EntityKind::Email, "jdoe@corp.example.com"), "user.email, then the recipient");

    let v = load("elastic-security-alert-legacy-signal.json");
    let a = norm("elastic-security-alert-legacy-signal.json");
    assert_eq!(a.title, "Outbound RDP to the Internet");
    assert_eq!(a.description.as_deref(), v["alerts"][0]["signal"]["reason"].as_str(), "signal.reason");
    assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("medium")));
    assert_eq!(time(&a), "2021-11-08T09:38:51.106+00:00", "signal.original_time");
    assert_eq!(a.external_id.as_deref(), v["alerts"][0]["_id"].as_str(), "the alert document's _id");
    assert_eq!(a.event_type.as_deref(), Some("query"));
    assert_eq!(a.entities[0], Entity::with_role(EntityKind::Hostname, "ws-0312", "host"));
    assert_eq!(role_of(&a, EntityKind::Ip, "203.0.113.190"), Some("dest"));
    assert!(has(&a, EntityKind::User, "mlopez"));
    assert!(!a.entities.iter().any(|e| e.kind == EntityKind::FileHash), "the 64-hex _id is not a hash");
    // The body without `rule` or `rule_name` (another template) still reads the signal copy.
    let mut bare = v.clone();
    bare.as_object_mut().unwrap().retain(|k, _| k == "alerts");
    let b = normalize(&bare, None, &BTreeMap::new()).unwrap();
    assert_eq!((b.format, b.title.as_str(), b.severity), (Format::Elastic, "Outbound RDP to the Internet", Severity::Medium));
    assert_eq!((b.external_id, b.event_type.as_deref()), (a.external_id.clone(), Some("query")));
}

/// A vendor format is never detected on another vendor's fixture, and every fixture is
/// detected as exactly its own (the prefix of its name).
#[test]
fn new_formats_do_not_steal_and_are_not_stolen() {
    for name in all_fixture_names() {
        let detected = norm(&name).format;
        let own = Format::ALL.into_iter().find(|f| name.starts_with(&format!("{}-", f.as_str()))).unwrap_or(Format::Generic);
        assert_eq!(detected, own, "{name}");
    }
}

#[test]
fn console_links_are_never_entities() {
    for name in all_fixture_names() {
        let a = norm(&name);
        for e in &a.entities {
            assert!(!e.value.is_empty() && e.value == e.value.trim(), "{name}: {e:?}");
            let v = e.value.to_ascii_lowercase();
            for host in [
                "falcon.crowdstrike.com",
                "security.microsoft.com",
                "portal.azure.com",
                "kibana.example.com",
                "splunk.example.com",
                "attack.mitre.org",
            ] {
                assert!(!(e.kind == EntityKind::Url && v.contains(host)), "{name}: console link {e:?}");
            }
            if e.kind == EntityKind::FileHash {
                assert!(matches!(e.value.len(), 32 | 40 | 64) && !e.value.chars().all(|c| c == '0'), "{name}: {e:?}");
            }
        }
        let mut seen = std::collections::HashSet::new();
        assert!(a.entities.iter().all(|e| seen.insert((e.kind, e.value.to_ascii_lowercase()))), "{name}: duplicates");
    }
}

#[test]
fn severity_mapping_wins_over_the_default() {
    let v = load("crowdstrike-detection-summary-high.json");
    let mapping = BTreeMap::from([("4".to_string(), Severity::Critical)]);
    assert_eq!(normalize(&v, None, &mapping).unwrap().severity, Severity::Critical);
    assert_eq!(normalize(&v, None, &BTreeMap::new()).unwrap().severity, Severity::High);
    let v = load("defender-o365-phish-typical.json");
    let mapping = BTreeMap::from([("MEDIUM".to_string(), Severity::Low)]);
    assert_eq!(normalize(&v, None, &mapping).unwrap().severity, Severity::Low, "case-insensitive");
    // Splunk has no vendor severity: nothing to map.
    let v = load("splunk-alert-failed-login.json");
    let mapping = BTreeMap::from([("medium".to_string(), Severity::Critical)]);
    assert_eq!(normalize(&v, None, &mapping).unwrap().severity, Severity::Medium);
    // The new formats keep their vendor's word for the mapping too.
    for (name, vendor, default) in [
        ("sentinelone-threat-suspicious-nulls.json", "Suspicious", Severity::Medium),
        ("sentinel-incident-minimal-nulls.json", "informational", Severity::Info),
        ("sentinel-alert-trigger.json", "HIGH", Severity::High),
        ("elastic-security-alert-minimal.json", "low", Severity::Low),
    ] {
        let v = load(name);
        let mapping = BTreeMap::from([(vendor.to_string(), Severity::Critical)]);
        assert_eq!(normalize(&v, None, &mapping).unwrap().severity, Severity::Critical, "{name}");
        assert_eq!(normalize(&v, None, &BTreeMap::new()).unwrap().severity, default, "{name}");
    }
}

#[test]
fn pinned_formats_are_honoured() {
    let v = load("sentinel-incident.json");
    for f in Format::ALL {
        let a = normalize(&v, Some(f), &BTreeMap::new()).unwrap();
        assert_eq!(a.format, f);
        assert!(!a.title.is_empty());
    }
    assert!(normalize(&Value::from(3), None, &BTreeMap::new()).is_err());
}

/// `external_id` is the store's dedupe key: for the generic format it comes only from
/// `data.alert_id` (or a top-level `alert_id` / `alertId`), never from a nested id that other
/// alerts share (an actor's id, an Elastic rule id, a Sentinel incident number, ...).
#[test]
fn generic_external_id_is_never_deep_searched() {
    let n = |v: Value| normalize(&v, None, &BTreeMap::new()).unwrap();
    let a = n(serde_json::json!({"event_type": "login_failed", "actor": {"id": 42}}));
    let b = n(serde_json::json!({"event_type": "malware_found", "actor": {"id": 42}, "details": {"file": "evil.exe"}}));
    assert_eq!((a.format, b.format), (Format::Generic, Format::Generic));
    assert_eq!((a.external_id, b.external_id), (None, None), "two alerts sharing actor.id are not one incident");

    // Read with the generic rules (a source pinned to `generic`), vendor bodies get no id from
    // their nested ids: Elastic rule ids are the same for every execution of the rule, Sentinel
    // incident numbers and SentinelOne threat ids are not the spec's `data.alert_id`.
    let generic = |v: &Value| normalize(v, Some(Format::Generic), &BTreeMap::new()).unwrap();
    for name in all_fixture_names().iter().filter(|n| ["elastic-", "sentinel-", "sentinelone-"].iter().any(|p| n.starts_with(p))) {
        let v = load(name);
        assert_eq!(generic(&v).external_id, None, "{name}");
        let mut other = v.clone();
        other.as_object_mut().unwrap().insert("extra".into(), Value::from("second execution"));
        assert_eq!(generic(&other).external_id, None, "{name}");
    }
    // Detected as Elastic, the id is the alert's own uuid: another alert of the same rule (same
    // rule ids) gets another id.
    let v = load("elastic-security-alert.json");
    let mut other = v.clone();
    other["alerts"][0]["kibana"]["alert"]["uuid"] = Value::from("0b7c3f7e-2d9a-4a57-9c61-3f0e8d2b1a44");
    let (a, b) = (normalize(&v, None, &BTreeMap::new()).unwrap(), normalize(&other, None, &BTreeMap::new()).unwrap());
    assert_eq!((a.format, b.format), (Format::Elastic, Format::Elastic));
    assert_ne!(a.external_id, b.external_id);
    assert_eq!(a.external_id.as_deref(), Some("7957ed1b-52bf-5f2c-4f9f-b66cf2da10ed"));

    // A payload with the spec's data.alert_id keeps it, whatever else it nests.
    let mut v = load("elastic-security-alert.json");
    v.as_object_mut().unwrap().insert("data".into(), serde_json::json!({"alert_id": "alert-777"}));
    assert_eq!(generic(&v).external_id.as_deref(), Some("alert-777"));
    let a = n(serde_json::json!({"event_type": "login_failed", "actor": {"id": 42}, "data": {"alert_id": "alert-1"}}));
    assert_eq!(a.external_id.as_deref(), Some("alert-1"));
    assert_eq!(norm("generic-full.json").external_id.as_deref(), Some("alert-20240610-0002"));

    // A payload pinned to Defender that is none of its shapes is read with the generic rules:
    // no deep-searched id there either.
    let a = normalize(&load("sentinel-incident.json"), Some(Format::Defender), &BTreeMap::new()).unwrap();
    assert_eq!((a.format, a.external_id), (Format::Defender, None));
}
