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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
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
    /// About what the records take (a run's budget counts it).
    bytes: usize,
}

impl Batch {
    pub fn new(records: Arc<Vec<Out>>, topic: &str, partition: i32, next_offset: i64, epoch: u64) -> Batch {
        let bytes = records.iter().map(|o| 64 + o.key.as_ref().map_or(0, Vec::len) + o.value.as_ref().map_or(0, Vec::len)).sum();
        Batch { records, topic: topic.to_string(), partition, next_offset, epoch, bytes }
    }
}

pub struct Transactions {
    /// The transactional producer and what it knows of earlier transactions,
    /// and the batches waiting for it.
    group: GroupCommit<Batch, Txn, Result<(), Failure>>,
    config: ClientConfig,
    /// Reads the group's committed offsets (a consumer that never joins).
    checker: ClientConfig,
    /// The output topic (a dead letter carried in a batch names its own).
    output: String,
    pub eos: Arc<ExactlyOnce>,
    /// Tells this process's transactions from any other's in offset metadata.
    nonce: String,
    failpoints: Failpoints,
}

type Tp = (String, i32);

#[derive(Default)]
struct Txn {
    producer: Option<Producer>,
    /// Transactions begun (failpoints count them; tokens carry the number).
    count: u32,
    /// Partitions whose last transaction failed beside others': each goes alone
    /// until it commits, so a batch that can never be written (a record too
    /// large for the output topic) does not abort the others' again and again.
    suspects: HashSet<Tp>,
    /// Partitions whose last commit has an unknown outcome (its answer lost, the
    /// producer fenced at the commit), with that transaction's token: the token
    /// in the group's committed offset metadata says whether it happened, before
    /// their batch may be sent again. (The offset alone cannot: a batch behind a
    /// parked record commits the same offset as the one before it.)
    unknown: HashMap<Tp, Unsettled>,
    /// Reads the group's committed offsets (a consumer that never joins).
    checker: Option<BaseConsumer>,
}

/// A batch whose transaction's outcome is unknown. Only the very same batch
/// (the sink sends it again as it was) is settled by the token.
struct Unsettled {
    token: String,
    next_offset: i64,
    epoch: u64,
}

/// How one transaction ended.
enum Ended {
    Committed,
    Failed(Failure),
    /// The commit was sent and its answer never came.
    Unknown(Failure),
}

/// What one run of the group commit may take: a transaction must end well
/// within `transaction.timeout.ms` however many partitions are waiting.
const RUN_BUDGET_BYTES: usize = 32 << 20;

fn weight(b: &Batch) -> usize {
    b.bytes
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
    /// `commit-answer-lost:N`: it commits, and the answer is treated as lost.
    answer_lost_at: Option<u32>,
    /// `commit-lost:N`: the commit never arrives (it is aborted), and no answer comes.
    commit_lost_at: Option<u32>,
}

impl Failpoints {
    fn from_env() -> Failpoints {
        let at = |name: &str| {
            std::env::var("KDECK_FAILPOINT").ok().and_then(|f| f.strip_prefix(name).and_then(|n| n.parse().ok()))
        };
        Failpoints {
            abort_at: at("abort-transaction:"),
            slow_commit_at: at("slow-commit:"),
            hang_at: at("hang-before-commit:"),
            answer_lost_at: at("commit-answer-lost:"),
            commit_lost_at: at("commit-lost:"),
        }
    }
}

