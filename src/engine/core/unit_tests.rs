//! One concern at a time, through the fake consumer: pauses, strategy
//! switches, commits and revokes.

use std::time::Duration;

use super::testing::{core, records, tick, tick_until, Fake};
use super::*;

fn tp(p: i32) -> Tp {
    ("t".to_string(), p)
}

fn started(fake: &Fake, dir: &std::path::Path, partitions: &[i32]) -> Core {
    let mut c = core(&fake.handled, dir);
    let starts = partitions.iter().map(|p| (tp(*p), None)).collect();
    c.assign(fake, starts, "eager".into(), "m".into());
    c
}

#[test]
fn pauses_from_every_source_are_combined_and_only_changes_reach_the_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut c = started(&fake, dir.path(), &[0, 1]);
    c.set_operator_pause(&fake, vec![tp(0)], true);
    c.set_operator_pause(&fake, vec![tp(0)], true);
    assert_eq!(*fake.pauses.borrow(), vec![(tp(0), true)], "told once");
    // Blocked as well (a failing dead-letter topic): the operator's resume does not free it.
    c.parts.get_mut(&tp(0)).unwrap().blocked = Some("dlq down".into());
    c.set_operator_pause(&fake, vec![tp(0)], false);
    assert_eq!(fake.pauses.borrow().len(), 1, "still paused: blocked");
    c.parts.get_mut(&tp(0)).unwrap().blocked = None;
    c.resume_all(&fake);
    assert_eq!(fake.pauses.borrow().last(), Some(&(tp(0), false)));
    assert!(!fake.pauses.borrow().iter().any(|(t, _)| *t == tp(1)), "the other partition never touched");
}

#[test]
fn a_switch_into_at_most_once_holds_fetching_until_what_was_received_has_finished() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut c = started(&fake, dir.path(), &[0]);
    fake.dispatched.borrow_mut().insert(tp(0), (0..30).collect());
    c.dispatch(&fake, records(0, 0..30));
    c.request_strategy(&fake, CommitStrategy::AtMostOnce);
    assert_eq!(c.strategy, CommitStrategy::Batch(5), "not yet: records are in flight");
    assert!(fake.pauses.borrow().contains(&(tp(0), true)), "fetching held meanwhile");
    assert!(tick_until(&mut c, &fake, |c| c.strategy == CommitStrategy::AtMostOnce), "switched once they finished");
    assert_eq!(c.in_flight(), 0);
    assert_eq!(fake.committed.borrow().get(&tp(0)), Some(&30), "what finished committed under the old strategy first");
    assert_eq!(fake.pauses.borrow().last(), Some(&(tp(0), false)), "fetching again");
    assert!(fake.violations.borrow().is_empty(), "{:?}", fake.violations.borrow());
}

#[test]
fn one_async_commit_at_a_time_and_the_next_carries_the_latest_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut c = started(&fake, dir.path(), &[0]);
    fake.hold_outcomes.set(true);
    fake.dispatched.borrow_mut().insert(tp(0), (0..20).collect());
    c.dispatch(&fake, records(0, 0..10));
    assert!(tick_until(&mut c, &fake, |_| !fake.commits.borrow().is_empty()));
    c.dispatch(&fake, records(0, 10..20));
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..20 {
        tick(&mut c, &fake);
    }
    assert_eq!(fake.commits.borrow().len(), 1, "no second commit while the first is unanswered");
    fake.hold_outcomes.set(false);
    assert!(tick_until(&mut c, &fake, |c| c.parts[&tp(0)].committed == Some(20)), "the outcomes came back");
    assert_eq!(fake.committed.borrow().get(&tp(0)), Some(&20));
    assert!(fake.violations.borrow().is_empty(), "{:?}", fake.violations.borrow());
}

#[test]
fn a_revoke_commits_what_finished_unless_the_assignment_was_lost_and_resumes_what_it_paused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut c = started(&fake, dir.path(), &[0, 1]);
    fake.dispatched.borrow_mut().insert(tp(0), (0..5).collect());
    fake.dispatched.borrow_mut().insert(tp(1), (0..5).collect());
    c.dispatch(&fake, records(0, 0..5));
    c.dispatch(&fake, records(1, 0..5));
    fake.hold_outcomes.set(true); // the strategy's commit stays unanswered
    assert!(tick_until(&mut c, &fake, |c| c.parts.values().all(|p| p.tracker.watermark() == Some(5))));
    c.set_operator_pause(&fake, vec![tp(0)], true);
    let before = fake.commits.borrow().len();
    c.revoke(&fake, vec![tp(1)], true);
    assert_eq!(fake.commits.borrow().len(), before, "lost: another member may own it already, nothing committed");
    c.revoke(&fake, vec![tp(0)], false);
    let last = fake.commits.borrow().last().cloned().unwrap();
    assert!(last.1, "a revoke commits synchronously");
    assert!(last.0.iter().all(|(t, _)| *t == tp(0)));
    assert_eq!(fake.pauses.borrow().last(), Some(&(tp(0), false)), "a pause does not outlive the assignment");
    assert!(c.parts.is_empty());
    assert!(fake.violations.borrow().is_empty(), "{:?}", fake.violations.borrow());
}

#[test]
fn a_resume_that_forgets_the_position_still_commits_past_the_last_marker() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut c = started(&fake, dir.path(), &[0]);
    // Records 0..9, then a transaction marker at 10: the position is 11.
    fake.dispatched.borrow_mut().insert(tp(0), (0..10).collect());
    c.dispatch(&fake, records(0, 0..10));
    fake.positions.borrow_mut().insert(tp(0), 11);
    tick(&mut c, &fake);
    // Paused and resumed while the records are in flight: the resume's seek forgets it.
    c.set_operator_pause(&fake, vec![tp(0)], true);
    c.set_operator_pause(&fake, vec![tp(0)], false);
    assert!(fake.positions.borrow().is_empty());
    let done = tick_until(&mut c, &fake, |_| fake.committed.borrow().get(&tp(0)) == Some(&11));
    assert!(done, "committed past the marker: {:?}", fake.committed.borrow());
    assert!(fake.violations.borrow().is_empty(), "{:?}", fake.violations.borrow());
}
