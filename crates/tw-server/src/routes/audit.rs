//! `GET /api/audit`: the audit log of administrative changes, newest first (admin scope), and
//! `GET /api/keys`: the API keys (admin scope; never a key, only its prefix).

use crate::ApiError;
use crate::api::FieldError;
use crate::api::audit::{ApiKeyList, ApiKeyView, AuditList, AuditMeta, AuditParams, AuditRecord};
use crate::api::{DEFAULT_PER_PAGE, ErrorBody, PageParams};
use crate::auth::AdminAccess;
use crate::routes::Query;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use tw_store::AuditFilter;

/// The text clients send back as `?cursor=` to read the records older than `seq`: the sequence
/// number itself (the pattern `^[1-9][0-9]{0,17}$` the document gives).
fn encode_cursor(seq: i64) -> String {
    seq.to_string()
}

/// A cursor of the form this API issues, or `None`.
fn parse_cursor(text: &str) -> Option<i64> {
    let digits = text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    digits.then(|| text.parse().ok()).flatten()
}

/// `since`: an RFC 3339 time, or a duration back from now (`30m`, `12h`, `90d`); `None` inside
/// `Ok`: no lower bound.
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    crate::api::since(text, now)
        .ok_or_else(|| "must be an RFC 3339 time (2026-01-31T00:00:00Z) or a duration like 30m, 12h, 90d or 2w".into())
}

/// An action or a family of them: `source.create`, `source`.
fn valid_action(a: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    a.len() <= 64
        && match a.split_once('.') {
            Some((family, verb)) => part(family) && part(verb),
            None => part(a),
        }
}

/// The newest administrative changes first, filtered.
///
/// Each record says who (`actor`: the API key's name and prefix, `cli` and the user, or the
/// config file), from where (`client_ip`), what (`action`, `target`), `before` and `after` (never a
/// secret: sources show their `secret_fingerprint` only) and the `request_id`. Follow
/// `meta.next_cursor` with `?cursor=` (and the same filters) for older records.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "admin",
    operation_id = "list_audit",
    summary = "The audit log of administrative changes, newest first",
    security(("api_key" = ["admin"])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of records", body = AuditList),
        (status = 422, description = "`validation_error`: a bad `action`, `target`, `since`, `cursor` or `per_page` (see `details`)", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, _auth: AdminAccess, Query(q): Query<AuditParams>) -> Result<Json<AuditList>, ApiError> {
    let mut errors = Vec::new();
    // As sent (the query extractor refused empty values): checked as it is.
    let AuditParams { action, target, since, cursor, per_page } = q;
    if action.as_deref().is_some_and(|a| !valid_action(a)) {
        errors.push(FieldError::new("action", "must be an action (source.create) or a family of them (source)"));
    }
    if target.as_deref().is_some_and(|t| t.len() > 256) {
        errors.push(FieldError::new("target", "must be at most 256 characters"));
    }
    let since = since.and_then(|s| parse_since(&s, state.clock.now()).map_err(|e| errors.push(FieldError::new("since", e))).ok()).flatten();
    let before_seq = cursor.and_then(|c| {
        let parsed = parse_cursor(&c);
        if parsed.is_none() {
            errors.push(FieldError::new("cursor", "is not a cursor from this API: send meta.next_cursor back exactly as received"));
        }
        parsed
    });
    // The audit log pages by cursor only; its page size reads like every list's.
    let per_page = PageParams { page: None, per_page }.parse().map_or_else(
        |e| {
            errors.extend(e);
            DEFAULT_PER_PAGE
        },
        |p| p.per_page,
    );
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let page = state.store.list_audit(&AuditFilter { action, target, since, before_seq, limit: per_page }).await?;
    Ok(Json(AuditList {
        data: page.items.into_iter().map(AuditRecord::from).collect(),
        meta: AuditMeta { per_page, next_cursor: page.next.map(encode_cursor) },
    }))
}

/// Every API key, oldest first: name, prefix, scope, status and times (never the key or its hash).
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "admin",
    operation_id = "list_api_keys",
    summary = "API keys (name, prefix, scope, status; never the key)",
    security(("api_key" = ["admin"])),
    responses(
        (status = 200, description = "Every key, revoked ones too", body = ApiKeyList),
    )
)]
pub async fn keys(State(state): State<AppState>, _auth: AdminAccess) -> Result<Json<ApiKeyList>, ApiError> {
    let now = state.clock.now();
    let keys = state.store.list_api_keys().await?;
    Ok(Json(ApiKeyList { data: keys.iter().map(|k| ApiKeyView::new(k, now)).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for seq in [1, 42, 999_999_999_999_999_999] {
            assert_eq!(parse_cursor(&encode_cursor(seq)), Some(seq));
        }
        for bad in ["", "a1:5", "not a cursor", "0", "-3", "007", "1000000000000000000", "99999999999999999999", "2026-5"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_takes_a_time_or_a_bounded_duration() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("2026-05-01T00:00:00Z", now).unwrap().unwrap().to_rfc3339(), "2026-05-01T00:00:00+00:00");
        assert_eq!(parse_since("1d", now).unwrap(), Some(now - chrono::Duration::days(1)));
        assert_eq!(parse_since("999999999w", now).unwrap(), None);
        for bad in ["99999999999d", "yesterday", "-1d", "1y"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn actions_are_names_or_families() {
        for ok in ["source", "source.create", "api_key.revoke"] {
            assert!(valid_action(ok), "{ok}");
        }
        for bad in ["", "Source", "source.", ".create", "a.b.c", "source.create%", "x'--"] {
            assert!(!valid_action(bad), "{bad}");
        }
    }
}
