//! The statements of an incident listing, shared by both engines: the same conditions, order and
//! indexes whichever engine runs them; only the placeholder style differs.
//!
//! Each filter that is set becomes `column = <value>` and a filter that is not set is left out,
//! so each combination is a statement of its own (prepared once per connection) and the planner
//! sees an equality it can serve with the index of that column. The order is the incident number,
//! newest (or oldest) first: `(year, seq)` is unique and its index, or `(source | status |
//! severity, year, seq, ...)`, delivers the rows in that order (backwards or forwards), so a page
//! reads about `per_page` matching rows wherever it starts (the other filters are checked on the
//! index entries first).
//!
//! Severity order has no index of its own (each would cost the intake a write per incident): a
//! page walks `(severity, year, seq, ...)` one severity at a time, from the position's severity
//! down ([`steps`]), each walk an equality on severity in number order, until the page is full. A
//! page is at most five index walks of `per_page` rows, wherever it starts.

use crate::model::{Incident, IncidentFilter, IncidentOrder, IncidentPage, IncidentStatus, PageStart};
use crate::rows::INCIDENT_COLUMNS;
use tw_core::{IncidentNumber, Severity, SourceName};

/// One value bound to a listing statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    /// A year (INTEGER in SQLite, int4 in PostgreSQL).
    Year(i32),
    /// A sequence number, a limit or an offset (int8 in PostgreSQL).
    Int(i64),
}

/// A statement and the values of its placeholders, in order.
#[derive(Debug)]
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub args: Vec<Arg<'a>>,
}

/// How an engine writes its n-th (1-based) placeholder: `?1` or `$1`.
pub(crate) type Placeholder = fn(usize) -> String;

/// `column = <value>` for every filter that is set (severity as `severity`, the step's).
fn conditions<'a>(f: &'a IncidentFilter, severity: Option<Severity>, ph: Placeholder, args: &mut Vec<Arg<'a>>) -> Vec<String> {
    let mut conds = Vec::new();
    for Filter { column, value, .. } in filters(f, severity) {
        args.push(Arg::Text(value));
        conds.push(format!("{column} = {}", ph(args.len())));
    }
    conds
}

/// One equality condition of a listing: its column, the index that leads with that column (then
/// the number, so any one of them can drive a walk in number order), and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter<'a> {
    pub column: &'static str,
    pub index: &'static str,
    pub value: &'a str,
}

/// The filter's equality conditions, with `severity` for the severity's.
fn filters(f: &IncidentFilter, severity: Option<Severity>) -> Vec<Filter<'_>> {
    let all = [
        ("source", "incidents_by_source", f.source.as_ref().map(SourceName::as_str)),
        ("status", "incidents_by_status", f.status.map(IncidentStatus::as_str)),
        ("severity", "incidents_by_severity", severity.map(Severity::as_str)),
    ];
    all.into_iter().filter_map(|(column, index, value)| Some(Filter { column, index, value: value? })).collect()
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

/// Most severe first: the order of the walks of a severity listing.
const MOST_SEVERE_FIRST: [Severity; 5] = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info];

/// One walk of an index, in number order: held to `severity` (the filter's when `None`), from
/// right after `after` (from the start when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub severity: Option<Severity>,
    pub after: Option<IncidentNumber>,
}

/// The walks a page of `f` takes, in order, until it is full: one in number order; in severity
/// order one per severity the filter allows, from the position's severity down (the position's
/// own walk resumes after its number, the lower ones start at their newest).
pub(crate) fn steps(f: &IncidentFilter) -> Vec<Step> {
    let (from, after) = match f.start {
        PageStart::Offset(_) => (Severity::Critical, None),
        PageStart::After(n) => (Severity::Critical, Some(n)),
        PageStart::AfterSeverity(s, n) => (s, Some(n)),
    };
    match f.order {
        IncidentOrder::Newest | IncidentOrder::Oldest => vec![Step { severity: None, after }],
        IncidentOrder::Severity => MOST_SEVERE_FIRST
            .into_iter()
            .skip_while(|s| *s != from)
            .filter(|s| f.severity.is_none_or(|only| only == *s))
            .map(|s| Step { severity: Some(s), after: after.filter(|_| s == from) })
            .collect(),
    }
}

