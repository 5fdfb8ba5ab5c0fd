//! The overview (`/console`): the last 24 hours as charts drawn on the server — deliveries and
//! errors per hour stacked by source, incidents by severity, triage verdicts — and the triage
//! backlog now. One bounded store call ([`tw_store::IncidentStore::activity`]: aggregate counts
//! over at most a day) plus the sources list.

use super::charts::{Layer, PALETTE, bars, sparkline, stacked_columns};
use super::views::{Nav, Viewer, layout};
use super::{Console, PageError};
use crate::ApiError;
use crate::state::AppState;
use axum::extract::State;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use maud::{Markup, html};
use std::collections::HashMap;
use tw_store::Activity;

/// Hours the charts cover (the current one included).
pub const HOURS: usize = 24;
/// Sources drawn as their own layer; the rest are summed as "other".
const LAYERS: usize = PALETTE - 1;
/// Severities from the worst, as the store names them.
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

/// The first hour the charts show, for a page made at `now`.
pub fn first_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now) - TimeDelta::hours(HOURS as i64 - 1)
}

/// Per source, its value per hour from `start` (`errors`: the refused ones, else all), the
/// sources with most first; past [`LAYERS`] sources, the rest summed as `other`.
pub fn hourly_layers(a: &Activity, start: DateTime<Utc>, errors: bool) -> Vec<Layer> {
    let mut per: Vec<(String, Vec<u64>)> = Vec::new();
    for h in &a.deliveries {
        let slot = (h.hour - start).num_hours();
        if !(0..HOURS as i64).contains(&slot) {
            continue;
        }
        let i = match per.iter().position(|(s, _)| *s == h.source) {
            Some(i) => i,
            None => {
                per.push((h.source.clone(), vec![0; HOURS]));
                per.len() - 1
            }
        };
        per[i].1[slot as usize] += if errors { h.failed } else { h.ok + h.failed };
    }
    per.retain(|(_, v)| v.iter().any(|n| *n > 0));
    per.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then_with(|| a.0.cmp(&b.0)));
    let mut layers: Vec<Layer> = per
        .iter()
        .take(LAYERS)
        .enumerate()
        .map(|(i, (s, v))| Layer { name: s.clone(), class: format!("c{i}"), values: v.clone() })
        .collect();
    if per.len() > LAYERS {
        let mut other = vec![0; HOURS];
        for (_, v) in &per[LAYERS..] {
            for (o, n) in other.iter_mut().zip(v) {
                *o += n;
            }
        }
        layers.push(Layer { name: format!("{} other sources", per.len() - LAYERS), class: format!("c{LAYERS}"), values: other });
    }
    layers
}

/// One source's day: deliveries and errors per hour, oldest first ([`HOURS`] each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDay {
    pub deliveries: Vec<u64>,
    pub errors: Vec<u64>,
}

/// Each source's day in `a`, counted from `start`.
pub fn source_days(a: &Activity, start: DateTime<Utc>) -> HashMap<String, SourceDay> {
    let mut days: HashMap<String, SourceDay> = HashMap::new();
    for h in &a.deliveries {
        let slot = (h.hour - start).num_hours();
        if !(0..HOURS as i64).contains(&slot) {
            continue;
        }
        let d = days.entry(h.source.clone()).or_insert_with(|| SourceDay { deliveries: vec![0; HOURS], errors: vec![0; HOURS] });
        d.deliveries[slot as usize] += h.ok + h.failed;
        d.errors[slot as usize] += h.failed;
    }
    days
}

/// The sources table's cell for a source's day: the current hour's deliveries and errors, and
/// a sparkline of the day's deliveries.
pub fn last_hour_cell(day: Option<&SourceDay>, source: &str) -> Markup {
    let (n, e) = day.map_or((0, 0), |d| (d.deliveries[HOURS - 1], d.errors[HOURS - 1]));
    html! {
        (n) " / " @if e > 0 { span.fail { (e) } } @else { (e) }
        @if let Some(d) = day { " " (sparkline(&d.deliveries, &format!("Deliveries to {source} per hour, last 24 hours"))) }
    }
}

/// The day's counts of `state`'s store, from the first hour the charts show.
pub async fn day_of(state: &AppState) -> Result<(Activity, DateTime<Utc>), ApiError> {
    let now = state.clock.now();
    let start = first_hour(now);
    Ok((state.store.activity(start, now + TimeDelta::seconds(1)).await?, start))
}

