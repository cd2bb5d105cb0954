//! The view model: everything the screen, the headless JSON status and the
//! metrics endpoint can show. The engine builds a `Snapshot`; views only read it.
//!
//! Times are milliseconds since the Unix epoch so a snapshot is plain data that
//! renders the same way every time (views show time relative to `captured_at_ms`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub captured_at_ms: u64,
    pub started_at_ms: u64,
    pub cluster: String,
    pub group: String,
    pub member_id: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_protocol: String,
    /// The assignor for classic groups (e.g. `range`, `cooperative-sticky`); the broker assigns under KIP-848.
    pub assignor: String,
    pub engine_state: EngineState,
    pub commit_strategy: String,
    /// Set while a strategy change waits for in-flight records to finish under the old one.
    pub pending_commit_strategy: Option<String>,
    pub sink: String,
    pub consumed: u64,
    pub processed: u64,
    pub failed: u64,
    pub commits: u64,
    pub commit_failures: u64,
    /// Sum over assigned partitions of `lag`; None while any of them is unknown.
    pub lag_total: Option<i64>,
    pub partitions: Vec<PartitionView>,
    pub rebalance_state: RebalanceState,
    /// Newest last, bounded.
    pub rebalances: Vec<RebalanceEvent>,
    /// One sample a second, newest last, bounded.
    pub throughput: Vec<ThroughputSample>,
    /// Recent engine errors (broker unreachable, commit failed, ...), newest last, bounded.
    pub errors: Vec<EngineError>,
    /// Records parked for another attempt, soonest due first.
    pub retry_queue: Vec<RetryView>,
    /// Records sent to the dead-letter topic, newest first, bounded.
    pub dead_letters: Vec<DeadLetterView>,
    /// Failed attempts by `stage/class` (e.g. `decode/permanent`, `handle/retryable`).
    pub failures: std::collections::BTreeMap<String, u64>,
    pub dead_lettered: u64,
    /// Outcomes of operator actions that finish later (replays), newest last, bounded.
    pub notices: Vec<EngineError>,
    /// Processing time per record over the last second's records, in microseconds.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    /// Recent log lines of the process, newest last, bounded.
    pub logs: Vec<LogLine>,
    /// Exactly-once state, when the sink can honour `eos`.
    pub eos: Option<EosView>,
    /// Rebalances (assignments and revocations) since start.
    #[serde(default)]
    pub rebalances_total: u64,
    /// Offset commits from request to the broker's answer.
    #[serde(default)]
    pub commit_latency: LatencyHistogram,
}

/// Durations in fixed buckets, as a Prometheus histogram keeps them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyHistogram {
    /// Upper bounds, ascending.
    pub bounds_ms: Vec<f64>,
    /// Per bucket (not cumulative); one more than `bounds_ms`: the last is beyond them.
    pub counts: Vec<u64>,
    pub sum_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let bounds_ms = vec![1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
        LatencyHistogram { counts: vec![0; bounds_ms.len() + 1], bounds_ms, sum_ms: 0.0 }
    }
}

impl LatencyHistogram {
    pub fn observe(&mut self, ms: f64) {
        let i = self.bounds_ms.iter().position(|b| ms <= *b).unwrap_or(self.bounds_ms.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_ms += ms;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EosView {
    /// `sqlite` or `kafka`.
    pub sink: String,
    pub enabled: bool,
    /// Transactions committed (batches with their offsets).
    pub commits: u64,
    pub aborts: u64,
    /// The transaction being committed now, if any: its records and when it began.
    pub open_records: Option<usize>,
    pub open_since_ms: Option<u64>,
    /// The last abort or fencing, and why.
    pub last_problem: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub at_ms: u64,
    /// ERROR, WARN, INFO, DEBUG, TRACE.
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RetryView {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Attempts made so far.
    pub attempt: u32,
    /// When the next attempt is due; None while it waits behind an earlier record of its key.
    pub next_due_ms: Option<u64>,
    pub stage: String,
    pub last_error: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeadLetterView {
    pub at_ms: u64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub stage: String,
    /// `permanent` (decode, validation, or the handler said so) or `retryable` (attempts exhausted).
    pub class: String,
    pub message: String,
    pub attempts: u32,
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    /// Row of the audit store holding the full record, for replay.
    pub audit_id: Option<i64>,
    /// Original headers, as text.
    pub headers: Vec<(String, String)>,
    /// The value: pretty JSON when it parses, text otherwise; truncated.
    pub value_preview: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EngineState {
    #[default]
    Starting,
    Running,
    /// Every assigned partition is paused (by the operator or for a strategy change).
    Paused,
    /// Shutting down: no new fetches, finishing in-flight work.
    Draining,
    Stopped,
    Error,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum RebalanceState {
    #[default]
    Stable,
    PreparingRebalance,
    CompletingRebalance,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    #[default]
    Active,
    PausedByOperator,
    PausedByBackPressure,
    /// Paused by the engine while a commit-strategy change or shutdown drains in-flight work.
    PausedByEngine,
    /// Paused because a record cannot be finished (its dead-letter write keeps failing).
    Blocked,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub state: PartitionState,
    pub paused: bool,
    /// Next offset the consumer will hand out (last received + 1).
    pub position: Option<i64>,
    /// Last offset committed to the group (the next record to read after a restart).
    pub committed: Option<i64>,
    /// Everything below this offset has finished processing.
    pub finished: Option<i64>,
    pub high_watermark: Option<i64>,
    /// `high_watermark - committed` (what a restart would have to read again);
    /// with nothing committed, `high_watermark -` where consuming started. None
    /// while either end is unknown.
    pub lag: Option<i64>,
    /// Now less the timestamp of the oldest record not yet committed (0 when
    /// caught up); None while unknown.
    #[serde(default)]
    pub lag_ms: Option<i64>,
    /// Now less the timestamp of the last record processed.
    #[serde(default)]
    pub last_processed_age_ms: Option<i64>,
    /// Records waiting in this partition's worker queue.
    pub queued: usize,
    /// Records received but not yet finished (queued + being processed).
    pub in_flight: usize,
    /// Records processed per second over the last second.
    pub rate: f64,
    /// Why the partition cannot advance, when it cannot (e.g. the dead-letter topic refuses writes).
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RebalanceEvent {
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// `eager`, `cooperative` or `none` as librdkafka reports the protocol in use.
    pub protocol: String,
    /// `topic[partition]` strings.
    pub gained: Vec<String>,
    pub lost: Vec<String>,
    /// True when partitions were lost (not revoked cleanly): nothing was committed for them.
    pub assignment_lost: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ThroughputSample {
    pub at_ms: u64,
    pub consumed_per_s: f64,
    pub processed_per_s: f64,
    pub failed_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EngineError {
    pub at_ms: u64,
    /// What the error concerns: `broker`, `commit`, `rebalance`, `handler`, `config`.
    pub area: String,
    pub message: String,
}

impl Snapshot {
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionView> {
        self.partitions.iter().find(|p| p.topic == topic && p.partition == partition)
    }
}
