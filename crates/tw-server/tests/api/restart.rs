//! A restart keeps sources, secrets and incidents; numbering continues.

use super::*;

#[tokio::test]
async fn restart_keeps_sources_secrets_and_incidents() {
    let given = "restart-secret-0123456";
    let app = TestApp::spawn().await;
    add(&app, "edr", given, json!({"severity_mapping": {"4": "critical"}})).await;
    let generated = app.add_source(json!({"source": "gen", "mode": "sync"})).await["secret"].as_str().unwrap().to_string();
    let (s, v) = app.deliver("edr", given, CROWDSTRIKE).await;
    let (id1, n1) = assert_accepted(s, &v);
    let (s, v) = app.deliver("gen", &generated, &generic_with_id("g-1")).await;
    let (_, n2) = assert_accepted(s, &v);
    let before = get_ok(&app, "/api/webhooks/edr").await;

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;

    let after = get_ok(&app, "/api/webhooks/edr").await;
    for k in ["secret_fingerprint", "created_at", "severity_mapping", "delivery_count"] {
        assert_eq!(after[k], before[k], "{k} survives a restart");
    }
    assert_eq!(get_ok(&app, "/api/webhooks").await["data"].as_array().unwrap().len(), 2);

    let inc = get_ok(&app, &format!("/api/incidents/{n1}")).await;
    assert_eq!(inc["id"], id1.as_str());
    assert_eq!(inc["severity"], "critical");
    assert_eq!(raw_bytes(&app, &id1).await, CROWDSTRIKE.as_bytes());

    // The old secrets still verify; the same alert is still a duplicate.
    let (s, v) = app.deliver("edr", given, CROWDSTRIKE).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["incident_id"], id1.as_str());
    let (s, v) = app.deliver("edr", given, &generic_with_id("after-restart")).await;
    let (_, n3) = assert_accepted(s, &v);
    let (s, v) = app.deliver("gen", &generated, &generic_with_id("g-2")).await;
    let (_, n4) = assert_accepted(s, &v);

    let seq = |n: &str| parse_number(&json!(n)).1;
    assert_eq!((seq(&n1), seq(&n2)), (1, 2));
    assert_eq!((seq(&n3), seq(&n4)), (3, 4), "numbering continues after a restart");
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 4);
}

#[tokio::test]
async fn numbers_are_never_reused_across_restarts() {
    let secret = "restart-secret-abcdefg";
    let mut dir = {
        let app = TestApp::spawn().await;
        add(&app, "edr", secret, json!({})).await;
        app.stop().await
    };
    for (round, expected) in (1..=3).enumerate() {
        let app = TestApp::spawn_in(dir, |_| {}).await;
        let (s, v) = app.deliver("edr", secret, &generic_with_id(&format!("round-{round}"))).await;
        let (_, n) = assert_accepted(s, &v);
        assert_eq!(n, format!("INC-{}-{expected:04}", year()));
        dir = app.stop().await;
    }
}
