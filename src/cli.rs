//! Command-line interface. Every `run` option can also come from the
//! environment (where marked) or from the config file; CLI > env > file > defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::security::SecurityArgs;

#[derive(Debug, Parser)]
#[command(name = "kdeck", version, about = "A production Kafka consumer that is its own live dashboard.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a consumer group and process its records.
    Run(RunArgs),
    /// Run against an embedded Kafka cluster with synthetic traffic: nothing to install.
    Demo(DemoArgs),
    /// Read the audit store: dead letters, replays, operator actions, rebalances.
    Audit(AuditArgs),
    /// Inspect and redrive a dead-letter topic (kdeck's, Spring's, Karafka's or Connect's).
    Dlq(DlqArgs),
    /// Lag in records and in time, and a verdict, for consumer groups kdeck does not join;
    /// exits 0 OK, 1 WARN, 2 STALL/STOP/REWIND, 3 unknown or an error.
    Lag(LagArgs),
    /// A live dashboard of consumer groups kdeck does not join: members, lag in records and
    /// in time, verdicts, a lag chart, and offset resets on Empty groups.
    Watch(WatchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub monitor: MonitorArgs,
    /// A JSON snapshot per second on stdout instead of the dashboard (also when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    /// Lag history (SQLite; default history.sqlite in the user's state directory).
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Audit store for offset resets (default audit.sqlite in the user's state directory).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Log file (default: kdeck.log, rotated daily, in the user's state directory).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Which groups to watch and how to judge them (`kdeck lag`, `kdeck watch`).
#[derive(Debug, Args, Clone)]
pub struct MonitorArgs {
    /// Bootstrap brokers, e.g. 127.0.0.1:9092.
    #[arg(short = 'b', long, env = "KDECK_BROKERS")]
    pub brokers: String,
    /// Consumer groups (comma-separated, or repeat the option).
    #[arg(short = 'G', long = "group", value_delimiter = ',', required_unless_present = "all")]
    pub groups: Vec<String>,
    /// Every consumer group of the cluster.
    #[arg(long, conflicts_with = "groups")]
    pub all: bool,
    /// Any librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Commits a partition's verdict looks at (Burrow's window).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub window: u32,
    /// How far back the group's commits are read from __consumer_offsets at start.
    #[arg(long, default_value = "10m")]
    pub lookback: String,
    /// A partition behind with no commit for this long (or the window's span, if longer) is STOP.
    #[arg(long, default_value = "1m")]
    pub stop_after: String,
    /// Bound on each request to the cluster.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: String,
}

#[derive(Debug, Args, Clone)]
pub struct LagArgs {
    #[command(flatten)]
    pub monitor: MonitorArgs,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AuditArgs {
    /// Audit store (default: audit.sqlite in the user's state directory).
    #[arg(long, global = true)]
    pub audit: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum AuditCommand {
    /// Newest events first.
    List {
        /// dead_letter, replay, action or rebalance.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One event in full.
    Show { id: i64 },
    /// Every event as JSON lines (oldest first).
    Export {
        /// JSON lines (the only format for now; kept explicit for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Args, Clone)]
pub struct DlqSource {
    #[arg(short = 'b', long, env = "KDECK_BROKERS")]
    pub brokers: String,
    /// The dead-letter topic.
    #[arg(long)]
    pub dlq: String,
    /// Any librdkafka property (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DlqFilter {
    /// Only this dead-letter partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only this dead-letter offset (with --partition).
    #[arg(long)]
    pub offset: Option<i64>,
    /// Only records whose source topic is this.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Only records of this error class (permanent, retryable) or stage (decode, validate, handle, sink).
    #[arg(long)]
    pub error: Option<String>,
    /// Only records dead-lettered at or after this time (RFC 3339, e.g. 2026-11-26T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records dead-lettered before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand, Clone)]
pub enum DlqCommand {
    /// One line per dead-lettered record: where it came from and why it failed.
    List {
        #[command(flatten)]
        source: DlqSource,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// One record with its headers and a payload preview.
    Show {
        #[command(flatten)]
        source: DlqSource,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        offset: i64,
    },
    /// Replay the records the filter selects (republish to their source, or reprocess here).
    Replay {
        #[command(flatten)]
        source: DlqSource,
        #[command(flatten)]
        filter: DlqFilter,
        /// republish (to the source topic and partition) or reprocess (through --sink here).
        #[arg(long, default_value = "republish")]
        mode: String,
        /// Replay records that were replayed before.
        #[arg(long)]
        force: bool,
        /// For reprocess: pipeline options as for `run`.
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long)]
        audit: Option<PathBuf>,
    },
}

/// decode → validate → sink options, shared by `run` and `dlq replay --mode reprocess`.
#[derive(Debug, Args, Clone, Default)]
pub struct PipelineArgs {
    /// Where handled records go: null (default), jsonl:PATH, sqlite:PATH,
    /// postgres://USER@HOST/DB or exec:'COMMAND'.
    #[arg(long)]
    pub sink: Option<String>,
    /// A file whose first line is the PostgreSQL password (or PGPASSWORD, or ~/.pgpass).
    #[arg(long, value_name = "FILE")]
    pub sink_password_file: Option<PathBuf>,
    /// How values are decoded: json, avro, protobuf, text or bytes (default bytes).
    #[arg(long)]
    pub format: Option<String>,
    /// JSON Schema file every decoded value must satisfy.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Confluent Schema Registry URL; for basic auth put the user in it (https://user@host)
    /// and the password in --registry-password-file or KDECK_REGISTRY_PASSWORD.
    #[arg(long)]
    pub schema_registry: Option<String>,
    /// CA certificate (PEM) the schema registry's HTTPS certificate is checked against.
    #[arg(long, value_name = "PEM")]
    pub registry_ca: Option<PathBuf>,
    /// A file whose first line is the schema registry password (or set KDECK_REGISTRY_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub registry_password_file: Option<PathBuf>,
    /// Local Avro writer schema (.avsc), when there is no registry.
    #[arg(long)]
    pub avro_schema: Option<PathBuf>,
    /// Avro reader schema: records are resolved to it (schema evolution).
    #[arg(long)]
    pub reader_schema: Option<PathBuf>,
    /// Protobuf descriptor set (protoc --descriptor_set_out), when there is no registry.
    #[arg(long)]
    pub proto_descriptor: Option<PathBuf>,
    /// Fully qualified Protobuf message type in --proto-descriptor.
    #[arg(long)]
    pub proto_message: Option<String>,
    /// With --sink sqlite or postgres: a statement run for every record instead of the default table,
    /// inline or a file; named parameters :topic :partition :offset :key :value :timestamp
    /// and each top-level field of a JSON value (:customer, :amount).
    #[arg(long)]
    pub sql: Option<String>,
    /// With --sink exec: how long the child may take to answer a record before it
    /// counts as hung (killed, restarted, the partition held meanwhile) (default 30s).
    #[arg(long)]
    pub exec_timeout: Option<String>,
    /// With --sink exec: records written to the child at once; it still answers each one,
    /// in order. Default 1: the next record is written after the answer, so records
    /// finish in offset order. With N > 1 the records after one answered `retry` or
    /// `fail` keep their answers (the child has them) and may finish before it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub exec_batch: Option<u32>,
    /// With --sink kafka: the output value is a JSON object of these fields (fields:a,b).
    #[arg(long)]
    pub transform: Option<String>,
    /// With --sink kafka and --commit eos: the producer's transactional id (default
    /// kdeck-<group>-<group.instance.id>, else kdeck-<group>-<pid>; two live instances
    /// must not share one, a restarted one should keep its own).
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// Simulated work per record, e.g. 2ms (for demos and tests).
    #[arg(long)]
    pub handler_delay: Option<String>,
}

#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Bootstrap brokers, e.g. 127.0.0.1:9092.
    #[arg(short = 'b', long, env = "KDECK_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id.
    #[arg(short = 'G', long, env = "KDECK_GROUP")]
    pub group: Option<String>,
    /// Topics to subscribe to (comma-separated, or repeat the option).
    #[arg(short = 't', long = "topic", env = "KDECK_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Subscribe to every topic matching this regular expression instead.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Any librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// TOML file with the same keys as these options (and a [properties] table for librdkafka).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// per-message | batch:N | interval:DURATION | at-most-once | eos (exactly-once, with --sink sqlite: or kafka:; default batch:1000).
    #[arg(long)]
    pub commit: Option<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Per-partition queue size: back-pressure pauses a partition when it fills (default 10000).
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Memory for records kdeck holds, all partitions together: librdkafka's
    /// prefetch and fetches (half) and kdeck's queues and parked records (half)
    /// (default 64MiB).
    #[arg(long)]
    pub max_queue_bytes: Option<String>,
    /// How long shutdown waits for in-flight records (default 10s).
    #[arg(long)]
    pub drain_timeout: Option<String>,
    /// Bound on start-up checks: broker reachable, topics exist (default 10s).
    #[arg(long)]
    pub connect_timeout: Option<String>,
    /// With group.instance.id: partitions of the Stable group owned by no
    /// member this long get a rebalance (default 30s).
    #[arg(long)]
    pub unowned_after: Option<String>,
    /// Attempts in all before a failing record is dead-lettered (default 5).
    #[arg(long)]
    pub retry_max: Option<u32>,
    /// Backoff between attempts, BASE..MAX, doubling with jitter (default 200ms..30s).
    #[arg(long)]
    pub retry_backoff: Option<String>,
    /// What a parked record holds back: partition (all later records) or key (same key only).
    #[arg(long)]
    pub ordering: Option<String>,
    /// Dead-letter topic (default: <topic>.dlq).
    #[arg(long)]
    pub dlq: Option<String>,
    /// How long a dead-letter write may take (default 10s).
    #[arg(long)]
    pub dlq_timeout: Option<String>,
    /// Audit store (SQLite; default audit.sqlite in the user's state directory).
    #[arg(long)]
    pub audit: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit once every assigned partition is processed and committed up to its end offset at start.
    #[arg(long)]
    pub stop_at_end: bool,
}

#[derive(Debug, Args, Default, Clone)]
pub struct OutputArgs {
    /// No dashboard: a status line a second on stderr (or JSON lines on stdout with --json).
    #[arg(long)]
    pub headless: bool,
    /// With --headless: one JSON snapshot per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Log file (default: kdeck.log, rotated daily, in the user's state directory).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Use this cluster instead of the embedded one.
    #[arg(short = 'b', long)]
    pub brokers: Option<String>,
    /// With -b: any librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", requires = "brokers")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Records per second produced by the synthetic traffic.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Stop after this long (e.g. 20s); runs until interrupted otherwise.
    #[arg(long)]
    pub duration: Option<String>,
    /// Commit strategy of the demo consumer.
    #[arg(long, default_value = "batch:1000")]
    pub commit: String,
    /// Audit store (default: audit.sqlite in the user's state directory).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}
