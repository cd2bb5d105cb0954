//! librdkafka's callbacks. They all run on the poll thread, inside `poll()`
//! (or inside the consumer's `Drop`), so the poll loop never holds the core
//! lock while it polls.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::broker::Live;
use super::core::{Core, Notice};
use super::sink::ExactlyOnce;
use super::stats::Stats;
use super::Tp;

pub type KConsumer = BaseConsumer<EngineContext>;

pub struct EngineContext {
    pub core: Arc<Mutex<Core>>,
    /// Where an exactly-once sink keeps its offsets: partitions start there.
    pub exactly_once: Option<Arc<ExactlyOnce>>,
    /// Where a partition with no committed offset starts (auto.offset.reset), and
    /// how long an assignment waits for offsets an open transaction holds.
    pub no_committed: Option<Offset>,
    pub held_offsets_wait: std::time::Duration,
    /// The run is shutting down (a wait in a callback gives up).
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// For warnings logged on librdkafka's own threads, which must not take the
    /// core lock (the poll thread may hold it while it waits on those threads).
    pub notices: crossbeam_channel::Sender<Notice>,
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {message}");
                if fac == "OFFSET" {
                    // An offset reset after an error (records removed by retention
                    // before they were consumed): records were skipped, say so.
                    let message = format!("{message} (records skipped: auto.offset.reset applied)");
                    let _ = self.notices.send(Notice { area: "broker", error: true, message });
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn stats_raw(&self, raw: &[u8]) {
        if let Some(stats) = Stats::parse(raw) {
            self.core.lock().unwrap().apply_stats(&stats);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("kafka error: {error}: {reason}");
        self.core.lock().unwrap().record_error("broker", format!("{error}: {reason}"));
    }
}

impl EngineContext {
    /// Transactions commit this group's offsets: the assignment carries them, read
    /// here (see stable_offsets.rs). Partitions whose start cannot be known are not
    /// taken at all, and the run stops with the reason: a guess could process
    /// records twice.
    fn start_at_committed(&self, consumer: &KConsumer, tpl: &mut TopicPartitionList) {
        let waiting = |m: &str| {
            tracing::warn!("{m}");
            self.core.lock().unwrap().record_error("rebalance", m.to_string());
        };
        let stopping = || self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let wait = super::stable_offsets::Wait { up_to: self.held_offsets_wait, waiting: &waiting, stopping: &stopping };
        match super::stable_offsets::set_committed_starts(consumer, tpl, self.no_committed, wait) {
            Ok(true) => {}
            // Shutting down: nothing is started, nothing to report.
            Ok(false) => *tpl = TopicPartitionList::new(),
            Err(e) => {
                let message = format!("assigned partitions not started: {e}");
                tracing::error!("{message}");
                let mut core = self.core.lock().unwrap();
                core.record_error("rebalance", message.clone());
                core.fatal.get_or_insert(message);
                *tpl = TopicPartitionList::new();
            }
        }
    }
}

impl ConsumerContext for EngineContext {
    /// As rust-rdkafka's default, but under exactly-once each assigned partition is
    /// given its start offset from the sink's store *in the assignment itself*:
    /// seeking after assign races the committed-offset fetch (librdkafka #3959).
    fn rebalance(&self, consumer: &KConsumer, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let mut assigned = tpl.clone();
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let tpl = &mut assigned;
                if self.exactly_once.as_ref().is_some_and(|e| e.commits_offsets() && e.enabled()) {
                    self.start_at_committed(consumer, tpl);
                } else if let Some(eos) = self.exactly_once.as_ref().filter(|e| e.enabled()) {
                    for (topic, partition) in tps(&tpl) {
                        match eos.next_offset(&topic, partition) {
                            Ok(Some(o)) => {
                                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(o));
                            }
                            Ok(None) => {} // never stored: the group's committed offset
                            Err(e) => self.core.lock().unwrap().record_error("commit", e),
                        }
                    }
                }
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            _ if cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = outcome {
            self.core.lock().unwrap().record_error("rebalance", format!("assignment change failed: {e}"));
        }
        // Post-rebalance sees the start offsets that were set, so the engine knows
        // everything below them is done.
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(&assigned),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &KConsumer, rebalance: &Rebalance<'_>) {
        let mut core = self.core.lock().unwrap();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Still assigned here: the last chance to commit what finished.
                let lost = consumer.assignment_lost();
                core.revoke(&Live { consumer, queue: None }, tps(tpl), lost);
            }
            Rebalance::Assign(_) => core.rebalance_completing(),
            Rebalance::Error(e) => core.record_error("rebalance", format!("rebalance failed: {e}")),
        }
    }

    fn post_rebalance(&self, consumer: &KConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let protocol = match consumer.rebalance_protocol() {
                RebalanceProtocol::Eager => "eager",
                RebalanceProtocol::Cooperative => "cooperative",
                RebalanceProtocol::None => "none",
            }
            .to_string();
            let starts: Vec<(Tp, Option<i64>)> = tpl
                .elements()
                .iter()
                .map(|e| ((e.topic().to_string(), e.partition()), if let Offset::Offset(o) = e.offset() { Some(o) } else { None }))
                .collect();
            self.core.lock().unwrap().assign(&Live { consumer, queue: None }, starts, protocol, member_id(consumer));
        }
    }
}

pub fn tps(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

pub fn member_id(consumer: &KConsumer) -> String {
    // SAFETY: rd_kafka_memberid returns a string we own (or NULL), freed with rd_kafka_mem_free.
    unsafe {
        let rk = consumer.client().native_ptr();
        let p = rdkafka_sys::rd_kafka_memberid(rk);
        if p.is_null() {
            return String::new();
        }
        let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        rdkafka_sys::rd_kafka_mem_free(rk, p as *mut std::ffi::c_void);
        s
    }
}
