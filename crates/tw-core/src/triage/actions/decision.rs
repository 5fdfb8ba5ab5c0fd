//! `asset_criticality`, `score`, `set_verdict`, `recommend` and `adjust_severity`: context and
//! the decisions built on the findings.

use super::{ActionInput, ActionOutput, boolean, finding, number, score_of, string, strings};
use crate::Severity;
use crate::triage::{Asset, Recommendation, Verdict};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The asset record of a host: exact (lowercase) name, then its short name, then an inventory
/// entry whose short name matches (most critical first, then by name, for determinism).
fn find_asset<'a>(assets: &'a std::collections::HashMap<String, Asset>, host: &str) -> Option<(String, &'a Asset)> {
    let h = host.trim().trim_end_matches('.').to_lowercase();
    if h.is_empty() {
        return None;
    }
    if let Some(a) = assets.get(&h) {
        return Some((h, a));
    }
    let short = h.split('.').next().unwrap_or(&h).to_string();
    if let Some(a) = assets.get(&short) {
        return Some((short, a));
    }
    assets
        .iter()
        .filter(|(k, _)| k.split('.').next() == Some(short.as_str()))
        .max_by(|(ka, a), (kb, b)| a.criticality.cmp(&b.criticality).then_with(|| kb.cmp(ka)))
        .map(|(k, a)| (k.clone(), a))
}

/// `asset_criticality`.
pub fn asset_criticality(input: &ActionInput) -> ActionOutput {
    let mut hosts = Vec::new();
    let mut max = None;
    let mut findings = Vec::new();
    for host in strings(input.params, "hosts").into_iter().take(200) {
        let Some((key, asset)) = find_asset(&input.intel.assets, &host) else { continue };
        max = max.max(Some(asset.criticality));
        hosts.push(json!({"host": host, "asset": key, "criticality": asset.criticality, "owner": asset.owner, "tags": asset.tags}));
        let rule = match asset.criticality {
            super::super::Criticality::Critical => "asset_critical",
            super::super::Criticality::High => "asset_high_value",
            _ => continue,
        };
        let owner = asset.owner.as_deref().map(|o| format!(", owner {o}")).unwrap_or_default();
        findings.push(finding(
            rule,
            format!(
                "host {host} is a {} asset{owner}",
                serde_json::to_value(asset.criticality).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ),
            Some(&host),
        ));
    }
    let critical = max == Some(super::super::Criticality::Critical);
    ActionOutput { outputs: json!({"max_criticality": max, "hosts": hosts, "critical": critical}), findings, ..Default::default() }
}

/// `score`: weights by rule (integers; others keep their default) applied to every finding.
pub fn score(input: &ActionInput) -> ActionOutput {
    let mut weights = BTreeMap::new();
    if let Some(Value::Object(w)) = input.params.get("weights") {
        for (rule, v) in w {
            let n = match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.round() as i64)),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            if let Some(n) = n {
                weights.insert(rule.clone(), n.clamp(-1000, 1000));
            }
        }
    }
    let reweighed: Vec<_> = input
        .findings
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if let Some(w) = weights.get(&f.rule) {
                f.weight = *w;
            }
            f
        })
        .collect();
    let total: i64 = reweighed.iter().map(|f| f.weight).sum();
    let by_rule: BTreeMap<&str, i64> = reweighed.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.rule.as_str()).or_insert(0) += f.weight;
        m
    });
    ActionOutput {
        outputs: json!({"score": score_of(&reweighed), "total": total, "findings": reweighed.len(), "by_rule": by_rule}),
        weights: Some(weights),
        ..Default::default()
    }
}

/// The verdict for a score (see the table in `actions.rs`).
pub fn verdict_for(score: u8, malicious_at: f64, suspicious_at: f64, benign: bool, benign_max: f64) -> Verdict {
    let s = f64::from(score);
    if s >= malicious_at {
        Verdict::Malicious
    } else if s >= suspicious_at {
        Verdict::Suspicious
    } else if benign && s <= benign_max {
        Verdict::Benign
    } else {
        Verdict::Inconclusive
    }
}

/// `set_verdict`.
pub fn set_verdict(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let v = verdict_for(
        input.score,
        number(p, "malicious_at", 70.0),
        number(p, "suspicious_at", 40.0),
        boolean(p, "benign", false),
        number(p, "benign_max", 0.0),
    );
    ActionOutput { outputs: json!({"verdict": v, "score": input.score}), verdict: Some(v), ..Default::default() }
}

/// `recommend`: one recommendation per target (a list target gives one each, at most 50).
pub fn recommend(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let Some(action) = string(p, "action") else {
        return ActionOutput { outputs: json!({"recommended": []}), ..Default::default() };
    };
    let reason = string(p, "reason").unwrap_or_default();
    let targets: Vec<Option<String>> = match p.get("target") {
        Some(Value::Array(_)) => {
            let t = strings(p, "target");
            if t.is_empty() { vec![None] } else { t.into_iter().take(50).map(Some).collect() }
        }
        Some(Value::Bool(_) | Value::Object(_)) | None => vec![None],
        Some(_) => vec![string(p, "target")],
    };
    let recs: Vec<Recommendation> =
        targets.into_iter().map(|target| Recommendation { action: action.clone(), target, reason: reason.clone() }).collect();
    ActionOutput { outputs: json!({"recommended": recs}), recommendations: recs, ..Default::default() }
}

