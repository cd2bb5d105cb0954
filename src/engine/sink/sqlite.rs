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
use super::{lossy, Sink};
use crate::engine::handler::{Failure, Progress, Stage};

const OFFSETS_TABLE: &str = "CREATE TABLE IF NOT EXISTS kdeck_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition))";

/// Parameters every record binds, whatever its format.
const RECORD_PARAMETERS: [&str; 6] = ["topic", "partition", "offset", "key", "value", "timestamp"];

/// How long a write waits for the database (another process's transaction).
const BUSY_TIMEOUT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 30 });

pub(super) fn open(path: &Path) -> Result<Connection, String> {
    let fail = |e: rusqlite::Error| format!("cannot use the SQLite sink {}: {e}", path.display());
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
    // FULL: a committed batch survives a power loss, as the Kafka commit that
    // follows it does (NORMAL may lose the last transactions in WAL mode).
    conn.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
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
    /// Its named parameters that bind from value fields (read once, at start).
    field_parameters: Vec<String>,
    group: String,
    pub eos: Arc<ExactlyOnce>,
    /// The partitions' sinks take turns at the write lock here: waiting for
    /// SQLite's own lock sleeps (1, 2, 5 … 100 ms at a time), and six
    /// sinks spent most of a run asleep in it.
    turn: Arc<parking_lot::Mutex<()>>,
}

impl SqliteTarget {
    pub fn new(path: &Path, sql: Option<String>, group: &str) -> Result<SqliteTarget, String> {
        let conn = open(path)?;
        let mut field_parameters = Vec::new();
        if let Some(sql) = &sql {
            let st = conn.prepare(sql).map_err(|e| format!("the --sql statement does not prepare: {e}"))?;
            if st.column_count() > 0 {
                return Err("the --sql statement returns rows (a SELECT or RETURNING); give a statement that only writes".into());
            }
            field_parameters = (1..=st.parameter_count())
                .filter_map(|i| st.parameter_name(i).map(|n| n[1..].to_string()))
                .filter(|n| !RECORD_PARAMETERS.contains(&n.as_str()))
                .collect();
        }
        let eos = Arc::new(ExactlyOnce::sqlite(path, group));
        Ok(SqliteTarget { path: path.to_path_buf(), sql, field_parameters, group: group.to_string(), eos, turn: Arc::default() })
    }

    /// The statement's named parameters that bind from value fields, in order.
    pub fn field_parameters(&self) -> Vec<String> {
        self.field_parameters.clone()
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
            pending: Vec::new(),
            fail_next_advance: false,
            turn: self.turn.clone(),
        })
    }
}

pub struct SqliteSink {
    conn: Connection,
    tables: HashSet<String>,
    in_tx: bool,
    /// The writes of the batch not yet committed. While `in_tx` they are all in
    /// the open transaction; when a transaction is lost (rolled back by us, or
    /// by SQLite itself on a full disk or an I/O error) they are done again in
    /// the next one, so a batch is committed whole or not at all.
    pending: Vec<Row>,
    sql: Option<String>,
    group: String,
    eos: Arc<ExactlyOnce>,
    expected: Option<i64>,
    /// Whether `expected` was read while exactly-once was on (it is re-read when it comes on).
    eos_seen: bool,
    /// Tests only: the next offset update fails the way a full disk does
    /// (SQLite rolls the transaction back by itself).
    fail_next_advance: bool,
    turn: Arc<parking_lot::Mutex<()>>,
}

