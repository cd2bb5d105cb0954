//! librdkafka's callbacks. They all run on the poll thread, inside `poll()`
//! (or inside the consumer's `Drop`), so the poll loop never holds the core
//! lock while it polls.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;

use super::core::Core;
use super::stats::Stats;
use super::Tp;

pub type KConsumer = BaseConsumer<EngineContext>;

pub struct EngineContext {
    pub core: Arc<Mutex<Core>>,
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
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

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &KConsumer, rebalance: &Rebalance<'_>) {
        let mut core = self.core.lock().unwrap();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Still assigned here: the last chance to commit what finished.
                let lost = consumer.assignment_lost();
                core.revoke(consumer, tps(tpl), lost);
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
            self.core.lock().unwrap().assign(consumer, tps(tpl), protocol, member_id(consumer));
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
