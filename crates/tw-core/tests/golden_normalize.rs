//! Golden files: every vendor fixture (`shared/fixtures/vendors`) and every bench payload
//! (`benches/data`) normalized, serialized with serde_json and compared byte for byte with a
//! committed file in `tests/golden/`. The files were written by the normalizers before the
//! performance work of issue 8, so any change in their output (an entity, a role, its order, a
//! title) fails here, not only the values the other tests pick out.
//!
//! Each golden file holds the alert with the format detected, and the alert with each other
//! format pinned (a source's `format` setting), so every normalizer runs on every payload.
//!
//! After an intended change of output, rewrite the files with
//! `TW_UPDATE_GOLDEN=1 cargo test -p tw-core --test golden_normalize` and review the diff.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tw_core::{Format, normalize};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared fixture set, where `vendor_fixtures.rs` reads it too.
fn fixtures_dir() -> PathBuf {
    manifest_dir().join("../../../shared/fixtures/vendors")
}

fn golden_dir(set: &str) -> PathBuf {
    manifest_dir().join("tests/golden").join(set)
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// What one payload normalizes to: the detected format's alert, then every other format pinned.
fn normalized(payload: &Value) -> String {
    let mapping = BTreeMap::new();
    let detected = normalize(payload, None, &mapping).expect("fixtures are objects");
    let mut pinned = Map::new();
    for f in Format::ALL.into_iter().filter(|f| *f != detected.format) {
        let alert = normalize(payload, Some(f), &mapping).expect("fixtures are objects");
        pinned.insert(f.as_str().to_string(), serde_json::to_value(alert).expect("alerts serialize"));
    }
    let doc = serde_json::json!({ "detected": detected, "pinned": pinned });
    serde_json::to_string_pretty(&doc).expect("alerts serialize") + "\n"
}

/// Compares every payload in `inputs` with its golden file in `tests/golden/<set>/` (or writes
/// the files when `TW_UPDATE_GOLDEN` is set). A golden file without a payload fails too.
fn check_set(set: &str, inputs: &Path) {
    let update = std::env::var_os("TW_UPDATE_GOLDEN").is_some();
    let dir = golden_dir(set);
    if update {
        std::fs::create_dir_all(&dir).expect("golden dir");
    }
    let files = json_files(inputs);
    assert!(!files.is_empty(), "no payloads in {}", inputs.display());
    let mut failures = Vec::new();
    for input in &files {
        let name = input.file_name().expect("file name");
        let text = std::fs::read_to_string(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let payload: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let got = normalized(&payload);
        let golden = dir.join(name);
        if update {
            std::fs::write(&golden, &got).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!("{}: differs from {}\n{}", input.display(), golden.display(), first_difference(&want, &got))),
            Err(e) => failures.push(format!("{}: {e} (run with TW_UPDATE_GOLDEN=1 to write it)", golden.display())),
        }
    }
    if !update {
        let names: Vec<_> = files.iter().filter_map(|p| p.file_name()).collect();
        for golden in json_files(&dir) {
            if !golden.file_name().is_some_and(|n| names.contains(&n)) {
                failures.push(format!("{}: no payload of that name in {}", golden.display(), inputs.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} golden mismatch(es):\n{}", failures.len(), failures.join("\n"));
}

/// The first line that differs, with its line number, so a failure says where to look.
fn first_difference(want: &str, got: &str) -> String {
    let mut w = want.lines();
    let mut g = got.lines();
    for n in 1.. {
        match (w.next(), g.next()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return "  (same lines, different line endings)".to_string(),
            (a, b) => return format!("  line {n}:\n    golden: {}\n    now:    {}", a.unwrap_or("<end>"), b.unwrap_or("<end>")),
        }
    }
    unreachable!()
}

#[test]
fn vendor_fixtures_match_their_golden_files() {
    let dir = fixtures_dir();
    assert!(dir.is_dir(), "the shared vendor fixtures are expected at {}", dir.display());
    check_set("vendors", &dir);
}

#[test]
fn bench_payloads_match_their_golden_files() {
    check_set("bench-data", &manifest_dir().join("benches/data"));
}
