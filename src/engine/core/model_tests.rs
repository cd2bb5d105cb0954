//! The engine without a broker: a fake consumer records every commit and
//! checks it against what the handlers really finished, while proptest drives
//! random interleavings of records arriving (with offsets skipped, as
//! transaction markers are), workers finishing at their own pace and parking
//! failures, revokes and re-assignments, and commit-strategy switches.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;

use super::*;
use crate::engine::broker::CommitOutcome;
use crate::engine::handler::{Failure, Handler, Stage};

type Handled = Arc<Mutex<BTreeSet<(Tp, i64)>>>;

/// A consumer that only remembers: what was dispatched in the current
/// assignment, where its position is, and every commit, each checked.
#[derive(Default)]
struct Fake {
    dispatched: RefCell<BTreeMap<Tp, BTreeSet<i64>>>,
    positions: RefCell<BTreeMap<Tp, i64>>,
    committed: RefCell<BTreeMap<Tp, i64>>,
    outcomes: RefCell<Vec<CommitOutcome>>,
    handled: Handled,
    violations: RefCell<Vec<String>>,
}

impl Fake {
    fn check(&self, offsets: &[(Tp, i64)]) {
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
        self.check(offsets);
        Ok(())
    }
    fn can_commit_async(&self) -> bool {
        true
    }
    fn commit_async(&self, offsets: &[(Tp, i64)]) -> Result<(), String> {
        self.check(offsets);
        let partitions = offsets.iter().map(|(tp, o)| (tp.clone(), *o, None)).collect();
        self.outcomes.borrow_mut().push(CommitOutcome { error: None, partitions });
        Ok(())
    }
    fn commit_outcomes(&self) -> Vec<CommitOutcome> {
        std::mem::take(&mut *self.outcomes.borrow_mut())
    }
    fn pause(&self, _: &[Tp]) -> Result<(), String> {
        Ok(())
    }
    fn resume(&self, _: &[Tp]) -> Result<(), String> {
        Ok(())
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
struct Sometimes {
    handled: Handled,
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

#[derive(Debug, Clone)]
enum Op {
    Receive { partition: i32, records: u8, skip: u8 },
    Tick,
    Wait { ms: u8 },
    Revoke { partition: i32 },
    Assign { partition: i32 },
    Switch(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2i32, 1u8..20, 0u8..3).prop_map(|(partition, records, skip)| Op::Receive { partition, records, skip }),
        5 => Just(Op::Tick),
        3 => (0u8..8).prop_map(|ms| Op::Wait { ms }),
        1 => (0..2i32).prop_map(|partition| Op::Revoke { partition }),
        1 => (0..2i32).prop_map(|partition| Op::Assign { partition }),
        1 => (0u8..3).prop_map(Op::Switch),
    ]
}

fn core(handled: &Handled, dir: &std::path::Path) -> Core {
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

fn tick(c: &mut Core, fake: &Fake) {
    c.drain_events_and_block(fake);
    c.collect_commit_outcomes(fake);
    c.last_catch_up = Instant::now() - CATCH_UP_EVERY;
    c.catch_up_idle(fake);
    c.apply_backpressure(fake);
    c.maybe_finish_strategy_switch(fake);
    c.maybe_commit(fake);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// Nothing is ever committed past a record that was received in the
    /// current assignment and has not finished, whatever happens in between.
    #[test]
    fn the_engine_never_commits_past_an_unfinished_record(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::default();
        let mut c = core(&fake.handled, dir.path());
        let topic = "t".to_string();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let assign = |c: &mut Core, p: i32, next: &mut BTreeMap<i32, i64>| {
            let tp = (topic.clone(), p);
            // A new assignment starts where the group committed.
            let from = fake.committed.borrow().get(&tp).copied().unwrap_or(0);
            next.insert(p, from);
            fake.dispatched.borrow_mut().insert(tp.clone(), BTreeSet::new());
            fake.positions.borrow_mut().remove(&tp);
            c.assign(&fake, vec![(tp, None)], "eager".into(), "m".into());
        };
        assign(&mut c, 0, &mut next);
        assign(&mut c, 1, &mut next);
        for op in ops {
            match op {
                Op::Receive { partition, records, skip } => {
                    let tp = (topic.clone(), partition);
                    if !c.assigned().contains(&tp) {
                        continue;
                    }
                    let from = next[&partition];
                    let batch: Vec<OwnedMessage> = (from..from + records as i64)
                        .map(|o| OwnedMessage::new(Some(b"{}".to_vec()), None, topic.clone(), Timestamp::NotAvailable, partition, o, None))
                        .collect();
                    fake.dispatched.borrow_mut().entry(tp.clone()).or_default().extend(from..from + records as i64);
                    // Offsets skipped after the batch: markers the consumer moves past.
                    let to = from + records as i64 + skip as i64;
                    next.insert(partition, to);
                    fake.positions.borrow_mut().insert(tp, to);
                    c.dispatch(&fake, batch);
                }
                Op::Tick => tick(&mut c, &fake),
                Op::Wait { ms } => std::thread::sleep(Duration::from_millis(ms as u64)),
                Op::Revoke { partition } => {
                    let tp = (topic.clone(), partition);
                    if c.assigned().contains(&tp) {
                        c.revoke(&fake, vec![tp.clone()], false);
                        fake.positions.borrow_mut().remove(&tp);
                    }
                }
                Op::Assign { partition } => {
                    if !c.assigned().contains(&(topic.clone(), partition)) {
                        assign(&mut c, partition, &mut next);
                    }
                }
                Op::Switch(s) => {
                    let s = [CommitStrategy::PerMessage, CommitStrategy::Batch(3), CommitStrategy::Interval(Duration::from_millis(2))][s as usize];
                    c.request_strategy(&fake, s);
                }
            }
            let violations = fake.violations.borrow();
            prop_assert!(violations.is_empty(), "{violations:?}");
        }
        c.drain(&fake, Duration::from_secs(5));
        let violations = fake.violations.borrow();
        prop_assert!(violations.is_empty(), "{violations:?}");
    }
}
