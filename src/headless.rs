//! Running without a terminal: a status line a second on stderr, or one JSON
//! snapshot per line on stdout. Reads the same snapshots a dashboard would.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use kdeck_ui::model::Snapshot;

use crate::engine::EngineHandle;

const EVERY: Duration = Duration::from_secs(1);

/// Prints status until the engine stops (signal, `--stop-at-end`, `until`), then
/// prints the final snapshot and returns the engine's result.
pub fn run(engine: EngineHandle, json: bool, until: Option<Duration>) -> Result<()> {
    let started = Instant::now();
    let shutdown = engine.shutdown_flag();
    let mut next = Instant::now() + EVERY;
    while !engine.is_finished() {
        if until.is_some_and(|d| started.elapsed() >= d) {
            shutdown.store(true, Ordering::SeqCst);
        }
        if Instant::now() >= next {
            print(&engine.snapshot(), json);
            next += EVERY;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = engine.snapshot();
    let result = engine.join();
    print(&last, json);
    result
}

fn print(s: &Snapshot, json: bool) {
    if json {
        let mut s = s.clone();
        // The JSON line carries the current state; the full history is for the dashboard.
        let keep = s.throughput.len().saturating_sub(1);
        s.throughput.drain(..keep);
        s.logs.clear(); // the log file has them
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &s);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    } else {
        eprintln!("{}", status_line(s));
    }
}

pub fn status_line(s: &Snapshot) -> String {
    let rate = s.throughput.last().map_or(0.0, |t| t.processed_per_s);
    let paused = s.partitions.iter().filter(|p| p.paused).count();
    let pending = s.pending_commit_strategy.as_ref().map(|p| format!(" -> {p}")).unwrap_or_default();
    let error = s.errors.last().map(|e| format!(" | last error ({}): {}", e.area, e.message)).unwrap_or_default();
    format!(
        "{:?} {:?} | consumed {} processed {} failed {} ({:.0}/s) | lag {} | {} partitions ({} paused) | commit {}{} | commits {}{}",
        s.engine_state,
        s.rebalance_state,
        s.consumed,
        s.processed,
        s.failed,
        rate,
        s.lag_total.map_or("?".to_string(), |l| l.to_string()),
        s.partitions.len(),
        paused,
        s.commit_strategy,
        pending,
        s.commits,
        error
    )
}
