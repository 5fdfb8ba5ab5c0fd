//! What a bench run found, as a table for people or one JSON object, and the verdict: which
//! findings make the run fail.

use super::load::Outcome;
use crate::output;
use serde_json::{Value, json};

/// One load run against one server.
pub struct RunReport {
    pub outcome: Outcome,
    /// The server's peak resident memory; unknown for a server the bench did not start.
    pub peak_rss_bytes: Option<u64>,
}

/// Incidents in the store against deliveries acknowledged with a 2xx.
pub enum IncidentsCheck {
    /// Deliveries answered 2xx, and the source's incidents the run added to the store.
    Counted { acknowledged: u64, stored: u64 },
    /// Not counted, and why (no API key for a running server).
    Skipped(String),
}

/// The auto-triage backlog, measured from the start of the load to the last triaged incident.
pub struct TriageDrain {
    /// The source's incidents.
    pub incidents: u64,
    /// Those with the status `triaged`.
    pub triaged: u64,
    /// From the start of the load until the triage backlog was seen empty (polled every 50 ms).
    pub seconds: f64,
}

impl TriageDrain {
    /// Incidents triaged per second.
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.triaged as f64 / self.seconds } else { 0.0 }
    }
}

/// The whole run.
pub struct Report {
    /// The settings, as JSON (also summarised on the table's first line).
    pub settings: Value,
    /// One line saying what was run.
    pub headline: String,
    pub product: RunReport,
    pub floor: Option<RunReport>,
    pub incidents: IncidentsCheck,
    pub triage: Option<TriageDrain>,
}

impl Report {
    /// Product throughput over floor throughput.
    pub fn ratio(&self) -> Option<f64> {
        let floor = self.floor.as_ref()?.outcome.throughput();
        (floor > 0.0).then(|| self.product.outcome.throughput() / floor)
    }

    /// Everything that makes the run fail, one sentence each; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, run) in [("product", Some(&self.product)), ("floor", self.floor.as_ref())] {
            let Some(run) = run else { continue };
            let o = &run.outcome;
            if o.requests() == 0 {
                out.push(format!("{name}: no request was sent"));
            } else if o.failed() > 0 {
                out.push(format!("{name}: {} of {} requests failed ({})", o.failed(), o.requests(), o.status_summary()));
            }
        }
        if let IncidentsCheck::Counted { acknowledged, stored } = self.incidents
            && acknowledged != stored
        {
            out.push(format!(
                "incidents: {stored} in the store but {acknowledged} deliveries acknowledged (2xx): a benchmark that loses data fails"
            ));
        }
        if let Some(t) = &self.triage
            && t.triaged != t.incidents
        {
            out.push(format!("triage: {} of {} incidents were triaged", t.triaged, t.incidents));
        }
        out
    }

    /// The whole report as one JSON object (`-o json`).
    pub fn to_json(&self) -> Value {
        let incidents = match &self.incidents {
            IncidentsCheck::Counted { acknowledged, stored } => {
                json!({"ok": acknowledged == stored, "acknowledged": acknowledged, "stored": stored})
            }
            IncidentsCheck::Skipped(why) => json!({"ok": null, "skipped": why}),
        };
        let failures = self.failures();
        json!({
            "settings": self.settings,
            "product": run_json(&self.product),
            "floor": self.floor.as_ref().map(run_json),
            "ratio": self.ratio(),
            "incidents": incidents,
            "triage": self.triage.as_ref().map(|t| json!({
                "incidents": t.incidents,
                "triaged": t.triaged,
                "seconds": t.seconds,
                "per_second": t.per_second(),
            })),
            "ok": failures.is_empty(),
            "failures": failures,
        })
    }

    /// The human report on stdout.
    pub fn print_table(&self) {
        println!("{}", self.headline);
        println!();
        let mut rows = vec![run_row("product", &self.product)];
        if let Some(floor) = &self.floor {
            rows.push(run_row("floor", floor));
        }
        output::table(
            &["", "REQUESTS", "SECONDS", "REQ/S", "P50 MS", "P90 MS", "P99 MS", "P99.9 MS", "MAX MS", "PEAK RSS", "STATUSES"],
            &rows,
        );
        println!();
        let mut lines: Vec<(&str, String)> = Vec::new();
        lines.push((
            "product/floor",
            match self.ratio() {
                Some(r) => format!("{r:.3} of the floor's throughput (the floor: HTTP, HMAC check and JSON parse, nothing else)"),
                None => "- (no floor run)".into(),
            },
        ));
        lines.push((
            "incidents",
            match &self.incidents {
                IncidentsCheck::Counted { acknowledged, stored } if acknowledged == stored => {
                    format!("ok: {stored} in the store = {acknowledged} deliveries acknowledged (2xx)")
                }
                IncidentsCheck::Counted { acknowledged, stored } => {
                    format!("FAILED: {stored} in the store, {acknowledged} deliveries acknowledged (2xx)")
                }
                IncidentsCheck::Skipped(why) => format!("not checked: {why}"),
            },
        ));
        if let Some(t) = &self.triage {
            lines.push((
                "triage",
                format!(
                    "{} of {} incidents triaged {:.2} s after the load started: {:.0} incidents/s",
                    t.triaged,
                    t.incidents,
                    t.seconds,
                    t.per_second()
                ),
            ));
        }
        output::pairs(&lines);
    }
}

