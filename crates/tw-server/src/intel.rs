//! Local threat intelligence: the files of `--intel-dir`, loaded into memory and reloaded when
//! they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tw_core::triage::intel::{ASSETS_FILE, LIST_FILES};
use tw_core::triage::{Asset, Criticality, Intel};

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// The current intelligence, swapped whole when the files change.
pub struct IntelStore {
    dir: PathBuf,
    current: RwLock<(Signature, Arc<Intel>)>,
}

/// What the files looked like when loaded: (name, length, modified) for each.
type Signature = Vec<(String, u64, Option<SystemTime>)>;

/// The list files' names without `.txt`, as the API and CLI name them.
pub fn list_names() -> Vec<&'static str> {
    LIST_FILES.iter().map(|f| f.trim_end_matches(".txt")).collect()
}

impl IntelStore {
    /// Loads `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<IntelStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create intel dir {}: {e}", dir.display()))?;
        let sig = signature(dir);
        let intel = load(dir)?;
        Ok(IntelStore { dir: dir.to_path_buf(), current: RwLock::new((sig, Arc::new(intel))) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The intelligence now.
    pub fn current(&self) -> Arc<Intel> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Reloads when a file changed; returns true when it did. A file that fails to parse keeps the
    /// previous intelligence (and is logged).
    pub fn reload_if_changed(&self) -> bool {
        let sig = signature(&self.dir);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == sig {
            return false;
        }
        match load(&self.dir) {
            Ok(intel) => {
                let counts = serde_json::to_string(&crate::api::intel::IntelCounts::from(&intel)).unwrap_or_default();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (sig, Arc::new(intel));
                tracing::info!(target: "triage", dir = %self.dir.display(), %counts, "intel reloaded");
                true
            }
            Err(e) => {
                tracing::error!(target: "triage", error = %e, "intel not reloaded");
                // Remember the signature so the same broken file is not re-read every poll.
                self.current.write().unwrap_or_else(|e| e.into_inner()).0 = sig;
                false
            }
        }
    }

    /// Appends indicators to a list file (skipping ones already there) and reloads.
    pub fn add(&self, list: &str, indicators: &[String]) -> Result<usize, String> {
        use std::io::Write;
        let file = format!("{list}.txt");
        if !LIST_FILES.contains(&file.as_str()) {
            return Err(format!("unknown list '{list}' (known: {})", list_names().join(", ")));
        }
        let path = self.dir.join(&file);
        let existing = std::fs::read_to_string(&path).map(|t| Intel::parse_list(&t)).unwrap_or_default();
        let new: Vec<String> = indicators
            .iter()
            .map(|i| i.trim().to_ascii_lowercase())
            .filter(|i| !i.is_empty() && !i.contains('#') && !existing.contains(i))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !new.is_empty() {
            let mut f =
                std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut text = String::new();
            for i in &new {
                text.push_str(i);
                text.push('\n');
            }
            f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.reload_if_changed();
        Ok(new.len())
    }

    /// Sets the criticality of hosts in `assets.yaml` (adding the ones not there yet) and reloads.
    /// The file is rewritten whole, sorted by host, so comments in it are not kept; owners and tags
    /// are. Returns how many entries changed. A file that does not parse is left alone (error).
    pub fn set_assets(&self, entries: &[(String, Criticality)]) -> Result<usize, String> {
        let path = self.dir.join(ASSETS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut assets = Intel::parse_assets(&text)?;
        let mut changed = 0;
        for (host, criticality) in entries {
            let host = host.trim().to_lowercase();
            match assets.get_mut(&host) {
                Some(a) if a.criticality == *criticality => {}
                Some(a) => {
                    a.criticality = *criticality;
                    changed += 1;
                }
                None => {
                    assets.insert(host, Asset { criticality: *criticality, owner: None, tags: vec![] });
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            let mut hosts: Vec<(&String, &Asset)> = assets.iter().collect();
            hosts.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = String::from(
                "# Asset inventory: host -> criticality (low, medium, high, critical), optional owner and tags.\n\
                 # Rewritten by `tw-cli intel add --list assets HOST=CRITICALITY`; edit freely (comments are not kept).\n\
                 assets:\n",
            );
            for (host, asset) in hosts {
                // JSON strings and objects are valid YAML flow scalars and mappings: no quoting rules to get wrong.
                let value = serde_json::to_string(asset).map_err(|e| e.to_string())?;
                let key = serde_json::to_string(host).map_err(|e| e.to_string())?;
                out.push_str(&format!("  {key}: {value}\n"));
            }
            let tmp = self.dir.join(format!(".{ASSETS_FILE}.tmp"));
            std::fs::write(&tmp, out).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.reload_if_changed();
        Ok(changed)
    }

    /// Runs the change poller until the process ends.
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }
}

fn signature(dir: &Path) -> Signature {
    LIST_FILES
        .iter()
        .chain(std::iter::once(&ASSETS_FILE))
        .map(|f| {
            let meta = std::fs::metadata(dir.join(f)).ok();
            (f.to_string(), meta.as_ref().map_or(0, |m| m.len()), meta.and_then(|m| m.modified().ok()))
        })
        .collect()
}

fn load(dir: &Path) -> Result<Intel, String> {
    let read = |f: &str| match std::fs::read_to_string(dir.join(f)) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: {e}", dir.join(f).display())),
    };
    let mut intel = Intel {
        bad_domains: Intel::parse_list(&read("bad-domains.txt")?),
        bad_ips: Intel::parse_list(&read("bad-ips.txt")?),
        bad_hashes: Intel::parse_list(&read("bad-hashes.txt")?),
        bad_urls: Intel::parse_list(&read("bad-urls.txt")?),
        protected_domains: Intel::parse_list(&read("protected-domains.txt")?).into_iter().collect(),
        assets: Default::default(),
    };
    intel.protected_domains.sort();
    let assets = read(ASSETS_FILE)?;
    if !assets.trim().is_empty() {
        intel.assets = Intel::parse_assets(&assets).map_err(|e| format!("{}: {e}", dir.join(ASSETS_FILE).display()))?;
    }
    Ok(intel)
}
