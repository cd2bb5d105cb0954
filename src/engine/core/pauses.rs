//! Pauses from every source (operator, back-pressure, blocked partitions, the
//! engine's own holds) combined and diffed against what librdkafka was told.

use super::*;

impl Core {

    pub fn set_operator_pause(&mut self, broker: &dyn Broker, tps: Vec<Tp>, paused: bool) {
        let names: Vec<String> = tps.iter().map(tp_name).collect();
        let verb = if paused { "pause" } else { "resume" };
        self.audit.note("action", &format!("{verb} {}", names.join(", ")), &json!({"action": verb, "partitions": names}));
        for tp in tps {
            if paused {
                self.operator_paused.insert(tp);
            } else {
                self.operator_paused.remove(&tp);
            }
        }
        self.sync_pauses(broker);
        self.dirty = true;
    }

    /// Clears every operator pause, including those of partitions not assigned right now.
    pub fn resume_all(&mut self, broker: &dyn Broker) {
        self.audit.note("action", "resume all", &json!({"action": "resume_all"}));
        self.operator_paused.clear();
        self.sync_pauses(broker);
        self.dirty = true;
    }

    pub fn apply_backpressure(&mut self, broker: &dyn Broker) {
        let now = Instant::now();
        let mut changed = false;
        // Each partition gets an equal share of the byte budget, and room for two of
        // its largest records at least (else huge records would pause it after each).
        let share = self.queue_bytes / self.parts.len().max(1);
        for (tp, part) in self.parts.iter_mut() {
            let mine = share.max(2 * part.largest_record);
            let bp = BackPressure { high_bytes: mine, low_bytes: mine / 4, ..self.backpressure };
            let decided = bp.decide(part.queued(), part.tracker.unfinished_bytes(), part.bp_since, now);
            if decided.is_some() != part.bp_since.is_some() {
                tracing::info!("back-pressure {} {}", if decided.is_some() { "pauses" } else { "resumes" }, tp_name(tp));
                changed = true;
            }
            part.bp_since = decided;
        }
        if changed {
            self.sync_pauses(broker);
        }
    }

    /// Tells librdkafka the pause state each partition should have, where it differs.
    pub(super) fn sync_pauses(&mut self, broker: &dyn Broker) {
        let hold = self.engine_hold();
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for (tp, part) in self.parts.iter_mut() {
            let by_operator = self.operator_paused.contains(tp);
            part.worker.set_hold(by_operator && !self.draining);
            let want = hold || part.bp_since.is_some() || by_operator || part.blocked.is_some();
            if want != part.applied_pause {
                if want { &mut pause } else { &mut resume }.push(tp.clone());
                part.applied_pause = want;
            }
        }
        if !pause.is_empty() {
            if let Err(e) = broker.pause(&pause) {
                self.record_error("broker", format!("pause failed: {e}"));
            }
        }
        if !resume.is_empty() {
            match broker.resume_fetching(&resume) {
                Ok(sought) => {
                    for (tp, o) in sought {
                        if let Some(part) = self.parts.get_mut(&tp) {
                            part.position = part.position.max(Some(o));
                        }
                    }
                }
                Err(e) => self.record_error("broker", format!("resume failed: {e}")),
            }
        }
    }

    /// The engine itself holds every partition while shutdown, or a change to
    /// at-most-once or eos, waits for in-flight records.
    pub(super) fn engine_hold(&self) -> bool {
        self.draining || self.pending_strategy.is_some_and(drains)
    }
}
