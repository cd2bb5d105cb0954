//! Logs go to a file, never to the terminal: a dashboard may own it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false).init();
    Ok((guard, shown))
}
