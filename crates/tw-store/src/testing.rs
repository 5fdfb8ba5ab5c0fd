//! Throwaway PostgreSQL databases for this workspace's tests: each test gets its own database,
//! dropped when the test ends, so runs never collide.
//!
//! The server is `TW_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! set it to `off` to skip. When no server answers, [`TestDatabase::create`] returns `None` and
//! says once, on the test process's stderr (past the test harness's capture), that the
//! PostgreSQL tests were skipped; with `TW_TEST_REQUIRE_POSTGRES=1` (as CI runs) it fails the
//! test instead, so a broken PostgreSQL set-up cannot pass as a skip.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The default test server: the local PostgreSQL of the development machines and CI.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test; dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

fn admin_url() -> Option<String> {
    match std::env::var("TW_TEST_POSTGRES_URL") {
        Ok(v) if v == "off" || v.is_empty() => None,
        Ok(v) => Some(v),
        Err(_) => Some(DEFAULT_TEST_URL.to_string()),
    }
}

fn say_skipped(why: &str) {
    if std::env::var("TW_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("PostgreSQL is required (TW_TEST_REQUIRE_POSTGRES=1) but {why}");
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        // Written to the stderr handle itself, not with eprintln!, so the test harness shows it.
        let _ = writeln!(std::io::stderr(), "\nPostgreSQL tests skipped: {why}\n");
    });
}

/// A plain connection to `url` (its driver task spawned), for tests that look inside the database.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    crate::postgres::connect_admin(url, Duration::from_secs(3)).await.map_err(|e| format!("cannot connect to {url}: {e}"))
}

impl TestDatabase {
    /// A fresh empty database, or `None` (said once) when no PostgreSQL test server is reachable.
    pub async fn create() -> Option<TestDatabase> {
        let Some(admin_url) = admin_url() else {
            say_skipped("TW_TEST_POSTGRES_URL=off");
            return None;
        };
        let client = match connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                say_skipped(&e);
                return None;
            }
        };
        let name = format!("tw_test_{}{}", run_prefix(), uuid::Uuid::new_v4().simple());
        if let Err(e) = crate::postgres::create_database(&client, &name).await {
            say_skipped(&format!("cannot create a test database: {e}"));
            return None;
        }
        Some(TestDatabase { url: crate::postgres::with_database(&admin_url, &name), admin_url, name })
    }
}

/// `TW_TEST_DB_RUN` (letters and digits) and `_`: a test process that cannot drop its databases
/// itself names them so that its parent can ([`drop_run_databases`]).
fn run_prefix() -> String {
    match std::env::var("TW_TEST_DB_RUN") {
        Ok(r) if !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()) => format!("{}_", r.to_ascii_lowercase()),
        _ => String::new(),
    }
}

/// Drops every test database a run named `run` left behind; returns how many.
pub async fn drop_run_databases(run: &str) -> usize {
    let Some(admin) = admin_url() else { return 0 };
    let Ok(client) = connect(&admin).await else { return 0 };
    let pattern = format!("tw_test_{}\\_%", run.to_ascii_lowercase());
    let Ok(rows) = client.query("SELECT datname FROM pg_database WHERE datname LIKE $1", &[&pattern]).await else { return 0 };
    let mut dropped = 0;
    for r in rows {
        let name: String = r.get(0);
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && crate::postgres::drop_database(&client, &name).await.is_ok() {
            dropped += 1;
        }
    }
    dropped
}

/// Whether the HTTP tests' servers should run on PostgreSQL (`TW_TEST_ENGINE=postgres`).
pub fn engine_is_postgres() -> bool {
    std::env::var("TW_TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

/// The database of a test server's data dir on PostgreSQL, created on first use and kept for the
/// whole test process, so a server restarted on the same data dir finds its data again. The
/// parent process of a [`rerun_on_postgres`] run drops them all at its end.
pub async fn database_for(data_dir: &Path) -> String {
    static DBS: OnceLock<Mutex<HashMap<PathBuf, Arc<TestDatabase>>>> = OnceLock::new();
    let dbs = DBS.get_or_init(Default::default);
    if let Some(db) = dbs.lock().unwrap().get(data_dir) {
        return db.url.clone();
    }
    let db = TestDatabase::create().await.expect("TW_TEST_ENGINE=postgres needs a reachable PostgreSQL");
    let url = db.url.clone();
    dbs.lock().unwrap().insert(data_dir.to_path_buf(), Arc::new(db));
    url
}

/// The name of the test, in each test binary that has one, that runs tests of that binary again
/// on PostgreSQL ([`rerun_on_postgres`]).
pub const RERUN_TEST: &str = "these_tests_pass_on_postgres";

/// How long the second run may take before it is killed and the test fails.
const RERUN_DEADLINE: Duration = Duration::from_secs(600);

/// Runs the current test binary again with `TW_TEST_ENGINE=postgres`, passing it `args` (test
/// filters and `--skip`s; [`RERUN_TEST`] is always skipped), and drops the databases it made.
/// Panics when that run fails or runs no test. Skipped (with a visible line) when no PostgreSQL
/// answers, and inside that second run.
pub fn rerun_on_postgres(args: &[&str]) {
    if engine_is_postgres() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if rt.block_on(TestDatabase::create()).is_none() {
        return;
    }
    let run = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (out_path, err_path) =
        (std::env::temp_dir().join(format!("tw-test-{run}.stdout")), std::env::temp_dir().join(format!("tw-test-{run}.stderr")));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("TW_TEST_ENGINE", "postgres")
        .env("TW_TEST_DB_RUN", &run)
        .args(args)
        .args(["--skip", RERUN_TEST, "--test-threads", "2"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run the tests again");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RERUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dropped = rt.block_on(drop_run_databases(&run));
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let summary = stdout.lines().filter(|l| l.starts_with("test result:")).collect::<Vec<_>>().join("; ");
    let _ = writeln!(std::io::stderr(), "\nthe same tests on PostgreSQL: {summary} ({dropped} test databases dropped)");
    let status = status.unwrap_or_else(|| panic!("the PostgreSQL run took over {RERUN_DEADLINE:?}:\n{stdout}\n{stderr}"));
    assert!(status.success(), "on PostgreSQL:\n{stdout}\n{stderr}");
    let passed: u32 = summary.split_once(" passed").and_then(|(head, _)| head.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed > 0, "no test ran on PostgreSQL: {stdout}");
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside or outside a runtime: a thread of its own with its own runtime works in both.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(c) = connect(&admin).await {
                    let _ = crate::postgres::drop_database(&c, &name).await;
                }
            });
        });
        let _ = done.join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(crate::postgres::with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(crate::postgres::with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(crate::postgres::with_database("postgresql://u:p@h/tw?sslmode=disable", "x"), "postgresql://u:p@h/x?sslmode=disable");
        assert_eq!(crate::postgres::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
