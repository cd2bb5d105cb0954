//! The engine's state and the operations on it. Owned by the poll thread
//! (shared with librdkafka's callbacks, which run on that same thread).

mod commits;
mod dispatch;
mod lifecycle;
mod pauses;
mod rebalance;
mod switch;
mod telemetry;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod unit_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use kdeck_ui::model::{
    DeadLetterView, EngineError, EngineState, PartitionState, PartitionView, RebalanceEvent, RebalanceState, RetryView,
    Snapshot, ThroughputSample,
};
use serde_json::json;
use super::broker::Broker;
use rdkafka::message::{Message, OwnedMessage};

use super::backpressure::BackPressure;
use super::commit::{CommitMode, CommitStrategy};
use super::handler::HandlerFactory;
use super::offsets::OffsetTracker;
use super::stats::Stats;
use super::audit::Audit;
use super::dlq::DeadLetterQueue;
use super::worker::{RetryPolicy, Worker, WorkerCommand, WorkerEvent, WorkerId};
use std::sync::Arc;
use super::Tp;

const HISTORY: usize = 300;
const REBALANCE_HISTORY: usize = 50;
const ERROR_HISTORY: usize = 50;
const DEAD_LETTER_HISTORY: usize = 100;
/// How often idle partitions are moved to the consumer's position.
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);
/// A partition's record time is asked for at most this often.
pub(super) const RECORD_TIME_EVERY: Duration = Duration::from_secs(1);
/// An unanswered question about the same offset is asked again after this.
pub(super) const RECORD_TIME_RETRY: Duration = Duration::from_secs(5);
/// How long after a failed answer a partition's facts are asked for again.
const FACTS_RETRY: Duration = Duration::from_secs(2);
/// How long an unanswered request to commit past transaction markers waits before it is repeated.
const ADVANCE_RETRY: Duration = Duration::from_secs(5);

/// Something that happened off the poll thread, for the screen: an outcome of
/// background work, or a warning librdkafka logged on one of its threads.
#[derive(Debug, Clone)]
pub struct Notice {
    pub area: &'static str,
    /// Also recorded as an engine error (the status line's "last error").
    pub error: bool,
    pub message: String,
}

/// Fixed facts about the engine, shown in the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub cluster: String,
    pub group: String,
    pub group_protocol: String,
    pub assignor: String,
    pub sink: String,
}

struct Part {
    tracker: OffsetTracker,
    worker: Worker,
    /// Records the worker's full queue could not take yet (rare: we pause at the high-water mark).
    stash: VecDeque<OwnedMessage>,
    position: Option<i64>,
    committed: Option<i64>,
    high_watermark: Option<i64>,
    /// End offset when assigned, for `--stop-at-end`.
    end_at_assign: Option<i64>,
    /// Where consuming started: the first record received, or a start offset
    /// kept outside Kafka.
    start: Option<i64>,
    /// The oldest offset retention has kept.
    log_start: Option<i64>,
    initialized: bool,
    bp_since: Option<Instant>,
    /// What librdkafka was last told (it cannot be asked).
    applied_pause: bool,
    /// When its facts (committed offset, end) are to be asked for; None while a
    /// question is out (or answered).
    facts_due: Option<Instant>,
    processed: u64,
    processed_at_sample: u64,
    rate: f64,
    /// The timestamp of the last record processed here.
    last_processed_ts: Option<i64>,
    /// (offset, its record's timestamp): for lag in time, read once per committed offset.
    record_time: Option<(i64, Option<i64>)>,
    /// The offset whose record time was last asked for, and when.
    record_time_asked: Option<(i64, Instant)>,
    /// Why the partition cannot advance (dead-letter writes failing).
    blocked: Option<String>,
    /// The offset an exactly-once sink was last asked to commit with no records
    /// (past transaction markers), and when.
    advance_sent: Option<(i64, Instant)>,
    /// The largest record seen, in bytes (the byte budget always has room for two).
    largest_record: usize,
}

