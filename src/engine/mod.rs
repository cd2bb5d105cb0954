//! The consumer engine: one thread owns and polls the consumer, per-partition
//! workers handle records, offsets are committed up to what has finished.
//! The engine publishes `Snapshot`s and takes `Command`s; it knows nothing of
//! terminals.

pub mod audit;
pub mod backpressure;
pub mod broker;
pub mod commit;
pub mod commit_queue;
pub mod context;
pub mod core;
pub mod dlq;
pub mod facts;
pub mod record_times;
#[cfg(test)]
mod fuzz;
pub mod handler;
pub mod headers;
pub mod offsets;
pub mod pipeline;
pub mod replay;
pub mod sink;
mod stable_offsets;
pub mod stats;
pub mod unowned;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use kdeck_ui::intent::Intent;
use kdeck_ui::model::Snapshot;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

pub use self::commit::CommitStrategy;
use self::broker::{Broker, Live};
use self::context::{EngineContext, KConsumer};
use self::core::{Core, Identity, Notice};
pub use self::handler::{Failure, Handler, HandlerFactory, Stage};
pub use self::sink::SinkSpec;
pub use self::worker::{RetryOrdering, RetryPolicy};
use self::worker::WorkerCommand;
use kdeck_ui::intent::ReplayMode;
use std::path::PathBuf;

/// A topic-partition.
pub type Tp = (String, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Topics(Vec<String>),
    /// A regular expression over topic names.
    Pattern(String),
}

/// A pattern as librdkafka takes it: a subscription starting with `^`.
pub fn anchored(pattern: &str) -> String {
    if pattern.starts_with('^') { pattern.to_string() } else { format!("^{pattern}") }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub brokers: String,
    pub group: String,
    pub subscription: Subscription,
    /// librdkafka properties (`-X`), applied over kdeck's defaults.
    pub properties: Vec<(String, String)>,
    pub commit: CommitStrategy,
    /// Per-partition queue: back-pressure pauses a partition at this many queued records.
    pub max_queue: usize,
    /// The memory budget for records held (librdkafka's and kdeck's), in bytes.
    pub max_queue_bytes: usize,
    /// How long shutdown waits for the records workers have in hand (queued ones
    /// are left uncommitted for the next owner).
    pub drain_timeout: Duration,
    /// How long a revoke waits for the record a worker has in hand.
    pub revoke_timeout: Duration,
    /// Bound on start-up checks (broker reachable, topics exist).
    pub connect_timeout: Duration,
    /// A static member asks for a rebalance when partitions of a Stable group
    /// have had no owner this long (see unowned.rs).
    pub unowned_after: Duration,
    pub stop_at_end: bool,
    /// How the sink is described in the snapshot.
    pub sink_label: String,
    pub retry: RetryPolicy,
    /// `--dlq TOPIC`; None: `<source topic>.dlq`.
    pub dlq_topic: Option<String>,
    /// How long a dead-letter write may take before it counts as failed.
    pub dlq_timeout: Duration,
    pub audit_path: PathBuf,
    /// The sink's exactly-once offset store, when it has one (`--commit eos` needs it).
    pub exactly_once: Option<Arc<sink::ExactlyOnce>>,
}

impl EngineConfig {
    pub fn new(brokers: &str, group: &str, subscription: Subscription) -> EngineConfig {
        EngineConfig {
            brokers: brokers.to_string(),
            group: group.to_string(),
            subscription,
            properties: Vec::new(),
            commit: CommitStrategy::default(),
            max_queue: 10_000,
            max_queue_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(10),
            revoke_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            unowned_after: Duration::from_secs(30),
            stop_at_end: false,
            sink_label: "null".to_string(),
            retry: RetryPolicy::default(),
            dlq_topic: None,
            dlq_timeout: Duration::from_secs(10),
            audit_path: audit::default_path(),
            exactly_once: None,
        }
    }

    fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What the engine can be asked to do. Applied at a defined point of the poll loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Pause(Tp),
    Resume(Tp),
    PauseAll,
    ResumeAll,
    SetStrategy(CommitStrategy),
    RetryNow(Tp, i64),
    DeadLetterNow(Tp, i64),
    /// Replay a dead-lettered record of the audit store.
    Replay { audit_id: i64, mode: ReplayMode, force: bool },
    Shutdown,
}

