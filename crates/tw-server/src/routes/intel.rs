//! Local intelligence: `GET /api/intel` (counts) and `POST /api/intel/:list` (add indicators).

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::intel::{IntelAddRequest, IntelAdded, IntelCounts, IntelSummary};
use crate::audit::{Admin, intel_snapshot};
use crate::auth::ReadAccess;
use crate::intel::list_names;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::Value;

/// Indicator counts per list, assets, and the directory they come from.
#[utoipa::path(
    get,
    path = "/api/intel",
    tag = "intel",
    operation_id = "get_intel",
    summary = "Indicator counts per list",
    security(("api_key" = ["read"])),
    responses(
        (status = 200, description = "The lists and their counts", body = IntelSummary),
    )
)]
pub async fn summary(State(state): State<AppState>, _auth: ReadAccess) -> Json<IntelSummary> {
    Json(IntelSummary {
        dir: state.intel.dir().display().to_string(),
        lists: list_names().into_iter().map(str::to_string).collect(),
        counts: IntelCounts::from(&*state.intel.current()),
    })
}

/// Appends `{"indicators": [...]}` to a list file; the intel reloads at once.
#[utoipa::path(
    post,
    path = "/api/intel/{list}",
    tag = "intel",
    operation_id = "add_intel",
    summary = "Add indicators to a list, or set host criticality in the asset inventory (reloaded at once)",
    security(("api_key" = ["admin"])),
    params(("list" = String, Path, description = "bad-domains, bad-ips, bad-hashes, bad-urls, protected-domains, or assets (entries `HOST=CRITICALITY`)")),
    request_body = IntelAddRequest,
    responses(
        (status = 200, description = "Added", body = IntelAdded),
        (status = 400, description = "`invalid_payload`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: no such list", body = ErrorBody),
        (status = 422, description = "`validation_error`: `indicators` is not a non-empty array of one-line strings, or an asset entry is not HOST=low|medium|high|critical", body = ErrorBody),
    )
)]
pub async fn add(State(state): State<AppState>, who: Admin, Path(list): Path<String>, body: Bytes) -> Result<Json<IntelAdded>, ApiError> {
    if !list_names().contains(&list.as_str()) && list != ASSETS {
        return Err(ApiError::NotFound(format!(
            "Unknown intel list '{}' (known: {})",
            list.chars().take(40).collect::<String>(),
            list_names().join(", ")
        )));
    }
    let indicators: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) if m.keys().any(|k| k != "indicators") => {
            let unknown = m.keys().find(|k| *k != "indicators").map(|k| k.chars().take(64).collect::<String>()).unwrap_or_default();
            return Err(ApiError::field(&unknown, format!("unknown field '{unknown}' (expected indicators)")));
        }
        Ok(v) => match v.get("indicators").and_then(Value::as_array) {
            Some(a) if a.iter().all(Value::is_string) && !a.is_empty() => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => return Err(ApiError::field("indicators", "must be a non-empty array of strings")),
        },
        Err(e) => return Err(ApiError::InvalidPayload(format!("Request body is not valid JSON: {e}"))),
    };
    if indicators.iter().any(|i| i.chars().count() > 2048 || i.contains(['\n', '\r'])) {
        return Err(ApiError::field("indicators", "each must be one line of at most 2048 characters"));
    }
    let intel = state.intel.clone();
    let l = list.clone();
    let sent = indicators.clone();
    let assets = if list == ASSETS { Some(parse_assets(&indicators)?) } else { None };
    let added = tokio::task::spawn_blocking(move || match assets {
        Some(entries) => intel.set_assets(&entries),
        None => intel.add(&l, &indicators),
    })
    .await
    .map_err(|_| ApiError::Internal("intel".into()))?
    .map_err(|e| {
        tracing::error!(target: "triage", error = %e, "adding intel failed");
        ApiError::Internal("intel".into())
    })?;
    tracing::info!(target: "api", list = %list, added, "intel indicators added");
    who.record(&state, "intel.add", &list, None, Some(intel_snapshot(&sent, added))).await;
    Ok(Json(IntelAdded { list, added: added as u64, counts: IntelCounts::from(&*state.intel.current()) }))
}

/// The pseudo-list that sets host criticality in `assets.yaml`.
const ASSETS: &str = "assets";

/// `HOST=CRITICALITY` entries for the asset inventory.
fn parse_assets(entries: &[String]) -> Result<Vec<(String, tw_core::triage::Criticality)>, ApiError> {
    entries
        .iter()
        .map(|e| {
            let (host, c) = e.split_once('=').filter(|(h, _)| !h.trim().is_empty()).ok_or_else(|| {
                ApiError::field("indicators", format!("'{e}': assets are given as HOST=CRITICALITY, e.g. fs-02=critical"))
            })?;
            let criticality = serde_json::from_value(Value::String(c.trim().to_ascii_lowercase()))
                .map_err(|_| ApiError::field("indicators", format!("'{e}': criticality must be low, medium, high or critical")))?;
            Ok((host.trim().to_string(), criticality))
        })
        .collect()
}
