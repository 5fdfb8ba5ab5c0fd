//! The vendor fixtures, read the same way by the normalization and the playbook tests, so both
//! prove every fixture there is: the shared set in `shared/fixtures/vendors` and this crate's
//! own additions in `tests/core/fixtures` (shapes the shared set misses). A name may exist in
//! only one of the two folders.

use serde_json::Value;
use std::path::PathBuf;

fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vendors")
}

fn local_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/core/fixtures")
}

fn json_names(dir: PathBuf) -> Vec<String> {
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

/// The fixture `name` parsed as JSON; panics naming the file when it cannot be read or parsed.
pub fn load(name: &str) -> Value {
    let local = local_dir().join(name);
    let path = if local.exists() { local } else { shared_dir().join(name) };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The name of every JSON fixture in both folders, sorted, so a fixture added to either is
/// tested at once. Panics when a name is in both (one would hide the other).
pub fn all_fixture_names() -> Vec<String> {
    let shared = json_names(shared_dir());
    let local = json_names(local_dir());
    if let Some(dup) = local.iter().find(|n| shared.contains(n)) {
        panic!("fixture {dup} is both in shared/fixtures/vendors and in tests/core/fixtures");
    }
    let mut names: Vec<String> = shared.into_iter().chain(local).collect();
    names.sort();
    names
}