impl TryFrom<Intent> for Command {
    type Error = String;
    fn try_from(intent: Intent) -> Result<Command, String> {
        Ok(match intent {
            Intent::PausePartition { topic, partition } => Command::Pause((topic, partition)),
            Intent::ResumePartition { topic, partition } => Command::Resume((topic, partition)),
            Intent::PauseAll => Command::PauseAll,
            Intent::ResumeAll => Command::ResumeAll,
            Intent::SetCommitStrategy(s) => Command::SetStrategy(s.parse()?),
            Intent::RetryNow { topic, partition, offset } => Command::RetryNow((topic, partition), offset),
            Intent::DeadLetterNow { topic, partition, offset } => Command::DeadLetterNow((topic, partition), offset),
            Intent::Replay { audit_id, mode, force } => Command::Replay { audit_id, mode, force },
            Intent::Quit => Command::Shutdown,
        })
    }
}

/// The running engine: send commands, watch snapshots, wait for the end.
pub struct EngineHandle {
    commands: Sender<Command>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    /// unowned.rs's thread: a short-lived member it has in the group leaves
    /// before the process exits.
    watch: Option<JoinHandle<()>>,
}

impl EngineHandle {
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// Set this flag (e.g. from a signal handler) to shut the engine down gracefully.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the engine to stop (after a shutdown, `--stop-at-end` or an error).
    pub fn join(mut self) -> Result<()> {
        let result = match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("the engine thread panicked"))?,
            None => Ok(()),
        };
        self.join_watch();
        result
    }

    /// The poll loop has ended and set the shutdown flag: the watch stops
    /// within a check, or once its short-lived member has left (bounded).
    fn join_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            let until = Instant::now() + Duration::from_secs(5);
            while !w.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Asks for a graceful shutdown and waits for it.
    pub fn stop(self) -> Result<()> {
        self.shutdown.store(true, Ordering::SeqCst);
        self.join()
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.join_watch();
    }
}

