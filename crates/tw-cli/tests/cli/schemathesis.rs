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
        assert!(std::env::var_os("TW_TEST_REQUIRE_SCHEMATHESIS").is_none(), "schemathesis required (TW_TEST_REQUIRE_SCHEMATHESIS) but {why}");
        println!("schemathesis skipped: {why}");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts/schemathesis.sh")).arg(bin()).current_dir(&repo).output().expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // A run that tested nothing would also exit 0: every documented operation was tested.
    let tested = text.split("Tested: ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse::<usize>().ok());
    let documented = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(repo.join("docs/openapi.json")).unwrap())
        .unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(tested, Some(documented), "operations tested:\n{text}");
}
