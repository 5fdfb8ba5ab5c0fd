//! The statements of an incident listing, shared by both engines: the same conditions, order and
//! indexes whichever engine runs them; only the placeholder style differs.
//!
//! Each filter that is set becomes `column = <value>` and a filter that is not set is left out,
//! so each combination is a statement of its own (prepared once per connection) and the planner
//! sees an equality it can serve with the index of that column. The order is the incident number,
//! newest first: `(year, seq)` is unique and its index, or `(source | status | severity, year,
//! seq, ...)`, delivers the rows in that order, so a page reads about `per_page` matching rows
//! wherever it starts (the other filters are checked on the index entries first).

use crate::model::{Incident, IncidentFilter, IncidentPage, IncidentStatus, PageStart};
use crate::rows::INCIDENT_COLUMNS;
use tw_core::{Severity, SourceName};

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

/// `column = <value>` for every filter that is set.
fn conditions<'a>(f: &'a IncidentFilter, ph: Placeholder, args: &mut Vec<Arg<'a>>) -> Vec<String> {
    let filters: [(&str, Option<&'a str>); 3] = [
        ("source", f.source.as_ref().map(SourceName::as_str)),
        ("status", f.status.map(IncidentStatus::as_str)),
        ("severity", f.severity.map(Severity::as_str)),
    ];
    let mut conds = Vec::new();
    for (column, value) in filters {
        if let Some(v) = value {
            args.push(Arg::Text(v));
            conds.push(format!("{column} = {}", ph(args.len())));
        }
    }
    conds
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

/// The page: one row more than asked for, which tells whether another page follows.
pub(crate) fn page(f: &IncidentFilter, ph: Placeholder) -> Statement<'_> {
    let mut args = Vec::new();
    let mut conds = conditions(f, ph, &mut args);
    if let PageStart::After(n) = f.start {
        args.push(Arg::Year(n.year));
        args.push(Arg::Int(n.seq));
        conds.push(format!("(year, seq) < ({}, {})", ph(args.len() - 1), ph(args.len())));
    }
    args.push(Arg::Int(i64::from(f.per_page) + 1));
    let mut sql =
        format!("SELECT {INCIDENT_COLUMNS} FROM incidents{} ORDER BY year DESC, seq DESC LIMIT {}", where_clause(&conds), ph(args.len()));
    if let PageStart::Offset(skip) = f.start
        && skip > 0
    {
        args.push(Arg::Int(i64::try_from(skip).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" OFFSET {}", ph(args.len())));
    }
    Statement { sql, args }
}

/// The total of the filter: a sum over the few `incident_counts` rows that match it.
pub(crate) fn total(f: &IncidentFilter, ph: Placeholder) -> Statement<'_> {
    let mut args = Vec::new();
    let conds = conditions(f, ph, &mut args);
    Statement { sql: format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM incident_counts{}", where_clause(&conds)), args }
}

/// The page from the rows [`page`] read (`per_page + 1` at most) and the total.
pub(crate) fn finish(mut items: Vec<Incident>, per_page: u32, total: i64) -> IncidentPage {
    let more = items.len() > per_page as usize;
    items.truncate(per_page as usize);
    let next = if more { items.last().map(|i| i.incident_number) } else { None };
    IncidentPage { items, total: crate::rows::count(total), next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_core::IncidentNumber;

    fn question(n: usize) -> String {
        format!("?{n}")
    }

    fn filter(start: PageStart) -> IncidentFilter {
        IncidentFilter { source: None, severity: None, status: None, per_page: 50, start }
    }

    #[test]
    fn unset_filters_are_left_out() {
        let f = filter(PageStart::Offset(0));
        let p = page(&f, question);
        assert!(p.sql.ends_with("FROM incidents ORDER BY year DESC, seq DESC LIMIT ?1"), "{}", p.sql);
        assert_eq!(p.args, [Arg::Int(51)]);
        let t = total(&f, question);
        assert!(t.sql.ends_with("FROM incident_counts"), "{}", t.sql);
        assert!(t.args.is_empty());
    }

    #[test]
    fn filters_and_a_cursor_become_conditions_in_placeholder_order() {
        let mut f = filter(PageStart::After(IncidentNumber::new(2026, 42)));
        f.source = Some(SourceName::parse("edr").unwrap());
        f.status = Some(IncidentStatus::Open);
        f.severity = Some(Severity::High);
        let p = page(&f, |n| format!("${n}"));
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
    fn an_offset_is_skipped_past() {
        let f = filter(PageStart::Offset(100));
        let p = page(&f, question);
        assert!(p.sql.ends_with("LIMIT ?1 OFFSET ?2"), "{}", p.sql);
        assert_eq!(p.args, [Arg::Int(51), Arg::Int(100)]);
    }
}