impl Transactions {
    /// `config`: the producer's (brokers, security); `checker`: a consumer's of
    /// the group whose offsets the transactions commit.
    pub fn new(mut config: ClientConfig, mut checker: ClientConfig, transactional_id: &str, output: &str) -> Transactions {
        checker.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
        config.set("transactional.id", transactional_id);
        // The coordinator answers the next transaction's first request with
        // CONCURRENT_TRANSACTIONS while it still writes the last one's markers;
        // librdkafka waits retry.backoff.ms (100 ms by default) before asking again.
        if config.get("retry.backoff.ms").is_none() {
            config.set("retry.backoff.ms", "20");
        }
        Transactions {
            group: GroupCommit::new(Txn::default(), RUN_BUDGET_BYTES, weight),
            config,
            checker,
            output: output.to_string(),
            eos: Arc::new(ExactlyOnce::kafka()),
            // Short: offset metadata is bounded (offset.metadata.max.bytes, 4096 by default).
            nonce: format!("{}-{}-{:x}", std::process::id(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis(), rand::random::<u32>()),
            failpoints: Failpoints::from_env(),
        }
    }

    /// Starts the producer now (see `KafkaTarget::start_producer_when_eos_starts`).
    pub fn start(&self) -> Result<(), String> {
        ready(&mut self.group.state().producer, &self.config).map(|_| ()).map_err(|f| f.message)
    }

    /// A batch whose outcome was unknown went out another way (eos switched
    /// off): nothing of that partition is settled by its token any more.
    pub fn forget(&self, topic: &str, partition: i32) {
        self.group.state().unknown.remove(&(topic.to_string(), partition));
    }

    /// Commits `batch` with its partition's next offset, in a transaction it may
    /// share with other partitions' batches; returns when that transaction has
    /// committed or failed.
    pub fn commit(&self, batch: Batch) -> Result<(), Failure> {
        self.group.commit(batch, |txn, group| self.run(txn, group))
    }

    /// The transactions for `group`: one for all, and one for each suspect.
    fn run(&self, txn: &mut Txn, group: Vec<Batch>) -> Vec<Result<(), Failure>> {
        let mut outcomes: Vec<Option<Result<(), Failure>>> = group
            .iter()
            .map(|b| {
                // Revoked since its worker began: left to the new owner.
                let message = format!("{}[{}] was revoked from this worker: its batch is left to the new owner", b.topic, b.partition);
                (!self.eos.is_current(&b.topic, b.partition, b.epoch)).then(|| Err(retry(message)))
            })
            .collect();
        // A batch whose last commit may have happened is not sent again blindly.
        // What a former assignment left unsettled is moot: the new owner (this
        // worker too) started from offsets read once that transaction had ended.
        txn.unknown.retain(|(t, p), u| self.eos.is_current(t, *p, u.epoch));
        let unsettled: Vec<usize> = (0..group.len()).filter(|&i| outcomes[i].is_none() && txn.unknown.contains_key(&tp(&group[i]))).collect();
        let settled = self.settle(txn, &unsettled.iter().map(|&i| &group[i]).collect::<Vec<_>>());
        for (i, o) in unsettled.into_iter().zip(settled) {
            outcomes[i] = o;
        }
        let open: Vec<usize> = (0..group.len()).filter(|&i| outcomes[i].is_none()).collect();
        for set in plan(open, |i| txn.suspects.contains(&tp(&group[i]))) {
            let batches: Vec<&Batch> = set.iter().map(|&i| &group[i]).collect();
            txn.count += 1;
            let token = format!("kdeck-txn/{}/{}", self.nonce, txn.count);
            let ended = self.transact(&mut txn.producer, &batches, txn.count, &token);
            let answers: Vec<Result<(), Failure>> = match &ended {
                Ended::Committed => {
                    for b in &batches {
                        txn.suspects.remove(&tp(b));
                    }
                    vec![Ok(()); batches.len()]
                }
                Ended::Failed(f) => {
                    if set.len() > 1 {
                        for b in &batches {
                            txn.suspects.insert(tp(b));
                        }
                    }
                    vec![Err(f.clone()); batches.len()]
                }
                Ended::Unknown(f) => {
                    for b in &batches {
                        txn.unknown.insert(tp(b), Unsettled { token: token.clone(), next_offset: b.next_offset, epoch: b.epoch });
                    }
                    // Not committed after all: tried again like any failed batch.
                    self.settle(txn, &batches).into_iter().map(|o| o.unwrap_or_else(|| Err(f.clone()))).collect()
                }
            };
            for (&i, a) in set.iter().zip(answers) {
                outcomes[i] = Some(a);
            }
        }
        outcomes.into_iter().map(|o| o.expect("every batch answered")).collect()
    }

    /// For batches whose partition's last commit has an unknown outcome: Some(Ok)
    /// if it did commit (the group's offset carries that transaction's token),
    /// None if it did not (the batch goes in a transaction as usual), Some(Err)
    /// while that cannot be read yet.
    fn settle(&self, txn: &mut Txn, batches: &[&Batch]) -> Vec<Option<Result<(), Failure>>> {
        if batches.is_empty() {
            return Vec::new();
        }
        let unreadable = |e: &str| {
            let message = format!("whether the last transaction of this partition committed is unknown, and the group's offset cannot be read: {e}");
            Some(Err(Failure::unavailable(Stage::Sink, message)))
        };
        // A new producer with the same transactional id first completes or
        // aborts what the lost commit left, so what is read next is final.
        if let Err(f) = ready(&mut txn.producer, &self.config) {
            return batches.iter().map(|_| Some(Err(f.clone()))).collect();
        }
        let tps: Vec<Tp> = batches.iter().map(|b| tp(b)).collect();
        let read = match self.committed_metadata(&mut txn.checker, &tps) {
            Ok(read) => read,
            Err(e) => return batches.iter().map(|_| unreadable(&e)).collect(),
        };
        tps.into_iter()
            .zip(read)
            .zip(batches)
            .map(|((tp, metadata), b)| match metadata {
                Ok(metadata) => match txn.unknown.remove(&tp) {
                    Some(u) if u.next_offset == b.next_offset && u.epoch == b.epoch => {
                        (metadata == u.token.as_bytes()).then_some(Ok(()))
                    }
                    // Not the batch whose outcome was unknown: never settled by its token.
                    Some(u) => {
                        let message = format!(
                            "{}[{}]: a batch to {} came while the one to {} has an unknown outcome",
                            b.topic, b.partition, b.next_offset, u.next_offset
                        );
                        txn.unknown.insert(tp, u);
                        Some(Err(Failure::unavailable(Stage::Sink, message)))
                    }
                    None => None,
                },
                Err(e) => unreadable(&e),
            })
            .collect()
    }

    /// The metadata of the group's committed offsets, stable (read_committed
    /// waits for open transactions on them to end), per partition in order.
    fn committed_metadata(&self, checker: &mut Option<BaseConsumer>, tps: &[Tp]) -> Result<Vec<Result<Vec<u8>, String>>, String> {
        if checker.is_none() {
            *checker = Some(self.checker.create().map_err(|e| format!("cannot create a consumer to read them: {}", crate::security::client_error(&e)))?);
        }
        let consumer = checker.as_ref().unwrap();
        // Its log and error events pile up unless served.
        while consumer.poll(Duration::ZERO).is_some() {}
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let got = consumer.committed_offsets(tpl, TXN_TIMEOUT).map_err(|e| e.to_string())?;
        // Read from librdkafka's list itself: rust-rdkafka's `metadata()` panics on
        // metadata that is not UTF-8, which another client may have committed.
        // SAFETY: `got` owns the list and outlives the slices read from it.
        let elems = unsafe {
            let list = &*got.ptr();
            std::slice::from_raw_parts(list.elems, usize::try_from(list.cnt).unwrap_or(0))
        };
        Ok(tps
            .iter()
            .map(|(t, p)| {
                let e = elems.iter().find(|e| e.partition == *p && unsafe { std::ffi::CStr::from_ptr(e.topic) }.to_bytes() == t.as_bytes());
                match e {
                    None => Err("not in the answer".to_string()),
                    Some(e) if e.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
                        Err(unsafe { std::ffi::CStr::from_ptr(rdsys::rd_kafka_err2str(e.err)) }.to_string_lossy().into_owned())
                    }
                    Some(e) if e.metadata.is_null() => Ok(Vec::new()),
                    Some(e) => Ok(unsafe { std::slice::from_raw_parts(e.metadata as *const u8, e.metadata_size) }.to_vec()),
                }
            })
            .collect())
    }

