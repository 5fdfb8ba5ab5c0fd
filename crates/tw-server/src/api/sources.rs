//! Sources: `POST/GET /api/webhooks`, `GET/PATCH/DELETE /api/webhooks/{source}`, rotation, test.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tw_core::formats::Mapping;
use tw_core::{Format, Severity, SourceMode};
use tw_store::SourceRecord;
use utoipa::ToSchema;

/// A source's format setting: a format, or `auto` (detected per payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FormatSetting {
    Auto(Auto),
    Format(Format),
}

/// `auto`: the format is detected per payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Auto {
    Auto,
}

impl From<Option<Format>> for FormatSetting {
    fn from(f: Option<Format>) -> Self {
        f.map_or(FormatSetting::Auto(Auto::Auto), FormatSetting::Format)
    }
}

impl FormatSetting {
    /// The format it pins, `None` for `auto`.
    pub fn format(self) -> Option<Format> {
        match self {
            FormatSetting::Auto(_) => None,
            FormatSetting::Format(f) => Some(f),
        }
    }
}

/// A source's rate limit: a token bucket of `burst` verified deliveries, refilled at
/// `per_second`. Over it the intake answers `429 rate_limited` with `Retry-After`. Counted per
/// server process: N instances behind a load balancer allow N times as much.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSetting {
    /// Deliveries added back each second (fractions allowed: 0.5 is one every two seconds).
    #[schema(minimum = 0.001, maximum = 1000000, example = 10)]
    pub per_second: f64,
    /// Deliveries allowed at once after a quiet period; when set without it, one second's worth.
    #[schema(minimum = 1, maximum = 1000000, example = 50, required = false)]
    pub burst: u32,
}

/// A verification scheme's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// The spec's: `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of "<X-Webhook-Timestamp>.<body>">`.
    Hmac,
    /// Standard Webhooks (Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`; `whsec_` secrets.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; no timestamp.
    Github,
    /// The named `header` holds the secret (`Authorization: Bearer <secret>` also accepted).
    HeaderToken,
    /// HTTP Basic, the secret as password, any user name.
    Basic,
    /// The secret as the URL's last segment: `POST /api/webhooks/{source}/{token}`.
    UrlToken,
}

/// A scheme named alone (every scheme but `header-token`, which needs its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    Hmac,
    StandardWebhooks,
    Github,
    Basic,
    UrlToken,
}

/// A verification scheme with its settings, as every source shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationView {
    pub scheme: Scheme,
    /// `header-token` only: the header that carries the token (shown lowercase).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "x-api-key", nullable = false, pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]
    pub header: Option<String>,
}

impl Scheme {
    /// The scheme's name as written in settings (`header-token`): the core's, one definition.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Hmac => tw_core::Verification::Hmac.scheme(),
            Scheme::StandardWebhooks => tw_core::Verification::StandardWebhooks.scheme(),
            Scheme::Github => tw_core::Verification::Github.scheme(),
            Scheme::HeaderToken => "header-token",
            Scheme::Basic => tw_core::Verification::Basic.scheme(),
            Scheme::UrlToken => tw_core::Verification::UrlToken.scheme(),
        }
    }
}

impl VerificationView {
    /// The scheme's name as written in settings (`header-token`).
    pub fn scheme_name(&self) -> &'static str {
        self.scheme.name()
    }

    /// The scheme with its header as people read it: `header-token (X-Api-Key)`, `hmac`.
    pub fn label(&self) -> String {
        match &self.header {
            Some(h) => format!("{} ({})", self.scheme_name(), crate::sources::header_display(h)),
            None => self.scheme_name().to_string(),
        }
    }

    /// The scheme as the core type that verifies and signs; `Err` when a `header-token` view has
    /// no valid header (an answer from another version).
    pub fn verification(&self) -> Result<tw_core::Verification, String> {
        use tw_core::Verification as V;
        Ok(match self.scheme {
            Scheme::Hmac => V::Hmac,
            Scheme::StandardWebhooks => V::StandardWebhooks,
            Scheme::Github => V::Github,
            Scheme::HeaderToken => {
                V::HeaderToken { header: tw_core::verification::HeaderName::parse(self.header.as_deref().unwrap_or_default())? }
            }
            Scheme::Basic => V::Basic,
            Scheme::UrlToken => V::UrlToken,
        })
    }
}

impl From<&tw_core::Verification> for VerificationView {
    fn from(v: &tw_core::Verification) -> Self {
        use tw_core::Verification as V;
        let (scheme, header) = match v {
            V::Hmac => (Scheme::Hmac, None),
            V::StandardWebhooks => (Scheme::StandardWebhooks, None),
            V::Github => (Scheme::Github, None),
            V::HeaderToken { header } => (Scheme::HeaderToken, Some(header.as_str().to_string())),
            V::Basic => (Scheme::Basic, None),
            V::UrlToken => (Scheme::UrlToken, None),
        };
        VerificationView { scheme, header }
    }
}

/// How deliveries prove they come from the source: a scheme's name, or the scheme with its
/// settings (`{"scheme": "header-token", "header": "X-Api-Key"}`). Default `hmac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerificationSetting {
    Name(SchemeName),
    Object(VerificationView),
}