/// The overview page for `a`, counted from `start` (an hour's start).
pub fn overview_page(a: &Activity, start: DateTime<Utc>, sources: usize, viewer: &Viewer) -> Markup {
    let slots: Vec<String> = (0..HOURS).map(|i| (start + TimeDelta::hours(i as i64)).format("%H:00").to_string()).collect();
    let deliveries: u64 = a.deliveries.iter().map(|h| h.ok + h.failed).sum();
    let errors: u64 = a.deliveries.iter().map(|h| h.failed).sum();
    let incidents: u64 = a.incidents_by_severity.iter().map(|(_, n)| n).sum();
    let count = |list: &[(String, u64)], name: &str| list.iter().find(|(s, _)| s == name).map_or(0, |(_, n)| *n);
    let mut severities: Vec<(String, u64, String)> =
        SEVERITIES.iter().map(|s| (s.to_string(), count(&a.incidents_by_severity, s), format!("sev-{s}"))).collect();
    for (s, n) in &a.incidents_by_severity {
        if !SEVERITIES.contains(&s.as_str()) {
            severities.push((s.clone(), *n, "sev-other".into()));
        }
    }
    let verdicts: Vec<(String, u64, String)> = a
        .verdicts
        .iter()
        .map(|(v, n)| (v.clone(), *n, format!("verdict-{}", v.chars().filter(char::is_ascii_alphanumeric).collect::<String>())))
        .collect();
    let backlog =
        vec![("pending".to_string(), a.triage_pending, "c1".to_string()), ("running".to_string(), a.triage_running, "c0".to_string())];
    layout(
        "Overview",
        Nav::Overview,
        Some(viewer),
        html! {
            h1 { "Overview" }
            @if sources == 0 {
                div.panel {
                    h2 { "No sources yet" }
                    p { "Nothing arrives until a sender has a source: " a href="/console/sources" { "add the first source" } ", then point the sender at its URL." }
                }
            }
            p.summary {
                "Last 24 hours (UTC hours from " (slots[0]) "): "
                a href="/console/deliveries" { (deliveries) " deliveries" } ", "
                a href="/console/deliveries?status=failed" { (errors) " errors" } ", "
                (incidents) " incidents; " (a.triage_pending + a.triage_running) " triage jobs waiting or running."
            }
            div.charts {
                (stacked_columns("Deliveries per hour, by source", &slots, &hourly_layers(a, start, false), 3, "No deliveries in the last 24 hours."))
                (stacked_columns("Errors per hour, by source", &slots, &hourly_layers(a, start, true), 3, "No refused deliveries in the last 24 hours."))
                (bars("Incidents by severity", &severities, "No incidents in the last 24 hours."))
                (bars("Triage verdicts", &verdicts, "No triage verdicts in the last 24 hours."))
                (bars("Triage backlog now", &backlog, "No triage job waiting or running."))
            }
        },
    )
}

/// `GET /console`.
pub async fn overview(State(state): State<AppState>, console: Console) -> Result<Markup, PageError> {
    let sources = state.store.list_sources().await.map_err(|e| console.error(ApiError::from(e)))?.len();
    let (activity, start) = day_of(&state).await.map_err(|e| console.error(e))?;
    Ok(overview_page(&activity, start, sources, &console.viewer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_store::HourlyDeliveries;

    fn at(h: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 1, h, 0, 0).unwrap()
    }

    fn hour(source: &str, h: u32, ok: u64, failed: u64) -> HourlyDeliveries {
        HourlyDeliveries { source: source.into(), hour: at(h), ok, failed }
    }

    #[test]
    fn hours_become_slots_per_source_and_the_rest_is_other() {
        let start = at(0);
        let mut a = Activity { deliveries: vec![hour("edr", 0, 2, 1), hour("edr", 23, 1, 0), hour("mail", 5, 0, 4)], ..Default::default() };
        let layers = hourly_layers(&a, start, false);
        assert_eq!(layers.len(), 2);
        assert_eq!((layers[0].name.as_str(), layers[0].values[0], layers[0].values[23]), ("edr", 3, 1));
        assert_eq!((layers[1].name.as_str(), layers[1].values[5]), ("mail", 4));
        let errors = hourly_layers(&a, start, true);
        assert_eq!(errors.iter().map(|l| l.values.iter().sum::<u64>()).collect::<Vec<_>>(), vec![4, 1]);
        for i in 0..8 {
            a.deliveries.push(hour(&format!("s{i}"), 1, 1, 0));
        }
        let layers = hourly_layers(&a, start, false);
        assert_eq!(layers.len(), LAYERS + 1);
        assert_eq!(layers[LAYERS].name, format!("{} other sources", 10 - LAYERS));
        assert_eq!(first_hour(at(23) + TimeDelta::minutes(30)), at(0));
        let days = source_days(&a, start);
        assert_eq!((days["edr"].deliveries[23], days["edr"].errors[0], days["mail"].errors[5]), (1, 1, 4));
        let cell = last_hour_cell(days.get("edr"), "edr").into_string();
        assert!(cell.starts_with("1 / 0 <svg class=\"spark\""), "{cell}");
        assert_eq!(last_hour_cell(None, "new").into_string(), "0 / 0");
    }

    #[test]
    fn the_page_draws_each_chart_or_says_there_is_nothing() {
        let viewer = Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin: false, csrf: "t".into() };
        let empty = overview_page(&Activity::default(), at(0), 0, &viewer).into_string();
        assert!(
            !empty.contains("<svg") && empty.contains("No deliveries in the last 24 hours") && empty.contains("add the first source"),
            "{empty}"
        );
        let a = Activity {
            deliveries: vec![hour("edr", 3, 5, 2)],
            incidents_by_severity: vec![("high".into(), 3)],
            verdicts: vec![("malicious".into(), 1)],
            triage_pending: 2,
            triage_running: 0,
        };
        let html = overview_page(&a, at(0), 1, &viewer).into_string();
        assert_eq!(html.matches("<svg").count(), 5, "{html}");
        assert!(html.contains("7 deliveries") && html.contains("2 errors") && html.contains("3 incidents"), "{html}");
        assert!(html.contains("03:00 · edr: 7") && html.contains("high: 3") && html.contains("malicious: 1"), "{html}");
    }
}