/// One write, as its bound values.
#[derive(Debug, Clone)]
enum Row {
    /// The default table of `topic`: topic, partition, offset, key, value, headers,
    /// timestamp, headers_b64.
    Default { topic: String, values: [Sql; 8] },
    /// The user's statement, by parameter index.
    User(Vec<(usize, Sql)>),
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
                    key TEXT, value TEXT, headers TEXT, timestamp INTEGER, headers_b64 TEXT,
                    PRIMARY KEY (topic, partition, offset))"
            ))?;
            // Tables made before headers_b64 existed get it.
            if self.conn.prepare(&format!("SELECT headers_b64 FROM {name} LIMIT 0")).is_err() {
                self.conn.execute_batch(&format!("ALTER TABLE {name} ADD COLUMN headers_b64 TEXT"))?;
            }
            self.tables.insert(name.clone());
        }
        Ok(name)
    }

    /// Opens a transaction if none is open, with every pending write done again in it.
    fn begin(&mut self) -> Result<(), Failure> {
        self.notice_lost_transaction();
        if self.in_tx {
            return Ok(());
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sink_err)?;
        self.in_tx = true;
        let rows = std::mem::take(&mut self.pending);
        for row in &rows {
            if let Err(e) = self.execute(row) {
                self.pending = rows;
                self.rollback();
                return Err(sink_err(e));
            }
        }
        self.pending = rows;
        Ok(())
    }

    /// Ends the open transaction without its writes; they stay pending.
    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.in_tx = false;
        // Tables created in the lost transaction are gone with it.
        self.tables.clear();
    }

    /// SQLite may have rolled the whole transaction back by itself (a full disk,
    /// an I/O error): trust the connection, not `in_tx`.
    fn notice_lost_transaction(&mut self) {
        if self.in_tx && self.conn.is_autocommit() {
            self.in_tx = false;
            self.tables.clear();
        }
    }

    fn execute(&mut self, row: &Row) -> rusqlite::Result<()> {
        match row {
            Row::Default { topic, values } => {
                let table = self.table(topic)?;
                let mut st = self.conn.prepare_cached(&format!(
                    "INSERT OR IGNORE INTO {table} (topic, partition, offset, key, value, headers, timestamp, headers_b64)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ))?;
                st.execute(rusqlite::params_from_iter(values.iter()))?;
            }
            Row::User(values) => {
                // A statement that fails part-way (OR FAIL, a trigger's RAISE(FAIL))
                // keeps what it changed: undo it, so a retried record applies once.
                self.conn.execute_batch("SAVEPOINT kdeck_row")?;
                let outcome = (|| {
                    let sql = self.sql.as_deref().unwrap_or_default();
                    let mut st = self.conn.prepare_cached(sql)?;
                    for (i, v) in values {
                        st.raw_bind_parameter(*i, v)?;
                    }
                    st.raw_execute().map(|_| ())
                })();
                match outcome {
                    Ok(()) => self.conn.execute_batch("RELEASE kdeck_row")?,
                    Err(e) => {
                        if !self.conn.is_autocommit() {
                            let _ = self.conn.execute_batch("ROLLBACK TO kdeck_row; RELEASE kdeck_row");
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn default_row(record: &OwnedMessage, value: &Value) -> Row {
        let opt = |v: Option<String>| v.map_or(Sql::Null, Sql::Text);
        let raw = crate::engine::headers::of(record);
        let exact = (!crate::engine::headers::all_text(&raw)).then(|| crate::engine::headers::to_base64(&raw).to_string());
        Row::Default {
            topic: record.topic().to_string(),
            values: [
                Sql::Text(record.topic().to_string()),
                Sql::Integer(record.partition().into()),
                Sql::Integer(record.offset()),
                opt(lossy(record.key())),
                Sql::Text(value.to_string()),
                Sql::Text(Value::Object(crate::engine::headers::to_json(&raw)).to_string()),
                record.timestamp().to_millis().map_or(Sql::Null, Sql::Integer),
                opt(exact),
            ],
        }
    }

    /// The user's statement with every named parameter bound from the record:
    /// `:topic :partition :offset :key :value :timestamp`, or a top-level field of
    /// a JSON object value by its name; anything else binds NULL.
    fn user_row(&mut self, record: &OwnedMessage, value: &Value) -> Result<Row, Failure> {
        let sql = self.sql.as_deref().unwrap_or_default();
        let st = self.conn.prepare_cached(sql).map_err(|e| Failure::retryable(Stage::Handle, format!("--sql: {e}")))?;
        let mut values = Vec::with_capacity(st.parameter_count());
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
            values.push((i, bound));
        }
        Ok(Row::User(values))
    }

    /// The offset compare-and-set: fails (and so rolls back) when another consumer
    /// moved the partition on since this worker began.
    fn advance(&mut self, p: &Progress) -> Result<(), Failure> {
        if std::mem::take(&mut self.fail_next_advance) {
            let _ = self.conn.execute_batch("ROLLBACK"); // what SQLite does on SQLITE_FULL
            return Err(Failure::unavailable(Stage::Sink, "SQLite: database or disk is full (test)"));
        }
        let group = self.group.clone();
        if self.expected.is_some_and(|e| p.next_offset <= e) {
            // Nothing new: every record of the batch was below the stored offset
            // (skipped at write), and the offset never moves back.
            return Ok(());
        }
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

    /// Exactly-once came on while this worker ran: start from what is stored now.
    fn refresh_expected(&mut self, topic: &str, partition: i32) -> Result<(), Failure> {
        if !self.eos_seen {
            self.expected = stored(&self.conn, &self.group, topic, partition).map_err(sink_err)?;
            self.eos_seen = true;
        }
        Ok(())
    }

    /// Outside exactly-once the stored offset still follows what the database
    /// holds (it never goes back), so a later eos start never applies twice what
    /// an at-least-once run already wrote.
    fn record_progress(&mut self, p: &Progress) -> Result<(), Failure> {
        self.conn
            .execute(
                "INSERT INTO kdeck_offsets (group_id, topic, partition, next_offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                params![self.group, p.topic, p.partition, p.next_offset],
            )
            .map(|_| ())
            .map_err(sink_err)
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
        if self.eos.enabled() {
            self.refresh_expected(record.topic(), record.partition())?;
            if self.expected.is_some_and(|e| record.offset() < e) {
                // Below the stored offset its effect is in the database already (an
                // at-least-once run got further than the group's Kafka offset).
                return Ok(());
            }
        }
        let row = match self.sql {
            Some(_) => self.user_row(record, value)?,
            None => {
                // Written at flush, in one short transaction: the write lock is not held
                // while the batch's records are decoded and checked. (Held from the first
                // write, it made the partitions' workers take turns: 0.4 cores busy.) Only
                // the database can refuse this row, and that is the batch's failure.
                self.pending.push(SqliteSink::default_row(record, value));
                return Ok(());
            }
        };
        self.begin()?;
        match self.execute(&row) {
            Ok(()) => {
                self.pending.push(row);
                Ok(())
            }
            Err(e) => {
                self.notice_lost_transaction();
                if self.pending.is_empty() {
                    // Nothing to keep: do not hold the write lock through the retry's wait.
                    self.rollback();
                }
                let f = sink_err(e);
                Err(match (&self.sql, f.unavailable) {
                    // The user's statement failing on this record's values is about the record.
                    (Some(_), false) => Failure::retryable(Stage::Handle, f.message.replacen("SQLite", "--sql failed", 1)),
                    _ => f,
                })
            }
        }
    }

    fn flush(&mut self, progress: Option<&Progress>) -> Result<(), Failure> {
        let eos = progress.filter(|_| self.eos.enabled());
        if let Some(p) = eos {
            self.refresh_expected(p.topic, p.partition)?;
        }
        self.eos_seen = self.eos.enabled();
        if progress.is_none() && self.pending.is_empty() && !self.in_tx {
            return Ok(());
        }
        // A transaction opened at flush is closed in it: it takes its turn. (Under
        // --sql one is open since the batch's first write, which waits in SQLite.)
        let turn = self.turn.clone();
        let _turn = match self.in_tx {
            true => None,
            // Bounded like SQLite's own wait: the database held by another process
            // (its lock timing out for each partition in turn) costs one timeout, not six.
            false => Some(turn.try_lock_for(BUSY_TIMEOUT).ok_or_else(|| {
                Failure::unavailable(Stage::Sink, "SQLite: the database stayed busy (other partitions waited for it too)")
            })?),
        };
        // Even a batch of dead-lettered records moves the offset, in a transaction of its own.
        let outcome = self.begin().and_then(|()| match (eos, progress) {
            (Some(p), _) => self.advance(p),
            (None, Some(p)) => self.record_progress(p),
            (None, None) => Ok(()),
        });
        let outcome = outcome.and_then(|()| self.conn.execute_batch("COMMIT").map_err(sink_err));
        if let Err(f) = outcome {
            // The batch stays pending and is written whole in the next attempt.
            self.rollback();
            if eos.is_some() {
                self.eos.closed(Some(&f.message));
            }
            return Err(f);
        }
        self.in_tx = false;
        self.pending.clear();
        if let Some(p) = progress {
            // What the stored offset now says (it never moves back).
            self.expected = self.expected.max(Some(p.next_offset));
        }
        if eos.is_some() {
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
        first.write(&record(2, "{}"), &v).unwrap();
        first.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 3 })).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(3), "outside eos the stored offset still follows the database");
        target.eos.set_enabled(true).unwrap();
        let mut late = target.open("t", 0).unwrap();
        late.write(&record(1, "{}"), &v).unwrap();
        late.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 2 })).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(3), "the stored offset never moves back");
        let rows: i64 = Connection::open(&db).unwrap().query_row("SELECT count(*) FROM \"t\"", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 3, "a record below the stored offset is applied already: skipped");
    }

    #[test]
    fn a_transaction_lost_at_commit_time_is_written_whole_on_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE totals (k INTEGER PRIMARY KEY, n INTEGER)").unwrap();
        let sql = "INSERT INTO totals(k, n) VALUES(1, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1";
        let target = SqliteTarget::new(&db, Some(sql.into()), "g").unwrap();
        target.eos.set_enabled(true).unwrap();
        let mut sink = target.open("t", 0).unwrap();
        let v = serde_json::json!({});
        sink.write(&record(0, "{}"), &v).unwrap();
        sink.write(&record(1, "{}"), &v).unwrap();
        // The disk fills as the offset is written: SQLite rolls back the whole batch.
        sink.fail_next_advance = true;
        let e = sink.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 2 })).unwrap_err();
        assert!(e.unavailable, "{e:?}");
        // The worker tries the flush again: the batch must be written with its offset, not the offset alone.
        sink.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 2 })).unwrap();
        let n: i64 = Connection::open(&db).unwrap().query_row("SELECT n FROM totals", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2, "both records applied, once each");
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(2));
        sink.write(&record(2, "{}"), &v).unwrap();
        sink.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 3 })).unwrap();
        let n: i64 = Connection::open(&db).unwrap().query_row("SELECT n FROM totals", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3, "committed writes are not done again");
    }

    #[test]
    fn a_write_after_sqlite_rolled_back_by_itself_redoes_the_batch_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        // (Default-table rows are written at flush: only a --sql batch has a
        // transaction open between writes.)
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE log (o INTEGER PRIMARY KEY)").unwrap();
        let target = SqliteTarget::new(&db, Some("INSERT INTO log(o) VALUES(:offset)".into()), "g").unwrap();
        let mut sink = target.open("t", 0).unwrap();
        let v = serde_json::json!({});
        sink.write(&record(0, "{}"), &v).unwrap();
        // As SQLite does on an I/O error mid-transaction: the transaction is gone.
        sink.conn.execute_batch("ROLLBACK").unwrap();
        sink.write(&record(1, "{}"), &v).unwrap();
        sink.flush(None).unwrap();
        let rows: i64 = Connection::open(&db).unwrap().query_row("SELECT count(*) FROM log", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2, "the lost write was done again");
    }

    #[test]
    fn a_statement_that_fails_part_way_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE log (n INTEGER PRIMARY KEY)").unwrap();
        // OR FAIL keeps the rows a statement inserted before the one that failed.
        let sql = "INSERT OR FAIL INTO log(n) SELECT value FROM json_each(:ids)";
        let target = SqliteTarget::new(&db, Some(sql.into()), "g").unwrap();
        let mut sink = target.open("t", 0).unwrap();
        sink.write(&record(0, "{}"), &serde_json::json!({"ids": "[1]"})).unwrap();
        let e = sink.write(&record(1, "{}"), &serde_json::json!({"ids": "[2, 1]"})).unwrap_err();
        assert!(e.message.contains("UNIQUE"), "{e:?}");
        sink.flush(None).unwrap();
        let rows: Vec<i64> = Connection::open(&db)
            .unwrap()
            .prepare("SELECT n FROM log ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![1], "the failed record left no row behind");
    }

    #[test]
    fn a_statement_that_returns_rows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        let e = SqliteTarget::new(&db, Some("INSERT INTO t(n) VALUES(1) RETURNING n".into()), "g").err().unwrap();
        assert!(e.contains("returns rows"), "{e}");
    }

    #[test]
    fn the_default_table_keeps_exact_header_bytes_beside_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        // A table from before headers_b64 existed gets the column.
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE \"t\" (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
                 key TEXT, value TEXT, headers TEXT, timestamp INTEGER, PRIMARY KEY (topic, partition, offset))",
            )
            .unwrap();
        let target = SqliteTarget::new(&db, None, "g").unwrap();
        let mut sink = target.open("t", 0).unwrap();
        let headers = crate::engine::headers::build([(&b"\xff"[..], Some(&b"v"[..]))]);
        let odd = OwnedMessage::new(Some(b"{}".to_vec()), None, "t".into(), Timestamp::CreateTime(5), 0, 0, Some(headers));
        sink.write(&odd, &serde_json::json!({})).unwrap();
        sink.write(&record(1, "{}"), &serde_json::json!({})).unwrap();
        sink.flush(None).unwrap();
        let conn = Connection::open(&db).unwrap();
        let exact: Option<String> = conn.query_row("SELECT headers_b64 FROM \"t\" WHERE offset = 0", [], |r| r.get(0)).unwrap();
        let pairs = crate::engine::headers::from_base64(&serde_json::from_str(&exact.unwrap()).unwrap()).unwrap();
        assert_eq!(pairs, vec![(b"\xff".to_vec(), Some(b"v".to_vec()))]);
        let plain: Option<String> = conn.query_row("SELECT headers_b64 FROM \"t\" WHERE offset = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(plain, None, "text headers are exact as text");
    }

    #[test]
    fn a_failed_first_write_leaves_no_transaction_holding_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE log (n INTEGER CHECK (n > 0))").unwrap();
        let target = SqliteTarget::new(&db, Some("INSERT INTO log(n) VALUES(:n)".into()), "g").unwrap();
        let mut sink = target.open("t", 0).unwrap();
        assert!(sink.write(&record(0, "{}"), &serde_json::json!({"n": -1})).is_err());
        // Another writer (another partition's worker) must get the lock at once.
        let other = Connection::open(&db).unwrap();
        other.busy_timeout(Duration::from_millis(100)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO log(n) VALUES(1); COMMIT").expect("the write lock is free");
    }

    #[test]
    fn under_eos_records_below_the_stored_offset_are_applied_already_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE log (o INTEGER)").unwrap();
        let target = SqliteTarget::new(&db, Some("INSERT INTO log(o) VALUES(:offset)".into()), "g").unwrap();
        let v = serde_json::json!({});
        // At-least-once got to 100 in the database; Kafka's commit stayed behind (a crash).
        let mut first = target.open("t", 0).unwrap();
        for o in 0..100 {
            first.write(&record(o, "{}"), &v).unwrap();
        }
        first.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 100 })).unwrap();
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(100));
        // A restart from Kafka's offset 95, switched to eos mid-way: 95..99 are in already.
        let mut second = target.open("t", 0).unwrap();
        target.eos.set_enabled(true).unwrap();
        for o in 95..105 {
            second.write(&record(o, "{}"), &v).unwrap();
        }
        second.flush(Some(&Progress { topic: "t", partition: 0, next_offset: 105 })).unwrap();
        let n: i64 = Connection::open(&db).unwrap().query_row("SELECT count(*) FROM log", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 105, "every record once");
        assert_eq!(target.eos.next_offset("t", 0).unwrap(), Some(105));
    }

    #[test]
    fn a_database_held_by_another_process_costs_one_wait_not_one_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.sqlite");
        let target = SqliteTarget::new(&db, None, "g").unwrap();
        let holder = Connection::open(&db).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let flushes: Vec<_> = (0..4)
            .map(|p| {
                let mut sink = target.open("t", p).unwrap();
                std::thread::spawn(move || {
                    sink.write(&record(0, "{}"), &serde_json::json!({})).unwrap();
                    sink.flush(None).is_err()
                })
            })
            .collect();
        assert!(flushes.into_iter().all(|f| f.join().unwrap()), "every flush failed: the database is held");
        let took = started.elapsed();
        // One partition after another would take 4 × BUSY_TIMEOUT.
        assert!(took < BUSY_TIMEOUT * 3, "took {took:?}");
    }
}
