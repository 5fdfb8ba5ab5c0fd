//! The playbook condition and template language: any text parses or is refused; what parses
//! evaluates and renders against an incident-shaped context without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tw_core::triage::expr::{parse_expr, parse_template};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let ctx = serde_json::json!({
        "incident": {
            "title": "Suspicious login", "severity": "high", "source": "email-gateway",
            "entities": [{"kind": "ip", "value": "203.0.113.7"}, {"kind": "domain", "value": "examp1e.com"}],
            "raw": {"data": {"alert_id": "a-1", "n": 3, "list": [1, 2, 3], "nested": {"deep": [{"x": null}]}}}
        },
        "variables": {"threshold": 5, "domains": ["example.com"]},
        "steps": {"check": {"matched": true, "count": 2}},
        "triage": {"score": 40, "verdict": "suspicious"}
    });
    if let Ok(expr) = parse_expr(src) {
        let _ = expr.eval(&ctx);
        let _ = expr.test(&ctx);
    }
    if let Ok(t) = parse_template(src) {
        let _ = t.render(&ctx);
    }
});
