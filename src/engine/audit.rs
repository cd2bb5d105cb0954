//! The local audit store (SQLite, WAL): every dead-lettered record with its
//! payload, every replay and its outcome, every operator action, every
//! rebalance. One table of events; `detail` is JSON.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

pub struct Audit {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at_ms: u64,
    /// `dead_letter`, `replay`, `action`, `rebalance`.
    pub kind: String,
    pub summary: String,
    pub detail: Value,
}

pub fn default_path() -> PathBuf {
    crate::logging::default_dir().join("audit.sqlite")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Audit {
    pub fn open(path: &Path) -> Result<Audit, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let fail = |e: rusqlite::Error| format!("cannot open the audit store {}: {e}", path.display());
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at_ms INTEGER NOT NULL,
                kind TEXT NOT NULL,
                summary TEXT NOT NULL,
                detail TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
             CREATE TABLE IF NOT EXISTS replays (
                record TEXT PRIMARY KEY,   -- the replayed record: dlq topic/partition/offset or audit id
                event_id INTEGER NOT NULL,
                times INTEGER NOT NULL);",
        )
        .map_err(fail)?;
        Ok(Audit { conn: Mutex::new(conn) })
    }

    pub fn record(&self, kind: &str, summary: &str, detail: &Value) -> Result<i64, String> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "INSERT INTO events (at_ms, kind, summary, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms() as i64, kind, summary, detail.to_string()],
        )
        .map_err(|e| format!("audit write failed: {e}"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Records an event, logging (not failing) when the store is unavailable:
    /// for actions and rebalances the engine goes on regardless.
    pub fn note(&self, kind: &str, summary: &str, detail: &Value) {
        if let Err(e) = self.record(kind, summary, detail) {
            tracing::warn!("{e}");
        }
    }

    pub fn get(&self, id: i64) -> Result<Option<Event>, String> {
        self.conn
            .lock()
            .unwrap()
            .query_row("SELECT id, at_ms, kind, summary, detail FROM events WHERE id = ?1", [id], row)
            .optional()
            .map_err(|e| format!("audit read failed: {e}"))
    }

    /// Newest first; `kind` filters.
    pub fn list(&self, kind: Option<&str>, limit: usize) -> Result<Vec<Event>, String> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn
            .prepare("SELECT id, at_ms, kind, summary, detail FROM events WHERE (?1 IS NULL OR kind = ?1) ORDER BY id DESC LIMIT ?2")
            .map_err(|e| e.to_string())?;
        let rows = st.query_map(params![kind, limit as i64], row).map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| format!("audit read failed: {e}"))
    }

    /// How often `record` was replayed before.
    pub fn replayed(&self, record: &str) -> Result<u32, String> {
        self.conn
            .lock()
            .unwrap()
            .query_row("SELECT times FROM replays WHERE record = ?1", [record], |r| r.get(0))
            .optional()
            .map(|t| t.unwrap_or(0))
            .map_err(|e| format!("audit read failed: {e}"))
    }

    /// Records a replay and its outcome.
    pub fn replay(&self, record: &str, summary: &str, detail: &Value) -> Result<i64, String> {
        let id = self.record("replay", summary, detail)?;
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO replays (record, event_id, times) VALUES (?1, ?2, 1)
                 ON CONFLICT(record) DO UPDATE SET times = times + 1, event_id = excluded.event_id",
                params![record, id],
            )
            .map_err(|e| format!("audit write failed: {e}"))?;
        Ok(id)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let detail: String = r.get(4)?;
    Ok(Event {
        id: r.get(0)?,
        at_ms: r.get::<_, i64>(1)? as u64,
        kind: r.get(2)?,
        summary: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_replays_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(&dir.path().join("a.sqlite")).unwrap();
        let id = a.record("action", "pause orders[0]", &serde_json::json!({"partition": 0})).unwrap();
        a.record("rebalance", "gained 6", &serde_json::json!({})).unwrap();
        assert_eq!(a.get(id).unwrap().unwrap().detail["partition"], 0);
        assert_eq!(a.list(None, 10).unwrap().len(), 2);
        assert_eq!(a.list(Some("action"), 10).unwrap()[0].id, id);
        assert_eq!(a.replayed("orders.dlq/0/5").unwrap(), 0);
        a.replay("orders.dlq/0/5", "replay", &serde_json::json!({})).unwrap();
        a.replay("orders.dlq/0/5", "replay again", &serde_json::json!({})).unwrap();
        assert_eq!(a.replayed("orders.dlq/0/5").unwrap(), 2);
    }
}
