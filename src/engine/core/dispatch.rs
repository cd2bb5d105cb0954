//! Records to workers and what workers report back: the trackers, the
//! retry queue, dead letters, blocked partitions; partitions caught up to the
//! consumer's position past what is never delivered.

use super::*;

impl Core {

    /// Hands polled records to their partitions' workers, with what waited for
    /// room before them. Under at-most-once they are committed first.
    pub fn dispatch(&mut self, broker: &dyn Broker, records: Vec<OwnedMessage>) {
        if records.is_empty() {
            return self.flush_stashes();
        }
        if self.strategy == CommitStrategy::AtMostOnce && self.pending_strategy.is_none() {
            self.commit_received(broker, &records);
        }
        // Records come in runs of one partition: its key is made once a run, not
        // once a record.
        let mut tp: Tp = (String::new(), -1);
        for record in records {
            if tp.1 != record.partition() || tp.0 != record.topic() {
                tp = (record.topic().to_string(), record.partition());
            }
            let Some(part) = self.parts.get_mut(&tp) else {
                // Not (or no longer) ours: untracked, so never committed by us.
                continue;
            };
            self.consumed += 1;
            part.start.get_or_insert(record.offset());
            let bytes = record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len);
            part.largest_record = part.largest_record.max(bytes);
            part.tracker.received_sized(record.offset(), bytes);
            part.position = Some(record.offset() + 1);
            part.stash.push_back(record);
        }
        // Each partition's records go over as one chunk.
        self.flush_stashes();
    }

    pub(super) fn commit_received(&mut self, broker: &dyn Broker, records: &[OwnedMessage]) {
        let mut next: BTreeMap<Tp, i64> = BTreeMap::new();
        for r in records {
            let tp = (r.topic().to_string(), r.partition());
            if self.parts.contains_key(&tp) {
                next.insert(tp, r.offset() + 1);
            }
        }
        let offsets: Vec<(Tp, i64)> = next.into_iter().collect();
        self.send_commit(broker, &offsets, CommitMode::Sync);
    }

    /// Partitions with nothing in flight are finished up to the consumer's position.
    /// It runs ahead of the last record delivered where librdkafka skipped what is
    /// never delivered (transaction markers; aborted records under read_committed).
    pub fn catch_up_idle(&mut self, broker: &dyn Broker) {
        if self.last_catch_up.elapsed() < CATCH_UP_EVERY || !self.parts.values().any(|p| p.tracker.unfinished() == 0) {
            return;
        }
        self.last_catch_up = Instant::now();
        let positions = match broker.positions() {
            Ok(p) => p,
            Err(e) => return tracing::debug!("reading positions failed: {e}"),
        };
        let positions: BTreeMap<Tp, i64> = positions.into_iter().collect();
        for (tp, part) in self.parts.iter_mut() {
            // Where librdkafka has no position (after the seek that wakes its fetcher
            // at a resume, until the next record), the one kept here stands in.
            part.position = part.position.max(positions.get(tp).copied());
            if part.position.is_some_and(|pos| part.tracker.caught_up_to(pos)) {
                self.dirty = true;
            }
        }
    }

    /// Moves stashed records into worker queues as room frees up.
    pub fn flush_stashes(&mut self) {
        for part in self.parts.values_mut() {
            part.worker.offer_from(&mut part.stash);
        }
    }

    /// Takes in what workers report. Needs the consumer to pause partitions that became blocked.
    pub fn drain_events_and_block(&mut self, broker: &dyn Broker) {
        if self.drain_events() {
            self.sync_pauses(broker);
        }
    }

    /// Returns true when a partition became blocked or unblocked.
    pub fn drain_events(&mut self) -> bool {
        let mut blocked_changed = false;
        while let Ok(Notice { area, error, message }) = self.notices_rx.try_recv() {
            if error {
                self.record_error(area, message.clone());
            }
            if self.notices.len() == ERROR_HISTORY {
                self.notices.pop_front();
            }
            self.notices.push_back(EngineError { at_ms: ms(SystemTime::now()), area: area.into(), message });
            self.dirty = true;
        }
        while let Ok((from, ev)) = self.events_rx.try_recv() {
            // A worker that outlived its partition's revoke reports about an
            // assignment that is gone: nothing of it may touch the new one.
            let tp = ev.tp();
            // (What it wrote to the dead-letter topic is there all the same: counted.)
            let counts_only = matches!(ev, WorkerEvent::DeadLettered { .. } | WorkerEvent::Failed { .. });
            if !counts_only && self.parts.get(tp).is_none_or(|p| p.worker.id != from) {
                tracing::debug!("ignored a late report of a former worker of {}: {ev:?}", tp_name(tp));
                continue;
            }
            match ev {
                WorkerEvent::Finished { tp, offsets, latencies_us, flushed_to, last_timestamp_ms } => {
                    self.latencies_us.extend(latencies_us);
                    if self.sink_commits_offsets() {
                        // The flush's transaction committed this offset with its outputs.
                        self.apply_committed(std::iter::once((tp.clone(), flushed_to)));
                    }
                    let Some(part) = self.parts.get_mut(&tp) else { continue };
                    if last_timestamp_ms.is_some() {
                        part.last_processed_ts = last_timestamp_ms;
                    }
                    for o in &offsets {
                        if part.tracker.finished(*o) {
                            part.processed += 1;
                            self.processed += 1;
                            self.finished_since_commit += 1;
                        }
                    }
                }
                WorkerEvent::Failed { tp, offset, failure } => {
                    self.failed += 1;
                    *self.failures.entry(format!("{}/{}", failure.stage, failure.class())).or_insert(0) += 1;
                    tracing::info!("{}@{offset} failed: {failure}", tp_name(&tp));
                }
                WorkerEvent::Parked { tp, view } => {
                    self.retry_queue.insert((tp, view.offset), view);
                }
                WorkerEvent::Unparked { tp, offset } => {
                    self.retry_queue.remove(&(tp, offset));
                }
                WorkerEvent::DeadLettered { view, .. } => {
                    self.dead_lettered += 1;
                    if self.dead_letters.len() == DEAD_LETTER_HISTORY {
                        self.dead_letters.pop_back();
                    }
                    self.dead_letters.push_front(view);
                    self.dirty = true;
                }
                WorkerEvent::Died { tp, reason } => {
                    let message = format!("{} cannot advance: {reason}; nothing past it is committed", tp_name(&tp));
                    tracing::error!("{message}");
                    self.record_error("worker", message.clone());
                    self.fatal.get_or_insert(message);
                    if let Some(part) = self.parts.get_mut(&tp) {
                        part.blocked = Some(reason);
                        blocked_changed = true;
                    }
                }
                WorkerEvent::Blocked { tp, reason } => {
                    if let Some(r) = &reason {
                        tracing::warn!("{} cannot advance: {r}", tp_name(&tp));
                        self.record_error("partition", format!("{} cannot advance: {r}", tp_name(&tp)));
                    }
                    if let Some(part) = self.parts.get_mut(&tp) {
                        part.blocked = reason;
                        blocked_changed = true;
                    }
                }
            }
        }
        blocked_changed
    }

    /// Retry now / dead-letter now for a parked record; false when the partition is not ours.
    pub fn worker_command(&mut self, tp: &Tp, cmd: WorkerCommand) -> bool {
        let Some(part) = self.parts.get(tp) else { return false };
        let (action, offset) = match cmd {
            WorkerCommand::RetryNow(o) => ("retry_now", o),
            WorkerCommand::DeadLetterNow(o) => ("dead_letter_now", o),
            WorkerCommand::Advance(_) => {
                part.worker.command(cmd);
                return true;
            }
        };
        self.audit.note("action", &format!("{action} {}@{offset}", tp_name(tp)), &json!({"action": action, "partition": tp_name(tp), "offset": offset}));
        part.worker.command(cmd);
        true
    }
}
