//! The progress line on stderr: redrawn five times a second with `\r`, only when stderr is a
//! terminal (never in logs or tests).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REDRAW: Duration = Duration::from_millis(200);

/// A progress line being redrawn; [`Progress::finish`] clears it.
pub struct Progress {
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Starts redrawing `label: <elapsed> <describe(elapsed, count, rate)>`, where `count` reads a
    /// counter and `rate` is its change per second since the last redraw.
    pub fn start(
        label: &'static str,
        count: impl Fn() -> u64 + Send + 'static,
        describe: impl Fn(Duration, u64, f64) -> String + Send + 'static,
    ) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { running: None };
        }
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let (mut last_at, mut last) = (started, count());
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let (now, n) = (Instant::now(), count());
                let secs = now.duration_since(last_at).as_secs_f64();
                let rate = if secs > 0.0 { n.abs_diff(last) as f64 / secs } else { 0.0 };
                (last_at, last) = (now, n);
                let elapsed = now.duration_since(started);
                let line = describe(elapsed, n, rate);
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{label}: {:>5.1} s  {line}", elapsed.as_secs_f64());
                let _ = err.flush();
            }
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        });
        Progress { running: Some((stop, task)) }
    }

    /// Stops redrawing and clears the line.
    pub async fn finish(mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
