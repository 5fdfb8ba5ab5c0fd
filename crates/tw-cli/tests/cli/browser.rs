//! The operator console in a real browser: Debian's `chromium` driven by Playwright's core
//! library (`playwright-core` from npm, in `scripts/browser/`), against the real `tw-cli serve`.
//! `scripts/browser/console.mjs` holds the steps (sign in, add a source and see its secret once,
//! a signed delivery counted, auto-triage turned on from the settings page, a delivery's normalized
//! alert, the incidents sorted by severity, a test event, rotation, sign-out, a read key without controls and
//! its forged POST refused, the CSRF token required, no CSP violation) and writes a screenshot of
//! every page to `target/console-screenshots/` (or `TW_SCREENSHOT_DIR`).
//!
//! Without chromium, node or playwright-core the test says it skipped; `.ci/run` installs them and
//! sets `TW_TEST_REQUIRE_BROWSER`, where a missing one is a failure.

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_console_works_in_a_real_browser() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !std::path::Path::new(&chromium).exists() {
        Some(format!("no chromium at {chromium} (apt-get install chromium)"))
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("node is not installed".to_string())
    } else if !repo.join("scripts/browser/node_modules/playwright-core").exists() {
        Some("playwright-core is not installed (cd scripts/browser && npm install)".to_string())
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(std::env::var_os("TW_TEST_REQUIRE_BROWSER").is_none(), "browser tests required (TW_TEST_REQUIRE_BROWSER) but {why}");
        println!("console browser tests skipped: {why}");
        return;
    }
    let (_tmp, data) = workdir();
    let admin = new_key(&data, "admin");
    let read = new_key(&data, "read");
    let server = ServerProcess::start(&data, &[], &[]);
    let shots = std::env::var("TW_SCREENSHOT_DIR").map(PathBuf::from).unwrap_or_else(|_| repo.join("target/console-screenshots"));
    // Only this run's screenshots count below.
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(repo.join("scripts/browser/console.mjs"))
        .args([&server.url, &admin, &read])
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    assert!(out.status.success(), "{}\nserver log:\n{}", show(&out), server.log());
    for page in [
        "01-sign-in",
        "04-sources-empty",
        "06-source-added-secret-once",
        "07b-source-settings",
        "08h-incidents-by-severity",
        "09-secret-rotated",
        "10-sources-read-key",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "no screenshot of {page} in {}", shots.display());
    }
}
