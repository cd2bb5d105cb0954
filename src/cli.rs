//! Command-line interface. Every `run` option can also come from the
//! environment (where marked) or from the config file; CLI > env > file > defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// per-message | batch:N | interval:DURATION | at-most-once (default batch:1000).
    #[arg(long)]
    pub commit: Option<String>,
    /// Where handled records go: null (default) or jsonl:PATH.
    #[arg(long)]
    pub sink: Option<String>,
    /// Simulated work per record, e.g. 2ms (for demos and tests).
    #[arg(long)]
    pub handler_delay: Option<String>,
    /// Per-partition queue size: back-pressure pauses a partition when it fills (default 10000).
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// How long shutdown waits for in-flight records (default 10s).
    #[arg(long)]
    pub drain_timeout: Option<String>,
    /// Bound on start-up checks: broker reachable, topics exist (default 10s).
    #[arg(long)]
    pub connect_timeout: Option<String>,
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
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Use this cluster instead of the embedded one.
    #[arg(short = 'b', long)]
    pub brokers: Option<String>,
    /// Records per second produced by the synthetic traffic.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Stop after this long (e.g. 20s); runs until interrupted otherwise.
    #[arg(long)]
    pub duration: Option<String>,
    /// Commit strategy of the demo consumer.
    #[arg(long, default_value = "batch:1000")]
    pub commit: String,
    #[command(flatten)]
    pub output: OutputArgs,
}
