//! One worker thread per assigned partition: records of a partition are
//! handled in order, and a slow partition never holds up the others or the
//! poll thread. Failed records are parked in a retry queue with exponential
//! backoff; what cannot succeed goes to the dead-letter topic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use kdeck_ui::model::{DeadLetterView, RetryView};
use rand::Rng;
use rdkafka::message::{Message, OwnedMessage};

use super::dlq::DeadLetterQueue;
use super::handler::{Failure, Handler, Progress, Stage};
use super::Tp;

/// What workers tell the poll thread.
#[derive(Debug)]
pub enum WorkerEvent {
    /// These records finished (handled and flushed, or acknowledged by the dead-letter topic),
    /// with the handling time of those that were handled successfully.
    /// `flushed_to` is the partition's next offset given to that flush (an
    /// exactly-once sink committed it in the same transaction);
    /// `last_timestamp_ms` the timestamp of the last of them.
    Finished { tp: Tp, offsets: Vec<i64>, latencies_us: Vec<u32>, flushed_to: i64, last_timestamp_ms: Option<i64> },
    /// An attempt failed.
    Failed { tp: Tp, offset: i64, failure: Failure },
    /// A record entered (or was updated in) the retry queue.
    Parked { tp: Tp, view: RetryView },
    /// A record left the retry queue.
    Unparked { tp: Tp, offset: i64 },
    DeadLettered { tp: Tp, view: DeadLetterView },
    /// Dead-letter writes fail (Some) or work again (None): the partition cannot advance meanwhile.
    Blocked { tp: Tp, reason: Option<String> },
    /// The worker thread panicked (a bug): the partition can never advance.
    Died { tp: Tp, reason: String },
}

impl WorkerEvent {
    pub fn tp(&self) -> &Tp {
        match self {
            WorkerEvent::Finished { tp, .. }
            | WorkerEvent::Failed { tp, .. }
            | WorkerEvent::Parked { tp, .. }
            | WorkerEvent::Unparked { tp, .. }
            | WorkerEvent::DeadLettered { tp, .. }
            | WorkerEvent::Blocked { tp, .. }
            | WorkerEvent::Died { tp, .. } => tp,
        }
    }
}

/// Operator commands for a parked record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCommand {
    RetryNow(i64),
    DeadLetterNow(i64),
    /// Everything below this offset is finished though no record of it is in
    /// hand (transaction markers, aborted records): flush that progress alone,
    /// so a sink that commits offsets in its transactions moves past them.
    Advance(i64),
}

/// Which later records a parked record holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryOrdering {
    /// Every later record of its partition (strict order).
    #[default]
    Partition,
    /// Only later records with the same key; others go on.
    Key,
}

impl std::str::FromStr for RetryOrdering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "partition" => Ok(RetryOrdering::Partition),
            "key" => Ok(RetryOrdering::Key),
            _ => Err(format!("unknown ordering `{s}`: expected partition or key")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the record is dead-lettered.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub ordering: RetryOrdering,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, base: Duration::from_millis(200), max: Duration::from_secs(30), ordering: RetryOrdering::Partition }
    }
}

impl RetryPolicy {
    /// Exponential backoff after `attempt` failed attempts, with jitter in [½, 1] of it
    /// so partitions failing together do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.max);
        exp.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Parses `BASE..MAX`, e.g. `200ms..30s`.
    pub fn parse_backoff(s: &str) -> Result<(Duration, Duration), String> {
        let err = || format!("--retry-backoff `{s}` is not BASE..MAX, e.g. 200ms..30s");
        let (a, b) = s.split_once("..").ok_or_else(err)?;
        let (a, b) = (humantime::parse_duration(a.trim()).map_err(|_| err())?, humantime::parse_duration(b.trim()).map_err(|_| err())?);
        if a.is_zero() || b < a {
            return Err(format!("--retry-backoff `{s}`: BASE must be above 0 and MAX at least BASE"));
        }
        Ok((a, b))
    }
}

/// Records handled between flushes when the queue stays full.
const MAX_BATCH: usize = 256;
/// How often an idle or waiting worker looks at commands and the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Which worker an event came from: a partition revoked and assigned again
/// gets a new worker, and what the old one still reports is not about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerId(u64);

