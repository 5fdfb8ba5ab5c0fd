//! The API against its own document, as an outside tool sees both: schemathesis (the
//! property-based API tester, from PyPI) generates requests from `GET /api/openapi.json` of a live
//! `tw-cli serve`, with every check (status codes, response shapes, schema-valid requests
//! accepted and schema-invalid ones refused, auth, ...). `scripts/schemathesis.sh` does the run;
//! `scripts/schemathesis.toml` names the few checks the document cannot support, and why.
//!
//! Without `st` installed the test says it skipped; `.ci/run` installs it and sets
//! `TW_TEST_REQUIRE_SCHEMATHESIS`, where a missing tool is a failure.

use crate::support::bin;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_api_agrees_with_its_document_under_schemathesis() {
    if Command::new("st").arg("--version").output().is_err() {
        let why = "schemathesis (`st`) is not installed: pip install schemathesis";
        assert!(
            std::env::var_os("TW_TEST_REQUIRE_SCHEMATHESIS").is_none(),
            "schemathesis required (TW_TEST_REQUIRE_SCHEMATHESIS) but {why}"
        );
        println!("schemathesis skipped: {why}");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts/schemathesis.sh")).arg(bin()).current_dir(&repo).output().expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // A run that tested nothing would also exit 0: every operation of the served document was
    // selected and tested.
    let after = |label: &str| text.split(label).nth(1).and_then(|t| t.split_whitespace().next()).map(str::to_string);
    let selected = after("Selected: ").unwrap_or_default();
    let (chosen, total) = selected.split_once('/').unwrap_or_default();
    assert!(!total.is_empty() && chosen == total, "operations selected: {selected}\n{text}");
    assert_eq!(after("Tested: ").as_deref(), Some(total), "operations tested:\n{text}");
}
