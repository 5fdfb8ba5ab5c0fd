//! The playbook model, its YAML form and its validation.
//!
//! A playbook is YAML: `name`, `description`, `version`, `variables` (defaults, overridable per
//! run) and ordered `steps`, each with `name`, `action` (a built-in action, see
//! [`super::actions`]), `parameters`, an optional `when` condition and an optional `output`
//! name. Parameter values may hold templates (`{{ incident.title }}`, `{{ variables.x }}`,
//! `{{ steps.<output>.field }}`, `{{ triage.score }}`); see [`super::expr`] for the syntax.
//! The shipped playbooks (`playbooks/*.yaml`) are commented to teach the format.

use super::actions;
use super::expr::{self, Path};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashSet};

/// A playbook: ordered steps of built-in actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Playbook {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    /// Defaults, overridable per run (`{{ variables.x }}`).
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub action: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// One problem in a playbook, located by step and field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookError {
    pub step: Option<String>,
    pub field: String,
    pub message: String,
    pub line: Option<u64>,
}

impl std::fmt::Display for PlaybookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(step) = &self.step {
            write!(f, "step '{step}': ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The fields of a triage incident a template may read (`incident.<field>`).
pub const INCIDENT_FIELDS: &[&str] =
    &["id", "incident_number", "title", "description", "severity", "source", "format", "event_type", "external_id", "entities", "raw"];
/// The running triage state a template may read (`triage.<field>`).
pub const TRIAGE_FIELDS: &[&str] = &["score", "verdict", "severity", "findings", "recommendations"];

const TOP_KEYS: &[&str] = &["name", "description", "version", "variables", "steps"];
const STEP_KEYS: &[&str] = &["name", "action", "parameters", "when", "output"];

/// Longest playbook text accepted, in bytes.
pub const MAX_PLAYBOOK_BYTES: usize = 1024 * 1024;
/// Most steps in one playbook.
pub const MAX_STEPS: usize = 200;

impl Playbook {
    /// The playbook as YAML (comments are not kept).
    pub fn to_yaml(&self) -> Result<String, String> {
        serde_saphyr::to_string(self).map_err(|e| e.to_string())
    }
}

/// The text of a `when` condition: a bare expression, or one wrapped in `{{ }}`.
pub fn condition_source(when: &str) -> &str {
    let t = when.trim();
    match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner,
        _ => t,
    }
}

/// Whether `s` is a valid playbook name.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

// Line numbers come from a second, span-aware read of the same text (best effort: when the
// document is too malformed for it, errors simply carry no line).
#[derive(Deserialize)]
struct SpanDoc {
    name: Option<Spanned<IgnoredAny>>,
    version: Option<Spanned<IgnoredAny>>,
    variables: Option<Spanned<IgnoredAny>>,
    steps: Option<Spanned<Vec<Spanned<SpanStep>>>>,
}

#[derive(Deserialize)]
struct SpanStep {
    name: Option<Spanned<IgnoredAny>>,
    action: Option<Spanned<IgnoredAny>>,
    parameters: Option<Spanned<BTreeMap<String, Spanned<IgnoredAny>>>>,
    when: Option<Spanned<IgnoredAny>>,
    output: Option<Spanned<IgnoredAny>>,
}

fn line_of<T>(s: &Option<Spanned<T>>) -> Option<u64> {
    s.as_ref().map(|s| s.referenced.line()).filter(|l| *l > 0)
}

struct Lines(Option<SpanDoc>);

impl Lines {
    fn top(&self, field: &str) -> Option<u64> {
        let d = self.0.as_ref()?;
        match field {
            "name" => line_of(&d.name),
            "version" => line_of(&d.version),
            "variables" => line_of(&d.variables),
            "steps" => line_of(&d.steps),
            _ => None,
        }
    }

    fn step(&self, i: usize, field: &str) -> Option<u64> {
        let step = self.0.as_ref()?.steps.as_ref()?.value.get(i)?;
        let s = &step.value;
        let at = match field.split_once('.') {
            Some(("parameters", p)) => s.parameters.as_ref().and_then(|m| m.value.get(p)).map(|v| v.referenced.line()),
            _ => match field {
                "name" => line_of(&s.name),
                "action" => line_of(&s.action),
                "parameters" => line_of(&s.parameters),
                "when" => line_of(&s.when),
                "output" => line_of(&s.output),
                _ => None,
            },
        };
        at.filter(|l| *l > 0).or(Some(step.referenced.line()).filter(|l| *l > 0))
    }
}

struct Errors<'a> {
    list: Vec<PlaybookError>,
    lines: &'a Lines,
}

