//! Exactly-once into Kafka: the partitions of one instance share its producer
//! transactions. A partition's batch and its next offset go in a transaction
//! together with the consumer's group metadata (a member that lost the
//! partition is fenced). Batches that arrive while a transaction is under way
//! wait and go together in the next one (group commit): a transaction costs
//! several round trips to the coordinator whatever its size, and one at a time
//! per partition left the workers waiting on each other's.
//!
//! A failed transaction is aborted, and every batch in it is tried again in a
//! new one, so nothing of a failed attempt is ever visible to a
//! `read_committed` reader.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_sys as rdsys;

use super::eos::ExactlyOnce;
use super::group_commit::GroupCommit;
use super::kafka::Out;
use crate::engine::handler::{Failure, Stage};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

type Producer = ThreadedProducer<DefaultProducerContext>;

/// One partition's batch, waiting for (or in) a transaction.
pub struct Batch {
    pub records: Arc<Vec<Out>>,
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// The assignment epoch the worker began in (see `ExactlyOnce::epoch`).
    pub epoch: u64,
}

pub struct Transactions {
    /// The transactional producer, and the batches waiting for it.
    group: GroupCommit<Batch, Option<Producer>, Result<(), Failure>>,
    config: ClientConfig,
    /// The output topic (a dead letter carried in a batch names its own).
    output: String,
    pub eos: Arc<ExactlyOnce>,
    count: AtomicU32,
    failpoints: Failpoints,
}

/// Test failpoints (`KDECK_FAILPOINT=NAME:N`), each about the N-th transaction.
#[derive(Default)]
struct Failpoints {
    /// `abort-transaction:N`: aborted instead of committed (the abort path, against a real broker).
    abort_at: Option<u32>,
    /// `slow-commit:N`: the commit first fails as a slow coordinator makes it fail (retriable).
    slow_commit_at: Option<u32>,
    /// `hang-before-commit:N`: its offsets sent, it never commits (for a test that kills the process then).
    hang_at: Option<u32>,
}

impl Failpoints {
    fn from_env() -> Failpoints {
        let at = |name: &str| {
            std::env::var("KDECK_FAILPOINT").ok().and_then(|f| f.strip_prefix(name).and_then(|n| n.parse().ok()))
        };
        Failpoints { abort_at: at("abort-transaction:"), slow_commit_at: at("slow-commit:"), hang_at: at("hang-before-commit:") }
    }
}

impl Transactions {
    pub fn new(mut config: ClientConfig, transactional_id: &str, output: &str) -> Transactions {
        config.set("transactional.id", transactional_id);
        // The coordinator answers the next transaction's first request with
        // CONCURRENT_TRANSACTIONS while it still writes the last one's markers;
        // librdkafka waits retry.backoff.ms (100 ms by default) before asking again.
        if config.get("retry.backoff.ms").is_none() {
            config.set("retry.backoff.ms", "20");
        }
        Transactions {
            group: GroupCommit::new(None),
            config,
            output: output.to_string(),
            eos: Arc::new(ExactlyOnce::kafka()),
            count: AtomicU32::new(0),
            failpoints: Failpoints::from_env(),
        }
    }

    /// Starts the producer now (see `KafkaTarget::start_producer_when_eos_starts`).
    pub fn start(&self) -> Result<(), String> {
        ready(&mut self.group.state(), &self.config).map(|_| ()).map_err(|f| f.message)
    }

    /// Commits `batch` with its partition's next offset, in a transaction it may
    /// share with other partitions' batches; returns when that transaction has
    /// committed or failed.
    pub fn commit(&self, batch: Batch) -> Result<(), Failure> {
        self.group.commit(batch, |producer, group| self.run(producer, group))
    }

    /// One transaction for `group`; every batch in it gets the outcome.
    fn run(&self, slot: &mut Option<Producer>, group: Vec<Batch>) -> Vec<Result<(), Failure>> {
        // A batch of a partition revoked since its worker began is left to the new owner.
        let revoked = |b: &Batch| !self.eos.is_current(&b.topic, b.partition, b.epoch);
        let current: Vec<&Batch> = group.iter().filter(|b| !revoked(b)).collect();
        let outcome = if current.is_empty() { Ok(()) } else { self.transact(slot, &current) };
        group
            .iter()
            .map(|b| match revoked(b) {
                true => Err(retry(format!("{}[{}] was revoked from this worker: its batch is left to the new owner", b.topic, b.partition))),
                false => outcome.clone(),
            })
            .collect()
    }

