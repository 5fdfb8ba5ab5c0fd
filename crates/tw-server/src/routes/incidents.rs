//! `GET /api/incidents`, `GET /api/incidents/:id` (uuid or INC number), `.../raw`.

use crate::ApiError;
use crate::api::FieldError;
use crate::api::incidents::{Incident as IncidentView, IncidentDetail, IncidentList, IncidentListMeta, IncidentListParams};
use crate::api::{ErrorBody, PageMeta, PageParams};
use crate::auth::ReadAccess;
use crate::routes::Query;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tw_core::{IncidentNumber, Severity, SourceName};
use tw_store::{Incident, IncidentFilter, IncidentKey, IncidentOrder, IncidentStatus, PageStart};

/// Where the next page of a listing starts: right after an incident, in the listing's order. The
/// cursor carries its order, so it is never read in another one:
/// - newest first: `<year>-<seq>` (`2026-42`), as before `sort` existed;
/// - oldest first: `oldest-<year>-<seq>`;
/// - by severity: `<severity>-<year>-<seq>` (`high-2026-42`), the severity the incident had on its
///   page, so a severity changed since does not move the position.
///
/// [`CURSOR_PATTERN`] describes them all, so that a client can tell a well-formed cursor from the
/// document alone. A cursor names a position, not the filters: the client sends the same filters
/// (and `sort`) with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Newest(IncidentNumber),
    Oldest(IncidentNumber),
    Severity(Severity, IncidentNumber),
}

/// The form of every cursor [`Cursor::encode`] writes (the OpenAPI document's pattern).
pub const CURSOR_PATTERN: &str = "^(oldest-|critical-|high-|medium-|low-|info-)?[1-9][0-9]{0,3}-[1-9][0-9]{0,17}$";

/// How far `?page=` may reach (incidents skipped before the page): an offset walks past every
/// incident before it, so deeper pages are reached with the cursor, whose cost does not grow.
pub const MAX_PAGE_OFFSET: u64 = 10_000;

impl Cursor {
    /// The cursor after `incident` in `order`.
    pub fn after(order: IncidentOrder, incident: &Incident) -> Cursor {
        match order {
            IncidentOrder::Newest => Cursor::Newest(incident.incident_number),
            IncidentOrder::Oldest => Cursor::Oldest(incident.incident_number),
            IncidentOrder::Severity => Cursor::Severity(incident.severity, incident.incident_number),
        }
    }

    /// The order the cursor was made in.
    pub fn order(&self) -> IncidentOrder {
        match self {
            Cursor::Newest(_) => IncidentOrder::Newest,
            Cursor::Oldest(_) => IncidentOrder::Oldest,
            Cursor::Severity(..) => IncidentOrder::Severity,
        }
    }

    /// Where the store starts the page.
    pub fn start(&self) -> PageStart {
        match *self {
            Cursor::Newest(n) | Cursor::Oldest(n) => PageStart::After(n),
            Cursor::Severity(s, n) => PageStart::AfterSeverity(s, n),
        }
    }

    /// The text clients send back as `?cursor=`.
    pub fn encode(&self) -> String {
        let number = |n: &IncidentNumber| format!("{}-{}", n.year, n.seq);
        match self {
            Cursor::Newest(n) => number(n),
            Cursor::Oldest(n) => format!("oldest-{}", number(n)),
            Cursor::Severity(s, n) => format!("{s}-{}", number(n)),
        }
    }

    /// A cursor of the form this API issues, or `None`.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (prefix, position) = match text.split_once('-') {
            Some((p, rest)) if p.bytes().all(|b| b.is_ascii_lowercase()) => (Some(p), rest),
            _ => (None, text),
        };
        let (year, seq) = position.split_once('-')?;
        let number = |t: &str, max_digits: usize| {
            !t.is_empty() && t.len() <= max_digits && !t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit())
        };
        if !number(year, 4) || !number(seq, 18) {
            return None;
        }
        let n = IncidentNumber::new(year.parse::<i32>().ok()?, seq.parse::<i64>().ok()?);
        match prefix {
            None => Some(Cursor::Newest(n)),
            Some("oldest") => Some(Cursor::Oldest(n)),
            // Only the exact names the encoder writes: `Severity`'s parser may accept more.
            Some(p) => tw_core::Severity::ALL.into_iter().find(|s| s.as_str() == p).map(|s| Cursor::Severity(s, n)),
        }
    }
}

