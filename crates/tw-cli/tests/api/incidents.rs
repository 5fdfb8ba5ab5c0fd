//! `GET /api/incidents` and `GET /api/incidents/:id`: filters, pagination, auth, not found.

use super::*;

const SECRET: &str = "incidents-secret-0123";

/// Two sources; five incidents: edr gets 3 (high, high, medium), siem gets 2 (medium, low).
async fn seeded() -> TestApp {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    add(&app, "siem", SECRET, json!({})).await;
    let sev = |id: &str, s: &str| {
        json!({"event_type": "security_alert", "data": {"alert_id": id, "severity": s, "details": {"title": id}}}).to_string()
    };
    for (src, body) in [
        ("edr", CROWDSTRIKE.to_string()),
        ("edr", sev("e2", "high")),
        ("edr", sev("e3", "medium")),
        ("siem", SPLUNK.to_string()),
        ("siem", sev("s2", "low")),
    ] {
        let (s, v) = app.deliver(src, SECRET, &body).await;
        assert_accepted(s, &v);
    }
    app
}

fn numbers(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|i| i["incident_number"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_with_meta_filters_and_pages() {
    let app = seeded().await;
    let all = get_ok(&app, "/api/incidents").await;
    assert_eq!(all["meta"], json!({"page": 1, "per_page": 50, "total": 5, "total_pages": 1}), "{all}");
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    let all_numbers = numbers(&all);
    let mut sorted = all_numbers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5);

    let edr = get_ok(&app, "/api/incidents?source=edr").await;
    assert_eq!(edr["meta"]["total"], 3, "{edr}");
    assert!(edr["data"].as_array().unwrap().iter().all(|i| i["source"] == "edr"));
    let siem = get_ok(&app, "/api/incidents?source=siem").await;
    assert_eq!(siem["meta"]["total"], 2);
    let none = get_ok(&app, "/api/incidents?source=nobody").await;
    assert_eq!(none["meta"]["total"], 0);
    assert_eq!(none["data"], json!([]));

    let high = get_ok(&app, "/api/incidents?severity=high").await;
    assert_eq!(high["meta"]["total"], 2, "{high}");
    assert!(high["data"].as_array().unwrap().iter().all(|i| i["severity"] == "high"));
    let medium_siem = get_ok(&app, "/api/incidents?severity=medium&source=siem").await;
    assert_eq!(medium_siem["meta"]["total"], 1, "{medium_siem}");
    assert_eq!(medium_siem["data"][0]["title"], "Failed Login Alert");

    let open = get_ok(&app, "/api/incidents?status=open").await;
    assert_eq!(open["meta"]["total"], 5);
    let closed = get_ok(&app, "/api/incidents?status=closed").await;
    assert_eq!(closed["meta"]["total"], 0);

    let p2 = get_ok(&app, "/api/incidents?per_page=2&page=2").await;
    assert_eq!(p2["meta"], json!({"page": 2, "per_page": 2, "total": 5, "total_pages": 3}), "{p2}");
    assert_eq!(numbers(&p2), all_numbers[2..4].to_vec(), "page 2 holds items 3 and 4 of the full list");
    let p3 = get_ok(&app, "/api/incidents?per_page=2&page=3").await;
    assert_eq!(numbers(&p3), all_numbers[4..5].to_vec());
    let p9 = get_ok(&app, "/api/incidents?per_page=2&page=9").await;
    assert_eq!(p9["data"], json!([]));
    assert_eq!(p9["meta"]["total"], 5);
}

#[tokio::test]
async fn bad_list_parameters_are_422() {
    let app = seeded().await;
    for (q, field) in [
        ("severity=bogus", "severity"),
        ("per_page=0", "per_page"),
        ("per_page=1000", "per_page"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("status=nope", "status"),
        ("source=Bad%20Name", "source"),
    ] {
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents?{q}"), None).await;
        assert_error(s, &v, 422, "validation_error");
        assert!(detail_fields(&v).iter().any(|f| f == field), "{q} -> {v}");
    }
}

#[tokio::test]
async fn incidents_need_a_key_and_read_is_enough() {
    let app = seeded().await;
    let (s, v) = app.with_key("", Method::GET, "/api/incidents", None).await;
    assert_error(s, &v, 401, "unauthorized");
    let (s, v) = app.with_key("tw_wrong", Method::GET, "/api/incidents", None).await;
    assert_error(s, &v, 401, "unauthorized");
    let first = get_ok(&app, "/api/incidents").await["data"][0].clone();
    let id = first["id"].as_str().unwrap();
    let (s, v) = app.with_key("", Method::GET, &format!("/api/incidents/{id}"), None).await;
    assert_error(s, &v, 401, "unauthorized");
    let (s, v) = app.with_key("", Method::GET, &format!("/api/incidents/{id}/raw"), None).await;
    assert_error(s, &v, 401, "unauthorized");

    let rk = app.read_key.clone();
    let (s, v) = app.with_key(&rk, Method::GET, "/api/incidents?per_page=2", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["meta"]["total"], 5);
    let (s, v) = app.with_key(&rk, Method::GET, &format!("/api/incidents/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], id);
}

#[tokio::test]
async fn unknown_incidents_are_404() {
    let app = seeded().await;
    for key in ["00000000-0000-4000-8000-000000000000", "INC-2020-9999", &format!("INC-{}-9999", year()), "not-an-id"] {
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents/{key}"), None).await;
        assert_error(s, &v, 404, "not_found");
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents/{key}/raw"), None).await;
        assert_error(s, &v, 404, "not_found");
    }
    // An unknown endpoint is a 404 in the same shape.
    let (s, v) = app.admin(Method::GET, "/api/nothing-here", None).await;
    assert_error(s, &v, 404, "not_found");
}
