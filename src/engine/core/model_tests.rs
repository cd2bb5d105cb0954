//! The engine without a broker: a fake consumer records every commit and
//! checks it against what the handlers really finished, while proptest drives
//! random interleavings of records arriving (with offsets skipped, as
//! transaction markers are), workers finishing at their own pace and parking
//! failures, revokes and re-assignments, and commit-strategy switches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;

use super::testing::{core, tick, Fake};
use super::*;

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
