//! Local threat intelligence: indicator lists and the asset inventory, parsed from text.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// How much an asset matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

/// One host in the asset inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub criticality: Criticality,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Everything the playbooks look indicators up in. Lookups are hash lookups (constant time).
#[derive(Debug, Clone, Default)]
pub struct Intel {
    pub bad_domains: HashSet<String>,
    pub bad_ips: HashSet<String>,
    pub bad_hashes: HashSet<String>,
    pub bad_urls: HashSet<String>,
    /// The organization's own domains, protected against look-alikes.
    pub protected_domains: Vec<String>,
    /// Hostname (lowercase) -> asset.
    pub assets: HashMap<String, Asset>,
}

/// The list files an intel dir holds, and the field each fills.
pub const LIST_FILES: &[&str] = &["bad-domains.txt", "bad-ips.txt", "bad-hashes.txt", "bad-urls.txt", "protected-domains.txt"];
/// The asset inventory file.
pub const ASSETS_FILE: &str = "assets.yaml";

impl Intel {
    /// Parses a list file: one indicator a line, `#` comments, blank lines ignored, lowercased
    /// (Unicode too: lookups compare lowercase Unicode domain names, `BÖSE.example` included).
    pub fn parse_list(text: &str) -> HashSet<String> {
        text.lines().map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase()).filter(|l| !l.is_empty()).collect()
    }

    /// Parses `assets.yaml`: a mapping of host name to `{criticality, owner?, tags?}` (or just a
    /// criticality word), under a top-level `assets:` key or at the top level. Host names are
    /// lowercased. An empty file is an empty inventory; every bad entry is reported.
    pub fn parse_assets(text: &str) -> Result<HashMap<String, Asset>, String> {
        if text.trim().is_empty() {
            return Ok(HashMap::new());
        }
        let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or("invalid YAML").to_string();
            match e.location() {
                Some(l) if l.line() > 0 => format!("{ASSETS_FILE}: line {}: {first}", l.line()),
                _ => format!("{ASSETS_FILE}: {first}"),
            }
        })?;
        let map = match &doc {
            Value::Null => return Ok(HashMap::new()),
            Value::Object(o) => match o.get("assets") {
                Some(Value::Object(inner)) if o.len() == 1 => inner,
                Some(Value::Null) if o.len() == 1 => return Ok(HashMap::new()),
                _ => o,
            },
            other => return Err(format!("{ASSETS_FILE}: expected a mapping of host names, got {}", crate::formats::json_type(other))),
        };
        let mut assets = HashMap::with_capacity(map.len());
        let mut errors = Vec::new();
        for (host, v) in map {
            let asset = match v {
                Value::String(word) => serde_json::from_value::<Criticality>(Value::String(word.trim().to_ascii_lowercase()))
                    .map(|criticality| Asset { criticality, owner: None, tags: vec![] })
                    .map_err(|_| format!("unknown criticality '{word}'")),
                Value::Object(o) => {
                    let mut o = o.clone();
                    if let Some(Value::String(c)) = o.get_mut("criticality") {
                        *c = c.trim().to_ascii_lowercase();
                    }
                    serde_json::from_value::<Asset>(Value::Object(o)).map_err(|e| e.to_string())
                }
                other => Err(format!("expected {{criticality: low|medium|high|critical}}, got {}", crate::formats::json_type(other))),
            };
            match asset {
                Ok(a) => {
                    assets.insert(host.trim().to_lowercase(), a);
                }
                Err(e) => errors.push(format!("{host}: {e}")),
            }
        }
        if errors.is_empty() { Ok(assets) } else { Err(format!("{ASSETS_FILE}: {}", errors.join("; "))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_under_a_key_or_at_the_top() {
        let a = Intel::parse_assets(
            "assets:\n  WORKSTATION-01: {criticality: high, owner: finance}\n  dc01.corp.example: {criticality: Critical}\n",
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a["workstation-01"].criticality, Criticality::High);
        assert_eq!(a["workstation-01"].owner.as_deref(), Some("finance"));
        assert_eq!(a["dc01.corp.example"].criticality, Criticality::Critical);
        let b = Intel::parse_assets("# inventory\nFS-02:\n  criticality: critical\n  tags: [files, finance]\nkiosk: low\n").unwrap();
        assert_eq!(b["fs-02"].tags, ["files", "finance"]);
        assert_eq!(b["kiosk"].criticality, Criticality::Low);
        assert!(Intel::parse_assets("").unwrap().is_empty());
        assert!(Intel::parse_assets("# nothing yet\n").unwrap().is_empty());
        assert!(Intel::parse_assets("assets:\n").unwrap().is_empty());
    }

    #[test]
    fn bad_assets_are_reported() {
        let e = Intel::parse_assets("a: {criticality: extreme}\nb: 5\nc: high\n").unwrap_err();
        assert!(e.contains("a:") && e.contains("b:") && !e.contains("c:"), "{e}");
        assert!(Intel::parse_assets("- a\n").is_err());
        assert!(Intel::parse_assets("a: [unclosed\n").unwrap_err().contains("line"));
    }

    #[test]
    fn lists_skip_comments_and_blanks() {
        let l = Intel::parse_list("# bad domains\nEvil.Example\n\n  bad.example  # seen 2024\n#x\n");
        assert_eq!(l.len(), 2);
        assert!(l.contains("evil.example") && l.contains("bad.example"));
    }
}
