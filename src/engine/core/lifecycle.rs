//! Shutdown, partition facts (committed offsets, ends), `--stop-at-end`,
//! statistics and errors.

use super::*;

impl Core {

    /// Graceful shutdown: stop fetching, let each worker finish the record in hand
    /// (queued records are dropped unfinished, so never committed), commit what
    /// finished. Waits at most `deadline` for the workers.
    pub fn drain(&mut self, broker: &dyn Broker, deadline: Duration) {
        self.draining = true;
        self.sync_pauses(broker);
        let until = Instant::now() + deadline;
        for (tp, part) in self.parts.iter_mut() {
            part.stash.clear();
            if !part.worker.stop_and_wait(until.saturating_duration_since(Instant::now())) {
                tracing::warn!("{} still busy at the drain deadline; its record stays uncommitted", tp_name(tp));
            }
        }
        self.drain_events();
        self.commit(broker, CommitMode::Sync, None);
    }

    /// Why the run did not finish its work: a partition that still cannot advance.
    pub fn blocked_reason(&self) -> Option<String> {
        self.parts.iter().find_map(|(tp, p)| p.blocked.as_ref().map(|r| format!("{} could not advance: {r}", tp_name(tp))))
    }


    /// Lag in time: the record at each lagging partition's oldest uncommitted
    /// offset is read for its timestamp (see `record_times.rs`), once per
    /// offset, asked again at most once a second while unanswered.
    pub fn update_record_times(&mut self) {
        let Some(reader) = &self.record_times else { return };
        for (tp, offset, ts) in reader.answers() {
            if let Some(part) = self.parts.get_mut(&tp) {
                part.record_time = Some((offset, ts));
                self.dirty = true;
            }
        }
        let mut ask = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            let Some(from) = p.oldest_uncommitted(self.starts_at_log_start) else { continue };
            let behind = p.high_watermark.max(p.position).is_some_and(|end| end > from);
            let known = p.record_time.is_some_and(|(o, _)| o == from);
            let asked = p.record_time_asked.is_some_and(|(o, at)| o == from && at.elapsed() < RECORD_TIME_RETRY);
            let recently = p.record_time_asked.is_some_and(|(_, at)| at.elapsed() < RECORD_TIME_EVERY);
            if behind && !known && !asked && !recently {
                p.record_time_asked = Some((from, Instant::now()));
                ask.push((tp.clone(), from));
            }
        }
        if !ask.is_empty() {
            reader.ask(ask);
        }
    }

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
                        // The end when assigned: a later answer must not move it on.
                        part.end_at_assign.get_or_insert(hi);
                        part.high_watermark = part.high_watermark.max(Some(hi));
                        part.log_start = part.log_start.max(Some(lo));
                    }
                    part.initialized = true;
                    changed = true;
                }
                Err(((tp, worker), why)) => {
                    if let Some(part) = self.parts.get_mut(&tp).filter(|p| p.worker.id == worker) {
                        part.facts_due = Some(Instant::now() + FACTS_RETRY);
                    }
                    self.record_error("broker", why);
                }
            }
        }
        let ask: Vec<(Tp, WorkerId)> = self
            .parts
            .iter_mut()
            // Every question gets an answer (the reads have timeouts): ask again only after a failed one.
            .filter(|(_, p)| !p.initialized && p.facts_due.is_some_and(|at| at <= Instant::now()))
            .map(|(tp, p)| {
                p.facts_due = None;
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
}
