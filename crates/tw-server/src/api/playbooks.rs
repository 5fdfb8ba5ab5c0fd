//! Playbooks: `GET/POST /api/playbooks`, `GET/PUT/DELETE /api/playbooks/{name}`, validate, test.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tw_core::Alert;
use tw_core::triage::Playbook;
use utoipa::ToSchema;

/// One step of a playbook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookStep {
    pub name: String,
    pub action: String,
    #[schema(required = true)]
    pub when: Option<String>,
    #[schema(required = true)]
    pub output: Option<String>,
}

/// Where a playbook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaybookOrigin {
    /// Compiled in.
    Builtin,
    /// Added through the API or CLI.
    Api,
    /// Loaded from `--playbooks-dir`.
    Dir,
}

impl PlaybookOrigin {
    /// The origin a stored playbook records (`api` or `dir`).
    pub fn of_stored(origin: &str) -> PlaybookOrigin {
        if origin == "dir" { PlaybookOrigin::Dir } else { PlaybookOrigin::Api }
    }
}

/// A playbook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookView {
    pub name: String,
    pub description: String,
    pub version: String,
    pub builtin: bool,
    pub origin: PlaybookOrigin,
    /// Default variables.
    #[schema(value_type = Object)]
    pub variables: Value,
    pub steps: Vec<PlaybookStep>,
    /// Sources that use it.
    pub used_by: Vec<String>,
    /// The YAML text (on a single playbook, not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
}

impl PlaybookView {
    /// A parsed playbook as shown, with the sources that use it and (for one playbook) its YAML.
    pub fn new(p: &Playbook, origin: PlaybookOrigin, yaml: Option<&str>, used_by: Vec<String>) -> PlaybookView {
        PlaybookView {
            name: p.name.clone(),
            description: p.description.clone(),
            version: p.version.clone(),
            builtin: origin == PlaybookOrigin::Builtin,
            origin,
            variables: serde_json::to_value(&p.variables).unwrap_or_default(),
            steps: p
                .steps
                .iter()
                .map(|s| PlaybookStep { name: s.name.clone(), action: s.action.clone(), when: s.when.clone(), output: s.output.clone() })
                .collect(),
            used_by,
            yaml: yaml.map(str::to_string),
        }
    }
}

/// A stored playbook that no longer parses (in lists only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BrokenPlaybook {
    pub name: String,
    pub builtin: bool,
    pub origin: PlaybookOrigin,
    #[schema(example = "no longer parses")]
    pub error: String,
}

/// An entry of the playbook list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PlaybookListEntry {
    Playbook(PlaybookView),
    Broken(BrokenPlaybook),
}

/// `GET /api/playbooks`: built-in playbooks first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookList {
    pub data: Vec<PlaybookListEntry>,
}

/// A playbook's YAML wrapped in JSON (the body may also be the YAML text itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookYaml {
    pub yaml: String,
}

/// `POST /api/playbooks/validate` when the playbook is valid.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookValidation {
    pub valid: bool,
    pub name: String,
    /// The number of steps.
    pub steps: u64,
}

/// `POST /api/playbooks/{name}/test`: run a playbook on a payload without storing anything.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookTestRequest {
    /// A vendor payload, normalized as the intake would.
    #[schema(value_type = Object)]
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<super::sources::FormatSetting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
    /// The source name the incident appears to come from (default `playbook-test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub source: Option<String>,
}

/// The result of a playbook test.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookTestResult {
    pub playbook: String,
    pub alert: Alert,
    /// The outcome: verdict, score, findings, recommended actions, trace.
    #[schema(value_type = Object)]
    pub triage: Value,
}