fn run_json(run: &RunReport) -> Value {
    let o = &run.outcome;
    let statuses: serde_json::Map<String, Value> = o.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    json!({
        "requests": o.requests(),
        "ok_2xx": o.ok(),
        "failed": o.failed(),
        "seconds": o.elapsed.as_secs_f64(),
        "throughput_rps": o.throughput(),
        "latency_ms": {
            "p50": o.latency_ms(0.50),
            "p90": o.latency_ms(0.90),
            "p99": o.latency_ms(0.99),
            "p99_9": o.latency_ms(0.999),
            "max": o.latency_ms(1.0),
        },
        "statuses": statuses,
        "transport_errors": o.transport_errors,
        "connections": o.connections,
        "peak_rss_bytes": run.peak_rss_bytes,
    })
}

fn run_row(name: &str, run: &RunReport) -> Vec<String> {
    let o = &run.outcome;
    let ms = |q: f64| format!("{:.2}", o.latency_ms(q));
    vec![
        name.to_string(),
        o.requests().to_string(),
        format!("{:.2}", o.elapsed.as_secs_f64()),
        format!("{:.0}", o.throughput()),
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        ms(1.0),
        run.peak_rss_bytes.map_or_else(|| "unknown".into(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))),
        o.status_summary(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(statuses: &[(u16, u64)]) -> RunReport {
        let mut outcome = Outcome { elapsed: std::time::Duration::from_secs(1), ..Outcome::default() };
        outcome.statuses.extend(statuses.iter().copied());
        RunReport { outcome, peak_rss_bytes: None }
    }

    fn report(incidents: IncidentsCheck) -> Report {
        Report {
            settings: Value::Null,
            headline: String::new(),
            product: run(&[(201, 100)]),
            floor: Some(run(&[(201, 400)])),
            incidents,
            triage: None,
        }
    }

    #[test]
    fn a_run_that_loses_incidents_fails() {
        let ok = report(IncidentsCheck::Counted { acknowledged: 100, stored: 100 });
        assert!(ok.failures().is_empty());
        assert_eq!(ok.ratio(), Some(0.25));
        let lost = report(IncidentsCheck::Counted { acknowledged: 100, stored: 99 });
        let failures = lost.failures();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("99 in the store but 100"), "{failures:?}");
        assert_eq!(lost.to_json()["ok"], false);
    }

    #[test]
    fn failed_requests_and_untriaged_incidents_fail_the_run() {
        let mut r = report(IncidentsCheck::Skipped("no key".into()));
        r.product = run(&[(201, 98), (503, 2)]);
        r.triage = Some(TriageDrain { incidents: 98, triaged: 97, seconds: 2.0 });
        let failures = r.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("2 of 100 requests failed (201: 98, 503: 2)"), "{failures:?}");
        assert!(failures[1].contains("97 of 98"), "{failures:?}");
        assert_eq!(r.to_json()["incidents"]["ok"], Value::Null);
    }
}
