//! Payloads and files more than one test binary sends, so they prove the same inputs.

use std::path::PathBuf;

/// The credential-harvesting URL of [`phish`].
pub const PHISH_URL: &str = "http://examp1e-login.top/verify/account";

/// A look-alike-domain phish (examp1e.com vs a protected example.com) with a credential URL: the
/// payload tw-core's playbook tests prove malicious.
pub fn phish(alert_id: &str) -> String {
    serde_json::json!({
        "event_type": "email_threat",
        "timestamp": "2024-06-10T15:01:12Z",
        "source": "email-gateway",
        "data": {
            "alert_id": alert_id,
            "severity": "medium",
            "details": {
                "title": "User-reported message",
                "sender": "it-support@examp1e.com",
                "recipients": ["jdoe@example.com"],
                "subject": "Action required: verify your account within 24 hours",
                "urls": [PHISH_URL],
                "sender_ip": "198.51.100.77"
            }
        }
    })
    .to_string()
}

/// The shared CrowdStrike fixture with a critical detection on FS-02.
pub fn crowdstrike_fixture() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vendors/crowdstrike-detection-summary-critical.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The spec's example `webhook_config.yaml`, its secrets read from the variables named
/// `email_var` and `edr_var` (tests running at once each name their own).
pub fn spec_config(email_var: &str, edr_var: &str) -> String {
    format!(
        r#"# webhook_config.yaml
sources:
  email-gateway:
    secret: "${{{email_var}}}"
    auto_triage: true
    playbook: phishing_triage
    severity_mapping:
      critical: critical
      high: high
      medium: medium
      low: low

  edr:
    secret: "${{{edr_var}}}"
    auto_triage: true
    playbook: malware_triage
"#
    )
}
