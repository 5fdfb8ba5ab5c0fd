//! `GET /api/incidents` and `GET /api/incidents/:id`: filters, pages by number and by cursor,
//! auth, not found, the raw payload.

use super::*;

const SECRET: &str = "incidents-secret-0123";
/// The second source's own secret: the server refuses a secret another source uses.
const SIEM_SECRET: &str = "incidents-siem-secret-0123";

/// Two sources; five incidents: edr gets 3 (high, high, medium), siem gets 2 (medium, low).
/// Bodies in delivery order are [`seed_bodies`].
async fn seeded() -> TestApp {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    add(&app, "siem", SIEM_SECRET, json!({})).await;
    for (src, body) in seed_bodies() {
        let (s, v) = app.deliver(src, if src == "siem" { SIEM_SECRET } else { SECRET }, &body).await;
        assert_accepted(s, &v);
    }
    app
}

/// The deliveries of [`seeded`], in order: (source, body).
fn seed_bodies() -> [(&'static str, String); 5] {
    let sev = |id: &str, s: &str| {
        json!({"event_type": "security_alert", "data": {"alert_id": id, "severity": s, "details": {"title": id}}}).to_string()
    };
    [
        ("edr", CROWDSTRIKE.to_string()),
        ("edr", sev("e2", "high")),
        ("edr", sev("e3", "medium")),
        ("siem", SPLUNK.to_string()),
        ("siem", sev("s2", "low")),
    ]
}

/// Every page of `query` (which must not name a page), following `meta.next_cursor` from the
/// first page; checks each page's meta. Returns the incident numbers in order.
async fn walk(app: &TestApp, query: &str, per_page: u32) -> Vec<String> {
    let mut path = format!("/api/incidents?{query}&per_page={per_page}");
    let mut seen = Vec::new();
    let mut total = None;
    for pages in 1.. {
        let v = get_ok(app, &path).await;
        let m = &v["meta"];
        assert_eq!(m["per_page"], per_page, "{path}: {v}");
        assert_eq!(*total.get_or_insert(m["total"].clone()), m["total"], "{path}: the total changed");
        assert_eq!(m.get("page").is_some(), pages == 1, "only the first page, asked for without a cursor, has a number: {v}");
        let n = numbers(&v);
        assert!(n.len() <= per_page as usize, "{v}");
        seen.extend(n);
        match m["next_cursor"].as_str() {
            Some(c) => path = format!("/api/incidents?{query}&per_page={per_page}&cursor={c}"),
            None => {
                assert!(m["next_cursor"].is_null(), "{v}");
                break;
            }
        }
        assert!(pages < 100, "the cursor never ends: {v}");
    }
    assert_eq!(total.and_then(|t| t.as_u64()), Some(seen.len() as u64), "{query}: the total is what the pages hold");
    seen
}

/// Incident numbers newest first (year, then sequence).
fn newest_first(mut numbers: Vec<String>) -> Vec<String> {
    numbers.sort_by_key(|n| std::cmp::Reverse(parse_number(&json!(n))));
    numbers
}

fn numbers(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|i| i["incident_number"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_with_meta_filters_and_pages() {
    let app = seeded().await;
    let all = get_ok(&app, "/api/incidents").await;
    assert_eq!(all["meta"], json!({"page": 1, "per_page": 50, "total": 5, "total_pages": 1, "next_cursor": null}), "{all}");
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    let all_numbers = numbers(&all);
    let mut sorted = newest_first(all_numbers.clone());
    sorted.dedup();
    assert_eq!(sorted, all_numbers, "newest number first, each once");

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
    let cursor = p2["meta"]["next_cursor"].as_str().unwrap_or_else(|| panic!("page 2 of 3 has a next: {p2}")).to_string();
    assert_eq!(p2["meta"], json!({"page": 2, "per_page": 2, "total": 5, "total_pages": 3, "next_cursor": cursor}), "{p2}");
    assert_eq!(numbers(&p2), all_numbers[2..4].to_vec(), "page 2 holds items 3 and 4 of the full list");
    let p3 = get_ok(&app, "/api/incidents?per_page=2&page=3").await;
    assert_eq!(numbers(&p3), all_numbers[4..5].to_vec());
    assert_eq!(p3["meta"]["next_cursor"], Value::Null);
    // A page's cursor leads to the page after it, by number or not.
    let after_p2 = get_ok(&app, &format!("/api/incidents?per_page=2&cursor={cursor}")).await;
    assert_eq!(numbers(&after_p2), numbers(&p3));
    assert_eq!(after_p2["meta"], json!({"per_page": 2, "total": 5, "total_pages": 3, "next_cursor": null}), "{after_p2}");
    let p9 = get_ok(&app, "/api/incidents?per_page=2&page=9").await;
    assert_eq!(p9["data"], json!([]));
    assert_eq!(p9["meta"]["total"], 5);
    assert_eq!(p9["meta"]["next_cursor"], Value::Null);
}

#[tokio::test]
async fn cursors_walk_every_incident_once_with_and_without_filters() {
    let app = seeded().await;
    let all = numbers(&get_ok(&app, "/api/incidents").await);
    for per_page in [1, 2, 4, 5, 6] {
        assert_eq!(walk(&app, "", per_page).await, all, "per_page={per_page}");
    }
    let one_page = get_ok(&app, "/api/incidents?per_page=200").await;
    let filtered = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        newest_first(
            one_page["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| f(i))
                .map(|i| i["incident_number"].as_str().unwrap().to_string())
                .collect(),
        )
    };
    for (query, expected) in [
        ("source=edr", filtered(&|i| i["source"] == "edr")),
        ("source=siem", filtered(&|i| i["source"] == "siem")),
        ("severity=high", filtered(&|i| i["severity"] == "high")),
        ("severity=medium&source=siem", filtered(&|i| i["severity"] == "medium" && i["source"] == "siem")),
        ("status=open", all.clone()),
        ("status=triaged", vec![]),
        ("source=nobody", vec![]),
    ] {
        for per_page in [1, 2] {
            assert_eq!(walk(&app, query, per_page).await, expected, "{query} per_page={per_page}");
        }
    }
    // Incidents that arrive while a client pages do not shift the pages it has yet to read.
    let first = get_ok(&app, "/api/incidents?per_page=2").await;
    let cursor = first["meta"]["next_cursor"].as_str().unwrap().to_string();
    let (s, v) = app.deliver("edr", SECRET, &generic_with_id("late-1")).await;
    let (_, late) = assert_accepted(s, &v);
    let rest = get_ok(&app, &format!("/api/incidents?per_page=10&cursor={cursor}")).await;
    assert_eq!(numbers(&rest), all[2..].to_vec(), "{rest}");
    assert_eq!(rest["meta"]["total"], 6);
    assert_eq!(numbers(&get_ok(&app, "/api/incidents?per_page=1").await), [late], "the newest comes first");
}

#[tokio::test]
async fn a_bad_cursor_is_422() {
    let app = seeded().await;
    let cursor = get_ok(&app, "/api/incidents?per_page=1").await["meta"]["next_cursor"].as_str().unwrap().to_string();
    for (q, fields) in [
        ("cursor=bogus".to_string(), vec!["cursor"]),
        ("cursor=INC-2026-0001".to_string(), vec!["cursor"]),
        (format!("cursor={cursor}&page=2"), vec!["page"]),
        (format!("cursor={cursor}&per_page=0"), vec!["per_page"]),
        ("cursor=bogus&severity=nope".to_string(), vec!["severity", "cursor"]),
        // Long: nothing past the digits a cursor of this API has is read.
        (format!("cursor=2026-{}1", "0".repeat(100)), vec!["cursor"]),
        (format!("cursor=2026-{}", "9".repeat(100)), vec!["cursor"]),
    ] {
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents?{q}"), None).await;
        assert_error(s, &v, 422, "validation_error");
        assert_eq!(detail_fields(&v), fields, "{q} -> {v}");
    }
    // An empty parameter is refused, as the document says (leave it out instead), and so is a
    // repeated one.
    for q in ["cursor=", "source=", "severity=&per_page=1", "per_page=1&per_page=2"] {
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents?{q}"), None).await;
        assert_error(s, &v, 422, "validation_error");
        assert!(!detail_fields(&v).is_empty(), "{q} -> {v}");
    }
}

#[tokio::test]
async fn the_raw_route_and_the_detail_still_have_the_payload() {
    let app = seeded().await;
    let listed = get_ok(&app, "/api/incidents?per_page=10").await;
    for item in listed["data"].as_array().unwrap() {
        assert!(item.get("raw_payload").is_none(), "listings carry no payload: {item}");
    }
    // Oldest first, as delivered.
    let mut ids: Vec<(String, String)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i["incident_number"].as_str().unwrap().to_string()))
        .collect();
    ids.reverse();
    for ((id, number), (_, body)) in ids.iter().zip(seed_bodies()) {
        assert_eq!(raw_bytes(&app, id).await, body.as_bytes(), "{number}");
        assert_eq!(raw_bytes(&app, number).await, body.as_bytes(), "{number}");
        let detail = get_ok(&app, &format!("/api/incidents/{number}")).await;
        assert_eq!(detail["raw_payload"], serde_json::from_str::<Value>(&body).unwrap(), "{number}");
    }
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
        // Deep offsets are the cursor's: their cost grows with the depth.
        ("page=52&per_page=200", "page"),
        ("page=10002&per_page=1", "page"),
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

/// The numbers of `list` most severe first, newest first within a severity (`list` newest first).
fn most_severe_first(list: &Value) -> Vec<String> {
    let rank = |i: &&Value| ["critical", "high", "medium", "low", "info"].iter().position(|s| i["severity"] == *s).unwrap();
    let mut items: Vec<&Value> = list["data"].as_array().unwrap().iter().collect();
    items.sort_by_key(rank);
    items.iter().map(|i| i["incident_number"].as_str().unwrap().to_string()).collect()
}

/// `sort=oldest|severity`: every incident once in that order, by cursor and by page, with filters;
/// a cursor carries its sort and is refused with another.
#[tokio::test]
async fn sort_orders_the_list_and_its_cursors_keep_the_order() {
    let app = seeded().await;
    let everything = get_ok(&app, "/api/incidents?per_page=200").await;
    let newest = numbers(&everything);
    let oldest: Vec<String> = newest.iter().rev().cloned().collect();
    let by_severity = most_severe_first(&everything);
    assert_ne!(by_severity, newest, "the seed has severities out of number order");
    assert_eq!(numbers(&get_ok(&app, "/api/incidents?sort=newest").await), newest);
    let edr = most_severe_first(&get_ok(&app, "/api/incidents?per_page=200&source=edr").await);
    for per_page in [1, 2, 4, 5] {
        assert_eq!(walk(&app, "sort=newest", per_page).await, newest, "per_page={per_page}");
        assert_eq!(walk(&app, "sort=oldest", per_page).await, oldest, "per_page={per_page}");
        assert_eq!(walk(&app, "sort=severity", per_page).await, by_severity, "per_page={per_page}");
        assert_eq!(walk(&app, "sort=severity&source=edr", per_page).await, edr, "per_page={per_page}");
        assert_eq!(walk(&app, "sort=oldest&source=edr", per_page).await, edr_oldest(&app).await, "per_page={per_page}");
    }
    // Pages by number in every order.
    for (sort, expected) in [("oldest", &oldest), ("severity", &by_severity)] {
        for page in 1..=3 {
            let v = get_ok(&app, &format!("/api/incidents?sort={sort}&per_page=2&page={page}")).await;
            let from = (page - 1) * 2;
            assert_eq!(numbers(&v), expected[from..(from + 2).min(expected.len())].to_vec(), "{sort} page {page}: {v}");
        }
    }
    // The cursor says its order.
    let first = get_ok(&app, "/api/incidents?sort=severity&per_page=1").await;
    let cursor = first["meta"]["next_cursor"].as_str().unwrap().to_string();
    assert!(cursor.starts_with(&format!("{}-", first["data"][0]["severity"].as_str().unwrap())), "{cursor}");
    let old = get_ok(&app, "/api/incidents?sort=oldest&per_page=1").await["meta"]["next_cursor"].as_str().unwrap().to_string();
    assert!(old.starts_with("oldest-"), "{old}");
    let plain = get_ok(&app, "/api/incidents?per_page=1").await["meta"]["next_cursor"].as_str().unwrap().to_string();
    for (q, fields) in [
        (format!("cursor={cursor}"), vec!["cursor"]),
        (format!("sort=oldest&cursor={cursor}"), vec!["cursor"]),
        (format!("sort=severity&cursor={plain}"), vec!["cursor"]),
        (format!("cursor={old}"), vec!["cursor"]),
        ("sort=sideways".to_string(), vec!["sort"]),
        (format!("sort=sideways&cursor={old}"), vec!["sort"]),
        ("sort=severity&cursor=dire-2026-1".to_string(), vec!["cursor"]),
    ] {
        let (s, v) = app.admin(Method::GET, &format!("/api/incidents?{q}"), None).await;
        assert_error(s, &v, 422, "validation_error");
        assert_eq!(detail_fields(&v), fields, "{q} -> {v}");
    }
    let message = app.admin(Method::GET, &format!("/api/incidents?cursor={cursor}"), None).await.1.to_string();
    assert!(message.contains("sort=severity"), "says which sort the cursor belongs to: {message}");
}

async fn edr_oldest(app: &TestApp) -> Vec<String> {
    numbers(&get_ok(app, "/api/incidents?per_page=200&source=edr").await).into_iter().rev().collect()
}
