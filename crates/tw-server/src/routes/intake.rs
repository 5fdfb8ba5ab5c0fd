//! `POST /api/webhooks/:source`: extract the request, let the intake service ([`crate::intake`])
//! decide, answer with its outcome, and count, record and log the delivery.
//!
//! Order of checks (cheap first, nothing stored before the signature is proven):
//! source known and enabled, the client address's budget of failed verifications (429, before
//! the body is read; every 401 below spends it), body size, signature and timestamp, HMAC, the
//! source's own `rate_limit` (429; verified deliveries only, so a forger cannot spend a real
//! sender's budget), JSON, then either the incident is committed (sync) or the raw event is
//! (async, or when the sync path is saturated). See [`crate::limits`]. The body and its limits are
//! this route's; the rest is the service's.

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::intake::{
    AcceptedStatus, DeadLetteredStatus, IntakeAccepted, IntakeCreated, IntakeDeadLettered, IntakeDuplicate, IntakeOk, IntakeQueued,
    IntakeTestEvent, OkStatus, QueuedStatus,
};
use crate::intake::{self, Outcome, Refusal, truncate};
use crate::metrics::UNREGISTERED;
use crate::refusals::Admission;
use crate::request_ids::RequestIds;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::time::Instant;
use tw_core::SourceName;
use tw_store::SourceRecord;

/// What a successful delivery did, for the request's log line and metrics.
#[derive(Debug, Default)]
struct Delivered {
    incident: Option<tw_store::IncidentRef>,
    queue_id: Option<String>,
    /// The severity of a newly created incident.
    created: Option<tw_core::Severity>,
    duplicate: bool,
}

/// What the request revealed before it ended, for the delivery record.
#[derive(Debug, Default)]
struct Seen {
    /// The source, once it is known to be registered.
    source: Option<SourceName>,
    /// The body, once it was read.
    body: Option<axum::body::Bytes>,
    /// True once the signature verified: only then is anything of the request stored.
    verified: bool,
    /// The client's address: `None` for the server's own test delivery, which no rate limit counts.
    client: Option<std::net::IpAddr>,
    /// The header the source's `header-token` scheme reads its secret from, when it has one.
    token_header: Option<String>,
}

/// The intake handler.
#[utoipa::path(
    post,
    path = "/api/webhooks/{source}",
    tag = "intake",
    operation_id = "receive_webhook",
    summary = "Deliver a signed alert (no API key; verified by the source's scheme)",
    description = "Checks, cheap first and nothing stored before the signature is proven: source registered and enabled, client address in the source's `allowed_ips` (when set), body size, the source's `verification` (default `hmac`, below; `standard-webhooks`: `webhook-id`, `webhook-timestamp`, `webhook-signature`; `github`: `X-Hub-Signature-256`; `header-token`: the source's header; `basic`: `Authorization: Basic`; `url-token` sources take `POST /api/webhooks/{source}/{token}` and refuse this path), JSON object. Every response carries `X-Request-Id` (the sender's own, echoed, else the server's) and `X-Tw-Request-Id` (the server's own, unique: the id of the stored delivery).",
    params(
        ("source" = String, Path, description = "The registered source name"),
        ("X-Webhook-Signature" = Option<String>, Header, description = "`hmac` sources (the default): `sha256=<hex>`: HMAC-SHA256 with the source's secret of `<X-Webhook-Timestamp>.<raw body>`; several values may be sent, separated by commas or spaces (one valid value is enough; only the first 8 digests are tried, the rest ignored). A header that is not UTF-8 text is `invalid_signature`"),
        ("X-Webhook-Timestamp" = Option<String>, Header, description = "`hmac` sources: unix seconds; at most `timestamp_tolerance_secs` (default 300) old and as far in the future. Anything but digits (including a header that is not UTF-8 text) is `timestamp_invalid`"),
        ("X-Request-Id" = Option<String>, Header, description = "Echoed in the response; generated when absent"),
    ),
    request_body(content = Object, content_type = "application/json", description = "The vendor's alert: a JSON object (generic, Defender, CrowdStrike or Splunk shape; detected unless the source pins a format)"),
    responses(
        (status = 201, description = "A new incident was committed", body = IntakeCreated, headers(("X-Request-Id" = String, description = "The sender's X-Request-Id, or a generated one"))),
        (status = 200, description = "A second delivery of a known alert (`duplicate`), or a signed test event (`test`, not stored)", body = IntakeOk, headers(("X-Request-Id" = String, description = "The sender's X-Request-Id, or a generated one"))),
        (status = 202, description = "Stored for a worker (`queued`: async source, or sync intake saturated), or kept as a dead letter (`dead_lettered`) when it could not be normalized", body = IntakeAccepted, headers(("X-Request-Id" = String, description = "The sender's X-Request-Id, or a generated one"))),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object (checked only after the signature)", body = ErrorBody),
        (status = 401, description = "`missing_signature` | `missing_timestamp` | `timestamp_invalid` | `timestamp_expired` | `invalid_signature`: the scheme's headers are missing or do not verify", body = ErrorBody),
        (status = 403, description = "`source_disabled` | `ip_not_allowed`: the source is disabled, or the client address is outside its `allowed_ips`", body = ErrorBody),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive within the server's body timeout (`--body-timeout-secs`); the connection is closed", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds the source's `max_body_bytes` (refused on Content-Length before it is read)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the source is over its `rate_limit` (counted on verified deliveries), or the client address failed verification or API keys too often; `Retry-After` says when to come back", body = ErrorBody, headers(("Retry-After" = u64, description = "Whole seconds to wait (at least 1)"))),
        (status = 503, description = "`unavailable`: the store is shutting down or unreachable; retry later", body = ErrorBody),
    )
)]
pub async fn receive(state: State<AppState>, req: axum::extract::Request) -> Response {
    intake(state, req).await
}