/// Connects, checks the cluster and topics, subscribes and starts the poll thread.
/// Errors the user can cause come back as one sentence.
pub fn start(config: EngineConfig, handlers: HandlerFactory) -> Result<EngineHandle> {
    let group_protocol = config.property("group.protocol").unwrap_or("classic").to_string();
    let assignor = if group_protocol == "consumer" {
        format!("{} (broker-side)", config.property("group.remote.assignor").unwrap_or("uniform"))
    } else {
        config.property("partition.assignment.strategy").unwrap_or("range,roundrobin").to_string()
    };
    let identity = Identity {
        cluster: config.brokers.clone(),
        group: config.group.clone(),
        group_protocol,
        assignor,
        sink: config.sink_label.clone(),
    };
    if config.commit == CommitStrategy::Eos {
        let eos = config.exactly_once.as_ref().ok_or_else(|| {
            anyhow!("--commit eos needs a sink that writes offsets with its output: --sink sqlite:PATH, postgres://… or kafka:TOPIC")
        })?;
        if config.retry.ordering == RetryOrdering::Key {
            return Err(anyhow!("--commit eos needs --ordering partition: a partition's offset can only advance in order"));
        }
        eos.set_enabled(true).map_err(|e| anyhow!(e))?;
    }
    let audit = Arc::new(audit::Audit::open(&config.audit_path).map_err(|e| anyhow!(e))?);
    let producer = dlq::Producer::new(&config.brokers, &config.properties, config.dlq_timeout).map_err(|e| anyhow!(e))?;
    let dlq = Arc::new(dlq::DeadLetterQueue::new(producer, config.dlq_topic.clone(), &config.group, audit));
    let core = Arc::new(Mutex::new(Core::new(
        identity,
        config.commit,
        config.max_queue,
        config.revoke_timeout,
        handlers,
        config.stop_at_end,
        config.retry,
        dlq,
        config.exactly_once.clone(),
    )));

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("client.id", "kdeck")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // Partitions added to a subscribed topic (and new topics matching a pattern)
        // are seen at the next metadata refresh: 10 s, not librdkafka's 5 minutes.
        .set("topic.metadata.refresh.interval.ms", "10000")
        // The default (1 s) stalls the fetcher whenever a local queue threshold is hit.
        .set("fetch.queue.backoff.ms", "10")
        // The memory budget: a quarter for librdkafka's prefetch queue (16 MiB at
        // the default 64, which cost no throughput on 1M records over loopback,
        // benches/throughput.sh), a quarter for one fetch response, half for
        // kdeck's own queues (see Core::apply_backpressure).
        .set("queued.max.messages.kbytes", (config.max_queue_bytes / 4 / 1024).to_string())
        // librdkafka refuses a fetch.max.bytes below message.max.bytes (shared with -X).
        .set("fetch.max.bytes", fetch_max_bytes(&config).to_string())
        .set("max.partition.fetch.bytes", (config.max_queue_bytes / 4).min(1 << 20).to_string());
    if config.exactly_once.as_ref().is_some_and(|e| e.commits_offsets()) {
        // Read only committed output of other transactions (a chain of eos consumers).
        cc.set("isolation.level", "read_committed");
    }
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    let consumer: KConsumer = cc
        .create_with_context(EngineContext {
            core: core.clone(),
            exactly_once: config.exactly_once.clone(),
            no_committed: no_committed_start(&config),
            held_offsets_wait: held_offsets_wait(&config),
            stopping: shutdown.clone(),
            notices: core.lock().unwrap().notices(),
        })
        .map_err(|e| anyhow!("{}", describe_client_error(e)))?;

    check_cluster(&consumer, &config)?;
    let facts = facts::PartitionFacts::start(&cc).map_err(|e| anyhow!(e))?;
    let record_times = record_times::RecordTimes::start(&cc).map_err(|e| anyhow!(e))?;
    {
        let mut c = core.lock().unwrap();
        c.facts = Some(facts);
        c.record_times = Some(record_times);
        c.starts_at_log_start = starts_at_log_start(&config);
        c.reads_uncommitted = config.property("isolation.level").is_some_and(|v| v != "read_committed");
        c.queue_bytes = config.max_queue_bytes / 2;
    }
    match &config.subscription {
        Subscription::Topics(topics) => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)
        }
        Subscription::Pattern(p) => consumer.subscribe(&[anchored(p).as_str()]),
    }
    .map_err(|e| anyhow!("subscribing failed: {e}"))?;

    let (commands_tx, commands_rx) = crossbeam_channel::bounded(256);
    let first = Arc::new(core.lock().unwrap().snapshot(false));
    let (snap_tx, snap_rx) = watch::channel(first);
    let loop_shutdown = shutdown.clone();
    let drain_timeout = config.drain_timeout;
    let refusals = Refusals {
        who: crate::security::who(&config.properties),
        group: config.group.clone(),
        brokers: config.brokers.clone(),
        timeout: config.connect_timeout,
    };
    let notices = core.lock().unwrap().notices();
    let thread = std::thread::Builder::new()
        .name("kdeck-poll".into())
        .spawn(move || poll_loop(consumer, core, commands_rx, snap_tx, loop_shutdown, drain_timeout, refusals))?;
    // Only a static member in a classic group can be left with partitions no
    // one owns (unowned.rs); a dynamic member's replacement is a rebalance.
    let watch = if config.property("group.instance.id").is_some() && is_classic_group(&config) {
        unowned::watch(&cc, &config.group, &config.subscription, config.unowned_after, notices, shutdown.clone())
            .map_err(|e| tracing::warn!("{e}: partitions left without an owner will not be noticed"))
            .ok()
    } else {
        None
    };
    Ok(EngineHandle { commands: commands_tx, snapshots: snap_rx, shutdown, thread: Some(thread), watch })
}

fn is_classic_group(config: &EngineConfig) -> bool {
    config.property("group.protocol").is_none_or(|p| p.eq_ignore_ascii_case("classic"))
}

/// auto.offset.reset (kdeck's default: earliest).
fn starts_at_log_start(config: &EngineConfig) -> bool {
    no_committed_start(config) == Some(rdkafka::Offset::Beginning)
}

