//! Logs go to a file, never to the terminal: a dashboard may own it.

use std::path::{Path, PathBuf};

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use kdeck_ui::model::LogLine;
use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const KEPT: usize = 200;

fn buffer() -> &'static Mutex<VecDeque<LogLine>> {
    static LINES: OnceLock<Mutex<VecDeque<LogLine>>> = OnceLock::new();
    LINES.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)))
}

/// The newest `n` log lines (oldest first), for the dashboard's log panel.
pub fn recent(n: usize) -> Vec<LogLine> {
    let lines = buffer().lock().unwrap();
    lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
}

/// Keeps the last lines of the log in memory (bounded), besides the file.
struct Recent;

impl<S: tracing::Subscriber> Layer<S> for Recent {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(String);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        let line = LogLine {
            at_ms: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
            level: event.metadata().level().to_string(),
            message: m.0,
        };
        let mut lines = buffer().lock().unwrap();
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// The default log directory: the user's state directory (e.g. ~/.local/state/kdeck).
pub fn default_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("kdeck")
}

/// Starts logging to `file` (or a daily-rotated kdeck.log in the state directory).
/// Returns the guard that flushes on drop, and the path written to.
/// The level comes from KDECK_LOG (default `info`).
pub fn init(file: Option<&Path>) -> Result<(WorkerGuard, PathBuf)> {
    let (appender, shown) = match file {
        Some(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let name = path.file_name().ok_or_else(|| anyhow!("--log-file {} names no file", path.display()))?;
            std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create the log directory {}: {e}", dir.display()))?;
            (tracing_appender::rolling::never(dir, name), path.to_path_buf())
        }
        None => {
            let dir = default_dir();
            std::fs::create_dir_all(&dir).map_err(|e| anyhow!("cannot create the log directory {}: {e}", dir.display()))?;
            (tracing_appender::rolling::daily(&dir, "kdeck.log"), dir.join("kdeck.log.<date>"))
        }
    };
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("KDECK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false))
        .with(Recent)
        .init();
    Ok((guard, shown))
}
