//! Group commit: callers hand in items and wait for their outcome; items that
//! arrive while a run is under way wait and go together in the next run (up
//! to a budget). The caller that gets the lock runs what is waiting, oldest
//! first, until an earlier run or its own has taken its item, so no thread of
//! its own is needed.

use std::sync::Mutex;

type Answer<R> = crossbeam_channel::Sender<R>;

pub struct GroupCommit<T, S, R> {
    waiting: Mutex<Vec<(T, Answer<R>)>>,
    /// What a run works with (a producer); whoever holds it runs.
    state: Mutex<S>,
    /// What one run may take (in `weight`s); a run takes one item at least.
    budget: usize,
    weight: fn(&T) -> usize,
}

impl<T, S, R> GroupCommit<T, S, R> {
    pub fn new(state: S, budget: usize, weight: fn(&T) -> usize) -> GroupCommit<T, S, R> {
        GroupCommit { waiting: Mutex::new(Vec::new()), state: Mutex::new(state), budget, weight }
    }

    /// The state, between runs.
    pub fn state(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().unwrap()
    }

    /// Hands in `item` and returns its outcome. `run` gets every waiting item
    /// (in the order they came) and returns one outcome per item, in order.
    pub fn commit(&self, item: T, run: impl Fn(&mut S, Vec<T>) -> Vec<R>) -> R {
        let (answer, outcome) = crossbeam_channel::bounded(1);
        self.waiting.lock().unwrap().push((item, answer));
        loop {
            let mut state = self.state.lock().unwrap();
            // The run that held the lock may have taken this item too.
            if let Ok(done) = outcome.try_recv() {
                return done;
            }
            let (items, answers): (Vec<T>, Vec<Answer<R>>) = self.take_within_budget().into_iter().unzip();
            let outcomes = run(&mut state, items);
            assert_eq!(outcomes.len(), answers.len(), "a group-commit run answers every item");
            for (answer, o) in answers.into_iter().zip(outcomes) {
                let _ = answer.send(o);
            }
        }
    }

    /// The oldest waiting items, as many as the budget allows (one at least).
    fn take_within_budget(&self) -> Vec<(T, Answer<R>)> {
        let mut waiting = self.waiting.lock().unwrap();
        let (mut used, mut n) = (0, 0);
        for (item, _) in waiting.iter() {
            used += (self.weight)(item);
            if n > 0 && used > self.budget {
                break;
            }
            n += 1;
        }
        waiting.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn items_that_arrive_during_a_run_share_the_next_run() {
        let group: Arc<GroupCommit<u32, Vec<Vec<u32>>, u32>> = Arc::new(GroupCommit::new(Vec::new(), 100, |_| 1));
        let (in_run, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let record = |state: &mut Vec<Vec<u32>>, items: Vec<u32>| {
            state.push(items.clone());
            items.iter().map(|i| i * 10).collect::<Vec<_>>()
        };
        let first = {
            let (group, in_run, release) = (group.clone(), in_run.clone(), release.clone());
            std::thread::spawn(move || {
                group.commit(1, |s, items| {
                    in_run.wait();
                    release.wait(); // held until the others are waiting
                    record(s, items)
                })
            })
        };
        in_run.wait();
        let others: Vec<_> = [2, 3]
            .into_iter()
            .map(|i| {
                let group = group.clone();
                std::thread::spawn(move || group.commit(i, record))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group.waiting.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        release.wait();
        assert_eq!(first.join().unwrap(), 10);
        let answers: Vec<u32> = others.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(answers, [20, 30], "each gets its own outcome");
        let runs = group.state().clone();
        assert_eq!(runs.len(), 2, "two runs for three items: {runs:?}");
        let mut second = runs[1].clone();
        second.sort();
        assert_eq!(second, [2, 3]);
    }

    #[test]
    fn a_run_takes_the_oldest_items_within_its_budget_and_at_least_one() {
        let group: GroupCommit<usize, (), ()> = GroupCommit::new((), 10, |w| *w);
        let (answer, _outcome) = crossbeam_channel::bounded(1);
        for w in [4, 5, 3, 20, 1] {
            group.waiting.lock().unwrap().push((w, answer.clone()));
        }
        let taken = |g: &GroupCommit<usize, (), ()>| g.take_within_budget().into_iter().map(|(w, _)| w).collect::<Vec<_>>();
        assert_eq!(taken(&group), [4, 5], "4 + 5 fit in 10; 3 more would not");
        assert_eq!(taken(&group), [3], "20 would not fit beside 3");
        assert_eq!(taken(&group), [20], "over the budget alone: taken alone");
        assert_eq!(taken(&group), [1]);
        assert!(taken(&group).is_empty());
    }

    #[test]
    fn one_caller_alone_runs_its_own_item() {
        let group: GroupCommit<&str, u32, Result<(), String>> = GroupCommit::new(0, 100, |_| 1);
        let outcome = group.commit("a", |runs, items| {
            *runs += 1;
            items.iter().map(|i| Err(format!("{i} failed"))).collect()
        });
        assert_eq!(outcome, Err("a failed".to_string()));
        assert_eq!(*group.state(), 1);
    }
}
