//! Rebalances: partitions assigned (a worker and a tracker each) and revoked
//! (what finished is committed first, unless the assignment was lost).

use super::*;

impl Core {

    /// `starts` holds a start offset where the assignment set one (exactly-once):
    /// everything below it is done.
    pub fn assign(&mut self, broker: &dyn Broker, starts: Vec<(Tp, Option<i64>)>, protocol: String, member_id: String) {
        self.member_id = member_id;
        let tps: Vec<Tp> = starts.iter().map(|(tp, _)| tp.clone()).collect();
        for (tp, start) in &starts {
            if self.parts.contains_key(tp) {
                continue;
            }
            if let Some(eos) = &self.exactly_once {
                eos.next_epoch(&tp.0, tp.1);
            }
            let handler = (self.handlers)(&tp.0, tp.1);
            let worker =
                Worker::spawn(tp.clone(), handler, self.queue_capacity, self.events_tx.clone(), self.retry, self.dlq.clone());
            let mut tracker = OffsetTracker::default();
            if let Some(o) = start {
                tracker.start_at(*o);
            }
            self.parts.insert(
                tp.clone(),
                Part {
                    tracker,
                    worker,
                    stash: VecDeque::new(),
                    position: None,
                    // Under eos into Kafka the start is the group's committed offset.
                    committed: if self.sink_commits_offsets() { *start } else { None },
                    high_watermark: None,
                    end_at_assign: None,
                    start: *start,
                    log_start: None,
                    initialized: false,
                    facts_due: Some(Instant::now()),
                    bp_since: None,
                    applied_pause: false,
                    processed: 0,
                    processed_at_sample: 0,
                    rate: 0.0,
                    last_processed_ts: None,
                    record_time: None,
                    record_time_asked: None,
                    blocked: None,
                    advance_sent: None,
                    largest_record: 0,
                },
            );
        }
        self.sync_pauses(broker);
        if let Some(eos) = &self.exactly_once {
            // Transactions carry the group's current generation: a member that lost
            // its partitions is fenced by the broker.
            eos.set_group_metadata(broker.group_metadata());
        }
        let pending = self.pending_rebalance.take();
        let now = SystemTime::now();
        let started = pending.as_ref().map_or(now, |p| p.started);
        let event = RebalanceEvent {
            started_at_ms: ms(started),
            duration_ms: now.duration_since(started).unwrap_or_default().as_millis() as u64,
            protocol,
            gained: tps.iter().map(tp_name).collect(),
            lost: pending.as_ref().map(|p| p.lost.clone()).unwrap_or_default(),
            assignment_lost: pending.is_some_and(|p| p.assignment_lost),
        };
        let summary = format!("rebalance: gained {}, lost {}", event.gained.len(), event.lost.len());
        self.audit.note("rebalance", &summary, &serde_json::to_value(&event).unwrap_or_default());
        self.push_rebalance(event);
        self.rebalance_state = RebalanceState::Stable;
        self.dirty = true;
        tracing::info!("assigned {:?}", tps);
    }

    pub fn rebalance_completing(&mut self) {
        self.pending_rebalance.get_or_insert_with(|| PendingRebalance {
            started: SystemTime::now(),
            lost: Vec::new(),
            assignment_lost: false,
        });
        self.rebalance_state = RebalanceState::CompletingRebalance;
        self.dirty = true;
    }

    /// Stops the workers of the revoked partitions, waits briefly for the record
    /// each has in hand, and commits what finished (unless the assignment was lost:
    /// another member may own them already).
    pub fn revoke(&mut self, broker: &dyn Broker, tps: Vec<Tp>, lost: bool) {
        let pending = self.pending_rebalance.get_or_insert_with(|| PendingRebalance {
            started: SystemTime::now(),
            lost: Vec::new(),
            assignment_lost: false,
        });
        pending.lost.extend(tps.iter().map(tp_name));
        pending.assignment_lost |= lost;
        self.rebalance_state = RebalanceState::PreparingRebalance;
        self.dirty = true;

        let deadline = Instant::now() + self.revoke_timeout;
        for tp in &tps {
            if let Some(part) = self.parts.get_mut(tp) {
                part.stash.clear();
                if !part.worker.stop_and_wait(deadline.saturating_duration_since(Instant::now())) {
                    tracing::warn!("{} still busy at revoke; its record stays uncommitted", tp_name(tp));
                }
            }
        }
        self.drain_events();
        if let Some(eos) = &self.exactly_once {
            // A worker still busy past the wait must not commit for a partition
            // that is no longer ours (its transaction is aborted instead).
            for tp in &tps {
                eos.next_epoch(&tp.0, tp.1);
            }
        }
        if lost {
            tracing::warn!("assignment lost for {:?}: nothing committed for it", tps);
        } else {
            self.commit(broker, CommitMode::Sync, Some(&tps));
        }
        self.retry_queue.retain(|(tp, _), _| !tps.contains(tp));
        // A pause outlives the assignment in librdkafka: resume before the partition goes.
        let mut resume = Vec::new();
        for tp in &tps {
            if let Some(part) = self.parts.remove(tp) {
                if part.applied_pause {
                    resume.push(tp.clone());
                }
            }
        }
        if !resume.is_empty() {
            if let Err(e) = broker.resume(&resume) {
                tracing::warn!("resume of revoked partitions failed: {e}");
            }
        }
        tracing::info!("revoked {:?} (lost: {lost})", tps);
    }

    pub(super) fn push_rebalance(&mut self, ev: RebalanceEvent) {
        self.rebalances_total += 1;
        if self.rebalances.len() == REBALANCE_HISTORY {
            self.rebalances.pop_front();
        }
        self.rebalances.push_back(ev);
    }
}
