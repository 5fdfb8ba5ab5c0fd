//! A full disk: deliveries answer 503 with Retry-After (never 2xx, never 500), `/api/ready` turns
//! 503 naming the cause, the `store_writable` gauge says 0, and the server recovers by itself
//! when space returns. On a small tmpfs mounted for the test (skipped, with a line saying so,
//! where mounting is not allowed).
use crate::support::*;
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of a few megabytes, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
    _holder: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let holder = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = holder.path().join("disk");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(SmallDisk { mount, _holder: holder })
    }

    /// Fills the disk with a file (written until the filesystem refuses).
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn alert(i: usize) -> String {
    // A few KB each, so a handful of pages fill whatever the filler left.
    json!({"event_type": "security_alert", "timestamp": "2026-01-15T10:00:00Z", "source": "disk-test",
        "data": {"alert_id": format!("disk-{i}"), "severity": "high", "details": {"title": "x".repeat(4000)}}})
    .to_string()
}

async fn ready(app: &TestApp) -> (reqwest::StatusCode, serde_json::Value) {
    app.with_key("", Method::GET, "/api/ready", None).await
}

#[tokio::test]
async fn a_full_disk_answers_503_says_so_in_ready_and_recovers_by_itself() {
    if tw_store::testing::engine_is_postgres() {
        println!("disk-full test skipped on PostgreSQL: it fills a filesystem the test mounts for SQLite");
        return;
    }
    let disk = match SmallDisk::mount("24m") {
        Ok(d) => d,
        Err(why) => {
            // `.ci/run` sets TW_TEST_REQUIRE_TMPFS when it runs as root: there this must run.
            assert!(std::env::var_os("TW_TEST_REQUIRE_TMPFS").is_none(), "the disk-full test is required but cannot mount: {why}");
            println!("disk-full test skipped: cannot mount a small filesystem here ({why})");
            return;
        }
    };
    let data: &Path = &disk.mount;
    let data = data.join("data");
    let app = TestApp::spawn_with(|cfg| cfg.data_dir = data.clone()).await;
    let secret = "0123456789abcdef0123456789abcdef";
    app.add_source(json!({"source": "disk-test", "secret": secret})).await;
    let (status, v) = app.deliver("disk-test", secret, &alert(0)).await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = ready(&app).await;
    assert_eq!(status, 200);

    let filler = disk.fill();
    // Until the store notices, some writes may still fit in space SQLite already holds; after
    // that, every delivery is refused with 503 and Retry-After: never acknowledged, never 500.
    let mut refused = None;
    for i in 1..400 {
        let resp = post_raw(&app, "disk-test", secret, &alert(i)).await;
        let status = resp.status().as_u16();
        assert!(status == 201 || status == 503, "a delivery on a full disk answered {status}");
        if status == 503 {
            assert!(resp.headers().get("retry-after").is_some(), "503 without Retry-After");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            refused = Some(i);
            break;
        }
    }
    let first_refused = refused.expect("the full disk never refused a delivery");
    let (status, v) = ready(&app).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["store_writes"]["ok"], false, "{v}");
    let why = v["checks"]["store_writes"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("full"), "the readiness check should name the cause: {v}");
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("store_writable 0"), "{metrics}");
    // It stays so while the disk is full, though the idle workers' claims keep committing
    // (changing nothing) and the probe keeps trying.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, v) = ready(&app).await;
        assert_eq!(status, 503, "ready while the disk is still full: {v}");
    }

    // Space returns: without any delivery, the probe notices and ready turns 200 again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, v) = ready(&app).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready after space returned: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(app.metrics_text().await.contains("store_writable 1"));
    let (status, v) = app.deliver("disk-test", secret, &alert(first_refused)).await;
    assert_eq!(status, 201, "the refused alert is accepted once space returns: {v}");
    // Nothing acknowledged was lost: every 201 is an incident.
    let (_, list) = app.admin(Method::GET, "/api/incidents?per_page=200", None).await;
    // Alerts 0..first_refused were acknowledged before the disk filled, then the retried one.
    assert_eq!(list["meta"]["total"], first_refused + 1, "{list}");
    app.stop().await;
}

async fn post_raw(app: &TestApp, source: &str, secret: &str, body: &str) -> reqwest::Response {
    signed_request(&app.http, &app.base, source, secret, now(), body).send().await.unwrap()
}

const DEADLINE: Duration = Duration::from_secs(30);