static NEXT_WORKER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Worker {
    pub id: WorkerId,
    /// Records go over in chunks (what one poll brought for the partition): one
    /// wake-up of the worker per chunk, not per record.
    tx: Option<Sender<Vec<OwnedMessage>>>,
    /// Records handed over and not yet taken up by the handler.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    commands: Sender<WorkerCommand>,
    stop: Arc<AtomicBool>,
    /// Set while the operator pauses the partition: no new record is started.
    hold: Arc<AtomicBool>,
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(
        tp: Tp,
        handler: Box<dyn Handler>,
        capacity: usize,
        events: Sender<(WorkerId, WorkerEvent)>,
        retry: RetryPolicy,
        dlq: Arc<DeadLetterQueue>,
    ) -> Worker {
        // Every chunk holds a record at least, so chunks never outnumber records.
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Vec<OwnedMessage>>(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
        let id = WorkerId(NEXT_WORKER.fetch_add(1, AtomicOrdering::Relaxed));
        let (died_tx, died_tp) = (events.clone(), tp.clone());
        let mut state = State {
            tp: tp.clone(),
            id,
            handler,
            rx,
            queued: queued.clone(),
            commands: commands_rx,
            stop: stop.clone(),
            hold: hold.clone(),
            events,
            retry,
            dlq,
            parked: Vec::new(),
            panic_failpoint: std::env::var("KDECK_FAILPOINT").is_ok_and(|f| f == "panic-worker"),
            done: Vec::with_capacity(MAX_BATCH),
            done_last_ts: None,
            latencies_us: Vec::with_capacity(MAX_BATCH),
            blocked: None,
            current: None,
            in_hand: Vec::new(),
            ahead: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kdeck-{}-{}", tp.0, tp.1))
            .spawn(move || {
                let _exit = exit_tx; // dropped when the thread ends: wakes `wait`
                // A panic must never end a partition's processing silently.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run())) {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    let at = state.current.map(|o| format!(" at offset {o}")).unwrap_or_default();
                    let reason = format!("its worker crashed{at}: {message}");
                    let _ = died_tx.send((id, WorkerEvent::Died { tp: died_tp, reason }));
                }
            })
            .expect("spawn worker thread");
        Worker { id, tx: Some(tx), queued, capacity, commands, stop, hold, exited, thread: Some(thread) }
    }

    /// Hands over as many records from the front of `waiting` as the queue has
    /// room for, in one chunk, without blocking.
    pub fn offer_from(&self, waiting: &mut VecDeque<OwnedMessage>) {
        let Some(tx) = self.tx.as_ref() else { return };
        let room = self.capacity.saturating_sub(self.queued.load(AtomicOrdering::SeqCst));
        let n = room.min(waiting.len());
        if n == 0 {
            return;
        }
        let chunk: Vec<OwnedMessage> = waiting.drain(..n).collect();
        self.queued.fetch_add(n, AtomicOrdering::SeqCst);
        if let Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) = tx.try_send(chunk) {
            self.queued.fetch_sub(n, AtomicOrdering::SeqCst);
            for record in chunk.into_iter().rev() {
                waiting.push_front(record);
            }
        }
    }

    pub fn command(&self, cmd: WorkerCommand) {
        let _ = self.commands.send(cmd);
    }

    /// Holds (or releases) the worker before its next record: an operator pause
    /// stops progress at once, not after the queue has drained.
    pub fn set_hold(&self, hold: bool) {
        self.hold.store(hold, AtomicOrdering::SeqCst);
    }

    /// Records waiting in the queue (not counting the one being handled or parked ones).
    pub fn queued(&self) -> usize {
        self.queued.load(AtomicOrdering::SeqCst)
    }

    /// Stops after the record in hand (queued and parked ones are dropped: they
    /// are not finished, so they are not committed) and waits up to `deadline`.
    /// Returns false if the worker was still busy at the deadline.
    pub fn stop_and_wait(&mut self, deadline: Duration) -> bool {
        self.stop.store(true, AtomicOrdering::SeqCst);
        self.tx = None;
        match self.exited.recv_timeout(deadline) {
            Err(RecvTimeoutError::Timeout) => false,
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                true
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker dropped without a wait (engine failure) must not outlive it by long.
        self.stop.store(true, AtomicOrdering::SeqCst);
    }
}

/// The failure a record is dead-lettered with when the operator sends it there.
fn by_operator(failure: Failure) -> Failure {
    Failure { message: format!("{} (sent to the dead-letter topic by the operator)", failure.message), ..failure }
}

/// How a hold on a record ends.
enum Hold {
    Retry,
    DeadLetter,
    Stopped,
}

struct Parked {
    record: OwnedMessage,
    attempts: u32,
    /// None while it waits behind an earlier parked record of the same key.
    due: Option<Instant>,
    failure: Failure,
}

struct State {
    tp: Tp,
    handler: Box<dyn Handler>,
    rx: Receiver<Vec<OwnedMessage>>,
    /// Shared with the Worker: records in the channel and in `ahead`.
    queued: Arc<AtomicUsize>,
    commands: Receiver<WorkerCommand>,
    stop: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    id: WorkerId,
    events: Sender<(WorkerId, WorkerEvent)>,
    retry: RetryPolicy,
    dlq: Arc<DeadLetterQueue>,
    /// In offset order.
    parked: Vec<Parked>,
    /// Test failpoint (`KDECK_FAILPOINT=panic-worker`): the worker panics at its first
    /// record, to prove the dashboard gives the terminal back whatever thread fails.
    panic_failpoint: bool,
    /// Handled, not yet flushed and reported.
    done: Vec<i64>,
    /// The timestamp of the last of `done`'s records.
    done_last_ts: Option<i64>,
    latencies_us: Vec<u32>,
    /// Why the partition cannot advance, as last told to the engine.
    blocked: Option<String>,
    /// The record being handled, for the report if the worker dies.
    current: Option<i64>,
    /// The records being attempted or dead-lettered (neither finished nor parked;
    /// more than one when the operator acts during a hold) while a flush runs in
    /// the middle of them: progress must not pass them.
    in_hand: Vec<i64>,
    /// Records of the chunks taken from the channel, not yet handled (and those
    /// of a run the handler did not get to: a sink that broke part-way).
    ahead: VecDeque<OwnedMessage>,
}

impl State {
    /// The next record handed over, if one is there already.
    fn next_queued(&mut self) -> Option<OwnedMessage> {
        if self.ahead.is_empty() {
            if let Ok(chunk) = self.rx.try_recv() {
                self.ahead.extend(chunk);
            }
        }
        let record = self.ahead.pop_front()?;
        self.queued.fetch_sub(1, AtomicOrdering::SeqCst);
        Some(record)
    }

    fn stopped(&self) -> bool {
        self.stop.load(AtomicOrdering::SeqCst)
    }

    fn emit(&self, ev: WorkerEvent) {
        let _ = self.events.send((self.id, ev));
    }

    fn run(&mut self) {
        loop {
            // Only the newest request to commit past markers matters; none once stopping
            // (the partition may belong to another member already).
            let mut advance = None;
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    _ if self.stopped() => break,
                    WorkerCommand::Advance(o) => advance = advance.max(Some(o)),
                    cmd => self.apply(cmd),
                }
            }
            if let Some(o) = advance.filter(|_| !self.stopped()) {
                self.advance(o);
            }
            if self.stopped() {
                break;
            }
            if !self.wait_unless_held() {
                break;
            }
            let now = Instant::now();
            if let Some(i) = self.parked.iter().position(|p| p.due.is_some_and(|d| d <= now)) {
                let p = self.parked.remove(i);
                self.attempt(p.record, p.attempts + 1, true);
                continue;
            }
            let next_due = self.parked.iter().filter_map(|p| p.due).min();
            let wait = next_due.map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            let may_take = self.retry.ordering == RetryOrdering::Key || self.parked.is_empty();
            let batch = self.handler.batch_size().unwrap_or(MAX_BATCH);
            let idle = self.rx.is_empty() && self.ahead.is_empty();
            if !may_take || (self.done.len() >= batch) || (!self.done.is_empty() && idle) {
                // Report what finished before waiting, so commits are not held back.
                if !self.flush() {
                    break;
                }
                if !may_take {
                    if let Ok(cmd) = self.commands.recv_timeout(wait) {
                        self.apply(cmd);
                    }
                    continue;
                }
            }
            let next = match self.next_queued() {
                Some(record) => Ok(record),
                None => self.rx.recv_timeout(wait).map(|chunk| {
                    self.ahead.extend(chunk);
                    self.next_queued().expect("a chunk holds a record")
                }),
            };
            match next {
                // A pipelined sink takes a run at once; only with nothing parked, so
                // that no record of the run has to wait behind another.
                Ok(record) if self.handler.run_size() > 1 && self.parked.is_empty() && !self.panic_failpoint => {
                    self.take_run(record)
                }
                Ok(record) => self.take(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.parked.is_empty() {
                        break;
                    }
                    std::thread::sleep(wait);
                }
            }
        }
        self.flush();
    }

    fn wait_unless_held(&mut self) -> bool {
        if self.hold.load(AtomicOrdering::SeqCst) && !self.flush() {
            // What was handled is made durable first: a sink's open transaction
            // (SQLite's write lock) must not stall the other partitions meanwhile.
            return false;
        }
        while self.hold.load(AtomicOrdering::SeqCst) {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        !self.stopped()
    }

    /// Hands `first` and the records queued behind it (up to the handler's run
    /// size) to the handler at once. A record answered with a failure goes on
    /// as if handled alone (parked, dead-lettered or held); the records after it
    /// keep their answers, since the sink has them already (so they may finish
    /// before it: `--exec-batch 1` keeps strict order). Records the handler did
    /// not get to are handed over again, one by one.
    fn take_run(&mut self, first: OwnedMessage) {
        let size = self.handler.run_size();
        let mut run = vec![first];
        while run.len() < size {
            match self.next_queued() {
                Some(record) => run.push(record),
                None => break,
            }
        }
        self.current = Some(run[0].offset());
        let started = Instant::now();
        let outcomes = self.handler.handle_run(&run);
        // Each answered record's share of the run's time.
        let share_us = (started.elapsed().as_micros() / outcomes.len().max(1) as u128).min(u32::MAX as u128) as u32;
        let mut records = run.into_iter();
        for outcome in outcomes {
            let Some(record) = records.next() else { break };
            match outcome {
                Ok(()) => {
                    self.done(&record);
                    self.latencies_us.push(share_us);
                }
                Err(failure) => {
                    self.in_hand.push(record.offset());
                    self.attempt_in_hand(record, 1, false, Some(failure));
                    self.in_hand.pop();
                    if self.stopped() {
                        return; // the rest stay unfinished, so uncommitted
                    }
                }
            }
        }
        for (i, record) in records.enumerate() {
            self.ahead.insert(i, record);
            self.queued.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }

    fn take(&mut self, record: OwnedMessage) {
        self.current = Some(record.offset());
        if self.panic_failpoint {
            panic!("failpoint panic-worker: {}[{}]@{}", self.tp.0, self.tp.1, record.offset());
        }
        // A record without a key is ordered with nothing: it never waits behind another.
        if self.retry.ordering == RetryOrdering::Key && record.key().is_some() {
            if let Some(earlier) = self.parked.iter().find(|p| p.record.key() == record.key()) {
                let failure = Failure::retryable(
                    earlier.failure.stage,
                    format!("waiting behind offset {} of the same key", earlier.record.offset()),
                );
                self.park(record, 0, None, failure);
                return;
            }
        }
        self.attempt(record, 1, false);
    }

    /// Runs the handler; `was_parked` when the record comes out of the retry queue.
    fn attempt(&mut self, record: OwnedMessage, attempts: u32, was_parked: bool) {
        self.in_hand.push(record.offset());
        self.attempt_in_hand(record, attempts, was_parked, None);
        self.in_hand.pop();
    }

    /// `answered`: the outcome of a first attempt made already (in a run).
    fn attempt_in_hand(&mut self, record: OwnedMessage, attempts: u32, was_parked: bool, answered: Option<Failure>) {
        let mut answered = answered;
        self.current = Some(record.offset());
        let mut backoff = Duration::from_millis(200);
        // In the retry queue (for the screen and the operator's keys) while held.
        let mut listed = was_parked;
        loop {
            let started = Instant::now();
            let outcome = match answered.take() {
                Some(failure) => Err(failure),
                None => self.handler.handle(&record),
            };
            match outcome {
                Ok(()) => {
                    self.set_blocked(None);
                    self.done(&record);
                    self.latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if listed {
                        self.emit(WorkerEvent::Unparked { tp: self.tp.clone(), offset: record.offset() });
                    }
                    self.release_key(record.key());
                }
                Err(failure) if failure.unavailable => {
                    // Not this record's fault: hold the partition (what finished before it
                    // may still be committed) and try the same record again, until the
                    // sink works or the operator sends the record on.
                    self.emit(WorkerEvent::Failed { tp: self.tp.clone(), offset: record.offset(), failure: failure.clone() });
                    self.set_blocked(Some(format!("{} unavailable: {}", failure.stage, failure.message)));
                    let due = Instant::now() + backoff;
                    let view = self.retry_view(&record, attempts, Some(due), &failure);
                    self.emit(WorkerEvent::Parked { tp: self.tp.clone(), view });
                    listed = true;
                    if !self.flush() {
                        return; // stopping: the record stays unfinished, so uncommitted
                    }
                    match self.hold(due, record.offset()) {
                        Hold::Stopped => return,
                        Hold::Retry => {}
                        Hold::DeadLetter => {
                            self.set_blocked(None);
                            self.dead_letter(record, by_operator(failure), attempts, true);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(failure) => {
                    self.set_blocked(None);
                    self.emit(WorkerEvent::Failed { tp: self.tp.clone(), offset: record.offset(), failure: failure.clone() });
                    if failure.permanent || attempts >= self.retry.max_attempts {
                        self.dead_letter(record, failure, attempts, listed);
                    } else {
                        let due = Instant::now() + self.retry.backoff(attempts);
                        self.park(record, attempts, Some(due), failure);
                    }
                }
            }
            return;
        }
    }

    /// Waits until `until` while the record at `offset` is held, taking the
    /// operator's retry-now and dead-letter-now for it (others as usual).
    fn hold(&mut self, until: Instant, offset: i64) -> Hold {
        loop {
            if self.stopped() {
                return Hold::Stopped;
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    WorkerCommand::RetryNow(o) if o == offset => return Hold::Retry,
                    WorkerCommand::DeadLetterNow(o) if o == offset => return Hold::DeadLetter,
                    // Nothing past a held record is committed; the engine asks again later.
                    WorkerCommand::Advance(_) => {}
                    cmd => self.apply(cmd),
                }
            }
            let now = Instant::now();
            if now >= until {
                return Hold::Retry;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }

    /// Tells the engine when the partition cannot advance, and when it can again.
    fn set_blocked(&mut self, reason: Option<String>) {
        if self.blocked != reason {
            self.blocked = reason.clone();
            self.emit(WorkerEvent::Blocked { tp: self.tp.clone(), reason });
        }
    }

    fn retry_view(&self, record: &OwnedMessage, attempts: u32, due: Option<Instant>, failure: &Failure) -> RetryView {
        let due_ms = due.map(|d| {
            let from_now = d.saturating_duration_since(Instant::now());
            (SystemTime::now() + from_now).duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
        });
        RetryView {
            topic: self.tp.0.clone(),
            partition: self.tp.1,
            offset: record.offset(),
            key: record.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            attempt: attempts,
            next_due_ms: due_ms,
            stage: failure.stage.to_string(),
            last_error: failure.message.clone(),
        }
    }

    fn park(&mut self, record: OwnedMessage, attempts: u32, due: Option<Instant>, failure: Failure) {
        let view = self.retry_view(&record, attempts, due, &failure);
        self.emit(WorkerEvent::Parked { tp: self.tp.clone(), view });
        let at = self.parked.partition_point(|p| p.record.offset() < record.offset());
        self.parked.insert(at, Parked { record, attempts, due, failure });
    }

    /// The oldest record waiting behind this key may go now.
    fn release_key(&mut self, key: Option<&[u8]>) {
        if self.retry.ordering != RetryOrdering::Key || key.is_none() {
            return;
        }
        if let Some(next) = self.parked.iter_mut().find(|p| p.record.key() == key) {
            if next.due.is_none() {
                next.due = Some(Instant::now());
            }
        }
    }

    /// Writes to the dead-letter topic until it acknowledges (or the worker stops:
    /// then the record stays unfinished and uncommitted).
    fn dead_letter(&mut self, record: OwnedMessage, failure: Failure, attempts: u32, was_parked: bool) {
        // Exactly-once into Kafka: the dead letter rides in the batch's transaction.
        let letter = self.dlq.letter(&record, &failure, attempts);
        if self.handler.carry_dead_letter(&record, &letter) {
            let view = self.dlq.sent(&record, &failure, attempts, &letter, -1, -1);
            self.dead_lettered(&record, view, was_parked);
            return;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.dlq.send(&record, &failure, attempts) {
                Ok(view) => {
                    self.set_blocked(None);
                    self.dead_lettered(&record, view, was_parked);
                    return;
                }
                Err(e) => {
                    tracing::warn!("{}[{}]@{}: {e}", self.tp.0, self.tp.1, record.offset());
                    self.set_blocked(Some(e));
                    // What finished before this record may still be committed.
                    if !self.flush() || !self.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The record finished; it is reported at the next flush.
    fn done(&mut self, record: &OwnedMessage) {
        self.done.push(record.offset());
        // The last one's, not the largest: one record stamped in the future
        // must not stand for every record after it.
        if let Some(ts) = record.timestamp().to_millis().filter(|ts| *ts >= 0) {
            self.done_last_ts = Some(ts);
        }
    }

    /// The record is finished: its dead letter is in the topic (or in the batch's transaction).
    fn dead_lettered(&mut self, record: &OwnedMessage, view: DeadLetterView, was_parked: bool) {
        if was_parked {
            self.emit(WorkerEvent::Unparked { tp: self.tp.clone(), offset: record.offset() });
        }
        self.emit(WorkerEvent::DeadLettered { tp: self.tp.clone(), view });
        self.done(record);
        self.release_key(record.key());
    }

    fn apply(&mut self, cmd: WorkerCommand) {
        let parked_at = |parked: &[Parked], offset| parked.iter().position(|p| p.record.offset() == offset);
        match cmd {
            WorkerCommand::Advance(next_offset) => self.advance(next_offset),
            WorkerCommand::RetryNow(offset) => {
                if let Some(i) = parked_at(&self.parked, offset) {
                    self.parked[i].due = Some(Instant::now());
                }
            }
            WorkerCommand::DeadLetterNow(offset) => {
                if let Some(i) = parked_at(&self.parked, offset) {
                    let p = self.parked.remove(i);
                    let failure = by_operator(p.failure);
                    self.in_hand.push(offset);
                    self.dead_letter(p.record, failure, p.attempts, true);
                    self.in_hand.pop();
                }
            }
        }
    }

    /// Flushes `next_offset` with no records. Only when nothing handled waits for a
    /// flush: those records' outputs must share a transaction with their own offset.
    /// A failure is reported and left to the engine to ask again.
    fn advance(&mut self, next_offset: i64) {
        if !self.done.is_empty() || self.parked.first().is_some_and(|p| p.record.offset() < next_offset) {
            return;
        }
        let progress = Progress { topic: &self.tp.0, partition: self.tp.1, next_offset };
        match self.handler.flush(Some(&progress)) {
            Ok(()) => self.emit(WorkerEvent::Finished {
                tp: self.tp.clone(),
                offsets: Vec::new(),
                latencies_us: Vec::new(),
                flushed_to: next_offset,
                last_timestamp_ms: None,
            }),
            // Not a record's failure: the engine asks again later.
            Err(failure) => tracing::warn!("{}[{}]: committing up to {next_offset} failed: {failure}", self.tp.0, self.tp.1),
        }
    }

    /// Makes handled records durable and reports them finished; false if stopped while failing.
    fn flush(&mut self) -> bool {
        if self.done.is_empty() {
            return true;
        }
        // Everything below it has finished: the last finished record's successor, but
        // under key ordering never past a parked (earlier, unfinished) record.
        let next_offset = self.done.iter().max().map_or(0, |o| o + 1);
        let unfinished = self.parked.iter().map(|p| p.record.offset()).chain(self.in_hand.iter().copied());
        let next_offset = unfinished.filter(|o| *o < next_offset).min().unwrap_or(next_offset);
        let tp = self.tp.clone();
        let progress = Progress { topic: &tp.0, partition: tp.1, next_offset };
        let mut backoff = Duration::from_millis(50);
        let (mut failed, before) = (false, self.blocked.clone());
        while let Err(failure) = self.handler.flush(Some(&progress)) {
            // A flush failing is the sink's trouble, never a record's: the partition waits.
            let failure = Failure { stage: Stage::Sink, ..failure };
            self.set_blocked(Some(format!("sink cannot flush: {}", failure.message)));
            self.emit(WorkerEvent::Failed { tp: self.tp.clone(), offset: self.done[0], failure });
            failed = true;
            if !self.sleep(backoff) {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if failed {
            // Back to what the caller had (it may still be held by something else).
            self.set_blocked(before);
        }
        let offsets = std::mem::replace(&mut self.done, Vec::with_capacity(MAX_BATCH));
        let latencies_us = std::mem::replace(&mut self.latencies_us, Vec::with_capacity(MAX_BATCH));
        let last_timestamp_ms = self.done_last_ts.take();
        self.emit(WorkerEvent::Finished { tp: self.tp.clone(), offsets, latencies_us, flushed_to: next_offset, last_timestamp_ms });
        true
    }

    /// Sleeps unless stopped first.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead-letter queue the tests never reach (no broker behind it).
    fn unused_dlq(dir: &std::path::Path) -> Arc<DeadLetterQueue> {
        let audit = Arc::new(crate::engine::audit::Audit::open(&dir.join("a.sqlite")).unwrap());
        let producer = crate::engine::dlq::Producer::new("127.0.0.1:1", &[], Duration::from_secs(1)).unwrap();
        Arc::new(DeadLetterQueue::new(producer, None, "g", audit))
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let p = RetryPolicy { base: Duration::from_millis(100), max: Duration::from_secs(1), ..Default::default() };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100), "{b1:?}");
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400), "{b3:?}");
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn backoff_ranges_parse() {
        assert_eq!(RetryPolicy::parse_backoff("200ms..30s").unwrap(), (Duration::from_millis(200), Duration::from_secs(30)));
        assert!(RetryPolicy::parse_backoff("5s..1s").is_err());
        assert!(RetryPolicy::parse_backoff("fast").is_err());
    }

    /// Records go over in chunks up to the queue's capacity, and count as
    /// queued until the handler takes them (back-pressure reads this).
    #[test]
    fn a_worker_takes_no_more_than_its_capacity_and_counts_records_until_handled() {
        /// Tells when a record is in hand, then waits for the gate to open.
        struct Gated {
            entered: Sender<()>,
            gate: Receiver<()>,
        }
        impl Handler for Gated {
            fn handle(&mut self, _: &OwnedMessage) -> Result<(), Failure> {
                let _ = self.entered.send(());
                let _ = self.gate.recv(); // Err once the gate is dropped: open
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (events, _reports) = crossbeam_channel::unbounded();
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (gate_tx, gate) = crossbeam_channel::bounded::<()>(0);
        let handler = Gated { entered: entered_tx, gate };
        let mut w = Worker::spawn(("t".into(), 0), Box::new(handler), 10, events, RetryPolicy::default(), unused_dlq(dir.path()));
        let mut waiting: VecDeque<_> =
            (0..25).map(|o| OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, o, None)).collect();
        w.offer_from(&mut waiting);
        assert_eq!(waiting.len(), 15, "ten over, fifteen wait");
        entered.recv_timeout(Duration::from_secs(5)).expect("the first record is in hand");
        assert_eq!(w.queued(), 9, "the one in hand is no longer queued; the nine behind it are");
        w.offer_from(&mut waiting);
        assert_eq!((w.queued(), waiting.len()), (10, 14), "room for one more");
        w.offer_from(&mut waiting);
        assert_eq!(waiting.len(), 14, "no room: nothing more");
        drop(gate_tx);
        let until = Instant::now() + Duration::from_secs(5);
        while entered.len() < 10 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(entered.len(), 10, "the other ten handled");
        assert_eq!(w.queued(), 0);
        assert!(w.stop_and_wait(Duration::from_secs(5)));
    }

    /// A run: records after one answered `retry` keep their answers and finish,
    /// but progress never passes the parked record, and what the sink did not
    /// answer is handed over again, alone.
    #[test]
    fn in_a_run_progress_stops_at_a_parked_record_and_unanswered_records_come_again() {
        use std::sync::Mutex;
        #[derive(Default)]
        struct Seen {
            runs: Vec<Vec<i64>>,
            alone: Vec<i64>,
            flushed: Vec<i64>,
        }
        struct Piped(Arc<Mutex<Seen>>);
        impl Handler for Piped {
            fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
                self.0.lock().unwrap().alone.push(r.offset());
                Ok(())
            }
            fn run_size(&self) -> usize {
                8
            }
            fn handle_run(&mut self, records: &[OwnedMessage]) -> Vec<Result<(), Failure>> {
                self.0.lock().unwrap().runs.push(records.iter().map(|r| r.offset()).collect());
                // 1 is to be retried; the sink stops answering after 3.
                records
                    .iter()
                    .take_while(|r| r.offset() <= 3)
                    .map(|r| if r.offset() == 1 { Err(Failure::retryable(Stage::Handle, "later")) } else { Ok(()) })
                    .collect()
            }
            fn flush(&mut self, p: Option<&Progress>) -> Result<(), Failure> {
                self.0.lock().unwrap().flushed.extend(p.map(|p| p.next_offset));
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let dlq = unused_dlq(dir.path());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (events, reports) = crossbeam_channel::unbounded();
        let retry = RetryPolicy { base: Duration::from_secs(60), max: Duration::from_secs(60), ..Default::default() };
        let mut w = Worker::spawn(("t".into(), 0), Box::new(Piped(seen.clone())), 10, events, retry, dlq);
        // One chunk: one run.
        let mut records: VecDeque<_> =
            (0..6).map(|o| OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, o, None)).collect();
        w.offer_from(&mut records);
        assert!(records.is_empty());
        let until = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().flushed.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        w.stop_and_wait(Duration::from_secs(5));
        let seen = seen.lock().unwrap();
        let mut sent: Vec<i64> = seen.runs.concat();
        sent.sort();
        assert_eq!(sent, vec![0, 1, 2, 3, 4, 5], "each record in a run once (4 and 5, unanswered, wait behind 1)");
        assert!(!seen.flushed.is_empty(), "what finished was flushed");
        assert!(seen.flushed.iter().all(|o| *o <= 1), "progress never passes the parked record 1: {:?}", seen.flushed);
        assert!(seen.alone.is_empty(), "nothing handled alone while 1 is parked (partition order): {:?}", seen.alone);
        let mut finished: Vec<i64> = reports
            .try_iter()
            .flat_map(|(_, ev)| match ev {
                WorkerEvent::Finished { offsets, .. } => offsets,
                _ => Vec::new(),
            })
            .collect();
        finished.sort();
        assert_eq!(finished, vec![0, 2, 3], "finished: the answered ones; 1 parked, 4 and 5 not answered");
    }

    #[test]
    fn under_key_ordering_progress_stops_at_the_oldest_parked_record() {
        use std::sync::Mutex;
        struct Recorder(Arc<Mutex<Vec<i64>>>);
        impl Handler for Recorder {
            fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
                if r.offset() == 5 {
                    return Err(Failure::retryable(Stage::Handle, "parked"));
                }
                Ok(())
            }
            fn flush(&mut self, p: Option<&Progress>) -> Result<(), Failure> {
                self.0.lock().unwrap().extend(p.map(|p| p.next_offset));
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let dlq = unused_dlq(dir.path());
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let (events, _rx) = crossbeam_channel::unbounded();
        let retry = RetryPolicy { ordering: RetryOrdering::Key, base: Duration::from_secs(60), max: Duration::from_secs(60), ..Default::default() };
        let mut w = Worker::spawn(("t".into(), 0), Box::new(Recorder(flushed.clone())), 10, events, retry, dlq);
        let mut records: VecDeque<_> = [(5, "a"), (6, "b")]
            .into_iter()
            .map(|(o, key)| OwnedMessage::new(None, Some(key.as_bytes().to_vec()), "t".into(), rdkafka::Timestamp::NotAvailable, 0, o, None))
            .collect();
        w.offer_from(&mut records);
        let until = Instant::now() + Duration::from_secs(5);
        while flushed.lock().unwrap().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        w.stop_and_wait(Duration::from_secs(5));
        let flushed = flushed.lock().unwrap();
        assert!(!flushed.is_empty(), "record 6 was flushed");
        assert!(flushed.iter().all(|o| *o <= 5), "progress never passes the parked record 5: {flushed:?}");
    }
}