/// A page of incidents, newest first by number (or as `sort` says), with a `meta` block.
///
/// `sort=oldest` lists oldest first, `sort=severity` most severe first (newest first within a
/// severity); each order is served by an index the intake keeps anyway.
///
/// Follow `meta.next_cursor` with `?cursor=` (and the same filters) for the next page: each page
/// costs the same however deep it is, and incidents arriving meanwhile never shift the pages. It
/// is `null` on the last page. `?page=N` still works but the server walks past every incident
/// before the page, so deep pages cost more; `page` and `cursor` together are refused (422).
/// `meta.total` is exact for any filter and costs the same at any size.
#[utoipa::path(
    get,
    path = "/api/incidents",
    tag = "incidents",
    operation_id = "list_incidents",
    summary = "Incidents, newest first (or oldest first, or most severe first)",
    security(("api_key" = ["read"])),
    params(IncidentListParams, PageParams),
    responses(
        (status = 200, description = "A page of incidents", body = IncidentList),
        (status = 422, description = "`validation_error`: a bad filter, `sort`, `cursor`, `page` or `per_page`, `page` with `cursor`, or a cursor of another `sort` (see `details`)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadAccess,
    Query(q): Query<IncidentListParams>,
) -> Result<Json<IncidentList>, ApiError> {
    list_incidents(&state, q).await.map(Json)
}

/// A page of incidents by the filters and cursor of `q`, checked by the API's rules (every bad
/// parameter in one 422) and read through the store's indexed listing: what `GET /api/incidents`
/// and the console's incident list both show.
pub async fn list_incidents(state: &AppState, q: IncidentListParams) -> Result<IncidentList, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let page = q.page.parse().unwrap_or_else(|e| {
        errors.extend(e);
        tw_store::Page { page: 1, per_page: 1 }
    });
    // As sent (the query extractor refused empty values): checked as it is.
    let source = q.source.and_then(|s| SourceName::parse(&s).map_err(|e| errors.push(FieldError::new("source", e.to_string()))).ok());
    let severity = q.severity.and_then(|s| s.parse::<Severity>().map_err(|e| errors.push(FieldError::new("severity", e.to_string()))).ok());
    let status = q.status.and_then(|s| s.parse::<IncidentStatus>().map_err(|e| errors.push(FieldError::new("status", e))).ok());
    let order = match q.sort.as_deref().map(str::parse::<IncidentOrder>) {
        None => IncidentOrder::Newest,
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            errors.push(FieldError::new("sort", e));
            IncidentOrder::Newest
        }
    };
    let cursor_text = q.cursor;
    let cursor = cursor_text.as_deref().and_then(|c| {
        let parsed = Cursor::parse(c);
        match parsed {
            None => errors.push(FieldError::new("cursor", "is not a cursor from this API: send meta.next_cursor back exactly as received")),
            Some(c) if c.order() != order && !errors.iter().any(|e| e.field == "sort") => errors.push(FieldError::new(
                "cursor",
                format!("belongs to sort={}: send it with the sort (and filters) of the page that gave it", c.order().as_str()),
            )),
            Some(_) => {}
        }
        parsed
    });
    if cursor_text.is_some() && q.page.page.is_some() {
        errors.push(FieldError::new("page", "cannot be combined with cursor: the cursor already says where the page starts"));
    } else if page.offset() > MAX_PAGE_OFFSET {
        errors.push(FieldError::new(
            "page",
            format!("reaches past the first {MAX_PAGE_OFFSET} incidents: page on with cursor (meta.next_cursor) instead"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let start = match cursor {
        Some(c) => c.start(),
        None => PageStart::Offset(page.offset()),
    };
    let found = state.store.list_incidents(&IncidentFilter { source, severity, status, per_page: page.per_page, start, order }).await?;
    let paged = PageMeta::new(page, found.total);
    let meta = IncidentListMeta {
        // A page asked for by cursor has no number.
        page: cursor.is_none().then_some(paged.page),
        per_page: paged.per_page,
        total: paged.total,
        total_pages: paged.total_pages,
        next_cursor: found.next.and(found.items.last()).map(|last| Cursor::after(order, last).encode()),
    };
    Ok(IncidentList { data: found.items.into_iter().map(IncidentView::from).collect(), meta })
}

async fn load(state: &AppState, id: &str) -> Result<Incident, ApiError> {
    let key: IncidentKey = id.parse().map_err(|_| {
        ApiError::NotFound(format!("Incident '{}' not found (use its id or INC number)", id.chars().take(80).collect::<String>()))
    })?;
    state.store.get_incident(&key).await?.ok_or_else(|| ApiError::NotFound(format!("Incident '{id}' not found")))
}

/// One incident with its raw payload (as JSON).
#[utoipa::path(
    get,
    path = "/api/incidents/{id}",
    tag = "incidents",
    operation_id = "get_incident",
    summary = "One incident with its raw payload",
    security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "The incident's uuid or number (INC-2026-0001)")),
    responses(
        (status = 200, description = "The incident", body = IncidentDetail),
        (status = 404, description = "`not_found`: no such incident", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Json<IncidentDetail>, ApiError> {
    incident_detail(&state, &id).await.map(Json)
}

/// One incident by uuid or INC number, without its payload: its normalized alert, as the
/// console's delivery page shows it beside the payload that was delivered.
pub async fn incident(state: &AppState, id: &str) -> Result<IncidentView, ApiError> {
    load(state, id).await.map(IncidentView::from)
}

/// One incident by uuid or INC number, with its raw payload as JSON (or as a string when it was
/// not JSON): what `GET /api/incidents/{id}` and the console's incident page show.
pub async fn incident_detail(state: &AppState, id: &str) -> Result<IncidentDetail, ApiError> {
    let mut incident = load(state, id).await?;
    let raw_payload = incident
        .raw
        .take()
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())));
    Ok(IncidentDetail { incident: incident.into(), raw_payload })
}

