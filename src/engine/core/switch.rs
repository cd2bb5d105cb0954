//! Changing the commit strategy while running: what finished is committed
//! under the old one first; into at-most-once or eos, in-flight records finish first.

use super::*;

impl Core {

    /// Changes the commit strategy. What finished is committed under the old one
    /// first. Between at-least-once strategies that is all it takes: each commits
    /// the same watermark. Into at-most-once, records already received were promised
    /// at-least-once, so fetching pauses until they have finished; only then does
    /// commit-on-receipt start.
    pub fn request_strategy(&mut self, broker: &dyn Broker, strategy: CommitStrategy) {
        if strategy == self.strategy && self.pending_strategy.is_none() {
            return;
        }
        if strategy == CommitStrategy::Eos {
            let refusal = if self.exactly_once.is_none() {
                Some("the sink cannot write offsets with its output (only sqlite:PATH, postgres://… and kafka:TOPIC can)")
            } else if self.retry.ordering == crate::engine::worker::RetryOrdering::Key {
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
            self.sync_pauses(broker);
        }
        self.maybe_finish_strategy_switch(broker);
        self.dirty = true;
    }

    pub fn maybe_finish_strategy_switch(&mut self, broker: &dyn Broker) {
        let Some(next) = self.pending_strategy else { return };
        if drains(next) && self.in_flight() > 0 {
            return;
        }
        self.commit(broker, CommitMode::Sync, None);
        if let Some(eos) = &self.exactly_once {
            // Into eos: from the next batch on, offsets are stored with the writes as
            // a compare-and-set. Out of it: SQLite's stored offsets go on following the
            // database; Kafka's are what partitions start from again.
            if let Err(e) = eos.set_enabled(next == CommitStrategy::Eos) {
                // (Kafka: its transactional producer could not start.) Not switched.
                self.record_error("commit", format!("commit strategy stays {}: {e}", self.strategy));
                self.pending_strategy = None;
                self.sync_pauses(broker);
                self.dirty = true;
                return;
            }
        }
        tracing::info!("commit strategy now {next} (was {})", self.strategy);
        self.strategy = next;
        self.pending_strategy = None;
        self.sync_pauses(broker);
        self.dirty = true;
    }

    /// Exactly-once into Kafka: the sink's transactions commit the offsets, not the engine.
    pub(super) fn sink_commits_offsets(&self) -> bool {
        self.strategy == CommitStrategy::Eos && self.exactly_once.as_ref().is_some_and(|e| e.commits_offsets() && e.enabled())
    }

    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.tracker.unfinished()).sum()
    }
}
