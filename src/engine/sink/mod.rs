//! Where handled records go: `null`, `jsonl:PATH`, `sqlite:PATH`, `exec:COMMAND`.

mod eos;
mod exec;
mod jsonl;
mod kafka;
mod group_commit;
mod kafka_txn;
mod postgres;
mod postgres_params;
mod sqlite;

use std::path::PathBuf;

use base64::Engine as _;
use rdkafka::message::{Message, OwnedMessage};
use serde_json::Value;

use super::handler::{Failure, Progress};

/// Receives each decoded, validated record of one partition.
pub trait Sink: Send {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure>;

    /// See `Handler::run_size`.
    fn run_size(&self) -> usize {
        1
    }

    /// See `Handler::handle_run`.
    fn write_run(&mut self, records: &[(&OwnedMessage, &Value)]) -> Vec<Result<(), Failure>> {
        records.iter().map(|(r, v)| self.write(r, v)).collect()
    }
    /// Makes what was written durable (a transaction commit, a file flush).
    fn flush(&mut self, _progress: Option<&Progress>) -> Result<(), Failure> {
        Ok(())
    }

    /// See `Handler::batch_size`.
    fn batch_size(&self) -> Option<usize> {
        None
    }

    /// See `Handler::carry_dead_letter`.
    fn carry_dead_letter(&mut self, _record: &OwnedMessage, _letter: &crate::engine::dlq::Letter) -> bool {
        false
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Nothing: records are decoded, validated and counted.
    Null,
    /// One JSON line per record appended to a file (debugging, scripts).
    Jsonl(PathBuf),
    /// A table per topic in a SQLite database, keyed by (topic, partition, offset).
    Sqlite(PathBuf),
    /// A long-lived child process: a JSON line per record on its stdin, one answer line
    /// per record on its stdout (`ok`, `retry: reason`, `fail: reason`).
    Exec(String),
    /// An output topic (Kafka to Kafka; transactional under `--commit eos`).
    Kafka(String),
    /// A PostgreSQL database (`postgres://user@host/db`), shared by instances.
    Postgres(String),
}

/// Shown as on the dashboard: a PostgreSQL URL without its password.
impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SinkSpec({self})")
    }
}

/// What sinks need besides their spec.
#[derive(Clone)]
pub struct SinkOptions {
    /// The SQLite or PostgreSQL sink's statement per record (`--sql`).
    pub sql: Option<String>,
    /// The PostgreSQL password (`--sink-password-file`).
    pub sink_password: Option<String>,
    /// The consumer group (exactly-once sinks store or send its offsets).
    pub group: String,
    /// For the Kafka sink: the cluster, its client properties, its transactional id
    /// and the value transform.
    pub brokers: String,
    pub properties: Vec<(String, String)>,
    pub transactional_id: Option<String>,
    pub transform: Option<String>,
    /// The exec sink's bound on one answer.
    pub exec_timeout: std::time::Duration,
    /// The exec sink's records in the pipe at once.
    pub exec_batch: usize,
}

/// Without the secrets (the client properties may hold a SASL password).
impl std::fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOptions")
            .field("sql", &self.sql)
            .field("group", &self.group)
            .field("brokers", &self.brokers)
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

/// `--exec-batch`'s default: one record at a time, so they finish in order.
pub const EXEC_BATCH: usize = 1;

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            sql: None,
            sink_password: None,
            group: String::new(),
            brokers: String::new(),
            properties: Vec::new(),
            transactional_id: None,
            transform: None,
            exec_timeout: std::time::Duration::from_secs(30),
            exec_batch: EXEC_BATCH,
        }
    }
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected null, jsonl:PATH, sqlite:PATH, postgres://USER@HOST/DB, exec:'COMMAND' or kafka:TOPIC";
        match s.split_once(':') {
            Some(("postgres" | "postgresql", rest)) if rest.starts_with("//") => Ok(SinkSpec::Postgres(s.to_string())),
            None if s == "null" => Ok(SinkSpec::Null),
            Some(("jsonl", p)) if !p.is_empty() => Ok(SinkSpec::Jsonl(PathBuf::from(p))),
            Some(("sqlite", p)) if !p.is_empty() => Ok(SinkSpec::Sqlite(PathBuf::from(p))),
            Some(("exec", c)) if !c.trim().is_empty() => Ok(SinkSpec::Exec(c.trim().to_string())),
            Some(("kafka", t)) if !t.trim().is_empty() => Ok(SinkSpec::Kafka(t.trim().to_string())),
            _ => Err(format!("unknown sink `{}`: {usage}", postgres::redact(s))),
        }
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Null => write!(f, "null"),
            SinkSpec::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
            SinkSpec::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            SinkSpec::Exec(c) => write!(f, "exec:{c}"),
            SinkSpec::Kafka(t) => write!(f, "kafka:{t}"),
            // Never with its password.
            SinkSpec::Postgres(url) => write!(f, "{}", postgres::redact(url)),
        }
    }
}

/// Opens sinks, one per partition worker, sharing what must be shared.
pub struct SinkFactory {
    kind: FactoryKind,
}

enum FactoryKind {
    Null,
    Jsonl(jsonl::SharedFile),
    Sqlite(sqlite::SqliteTarget),
    Exec(exec::SharedChild),
    Kafka(std::sync::Arc<kafka::KafkaTarget>),
    Postgres(postgres::PostgresTarget),
}

pub use eos::ExactlyOnce;
pub use exec::parse_answer as parse_exec_answer;

