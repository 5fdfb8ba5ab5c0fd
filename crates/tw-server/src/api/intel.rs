//! Local threat intelligence: `GET /api/intel`, `POST /api/intel/{list}`.

use serde::{Deserialize, Serialize};
use tw_core::triage::Intel;
use utoipa::ToSchema;

/// Indicator counts per list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntelCounts {
    #[serde(rename = "bad-domains")]
    pub bad_domains: u64,
    #[serde(rename = "bad-ips")]
    pub bad_ips: u64,
    #[serde(rename = "bad-hashes")]
    pub bad_hashes: u64,
    #[serde(rename = "bad-urls")]
    pub bad_urls: u64,
    #[serde(rename = "protected-domains")]
    pub protected_domains: u64,
    pub assets: u64,
}

impl From<&Intel> for IntelCounts {
    fn from(intel: &Intel) -> Self {
        IntelCounts {
            bad_domains: intel.bad_domains.len() as u64,
            bad_ips: intel.bad_ips.len() as u64,
            bad_hashes: intel.bad_hashes.len() as u64,
            bad_urls: intel.bad_urls.len() as u64,
            protected_domains: intel.protected_domains.len() as u64,
            assets: intel.assets.len() as u64,
        }
    }
}

/// `GET /api/intel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntelSummary {
    /// The directory the lists are read from.
    pub dir: String,
    /// The list names `POST /api/intel/{list}` accepts.
    pub lists: Vec<String>,
    pub counts: IntelCounts,
}

/// `POST /api/intel/{list}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntelAddRequest {
    #[schema(min_items = 1)]
    pub indicators: Vec<Indicator>,
}

/// One indicator (or, for `assets`, `HOST=CRITICALITY`): one line of at most 2048 characters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^[^\\n\\r]*$", max_length = 2048)]
pub struct Indicator(pub String);

/// Indicators added to a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntelAdded {
    pub list: String,
    /// How many were new.
    pub added: u64,
    pub counts: IntelCounts,
}
