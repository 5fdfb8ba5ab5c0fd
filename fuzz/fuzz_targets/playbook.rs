//! Playbook YAML: any text is a playbook or a list of errors; a playbook that validates runs on
//! an incident without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tw_core::triage::{Intel, TriageIncident, parse_playbook, run};

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else { return };
    let Ok(playbook) = parse_playbook(yaml) else { return };
    let payload = serde_json::json!({
        "event_type": "security_alert", "timestamp": "2024-01-15T10:00:00Z", "source": "email-gateway",
        "data": {"alert_id": "a-1", "severity": "high", "details": {
            "title": "Phish", "sender": "bad@examp1e.com", "urls": ["http://examp1e.com/login"], "src_ip": "203.0.113.7"}}
    });
    let alert = tw_core::normalize(&payload, None, &BTreeMap::new()).expect("the example normalizes");
    let incident = TriageIncident::from_alert(&alert, "email-gateway", payload);
    let mut intel = Intel::default();
    intel.bad_domains.insert("examp1e.com".into());
    intel.protected_domains.push("example.com".into());
    let _ = run(&playbook, &incident, &intel, &BTreeMap::new());
});