impl SinkFactory {
    /// Checks the sink can be used at all (file writable, database opens, command starts),
    /// so a mistake ends the program at start with one sentence.
    pub fn new(spec: &SinkSpec, o: &SinkOptions) -> Result<SinkFactory, String> {
        if o.sql.is_some() && !matches!(spec, SinkSpec::Sqlite(_) | SinkSpec::Postgres(_)) {
            return Err("--sql needs --sink sqlite:PATH or postgres://…".into());
        }
        if o.sink_password.is_some() && !matches!(spec, SinkSpec::Postgres(_)) {
            return Err("--sink-password-file needs --sink postgres://…".into());
        }
        if o.transform.is_some() && !matches!(spec, SinkSpec::Kafka(_)) {
            return Err("--transform needs --sink kafka:TOPIC".into());
        }
        let kind = match spec {
            SinkSpec::Null => FactoryKind::Null,
            SinkSpec::Jsonl(p) => FactoryKind::Jsonl(jsonl::SharedFile::open(p)?),
            SinkSpec::Sqlite(p) => FactoryKind::Sqlite(sqlite::SqliteTarget::new(p, o.sql.clone(), &o.group)?),
            SinkSpec::Postgres(url) => {
                FactoryKind::Postgres(postgres::PostgresTarget::new(url, o.sink_password.as_deref(), o.sql.clone(), &o.group)?)
            }
            SinkSpec::Exec(c) => FactoryKind::Exec(exec::SharedChild::start(c, o.exec_timeout, o.exec_batch)?),
            SinkSpec::Kafka(t) => {
                // Stable across restarts of one instance (its group.instance.id), so a
                // restarted instance aborts what its dead predecessor left open at once.
                let instance = o.properties.iter().rev().find(|(k, _)| k == "group.instance.id").map(|(_, v)| v.clone());
                let id = o.transactional_id.clone().unwrap_or_else(|| match instance {
                    Some(i) => format!("kdeck-{}-{i}", o.group),
                    None => format!("kdeck-{}-{}", o.group, std::process::id()),
                });
                let target = std::sync::Arc::new(kafka::KafkaTarget::new(t, o.transform.as_deref(), &o.brokers, &o.properties, &o.group, &id)?);
                target.start_producer_when_eos_starts();
                FactoryKind::Kafka(target)
            }
        };
        Ok(SinkFactory { kind })
    }

    pub fn open(&self, topic: &str, partition: i32) -> Box<dyn Sink> {
        match &self.kind {
            FactoryKind::Null => Box::new(NullSink),
            FactoryKind::Jsonl(f) => Box::new(f.clone()),
            FactoryKind::Sqlite(t) => match t.open(topic, partition) {
                Ok(s) => Box::new(s),
                Err(e) => Box::new(BrokenSink(e)),
            },
            FactoryKind::Exec(c) => Box::new(c.clone()),
            FactoryKind::Kafka(k) => Box::new(k.open(topic, partition)),
            FactoryKind::Postgres(p) => Box::new(p.open(topic, partition)),
        }
    }

    /// Whether the sink reads the decoded value (the null sink does not).
    pub fn uses_values(&self) -> bool {
        !matches!(self.kind, FactoryKind::Null)
    }

    /// The `--sql` parameters bound from fields of a record's value (not from the
    /// record itself).
    pub fn field_parameters(&self) -> Vec<String> {
        match &self.kind {
            FactoryKind::Sqlite(t) => t.field_parameters(),
            FactoryKind::Postgres(t) => t.field_parameters(),
            _ => Vec::new(),
        }
    }

    /// The exactly-once store, for sinks that can honour `--commit eos`.
    pub fn exactly_once(&self) -> Option<std::sync::Arc<ExactlyOnce>> {
        match &self.kind {
            FactoryKind::Sqlite(t) => Some(t.eos.clone()),
            FactoryKind::Kafka(k) => Some(k.eos.clone()),
            FactoryKind::Postgres(p) => Some(p.eos.clone()),
            _ => None,
        }
    }
}

struct NullSink;
impl Sink for NullSink {
    fn write(&mut self, _: &OwnedMessage, _: &Value) -> Result<(), Failure> {
        Ok(())
    }
}

/// A sink that could not be opened for this partition: every write fails (and is retried).
struct BrokenSink(String);
impl Sink for BrokenSink {
    fn write(&mut self, _: &OwnedMessage, _: &Value) -> Result<(), Failure> {
        Err(Failure::unavailable(super::handler::Stage::Sink, self.0.clone()))
    }
}

/// Bytes as text where they are UTF-8, otherwise lossy text.
pub fn lossy(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The record's headers as a JSON object of text (see `headers::to_json`).
pub fn headers_json(record: &OwnedMessage) -> serde_json::Map<String, Value> {
    super::headers::to_json(&super::headers::of(record))
}

/// A record as JSON, with `value` the decoded value. Headers are text; when a
/// key or value is not UTF-8, `headers_b64` holds them all exactly.
pub fn record_json(record: &OwnedMessage, value: &Value) -> Value {
    let raw = super::headers::of(record);
    let mut json = serde_json::json!({
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "key": lossy(record.key()),
        "value": value,
        "timestamp": record.timestamp().to_millis(),
        "headers": super::headers::to_json(&raw),
    });
    if !super::headers::all_text(&raw) {
        json["headers_b64"] = super::headers::to_base64(&raw);
    }
    json
}

pub fn base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}