/// The equality filters of a walk (see [`filters`]).
pub(crate) fn walk_filters(f: &IncidentFilter, step: Step) -> Vec<Filter<'_>> {
    filters(f, step.severity.or(f.severity))
}

/// One walk's rows: at most `limit` (the rows the page still needs, and one more that tells
/// whether another page follows), after skipping `skip`; `index`, the index the walk must take
/// (SQLite's `INDEXED BY`), when the caller chose one.
pub(crate) fn page<'a>(f: &'a IncidentFilter, step: Step, limit: usize, skip: u64, index: Option<&str>, ph: Placeholder) -> Statement<'a> {
    let mut args = Vec::new();
    let mut conds = conditions(f, step.severity.or(f.severity), ph, &mut args);
    let (cmp, dir) = if f.order == IncidentOrder::Oldest { (">", "ASC") } else { ("<", "DESC") };
    if let Some(n) = step.after {
        args.push(Arg::Year(n.year));
        args.push(Arg::Int(n.seq));
        conds.push(format!("(year, seq) {cmp} ({}, {})", ph(args.len() - 1), ph(args.len())));
    }
    args.push(Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    let hint = index.map(|i| format!(" INDEXED BY {i}")).unwrap_or_default();
    let mut sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents{hint}{} ORDER BY year {dir}, seq {dir} LIMIT {}",
        where_clause(&conds),
        crate::rows::bound_count(ph(args.len()))
    );
    if skip > 0 {
        args.push(Arg::Int(i64::try_from(skip).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" OFFSET {}", crate::rows::bound_count(ph(args.len()))));
    }
    Statement { sql, args }
}