/// Where a partition the group never committed starts, as auto.offset.reset says
/// (None: `error`).
fn no_committed_start(config: &EngineConfig) -> Option<rdkafka::Offset> {
    match config.property("auto.offset.reset") {
        Some("latest" | "largest" | "end") => Some(rdkafka::Offset::End),
        Some("error") => None,
        _ => Some(rdkafka::Offset::Beginning),
    }
}

/// How long an assignment waits for committed offsets an open transaction holds:
/// long enough for a crashed producer's transaction to time out (Java's default
/// is 60 s), and inside max.poll.interval.ms, since the poll thread waits.
fn held_offsets_wait(config: &EngineConfig) -> Duration {
    let poll_interval = config.property("max.poll.interval.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(300_000);
    Duration::from_millis(poll_interval.saturating_sub(10_000).clamp(1_000, 120_000))
}

/// A quarter of the memory budget, but never below `-X message.max.bytes`.
fn fetch_max_bytes(config: &EngineConfig) -> usize {
    let message_max = config.property("message.max.bytes").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    (config.max_queue_bytes / 4).max(message_max)
}

fn describe_client_error(e: KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            format!("librdkafka rejects the property {key}={value} ({desc}); fix or remove that -X option or config entry")
        }
        KafkaError::ClientCreation(msg) => {
            format!("the Kafka client configuration is invalid: {msg} (check the -X options and the config file)")
        }
        other => format!("could not create the Kafka client: {other}"),
    }
}

/// Fails fast, with one sentence, when the cluster is unreachable or a topic is missing.
fn check_cluster(consumer: &KConsumer, config: &EngineConfig) -> Result<()> {
    let md = consumer.fetch_metadata(None, config.connect_timeout).map_err(|e| {
        anyhow!(
            "cannot reach Kafka at {} within {} ({e}); check --brokers and that the cluster is up",
            config.brokers,
            humantime::format_duration(config.connect_timeout)
        )
    })?;
    match &config.subscription {
        Subscription::Topics(topics) => {
            for t in topics {
                let found = md.topics().iter().any(|mt| mt.name() == t && mt.error().is_none());
                // A topic the ACLs hide is left out of the full list: asked for by
                // name, the cluster says whether it is refused rather than missing.
                if !found && refused(consumer, t, config.connect_timeout) {
                    return Err(anyhow!(
                        "{} may not read topic `{t}` on {}: the cluster's ACLs refuse DESCRIBE on it (grant READ and DESCRIBE on the topic)",
                        crate::security::who(&config.properties),
                        config.brokers
                    ));
                }
                if !found {
                    return Err(anyhow!(
                        "topic `{t}` does not exist on {}; create it or check the name given to --topic",
                        config.brokers
                    ));
                }
            }
            // Seen is not readable: librdkafka's fetch error would name no topic.
            let mut distinct = topics.clone();
            distinct.sort();
            distinct.dedup();
            match crate::admin::unreadable(consumer, &distinct, config.connect_timeout) {
                Ok(refused) if !refused.is_empty() => return Err(anyhow!(cannot_read(&crate::security::who(&config.properties), &refused, &config.brokers))),
                Ok(_) => {}
                Err(e) => tracing::debug!("the topics' authorized operations are not known: {e}"),
            }
        }
        Subscription::Pattern(p) => {
            let re = regex::Regex::new(p).map_err(|e| anyhow!("--pattern `{p}` is not a valid regular expression: {e}"))?;
            if !md.topics().iter().any(|t| re.is_match(t.name())) {
                tracing::warn!("no topic matches --pattern `{p}` yet; waiting for one to appear");
            }
        }
    }
    Ok(())
}

/// "user alice may not read topic `t` …" for topics the ACLs let be seen, not read.
fn cannot_read(who: &str, topics: &[String], brokers: &str) -> String {
    let names: Vec<String> = topics.iter().map(|t| format!("`{t}`")).collect();
    let (noun, them) = if topics.len() == 1 { ("topic", "it") } else { ("topics", "them") };
    format!("{who} may not read {noun} {} on {brokers}: the cluster's ACLs let {them} be seen but not read (grant READ on {them})", names.join(", "))
}

