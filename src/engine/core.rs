//! The engine's state and the operations on it. Owned by the poll thread
//! (shared with librdkafka's callbacks, which run on that same thread).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use kdeck_ui::model::{
    DeadLetterView, EngineError, EngineState, PartitionState, PartitionView, RebalanceEvent, RebalanceState, RetryView,
    Snapshot, ThroughputSample,
};
use serde_json::json;
use rdkafka::consumer::{CommitMode as KCommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::backpressure::BackPressure;
use super::commit::{CommitMode, CommitStrategy};
use super::commit_queue::CommitQueue;
use super::context::KConsumer;
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
/// How long an unanswered question about a partition's facts waits before it is asked again.
const FACTS_RETRY: Duration = Duration::from_secs(30);
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
    /// When its facts (committed offset, end) were last asked for.
    asked: Option<Instant>,
    processed: u64,
    processed_at_sample: u64,
    rate: f64,
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
    /// Where async commit outcomes come back. Taken out before the consumer is destroyed.
    pub commit_queue: Option<CommitQueue>,
    async_commit_in_flight: bool,
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
            commit_queue: None,
            async_commit_in_flight: false,
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
        }
    }

    // ---- rebalances -------------------------------------------------------

    /// `starts` holds a start offset where the assignment set one (exactly-once):
    /// everything below it is done.
    pub fn assign(&mut self, consumer: &KConsumer, starts: Vec<(Tp, Option<i64>)>, protocol: String, member_id: String) {
        self.member_id = member_id;
        let tps: Vec<Tp> = starts.iter().map(|(tp, _)| tp.clone()).collect();
        for (tp, start) in &starts {
            if self.parts.contains_key(tp) {
                continue;
            }
            if let Some(eos) = &self.exactly_once {
                eos.next_epoch(&tp.0, tp.1);
            }
            let handler = (self.handlers)(&tp.0, tp.1);
            let worker =
                Worker::spawn(tp.clone(), handler, self.queue_capacity, self.events_tx.clone(), self.retry, self.dlq.clone());
            let mut tracker = OffsetTracker::default();
            if let Some(o) = start {
                tracker.start_at(*o);
            }
            self.parts.insert(
                tp.clone(),
                Part {
                    tracker,
                    worker,
                    stash: VecDeque::new(),
                    position: None,
                    committed: None,
                    high_watermark: None,
                    end_at_assign: None,
                    start: *start,
                    log_start: None,
                    initialized: false,
                    asked: None,
                    bp_since: None,
                    applied_pause: false,
                    processed: 0,
                    processed_at_sample: 0,
                    rate: 0.0,
                    blocked: None,
                    advance_sent: None,
                    largest_record: 0,
                },
            );
        }
        self.sync_pauses(consumer);
        if let Some(eos) = &self.exactly_once {
            // Transactions carry the group's current generation: a member that lost
            // its partitions is fenced by the broker.
            eos.set_group_metadata(consumer.group_metadata());
        }
        let pending = self.pending_rebalance.take();
        let now = SystemTime::now();
        let started = pending.as_ref().map_or(now, |p| p.started);
        let event = RebalanceEvent {
            started_at_ms: ms(started),
            duration_ms: now.duration_since(started).unwrap_or_default().as_millis() as u64,
            protocol,
            gained: tps.iter().map(tp_name).collect(),
            lost: pending.as_ref().map(|p| p.lost.clone()).unwrap_or_default(),
            assignment_lost: pending.is_some_and(|p| p.assignment_lost),
        };
        let summary = format!("rebalance: gained {}, lost {}", event.gained.len(), event.lost.len());
        self.audit.note("rebalance", &summary, &serde_json::to_value(&event).unwrap_or_default());
        self.push_rebalance(event);
        self.rebalance_state = RebalanceState::Stable;
        self.dirty = true;
        tracing::info!("assigned {:?}", tps);
    }

    pub fn rebalance_completing(&mut self) {
        self.pending_rebalance.get_or_insert_with(|| PendingRebalance {
            started: SystemTime::now(),
            lost: Vec::new(),
            assignment_lost: false,
        });
        self.rebalance_state = RebalanceState::CompletingRebalance;
        self.dirty = true;
    }

    /// Stops the workers of the revoked partitions, waits briefly for the record
    /// each has in hand, and commits what finished (unless the assignment was lost:
    /// another member may own them already).
    pub fn revoke(&mut self, consumer: &KConsumer, tps: Vec<Tp>, lost: bool) {
        let pending = self.pending_rebalance.get_or_insert_with(|| PendingRebalance {
            started: SystemTime::now(),
            lost: Vec::new(),
            assignment_lost: false,
        });
        pending.lost.extend(tps.iter().map(tp_name));
        pending.assignment_lost |= lost;
        self.rebalance_state = RebalanceState::PreparingRebalance;
        self.dirty = true;

        let deadline = Instant::now() + self.revoke_timeout;
        for tp in &tps {
            if let Some(part) = self.parts.get_mut(tp) {
                part.stash.clear();
                if !part.worker.stop_and_wait(deadline.saturating_duration_since(Instant::now())) {
                    tracing::warn!("{} still busy at revoke; its record stays uncommitted", tp_name(tp));
                }
            }
        }
        self.drain_events();
        if let Some(eos) = &self.exactly_once {
            // A worker still busy past the wait must not commit for a partition
            // that is no longer ours (its transaction is aborted instead).
            for tp in &tps {
                eos.next_epoch(&tp.0, tp.1);
            }
        }
        if lost {
            tracing::warn!("assignment lost for {:?}: nothing committed for it", tps);
        } else {
            self.commit(consumer, CommitMode::Sync, Some(&tps));
        }
        self.retry_queue.retain(|(tp, _), _| !tps.contains(tp));
        // A pause outlives the assignment in librdkafka: resume before the partition goes.
        let mut resume = TopicPartitionList::new();
        for tp in &tps {
            if let Some(part) = self.parts.remove(tp) {
                if part.applied_pause {
                    resume.add_partition(&tp.0, tp.1);
                }
            }
        }
        if resume.count() > 0 {
            if let Err(e) = consumer.resume(&resume) {
                tracing::warn!("resume of revoked partitions failed: {e}");
            }
        }
        tracing::info!("revoked {:?} (lost: {lost})", tps);
    }

    fn push_rebalance(&mut self, ev: RebalanceEvent) {
        if self.rebalances.len() == REBALANCE_HISTORY {
            self.rebalances.pop_front();
        }
        self.rebalances.push_back(ev);
    }

    // ---- records ------------------------------------------------------------

    /// Hands polled records to their partitions' workers. Under at-most-once they
    /// are committed first.
    pub fn dispatch(&mut self, consumer: &KConsumer, records: Vec<OwnedMessage>) {
        if records.is_empty() {
            return;
        }
        if self.strategy == CommitStrategy::AtMostOnce && self.pending_strategy.is_none() {
            self.commit_received(consumer, &records);
        }
        for record in records {
            let tp = (record.topic().to_string(), record.partition());
            let Some(part) = self.parts.get_mut(&tp) else {
                // Not (or no longer) ours: untracked, so never committed by us.
                continue;
            };
            self.consumed += 1;
            part.start.get_or_insert(record.offset());
            let bytes = record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len);
            part.largest_record = part.largest_record.max(bytes);
            part.tracker.received_sized(record.offset(), bytes);
            part.position = Some(record.offset() + 1);
            if !part.stash.is_empty() {
                part.stash.push_back(record);
            } else if let Err(record) = part.worker.offer(record) {
                part.stash.push_back(record);
            }
        }
    }

    fn commit_received(&mut self, consumer: &KConsumer, records: &[OwnedMessage]) {
        let mut next: BTreeMap<Tp, i64> = BTreeMap::new();
        for r in records {
            let tp = (r.topic().to_string(), r.partition());
            if self.parts.contains_key(&tp) {
                next.insert(tp, r.offset() + 1);
            }
        }
        let offsets: Vec<(Tp, i64)> = next.into_iter().collect();
        self.send_commit(consumer, &offsets, KCommitMode::Sync);
    }

    /// Partitions with nothing in flight are finished up to the consumer's position.
    /// It runs ahead of the last record delivered where librdkafka skipped what is
    /// never delivered (transaction markers; aborted records under read_committed).
    pub fn catch_up_idle(&mut self, consumer: &KConsumer) {
        if self.last_catch_up.elapsed() < CATCH_UP_EVERY || !self.parts.values().any(|p| p.tracker.unfinished() == 0) {
            return;
        }
        self.last_catch_up = Instant::now();
        let positions = match consumer.position() {
            Ok(p) => p,
            Err(e) => return tracing::debug!("reading positions failed: {e}"),
        };
        for e in positions.elements() {
            let (Offset::Offset(pos), Some(part)) = (e.offset(), self.parts.get_mut(&(e.topic().to_string(), e.partition())))
            else {
                continue;
            };
            part.position = part.position.max(Some(pos));
            if part.tracker.caught_up_to(pos) {
                self.dirty = true;
            }
        }
    }

    /// Moves stashed records into worker queues as room frees up.
    pub fn flush_stashes(&mut self) {
        for part in self.parts.values_mut() {
            while let Some(record) = part.stash.pop_front() {
                if let Err(record) = part.worker.offer(record) {
                    part.stash.push_front(record);
                    break;
                }
            }
        }
    }

    /// Takes in what workers report. Needs the consumer to pause partitions that became blocked.
    pub fn drain_events_and_block(&mut self, consumer: &KConsumer) {
        if self.drain_events() {
            self.sync_pauses(consumer);
        }
    }

    /// Returns true when a partition became blocked or unblocked.
    pub fn drain_events(&mut self) -> bool {
        let mut blocked_changed = false;
        while let Ok(Notice { area, error, message }) = self.notices_rx.try_recv() {
            if error {
                self.record_error(area, message.clone());
            }
            if self.notices.len() == ERROR_HISTORY {
                self.notices.pop_front();
            }
            self.notices.push_back(EngineError { at_ms: ms(SystemTime::now()), area: area.into(), message });
            self.dirty = true;
        }
        while let Ok((from, ev)) = self.events_rx.try_recv() {
            // A worker that outlived its partition's revoke reports about an
            // assignment that is gone: nothing of it may touch the new one.
            let tp = ev.tp();
            if self.parts.get(tp).is_none_or(|p| p.worker.id != from) {
                tracing::debug!("ignored a late report of a former worker of {}: {ev:?}", tp_name(tp));
                continue;
            }
            match ev {
                WorkerEvent::Finished { tp, offsets, latencies_us, flushed_to } => {
                    self.latencies_us.extend(latencies_us);
                    if self.sink_commits_offsets() {
                        // The flush's transaction committed this offset with its outputs.
                        self.apply_committed(std::iter::once((tp.clone(), flushed_to)));
                    }
                    let Some(part) = self.parts.get_mut(&tp) else { continue };
                    for o in &offsets {
                        if part.tracker.finished(*o) {
                            part.processed += 1;
                            self.processed += 1;
                            self.finished_since_commit += 1;
                        }
                    }
                }
                WorkerEvent::Failed { tp, offset, failure } => {
                    self.failed += 1;
                    *self.failures.entry(format!("{}/{}", failure.stage, failure.class())).or_insert(0) += 1;
                    tracing::info!("{}@{offset} failed: {failure}", tp_name(&tp));
                }
                WorkerEvent::Parked { tp, view } => {
                    self.retry_queue.insert((tp, view.offset), view);
                }
                WorkerEvent::Unparked { tp, offset } => {
                    self.retry_queue.remove(&(tp, offset));
                }
                WorkerEvent::DeadLettered { view, .. } => {
                    self.dead_lettered += 1;
                    if self.dead_letters.len() == DEAD_LETTER_HISTORY {
                        self.dead_letters.pop_back();
                    }
                    self.dead_letters.push_front(view);
                    self.dirty = true;
                }
                WorkerEvent::Died { tp, reason } => {
                    let message = format!("{} cannot advance: {reason}; nothing past it is committed", tp_name(&tp));
                    tracing::error!("{message}");
                    self.record_error("worker", message.clone());
                    self.fatal.get_or_insert(message);
                    if let Some(part) = self.parts.get_mut(&tp) {
                        part.blocked = Some(reason);
                        blocked_changed = true;
                    }
                }
                WorkerEvent::Blocked { tp, reason } => {
                    if let Some(r) = &reason {
                        tracing::warn!("{} cannot advance: {r}", tp_name(&tp));
                        self.record_error("partition", format!("{} cannot advance: {r}", tp_name(&tp)));
                    }
                    if let Some(part) = self.parts.get_mut(&tp) {
                        part.blocked = reason;
                        blocked_changed = true;
                    }
                }
            }
        }
        blocked_changed
    }

    // ---- commits ------------------------------------------------------------

    pub fn maybe_commit(&mut self, consumer: &KConsumer) {
        if self.pending_strategy.is_some() {
            return; // the switch commits synchronously once in-flight work is done
        }
        if self.async_commit_in_flight {
            // One at a time: the coordinator handles commits in order, so a backlog of
            // them only delays the newest; the next one carries the latest watermark.
            return;
        }
        // Progress can also come from a start offset kept outside Kafka (exactly-once)
        // with nothing finished here since.
        let ahead = self.parts.values().filter(|p| p.tracker.watermark().is_some_and(|w| p.committed.is_none_or(|c| w > c))).count();
        let work = self.finished_since_commit.max(ahead as u64);
        if let Some(mode) = self.strategy.due(work, self.last_commit.elapsed()) {
            self.commit(consumer, mode, None);
        }
    }

    /// Commits the finished watermark of the given partitions (all when None)
    /// wherever it is ahead of what is committed.
    pub fn commit(&mut self, consumer: &KConsumer, mode: CommitMode, only: Option<&[Tp]>) {
        let offsets: Vec<(Tp, i64)> = self
            .parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let w = p.tracker.watermark()?;
                (p.committed.is_none_or(|c| w > c)).then(|| (tp.clone(), w))
            })
            .collect();
        self.finished_since_commit = 0;
        self.last_commit = Instant::now();
        if self.sink_commits_offsets() {
            // Each finished batch's transaction committed its offsets already. What
            // is left is progress without records (past transaction markers): the
            // idle partition's worker commits it in a transaction of its own.
            for (tp, w) in offsets {
                let held = self.operator_paused.contains(&tp);
                let Some(part) = self.parts.get_mut(&tp) else { continue };
                let asked = part.advance_sent.is_some_and(|(o, at)| o == w && at.elapsed() < ADVANCE_RETRY);
                if part.tracker.unfinished() == 0 && !asked && only.is_none() && !held && part.blocked.is_none() {
                    part.worker.command(WorkerCommand::Advance(w));
                    part.advance_sent = Some((w, Instant::now()));
                }
            }
            return;
        }
        let mode = match mode {
            CommitMode::Sync => KCommitMode::Sync,
            CommitMode::Async => KCommitMode::Async,
        };
        self.send_commit(consumer, &offsets, mode);
    }

    fn send_commit(&mut self, consumer: &KConsumer, offsets: &[(Tp, i64)], mode: KCommitMode) {
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        let result = match (mode, &self.commit_queue) {
            (KCommitMode::Async, Some(queue)) => {
                // The outcome comes back through the queue.
                self.async_commit_in_flight = true;
                queue.commit(consumer, &tpl).inspect_err(|_| self.async_commit_in_flight = false)
            }
            _ => consumer
                .commit(&tpl, KCommitMode::Sync)
                .map(|()| self.apply_committed(offsets.iter().cloned()))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            self.commit_failures += 1;
            self.record_error("commit", format!("commit failed: {e}"));
        }
    }

    /// Applies the outcomes of asynchronous commits that have come back.
    pub fn collect_commit_outcomes(&mut self) {
        let Some(queue) = &self.commit_queue else { return };
        for outcome in queue.outcomes() {
            self.async_commit_in_flight = false;
            let mut stored = Vec::new();
            for (tp, offset, error) in outcome.partitions {
                match error.or_else(|| outcome.error.clone()) {
                    None => stored.push((tp, offset)),
                    Some(e) => {
                        self.commit_failures += 1;
                        self.record_error("commit", format!("commit of {} at {offset} failed: {e}", tp_name(&tp)));
                    }
                }
            }
            self.apply_committed(stored.into_iter());
        }
    }

    fn apply_committed(&mut self, offsets: impl Iterator<Item = (Tp, i64)>) {
        let mut any = false;
        for (tp, o) in offsets {
            if let Some(part) = self.parts.get_mut(&tp) {
                if part.committed.is_none_or(|c| o > c) {
                    part.committed = Some(o);
                    any = true;
                }
            }
        }
        if any {
            self.commits += 1;
        }
    }

    // ---- pausing ------------------------------------------------------------

    pub fn set_operator_pause(&mut self, consumer: &KConsumer, tps: Vec<Tp>, paused: bool) {
        let names: Vec<String> = tps.iter().map(tp_name).collect();
        let verb = if paused { "pause" } else { "resume" };
        self.audit.note("action", &format!("{verb} {}", names.join(", ")), &json!({"action": verb, "partitions": names}));
        for tp in tps {
            if paused {
                self.operator_paused.insert(tp);
            } else {
                self.operator_paused.remove(&tp);
            }
        }
        self.sync_pauses(consumer);
        self.dirty = true;
    }

    /// Clears every operator pause, including those of partitions not assigned right now.
    pub fn resume_all(&mut self, consumer: &KConsumer) {
        self.audit.note("action", "resume all", &json!({"action": "resume_all"}));
        self.operator_paused.clear();
        self.sync_pauses(consumer);
        self.dirty = true;
    }

    /// Retry now / dead-letter now for a parked record; false when the partition is not ours.
    pub fn worker_command(&mut self, tp: &Tp, cmd: WorkerCommand) -> bool {
        let Some(part) = self.parts.get(tp) else { return false };
        let (action, offset) = match cmd {
            WorkerCommand::RetryNow(o) => ("retry_now", o),
            WorkerCommand::DeadLetterNow(o) => ("dead_letter_now", o),
            WorkerCommand::Advance(_) => {
                part.worker.command(cmd);
                return true;
            }
        };
        self.audit.note("action", &format!("{action} {}@{offset}", tp_name(tp)), &json!({"action": action, "partition": tp_name(tp), "offset": offset}));
        part.worker.command(cmd);
        true
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

    pub fn apply_backpressure(&mut self, consumer: &KConsumer) {
        let now = Instant::now();
        let mut changed = false;
        // Each partition gets an equal share of the byte budget, and room for two of
        // its largest records at least (else huge records would pause it after each).
        let share = self.queue_bytes / self.parts.len().max(1);
        for (tp, part) in self.parts.iter_mut() {
            let mine = share.max(2 * part.largest_record);
            let bp = BackPressure { high_bytes: mine, low_bytes: mine / 4, ..self.backpressure };
            let decided = bp.decide(part.queued(), part.tracker.unfinished_bytes(), part.bp_since, now);
            if decided.is_some() != part.bp_since.is_some() {
                tracing::info!("back-pressure {} {}", if decided.is_some() { "pauses" } else { "resumes" }, tp_name(tp));
                changed = true;
            }
            part.bp_since = decided;
        }
        if changed {
            self.sync_pauses(consumer);
        }
    }

    /// Tells librdkafka the pause state each partition should have, where it differs.
    fn sync_pauses(&mut self, consumer: &KConsumer) {
        let hold = self.engine_hold();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (tp, part) in self.parts.iter_mut() {
            let by_operator = self.operator_paused.contains(tp);
            part.worker.set_hold(by_operator && !self.draining);
            let want = hold || part.bp_since.is_some() || by_operator || part.blocked.is_some();
            if want != part.applied_pause {
                if want { &mut pause } else { &mut resume }.add_partition(&tp.0, tp.1);
                part.applied_pause = want;
            }
        }
        if pause.count() > 0 {
            if let Err(e) = consumer.pause(&pause) {
                self.record_error("broker", format!("pause failed: {e}"));
            }
        }
        if resume.count() > 0 {
            if let Err(e) = consumer.resume(&resume) {
                self.record_error("broker", format!("resume failed: {e}"));
            }
        }
    }

    /// The engine itself holds every partition while shutdown, or a change to
    /// at-most-once or eos, waits for in-flight records.
    fn engine_hold(&self) -> bool {
        self.draining || self.pending_strategy.is_some_and(drains)
    }

    // ---- commit strategy --------------------------------------------------

    /// Changes the commit strategy. What finished is committed under the old one
    /// first. Between at-least-once strategies that is all it takes: each commits
    /// the same watermark. Into at-most-once, records already received were promised
    /// at-least-once, so fetching pauses until they have finished; only then does
    /// commit-on-receipt start.
    pub fn request_strategy(&mut self, consumer: &KConsumer, strategy: CommitStrategy) {
        if strategy == self.strategy && self.pending_strategy.is_none() {
            return;
        }
        if strategy == CommitStrategy::Eos {
            let refusal = if self.exactly_once.is_none() {
                Some("the sink cannot write offsets with its output (only sqlite:PATH and kafka:TOPIC can)")
            } else if self.retry.ordering == super::worker::RetryOrdering::Key {
                Some("exactly-once needs --ordering partition")
            } else if self.reads_uncommitted {
                Some("isolation.level=read_uncommitted is set: exactly-once must not process output that was rolled back")
            } else {
                None
            };
            if let Some(why) = refusal {
                self.record_error("commit", format!("commit strategy eos refused: {why}"));
                return;
            }
        }
        tracing::info!("commit strategy change requested: {} -> {strategy}", self.strategy);
        self.audit.note(
            "action",
            &format!("commit strategy {} -> {strategy}", self.strategy),
            &json!({"action": "set_commit_strategy", "from": self.strategy.to_string(), "to": strategy.to_string()}),
        );
        self.pending_strategy = Some(strategy);
        if drains(strategy) {
            self.sync_pauses(consumer);
        }
        self.maybe_finish_strategy_switch(consumer);
        self.dirty = true;
    }

    pub fn maybe_finish_strategy_switch(&mut self, consumer: &KConsumer) {
        let Some(next) = self.pending_strategy else { return };
        if drains(next) && self.in_flight() > 0 {
            return;
        }
        self.commit(consumer, CommitMode::Sync, None);
        if let Some(eos) = &self.exactly_once {
            // Into eos: from the next batch on, offsets are stored with the writes.
            // Out of it: the stored offsets are forgotten; Kafka's are the truth again.
            if let Err(e) = eos.set_enabled(next == CommitStrategy::Eos) {
                self.record_error("commit", e);
            }
        }
        tracing::info!("commit strategy now {next} (was {})", self.strategy);
        self.strategy = next;
        self.pending_strategy = None;
        self.sync_pauses(consumer);
        self.dirty = true;
    }

    /// Exactly-once into Kafka: the sink's transactions commit the offsets, not the engine.
    fn sink_commits_offsets(&self) -> bool {
        self.strategy == CommitStrategy::Eos && self.exactly_once.as_ref().is_some_and(|e| e.commits_offsets() && e.enabled())
    }

    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.tracker.unfinished()).sum()
    }

    // ---- shutdown -----------------------------------------------------------

    /// Graceful shutdown: stop fetching, let each worker finish the record in hand
    /// (queued records are dropped unfinished, so never committed), commit what
    /// finished. Waits at most `deadline` for the workers.
    pub fn drain(&mut self, consumer: &KConsumer, deadline: Duration) {
        self.draining = true;
        self.sync_pauses(consumer);
        let until = Instant::now() + deadline;
        for (tp, part) in self.parts.iter_mut() {
            part.stash.clear();
            if !part.worker.stop_and_wait(until.saturating_duration_since(Instant::now())) {
                tracing::warn!("{} still busy at the drain deadline; its record stays uncommitted", tp_name(tp));
            }
        }
        self.drain_events();
        self.commit(consumer, CommitMode::Sync, None);
    }

    /// Why the run did not finish its work: a partition that still cannot advance.
    pub fn blocked_reason(&self) -> Option<String> {
        self.parts.iter().find_map(|(tp, p)| p.blocked.as_ref().map(|r| format!("{} could not advance: {r}", tp_name(tp))))
    }

    // ---- partition facts ----------------------------------------------------

    /// Committed offsets (and, for `--stop-at-end`, log start and end) of newly
    /// assigned partitions: asked of the facts thread, applied when they come,
    /// never waited for here (see `facts.rs`).
    pub fn init_partitions(&mut self) {
        let Some(facts) = &self.facts else { return };
        let answers: Vec<_> = facts.answers().collect();
        let mut changed = false;
        for answer in answers {
            match answer {
                Ok(f) => {
                    // Only about the assignment it was asked for.
                    let Some(part) = self.parts.get_mut(&f.tp).filter(|p| p.worker.id == f.worker) else { continue };
                    part.committed = part.committed.max(f.committed);
                    if let Some((lo, hi)) = f.watermarks {
                        part.end_at_assign = Some(hi);
                        part.high_watermark = part.high_watermark.max(Some(hi));
                        part.log_start = part.log_start.max(Some(lo));
                    }
                    part.initialized = true;
                    changed = true;
                }
                Err(((tp, worker), why)) => {
                    if let Some(part) = self.parts.get_mut(&tp).filter(|p| p.worker.id == worker) {
                        part.asked = Some(Instant::now() - FACTS_RETRY + Duration::from_secs(2)); // again in 2 s
                    }
                    self.record_error("broker", why);
                }
            }
        }
        let ask: Vec<(Tp, WorkerId)> = self
            .parts
            .iter_mut()
            .filter(|(_, p)| !p.initialized && p.asked.is_none_or(|at| at.elapsed() >= FACTS_RETRY))
            .map(|(tp, p)| {
                p.asked = Some(Instant::now());
                (tp.clone(), p.worker.id)
            })
            .collect();
        if !ask.is_empty() {
            if let Some(facts) = &self.facts {
                facts.ask(ask, self.stop_at_end);
            }
        }
        if changed {
            self.dirty = true;
        }
    }

    /// `--stop-at-end`: every assigned partition is processed and committed up to
    /// the end offset it had when it was assigned.
    pub fn at_end(&self) -> bool {
        self.stop_at_end
            && !self.parts.is_empty()
            && self.rebalance_state == RebalanceState::Stable
            && self.parts.values().all(|p| match p.end_at_assign {
                // An empty partition (or one emptied by retention) is at its end already.
                Some(end) => p.committed.is_some_and(|c| c >= end) || p.log_start.is_some_and(|lo| lo >= end),
                None => false,
            })
    }

    pub fn apply_stats(&mut self, stats: &Stats) {
        for (t, p, hi) in stats.high_watermarks() {
            if let Some(part) = self.parts.get_mut(&(t.to_string(), p)) {
                part.high_watermark = Some(hi);
            }
        }
        for (t, p, lo) in stats.log_starts() {
            if let Some(part) = self.parts.get_mut(&(t.to_string(), p)) {
                part.log_start = Some(lo);
            }
        }
        if let Some(g) = &stats.cgrp {
            // Stats see a rebalance start before any callback does (nothing may be revoked).
            if matches!(g.join_state.as_str(), "wait-join" | "wait-metadata")
                && self.rebalance_state == RebalanceState::Stable
                && g.state == "up"
            {
                self.rebalance_state = RebalanceState::PreparingRebalance;
                self.pending_rebalance.get_or_insert_with(|| PendingRebalance {
                    started: SystemTime::now(),
                    lost: Vec::new(),
                    assignment_lost: false,
                });
                self.dirty = true;
            }
        }
        if stats.all_brokers_down() {
            self.record_error("broker", "all brokers are down".to_string());
        }
    }

    pub fn record_error(&mut self, area: &str, message: String) {
        if self.errors.len() == ERROR_HISTORY {
            self.errors.pop_front();
        }
        self.errors.push_back(EngineError { at_ms: ms(SystemTime::now()), area: area.to_string(), message });
        self.dirty = true;
    }

    // ---- the snapshot -------------------------------------------------------

    /// Once a second: throughput sample and per-partition rates.
    pub fn sample(&mut self) {
        let (at, c0, p0, f0) = self.last_sample;
        let secs = at.elapsed().as_secs_f64();
        if secs < 1.0 {
            return;
        }
        if self.throughput.len() == HISTORY {
            self.throughput.pop_front();
        }
        self.throughput.push_back(ThroughputSample {
            at_ms: ms(SystemTime::now()),
            consumed_per_s: (self.consumed - c0) as f64 / secs,
            processed_per_s: (self.processed - p0) as f64 / secs,
            failed_per_s: (self.failed - f0) as f64 / secs,
        });
        if !self.latencies_us.is_empty() {
            self.latencies_us.sort_unstable();
            let at = |q: f64| self.latencies_us[((self.latencies_us.len() - 1) as f64 * q) as usize] as u64;
            self.latency = (at(0.50), at(0.99));
            self.latencies_us.clear();
        }
        for part in self.parts.values_mut() {
            part.rate = (part.processed - part.processed_at_sample) as f64 / secs;
            part.processed_at_sample = part.processed;
        }
        self.last_sample = (Instant::now(), self.consumed, self.processed, self.failed);
    }

    pub fn snapshot(&self, stopped: bool) -> Snapshot {
        let partitions: Vec<PartitionView> = self
            .parts
            .iter()
            .map(|(tp, p)| {
                let state = if p.blocked.is_some() {
                    PartitionState::Blocked
                } else if self.operator_paused.contains(tp) {
                    PartitionState::PausedByOperator
                } else if p.bp_since.is_some() {
                    PartitionState::PausedByBackPressure
                } else if self.engine_hold() {
                    PartitionState::PausedByEngine
                } else {
                    PartitionState::Active
                };
                // Statistics arrive once a second; the end is at least what we have read.
                let high_watermark = p.high_watermark.max(p.position);
                let start = p.start.or(p.log_start.filter(|_| self.starts_at_log_start));
                let lag = lag(high_watermark, p.committed, start);
                PartitionView {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    state,
                    paused: p.applied_pause,
                    position: p.position,
                    committed: p.committed,
                    finished: p.tracker.watermark(),
                    high_watermark,
                    lag,
                    queued: p.queued(),
                    in_flight: p.tracker.unfinished(),
                    rate: p.rate,
                    blocked: p.blocked.clone(),
                }
            })
            .collect();
        let all_paused = !partitions.is_empty() && partitions.iter().all(|p| p.paused);
        let engine_state = if stopped {
            EngineState::Stopped
        } else if self.draining {
            EngineState::Draining
        } else if all_paused {
            EngineState::Paused
        } else if self.rebalances.is_empty() && self.parts.is_empty() {
            EngineState::Starting
        } else {
            EngineState::Running
        };
        Snapshot {
            captured_at_ms: ms(SystemTime::now()),
            started_at_ms: ms(self.started_at),
            cluster: self.identity.cluster.clone(),
            group: self.identity.group.clone(),
            member_id: self.member_id.clone(),
            group_protocol: self.identity.group_protocol.clone(),
            assignor: self.identity.assignor.clone(),
            engine_state,
            commit_strategy: self.strategy.to_string(),
            pending_commit_strategy: self.pending_strategy.map(|s| s.to_string()),
            sink: self.identity.sink.clone(),
            consumed: self.consumed,
            processed: self.processed,
            failed: self.failed,
            commits: self.commits,
            commit_failures: self.commit_failures,
            lag_total: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            rebalance_state: self.rebalance_state,
            rebalances: self.rebalances.iter().cloned().collect(),
            throughput: self.throughput.iter().cloned().collect(),
            errors: self.errors.iter().cloned().collect(),
            retry_queue: {
                let mut q: Vec<RetryView> = self.retry_queue.values().cloned().collect();
                q.sort_by_key(|r| (r.next_due_ms.unwrap_or(u64::MAX), r.partition, r.offset));
                q
            },
            dead_letters: self.dead_letters.iter().cloned().collect(),
            failures: self.failures.clone(),
            dead_lettered: self.dead_lettered,
            notices: self.notices.iter().cloned().collect(),
            latency_p50_us: self.latency.0,
            latency_p99_us: self.latency.1,
            logs: crate::logging::recent(100),
            eos: self.exactly_once.as_ref().map(|e| e.view()),
        }
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
    fn lag_counts_from_the_committed_offset_else_from_where_consuming_started() {
        assert_eq!(lag(Some(100), Some(90), Some(0)), Some(10));
        assert_eq!(lag(Some(100), None, Some(0)), Some(100), "nothing committed: never 0 while records wait");
        assert_eq!(lag(Some(100), None, Some(40)), Some(60));
        assert_eq!(lag(Some(100), Some(100), None), Some(0));
        assert_eq!(lag(None, Some(5), Some(0)), None, "end unknown");
        assert_eq!(lag(Some(100), None, None), None, "start unknown");
        assert_eq!(lag(Some(10), Some(12), None), Some(0), "statistics lag behind a commit");
    }
}
