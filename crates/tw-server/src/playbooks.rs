//! The playbooks a source or a run may name: the built-in ones shipped in the binary, and user
//! playbooks kept in the store (added through the API or loaded from `--playbooks-dir`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tw_core::triage::{PlaybookError, PreparedPlaybook, builtin, builtin_names, parse_playbook};
use tw_store::{Store, StoreError};

/// How long a parsed user playbook is trusted before it is read again (other processes may change it).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// A stored playbook as last read (or its absence), and when it was read.
type Cached = (Instant, Option<Arc<PreparedPlaybook>>);

/// Looks playbooks up by name.
pub struct PlaybookRegistry {
    store: Arc<dyn Store>,
    builtin: BTreeMap<String, Arc<PreparedPlaybook>>,
    cache: RwLock<HashMap<String, Cached>>,
}

/// A playbook, prepared to run (its conditions and templates parsed once, while it is cached),
/// and where it comes from.
pub struct Resolved {
    pub playbook: Arc<PreparedPlaybook>,
    pub builtin: bool,
}

impl PlaybookRegistry {
    pub fn new(store: Arc<dyn Store>) -> PlaybookRegistry {
        let builtin = builtin_names()
            .iter()
            .filter_map(|n| match builtin(n) {
                Some(p) => Some((n.to_string(), Arc::new(PreparedPlaybook::new(p)))),
                None => {
                    tracing::error!(target: "triage", playbook = n, "built-in playbook failed to load");
                    None
                }
            })
            .collect();
        PlaybookRegistry { store, builtin, cache: RwLock::new(HashMap::new()) }
    }

    /// True when `name` is a built-in playbook.
    pub fn is_builtin(&self, name: &str) -> bool {
        builtin_names().contains(&name)
    }

    /// The playbook named `name`, built-in first.
    pub async fn get(&self, name: &str) -> Result<Option<Resolved>, StoreError> {
        if let Some(p) = self.builtin.get(name) {
            return Ok(Some(Resolved { playbook: p.clone(), builtin: true }));
        }
        if let Some((at, p)) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(name)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(p.clone().map(|playbook| Resolved { playbook, builtin: false }));
        }
        let parsed = match self.store.get_playbook(name).await? {
            None => None,
            Some(stored) => match parse_playbook(&stored.yaml) {
                Ok(p) => Some(Arc::new(PreparedPlaybook::new(p))),
                Err(errors) => {
                    let msg = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    tracing::error!(target: "triage", playbook = name, errors = %msg, "stored playbook no longer parses");
                    None
                }
            },
        };
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), (Instant::now(), parsed.clone()));
        Ok(parsed.map(|playbook| Resolved { playbook, builtin: false }))
    }

    /// Every playbook name a source may use, sorted.
    pub async fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = builtin_names().iter().map(|s| s.to_string()).collect();
        names.extend(self.store.list_playbooks().await?.into_iter().map(|p| p.name));
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Forgets a cached playbook after this process changed it.
    pub fn invalidate(&self, name: &str) {
        self.cache.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Validates and stores every `*.yaml`/`*.yml` in `dir` (origin `dir`). A file that does not
    /// parse stops start-up with its errors.
    pub async fn load_dir(&self, dir: &Path) -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read playbooks dir: {e}", dir.display()))?;
        let mut paths: Vec<_> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml")).collect();
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let playbook = parse_playbook(&text).map_err(|errors| format_errors(&path.display().to_string(), &errors))?;
            if self.is_builtin(&playbook.name) {
                return Err(format!("{}: '{}' is a built-in playbook name; choose another name", path.display(), playbook.name));
            }
            self.store.put_playbook(&playbook.name, &text, "dir").await.map_err(|e| e.to_string())?;
            self.invalidate(&playbook.name);
            loaded.push(playbook.name);
        }
        Ok(loaded)
    }
}

/// Every error of a playbook, one per line, prefixed with where it came from.
pub fn format_errors(origin: &str, errors: &[PlaybookError]) -> String {
    errors.iter().map(|e| format!("{origin}: {e}")).collect::<Vec<_>>().join("\n")
}
