//! The snapshot: what the screen, the JSON status line and the metrics show.

use super::*;

impl Core {

    /// Once a second: throughput sample and per-partition rates.
    pub fn sample(&mut self) {
        let (at, c0, p0, f0) = self.last_sample;
        let secs = at.elapsed().as_secs_f64();
        if secs < 1.0 {
            return;
        }
        if self.throughput.len() == HISTORY {
            self.throughput.pop_front();
        }
        self.throughput.push_back(ThroughputSample {
            at_ms: ms(SystemTime::now()),
            consumed_per_s: (self.consumed - c0) as f64 / secs,
            processed_per_s: (self.processed - p0) as f64 / secs,
            failed_per_s: (self.failed - f0) as f64 / secs,
        });
        if !self.latencies_us.is_empty() {
            self.latencies_us.sort_unstable();
            let at = |q: f64| self.latencies_us[((self.latencies_us.len() - 1) as f64 * q) as usize] as u64;
            self.latency = (at(0.50), at(0.99));
            self.latencies_us.clear();
        }
        for part in self.parts.values_mut() {
            part.rate = (part.processed - part.processed_at_sample) as f64 / secs;
            part.processed_at_sample = part.processed;
        }
        self.last_sample = (Instant::now(), self.consumed, self.processed, self.failed);
    }

    pub fn snapshot(&self, stopped: bool) -> Snapshot {
        let partitions: Vec<PartitionView> = self
            .parts
            .iter()
            .map(|(tp, p)| {
                let state = if p.blocked.is_some() {
                    PartitionState::Blocked
                } else if self.operator_paused.contains(tp) {
                    PartitionState::PausedByOperator
                } else if p.bp_since.is_some() {
                    PartitionState::PausedByBackPressure
                } else if self.engine_hold() {
                    PartitionState::PausedByEngine
                } else {
                    PartitionState::Active
                };
                // Statistics arrive once a second; the end is at least what we have read.
                let high_watermark = p.high_watermark.max(p.position);
                let start = p.start.or(p.log_start.filter(|_| self.starts_at_log_start));
                let lag = lag(high_watermark, p.committed, start);
                let now = ms(SystemTime::now()) as i64;
                PartitionView {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    state,
                    paused: p.applied_pause,
                    position: p.position,
                    committed: p.committed,
                    finished: p.tracker.watermark(),
                    high_watermark,
                    lag,
                    lag_ms: p.lag_ms(lag, self.starts_at_log_start, now),
                    last_processed_age_ms: p.last_processed_ts.map(|ts| (now - ts).max(0)),
                    queued: p.queued(),
                    in_flight: p.tracker.unfinished(),
                    rate: p.rate,
                    blocked: p.blocked.clone(),
                }
            })
            .collect();
        let all_paused = !partitions.is_empty() && partitions.iter().all(|p| p.paused);
        let engine_state = if stopped {
            EngineState::Stopped
        } else if self.draining {
            EngineState::Draining
        } else if all_paused {
            EngineState::Paused
        } else if self.rebalances.is_empty() && self.parts.is_empty() {
            EngineState::Starting
        } else {
            EngineState::Running
        };
        Snapshot {
            captured_at_ms: ms(SystemTime::now()),
            started_at_ms: ms(self.started_at),
            cluster: self.identity.cluster.clone(),
            group: self.identity.group.clone(),
            member_id: self.member_id.clone(),
            group_protocol: self.identity.group_protocol.clone(),
            assignor: self.identity.assignor.clone(),
            engine_state,
            commit_strategy: self.strategy.to_string(),
            pending_commit_strategy: self.pending_strategy.map(|s| s.to_string()),
            sink: self.identity.sink.clone(),
            consumed: self.consumed,
            processed: self.processed,
            failed: self.failed,
            commits: self.commits,
            commit_failures: self.commit_failures,
            lag_total: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            rebalance_state: self.rebalance_state,
            rebalances: self.rebalances.iter().cloned().collect(),
            throughput: self.throughput.iter().cloned().collect(),
            errors: self.errors.iter().cloned().collect(),
            retry_queue: {
                let mut q: Vec<RetryView> = self.retry_queue.values().cloned().collect();
                q.sort_by_key(|r| (r.next_due_ms.unwrap_or(u64::MAX), r.partition, r.offset));
                q
            },
            dead_letters: self.dead_letters.iter().cloned().collect(),
            failures: self.failures.clone(),
            dead_lettered: self.dead_lettered,
            notices: self.notices.iter().cloned().collect(),
            latency_p50_us: self.latency.0,
            latency_p99_us: self.latency.1,
            logs: crate::logging::recent(100),
            eos: self.exactly_once.as_ref().map(|e| e.view()),
            rebalances_total: self.rebalances_total,
            commit_latency: self.commit_latency.clone(),
        }
    }
}
