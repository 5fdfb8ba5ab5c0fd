//! A triage as the console shows it: the verdict and score first, then the findings, the
//! recommended actions and the step trace (what `tw-cli incident get` and `tw-cli playbook test`
//! print). Rendered from the JSON the API returns (the incident's `triage` object, or a test run's
//! outcome), so a job still pending, running or failed shows its state instead.

use super::views::maybe_time;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

/// A JSON value as a table cell: strings bare, null and absence empty, anything else as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn at(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc())
}

/// The short word for a list column: the verdict of a completed triage, else the job's state
/// (`pending`, `running`, `failed`); `None` when there is no triage.
pub fn verdict_label(triage: Option<&Value>) -> Option<String> {
    let t = triage.filter(|t| !t.is_null())?;
    match t.get("status").and_then(Value::as_str) {
        Some("completed") | None => t.get("verdict").and_then(Value::as_str).map(str::to_string),
        Some(state) => Some(state.to_string()),
    }
}

/// The whole triage. A test run's outcome has no `status` and is shown as completed.
pub fn panel(t: &Value) -> Markup {
    let status = t.get("status").and_then(Value::as_str).unwrap_or("completed");
    let error = t.get("error").or_else(|| t.get("last_error")).filter(|e| !e.is_null());
    html! {
        @if status != "completed" {
            div.panel {
                p { "Triage " strong { (status) } " (playbook " code { (cell(t.get("playbook"))) } ")"
                    @if let Some(a) = t.get("attempts").filter(|a| !a.is_null()) { ", attempt " (cell(Some(a))) } "." }
                @if let Some(e) = error { div.notice.error role="alert" { (cell(Some(e))) } }
                @if status == "pending" || status == "running" { p.muted { "Reload the page to see the verdict when the run ends." } }
            }
        } @else {
            div.panel {
                dl.facts {
                    dt { "Verdict" } dd { span class=(format!("badge verdict-{}", cell(t.get("verdict")))) { (cell(t.get("verdict"))) } }
                    dt { "Score" } dd { (cell(t.get("score"))) " / 100" }
                    dt { "Playbook" } dd { code { (cell(t.get("playbook"))) } " " (cell(t.get("playbook_version"))) }
                    @if let Some(sev) = t.get("severity").filter(|s| !s.is_null()) { dt { "Severity set to" } dd { (cell(Some(sev))) } }
                    @if t.get("completed_at").is_some() {
                        dt { "Completed" } dd { (maybe_time(at(t.get("completed_at")), "not yet")) " (attempt " (cell(t.get("attempts"))) ")" }
                    }
                }
            }
            (findings(t))
            (actions(t))
            (trace(t))
        }
    }
}

fn list<'a>(t: &'a Value, key: &str) -> &'a [Value] {
    t.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn findings(t: &Value) -> Markup {
    let items = list(t, "findings");
    html! {
        h2 { "Findings (" (items.len()) ")" }
        @if items.is_empty() { p.muted { "None: no rule of the playbook matched." } } @else {
            table {
                thead { tr { th.num scope="col" { "Weight" } th scope="col" { "Rule" } th scope="col" { "Detail" } th scope="col" { "Indicator" } } }
                tbody { @for f in items { tr {
                    td.num { (f.get("weight").and_then(Value::as_i64).map(|w| format!("{w:+}")).unwrap_or_default()) }
                    td { code { (cell(f.get("rule"))) } }
                    td { (cell(f.get("detail"))) }
                    td { @if let Some(i) = f.get("indicator").filter(|i| !i.is_null()) { code { (cell(Some(i))) } } }
                } } }
            }
        }
    }
}

fn actions(t: &Value) -> Markup {
    let items = list(t, "recommended_actions");
    html! {
        h2 { "Recommended actions (" (items.len()) ")" }
        @if items.is_empty() { p.muted { "None." } } @else {
            ul.recommendations { @for a in items { li {
                strong { (cell(a.get("action"))) }
                @if let Some(target) = a.get("target").filter(|x| !x.is_null()) { " " code { (cell(Some(target))) } }
                ": " (cell(a.get("reason")))
            } } }
        }
    }
}

fn trace(t: &Value) -> Markup {
    let steps = list(t, "trace");
    html! {
        h2 { "Step trace (" (steps.len()) ")" }
        @if steps.is_empty() { p.muted { "No steps recorded." } } @else {
            table {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Action" } th scope="col" { "Ran" } th.num scope="col" { "Time (µs)" } } }
                tbody { @for s in steps { tr {
                    td { code { (cell(s.get("step"))) } }
                    td { (cell(s.get("action"))) }
                    td { @if s.get("skipped") == Some(&Value::Bool(true)) { span.muted { "skipped" } } @else { "ran" } }
                    td.num { (cell(s.get("duration_us"))) }
                } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completed() -> Value {
        json!({"status": "completed", "job_id": "j1", "attempts": 1, "completed_at": "2026-01-02T03:04:05Z",
               "playbook": "phishing_triage", "playbook_version": "1.0", "verdict": "malicious", "score": 85,
               "findings": [{"rule": "sender_lookalike_domain", "detail": "looks like <example.com>", "weight": 40, "indicator": "examp1e.com"}],
               "recommended_actions": [{"action": "block_sender", "target": "a@examp1e.com", "reason": "lookalike"}],
               "severity": "high",
               "trace": [{"step": "check_sender", "action": "lookalike", "skipped": false, "inputs": {}, "outputs": {}, "duration_us": 12},
                         {"step": "enrich", "action": "intel", "skipped": true, "inputs": {}, "outputs": {}, "duration_us": 0}]})
    }

    #[test]
    fn a_completed_triage_shows_verdict_findings_actions_and_trace() {
        let html = panel(&completed()).into_string();
        for text in [
            "malicious",
            "85 / 100",
            "phishing_triage",
            "Findings (1)",
            "+40",
            "sender_lookalike_domain",
            "examp1e.com",
            "Recommended actions (1)",
            "block_sender",
            "Step trace (2)",
            "check_sender",
            "skipped",
            "Severity set to",
            r#"<time datetime="2026-01-02T03:04:05Z""#,
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }
        assert!(html.contains("looks like &lt;example.com&gt;"), "escaped: {html}");
    }

    #[test]
    fn a_job_in_flight_or_failed_shows_its_state() {
        let html = panel(&json!({"status": "failed", "playbook": "doomed", "attempts": 3, "error": "boom <x>"})).into_string();
        assert!(html.contains("failed") && html.contains("doomed") && html.contains("boom &lt;x&gt;"), "{html}");
        assert!(!html.contains("Findings"), "{html}");
        let html = panel(&json!({"status": "pending", "playbook": "p", "job_id": "j"})).into_string();
        assert!(html.contains("pending") && html.contains("Reload"), "{html}");
    }

    #[test]
    fn the_list_column_is_the_verdict_or_the_state() {
        assert_eq!(verdict_label(Some(&completed())).as_deref(), Some("malicious"));
        assert_eq!(verdict_label(Some(&json!({"status": "running"}))).as_deref(), Some("running"));
        assert_eq!(verdict_label(Some(&json!({"verdict": "benign"}))).as_deref(), Some("benign"), "a test run's outcome");
        assert_eq!(verdict_label(Some(&Value::Null)), None);
        assert_eq!(verdict_label(None), None);
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(cell(None), "");
    }
}