/// The intake handler for senders that can set nothing but a URL (a Splunk alert action): the
/// token is the source's secret. It never appears in a log line, metric, delivery record or error.
#[utoipa::path(
    post,
    path = "/api/webhooks/{source}/{token}",
    tag = "intake",
    operation_id = "receive_webhook_with_token",
    summary = "Deliver an alert to a url-token source (the token in the URL, no headers)",
    description = "For sources whose `verification` is `url-token`: the last path segment is the source's secret. Otherwise the same checks and answers as `POST /api/webhooks/{source}`; a source of any other scheme answers 401 `invalid_signature`. Replay protection is idempotency: the same alert id, or the same body, is counted on its incident (200 `duplicate`).",
    params(
        ("source" = String, Path, description = "The registered source name"),
        ("token" = String, Path, description = "The source's secret (letters, digits, '-', '.', '_', '~'); never logged"),
        ("X-Request-Id" = Option<String>, Header, description = "Echoed in the response; generated when absent"),
    ),
    request_body(content = Object, content_type = "application/json", description = "The vendor's alert: a JSON object"),
    responses(
        (status = 201, description = "A new incident was committed", body = IntakeCreated),
        (status = 200, description = "A second delivery of a known alert (`duplicate`), or a test event (`test`, not stored)", body = IntakeOk),
        (status = 202, description = "Stored for a worker (`queued`), or kept as a dead letter (`dead_lettered`)", body = IntakeAccepted),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object (checked only after the token)", body = ErrorBody),
        (status = 401, description = "`invalid_signature`: the token does not match, or the source takes no token in its URL", body = ErrorBody),
        (status = 403, description = "`source_disabled` | `ip_not_allowed`: the source is disabled, or the client address is outside its `allowed_ips`", body = ErrorBody),
        (status = 404, description = "`unknown_source`: the source is not registered", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds the source's `max_body_bytes`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the source's `rate_limit`, or the client address failed verification too often", body = ErrorBody, headers(("Retry-After" = u64, description = "Whole seconds to wait (at least 1)"))),
        (status = 503, description = "`unavailable`: the store is shutting down or unreachable; retry later", body = ErrorBody),
    )
)]
pub async fn receive_with_token(state: State<AppState>, req: axum::extract::Request) -> Response {
    intake(state, req).await
}

