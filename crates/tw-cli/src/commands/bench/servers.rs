//! The bench's child processes (the real `tw-cli serve`, and the floor responder), CPU pinning,
//! and the peak memory of a child.

use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped child may take to exit after SIGTERM before it is killed (`serve` gives
/// open requests 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a child's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;

/// Which CPU the servers run on and which the load generator runs on.
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    pub server_cpu: usize,
    pub bench_cpu: usize,
}

/// The first two CPUs this process may run on, or why pinning is not possible.
pub fn plan_pinning() -> Result<Pinning, String> {
    // SAFETY: cpu_set_t is plain data (all zeros is the empty set); sched_getaffinity writes at
    // most `size_of::<cpu_set_t>()` bytes into it.
    let allowed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!("cannot read the CPUs this process may use: {}", std::io::Error::last_os_error()));
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect::<Vec<_>>()
    };
    match allowed[..] {
        [server_cpu, bench_cpu, ..] => Ok(Pinning { server_cpu, bench_cpu }),
        _ => Err(format!("this machine gives the bench {} core(s), pinning needs 2", allowed.len())),
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: all zeros is the empty set; CPU_SET writes inside the set (cpu < CPU_SETSIZE,
    // as it came from plan_pinning).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread to `cpu`; threads it starts afterwards inherit that.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        bail!("cannot pin the bench to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A loopback address to listen on: `wanted` if it is free, else a free port picked by the OS.
pub fn listen_addr(wanted: Option<SocketAddr>) -> Result<SocketAddr> {
    let probe = wanted.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    match TcpListener::bind(probe) {
        Ok(l) => Ok(l.local_addr()?),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("--listen {probe}: the port is in use (pick another, or leave --listen out for a free one)")
        }
        Err(e) => bail!("cannot listen on {probe}: {e}"),
    }
}

/// How to tell that a child is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// `GET /api/health` answers 200.
    Health,
    /// The port accepts connections.
    Listening,
}

/// A child process of the bench, serving on `addr`, with its stdout and stderr in a log file.
/// Killed when dropped, so no error path leaves it running.
pub struct ServerChild {
    name: &'static str,
    child: Child,
    exited: bool,
    log: PathBuf,
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Starts this very binary with `args`, pinned to `cpu` when given. Of the TW_* variables
    /// only TW_MASTER_KEY passes, so the run's settings are the flags given here and the
    /// defaults.
    pub fn spawn(name: &'static str, args: &[OsString], addr: SocketAddr, log: &Path, cpu: Option<usize>) -> Result<ServerChild> {
        let exe = std::env::current_exe().context("cannot find this program's own path to start the server")?;
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (var, _) in std::env::vars_os() {
            let var_text = var.to_string_lossy();
            if var_text.starts_with("TW_") && var_text != "TW_MASTER_KEY" {
                cmd.env_remove(&var);
            }
        }
        if let Some(cpu) = cpu {
            let set = cpu_set(cpu);
            // SAFETY: between fork and exec only the async-signal-safe sched_setaffinity runs,
            // on a set built before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("cannot start the {name}"))?;
        Ok(ServerChild { name, child, exited: false, log: log.to_path_buf(), addr })
    }

    /// Waits until the child is ready, at most `within`; an early exit or a timeout is an error
    /// that shows the end of the child's log.
    pub async fn wait_ready(&mut self, ready: Ready, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let health = format!("http://{}/api/health", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                bail!("the {} failed to start ({status}); the end of its log:\n{}", self.name, self.log_tail());
            }
            let up = match ready {
                Ready::Health => http.get(&health).send().await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK),
                Ready::Listening => tokio::net::TcpStream::connect(self.addr).await.is_ok(),
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the {} did not get ready within {} s; the end of its log:\n{}", self.name, within.as_secs(), self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's peak resident memory (VmHWM) in bytes, while it runs.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Stops the child with SIGTERM (its graceful shutdown), killing it if it lingers.
    pub async fn stop(&mut self) -> Result<()> {
        if self.exited {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| anyhow!("pid out of range"))?;
        // SAFETY: signalling our own child, which has not been reaped (so the pid is still its).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                self.exited = true;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        bail!("the {} did not stop within {} s of SIGTERM and was killed", self.name, STOP_GRACE.as_secs())
    }

    fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        if tail.trim().is_empty() { "  (nothing)".into() } else { tail }
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        self.kill();
    }
}