/// A source as shown by the API: settings and statistics, never the secret itself (except
/// `secret`, once, on the answer that made it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    #[schema(example = "email-gateway")]
    pub source: String,
    pub enabled: bool,
    pub auto_triage: bool,
    #[schema(required = true)]
    pub playbook: Option<String>,
    pub format: FormatSetting,
    pub mode: SourceMode,
    /// Vendor severity value to our severity.
    pub severity_mapping: BTreeMap<String, Severity>,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: u64,
    /// Verified deliveries allowed (per server process); null: unlimited.
    #[schema(required = true)]
    pub rate_limit: Option<RateLimitSetting>,
    pub verification: VerificationView,
    /// Client addresses allowed to deliver; empty: any.
    #[schema(example = json!(["192.0.2.0/24"]))]
    pub allowed_ips: Vec<String>,
    /// Where the vendor keeps each alert field (JSON pointers); null: the format's own reading.
    #[schema(required = true)]
    pub mapping: Option<Mapping>,
    /// Defined in the config file: only changeable there.
    pub managed_by_config: bool,
    /// `hmac:` and the first 8 hex digits of an HMAC of the secret: tells two secrets apart
    /// without revealing either.
    #[schema(example = "hmac:1a2b3c4d")]
    pub secret_fingerprint: String,
    #[schema(required = true)]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the previous secret still verifies, after a rotation.
    #[schema(required = true)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub delivery_count: u64,
    pub error_count: u64,
    #[schema(example = "/api/webhooks/email-gateway")]
    pub webhook_path: String,
    /// The secret, returned once: by a create that generated it and by a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&SourceRecord> for SourceView {
    fn from(s: &SourceRecord) -> Self {
        let st = &s.settings;
        SourceView {
            source: s.name.to_string(),
            enabled: st.enabled,
            auto_triage: st.auto_triage,
            playbook: st.playbook.clone(),
            format: st.format.into(),
            mode: st.mode,
            severity_mapping: st.severity_mapping.clone(),
            timestamp_tolerance_secs: st.timestamp_tolerance_secs,
            max_body_bytes: st.max_body_bytes,
            rate_limit: st.rate_limit.map(|r| RateLimitSetting { per_second: r.per_second(), burst: r.burst() }),
            verification: (&st.verification).into(),
            allowed_ips: st.allowed_ips.iter().map(ToString::to_string).collect(),
            mapping: st.mapping.clone(),
            managed_by_config: s.managed_by_config,
            secret_fingerprint: s.secret_fingerprint.clone(),
            secret_rotated_at: s.secret_rotated_at,
            previous_secret_expires_at: s.previous_secret.as_ref().map(|(_, until)| *until),
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_delivery_at: s.last_delivery_at,
            delivery_count: s.delivery_count,
            error_count: s.error_count,
            webhook_path: format!("/api/webhooks/{}", s.name),
            secret: None,
        }
    }
}

/// `GET /api/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceList {
    pub data: Vec<SourceView>,
}

/// The settable fields of a source (`PATCH /api/webhooks/{source}`; with `source`, a create).
/// Booleans and numbers may also be sent as strings (`"true"`, `"300"`); unknown fields are
/// refused, every problem named in `details`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSettingsInput {
    /// The source's name: on a create, required; on an update, may be sent but must be unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "email-gateway", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    #[schema(nullable = false)]
    pub source: Option<String>,
    /// 8 to 512 characters (the spec's example `your-secret-key` is 15), in the form the source's `verification` needs (`standard-webhooks`:
    /// `whsec_` and base64; `header-token`, `basic`: visible ASCII; `url-token`: letters, digits,
    /// `-._~`); generated (and returned once) when omitted on create.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    /// Requires `playbook`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub auto_triage: Option<bool>,
    /// A playbook name; null or "" for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSetting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub mode: Option<SourceMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub severity_mapping: Option<BTreeMap<String, Severity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    #[schema(nullable = false)]
    pub timestamp_tolerance_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 67108864)]
    #[schema(nullable = false)]
    pub max_body_bytes: Option<u64>,
    /// A token bucket of verified deliveries; null removes the limit (the default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Option<RateLimitSetting>>,
    /// A change of scheme whose form the current secret does not have needs a new `secret` with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub verification: Option<VerificationSetting>,
    /// Addresses or CIDR ranges allowed to deliver (at most 64); null or [] for any. Behind a
    /// proxy, the client address is read from `X-Forwarded-For` only when the proxy is trusted
    /// (`--trusted-proxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 64, example = json!(["192.0.2.0/24", "2001:db8::/32"]))]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// Where a vendor without a built-in format keeps each alert field, as JSON pointers
    /// (`{"title": "/alert/name", "severity": "/alert/level", "alert_id": "/alert/uid",
    /// "entities": {"ip": ["/alert/src_ip"]}}`); mapped fields win over the generic reading, and
    /// the severity goes through `severity_mapping`. null removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Option<Mapping>>,
}

/// `POST /api/webhooks`: a new source: the settable fields, `source` required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CreateSource(pub SourceSettingsInput);

/// Written by hand: `allOf` of the settings (which refuse unknown fields) and `required: [source]`,
/// so the document has one list of fields for create and update.
impl utoipa::PartialSchema for CreateSource {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder};
        AllOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("SourceSettingsInput"))
            .item(ObjectBuilder::new().required("source"))
            .description(Some("A new source: the settable fields, with `source` required."))
            .into()
    }
}

impl ToSchema for CreateSource {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("SourceSettingsInput".into(), <SourceSettingsInput as utoipa::PartialSchema>::schema()));
        <SourceSettingsInput as ToSchema>::schemas(schemas);
    }
}

/// `POST /api/webhooks/{source}/rotate-secret`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
    /// How long the old secret keeps verifying (default 86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2592000)]
    #[schema(nullable = false)]
    pub grace_period_secs: Option<i64>,
}

/// One check of a server-side test delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceCheck {
    #[schema(example = "signature")]
    pub check: String,
    #[serde(flatten)]
    pub result: super::Check,
}

/// `POST /api/webhooks/{source}/test`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceTestResult {
    pub ok: bool,
    pub source: String,
    pub checks: Vec<SourceCheck>,
    pub secret_fingerprint: String,
}