/// Both intake paths: the source's name and, after it, an optional token. The request is taken
/// whole and split, not through `Uri` and `HeaderMap` extractors, which clone both.
async fn intake(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let client = crate::client::ClientIp::of(&parts, state.as_ref());
    let (uri, headers) = (&parts.uri, &parts.headers);
    // The name is read from the raw path and decoded leniently (a path extractor would refuse
    // invalid UTF-8 before this handler): such a name is simply not registered, and is answered
    // and counted like any other unknown source. The token is never logged or echoed.
    let raw = uri.path().strip_prefix("/api/webhooks/").unwrap_or_default();
    let mut segments = raw.splitn(2, '/');
    let source = percent_decode(segments.next().unwrap_or_default());
    let url_token = segments.next().map(|t| zeroize::Zeroizing::new(percent_decode(t)));
    let received_at = state.clock.now();
    let ids = RequestIds::of(headers);
    let rid = ids.own.clone();
    let declared_len = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut seen = Seen { client: Some(client.0), ..Seen::default() };
    let (mut resp, code, done) =
        match handle(&state, &source, url_token.as_deref().map(String::as_str), headers, body, &rid, &mut seen).await {
            Ok((resp, done)) => (resp, None, done),
            Err(e) => {
                let code = e.code();
                (e.into_response(), Some(code), Delivered::default())
            }
        };
    let body_len = seen.body.as_ref().map(|b| b.len() as u64).or(declared_len);
    let request = Request {
        headers,
        rid: &rid,
        sender_rid: ids.sender.as_deref(),
        requested: &source,
        received_at,
        started,
        status: resp.status().as_u16(),
        code,
        body_len,
    };
    report(&state, &request, &done, seen);
    // The sender's own id is echoed as it always was; the stored delivery's id, the server's and
    // unique, comes beside it.
    if let Ok(v) = header::HeaderValue::from_str(ids.echoed()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Ok(v) = header::HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-tw-request-id", v);
    }
    resp
}

/// One finished intake request, as it is counted, recorded and logged.
struct Request<'a> {
    headers: &'a HeaderMap,
    /// The server's own request id.
    rid: &'a str,
    /// The sender's `X-Request-Id`, when sane.
    sender_rid: Option<&'a str>,
    /// The source name as the URL gave it (not trusted).
    requested: &'a str,
    received_at: chrono::DateTime<chrono::Utc>,
    started: Instant,
    status: u16,
    code: Option<&'static str>,
    body_len: Option<u64>,
}

/// Counts the request in the metrics, records the delivery (registered sources only), and writes
/// its log line. Labels and the log's `source` come only from registered names; anything else is
/// attacker-chosen text, counted as `_unregistered` and logged escaped, apart.
fn report(state: &AppState, r: &Request<'_>, done: &Delivered, seen: Seen) {
    let latency = r.started.elapsed();
    let (source, unregistered) = match &seen.source {
        Some(name) => (name.as_str(), None),
        // Escaped: the text is the sender's, and a log line must not be forgeable.
        None => (UNREGISTERED, Some(truncate(r.requested, 64).escape_default().to_string())),
    };
    let m = &state.metrics;
    m.count("webhook_received_total", &[("source", source)], 1);
    if let Some(code) = r.code {
        m.count("webhook_errors_total", &[("source", source), ("code", code)], 1);
    }
    m.observe("webhook_request_duration_seconds", &[("source", source), ("status", &r.status.to_string())], latency.as_secs_f64());
    if let Some(len) = r.body_len {
        m.observe("webhook_payload_bytes", &[("source", source)], len as f64);
    }
    if let Some(sev) = done.created {
        m.count("incidents_created_total", &[("source", source), ("severity", sev.as_str())], 1);
    }
    if done.duplicate {
        m.count("webhook_duplicates_total", &[("source", source)], 1);
    }
    if let Some(name) = &seen.source {
        // Refused before the signature verified (anyone's to send, at any rate), or throttled:
        // a few stored in full, the rest counted ([`crate::refusals`]).
        let admission = match r.code {
            Some(code) if !seen.verified || code == "rate_limited" => state.refusals.admit(name, code, r.status, r.received_at, r.rid),
            _ => Admission::Record,
        };
        if let (Some(code), Admission::StartAggregate | Admission::Counted | Admission::Dropped) = (r.code, admission) {
            m.count("webhook_refusals_aggregated_total", &[("source", source), ("code", code)], 1);
        }
        if matches!(admission, Admission::Record | Admission::StartAggregate) {
            let aggregate = admission == Admission::StartAggregate;
            let delivery = tw_store::Delivery {
                request_id: r.rid.to_string(),
                // An aggregate row stands for many senders' requests: no one sender's id.
                sender_request_id: r.sender_rid.filter(|_| !aggregate).map(str::to_string),
                source: name.clone(),
                received_at: r.received_at,
                status: r.status,
                code: r.code.map(str::to_string),
                incident_id: done.incident.map(|i| i.id),
                incident_number: done.incident.map(|i| i.number),
                queue_id: done.queue_id.clone(),
                duplicate: done.duplicate,
                body_len: r.body_len,
                latency_ms: latency.as_secs_f64() * 1000.0,
                raw_payload: None,
                verified: seen.verified,
                refused_count: aggregate.then_some(1),
                last_received_at: aggregate.then_some(r.received_at),
                headers: (!aggregate && (r.code.is_some() || state.refusals.keep_accepted_headers(name, r.received_at)))
                    .then(|| recorded_headers(r.headers, seen.token_header.as_deref(), seen.verified)),
            };
            // A delivery refused after its signature verified keeps its body for debugging; an
            // accepted one points at its incident; an unauthenticated body is never stored.
            let body = match (r.code, seen.body, seen.verified) {
                (Some(_), Some(b), true) => Some(b.slice(..b.len().min(tw_store::DELIVERY_BODY_LIMIT)).to_vec()),
                _ => None,
            };
            state.store.record_delivery(delivery, body);
        }
    }
    let incident = done.incident.map(|i| i.number.to_string());
    tracing::info!(
        target: "webhook",
        request_id = r.rid,
        sender_request_id = r.sender_rid,
        source,
        requested_source = unregistered.as_deref(),
        status = r.status,
        code = r.code.unwrap_or("-"),
        incident = incident.as_deref().unwrap_or("-"),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "webhook delivery"
    );
}

