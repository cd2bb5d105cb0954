//! `kafka:TOPIC`: each handled record is produced to an output topic (its key
//! and headers kept, its value passed through or projected with
//! `--transform fields:a,b`). A worker's batch is produced at flush and waited
//! for. Under `--commit eos` the batch and its partition's next offset go in one
//! producer transaction (with the consumer's group metadata, so a member that
//! lost the partition is fenced); a failed transaction is aborted and the batch
//! tried again in a new one, so nothing of a failed attempt is ever visible to a
//! `read_committed` reader.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::eos::ExactlyOnce;
use super::Sink;
use crate::engine::dlq::Producer;
use crate::engine::handler::{Failure, Progress, Stage};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the output goes, shared by the partitions of one instance.
pub struct KafkaTarget {
    topic: String,
    /// `--transform fields:a,b`: the output value is a JSON object of these fields.
    fields: Option<Vec<String>>,
    plain: Producer,
    txn: Mutex<Option<ThreadedProducer<DefaultProducerContext>>>,
    config: ClientConfig,
    pub eos: Arc<ExactlyOnce>,
    transactions: AtomicU32,
    /// Test failpoint (`KDECK_FAILPOINT=abort-transaction:N`): the N-th transaction is aborted
    /// instead of committed, exercising the abort path against a real broker.
    abort_at: Option<u32>,
    /// Test failpoint (`KDECK_FAILPOINT=slow-commit:N`): the N-th commit first fails as a
    /// slow coordinator makes it fail (retriable), exercising the retry path.
    slow_commit_at: Option<u32>,
    /// Test failpoint (`KDECK_FAILPOINT=hang-before-commit:N`): the N-th transaction, its
    /// offsets sent, never commits (for a test that kills the process then).
    hang_at: Option<u32>,
}

impl KafkaTarget {
    pub fn new(
        topic: &str,
        transform: Option<&str>,
        brokers: &str,
        properties: &[(String, String)],
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
        config.set("transactional.id", transactional_id);
        let failpoint = |name: &str| {
            std::env::var("KDECK_FAILPOINT").ok().and_then(|f| f.strip_prefix(name).and_then(|n| n.parse().ok()))
        };
        let (abort_at, slow_commit_at) = (failpoint("abort-transaction:"), failpoint("slow-commit:"));
        let hang_at = failpoint("hang-before-commit:");
        Ok(KafkaTarget {
            topic: topic.to_string(),
            fields,
            plain: Producer::new(brokers, properties, Duration::from_secs(30))?,
            txn: Mutex::new(None),
            config,
            eos: Arc::new(ExactlyOnce::kafka()),
            transactions: AtomicU32::new(0),
            abort_at,
            slow_commit_at,
            hang_at,
        })
    }

    pub fn open(self: &Arc<Self>, topic: &str, partition: i32) -> KafkaSink {
        // The epoch of the assignment this sink works for: once the partition is
        // revoked, its transactions can no longer send offsets.
        KafkaSink { target: self.clone(), batch: Vec::new(), epoch: self.eos.epoch(topic, partition) }
    }

    /// Exactly-once coming on starts the transactional producer at once: its
    /// init aborts what a dead predecessor with the same transactional id left
    /// open, which otherwise holds the group's offsets (and so the assignment,
    /// see stable_offsets.rs) until the transaction times out.
    pub fn start_producer_when_eos_starts(self: &Arc<Self>) {
        let target = Arc::downgrade(self);
        self.eos.on_enable(Box::new(move || match target.upgrade() {
            Some(t) => Self::ready(&mut t.txn.lock().unwrap(), &t.config).map(|_| ()).map_err(|f| f.message),
            None => Ok(()),
        }));
    }