fn refused(consumer: &KConsumer, topic: &str, timeout: Duration) -> bool {
    consumer.fetch_metadata(Some(topic), timeout).is_ok_and(|md| {
        md.topics().iter().any(|mt| mt.error() == Some(rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED))
    })
}

/// The cluster's ACLs refusing the group or a subscribed topic: the run cannot
/// go on (librdkafka would retry for ever), so it stops and says who may not
/// do what.
struct Refusals {
    who: String,
    group: String,
    brokers: String,
    timeout: Duration,
}

impl Refusals {
    fn of(&self, e: &KafkaError, consumer: &KConsumer) -> Option<String> {
        if let KafkaError::MessageConsumptionFatal(_) = e {
            // librdkafka's client is dead (a KIP-848 group refused, a fenced
            // static member): polling on would wait for ever. Its cause says why.
            let cause = fatal_cause(consumer).unwrap_or_else(|| e.to_string());
            return Some(match cause.contains("GROUP_AUTHORIZATION_FAILED") || cause.contains("Group authorization failed") {
                true => self.group_refused(),
                false => format!("the Kafka client failed for good: {cause}"),
            });
        }
        match e.rdkafka_error_code()? {
            RDKafkaErrorCode::GroupAuthorizationFailed => Some(self.group_refused()),
            RDKafkaErrorCode::TopicAuthorizationFailed => {
                // librdkafka's error names no topic: the assigned ones are asked.
                // Only a refusal the cluster confirms stops the run (an ACL
                // just granted, or being re-created, can refuse one fetch).
                let mut assigned: Vec<String> = consumer.assignment().map(|a| a.elements().iter().map(|e| e.topic().to_string()).collect()).unwrap_or_default();
                assigned.sort();
                assigned.dedup();
                let which = crate::admin::unreadable(consumer, &assigned, self.timeout.min(ADMIN_WAIT)).unwrap_or_default();
                if which.is_empty() {
                    return None;
                }
                Some(cannot_read(&self.who, &which, &self.brokers))
            }
            _ => None,
        }
    }

    fn group_refused(&self) -> String {
        format!("{} may not use group `{}`: the cluster's ACLs refuse it (grant READ on the group)", self.who, self.group)
    }
}

/// The poll thread waits at most this for the cluster to say which topic it refused.
const ADMIN_WAIT: Duration = Duration::from_secs(3);

/// librdkafka's own words for the fatal error that killed the client.
fn fatal_cause(consumer: &KConsumer) -> Option<String> {
    let mut text = [0 as libc::c_char; 512];
    // SAFETY: the client is alive; librdkafka writes a NUL-terminated string into the buffer.
    unsafe {
        let code = rdkafka_sys::rd_kafka_fatal_error(consumer.client().native_ptr(), text.as_mut_ptr(), text.len());
        if code == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(rdkafka_sys::rd_kafka_err2name(code)).to_string_lossy().into_owned();
        Some(format!("{name}: {}", std::ffi::CStr::from_ptr(text.as_ptr()).to_string_lossy()))
    }
}

const POLL_TIMEOUT: Duration = Duration::from_millis(50);
// Also the most a partition queue can overshoot its high-water mark by (one poll batch).
const MAX_POLL_BATCH: usize = 256;
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