    fn transact(&self, slot: &mut Option<Producer>, group: &[&Batch], n: u32, token: &str) -> Ended {
        let producer = match ready(slot, &self.config) {
            Ok(p) => p,
            Err(f) => return Ended::Failed(f),
        };
        self.eos.opened(group.iter().map(|b| b.records.len()).sum());
        let outcome = self.attempt(producer, group, n, token);
        self.eos.closed(outcome.as_ref().err().map(|e| e.message.as_str()));
        match outcome {
            Ok(()) => Ended::Committed,
            Err(e) if e.at_commit && e.kind != TxnErrorKind::Abortable => {
                // The commit went out and no answer says how it ended: a new
                // producer resolves it, and the group's offsets tell.
                *slot = None;
                let message = format!("the commit's outcome is unknown ({}): producer rebuilt, the group's offsets will tell", e.message);
                tracing::warn!("{message}");
                Ended::Unknown(retry(message))
            }
            Err(e) if e.kind == TxnErrorKind::Fatal => {
                // Fenced (another producer took this transactional id) or broken: a new
                // producer starts clean; the batches are tried again in a new transaction.
                *slot = None;
                Ended::Failed(retry(format!("transactional producer fenced or failed, rebuilt: {}", e.message)))
            }
            Err(e) => {
                if let Err(abort) = producer.abort_transaction(TXN_TIMEOUT) {
                    // An abort that fails leaves the producer unusable: start again clean.
                    *slot = None;
                    return Ended::Failed(retry(format!("transaction failed ({}) and its abort too ({abort}); producer rebuilt", e.message)));
                }
                Ended::Failed(retry(format!("transaction aborted: {}", e.message)))
            }
        }
    }

