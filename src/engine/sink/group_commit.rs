//! Group commit: callers hand in items and wait for their outcome; items that
//! arrive while a run is under way wait and go together in the next run. The
//! caller that gets the lock runs whatever is waiting (its own item, unless an
//! earlier run took it), so no thread of its own is needed.

use std::sync::Mutex;

type Answer<R> = crossbeam_channel::Sender<R>;

pub struct GroupCommit<T, S, R> {
    waiting: Mutex<Vec<(T, Answer<R>)>>,
    /// What a run works with (a producer); whoever holds it runs.
    state: Mutex<S>,
}

impl<T, S, R> GroupCommit<T, S, R> {
    pub fn new(state: S) -> GroupCommit<T, S, R> {
        GroupCommit { waiting: Mutex::new(Vec::new()), state: Mutex::new(state) }
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
            let (items, answers): (Vec<T>, Vec<Answer<R>>) = std::mem::take(&mut *self.waiting.lock().unwrap()).into_iter().unzip();
            let outcomes = run(&mut state, items);
            assert_eq!(outcomes.len(), answers.len(), "a group-commit run answers every item");
            for (answer, o) in answers.into_iter().zip(outcomes) {
                let _ = answer.send(o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn items_that_arrive_during_a_run_share_the_next_run() {
        let group: Arc<GroupCommit<u32, Vec<Vec<u32>>, u32>> = Arc::new(GroupCommit::new(Vec::new()));
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
    fn one_caller_alone_runs_its_own_item() {
        let group: GroupCommit<&str, u32, Result<(), String>> = GroupCommit::new(0);
        let outcome = group.commit("a", |runs, items| {
            *runs += 1;
            items.iter().map(|i| Err(format!("{i} failed"))).collect()
        });
        assert_eq!(outcome, Err("a failed".to_string()));
        assert_eq!(*group.state(), 1);
    }
}