/// `adjust_severity`: `set` always, `raise` only upwards, `lower` only downwards.
pub fn adjust_severity(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let from = input.severity;
    let Some(to) = string(p, "to").and_then(|s| s.parse::<Severity>().ok()) else {
        return ActionOutput { outputs: json!({"from": from, "to": from, "changed": false}), ..Default::default() };
    };
    let mode = string(p, "mode").unwrap_or_else(|| "set".into()).to_ascii_lowercase();
    let new = match mode.as_str() {
        "raise" => from.max(to),
        "lower" => from.min(to),
        _ => to,
    };
    ActionOutput {
        outputs: json!({"from": from, "to": new, "changed": new != from}),
        severity: (new != from).then_some(new),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::triage::{Criticality, Finding};

    #[test]
    fn assets_by_name_short_name_and_fqdn() {
        let mut intel = intel();
        intel
            .assets
            .insert("dc01.corp.example".into(), Asset { criticality: Criticality::Critical, owner: Some("it".into()), tags: vec![] });
        intel.assets.insert("ws-01".into(), Asset { criticality: Criticality::High, owner: None, tags: vec![] });
        intel.assets.insert("kiosk".into(), Asset { criticality: Criticality::Low, owner: None, tags: vec![] });
        let inc = incident(vec![], json!({}));
        let out = run("asset_criticality", json!({"hosts": ["DC01", "WS-01.corp.example", "kiosk", "unknown"]}), &inc, &intel, &[], 0);
        assert_eq!(out.outputs["max_criticality"], json!("critical"));
        assert_eq!(out.outputs["critical"], json!(true));
        assert_eq!(out.outputs["hosts"].as_array().unwrap().len(), 3);
        assert_eq!(
            rules(&out),
            [("asset_critical".into(), Some("DC01".into())), ("asset_high_value".into(), Some("WS-01.corp.example".into()))]
        );
        let none = run("asset_criticality", json!({"hosts": []}), &inc, &intel, &[], 0);
        assert_eq!(none.outputs["max_criticality"], Value::Null);
    }

    #[test]
    fn score_reweighs_and_clamps() {
        let f = |rule: &str, w| Finding { rule: rule.into(), detail: String::new(), weight: w, indicator: None };
        let findings = [f("a", 10), f("b", 20), f("a", 10)];
        let inc = incident(vec![], json!({}));
        let out = run("score", json!({"weights": {"a": 50, "c": "7", "bad": "x"}}), &inc, &intel(), &findings, 0);
        assert_eq!(out.outputs["score"], json!(100));
        assert_eq!(out.outputs["total"], json!(120));
        assert_eq!(out.weights.unwrap(), BTreeMap::from([("a".to_string(), 50), ("c".to_string(), 7)]));
        let out = run("score", json!({}), &inc, &intel(), &findings, 0);
        assert_eq!(out.outputs["score"], json!(40));
    }

    #[test]
    fn verdict_thresholds() {
        assert_eq!(verdict_for(70, 70.0, 40.0, true, 0.0), Verdict::Malicious);
        assert_eq!(verdict_for(40, 70.0, 40.0, true, 0.0), Verdict::Suspicious);
        assert_eq!(verdict_for(0, 70.0, 40.0, true, 0.0), Verdict::Benign);
        assert_eq!(verdict_for(0, 70.0, 40.0, false, 0.0), Verdict::Inconclusive);
        assert_eq!(verdict_for(10, 70.0, 40.0, true, 0.0), Verdict::Inconclusive);
        let inc = incident(vec![], json!({}));
        let out = run("set_verdict", json!({"malicious_at": "50", "benign": true}), &inc, &intel(), &[], 55);
        assert_eq!(out.verdict, Some(Verdict::Malicious));
        let out = run("set_verdict", json!({"benign": "{{ unresolved }}"}), &inc, &intel(), &[], 0);
        assert_eq!(out.verdict, Some(Verdict::Benign));
    }

    #[test]
    fn recommendations() {
        let out = run_simple("recommend", json!({"action": "block_sender", "target": ["a@x.test", "b@x.test"], "reason": "phish"}));
        assert_eq!(out.recommendations.len(), 2);
        assert_eq!(out.recommendations[1].target.as_deref(), Some("b@x.test"));
        let out = run_simple("recommend", json!({"action": "isolate_host", "target": "FS-02", "reason": "r"}));
        assert_eq!(
            out.recommendations,
            [Recommendation { action: "isolate_host".into(), target: Some("FS-02".into()), reason: "r".into() }]
        );
        let out = run_simple("recommend", json!({"action": "escalate", "target": null, "reason": "r"}));
        assert_eq!(out.recommendations[0].target, None);
        assert!(run_simple("recommend", json!({"reason": "no action"})).recommendations.is_empty());
    }

    #[test]
    fn severity_rules() {
        let inc = incident(vec![], json!({})); // medium
        let sev = |params: Value| run("adjust_severity", params, &inc, &intel(), &[], 0).severity;
        assert_eq!(sev(json!({"to": "critical", "mode": "raise"})), Some(Severity::Critical));
        assert_eq!(sev(json!({"to": "low", "mode": "raise"})), None);
        assert_eq!(sev(json!({"to": "low", "mode": "lower"})), Some(Severity::Low));
        assert_eq!(sev(json!({"to": "high", "mode": "lower"})), None);
        assert_eq!(sev(json!({"to": "info"})), Some(Severity::Info));
        assert_eq!(sev(json!({"to": "medium"})), None);
        assert_eq!(sev(json!({"to": "bogus"})), None);
    }
}
