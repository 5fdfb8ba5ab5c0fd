//! The engine: runs a playbook's steps in order over one incident.
//!
//! The context templates and conditions read is one JSON object:
//! `{incident, variables, steps: {<output>: outputs}, triage: {score, verdict, severity,
//! findings, recommendations}}`. Variables are the playbook's defaults deep-merged with the
//! run's overrides. For each step the engine evaluates `when` (false: the step is skipped and its
//! output is `null`), resolves the parameters' templates, runs the action, merges what it
//! produced and records a [`TraceStep`].
//!
//! Findings are deduplicated by `(rule, indicator)` (the first one wins), recommendations by
//! `(action, target)`, so running a playbook twice, or a step finding the same thing twice,
//! never duplicates evidence. Everything but `duration_us` is deterministic.
//!
//! A run's result is bounded: once its findings, recommendations and trace would take more than
//! [`MAX_TRIAGE_BYTES`] as JSON, the run stops with [`TriageError::TooLarge`] (a playbook that
//! copies sender data into its result many times over cannot store megabytes per alert).

use super::actions::{self, ActionInput};
use super::expr;
use super::playbook::condition_source;
use super::{Intel, Playbook};
use crate::{Entity, Format, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// What the engine sees of an incident (`{{ incident.* }}` in templates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriageIncident {
    pub id: Option<String>,
    pub incident_number: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub severity: Severity,
    pub source: String,
    pub format: Format,
    pub event_type: Option<String>,
    pub external_id: Option<String>,
    pub entities: Vec<Entity>,
    /// The raw payload as JSON.
    pub raw: Value,
}

/// The conclusion of a triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Malicious,
    Suspicious,
    Benign,
    Inconclusive,
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `sender_lookalike_domain`, `intel_bad_hash`.
    pub rule: String,
    pub detail: String,
    pub weight: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
}

/// A response action the analyst should take (recorded, not executed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// e.g. `quarantine_email`, `block_sender`, `isolate_host`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub reason: String,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub step: String,
    pub action: String,
    /// True when its `when` condition was false.
    pub skipped: bool,
    /// The parameters after template resolution.
    pub inputs: Value,
    pub outputs: Value,
    pub duration_us: u64,
}

/// The result of running a playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriageOutcome {
    pub playbook: String,
    pub playbook_version: String,
    pub verdict: Verdict,
    /// 0 to 100.
    pub score: u8,
    pub findings: Vec<Finding>,
    pub recommended_actions: Vec<Recommendation>,
    /// The incident's new severity when a step raised or lowered it.
    pub severity: Option<Severity>,
    pub trace: Vec<TraceStep>,
}

/// The largest triage result, in bytes of JSON (findings, recommended actions and step trace).
/// The built-in playbooks write about 3 MiB on a 1 MiB alert full of mail bodies and links (the
/// default `max_body_bytes`), so the cap leaves them room while a playbook that copies the alert
/// over and over is stopped.
pub const MAX_TRIAGE_BYTES: usize = 8 * 1024 * 1024;

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriageError {
    #[error("step '{step}': {message}")]
    Step { step: String, message: String },
    /// The result outgrew [`MAX_TRIAGE_BYTES`]; the same playbook on the same incident always
    /// will, so this is not worth retrying.
    #[error(
        "step '{step}': the triage result would exceed {limit} bytes (findings, recommendations and step trace); the playbook copies too much of the incident into its result"
    )]
    TooLarge { step: String, limit: usize },
}

impl TriageError {
    /// Whether running the same playbook on the same incident again could succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, TriageError::TooLarge { .. })
    }
}