    /// One transaction. A step that fails with an error librdkafka calls
    /// retriable (a slow broker, a timeout) is called again, as its docs say
    /// (an abort would be refused then); other errors end the attempt.
    fn attempt(&self, producer: &Producer, group: &[&Batch], n: u32, token: &str) -> Result<(), TxnError> {
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
            // Which transaction committed this offset (see Txn::unknown).
            if let Some(mut e) = offsets.find_partition(&b.topic, b.partition) {
                e.set_metadata(token);
            }
        }
        with_retries(|| {
            let parts = group.iter().map(|b| (b.topic.as_str(), b.partition, b.epoch));
            let sent = self.eos.with_group_metadata_if_current(parts, |m| match m {
                Some(m) => producer.send_offsets_to_transaction(&offsets, m, TXN_TIMEOUT).map_err(TxnError::from),
                None => Err(TxnError { kind: TxnErrorKind::Abortable, message: "no consumer group metadata yet".into(), at_commit: false }),
            });
            sent.unwrap_or_else(|| {
                let message = "a partition in the transaction was revoked from this worker: its batch is left to the new owner";
                Err(TxnError { kind: TxnErrorKind::Abortable, message: message.into(), at_commit: false })
            })
        })?;
        if self.failpoints.abort_at == Some(n) {
            // The worst case: the records are in the log when the abort comes (an
            // abort purges what the producer has not sent yet).
            producer.flush(TXN_TIMEOUT).map_err(TxnError::from)?;
            return Err(TxnError { kind: TxnErrorKind::Abortable, message: format!("failpoint: transaction {n} aborted on purpose"), at_commit: false });
        }
        if self.failpoints.hang_at == Some(n) {
            tracing::warn!("failpoint: transaction {n} hangs before its commit");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if self.failpoints.commit_lost_at == Some(n) {
            producer.abort_transaction(TXN_TIMEOUT).map_err(TxnError::from)?;
            return Err(TxnError { kind: TxnErrorKind::Fatal, message: format!("failpoint: commit {n} never arrived"), at_commit: true });
        }
        let mut slow_once = self.failpoints.slow_commit_at == Some(n);
        let committed = with_retries(|| {
            if std::mem::take(&mut slow_once) {
                // What librdkafka reports when the coordinator is slow to answer.
                return Err(TxnError { kind: TxnErrorKind::Retriable, message: format!("failpoint: commit {n} timed out"), at_commit: true });
            }
            commit_transaction(producer, TXN_TIMEOUT)
        });
        if committed.is_ok() && self.failpoints.answer_lost_at == Some(n) {
            let message = format!("failpoint: the answer to commit {n} was lost");
            return Err(TxnError { kind: TxnErrorKind::Fatal, message, at_commit: true });
        }
        committed
    }
}