impl Errors<'_> {
    fn top(&mut self, field: &str, message: impl Into<String>) {
        let line = self.lines.top(field.split('.').next().unwrap_or(field));
        self.list.push(PlaybookError { step: None, field: field.into(), message: message.into(), line });
    }

    fn step(&mut self, i: usize, step: &str, field: &str, message: impl Into<String>) {
        let line = self.lines.step(i, field);
        let step = if step.is_empty() { format!("#{}", i + 1) } else { step.to_string() };
        self.list.push(PlaybookError { step: Some(step), field: field.into(), message: message.into(), line });
    }
}

/// What a template or condition may reference at one step.
struct Scope<'a> {
    variables: &'a BTreeMap<String, Value>,
    outputs: &'a [String],
}

impl Scope<'_> {
    fn check(&self, path: &Path) -> Result<(), String> {
        let second = path.second();
        match path.root() {
            "incident" => match second {
                Some(f) if !INCIDENT_FIELDS.contains(&f) => {
                    Err(format!("'{path}': incident has no field '{f}' (fields: {})", INCIDENT_FIELDS.join(", ")))
                }
                _ => Ok(()),
            },
            "variables" => match second {
                Some(v) if !self.variables.contains_key(v) => Err(format!("'{path}': variable '{v}' is not declared in `variables`")),
                _ => Ok(()),
            },
            "steps" => match second {
                Some(o) if !self.outputs.iter().any(|x| x == o) => Err(format!(
                    "'{path}': no earlier step has `output: {o}` (earlier outputs: {})",
                    if self.outputs.is_empty() { "none".to_string() } else { self.outputs.join(", ") }
                )),
                None => Err(format!("'{path}': name a step output, e.g. steps.<output>.<field>")),
                _ => Ok(()),
            },
            "triage" => match second {
                Some(f) if !TRIAGE_FIELDS.contains(&f) => {
                    Err(format!("'{path}': triage has no field '{f}' (fields: {})", TRIAGE_FIELDS.join(", ")))
                }
                _ => Ok(()),
            },
            other => Err(format!("unknown reference '{other}' (use incident.*, variables.*, steps.<output>.* or triage.*)")),
        }
    }
}

/// Literal strings in a parameter value longer than [`expr::MAX_LITERAL_BYTES`] (their size is
/// known now, so they are refused now rather than cut at every run).
fn size_problems(v: &Value) -> Vec<String> {
    fn go(v: &Value, out: &mut Vec<String>, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::String(s) => {
                let literal =
                    if expr::has_template(s) { expr::parse_template(s).map(|t| t.literal_len()).unwrap_or(s.len()) } else { s.len() };
                if literal > expr::MAX_LITERAL_BYTES {
                    out.push(format!("{literal} bytes of literal text in one value; at most {}", expr::MAX_LITERAL_BYTES));
                }
            }
            Value::Array(items) => items.iter().for_each(|i| go(i, out, depth + 1)),
            Value::Object(o) => o.values().for_each(|i| go(i, out, depth + 1)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    go(v, &mut out, 0);
    out
}

fn text_field(v: Option<&Value>) -> Option<Result<String, &'static str>> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Ok(s.clone())),
        Some(Value::Number(n)) => Some(Ok(n.to_string())),
        Some(Value::Bool(b)) => Some(Ok(b.to_string())),
        Some(_) => Some(Err("must be text")),
    }
}

/// Parses and validates a playbook, reporting every problem found.
pub fn parse_playbook(yaml: &str) -> Result<Playbook, Vec<PlaybookError>> {
    let fail = |message: String, line: Option<u64>| Err(vec![PlaybookError { step: None, field: "yaml".into(), message, line }]);
    if yaml.len() > MAX_PLAYBOOK_BYTES {
        return fail(format!("playbook larger than {MAX_PLAYBOOK_BYTES} bytes"), None);
    }
    let doc: Value = match serde_saphyr::from_str(yaml) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid YAML").to_string();
            return fail(first, e.location().map(|l| l.line()).filter(|l| *l > 0));
        }
    };
    let lines = Lines(serde_saphyr::from_str::<SpanDoc>(yaml).ok());
    let mut errs = Errors { list: Vec::new(), lines: &lines };
    let Value::Object(top) = doc else {
        return fail(format!("a playbook must be a mapping, got {}", crate::formats::json_type(&doc)), Some(1));
    };
    let pb = validate(&top, &mut errs);
    if errs.list.is_empty() { Ok(pb) } else { Err(errs.list) }
}