impl Part {
    fn queued(&self) -> usize {
        self.worker.queued() + self.stash.len()
    }

    /// The offset lag counts from: the committed one, else where consuming started.
    fn oldest_uncommitted(&self, starts_at_log_start: bool) -> Option<i64> {
        self.committed.or(self.start).or(self.log_start.filter(|_| starts_at_log_start))
    }

    /// Now less the timestamp of the oldest record not yet committed; 0 when
    /// caught up; None while that record's time is not known.
    fn lag_ms(&self, lag: Option<i64>, starts_at_log_start: bool, now_ms: i64) -> Option<i64> {
        match lag? {
            0 => Some(0),
            _ => match (self.record_time, self.oldest_uncommitted(starts_at_log_start)) {
                (Some((at, Some(ts))), Some(from)) if at == from => Some((now_ms - ts).max(0)),
                _ => None,
            },
        }
    }
}

struct PendingRebalance {
    started: SystemTime,
    lost: Vec<String>,
    assignment_lost: bool,
}

pub struct Core {
    pub identity: Identity,
    member_id: String,
    strategy: CommitStrategy,
    pending_strategy: Option<CommitStrategy>,
    parts: BTreeMap<Tp, Part>,
    /// Operator pauses, kept across rebalances: re-applied when a partition comes back.
    operator_paused: BTreeSet<Tp>,
    backpressure: BackPressure,
    queue_capacity: usize,
    revoke_timeout: Duration,
    handlers: HandlerFactory,
    retry: RetryPolicy,
    dlq: Arc<DeadLetterQueue>,
    exactly_once: Option<Arc<crate::engine::sink::ExactlyOnce>>,
    audit: Arc<Audit>,
    retry_queue: BTreeMap<(Tp, i64), RetryView>,
    dead_letters: VecDeque<DeadLetterView>,
    dead_lettered: u64,
    failures: BTreeMap<String, u64>,
    /// Outcomes of background work (replays) and warnings from librdkafka's threads.
    notices_tx: Sender<Notice>,
    notices_rx: Receiver<Notice>,
    notices: VecDeque<EngineError>,
    /// Handling times since the last sample, and the percentiles of the last one.
    latencies_us: Vec<u32>,
    latency: (u64, u64),
    async_commit_in_flight: bool,
    /// When the commit in flight was sent (its latency is measured at the answer).
    async_commit_sent: Instant,
    commit_latency: kdeck_ui::model::LatencyHistogram,
    rebalances_total: u64,
    events_tx: Sender<(WorkerId, WorkerEvent)>,
    events_rx: Receiver<(WorkerId, WorkerEvent)>,
    stop_at_end: bool,
    draining: bool,
    rebalance_state: RebalanceState,
    pending_rebalance: Option<PendingRebalance>,
    rebalances: VecDeque<RebalanceEvent>,
    errors: VecDeque<EngineError>,
    consumed: u64,
    processed: u64,
    failed: u64,
    commits: u64,
    commit_failures: u64,
    finished_since_commit: u64,
    last_commit: Instant,
    last_catch_up: Instant,
    throughput: VecDeque<ThroughputSample>,
    last_sample: (Instant, u64, u64, u64),
    started_at: SystemTime,
    /// Set when something happened that the screen should show at once.
    pub dirty: bool,
    /// Why the engine must stop: a partition can never advance again (its worker died).
    pub fatal: Option<String>,
    /// With nothing committed, consuming starts at the log start (`auto.offset.reset=earliest`).
    pub starts_at_log_start: bool,
    /// `-X isolation.level=read_uncommitted`: eos is refused.
    pub reads_uncommitted: bool,
    /// Bytes of records kdeck may hold, shared by the assigned partitions.
    pub queue_bytes: usize,
    /// Reads partition facts off the poll thread.
    pub facts: Option<super::facts::PartitionFacts>,
    /// Reads the timestamps behind lag in time off the poll thread.
    pub record_times: Option<super::record_times::RecordTimes>,
}