/// The transactional producer, created and initialised if there is none.
fn ready<'a>(slot: &'a mut Option<Producer>, config: &ClientConfig) -> Result<&'a Producer, Failure> {
    if slot.is_none() {
        let producer: Producer = config.create().map_err(|e| retry(format!("cannot create the transactional producer: {}", crate::security::client_error(&e))))?;
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| retry(explain_init(&e, config)))?;
        *slot = Some(producer);
    }
    Ok(slot.as_ref().unwrap())
}

/// A failed `init_transactions`, said as the user would fix it.
fn explain_init(e: &rdkafka::error::KafkaError, config: &ClientConfig) -> String {
    use rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed;
    let id = config.get("transactional.id").unwrap_or_default();
    if e.rdkafka_error_code() == Some(TransactionalIdAuthorizationFailed) {
        let who = config.get("sasl.username").map_or("this client".to_string(), |u| format!("user {u}"));
        return format!(
            "{who} may not use transactional id `{id}`: the cluster's ACLs refuse it (grant WRITE and DESCRIBE on it, or choose an allowed one with --transactional-id)"
        );
    }
    format!("init_transactions for transactional id `{id}`: {e}")
}

/// Which batches go in which transaction: each suspect alone, the rest together.
fn plan(open: Vec<usize>, suspect: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    let (alone, together): (Vec<usize>, Vec<usize>) = open.into_iter().partition(|&i| suspect(i));
    alone.into_iter().map(|i| vec![i]).chain(Some(together).filter(|t| !t.is_empty())).collect()
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
        Err(TxnError { kind, message: format!("commit_transaction: {message}"), at_commit: true })
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
    /// Failed at the commit: unless librdkafka says abort, it may have happened.
    at_commit: bool,
}

impl From<KafkaError> for TxnError {
    fn from(e: KafkaError) -> TxnError {
        let kind = match &e {
            KafkaError::Transaction(t) if t.is_fatal() => TxnErrorKind::Fatal,
            KafkaError::Transaction(t) if t.is_retriable() && !t.txn_requires_abort() => TxnErrorKind::Retriable,
            _ => TxnErrorKind::Abortable,
        };
        TxnError { kind, message: e.to_string(), at_commit: false }
    }
}

fn tp(b: &Batch) -> Tp {
    (b.topic.clone(), b.partition)
}

pub(super) fn retry(m: String) -> Failure {
    Failure::retryable(Stage::Sink, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_go_alone_and_the_others_together() {
        assert_eq!(plan(vec![0, 1, 2, 3], |_| false), vec![vec![0, 1, 2, 3]]);
        assert_eq!(plan(vec![0, 1, 2, 3], |i| i == 2), vec![vec![2], vec![0, 1, 3]]);
        assert_eq!(plan(vec![1, 3], |_| true), vec![vec![1], vec![3]]);
        assert!(plan(vec![], |_| false).is_empty());
    }
}
