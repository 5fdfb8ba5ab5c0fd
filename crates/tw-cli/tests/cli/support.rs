//! What the CLI tests share: the real `tw-cli` binary as a subprocess ([`ServerProcess`] for
//! `tw-cli serve`, [`cli`] and [`tw`] for the other commands), assertions on what it prints, and
//! deliveries sent with curl. Where a test needs what only a server in this process offers (a
//! clock it sets, a second instance on the same store), the CLI talks to a
//! [`tw_server::testing::TestApp`]; that module's signed deliveries, raw HTTP and metrics are
//! re-exported here with it.

pub use tw_server::testing::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The built binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tw-cli")
}

/// `tw-cli serve` as a real subprocess.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `tw-cli serve` on a free port with `data_dir` and extra args/env; waits for health.
    pub fn start(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let log = data_dir.with_extension(format!("serve-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env_remove("TW_API_KEY")
            .env_remove("TW_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tw-cli serve");
        let mut p = ServerProcess { child, port, url: format!("http://127.0.0.1:{port}"), log };
        p.wait_healthy();
        p
    }

    fn wait_healthy(&mut self) {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early with {status}: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not come up: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// SIGKILL: the hardest stop, nothing gets flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `tw-cli ARGS` against `url` with `api_key` (None: no key), as a user types it.
pub fn cli(url: &str, api_key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("TW_URL", url).env_remove("TW_API_KEY").stdin(Stdio::null());
    if let Some(k) = api_key {
        cmd.env("TW_API_KEY", k);
    }
    cmd.output().expect("run tw-cli")
}

/// stdout of an Output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an Output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---- helpers for tests that run the binary as a user would ----

/// A temp dir holding the data dir (and the server log next to it).
pub fn workdir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// A `tw-cli` command with none of the TW_* variables inherited from the test environment.
pub fn tw() -> Command {
    let mut cmd = Command::new(bin());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TW_") {
            cmd.env_remove(var);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A new API key of `scope` for the store in `data`, made with `tw-cli api-key create`.
pub fn new_key(data: &Path, scope: &str) -> String {
    new_key_with(data, scope, &[], &[])
}

/// Status, stdout and stderr of a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!("status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", o.status, stdout(o), stderr(o))
}

/// No panic, backtrace or backtrace hint in either stream.
pub fn assert_no_panic(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(!all.contains("panicked"), "panic:\n{}", show(o));
    assert!(!all.to_lowercase().contains("backtrace"), "backtrace:\n{}", show(o));
}

/// Exit 0, with its stdout.
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "expected success:\n{}", show(&o));
    assert_no_panic(&o);
    stdout(&o)
}

/// Exit 0 and stdout parsed as JSON.
pub fn ok_json(o: Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{text}"))
}

/// Non-zero exit, no panic, stderr containing every one of `needles` (case-insensitive).
pub fn fails(o: Output, needles: &[&str]) -> String {
    assert!(!o.status.success(), "expected a failure:\n{}", show(&o));
    assert_no_panic(&o);
    let err = stderr(&o);
    for n in needles {
        assert!(err.to_lowercase().contains(&n.to_lowercase()), "stderr lacks '{n}':\n{}", show(&o));
    }
    err
}

/// A user-facing failure: like [`fails`], and stderr is exactly one non-empty line. Returns it.
pub fn fails_with(o: Output, needles: &[&str]) -> String {
    let err = fails(o, needles);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr:\n{err}");
    lines[0].to_string()
}

/// Column start offsets of a table header (columns are separated by two or more spaces).
pub fn column_starts(header: &str) -> Vec<usize> {
    let b = header.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' && i + 1 < b.len() && b[i + 1] == b' ' {
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            starts.push(j);
            i = j;
        } else {
            i += 1;
        }
    }
    starts
}

/// Every cell of `row` starts exactly at a column start of `header`.
pub fn assert_aligned(header: &str, row: &str) {
    for &c in column_starts(header).iter().skip(1) {
        let rb = row.as_bytes();
        assert!(c < rb.len(), "row shorter than column at {c}:\n{header}\n{row}");
        assert!(rb[c - 1] == b' ' && rb[c] != b' ', "row not aligned at column {c}:\n{header}\n{row}");
    }
}

// ---- deliveries as a sender makes them ----

/// Posts `body` signed with `secret` now to the public intake with curl, as a sender would;
/// (HTTP status, JSON body).
pub fn curl_deliver(url: &str, source: &str, secret: &str, body: &str) -> (u16, Value) {
    let ts = now();
    let sig = signature(secret, ts, body.as_bytes());
    let o = Command::new("curl")
        .args(["-sS", "-X", "POST"])
        .arg(format!("{url}/api/webhooks/{source}"))
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", &format!("X-Webhook-Signature: {sig}")])
        .args(["-H", &format!("X-Webhook-Timestamp: {ts}")])
        .args(["--data-binary", body])
        .args(["-w", "\n%{http_code}"])
        .output()
        .expect("run curl");
    split_status(&stdout(&o))
}

/// Splits curl output ending in `-w "\n%{http_code}"` into (status, JSON body).
pub fn split_status(out: &str) -> (u16, Value) {
    let out = out.trim_end();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out));
    let code = code.trim().rsplit(':').next().unwrap_or_default().trim();
    let status: u16 = code.parse().unwrap_or_else(|_| panic!("no status code in curl output: {out}"));
    let v = serde_json::from_str(body.trim()).unwrap_or_else(|_| Value::String(body.to_string()));
    (status, v)
}

/// Like [`new_key`], with `extra_args` for `tw-cli api-key create` (e.g. `--database-url`) and
/// `env` for its environment (e.g. `TW_MASTER_KEY`).
pub fn new_key_with(data: &Path, scope: &str, extra_args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = tw();
    cmd.args(["api-key", "create", "--name", "ci", "--scope", scope]).args(extra_args).arg("--data-dir").arg(data);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run api-key create");
    assert!(o.status.success(), "api-key create failed: {}", show(&o));
    let key = stdout(&o).trim().to_string();
    assert!(key.starts_with("tw_"), "{key}");
    key
}
