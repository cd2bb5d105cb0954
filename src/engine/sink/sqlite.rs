//! `sqlite:PATH`: by default a table per topic, primary key (topic, partition,
//! offset), so writing a record twice is harmless; or, with `--sql`, the user's
//! own statement for every record (upserts, aggregates), with named
//! parameters bound from the record. Each worker has its own connection and
//! writes its batch in one transaction, committed at flush.
//!
//! Exactly-once (`--commit eos`): the next offset of the partition is written
//! in the same transaction (table `kdeck_offsets`), as a compare-and-set on the
//! value this worker started from, so a consumer that lost its partition can
//! never write again; partitions start from the stored offsets.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::eos::ExactlyOnce;
use super::{headers_json, lossy, Sink};
use crate::engine::handler::{Failure, Progress, Stage};

const OFFSETS_TABLE: &str = "CREATE TABLE IF NOT EXISTS kdeck_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition))";

/// Parameters every record binds, whatever its format.
const RECORD_PARAMETERS: [&str; 6] = ["topic", "partition", "offset", "key", "value", "timestamp"];

pub(super) fn open(path: &Path) -> Result<Connection, String> {
    let fail = |e: rusqlite::Error| format!("cannot use the SQLite sink {}: {e}", path.display());
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
    conn.execute_batch(OFFSETS_TABLE).map_err(fail)?;
    Ok(conn)
}

pub(super) fn stored(conn: &Connection, group: &str, topic: &str, partition: i32) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT next_offset FROM kdeck_offsets WHERE group_id = ?1 AND topic = ?2 AND partition = ?3",
        params![group, topic, partition],
        |r| r.get(0),
    )
    .optional()
}

/// What a SQLite sink writes, shared by its partitions.
pub struct SqliteTarget {
    pub path: PathBuf,
    /// The user's statement, run for every record instead of the default table.
    pub sql: Option<String>,
    group: String,
    pub eos: Arc<ExactlyOnce>,
}

impl SqliteTarget {
    pub fn new(path: &Path, sql: Option<String>, group: &str) -> Result<SqliteTarget, String> {
        let conn = open(path)?;
        if let Some(sql) = &sql {
            conn.prepare(sql).map_err(|e| format!("the --sql statement does not prepare: {e}"))?;
        }
        let eos = Arc::new(ExactlyOnce::sqlite(path, group));
        Ok(SqliteTarget { path: path.to_path_buf(), sql, group: group.to_string(), eos })
    }

    /// The statement's named parameters that bind from value fields, in order.
    pub fn field_parameters(&self) -> Vec<String> {
        let Some(sql) = &self.sql else { return Vec::new() };
        let Ok(conn) = open(&self.path) else { return Vec::new() };
        let Ok(st) = conn.prepare(sql) else { return Vec::new() };
        (1..=st.parameter_count())
            .filter_map(|i| st.parameter_name(i).map(|n| n[1..].to_string()))
            .filter(|n| !RECORD_PARAMETERS.contains(&n.as_str()))
            .collect()
    }

    pub fn open(&self, topic: &str, partition: i32) -> Result<SqliteSink, String> {
        let conn = open(&self.path)?;
        // The compare-and-set starts from what the database held when this worker began.
        let expected = stored(&conn, &self.group, topic, partition).map_err(|e| e.to_string())?;
        let eos_seen = self.eos.enabled();
        Ok(SqliteSink {
            conn,
            tables: HashSet::new(),
            in_tx: false,
            sql: self.sql.clone(),
            group: self.group.clone(),
            eos: self.eos.clone(),
            expected,
            eos_seen,
        })
    }
}

pub struct SqliteSink {
    conn: Connection,
    tables: HashSet<String>,
    in_tx: bool,
    sql: Option<String>,
    group: String,
    eos: Arc<ExactlyOnce>,
    expected: Option<i64>,
    /// Whether `expected` was read while exactly-once was on (it is re-read when it comes on).
    eos_seen: bool,
}

/// The database itself failing (read-only, full, locked, gone) is the sink's
/// trouble; anything else is about the record.
fn sink_err(e: rusqlite::Error) -> Failure {
    use rusqlite::ErrorCode::*;
    let database = matches!(
        e.sqlite_error_code(),
        Some(ReadOnly | CannotOpen | SystemIoFailure | DiskFull | DatabaseBusy | DatabaseLocked | DatabaseCorrupt
            | NotADatabase | PermissionDenied | OutOfMemory)
    );
    if database {
        Failure::unavailable(Stage::Sink, format!("SQLite: {e}"))
    } else {
        Failure::retryable(Stage::Sink, format!("SQLite: {e}"))
    }
}

impl SqliteSink {
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

