//! Committing: when the strategy says so, the finished watermark of each
//! partition, synchronously or through the commit queue; never past an
//! unfinished record.

use super::*;

impl Core {

    pub fn maybe_commit(&mut self, broker: &dyn Broker) {
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
            self.commit(broker, mode, None);
        }
    }

    /// Commits the finished watermark of the given partitions (all when None)
    /// wherever it is ahead of what is committed.
    pub fn commit(&mut self, broker: &dyn Broker, mode: CommitMode, only: Option<&[Tp]>) {
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
        self.send_commit(broker, &offsets, mode);
    }

    pub(super) fn send_commit(&mut self, broker: &dyn Broker, offsets: &[(Tp, i64)], mode: CommitMode) {
        if offsets.is_empty() {
            return;
        }
        let result = if mode == CommitMode::Async && broker.can_commit_async() {
            // The outcome comes back later (collect_commit_outcomes).
            self.async_commit_in_flight = true;
            self.async_commit_sent = Instant::now();
            broker.commit_async(offsets).inspect_err(|_| self.async_commit_in_flight = false)
        } else {
            let sent = Instant::now();
            let done = broker.commit_sync(offsets);
            self.commit_latency.observe(sent.elapsed().as_secs_f64() * 1000.0);
            done.map(|()| self.apply_committed(offsets.iter().cloned()))
        };
        if let Err(e) = result {
            self.commit_failures += 1;
            self.record_error("commit", format!("commit failed: {e}"));
        }
    }

    /// Applies the outcomes of asynchronous commits that have come back.
    pub fn collect_commit_outcomes(&mut self, broker: &dyn Broker) {
        for outcome in broker.commit_outcomes() {
            self.async_commit_in_flight = false;
            self.commit_latency.observe(self.async_commit_sent.elapsed().as_secs_f64() * 1000.0);
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

    pub(super) fn apply_committed(&mut self, offsets: impl Iterator<Item = (Tp, i64)>) {
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
}