/// The payload exactly as the sender sent it.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/raw",
    tag = "incidents",
    operation_id = "get_incident_raw",
    summary = "The payload exactly as received",
    security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "The incident's uuid or number (INC-2026-0001)")),
    responses(
        (status = 200, description = "The body byte for byte", body = Object, content_type = "application/json"),
        (status = 404, description = "`not_found`: no such incident", body = ErrorBody),
    )
)]
pub async fn raw(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Response, ApiError> {
    let incident = load(&state, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], incident.raw.unwrap_or_default()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for n in [IncidentNumber::new(2026, 1), IncidentNumber::new(2024, 1_000_000), IncidentNumber::new(9999, 999_999_999_999_999_999)] {
            for c in [Cursor::Newest(n), Cursor::Oldest(n), Cursor::Severity(Severity::Critical, n), Cursor::Severity(Severity::Info, n)] {
                let text = c.encode();
                assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text} is URL- and shell-safe");
                assert_eq!(Cursor::parse(&text), Some(c));
                let digits = text.trim_start_matches(|c: char| c.is_ascii_lowercase()).trim_start_matches('-');
                assert!(CURSOR_PATTERN.contains(&text[..text.len() - digits.len()]), "{text}: its prefix is in the pattern");
            }
        }
        assert_eq!(Cursor::Newest(IncidentNumber::new(2026, 42)).encode(), "2026-42", "newest-first cursors are as before");
        for bad in [
            "",
            "not a cursor",
            "INC-2026-0001",
            "2026",
            "2026-",
            "-5",
            "2026-0",
            "0-5",
            "2026--5",
            "2026-5-6",
            "02026-5",
            "2026-05",
            "10000-5",
            "2026-1000000000000000000",
            "aTE6MjAyNjo0Mg",
            "newest-2026-5",
            "dire-2026-5",
            "High-2026-5",
            "oldest-",
            "oldest-2026",
            "high-high-2026-5",
            "crit-2026-5",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    /// The document's pattern of `cursor` is the one every cursor fits.
    fn documented_cursor_pattern() -> String {
        use utoipa::IntoParams;
        let params = serde_json::to_value(IncidentListParams::into_params(|| None)).unwrap();
        let cursor = params.as_array().unwrap().iter().find(|p| p["name"] == "cursor").expect("cursor is documented");
        cursor["schema"]["pattern"].as_str().unwrap().to_string()
    }

    #[test]
    fn the_document_gives_the_cursor_pattern() {
        assert_eq!(documented_cursor_pattern(), CURSOR_PATTERN);
    }
}