/// Bytes of headers a delivery record keeps, and of one header's value.
const RECORDED_HEADERS_MAX: usize = 4096;
const RECORDED_VALUE_MAX: usize = 256;

/// The request's headers as its delivery record keeps them, for the console's delivery page and
/// `GET /api/deliveries/{id}`: one `name: value` line each, in the order received, and never a
/// credential. Values are `[redacted]` for the headers that carry one: `Authorization`, cookies,
/// the schemes' signature headers, the source's own `header-token` header, and any header whose
/// name speaks of a key, token, secret, signature, password or auth. Of a request whose signature
/// did not verify (anyone's to send) only the names are kept, with the values of `Content-Type`,
/// `Content-Length` and `User-Agent`: enough to see which header was missing. Values are escaped
/// (`\n` and other controls cannot forge a line), each cut at 256 characters, the whole at 4 KiB.
pub(crate) fn recorded_headers(headers: &HeaderMap, token_header: Option<&str>, verified: bool) -> String {
    const SECRET_WORDS: &[&str] = &["auth", "token", "key", "secret", "signature", "password", "cookie", "credential"];
    let mut out = String::new();
    for (name, value) in headers {
        let name = name.as_str();
        let secret = Some(name) == token_header || SECRET_WORDS.iter().any(|w| name.contains(w));
        let shown = if secret {
            "[redacted]".to_string()
        } else if !verified && !matches!(name, "content-type" | "content-length" | "user-agent") {
            "[not kept: the signature did not verify]".to_string()
        } else {
            let text = String::from_utf8_lossy(value.as_bytes());
            crate::logs::escape(&truncate(&text, RECORDED_VALUE_MAX)).into_owned()
        };
        let line = format!("{name}: {shown}\n");
        if out.len() + line.len() > RECORDED_HEADERS_MAX {
            out.push_str("[more headers not kept]\n");
            break;
        }
        out.push_str(&line);
    }
    out.pop();
    out
}

/// Runs a delivery through the intake's checks and normalization without storing anything when
/// it is a signed test event (`webhook test`). Ok when it would be accepted.
pub(crate) async fn check(
    state: &AppState,
    source: &str,
    url_token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    rid: &str,
) -> Result<(), ApiError> {
    handle(state, source, url_token, headers, body, rid, &mut Seen::default()).await.map(|_| ())
}

async fn handle(
    state: &AppState,
    raw_name: &str,
    url_token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    rid: &str,
    seen: &mut Seen,
) -> Result<(Response, Delivered), ApiError> {
    let source = intake::source(state, raw_name, seen.client).await?;
    seen.source = Some(source.name.clone());
    if let tw_core::Verification::HeaderToken { header } = &source.settings.verification {
        seen.token_header = Some(header.to_string());
    }
    // A refusal is counted against the source with its delivery record (see `report`).
    let limit = intake::accepting(state, &source, seen.client)?;
    let bytes = read_limited(state, headers, body, limit, seen.client).await?;
    seen.body = Some(bytes.clone());
    let delivery = intake::Delivery { headers, url_token, body: &bytes, rid, client: seen.client };
    match intake::receive(state, &source, delivery).await {
        Ok(outcome) => {
            seen.verified = true;
            Ok(respond(&source, outcome))
        }
        Err(refusal) => {
            seen.verified = refusal.verified();
            // An over-limit body is not kept with its delivery record: the sender will send it again.
            if let Refusal::OverLimit(_) = refusal {
                seen.body = None;
            }
            Err(refusal.into_error())
        }
    }
}

