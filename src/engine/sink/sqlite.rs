//! `sqlite:PATH`: a table per topic, primary key (topic, partition, offset), so
//! writing a record twice is harmless. Each worker has its own connection and
//! writes its batch in one transaction, committed at flush.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use rusqlite::{params, Connection};
use serde_json::Value;

use super::{headers_json, lossy, Sink};
use crate::engine::handler::{Failure, Stage};

pub struct SqliteSink {
    conn: Connection,
    tables: HashSet<String>,
    in_tx: bool,
}

impl SqliteSink {
    pub fn open(path: &Path) -> Result<SqliteSink, String> {
        let conn = Connection::open(path).map_err(|e| format!("cannot open the SQLite sink {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| format!("cannot use the SQLite sink {}: {e}", path.display()))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| e.to_string())?;
        Ok(SqliteSink { conn, tables: HashSet::new(), in_tx: false })
    }

    fn table(&mut self, topic: &str) -> Result<String, rusqlite::Error> {
        let name = format!("\"{}\"", topic.replace('"', "\"\""));
        if !self.tables.contains(&name) {
            self.conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
                    key TEXT, value TEXT, headers TEXT, timestamp INTEGER,
                    PRIMARY KEY (topic, partition, offset))"
            ))?;
            self.tables.insert(name.clone());
        }
        Ok(name)
    }
}

fn sink_err(e: rusqlite::Error) -> Failure {
    Failure::retryable(Stage::Sink, format!("SQLite: {e}"))
}

impl Sink for SqliteSink {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        let table = self.table(record.topic()).map_err(sink_err)?;
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sink_err)?;
            self.in_tx = true;
        }
        self.conn
            .prepare_cached(&format!(
                "INSERT OR IGNORE INTO {table} (topic, partition, offset, key, value, headers, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut st| {
                st.execute(params![
                    record.topic(),
                    record.partition(),
                    record.offset(),
                    lossy(record.key()),
                    value.to_string(),
                    Value::Object(headers_json(record)).to_string(),
                    record.timestamp().to_millis(),
                ])
            })
            .map_err(sink_err)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Failure> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(sink_err)?;
            self.in_tx = false;
        }
        Ok(())
    }
}
