//! A fake consumer and a test engine for the core's unit and model tests: no broker.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;

use super::*;
use crate::engine::broker::CommitOutcome;
use crate::engine::handler::{Failure, Handler, Stage};

pub type Handled = Arc<Mutex<BTreeSet<(Tp, i64)>>>;

/// A consumer that only remembers: what was dispatched in the current
/// assignment, where its position is, and every commit, each checked.
#[derive(Default)]
pub struct Fake {
    pub dispatched: RefCell<BTreeMap<Tp, BTreeSet<i64>>>,
    pub positions: RefCell<BTreeMap<Tp, i64>>,
    pub committed: RefCell<BTreeMap<Tp, i64>>,
    pub outcomes: RefCell<Vec<CommitOutcome>>,
    pub handled: Handled,
    pub violations: RefCell<Vec<String>>,
    /// Every pause and resume asked for, in order: (partition, paused).
    pub pauses: RefCell<Vec<(Tp, bool)>>,
    /// Hold async commit outcomes back (as a slow coordinator does).
    pub hold_outcomes: std::cell::Cell<bool>,
    /// Every commit, in order: (offsets, sync).
    pub commits: RefCell<Vec<(Vec<(Tp, i64)>, bool)>>,
}

impl Fake {
    pub fn check(&self, offsets: &[(Tp, i64)]) {
        let handled = self.handled.lock().unwrap();
        let dispatched = self.dispatched.borrow();
        for (tp, c) in offsets {
            for o in dispatched.get(tp).into_iter().flatten().filter(|o| **o < *c) {
                if !handled.contains(&(tp.clone(), *o)) {
                    self.violations.borrow_mut().push(format!("committed {}[{}] at {c} past unfinished {o}", tp.0, tp.1));
                }
            }
            let mut committed = self.committed.borrow_mut();
            let previous = committed.get(tp).copied().unwrap_or(-1);
            committed.insert(tp.clone(), previous.max(*c));
        }
    }
}

impl Broker for Fake {
    fn commit_sync(&self, offsets: &[(Tp, i64)]) -> Result<(), String> {
        self.commits.borrow_mut().push((offsets.to_vec(), true));
        self.check(offsets);
        Ok(())
    }
    fn can_commit_async(&self) -> bool {
        true
    }
    fn commit_async(&self, offsets: &[(Tp, i64)]) -> Result<(), String> {
        self.commits.borrow_mut().push((offsets.to_vec(), false));
        self.check(offsets);
        let partitions = offsets.iter().map(|(tp, o)| (tp.clone(), *o, None)).collect();
        self.outcomes.borrow_mut().push(CommitOutcome { error: None, partitions });
        Ok(())
    }
    fn commit_outcomes(&self) -> Vec<CommitOutcome> {
        if self.hold_outcomes.get() {
            return Vec::new();
        }
        std::mem::take(&mut *self.outcomes.borrow_mut())
    }
    fn pause(&self, tps: &[Tp]) -> Result<(), String> {
        self.pauses.borrow_mut().extend(tps.iter().map(|tp| (tp.clone(), true)));
        Ok(())
    }
    fn resume(&self, tps: &[Tp]) -> Result<(), String> {
        self.pauses.borrow_mut().extend(tps.iter().map(|tp| (tp.clone(), false)));
        Ok(())
    }
    /// As librdkafka's seek does, the seek that wakes the fetcher forgets the
    /// position until the next record is delivered.
    fn resume_fetching(&self, tps: &[Tp]) -> Result<Vec<(Tp, i64)>, String> {
        self.resume(tps)?;
        let mut positions = self.positions.borrow_mut();
        let sought = positions.iter().filter(|(tp, _)| tps.contains(tp)).map(|(tp, o)| (tp.clone(), *o)).collect();
        positions.retain(|tp, _| !tps.contains(tp));
        Ok(sought)
    }
    fn positions(&self) -> Result<Vec<(Tp, i64)>, String> {
        Ok(self.positions.borrow().iter().map(|(tp, o)| (tp.clone(), *o)).collect())
    }
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        None
    }
}

/// Takes a little time, and fails (retryably) every record whose offset is a
/// multiple of 7 the first time: those park and come back later.
pub struct Sometimes {
    pub handled: Handled,
    failed_once: BTreeSet<i64>,
}

impl Handler for Sometimes {
    fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
        use rdkafka::message::Message;
        std::thread::sleep(Duration::from_micros(200 * (r.offset() % 5) as u64));
        if r.offset() % 7 == 0 && self.failed_once.insert(r.offset()) {
            return Err(Failure::retryable(Stage::Handle, "not yet"));
        }
        self.handled.lock().unwrap().insert(((r.topic().to_string(), r.partition()), r.offset()));
        Ok(())
    }
}

pub fn core(handled: &Handled, dir: &std::path::Path) -> Core {
    let audit = Arc::new(crate::engine::audit::Audit::open(&dir.join("audit.sqlite")).unwrap());
    // Never reached: no record fails for good here.
    let producer = crate::engine::dlq::Producer::new("127.0.0.1:1", &[], Duration::from_secs(1)).unwrap();
    let dlq = Arc::new(DeadLetterQueue::new(producer, None, "g", audit));
    let h = handled.clone();
    let handlers: HandlerFactory =
        Arc::new(move |_: &str, _: i32| Box::new(Sometimes { handled: h.clone(), failed_once: BTreeSet::new() }) as Box<dyn Handler>);
    let retry = RetryPolicy { max_attempts: 1000, base: Duration::from_millis(1), max: Duration::from_millis(3), ..Default::default() };
    Core::new(Identity::default(), CommitStrategy::Batch(5), 50, Duration::from_millis(20), handlers, false, retry, dlq, None)
}

pub fn tick(c: &mut Core, fake: &Fake) {
    c.drain_events_and_block(fake);
    c.collect_commit_outcomes(fake);
    c.last_catch_up = Instant::now() - CATCH_UP_EVERY;
    c.catch_up_idle(fake);
    c.apply_backpressure(fake);
    c.maybe_finish_strategy_switch(fake);
    c.maybe_commit(fake);
}


/// Records of `topic[partition]` at `offsets`, as the consumer would hand them out.
pub fn records(partition: i32, offsets: std::ops::Range<i64>) -> Vec<OwnedMessage> {
    offsets.map(|o| OwnedMessage::new(Some(b"{}".to_vec()), None, "t".into(), Timestamp::NotAvailable, partition, o, None)).collect()
}

/// Ticks until `cond` holds (workers run on their own threads), for at most 5 s.
pub fn tick_until(c: &mut Core, fake: &Fake, mut cond: impl FnMut(&Core) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        tick(c, fake);
        if cond(c) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