/// The body, within `limit`: refused on its declared length before it is read, and while it is
/// read when it grows past it or the connection layer cuts it short.
async fn read_limited(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    client: Option<IpAddr>,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    read_body(body, limit, declared).await.map_err(|e| {
        use crate::serve::BodyError;
        let why = match e {
            ReadError::TooLarge => return ApiError::PayloadTooLarge(limit),
            ReadError::Body(e) => BodyError::find(&e),
        };
        // A body too slow, or one more while the budget is spent, is what an address holding
        // connections with slow bodies produces: it spends the address's failure budget, so the
        // next one is refused 429 before it is read.
        if let (Some(BodyError::TimedOut | BodyError::BudgetExhausted), Some(client)) = (why, client) {
            crate::limits::count_failure(state, client, crate::limits::FailureKind::SlowBody);
        }
        match why {
            Some(why) => why.api_error(limit),
            None => ApiError::InvalidPayload("The request body could not be read completely".into()),
        }
    })
}

/// Why an intake body could not be read.
enum ReadError {
    /// More than the source's `max_body_bytes`.
    TooLarge,
    /// The body stopped: cut short by the connection layer ([`crate::serve::BodyError`]), or broken.
    Body(axum::Error),
}

/// Reads a body of at most `limit` bytes into one buffer, copying each frame as it comes and
/// dropping it: frames kept one by one until the end (as `to_bytes` does) would each pin a piece
/// of the connection's read buffer, and a body of tiny chunks would hold many times its size. The
/// buffer starts from the declared length, but at most 64 KiB: a larger one is grown as charged
/// frames arrive, so a sender that declares 1 MiB and stalls holds no memory the budget does not
/// know of.
async fn read_body(body: Body, limit: u64, declared: Option<u64>) -> Result<axum::body::Bytes, ReadError> {
    use http_body_util::BodyExt;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)).min(limit).min(64 * 1024);
    let mut buf = Vec::with_capacity(capacity);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Some(data) = frame.data_ref() {
            if data.len() > limit - buf.len() {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.into())
}

/// The answer to what the service did with a delivery, and what it did for the metrics and the
/// delivery record.
fn respond(source: &SourceRecord, outcome: Outcome) -> (Response, Delivered) {
    match outcome {
        Outcome::Created { incident, severity } => {
            let body =
                IntakeCreated { status: AcceptedStatus::Accepted, incident_id: incident.id, incident_number: incident.number.to_string() };
            let done = Delivered { incident: Some(incident), created: Some(severity), ..Default::default() };
            ((StatusCode::CREATED, Json(body)).into_response(), done)
        }
        Outcome::Duplicate { incident, delivery_count } => {
            let body = IntakeDuplicate {
                status: AcceptedStatus::Accepted,
                incident_id: incident.id,
                incident_number: incident.number.to_string(),
                duplicate: true,
                delivery_count,
            };
            let done = Delivered { incident: Some(incident), duplicate: true, ..Default::default() };
            ((StatusCode::OK, Json(body)).into_response(), done)
        }
        Outcome::Queued { queue_id } => {
            let body =
                IntakeQueued { status: QueuedStatus::Queued, queue_id: queue_id.clone(), message: "Event queued for processing".into() };
            ((StatusCode::ACCEPTED, Json(body)).into_response(), Delivered { queue_id: Some(queue_id), ..Default::default() })
        }
        Outcome::DeadLettered { id, reason } => {
            let body = IntakeDeadLettered {
                status: DeadLetteredStatus::DeadLettered,
                dead_letter_id: id,
                message: format!("Event stored but not normalized: {reason}"),
            };
            ((StatusCode::ACCEPTED, Json(body)).into_response(), Delivered::default())
        }
        Outcome::Test(alert) => {
            let body = IntakeTestEvent {
                status: OkStatus::Ok,
                test: true,
                source: source.name.to_string(),
                format: alert.format,
                title: alert.title,
                message: "Signature verified; test event not stored".into(),
            };
            ((StatusCode::OK, Json(body)).into_response(), Delivered::default())
        }
    }
}

/// Decodes `%XX` escapes; invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