    /// The transactional producer, created and initialised if there is none.
    fn ready<'a>(
        slot: &'a mut Option<ThreadedProducer<DefaultProducerContext>>,
        config: &ClientConfig,
    ) -> Result<&'a ThreadedProducer<DefaultProducerContext>, Failure> {
        if slot.is_none() {
            let producer: ThreadedProducer<DefaultProducerContext> =
                config.create().map_err(|e| retry(format!("cannot create the transactional producer: {e}")))?;
            producer.init_transactions(TXN_TIMEOUT).map_err(|e| retry(format!("init_transactions: {e}")))?;
            *slot = Some(producer);
        }
        Ok(slot.as_ref().unwrap())
    }

    /// Produces `batch` and commits `progress` in one transaction.
    fn transact(&self, batch: &[Out], p: &Progress, epoch: u64) -> Result<(), Failure> {
        let mut slot = self.txn.lock().unwrap();
        let producer = Self::ready(&mut slot, &self.config)?;
        self.eos.opened(batch.len());
        let outcome = self.attempt(producer, batch, p, epoch);
        self.eos.closed(outcome.as_ref().err().map(|e| e.message.as_str()));
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.kind == TxnErrorKind::Fatal => {
                // Fenced (another producer took this transactional id) or broken: a new
                // producer starts clean; the batch is tried again in a new transaction.
                *slot = None;
                Err(retry(format!("transactional producer fenced or failed, rebuilt: {}", e.message)))
            }
            Err(e) => {
                if let Err(abort) = producer.abort_transaction(TXN_TIMEOUT) {
                    // An abort that fails leaves the producer unusable: start again clean.
                    *slot = None;
                    return Err(retry(format!("transaction failed ({}) and its abort too ({abort}); producer rebuilt", e.message)));
                }
                Err(retry(format!("transaction aborted: {}", e.message)))
            }
        }
    }

    /// One transaction. A step that fails with an error librdkafka calls
    /// retriable (a slow broker, a timeout) is called again, as its docs say
    /// (an abort would be refused then); other errors end the attempt.
    fn attempt(
        &self,
        producer: &ThreadedProducer<DefaultProducerContext>,
        batch: &[Out],
        p: &Progress,
        epoch: u64,
    ) -> Result<(), TxnError> {
        producer.begin_transaction().map_err(TxnError::from)?;
        for out in batch {
            let topic = out.topic.as_deref().unwrap_or(self.topic.as_str());
            let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(out.headers.clone());
            if let Some(k) = &out.key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = &out.value {
                r = r.payload(v.as_slice());
            }
            crate::engine::dlq::send_when_room(producer, r).map_err(TxnError::from)?;
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(p.topic, p.partition, Offset::Offset(p.next_offset))
            .map_err(TxnError::from)?;
        with_retries(|| {
            let sent = self.eos.with_group_metadata(p.topic, p.partition, epoch, |m| match m {
                Some(m) => producer.send_offsets_to_transaction(&offsets, m, TXN_TIMEOUT).map_err(TxnError::from),
                None => Err(TxnError { kind: TxnErrorKind::Abortable, message: "no consumer group metadata yet".into() }),
            });
            sent.unwrap_or_else(|| {
                let message = format!("{}[{}] was revoked from this worker: its batch is left to the new owner", p.topic, p.partition);
                Err(TxnError { kind: TxnErrorKind::Abortable, message })
            })
        })?;
        let n = self.transactions.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_at == Some(n) {
            // The worst case: the records are in the log when the abort comes (an
            // abort purges what the producer has not sent yet).
            producer.flush(TXN_TIMEOUT).map_err(TxnError::from)?;
            return Err(TxnError { kind: TxnErrorKind::Abortable, message: format!("failpoint: transaction {n} aborted on purpose") });
        }
        if self.hang_at == Some(n) {
            tracing::warn!("failpoint: transaction {n} hangs before its commit");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let mut slow_once = self.slow_commit_at == Some(n);
        with_retries(|| {
            if std::mem::take(&mut slow_once) {
                // What librdkafka reports when the coordinator is slow to answer.
                return Err(TxnError { kind: TxnErrorKind::Retriable, message: format!("failpoint: commit {n} timed out") });
            }
            producer.commit_transaction(TXN_TIMEOUT).map_err(TxnError::from)
        })
    }
}

/// Calls `step` again while it fails with a retriable error (a bounded number of times).
fn with_retries(mut step: impl FnMut() -> Result<(), TxnError>) -> Result<(), TxnError> {
    let mut tries = 0;
    loop {
        match step() {
            Err(e) if e.kind == TxnErrorKind::Retriable && tries < TXN_RETRIES => {
                tries += 1;
                tracing::warn!("transaction step failed, retrying ({tries}/{TXN_RETRIES}): {}", e.message);
                std::thread::sleep(Duration::from_millis(100 << tries.min(5)));
            }
            other => return other,
        }
    }
}

/// How often a retriable transaction step is tried again before the attempt is given up.
const TXN_RETRIES: u32 = 5;

/// What a failed transaction step asks for (librdkafka's classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnErrorKind {
    /// Call the same step again.
    Retriable,
    /// Abort the transaction and start the batch again.
    Abortable,
    /// The producer is unusable (fenced): a new one.
    Fatal,
}

#[derive(Debug)]
struct TxnError {
    kind: TxnErrorKind,
    message: String,
}

impl From<KafkaError> for TxnError {
    fn from(e: KafkaError) -> TxnError {
        let kind = match &e {
            KafkaError::Transaction(t) if t.is_fatal() => TxnErrorKind::Fatal,
            KafkaError::Transaction(t) if t.is_retriable() && !t.txn_requires_abort() => TxnErrorKind::Retriable,
            _ => TxnErrorKind::Abortable,
        };
        TxnError { kind, message: e.to_string() }
    }
}

fn retry(m: String) -> Failure {
    Failure::retryable(Stage::Sink, m)
}

struct Out {
    /// None: the output topic; a dead letter names its own.
    topic: Option<String>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

pub struct KafkaSink {
    target: Arc<KafkaTarget>,
    batch: Vec<Out>,
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
    /// with 4096 instead of 256, and under eos 16384 took it from 28k to 38k
    /// (benches/versus_kcat.sh, 1M records). What bounds eos now: one transaction
    /// at a time per instance, each waiting for its acknowledgements.
    fn batch_size(&self) -> Option<usize> {
        Some(if self.target.eos.enabled() { 16384 } else { 4096 })
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
            Some(p) => self.target.transact(&self.batch, p, self.epoch)?,
            // Each to its own topic: dead letters carried under eos stay dead letters
            // when eos was switched off before the flush.
            None => {
                let records = self.batch.iter().map(|o| {
                    (o.topic.as_deref().unwrap_or(&self.target.topic), o.key.as_deref(), o.value.as_deref(), o.headers.clone())
                });
                self.target.plain.send_all(records).map_err(|e| retry(format!("output topic {}: {e}", self.target.topic)))?
            }
        }
        // Kept until it is safely out: a failed flush is tried again with the same batch.
        self.batch.clear();
        Ok(())
    }
}
