//! Triage: playbooks (YAML), local threat intelligence, and the engine that runs a playbook over
//! an incident. Pure and deterministic: the same incident, playbook and intel give the same
//! verdict, score, findings and recommendations.

pub mod actions;
pub mod engine;
pub mod expr;
pub mod intel;
pub mod playbook;

pub use actions::action_names;
pub use engine::{Finding, PreparedPlaybook, Recommendation, TraceStep, TriageError, TriageIncident, TriageOutcome, Verdict, run};
pub use intel::{Asset, Criticality, Intel};
pub use playbook::{Playbook, PlaybookError, Step, builtin, builtin_names, builtin_yaml, parse_playbook};