/// How many incidents a severity walk holds (from `incident_counts`), so that an offset can skip
/// whole severities without reading them; `None` for a walk in number order (its offset is the
/// statement's).
pub(crate) fn step_total(f: &IncidentFilter, step: Step, ph: Placeholder) -> Option<Statement<'_>> {
    let severity = step.severity?;
    let mut args = Vec::new();
    let conds = conditions(f, Some(severity), ph, &mut args);
    Some(Statement { sql: format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM incident_counts{}", where_clause(&conds)), args })
}

/// Where the offset of `f` starts (0 for a cursor).
pub(crate) fn offset(f: &IncidentFilter) -> u64 {
    match f.start {
        PageStart::Offset(skip) => skip,
        _ => 0,
    }
}

/// The total of the filter: a sum over the few `incident_counts` rows that match it.
pub(crate) fn total(f: &IncidentFilter, ph: Placeholder) -> Statement<'_> {
    let mut args = Vec::new();
    let conds = conditions(f, f.severity, ph, &mut args);
    Statement { sql: format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM incident_counts{}", where_clause(&conds)), args }
}

/// The page from the rows [`page`] read (`per_page + 1` at most) and the total.
pub(crate) fn finish(mut items: Vec<Incident>, per_page: u32, total: i64) -> IncidentPage {
    crate::triage::drop_trace(&mut items);
    let more = items.len() > per_page as usize;
    items.truncate(per_page as usize);
    let next = if more { items.last().map(|i| i.incident_number) } else { None };
    IncidentPage { items, total: crate::rows::count(total), next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(n: usize) -> String {
        format!("?{n}")
    }

    fn filter(start: PageStart) -> IncidentFilter {
        IncidentFilter { source: None, severity: None, status: None, per_page: 50, start, order: IncidentOrder::Newest }
    }

    fn only(f: &IncidentFilter) -> Step {
        let steps = steps(f);
        assert_eq!(steps.len(), 1, "{steps:?}");
        steps[0]
    }

    #[test]
    fn unset_filters_are_left_out() {
        let f = filter(PageStart::Offset(0));
        let p = page(&f, only(&f), 51, offset(&f), None, question);
        assert!(p.sql.ends_with("FROM incidents ORDER BY year DESC, seq DESC LIMIT +?1"), "{}", p.sql);
        assert_eq!(p.args, [Arg::Int(51)]);
        let t = total(&f, question);
        assert!(t.sql.ends_with("FROM incident_counts"), "{}", t.sql);
        assert!(t.args.is_empty());
        assert!(step_total(&f, only(&f), question).is_none(), "number order skips with OFFSET");
    }

    #[test]
    fn filters_and_a_cursor_become_conditions_in_placeholder_order() {
        let mut f = filter(PageStart::After(IncidentNumber::new(2026, 42)));
        f.source = Some(SourceName::parse("edr").unwrap());
        f.status = Some(IncidentStatus::Open);
        f.severity = Some(Severity::High);
        let p = page(&f, only(&f), 51, 0, None, |n| format!("${n}"));
        assert!(
            p.sql.ends_with(
                "WHERE source = $1 AND status = $2 AND severity = $3 AND (year, seq) < ($4, $5) ORDER BY year DESC, seq DESC LIMIT $6"
            ),
            "{}",
            p.sql
        );
        assert_eq!(p.args, [Arg::Text("edr"), Arg::Text("open"), Arg::Text("high"), Arg::Year(2026), Arg::Int(42), Arg::Int(51)]);
        let t = total(&f, |n| format!("${n}"));
        assert!(t.sql.ends_with("WHERE source = $1 AND status = $2 AND severity = $3"), "{}", t.sql);
    }

    #[test]
    fn oldest_first_walks_the_same_index_forwards() {
        let mut f = filter(PageStart::After(IncidentNumber::new(2026, 42)));
        f.order = IncidentOrder::Oldest;
        let p = page(&f, only(&f), 11, 0, None, question);
        assert!(p.sql.ends_with("WHERE (year, seq) > (?1, ?2) ORDER BY year ASC, seq ASC LIMIT +?3"), "{}", p.sql);
    }

    #[test]
    fn severity_order_walks_one_severity_at_a_time_from_the_position_down() {
        let mut f = filter(PageStart::Offset(0));
        f.order = IncidentOrder::Severity;
        let all = steps(&f);
        assert_eq!(all.iter().map(|s| s.severity.unwrap()).collect::<Vec<_>>(), MOST_SEVERE_FIRST);
        assert!(all.iter().all(|s| s.after.is_none()));
        let p = page(&f, all[1], 20, 0, None, question);
        assert!(p.sql.ends_with("WHERE severity = ?1 ORDER BY year DESC, seq DESC LIMIT +?2"), "{}", p.sql);
        assert_eq!(p.args, [Arg::Text("high"), Arg::Int(20)]);
        let t = step_total(&f, all[1], question).unwrap();
        assert!(t.sql.ends_with("FROM incident_counts WHERE severity = ?1"), "{}", t.sql);

        let n = IncidentNumber::new(2026, 7);
        f.start = PageStart::AfterSeverity(Severity::Medium, n);
        assert_eq!(
            steps(&f),
            [
                Step { severity: Some(Severity::Medium), after: Some(n) },
                Step { severity: Some(Severity::Low), after: None },
                Step { severity: Some(Severity::Info), after: None },
            ]
        );
        // A severity filter keeps its own walk: resumed when the position is in it, whole when
        // the position is more severe, none when the position is past it.
        f.severity = Some(Severity::Low);
        assert_eq!(steps(&f), [Step { severity: Some(Severity::Low), after: None }]);
        f.severity = Some(Severity::Medium);
        assert_eq!(steps(&f), [Step { severity: Some(Severity::Medium), after: Some(n) }]);
        f.severity = Some(Severity::High);
        assert!(steps(&f).is_empty());
    }

    #[test]
    fn an_offset_is_skipped_past() {
        let f = filter(PageStart::Offset(100));
        let p = page(&f, only(&f), 51, offset(&f), None, question);
        assert!(p.sql.ends_with("LIMIT +?1 OFFSET +?2"), "{}", p.sql);
        assert_eq!(p.args, [Arg::Int(51), Arg::Int(100)]);
    }
}