/// Counts the bytes of a value's JSON without building it.
fn json_len(v: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serializing a `Value` or our own types into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Deep-merges `over` into `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The running state of one triage.
struct State {
    findings: Vec<Finding>,
    seen_findings: HashSet<(String, Option<String>)>,
    weights: BTreeMap<String, i64>,
    recommendations: Vec<Recommendation>,
    seen_recs: HashSet<(String, Option<String>)>,
    verdict: Verdict,
    severity: Severity,
    severity_changed: bool,
}

impl State {
    fn score(&self) -> u8 {
        actions::score_of(&self.findings)
    }

    fn add_finding(&mut self, mut f: Finding) {
        if let Some(w) = self.weights.get(&f.rule) {
            f.weight = *w;
        }
        if self.seen_findings.insert((f.rule.clone(), f.indicator.clone())) {
            self.findings.push(f);
        }
    }

    fn set_weights(&mut self, weights: BTreeMap<String, i64>) {
        self.weights.extend(weights);
        for f in &mut self.findings {
            if let Some(w) = self.weights.get(&f.rule) {
                f.weight = *w;
            }
        }
    }

    fn add_recommendation(&mut self, r: Recommendation) {
        if self.seen_recs.insert((r.action.clone(), r.target.clone())) {
            self.recommendations.push(r);
        }
    }

    fn as_json(&self) -> Value {
        json!({
            "score": self.score(),
            "verdict": self.verdict,
            "severity": self.severity,
            "findings": self.findings,
            "recommendations": self.recommendations,
        })
    }
}

/// Runs `playbook` over `incident` with `intel`; `overrides` replace the playbook's variables.
/// A playbook that runs many times is prepared once instead ([`PreparedPlaybook`]).
pub fn run(
    playbook: &Playbook,
    incident: &TriageIncident,
    intel: &Intel,
    overrides: &BTreeMap<String, Value>,
) -> Result<TriageOutcome, TriageError> {
    PreparedPlaybook::new(playbook.clone()).run(incident.clone(), intel, overrides)
}

/// A playbook ready to run many times: each step's action looked up, its `when` condition and
/// the templates in its parameters parsed once, not on every run (the parsing was about a fifth
/// of the instructions of a `phishing_triage` run: `scripts/triage-cost.sh`).
#[derive(Debug)]
pub struct PreparedPlaybook {
    playbook: Playbook,
    steps: Vec<PreparedStep>,
}

/// One step, prepared. What cannot be prepared (an unknown action, a condition or a template
/// that does not parse: validation refuses them, but a playbook may be built without it) fails
/// the run when it reaches the step, with the message it always had.
#[derive(Debug)]
struct PreparedStep {
    /// The action's code.
    action: Result<fn(&ActionInput) -> actions::ActionOutput, String>,
    when: Option<Result<expr::Expr, String>>,
    /// In the step's parameter order.
    parameters: Vec<(String, Result<expr::Parameter, String>)>,
}

impl PreparedPlaybook {
    pub fn new(playbook: Playbook) -> PreparedPlaybook {
        let steps = playbook
            .steps
            .iter()
            .map(|step| PreparedStep {
                action: actions::find(&step.action)
                    .map(|spec| spec.run)
                    .ok_or_else(|| format!("unknown action '{}' (built-in actions: {})", step.action, actions::action_names().join(", "))),
                when: step.when.as_deref().map(|w| expr::parse_expr(condition_source(w)).map_err(|e| format!("bad condition: {e}"))),
                parameters: step
                    .parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), expr::Parameter::parse(v).map_err(|e| format!("parameter '{k}': bad template: {e}"))))
                    .collect(),
            })
            .collect();
        PreparedPlaybook { playbook, steps }
    }

    /// The playbook as written.
    pub fn playbook(&self) -> &Playbook {
        &self.playbook
    }

    /// Runs the playbook over `incident` with `intel`; `overrides` replace its variables.
    pub fn run(
        &self,
        mut incident: TriageIncident,
        intel: &Intel,
        overrides: &BTreeMap<String, Value>,
    ) -> Result<TriageOutcome, TriageError> {
        let playbook = &self.playbook;
        let mut variables = Value::Object(playbook.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        merge(&mut variables, &Value::Object(overrides.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
        // The context holds the incident without its raw payload, which templates read where it
        // is ([`expr::Context`]).
        let raw = std::mem::take(&mut incident.raw);
        let mut fields = serde_json::to_value(&incident).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut fields {
            o.remove("raw");
        }
        incident.raw = raw;
        let incident = &incident;
        let mut ctx = json!({
            "incident": fields,
            "variables": variables,
            "steps": {},
            "triage": {},
        });
        let mut state = State {
            findings: Vec::new(),
            seen_findings: HashSet::new(),
            weights: BTreeMap::new(),
            recommendations: Vec::new(),
            seen_recs: HashSet::new(),
            verdict: Verdict::Inconclusive,
            severity: incident.severity,
            severity_changed: false,
        };
        // Whether `ctx.triage` is behind `state`: it is written again only after a step changed
        // the state (most steps only read it).
        let mut state_changed = true;
        let mut trace = Vec::with_capacity(playbook.steps.len());
        // Bytes of the result so far; each step adds its trace entry and whatever it found.
        let mut size = 0usize;
        for (step, prepared) in playbook.steps.iter().zip(&self.steps) {
            let started = Instant::now();
            let fail = |message: &str| TriageError::Step { step: step.name.clone(), message: message.to_string() };
            let too_large = || TriageError::TooLarge { step: step.name.clone(), limit: MAX_TRIAGE_BYTES };
            let action = prepared.action.as_ref().map_err(|m| fail(m))?;
            if state_changed {
                ctx["triage"] = state.as_json();
                state_changed = false;
            }
            if let Some(when) = &prepared.when {
                let cond = when.as_ref().map_err(|m| fail(m))?;
                if !cond.test(&expr::Context { tree: &ctx, raw: &incident.raw }) {
                    if let Some(out) = &step.output {
                        ctx["steps"][out.as_str()] = Value::Null;
                    }
                    trace.push(TraceStep {
                        step: step.name.clone(),
                        action: step.action.clone(),
                        skipped: true,
                        inputs: Value::Null,
                        outputs: Value::Null,
                        duration_us: elapsed_us(started),
                    });
                    continue;
                }
            }
            let mut params = Map::new();
            for (k, parameter) in &prepared.parameters {
                let resolved = parameter.as_ref().map_err(|m| fail(m))?.render(&expr::Context { tree: &ctx, raw: &incident.raw });
                // Checked before the action runs, so an oversized input is never worked on.
                size = size.saturating_add(json_len(&resolved));
                if size > MAX_TRIAGE_BYTES {
                    return Err(too_large());
                }
                params.insert(k.clone(), resolved);
            }
            let out = action(&ActionInput {
                incident,
                intel,
                findings: &state.findings,
                score: state.score(),
                severity: state.severity,
                params: &params,
            });
            size = size
                .saturating_add(json_len(&out.outputs))
                .saturating_add(json_len(&out.findings))
                .saturating_add(json_len(&out.recommendations));
            if size > MAX_TRIAGE_BYTES {
                return Err(too_large());
            }
            state_changed = out.weights.is_some()
                || !out.findings.is_empty()
                || !out.recommendations.is_empty()
                || out.verdict.is_some()
                || out.severity.is_some();
            if let Some(w) = out.weights {
                state.set_weights(w);
            }
            for f in out.findings {
                state.add_finding(f);
            }
            for r in out.recommendations {
                state.add_recommendation(r);
            }
            if let Some(v) = out.verdict {
                state.verdict = v;
            }
            if let Some(s) = out.severity {
                state.severity = s;
                state.severity_changed = true;
            }
            if let Some(name) = &step.output {
                ctx["steps"][name.as_str()] = out.outputs.clone();
            }
            trace.push(TraceStep {
                step: step.name.clone(),
                action: step.action.clone(),
                skipped: false,
                inputs: Value::Object(params),
                outputs: out.outputs,
                duration_us: elapsed_us(started),
            });
        }
        let score = state.score();
        Ok(TriageOutcome {
            playbook: playbook.name.clone(),
            playbook_version: playbook.version.clone(),
            verdict: state.verdict,
            score,
            findings: state.findings,
            recommended_actions: state.recommendations,
            severity: (state.severity_changed && state.severity != incident.severity).then_some(state.severity),
            trace,
        })
    }
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl TriageOutcome {
    /// The outcome with every trace duration zeroed: what must be equal between two runs.
    pub fn without_durations(&self) -> TriageOutcome {
        let mut o = self.clone();
        for t in &mut o.trace {
            t.duration_us = 0;
        }
        o
    }
}

impl TriageIncident {
    /// The engine's view of a normalized alert (no id or number yet).
    pub fn from_alert(alert: &crate::Alert, source: &str, raw: Value) -> TriageIncident {
        TriageIncident {
            id: None,
            incident_number: None,
            title: alert.title.clone(),
            description: alert.description.clone(),
            severity: alert.severity,
            source: source.to_string(),
            format: alert.format,
            event_type: alert.event_type.clone(),
            external_id: alert.external_id.clone(),
            entities: alert.entities.clone(),
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::parse_playbook;

    fn incident() -> TriageIncident {
        TriageIncident {
            id: Some("1".into()),
            incident_number: Some("INC-1".into()),
            title: "Suspicious login page".into(),
            description: None,
            severity: Severity::Medium,
            source: "gw".into(),
            format: Format::Generic,
            event_type: None,
            external_id: None,
            entities: vec![Entity::new(crate::EntityKind::Url, "http://198.51.100.7/login")],
            raw: json!({"subject": "Urgent"}),
        }
    }

    const PB: &str = r#"
name: t
version: "1"
variables:
  weights: {url_ip_literal: 30, url_credential_keywords: 30}
  min: 50
steps:
  - name: extract
    action: extract_indicators
    output: ind
  - name: urls
    action: check_urls
    parameters: {urls: "{{ steps.ind.urls }}"}
    output: urls
  - name: again
    action: check_urls
    parameters: {urls: ["{{ steps.ind.urls[0] }}"]}
  - name: score
    action: score
    parameters: {weights: "{{ variables.weights }}"}
  - name: verdict
    action: set_verdict
    parameters: {malicious_at: "{{ variables.min }}"}
  - name: block
    action: recommend
    when: "triage.verdict == 'malicious'"
    parameters: {action: block_url, target: "{{ steps.urls.suspicious }}", reason: "score {{ triage.score }}"}
  - name: block twice
    action: recommend
    when: "triage.verdict == 'malicious'"
    parameters: {action: block_url, target: "{{ steps.urls.suspicious[0] }}", reason: "again"}
  - name: never
    action: recommend
    when: "triage.score < 0"
    parameters: {action: nothing, reason: x}
    output: never
  - name: raise
    action: adjust_severity
    when: "{{ triage.verdict == 'malicious' }}"
    parameters: {to: high, mode: raise}
"#;

    #[test]
    fn runs_steps_in_order_with_context() {
        let pb = parse_playbook(PB).unwrap();
        let out = run(&pb, &incident(), &Intel::default(), &BTreeMap::new()).unwrap();
        let rules: Vec<&str> = out.findings.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["url_ip_literal", "url_credential_keywords"], "the second check_urls adds nothing");
        assert_eq!(out.score, 60);
        assert_eq!(out.verdict, Verdict::Malicious);
        assert_eq!(out.recommended_actions.len(), 1);
        assert_eq!(out.recommended_actions[0].target.as_deref(), Some("http://198.51.100.7/login"));
        assert_eq!(out.recommended_actions[0].reason, "score 60");
        assert_eq!(out.severity, Some(Severity::High));
        assert_eq!(out.trace.len(), 9);
        assert!(out.trace[7].skipped);
        assert_eq!(out.trace[3].inputs["weights"]["url_ip_literal"], json!(30));
        assert_eq!(out.playbook_version, "1");
    }

    #[test]
    fn overrides_merge_into_variables() {
        let pb = parse_playbook(PB).unwrap();
        let overrides = BTreeMap::from([("min".to_string(), json!(90)), ("weights".to_string(), json!({"url_ip_literal": 5}))]);
        let out = run(&pb, &incident(), &Intel::default(), &overrides).unwrap();
        assert_eq!(out.score, 35, "url_credential_keywords keeps its 30");
        assert_eq!(out.verdict, Verdict::Inconclusive);
        assert!(out.recommended_actions.is_empty());
        assert_eq!(out.severity, None);
    }

    /// A 1 MiB alert full of what the built-in playbooks read (bodies, links, senders).
    fn big_incident() -> TriageIncident {
        let mut i = incident();
        let messages: Vec<Value> = (0..60)
            .map(|n| {
                json!({"from": format!("Sender {n} <s{n}@examp1e-{n}.com>"), "subject": format!("Urgent invoice {n}"),
                       "body": format!("{n} please verify your password at http://198.51.100.{}/login/{n} ", n % 250).repeat(280)})
            })
            .collect();
        i.raw = json!({"messages": messages, "urls": (0..1000).map(|n| format!("http://host{n}.example.net/p")).collect::<Vec<_>>()});
        assert!(json_len(&i.raw) > 1024 * 1024, "{}", json_len(&i.raw));
        i
    }

    #[test]
    fn builtin_playbooks_stay_under_the_result_cap_on_a_large_alert() {
        for name in crate::triage::builtin_names() {
            let pb = crate::triage::builtin(name).unwrap();
            let out = run(&pb, &big_incident(), &Intel::default(), &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let size = json_len(&out);
            assert!(size < MAX_TRIAGE_BYTES / 2, "{name}: {size} bytes");
        }
    }

    #[test]
    fn a_result_over_the_cap_fails_the_run_for_good() {
        // Each step copies a (cut) 64 KiB body into its input, its output and its recommendation.
        let mut yaml = String::from("name: big\nsteps:\n");
        for n in 0..100 {
            yaml.push_str(&format!(
                "  - name: s{n}\n    action: recommend\n    parameters: {{action: a{n}, reason: \"{{{{ incident.raw.body }}}}\"}}\n"
            ));
        }
        let pb = parse_playbook(&yaml).unwrap();
        let mut i = incident();
        i.raw = json!({"body": "x".repeat(1024 * 1024)});
        let err = run(&pb, &i, &Intel::default(), &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, TriageError::TooLarge { .. }), "{err}");
        assert!(!err.retryable());
        assert!(err.to_string().contains("would exceed 8388608 bytes"), "{err}");
        // A few such steps are fine, and the long value is cut and marked.
        let short: String = yaml.lines().take(2 + 3 * 3).collect::<Vec<_>>().join("\n");
        let out = run(&parse_playbook(&short).unwrap(), &i, &Intel::default(), &BTreeMap::new()).unwrap();
        let reason = &out.recommended_actions[0].reason;
        assert_eq!(reason.len(), expr::MAX_RENDERED_BYTES);
        assert!(reason.ends_with(expr::TRUNCATED_MARK));
    }

    #[test]
    fn unknown_action_in_a_hand_built_playbook_is_an_error() {
        let mut pb = parse_playbook(PB).unwrap();
        pb.steps[1].action = "nope".into();
        let err = run(&pb, &incident(), &Intel::default(), &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, TriageError::Step { ref step, .. } if step == "urls"));
        pb.steps[1].action = "check_urls".into();
        pb.steps[1].when = Some("((".into());
        assert!(run(&pb, &incident(), &Intel::default(), &BTreeMap::new()).is_err());
    }

    /// A prepared playbook runs again and again to the same outcome as a run that parses it
    /// afresh, and what could not be prepared fails the run only when a run reaches its step, with
    /// the message it always had: a bad template behind a false condition never fails.
    #[test]
    fn a_prepared_playbook_runs_as_often_as_asked_and_fails_where_it_always_did() {
        let (intel, none) = (Intel::default(), BTreeMap::new());
        let pb = parse_playbook(PB).unwrap();
        let prepared = PreparedPlaybook::new(pb.clone());
        let once = run(&pb, &incident(), &intel, &none).unwrap().without_durations();
        assert_eq!(once.verdict, Verdict::Malicious);
        for _ in 0..3 {
            assert_eq!(prepared.run(incident(), &intel, &none).unwrap().without_durations(), once);
        }
        let mut bad = pb.clone();
        // Step 6 (`block`) recommends only on a malicious verdict.
        bad.steps[5].parameters.insert("reason".into(), json!(["fine", {"deep": "{{ open"}]));
        let err = PreparedPlaybook::new(bad.clone()).run(incident(), &intel, &none).unwrap_err();
        let message = format!("parameter 'reason': bad template: {}", expr::parse_template("{{ open").unwrap_err());
        assert_eq!(err, TriageError::Step { step: "block".into(), message });
        let benign = BTreeMap::from([("min".to_string(), json!(101))]);
        let skipped = PreparedPlaybook::new(bad.clone()).run(incident(), &intel, &benign).unwrap();
        assert!(skipped.trace[5].skipped && skipped.verdict != Verdict::Malicious);
        bad.steps[6].when = Some("triage.verdict ==".into());
        let err = PreparedPlaybook::new(bad).run(incident(), &intel, &benign).unwrap_err();
        assert!(
            matches!(err, TriageError::Step { ref step, ref message } if step == "block twice" && message.starts_with("bad condition: "))
        );
    }
}