fn validate(top: &Map<String, Value>, errs: &mut Errors) -> Playbook {
    for k in top.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            errs.top(k, format!("unknown field (expected: {})", TOP_KEYS.join(", ")));
        }
    }
    let name = match top.get("name") {
        Some(Value::String(s)) if is_valid_name(s) => s.clone(),
        Some(Value::String(s)) => {
            errs.top("name", format!("'{s}' is not a valid name (1-64 of a-z, 0-9, '_', '-', starting with a letter or digit)"));
            s.clone()
        }
        Some(_) => {
            errs.top("name", "must be text");
            String::new()
        }
        None => {
            errs.top("name", "required");
            String::new()
        }
    };
    let description = match text_field(top.get("description")) {
        Some(Ok(s)) => s,
        Some(Err(m)) => {
            errs.top("description", m);
            String::new()
        }
        None => String::new(),
    };
    let version = match text_field(top.get("version")) {
        Some(Ok(s)) => s,
        Some(Err(m)) => {
            errs.top("version", m);
            String::new()
        }
        None => String::new(),
    };
    let variables: BTreeMap<String, Value> = match top.get("variables") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => {
            errs.top("variables", "must be a mapping of names to default values");
            BTreeMap::new()
        }
    };
    let raw_steps = match top.get("steps") {
        Some(Value::Array(a)) if a.is_empty() => {
            errs.top("steps", "a playbook needs at least one step");
            &[][..]
        }
        Some(Value::Array(a)) if a.len() > MAX_STEPS => {
            errs.top("steps", format!("at most {MAX_STEPS} steps"));
            &[][..]
        }
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) => {
            errs.top("steps", "required: a list of steps");
            &[][..]
        }
        Some(_) => {
            errs.top("steps", "must be a list of steps");
            &[][..]
        }
    };
    let mut steps = Vec::new();
    let mut names = HashSet::new();
    let mut outputs: Vec<String> = Vec::new();
    for (i, raw) in raw_steps.iter().enumerate() {
        let Value::Object(obj) = raw else {
            errs.step(i, "", "step", format!("must be a mapping with name and action, got {}", crate::formats::json_type(raw)));
            continue;
        };
        let step_name = match obj.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                errs.step(i, "", "name", "required: a non-empty text");
                String::new()
            }
        };
        if !step_name.is_empty() && !names.insert(step_name.clone()) {
            errs.step(i, &step_name, "name", "duplicate step name");
        }
        for k in obj.keys() {
            if !STEP_KEYS.contains(&k.as_str()) {
                errs.step(i, &step_name, k, format!("unknown field (expected: {})", STEP_KEYS.join(", ")));
            }
        }
        let action = match obj.get("action") {
            Some(Value::String(a)) => a.trim().to_string(),
            Some(_) => {
                errs.step(i, &step_name, "action", "must be text");
                String::new()
            }
            None => {
                errs.step(i, &step_name, "action", "required");
                String::new()
            }
        };
        let spec = actions::find(&action);
        if spec.is_none() && !action.is_empty() {
            errs.step(
                i,
                &step_name,
                "action",
                format!("unknown action '{action}' (built-in actions: {})", actions::action_names().join(", ")),
            );
        }
        let parameters: BTreeMap<String, Value> = match obj.get("parameters") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => {
                errs.step(i, &step_name, "parameters", "must be a mapping");
                BTreeMap::new()
            }
        };
        let scope = Scope { variables: &variables, outputs: &outputs };
        if let Some(spec) = spec {
            for (field, message) in actions::validate_params(spec, &parameters) {
                errs.step(i, &step_name, &format!("parameters.{field}"), message);
            }
        }
        for (pname, pvalue) in &parameters {
            let field = format!("parameters.{pname}");
            for message in size_problems(pvalue) {
                errs.step(i, &step_name, &field, message);
            }
            let templates = expr::templates_in(pvalue);
            // Counted over the whole value: a list of templates renders them all.
            let interpolations: usize = templates.iter().flatten().map(expr::Template::interpolations).sum();
            if interpolations > expr::MAX_INTERPOLATIONS {
                errs.step(
                    i,
                    &step_name,
                    &field,
                    format!("{interpolations} interpolations ({{{{ }}}}) in one parameter; at most {}", expr::MAX_INTERPOLATIONS),
                );
            }
            for t in templates {
                match t {
                    Err(e) => errs.step(i, &step_name, &field, format!("bad template: {e}")),
                    Ok(t) => {
                        for p in t.paths() {
                            if let Err(m) = scope.check(p) {
                                errs.step(i, &step_name, &field, m);
                            } else if expr::unbounded_path(p) {
                                errs.step(
                                    i,
                                    &step_name,
                                    &field,
                                    format!(
                                        "'{p}' copies the whole incident payload into the result (unbounded); read one field of it instead, e.g. incident.raw.subject"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        let when = match obj.get("when") {
            None | Some(Value::Null) => None,
            Some(Value::String(w)) => {
                match expr::parse_expr(condition_source(w)) {
                    Err(e) => errs.step(i, &step_name, "when", format!("bad condition: {e}")),
                    Ok(e) => {
                        for p in e.paths() {
                            if let Err(m) = scope.check(p) {
                                errs.step(i, &step_name, "when", m);
                            }
                        }
                    }
                }
                Some(w.clone())
            }
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(_) => {
                errs.step(i, &step_name, "when", "must be a condition (text)");
                None
            }
        };
        let output = match obj.get("output") {
            None | Some(Value::Null) => None,
            Some(Value::String(o)) if is_identifier(o) => {
                if outputs.contains(o) {
                    errs.step(i, &step_name, "output", format!("output '{o}' is already used by an earlier step"));
                } else {
                    outputs.push(o.clone());
                }
                Some(o.clone())
            }
            Some(other) => {
                errs.step(i, &step_name, "output", format!("must be an identifier (letters, digits, '_'), got {other}"));
                None
            }
        };
        steps.push(Step { name: step_name, action, parameters, when, output });
    }
    Playbook { name, description, version, variables, steps }
}

/// The names of the playbooks shipped in the binary.
pub fn builtin_names() -> &'static [&'static str] {
    &["phishing_triage", "malware_triage"]
}

/// The YAML text of a built-in playbook (with its comments), for `playbook export`.
pub fn builtin_yaml(name: &str) -> Option<&'static str> {
    match name {
        "phishing_triage" => Some(include_str!("../../playbooks/phishing_triage.yaml")),
        "malware_triage" => Some(include_str!("../../playbooks/malware_triage.yaml")),
        _ => None,
    }
}

/// A built-in playbook by name.
pub fn builtin(name: &str) -> Option<Playbook> {
    builtin_yaml(name).and_then(|text| parse_playbook(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<PlaybookError> {
        parse_playbook(yaml).expect_err("should be invalid")
    }

    #[test]
    fn builtins_parse() {
        for name in builtin_names() {
            let text = builtin_yaml(name).unwrap();
            let pb = parse_playbook(text).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
            assert_eq!(pb.name, *name);
            assert!(!pb.version.is_empty() && !pb.description.is_empty());
            assert_eq!(builtin(name).as_ref(), Some(&pb));
        }
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn minimal_playbook() {
        let pb = parse_playbook("name: tiny\nversion: 1.0\nsteps:\n  - name: s\n    action: score\n").unwrap();
        assert_eq!(pb.version, "1.0");
        assert_eq!(pb.steps[0].action, "score");
        let again = parse_playbook(&pb.to_yaml().unwrap()).unwrap();
        assert_eq!(again, pb);
    }

    #[test]
    fn every_error_is_reported_with_step_field_and_line() {
        let yaml = r#"name: Bad Name
color: red
variables:
  threshold: 50
steps:
  - name: first
    action: frobnicate
  - name: first
    action: recommend
    parameters:
      action: 5
      target: "{{ steps.later.hosts }}"
      extra: 1
    when: "triage.score > variables.missing and"
    output: "not valid"
  - action: score
    when: "bogus.path"
  - name: last
    action: check_urls
    parameters:
      urls: "{{ incident.titel }}"
    output: later
"#;
        let errs = errors(yaml);
        let has = |step: Option<&str>, field: &str, needle: &str| {
            errs.iter().any(|e| e.step.as_deref() == step && e.field == field && e.message.contains(needle))
        };
        assert!(has(None, "name", "not a valid name"), "{errs:#?}");
        assert!(has(None, "color", "unknown field"));
        assert!(has(Some("first"), "action", "unknown action 'frobnicate'"));
        assert!(has(Some("first"), "action", "check_sender"), "the message lists the actions");
        assert!(has(Some("first"), "name", "duplicate"));
        assert!(has(Some("first"), "parameters.action", "must be a string"));
        assert!(has(Some("first"), "parameters.reason", "required"));
        assert!(has(Some("first"), "parameters.extra", "unknown parameter"));
        assert!(has(Some("first"), "parameters.target", "no earlier step"));
        assert!(has(Some("first"), "when", "bad condition"));
        assert!(has(Some("first"), "output", "identifier"));
        assert!(has(Some("#3"), "name", "required"));
        assert!(has(Some("#3"), "when", "unknown reference 'bogus'"));
        assert!(has(Some("last"), "parameters.urls", "incident has no field 'titel'"));
        let line =
            |field: &str, step: Option<&str>| errs.iter().find(|e| e.field == field && e.step.as_deref() == step).and_then(|e| e.line);
        assert_eq!(line("name", None), Some(1));
        assert_eq!(line("color", None), None);
        assert_eq!(line("action", Some("first")), Some(7));
        assert_eq!(line("parameters.extra", Some("first")), Some(13));
        assert_eq!(line("when", Some("first")), Some(14));
        let shown = errs.iter().find(|e| e.field == "parameters.extra").unwrap().to_string();
        assert_eq!(
            shown,
            "line 13: step 'first': parameters.extra: unknown parameter for action 'recommend' (expected: action, reason, target)"
        );
    }

    #[test]
    fn references_must_be_declared_and_earlier() {
        let ok = "name: ok\nvariables: {w: {a: 1}}\nsteps:\n  - name: a\n    action: extract_indicators\n    output: ind\n  - name: b\n    action: check_urls\n    parameters: {urls: '{{ steps.ind.urls }}'}\n    when: \"{{ variables.w.a > 0 and triage.score == 0 }}\"\n";
        parse_playbook(ok).unwrap();
        let errs = errors(
            "name: x\nsteps:\n  - name: a\n    action: check_urls\n    parameters: {urls: '{{ steps.ind.urls }}'}\n  - name: b\n    action: extract_indicators\n    output: ind\n",
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].field, "parameters.urls");
    }

    #[test]
    fn unbounded_output_is_refused_before_any_run() {
        let reason = "{{ incident.raw }}".repeat(200);
        let errs = errors(&format!(
            "name: amp\nsteps:\n  - name: r\n    action: recommend\n    parameters: {{action: x, reason: \"{reason}\"}}\n"
        ));
        let has = |needle: &str| errs.iter().any(|e| e.field == "parameters.reason" && e.message.contains(needle));
        assert!(has("200 interpolations"), "{errs:#?}");
        assert!(has("copies the whole incident payload"), "{errs:#?}");
        for whole in ["{{ incident.raw }}", "{{ incident }}", "see {{ incident.raw }}"] {
            let errs = errors(&format!(
                "name: amp\nsteps:\n  - name: r\n    action: recommend\n    parameters: {{action: x, reason: \"{whole}\"}}\n"
            ));
            assert!(errs.iter().any(|e| e.message.contains("unbounded")), "{whole}: {errs:#?}");
        }
        // Spread over a list, the interpolations still add up.
        let list = vec!["{{ incident.title }}"; 17].join("\", \"");
        let errs = errors(&format!("name: amp\nsteps:\n  - name: r\n    action: check_text\n    parameters: {{texts: [\"{list}\"]}}\n"));
        assert!(errs.iter().any(|e| e.message.contains("17 interpolations")), "{errs:#?}");
        let long = "y".repeat(expr::MAX_LITERAL_BYTES + 1);
        let errs = errors(&format!(
            "name: amp\nsteps:\n  - name: r\n    action: recommend\n    parameters: {{action: x, reason: \"{long} {{{{ triage.score }}}}\"}}\n"
        ));
        assert!(errs.iter().any(|e| e.message.contains("bytes of literal text")), "{errs:#?}");
        // A field of the raw payload is fine (cut at run time like any text).
        parse_playbook("name: ok\nsteps:\n  - name: r\n    action: recommend\n    parameters: {action: x, reason: \"{{ incident.raw.subject }} {{ incident.raw['a b'] }}\"}\n").unwrap();
    }

    #[test]
    fn structural_problems() {
        assert_eq!(errors("")[0].field, "yaml");
        assert!(errors("name: x\nsteps: []\n").iter().any(|e| e.field == "steps"));
        assert!(errors("name: x\n").iter().any(|e| e.field == "steps"));
        assert!(errors("- a\n- b\n")[0].message.contains("mapping"));
        assert!(errors("name: x\nsteps:\n  - 5\n").iter().any(|e| e.field == "step"));
        let bad = errors("name: x\nname: y\nsteps: [{name: a, action: score}]\n");
        assert_eq!(bad[0].field, "yaml");
        assert!(errors("name: [unclosed\n")[0].line.is_some());
    }
}
