//! The request and response types of the HTTP API, defined once.
//!
//! The handlers in [`crate::routes`] return these (`Json<SourceView>`, never hand-built JSON),
//! build them from store records with `From`, and read their query strings into the `...Params`
//! types here; the OpenAPI document (`GET /api/openapi.json`) is generated from the same types,
//! so what is documented is what is served. `tw-cli` parses the server's answers with them.
//!
//! Conventions: a field that is `null` when unknown is `Option<T>` and always present
//! (`#[schema(required = true)]`); a field that is only sometimes present is
//! `#[serde(skip_serializing_if = "Option::is_none")]` and not required. Query parameters are
//! read as text and checked by the handler (so a bad value gets a `validation_error` naming the
//! parameter, not a framework rejection); `#[param(value_type = ..)]` documents what is accepted.

pub mod audit;
pub mod deliveries;
pub mod error;
pub mod health;
pub mod incidents;
pub mod intake;
pub mod intel;
pub mod logs;
pub mod playbooks;
pub mod queue;
pub mod reprocess;
pub mod sources;
pub mod triage;

pub use error::{ErrorBody, ErrorCode, ErrorDetail, FieldError};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One check's result: passed with what was seen, or failed with why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    /// What was seen, when the check passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What is wrong, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Result<String, String>> for Check {
    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(d) => Check { ok: true, detail: Some(d), error: None },
            Err(e) => Check { ok: false, detail: None, error: Some(e) },
        }
    }
}

/// The start of a `since=` window: `now` less a duration written as a whole number and a unit
/// (`30s`, `10m`, `2h`, `90d`, `2w`; the pattern `^[0-9]{1,9}[smhdw]$` the document gives). A
/// window reaching back before 1970 (before any record, and past year 0 RFC 3339 cannot even
/// write the time down) means no lower bound: `None` inside `Some`.
/// `None` when `text` is not such a duration.
pub fn since(text: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    if num.is_empty() || num.len() > 9 {
        return None;
    }
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    // At most 999,999,999 weeks: no overflow of i64 seconds.
    let secs = num.parse::<i64>().ok()? * unit_secs;
    Some(chrono::Duration::try_seconds(secs).and_then(|d| now.checked_sub_signed(d)).filter(|t| t.timestamp() >= 0))
}

/// The `meta` block of a paged list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PageMeta {
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
}

impl PageMeta {
    pub fn new(page: tw_store::Page, total: u64) -> PageMeta {
        PageMeta { page: page.page, per_page: page.per_page, total, total_pages: total.div_ceil(u64::from(page.per_page.max(1))) }
    }
}

/// The largest page a client may ask for.
pub const MAX_PER_PAGE: u32 = 200;
/// The page size when none is asked for.
pub const DEFAULT_PER_PAGE: u32 = 50;
/// The highest page number.
pub const MAX_PAGE: u32 = 1_000_000;

/// `?page=&per_page=` of a paged list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1). The server skips every item before the page, so deep
    /// pages cost more; where a list offers a `cursor`, that is the fast way through it.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub page: Option<String>,
    /// Items per page (default 50, at most 200).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub per_page: Option<String>,
}

impl PageParams {
    /// The page asked for, or one error per bad parameter.
    pub fn parse(&self) -> Result<tw_store::Page, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut num = |field: &str, v: &Option<String>, default: u32, max: u32| -> u32 {
            match v.as_deref() {
                None => default,
                Some(s) => match s.parse::<u32>() {
                    Ok(n) if (1..=max).contains(&n) => n,
                    _ => {
                        errors.push(FieldError::new(field, format!("must be a whole number from 1 to {max}")));
                        default
                    }
                },
            }
        };
        let page = num("page", &self.page, 1, MAX_PAGE);
        let per_page = num("per_page", &self.per_page, DEFAULT_PER_PAGE, MAX_PER_PAGE);
        if errors.is_empty() { Ok(tw_store::Page { page, per_page }) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_back_from_now_and_never_refuses_a_long_one() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(since("10m", now), Some(Some(now - chrono::Duration::minutes(10))));
        assert_eq!(since("2w", now), Some(Some(now - chrono::Duration::days(14))));
        // Further back than time goes: everything.
        assert_eq!(since("999999999w", now), Some(None));
        // Schemathesis sent this one: year -223118 is no RFC 3339 time to answer with.
        assert_eq!(since("082232382d", now), Some(None));
        assert_eq!(since("30000d", now), Some(None), "before 1970");
        for bad in ["", "x", "5y", "-1d", "1d ", "1 d", "9999999999s", "d"] {
            assert_eq!(since(bad, now), None, "{bad:?}");
        }
    }
}