fn poll_loop(
    consumer: KConsumer,
    core: Arc<Mutex<Core>>,
    commands: Receiver<Command>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    shutdown: Arc<AtomicBool>,
    drain_timeout: Duration,
    refusals: Refusals,
) -> Result<()> {
    let mut last_publish = Instant::now();
    let mut batch = Vec::with_capacity(MAX_POLL_BATCH);
    let queue = commit_queue::CommitQueue::new(&consumer);
    let broker = Live { consumer: &consumer, queue: Some(&queue) };
    // The last word is the state at the final commit, before the group is left.
    let (last, fatal) = loop {
        // Poll without the core lock: callbacks (rebalance, commit, stats) take it.
        batch.clear();
        let mut timeout = POLL_TIMEOUT;
        while batch.len() < MAX_POLL_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(e)) => {
                    // Asked before the lock: finding the refused topic asks the cluster.
                    let refused = refusals.of(&e, &consumer);
                    let mut c = core.lock().unwrap();
                    match refused {
                        Some(why) => {
                            c.record_error("broker", why.clone());
                            c.fatal.get_or_insert(why);
                        }
                        None => c.record_error("broker", format!("consume error: {e}")),
                    }
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }

        let mut c = core.lock().unwrap();
        c.dispatch(&broker, std::mem::take(&mut batch));
        c.drain_events_and_block(&broker);
        c.collect_commit_outcomes(&broker);
        c.init_partitions();
        c.update_record_times();
        c.catch_up_idle(&broker);

        while let Ok(cmd) = commands.try_recv() {
            apply(&mut c, &broker, cmd, &shutdown);
        }
        if shutdown.load(Ordering::SeqCst) || c.at_end() || c.fatal.is_some() {
            tracing::info!("shutting down: finishing the records in hand");
            c.drain(&broker, drain_timeout);
            // A partition still blocked (sink or dead-letter topic failing) means the
            // run did not do its work: the exit status says so.
            break (c.snapshot(true), c.fatal.clone().or_else(|| c.blocked_reason()));
        }
        c.apply_backpressure(&broker);
        c.maybe_finish_strategy_switch(&broker);
        c.maybe_commit(&broker);

        c.sample();
        if c.dirty || last_publish.elapsed() >= SNAPSHOT_EVERY {
            c.dirty = false;
            let _ = snapshots.send(Arc::new(c.snapshot(false)));
            last_publish = Instant::now();
        }
    };
    // The commit queue must go before the consumer it belongs to (`broker`, which
    // borrows both, is not used past the loop).
    drop(queue);
    // Leaving the group runs the revoke callback (inside Drop); it finds nothing left to do.
    consumer.unsubscribe();
    drop(consumer);
    // Whatever ended the loop (--stop-at-end, a fatal error), the engine's other
    // threads (unowned.rs) stop with it.
    shutdown.store(true, Ordering::SeqCst);
    let _ = snapshots.send(Arc::new(last));
    tracing::info!("engine stopped");
    match fatal {
        // Processing cannot go on: stop, so a supervisor (or the operator) sees the failure.
        Some(why) => Err(anyhow!("stopped while {why}")),
        None => Ok(()),
    }
}

fn apply(core: &mut Core, broker: &dyn Broker, cmd: Command, shutdown: &AtomicBool) {
    tracing::info!("command: {cmd:?}");
    match cmd {
        Command::Pause(tp) => core.set_operator_pause(broker, vec![tp], true),
        Command::Resume(tp) => core.set_operator_pause(broker, vec![tp], false),
        Command::PauseAll => {
            let all = core.assigned();
            core.set_operator_pause(broker, all, true)
        }
        Command::ResumeAll => core.resume_all(broker),
        Command::SetStrategy(s) => core.request_strategy(broker, s),
        Command::RetryNow(tp, o) => {
            core.worker_command(&tp, WorkerCommand::RetryNow(o));
        }
        Command::DeadLetterNow(tp, o) => {
            core.worker_command(&tp, WorkerCommand::DeadLetterNow(o));
        }
        Command::Replay { audit_id, mode, force } => {
            // Replays wait on the broker or the sink: never on the poll thread.
            let (dlq, handlers, notices) = (core.dlq().clone(), core.handlers().clone(), core.notices());
            std::thread::spawn(move || {
                let outcome = replay::ReplayTarget::from_audit(dlq.audit(), audit_id)
                    .and_then(|t| replay::replay(&t, mode, force, dlq.audit(), dlq.producer(), &handlers));
                let _ = notices.send(match outcome {
                    Ok(o) => Notice { area: "replay", error: false, message: format!("replay of audit #{audit_id}: {o}") },
                    Err(e) => Notice { area: "replay", error: true, message: format!("replay of audit #{audit_id} failed: {e}") },
                });
            });
        }
        Command::Shutdown => shutdown.store(true, Ordering::SeqCst),
    }
}