impl Core {
    pub fn new(
        identity: Identity,
        strategy: CommitStrategy,
        queue_capacity: usize,
        revoke_timeout: Duration,
        handlers: HandlerFactory,
        stop_at_end: bool,
        retry: RetryPolicy,
        dlq: Arc<DeadLetterQueue>,
        exactly_once: Option<Arc<crate::engine::sink::ExactlyOnce>>,
    ) -> Core {
        let audit = dlq.audit().clone();
        let (notices_tx, notices_rx) = crossbeam_channel::unbounded();
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        Core {
            identity,
            member_id: String::new(),
            strategy,
            pending_strategy: None,
            parts: BTreeMap::new(),
            operator_paused: BTreeSet::new(),
            backpressure: BackPressure::new(queue_capacity, usize::MAX),
            queue_capacity,
            revoke_timeout,
            handlers,
            retry,
            dlq,
            exactly_once,
            audit,
            retry_queue: BTreeMap::new(),
            dead_letters: VecDeque::new(),
            dead_lettered: 0,
            failures: BTreeMap::new(),
            notices_tx,
            notices_rx,
            notices: VecDeque::new(),
            latencies_us: Vec::new(),
            latency: (0, 0),
            async_commit_in_flight: false,
            async_commit_sent: Instant::now(),
            commit_latency: Default::default(),
            rebalances_total: 0,
            events_tx,
            events_rx,
            stop_at_end,
            draining: false,
            rebalance_state: RebalanceState::Stable,
            pending_rebalance: None,
            rebalances: VecDeque::new(),
            errors: VecDeque::new(),
            consumed: 0,
            processed: 0,
            failed: 0,
            commits: 0,
            commit_failures: 0,
            finished_since_commit: 0,
            last_commit: Instant::now(),
            last_catch_up: Instant::now(),
            throughput: VecDeque::new(),
            last_sample: (Instant::now(), 0, 0, 0),
            started_at: SystemTime::now(),
            dirty: true,
            fatal: None,
            starts_at_log_start: true,
            reads_uncommitted: false,
            queue_bytes: 32 << 20,
            facts: None,
            record_times: None,
        }
    }

    pub fn notices(&self) -> Sender<Notice> {
        self.notices_tx.clone()
    }
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }
    pub fn dlq(&self) -> &Arc<DeadLetterQueue> {
        &self.dlq
    }
    pub fn handlers(&self) -> &HandlerFactory {
        &self.handlers
    }
    pub fn assigned(&self) -> Vec<Tp> {
        self.parts.keys().cloned().collect()
    }
}


/// What a restart would have to read again: end − committed; with nothing
/// committed, end − where consuming started. Unknown (None) while either is.
fn lag(end: Option<i64>, committed: Option<i64>, start: Option<i64>) -> Option<i64> {
    Some((end? - committed.or(start)?).max(0))
}

/// Strategies whose promise differs for records already received: switching to
/// them waits until those have finished under the old one.
fn drains(s: CommitStrategy) -> bool {
    matches!(s, CommitStrategy::AtMostOnce | CommitStrategy::Eos)
}

pub fn tp_name(tp: &Tp) -> String {
    format!("{}[{}]", tp.0, tp.1)
}

pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    pub(super) fn lag_counts_from_the_committed_offset_else_from_where_consuming_started() {
        assert_eq!(lag(Some(100), Some(90), Some(0)), Some(10));
        assert_eq!(lag(Some(100), None, Some(0)), Some(100), "nothing committed: never 0 while records wait");
        assert_eq!(lag(Some(100), None, Some(40)), Some(60));
        assert_eq!(lag(Some(100), Some(100), None), Some(0));
        assert_eq!(lag(None, Some(5), Some(0)), None, "end unknown");
        assert_eq!(lag(Some(100), None, None), None, "start unknown");
        assert_eq!(lag(Some(10), Some(12), None), Some(0), "statistics lag behind a commit");
    }
}