    fn begin(&mut self) -> Result<(), Failure> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sink_err)?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn default_insert(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        let table = self.table(record.topic()).map_err(sink_err)?;
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
            .map(|_| ())
            .map_err(sink_err)
    }

    /// Runs the user's statement with every named parameter bound from the record:
    /// `:topic :partition :offset :key :value :timestamp`, or a top-level field of
    /// a JSON object value by its name; anything else binds NULL.
    fn user_statement(&mut self, sql: &str, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| Failure::retryable(Stage::Handle, format!("--sql: {e}")))?;
        for i in 1..=st.parameter_count() {
            let Some(name) = st.parameter_name(i) else { continue };
            let bound = match &name[1..] {
                "topic" => Sql::Text(record.topic().to_string()),
                "partition" => Sql::Integer(record.partition().into()),
                "offset" => Sql::Integer(record.offset()),
                "key" => lossy(record.key()).map_or(Sql::Null, Sql::Text),
                "value" => Sql::Text(value.to_string()),
                "timestamp" => record.timestamp().to_millis().map_or(Sql::Null, Sql::Integer),
                field => json_to_sql(value.get(field)),
            };
            st.raw_bind_parameter(i, bound).map_err(|e| Failure::retryable(Stage::Handle, format!("--sql: {e}")))?;
        }
        st.raw_execute().map(|_| ()).map_err(|e| match sink_err(e) {
            f if f.unavailable => f,
            f => Failure::retryable(Stage::Handle, f.message.replacen("SQLite", "--sql failed", 1)),
        })
    }

    /// The offset compare-and-set: fails (and so rolls back) when another consumer
    /// moved the partition on since this worker began.
    fn advance(&mut self, p: &Progress) -> Result<(), Failure> {
        let group = self.group.clone();
        let changed = match self.expected {
            Some(expected) => self.conn.execute(
                "UPDATE kdeck_offsets SET next_offset = ?4 WHERE group_id = ?1 AND topic = ?2 AND partition = ?3 AND next_offset = ?5",
                params![group, p.topic, p.partition, p.next_offset, expected],
            ),
            None => self.conn.execute(
                "INSERT OR IGNORE INTO kdeck_offsets (group_id, topic, partition, next_offset) VALUES (?1, ?2, ?3, ?4)",
                params![group, p.topic, p.partition, p.next_offset],
            ),
        }
        .map_err(sink_err)?;
        if changed != 1 {
            return Err(Failure::retryable(
                Stage::Sink,
                format!("fenced: another consumer of group {group} moved {}[{}] on; this one no longer owns it", p.topic, p.partition),
            ));
        }
        Ok(())
    }
}

fn json_to_sql(v: Option<&Value>) -> Sql {
    match v {
        None | Some(Value::Null) => Sql::Null,
        Some(Value::Bool(b)) => Sql::Integer(*b as i64),
        Some(Value::Number(n)) => n.as_i64().map(Sql::Integer).unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Some(Value::String(s)) => Sql::Text(s.clone()),
        Some(other) => Sql::Text(other.to_string()),
    }
}

impl Sink for SqliteSink {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        self.begin()?;
        match self.sql.clone() {
            Some(sql) => self.user_statement(&sql, record, value),
            None => self.default_insert(record, value),
        }
    }

    fn flush(&mut self, progress: Option<&Progress>) -> Result<(), Failure> {
        let eos = progress.filter(|_| self.eos.enabled());
        if let Some(p) = eos.filter(|_| !self.eos_seen) {
            // Exactly-once came on while this worker ran: start from what is stored now.
            self.expected = stored(&self.conn, &self.group, p.topic, p.partition).map_err(sink_err)?;
        }
        self.eos_seen = self.eos.enabled();
        if let Some(p) = eos {
            // Even a batch of dead-lettered records only moves the offset, in a transaction of its own.
            self.begin()?;
            if let Err(f) = self.advance(p) {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.in_tx = false;
                self.eos.closed(Some(&f.message));
                return Err(f);
            }
        }
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(sink_err)?;
            self.in_tx = false;
        }
        if let Some(p) = eos {
            self.expected = Some(p.next_offset);
            self.eos.closed(None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(offset: i64, value: &str) -> OwnedMessage {
        OwnedMessage::new(Some(value.as_bytes().to_vec()), Some(b"k".to_vec()), "t".into(), Timestamp::CreateTime(5), 0, offset, None)
    }

    #[test]
    fn a_user_statement_binds_record_fields_and_missing_ones_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE totals (customer TEXT PRIMARY KEY, total REAL, n INTEGER, note TEXT)").unwrap();
        let sql = "INSERT INTO totals(customer, total, n, note) VALUES(:customer, :amount, 1, :note)
                   ON CONFLICT(customer) DO UPDATE SET total = total + excluded.total, n = n + 1";
        let target = SqliteTarget::new(&db, Some(sql.into()), "g").unwrap();
        let mut sink = target.open("t", 0).unwrap();
        for (o, amount) in [(0, 2.5), (1, 4.0)] {
            let v = serde_json::json!({"customer": "c1", "amount": amount});
            sink.write(&record(o, &v.to_string()), &v).unwrap();
        }
        sink.flush(None).unwrap();
        let row: (f64, i64, Option<String>) =
            Connection::open(&db).unwrap().query_row("SELECT total, n, note FROM totals", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!(row, (6.5, 2, None));
    }

    #[test]
    fn offsets_are_written_in_the_batch_transaction_and_a_second_owner_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        let target = SqliteTarget::new(&db, None, "g").unwrap();
        target.eos.set_enabled(true).unwrap();
        let mut first = target.open("t", 0).unwrap();
        let mut zombie = target.open("t", 0).unwrap(); // began from the same (empty) state
        let v = serde_json::json!({});
        first.write(&record(0, "{}"), &v).unwrap();
        first.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 1 })).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(1));

        zombie.write(&record(0, "{}"), &v).unwrap();
        let e = zombie.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 1 })).unwrap_err();
        assert!(e.message.contains("fenced"), "{e:?}");

        first.write(&record(1, "{}"), &v).unwrap();
        first.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 2 })).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(2));
        target.eos.set_enabled(false).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), None, "leaving eos forgets the stored offsets");
    }
}
