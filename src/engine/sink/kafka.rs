//! `kafka:TOPIC`: each handled record is produced to an output topic (its key
//! and headers kept, its value passed through or projected with
//! `--transform fields:a,b`). A worker's batch is produced at flush and waited
//! for. Under `--commit eos` the batch and its partition's next offset go in a
//! producer transaction (kafka_txn.rs).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use serde_json::Value;

use super::eos::ExactlyOnce;
use super::kafka_txn::{retry, Batch, Transactions};
use super::Sink;
use crate::engine::dlq::Producer;
use crate::engine::handler::{Failure, Progress};

/// Where the output goes, shared by the partitions of one instance.
pub struct KafkaTarget {
    topic: String,
    /// `--transform fields:a,b`: the output value is a JSON object of these fields.
    fields: Option<Vec<String>>,
    plain: Producer,
    transactions: Arc<Transactions>,
    pub eos: Arc<ExactlyOnce>,
}

impl KafkaTarget {
    pub fn new(
        topic: &str,
        transform: Option<&str>,
        brokers: &str,
        properties: &[(String, String)],
        group: &str,
        transactional_id: &str,
    ) -> Result<KafkaTarget, String> {
        let fields = match transform {
            None => None,
            Some(t) => match t.strip_prefix("fields:") {
                Some(list) if !list.trim().is_empty() => Some(list.split(',').map(|f| f.trim().to_string()).collect()),
                _ => return Err(format!("--transform `{t}` is not fields:NAME[,NAME…]")),
            },
        };
        let mut config = ClientConfig::new();
        // A transaction left open by a crash blocks read_committed readers until it times out.
        config.set("bootstrap.servers", brokers).set("transaction.timeout.ms", "10000");
        for (k, v) in properties.iter().filter(|(k, _)| !crate::engine::dlq::is_consumer_only(k)) {
            config.set(k, v);
        }
        // Reads the group's offsets without joining it (an unknown commit outcome).
        let mut checker = ClientConfig::new();
        checker.set("bootstrap.servers", brokers);
        for (k, v) in properties.iter().filter(|(k, _)| k != "group.instance.id") {
            checker.set(k, v);
        }
        checker.set("group.id", group);
        let transactions = Arc::new(Transactions::new(config, checker, transactional_id, topic));
        Ok(KafkaTarget {
            topic: topic.to_string(),
            fields,
            plain: Producer::new(brokers, properties, Duration::from_secs(30))?,
            eos: transactions.eos.clone(),
            transactions,
        })
    }

    pub fn open(self: &Arc<Self>, topic: &str, partition: i32) -> KafkaSink {
        // The epoch of the assignment this sink works for: once the partition is
        // revoked, its transactions can no longer send offsets.
        KafkaSink { target: self.clone(), tp: (topic.to_string(), partition), batch: Vec::new(), sealed: None, epoch: self.eos.epoch(topic, partition) }
    }

    /// Exactly-once coming on starts the transactional producer at once: its
    /// init aborts what a dead predecessor with the same transactional id left
    /// open, which otherwise holds the group's offsets (and so the assignment,
    /// see stable_offsets.rs) until the transaction times out.
    pub fn start_producer_when_eos_starts(self: &Arc<Self>) {
        let transactions = Arc::downgrade(&self.transactions);
        self.eos.on_enable(Box::new(move || match transactions.upgrade() {
            Some(t) => t.start(),
            None => Ok(()),
        }));
    }
}

#[derive(Clone)]
pub struct Out {
    /// None: the output topic; a dead letter names its own.
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

pub struct KafkaSink {
    target: Arc<KafkaTarget>,
    tp: (String, i32),
    batch: Vec<Out>,
    /// Under eos, a batch handed to a transaction that failed, with the offset it
    /// committed: tried again as it was, alone, before anything written since
    /// (its outcome may be unknown, and only the very same batch is settled).
    sealed: Option<(Arc<Vec<Out>>, i64)>,
    epoch: u64,
}

impl Sink for KafkaSink {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        let out_value = match &self.target.fields {
            None => record.payload().map(<[u8]>::to_vec),
            Some(fields) => {
                let projected: serde_json::Map<String, Value> =
                    fields.iter().map(|f| (f.clone(), value.get(f).cloned().unwrap_or(Value::Null))).collect();
                Some(Value::Object(projected).to_string().into_bytes())
            }
        };
        self.batch.push(Out {
            topic: None,
            key: record.key().map(<[u8]>::to_vec),
            value: out_value,
            headers: record.headers().cloned().unwrap_or_default(),
        });
        Ok(())
    }

    /// A flush waits for the output's acknowledgements (and under eos a
    /// transaction adds several round trips to the coordinator): many records
    /// share one. Kafka to Kafka at least once went from 83k to 161k records/s
    /// with 4096 instead of 256 (benches/versus_kcat.sh, 1M records). Under eos
    /// the partitions' batches share transactions (kafka_txn.rs), and 16384 was
    /// no faster than 4096 but took 20–30 MiB more.
    fn batch_size(&self) -> Option<usize> {
        Some(4096)
    }

    /// Under eos a dead letter goes in the batch's transaction, with the outputs
    /// and the offset that moves past it.
    fn carry_dead_letter(&mut self, record: &OwnedMessage, letter: &crate::engine::dlq::Letter) -> bool {
        if !self.target.eos.enabled() {
            return false;
        }
        self.batch.push(Out {
            topic: Some(letter.topic.clone()),
            key: record.key().map(<[u8]>::to_vec),
            value: record.payload().map(<[u8]>::to_vec),
            headers: letter.headers.clone(),
        });
        true
    }

    fn flush(&mut self, progress: Option<&Progress>) -> Result<(), Failure> {
        match progress.filter(|_| self.target.eos.enabled()) {
            Some(p) => {
                if let Some((records, next_offset)) = self.sealed.clone() {
                    self.transact(records, p, next_offset)?;
                    self.sealed = None;
                    if self.batch.is_empty() && p.next_offset == next_offset {
                        return Ok(());
                    }
                }
                let records = Arc::new(std::mem::take(&mut self.batch));
                // Kept until it is safely out: a failed flush is tried again with the same batch.
                self.sealed = Some((records.clone(), p.next_offset));
                self.transact(records, p, p.next_offset)?;
                self.sealed = None;
            }
            // Each to its own topic: dead letters carried under eos stay dead letters
            // when eos was switched off before the flush.
            None => {
                if let Some((sealed, _)) = self.sealed.take() {
                    // At least once now: sent plainly, so never settled by a token.
                    self.target.transactions.forget(&self.tp.0, self.tp.1);
                    let mut records = Arc::unwrap_or_clone(sealed);
                    records.append(&mut self.batch);
                    self.batch = records;
                }
                let records = self.batch.iter().map(|o| {
                    (o.topic.as_deref().unwrap_or(&self.target.topic), o.key.as_deref(), o.value.as_deref(), o.headers.clone())
                });
                self.target.plain.send_all(records).map_err(|e| retry(format!("output topic {}: {e}", self.target.topic)))?;
                // Kept until it is safely out: a failed flush is tried again with the same batch.
                self.batch.clear();
            }
        }
        Ok(())
    }
}

impl KafkaSink {
    fn transact(&self, records: Arc<Vec<Out>>, p: &Progress, next_offset: i64) -> Result<(), Failure> {
        self.target.transactions.commit(Batch::new(records, p.topic, p.partition, next_offset, self.epoch))
    }
}