    fn transact(&self, slot: &mut Option<Producer>, group: &[&Batch]) -> Result<(), Failure> {
        let producer = ready(slot, &self.config)?;
        self.eos.opened(group.iter().map(|b| b.records.len()).sum());
        let outcome = self.attempt(producer, group);
        self.eos.closed(outcome.as_ref().err().map(|e| e.message.as_str()));
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.kind == TxnErrorKind::Fatal => {
                // Fenced (another producer took this transactional id) or broken: a new
                // producer starts clean; the batches are tried again in a new transaction.
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
    fn attempt(&self, producer: &Producer, group: &[&Batch]) -> Result<(), TxnError> {
        producer.begin_transaction().map_err(TxnError::from)?;
        let mut offsets = TopicPartitionList::new();
        for b in group {
            for out in b.records.iter() {
                let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(out.topic.as_deref().unwrap_or(&self.output)).headers(out.headers.clone());
                if let Some(k) = &out.key {
                    r = r.key(k.as_slice());
                }
                if let Some(v) = &out.value {
                    r = r.payload(v.as_slice());
                }
                crate::engine::dlq::send_when_room(producer, r).map_err(TxnError::from)?;
            }
            offsets.add_partition_offset(&b.topic, b.partition, Offset::Offset(b.next_offset)).map_err(TxnError::from)?;
        }
        with_retries(|| {
            let parts = group.iter().map(|b| (b.topic.as_str(), b.partition, b.epoch));
            let sent = self.eos.with_group_metadata_if_current(parts, |m| match m {
                Some(m) => producer.send_offsets_to_transaction(&offsets, m, TXN_TIMEOUT).map_err(TxnError::from),
                None => Err(TxnError { kind: TxnErrorKind::Abortable, message: "no consumer group metadata yet".into() }),
            });
            sent.unwrap_or_else(|| {
                let message = "a partition in the transaction was revoked from this worker: its batch is left to the new owner";
                Err(TxnError { kind: TxnErrorKind::Abortable, message: message.into() })
            })
        })?;
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if self.failpoints.abort_at == Some(n) {
            // The worst case: the records are in the log when the abort comes (an
            // abort purges what the producer has not sent yet).
            producer.flush(TXN_TIMEOUT).map_err(TxnError::from)?;
            return Err(TxnError { kind: TxnErrorKind::Abortable, message: format!("failpoint: transaction {n} aborted on purpose") });
        }
        if self.failpoints.hang_at == Some(n) {
            tracing::warn!("failpoint: transaction {n} hangs before its commit");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let mut slow_once = self.failpoints.slow_commit_at == Some(n);
        with_retries(|| {
            if std::mem::take(&mut slow_once) {
                // What librdkafka reports when the coordinator is slow to answer.
                return Err(TxnError { kind: TxnErrorKind::Retriable, message: format!("failpoint: commit {n} timed out") });
            }
            commit_transaction(producer, TXN_TIMEOUT)
        })
    }
}

/// The transactional producer, created and initialised if there is none.
fn ready<'a>(slot: &'a mut Option<Producer>, config: &ClientConfig) -> Result<&'a Producer, Failure> {
    if slot.is_none() {
        let producer: Producer = config.create().map_err(|e| retry(format!("cannot create the transactional producer: {e}")))?;
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| retry(format!("init_transactions: {e}")))?;
        *slot = Some(producer);
    }
    Ok(slot.as_ref().unwrap())
}

/// `rd_kafka_commit_transaction` itself, not rust-rdkafka's wrapper: the wrapper
/// first flushes by polling in steps it always waits out whole (100 ms), which
/// cost every transaction a tenth of a second. librdkafka flushes inside the
/// commit, waiting for the delivery reports the ThreadedProducer's own thread
/// serves.
fn commit_transaction(producer: &Producer, timeout: Duration) -> Result<(), TxnError> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the producer outlives the call; the error, if any, is read then destroyed here.
    unsafe {
        let error = rdsys::rd_kafka_commit_transaction(producer.client().native_ptr(), ms);
        if error.is_null() {
            return Ok(());
        }
        let kind = if rdsys::rd_kafka_error_is_fatal(error) != 0 {
            TxnErrorKind::Fatal
        } else if rdsys::rd_kafka_error_is_retriable(error) != 0 && rdsys::rd_kafka_error_txn_requires_abort(error) == 0 {
            TxnErrorKind::Retriable
        } else {
            TxnErrorKind::Abortable
        };
        let message = std::ffi::CStr::from_ptr(rdsys::rd_kafka_error_string(error)).to_string_lossy().into_owned();
        rdsys::rd_kafka_error_destroy(error);
        Err(TxnError { kind, message: format!("commit_transaction: {message}") })
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
    /// Abort the transaction and start the batches again.
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
