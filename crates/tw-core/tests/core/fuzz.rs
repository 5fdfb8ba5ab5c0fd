//! Runs every cargo-fuzz target in `fuzz/` (signature headers, format detection and the
//! normalizers, the condition and template language, playbook YAML) for a bounded time, seeded
//! from `fuzz/seeds/` (the spec's examples, the vendor fixtures, the built-in playbooks).
//!
//! Needs the nightly toolchain and `cargo-fuzz` (`.ci/run` installs cargo-fuzz when nightly is
//! there). Without them the test prints why it skipped and passes: fuzzing is a search, and the
//! crashes it found are pinned by ordinary regression tests next to the code they broke.
//! `TW_FUZZ_SECS` sets the time per target (default 30; `0` skips).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGETS: &[&str] = &["signature", "normalize", "expr", "playbook"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A cargo for the nightly toolchain, without what the outer `cargo test` set for itself.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        c.env_remove(var);
    }
    c
}

fn available() -> Result<(), String> {
    let ok = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok(nightly_cargo().arg("--version")) {
        return Err("no nightly toolchain (rustup toolchain install nightly)".into());
    }
    if !ok(nightly_cargo().args(["fuzz", "--version"])) {
        return Err("cargo-fuzz is not installed (cargo install cargo-fuzz)".into());
    }
    Ok(())
}

#[test]
fn every_fuzz_target_runs_clean_for_a_while() {
    let secs: u64 = std::env::var("TW_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    if secs == 0 {
        println!("fuzzing skipped: TW_FUZZ_SECS=0");
        return;
    }
    if let Err(why) = available() {
        // `.ci/run` sets TW_TEST_REQUIRE_FUZZ where it could install the tools: there a missing
        // tool is a failure, not a quiet skip.
        assert!(std::env::var_os("TW_TEST_REQUIRE_FUZZ").is_none(), "fuzzing required (TW_TEST_REQUIRE_FUZZ) but {why}");
        println!("fuzzing skipped: {why}");
        return;
    }
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    let work = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for target in TARGETS {
        // A fresh corpus per run, seeded; the seeds directory is read-only to libFuzzer.
        let corpus = work.path().join(target);
        std::fs::create_dir_all(&corpus).unwrap();
        let out = nightly_cargo()
            .current_dir(&root)
            .args(["fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .args(["-max_len=65536", "-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
            .output()
            .expect("cargo fuzz runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let runs = stderr.lines().find(|l| l.starts_with("stat::number_of_executed_units")).unwrap_or("").to_string();
        println!("fuzz target {target}: {} ({runs})", if out.status.success() { "clean" } else { "FAILED" });
        if !out.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
            failures.push(format!("{target}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
    }
    assert!(failures.is_empty(), "fuzzing found crashes (inputs under fuzz/artifacts/):\n{}", failures.join("\n\n"));
}
