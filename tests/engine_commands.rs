//! The engine in-process against the real broker, driven by commands:
//! pausing, back-pressure and live commit-strategy changes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kdeck::engine::{self, Command, CommitStrategy, EngineConfig, EngineHandle, Failure, Handler, HandlerFactory, Subscription};
use kdeck_ui::model::{PartitionState, Snapshot};
use rdkafka::message::{Message, OwnedMessage};

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;


/// Records every (partition, offset) it handles, taking `delay` for each.
fn recorder(delay: Duration) -> (HandlerFactory, Seen) {
    struct Recorder {
        seen: Seen,
        delay: Duration,
    }
    impl Handler for Recorder {
        fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
            std::thread::sleep(self.delay);
            self.seen.lock().unwrap().push((r.partition(), r.offset()));
            Ok(())
        }
    }
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let factory: HandlerFactory =
        Arc::new(move |_: &str, _: i32| Box::new(Recorder { seen: s.clone(), delay }) as Box<dyn Handler>);
    (factory, seen)
}

fn config(group: &str, topic: &str) -> EngineConfig {
    let mut c = EngineConfig::new(&brokers(), group, Subscription::Topics(vec![topic.to_string()]));
    c.properties.push(("partition.assignment.strategy".into(), "range".into()));
    c.audit_path = std::env::temp_dir().join(format!("{group}.audit.sqlite"));
    c
}

fn wait_snapshot(engine: &EngineHandle, what: &str, deadline: Duration, cond: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let s = engine.snapshot();
        if cond(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}; last snapshot: {s:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(seen: &Seen, partition: i32) -> usize {
    seen.lock().unwrap().iter().filter(|(p, _)| *p == partition).count()
}

fn distinct(seen: &Seen) -> BTreeSet<(i32, i64)> {
    seen.lock().unwrap().iter().cloned().collect()
}

fn wait_until_finished(engine: EngineHandle, deadline: Duration) {
    wait_for("the engine to stop at the end", deadline, || engine.is_finished());
    engine.join().unwrap();
}

#[test]
fn pausing_a_partition_stops_it_while_others_go_on_and_survives_a_rebalance() {
    let topic = unique("pause");
    let group = unique("g-pause");
    create_topic(&topic, 2);
    let ends = produce_with_kcat(&topic, 4_000, 60);
    let (handlers, seen) = recorder(Duration::from_millis(1));
    let mut cfg = config(&group, &topic);
    cfg.stop_at_end = true;
    let engine = engine::start(cfg, handlers).unwrap();
    wait_for("both partitions to progress", Duration::from_secs(60), || count(&seen, 0) > 50 && count(&seen, 1) > 50);

    engine.send(Command::Pause((topic.clone(), 0)));
    wait_snapshot(&engine, "partition 0 paused", Duration::from_secs(10), |s| {
        s.partition(&topic, 0).is_some_and(|p| p.paused && p.state == PartitionState::PausedByOperator)
    });
    let at_pause = count(&seen, 0);
    let p1_at_pause = count(&seen, 1);
    wait_for("partition 1 to go on", Duration::from_secs(30), || count(&seen, 1) >= p1_at_pause + 300);
    assert!(count(&seen, 0) <= at_pause + 1, "a paused partition makes no progress beyond the record in hand");

    // A member joining the group for another topic rebalances it: every partition
    // is revoked and assigned again; the operator's pause must come back with it.
    let before = engine.snapshot().rebalances.len();
    let other = unique("pause-other");
    create_topic(&other, 1);
    let (h2, _) = recorder(Duration::ZERO);
    let intruder = engine::start(config(&group, &other), h2).unwrap();
    let after = wait_snapshot(&engine, "a rebalance", Duration::from_secs(60), |s| {
        s.rebalances.len() > before && s.partition(&topic, 0).is_some()
    });
    assert!(after.partition(&topic, 0).unwrap().paused, "the pause survived the rebalance");
    // The rebalance is in the history: an eager one revokes and regains both partitions.
    let ev = after.rebalances.last().unwrap();
    assert_eq!(ev.protocol, "eager");
    assert_eq!(ev.lost.len(), 2, "{ev:?}");
    assert_eq!(ev.gained.len(), 2, "{ev:?}");
    assert!(!ev.assignment_lost);
    let p1_now = count(&seen, 1);
    wait_for("partition 1 to go on after the rebalance", Duration::from_secs(30), || {
        count(&seen, 1) >= (p1_now + 200).min(ends[&1] as usize)
    });
    assert!(count(&seen, 0) <= at_pause + 1, "still paused after the rebalance");
    intruder.stop().unwrap();

    engine.send(Command::Resume((topic.clone(), 0)));
    wait_until_finished(engine, Duration::from_secs(120));
    let got = distinct(&seen);
    assert_all_seen(&got, &ends);
    // Partition 0 resumed where it stopped: its offsets were handled in order, without gaps.
    let p0: Vec<i64> = seen.lock().unwrap().iter().filter(|(p, _)| *p == 0).map(|(_, o)| *o).collect();
    let mut sorted = p0.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len() as i64, ends[&0]);
    assert_eq!(committed_offsets(&group, &topic), ends);
}

#[test]
fn back_pressure_pauses_a_full_partition_bounds_its_queue_and_resumes_it() {
    let topic = unique("bp");
    let group = unique("g-bp");
    create_topic(&topic, 1);
    let ends = produce_with_kcat(&topic, 3_000, 60);
    let (handlers, seen) = recorder(Duration::from_millis(1));
    let mut cfg = config(&group, &topic);
    cfg.max_queue = 50;
    cfg.stop_at_end = true;
    let engine = engine::start(cfg, handlers).unwrap();

    let mut rx = engine.subscribe();
    let (mut paused_seen, mut resumed_after_pause, mut max_queued) = (false, false, 0);
    wait_for("back-pressure to pause and resume", Duration::from_secs(60), || {
        let s = rx.borrow_and_update().clone();
        if let Some(p) = s.partition(&topic, 0) {
            max_queued = max_queued.max(p.queued);
            if p.state == PartitionState::PausedByBackPressure {
                assert!(p.paused);
                paused_seen = true;
            } else if paused_seen && p.state == PartitionState::Active && !p.paused {
                resumed_after_pause = true;
            }
        }
        paused_seen && resumed_after_pause
    });
    wait_until_finished(engine, Duration::from_secs(60));
    assert!(max_queued <= 50 + 256, "the queue stays bounded (max {max_queued} for a high-water mark of 50)");
    assert_all_seen(&distinct(&seen), &ends);
    assert_eq!(committed_offsets(&group, &topic), ends);
}

#[test]
fn switching_the_commit_strategy_mid_stream_loses_nothing() {
    let topic = unique("switch");
    let group = unique("g-switch");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 24_000, 60);
    let (handlers, seen) = recorder(Duration::from_micros(500));
    let mut cfg = config(&group, &topic);
    // Small queues: a change to at-most-once waits for what is queued to finish.
    cfg.max_queue = 200;
    cfg.stop_at_end = true;
    let engine = engine::start(cfg, handlers).unwrap();

    let mut progress = 500;
    for next in ["per-message", "interval:200ms", "at-most-once", "batch:100"] {
        wait_for("progress before the switch", Duration::from_secs(60), || seen.lock().unwrap().len() >= progress);
        let strategy: CommitStrategy = next.parse().unwrap();
        engine.send(Command::SetStrategy(strategy));
        wait_snapshot(&engine, &format!("strategy {next}"), Duration::from_secs(30), |s| {
            s.commit_strategy == next && s.pending_commit_strategy.is_none()
        });
        progress += 1_500;
    }
    wait_until_finished(engine, Duration::from_secs(120));
    assert_all_seen(&distinct(&seen), &ends);
    let committed: BTreeMap<i32, i64> = committed_offsets(&group, &topic);
    assert_eq!(committed, ends);
}

#[test]
fn the_retry_queue_and_dead_letters_show_in_the_snapshot_and_obey_commands() {
    use kdeck_ui::intent::ReplayMode;
    use std::sync::atomic::{AtomicBool, Ordering};

    let topic = unique("parked");
    let group = unique("g-parked");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    produce_raw(&topic, &[(0, Some(b"ok"), Some(b"1"), vec![]), (0, Some(b"flaky"), Some(b"2"), vec![]), (0, Some(b"ok"), Some(b"3"), vec![])]);

    /// Fails the record keyed "flaky" until `healed`; records every attempt.
    struct Flaky {
        healed: Arc<AtomicBool>,
        seen: Seen,
    }
    impl Handler for Flaky {
        fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
            self.seen.lock().unwrap().push((r.partition(), r.offset()));
            if r.key() == Some(b"flaky") && !self.healed.load(Ordering::SeqCst) {
                return Err(Failure::retryable(kdeck::engine::Stage::Handle, "downstream unavailable"));
            }
            Ok(())
        }
    }
    let healed = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (h, s) = (healed.clone(), seen.clone());
    let factory: HandlerFactory = Arc::new(move |_: &str, _: i32| Box::new(Flaky { healed: h.clone(), seen: s.clone() }) as Box<dyn Handler>);
    let mut cfg = config(&group, &topic);
    cfg.retry.max_attempts = 10;
    cfg.retry.base = Duration::from_secs(600); // parked until told otherwise
    cfg.retry.max = Duration::from_secs(600);
    let engine = engine::start(cfg, factory).unwrap();
    let tp = (topic.clone(), 0);
    let attempts = |seen: &Seen| seen.lock().unwrap().iter().filter(|s| s.1 == 1).count();

    let s = wait_snapshot(&engine, "the flaky record parked", Duration::from_secs(60), |s| !s.retry_queue.is_empty());
    let parked = &s.retry_queue[0];
    assert_eq!((parked.offset, parked.attempt, parked.last_error.as_str()), (1, 1, "downstream unavailable"));
    assert!(parked.next_due_ms.unwrap() > s.captured_at_ms + 60_000, "due in about ten minutes");
    assert_eq!(s.partition(&topic, 0).unwrap().finished, Some(1), "the watermark waits at the parked record");
    assert_eq!(count(&seen, 0), 2, "partition ordering: record 2 waits behind it");

    engine.send(Command::RetryNow(tp.clone(), 1));
    wait_snapshot(&engine, "a second attempt", Duration::from_secs(30), |s| s.retry_queue.first().is_some_and(|r| r.attempt == 2));
    assert_eq!(attempts(&seen), 2);

    engine.send(Command::DeadLetterNow(tp.clone(), 1));
    let s = wait_snapshot(&engine, "the record dead-lettered and the partition done", Duration::from_secs(30), |s| {
        s.dead_lettered == 1 && s.retry_queue.is_empty() && s.partition(&topic, 0).is_some_and(|p| p.finished == Some(3))
    });
    let dead = &s.dead_letters[0];
    assert_eq!((dead.offset, dead.attempts, dead.class.as_str()), (1, 2, "retryable"));
    assert!(dead.message.contains("by the operator"));
    assert_eq!(s.failures.get("handle/retryable"), Some(&2));
    let audit_id = dead.audit_id.expect("dead letter in the audit store");
    assert_eq!(read_topic(&format!("{topic}.dlq")).len(), 1);

    // Fixed downstream: replay through the pipeline, once; the second needs force.
    healed.store(true, Ordering::SeqCst);
    engine.send(Command::Replay { audit_id, mode: ReplayMode::Reprocess, force: false });
    wait_snapshot(&engine, "the replay's outcome", Duration::from_secs(30), |s| s.notices.iter().any(|n| n.message.contains("reprocessed")));
    assert_eq!(attempts(&seen), 3, "replayed through the handler");
    engine.send(Command::Replay { audit_id, mode: ReplayMode::Reprocess, force: false });
    wait_snapshot(&engine, "the refusal", Duration::from_secs(30), |s| s.notices.iter().any(|n| n.message.contains("use --force")));
    assert_eq!(attempts(&seen), 3);
    engine.stop().unwrap();
}

#[test]
fn switching_into_and_out_of_eos_hands_over_and_eos_is_refused_where_the_sink_cannot() {
    use kdeck::engine::pipeline::{Format, Pipeline, PipelineConfig};
    use kdeck::engine::SinkSpec;

    let topic = unique("eos-switch");
    let group = unique("g-eos-switch");
    create_topic(&topic, 3);
    let lines: Vec<String> = (0..6000).map(|i| format!(r#"{{"customer":"c{}","amount":1}}"#, i % 7)).collect();
    let raw: Vec<_> = lines.iter().enumerate().map(|(i, l)| ((i % 3) as i32, None, Some(l.as_bytes()), vec![])).collect();
    produce_raw(&topic, &raw);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.sqlite");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE totals (customer TEXT PRIMARY KEY, n INTEGER)").unwrap();
    let pipeline = Pipeline::new(&PipelineConfig {
        format: Format::Json,
        sink: SinkSpec::Sqlite(db.clone()),
        sink_options: kdeck::engine::sink::SinkOptions {
            sql: Some("INSERT INTO totals VALUES(:customer, 1) ON CONFLICT(customer) DO UPDATE SET n = n + 1".into()),
            group: group.clone(),
            ..Default::default()
        },
        delay: Duration::from_millis(1),
        ..Default::default()
    })
    .unwrap();
    let mut cfg = config(&group, &topic);
    cfg.max_queue = 100; // a switch into eos first finishes what is queued
    cfg.exactly_once = pipeline.exactly_once();
    cfg.stop_at_end = true;
    let eos = cfg.exactly_once.clone().unwrap();
    let engine = engine::start(cfg, pipeline.factory()).unwrap();
    let applied = || -> i64 {
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT COALESCE(SUM(n),0) FROM totals", [], |r| r.get(0)).unwrap()
    };
    let stored = || (0..3).filter_map(|p| eos.next_offset(&topic, p).unwrap()).count();
    // Offsets are dense here: a partition's stored offset is how many of its records the database holds.
    let stored_sum = || (0..3).filter_map(|p| eos.next_offset(&topic, p).unwrap()).sum::<i64>();

    wait_for("progress under batch", Duration::from_secs(60), || applied() >= 500);
    let (offsets, rows) = (stored_sum(), applied());
    assert!(offsets > 0 && offsets <= rows, "under batch the stored offsets follow the database ({offsets} <= {rows})");
    engine.send(Command::SetStrategy(CommitStrategy::Eos));
    wait_snapshot(&engine, "eos", Duration::from_secs(30), |s| s.commit_strategy == "eos");
    let at_switch = applied();
    wait_for("offsets stored with the writes", Duration::from_secs(60), || stored() == 3 && applied() > at_switch + 500);
    let view = engine.snapshot().eos.clone().expect("the sink can do eos");
    assert!(view.enabled && view.commits > 0 && view.aborts == 0, "{view:?}");
    engine.send(Command::SetStrategy(CommitStrategy::Batch(100)));
    wait_snapshot(&engine, "back to batch", Duration::from_secs(30), |s| s.commit_strategy == "batch:100");
    assert_eq!(stored(), 3, "leaving eos keeps the stored offsets: they go on following the database");
    wait_until_finished(engine, Duration::from_secs(120));
    assert_eq!(applied(), 6000, "every record applied once across both handovers");
    assert_eq!(committed_offsets(&group, &topic), end_offsets(&topic));

    // A sink that cannot store offsets with its writes: eos is refused, with the reason.
    let (handlers, _) = recorder(Duration::ZERO);
    let other = config(&unique("g-eos-refused"), &topic);
    let engine = engine::start(other, handlers).unwrap();
    engine.send(Command::SetStrategy(CommitStrategy::Eos));
    let s = wait_snapshot(&engine, "the refusal", Duration::from_secs(30), |s| s.errors.iter().any(|e| e.message.contains("eos refused")));
    assert!(s.errors.iter().any(|e| e.message.contains("only sqlite:PATH, postgres://… and kafka:TOPIC")));
    assert_ne!(s.commit_strategy, "eos");
    engine.stop().unwrap();
}

#[test]
fn a_record_held_by_an_unavailable_sink_is_listed_and_the_operator_can_send_it_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let topic = unique("held");
    let group = unique("g-held");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    produce_raw(&topic, &[(0, Some(b"a"), Some(b"1"), vec![]), (0, Some(b"crash"), Some(b"2"), vec![]), (0, Some(b"b"), Some(b"3"), vec![])]);

    /// A sink whose child dies on the record keyed "crash": unavailable, never the record's fault as far as kdeck can tell.
    struct DiesOnOne(Arc<AtomicUsize>);
    impl Handler for DiesOnOne {
        fn handle(&mut self, r: &OwnedMessage) -> Result<(), Failure> {
            if r.key() == Some(b"crash") {
                self.0.fetch_add(1, Ordering::SeqCst);
                return Err(Failure::unavailable(kdeck::engine::Stage::Sink, "the exec sink exited without answering"));
            }
            Ok(())
        }
    }
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let factory: HandlerFactory = Arc::new(move |_: &str, _: i32| Box::new(DiesOnOne(t.clone())) as Box<dyn Handler>);
    let engine = engine::start(config(&group, &topic), factory).unwrap();

    let s = wait_snapshot(&engine, "the record held and listed", Duration::from_secs(60), |s| {
        s.retry_queue.first().is_some_and(|r| r.offset == 1) && s.partition(&topic, 0).is_some_and(|p| p.blocked.is_some())
    });
    let p = s.partition(&topic, 0).unwrap();
    assert!(p.blocked.as_deref().unwrap().contains("sink unavailable"), "{p:?}");
    assert_eq!(p.finished, Some(1), "nothing past the held record");
    assert_eq!(s.dead_lettered, 0);
    wait_snapshot(&engine, "tried again by itself", Duration::from_secs(30), |_| tries.load(Ordering::SeqCst) >= 3);

    engine.send(Command::DeadLetterNow((topic.clone(), 0), 1));
    let s = wait_snapshot(&engine, "sent on by the operator", Duration::from_secs(30), |s| {
        s.dead_lettered == 1 && s.retry_queue.is_empty() && s.partition(&topic, 0).is_some_and(|p| p.finished == Some(3) && p.blocked.is_none())
    });
    assert!(s.dead_letters[0].message.contains("by the operator"));
    engine.stop().unwrap();
}

#[test]
fn a_paused_partition_does_not_hold_the_sqlite_write_lock_from_the_others() {
    use kdeck::engine::pipeline::{Format, Pipeline, PipelineConfig};
    use kdeck::engine::SinkSpec;
    let topic = unique("sqlite-pause");
    let group = unique("g-sqlite-pause");
    create_topic(&topic, 2);
    let value = br#"{"n":1}"#;
    let records = |p: i32, n: usize| (0..n).map(|_| (p, None, Some(&value[..]), vec![])).collect::<Vec<_>>();
    produce_raw(&topic, &records(0, 4000));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.sqlite");
    let pipeline = Pipeline::new(&PipelineConfig {
        format: Format::Json,
        sink: SinkSpec::Sqlite(db.clone()),
        sink_options: kdeck::engine::sink::SinkOptions { group: group.clone(), ..Default::default() },
        delay: Duration::from_millis(1),
        ..Default::default()
    })
    .unwrap();
    let engine = engine::start(config(&group, &topic), pipeline.factory()).unwrap();
    let rows = |p: i32| -> i64 {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row(&format!("SELECT count(*) FROM \"{topic}\" WHERE partition = ?1"), [p], |r| r.get(0)))
            .unwrap_or(0)
    };
    wait_for("partition 0 writing", Duration::from_secs(60), || rows(0) > 0);
    // Paused with records in hand: its batch's transaction was open.
    engine.send(Command::Pause((topic.clone(), 0)));
    wait_snapshot(&engine, "partition 0 paused", Duration::from_secs(10), |s| {
        s.partition(&topic, 0).is_some_and(|p| p.state == PartitionState::PausedByOperator)
    });
    produce_raw(&topic, &records(1, 1000));
    // About a second of work; with partition 0 holding the write lock it would wait
    // out SQLite's 30 s busy timeout instead.
    wait_for("partition 1 written while partition 0 is paused", Duration::from_secs(15), || rows(1) == 1000);
    let s = engine.snapshot();
    assert!(!s.errors.iter().any(|e| e.message.contains("locked")), "{:?}", s.errors);
    assert_eq!(s.dead_lettered, 0);
    engine.send(Command::Resume((topic.clone(), 0)));
    wait_for("partition 0 to its end after resuming", Duration::from_secs(30), || rows(0) == 4000);
    engine.stop().unwrap();
}

#[test]
fn a_worker_that_outlives_its_revoke_cannot_commit_under_kafka_eos() {
    use kdeck::engine::pipeline::{Pipeline, PipelineConfig};
    use kdeck::engine::SinkSpec;
    let topic = unique("eos-late");
    let out = unique("eos-late-out");
    let group = unique("g-eos-late");
    create_topic(&topic, 2);
    create_topic(&out, 2);
    let values: Vec<String> = (0..12).map(|n| format!("{{\"n\":{n}}}")).collect();
    produce_raw(&topic, &values.iter().enumerate().map(|(i, v)| ((i % 2) as i32, None, Some(v.as_bytes()), vec![])).collect::<Vec<_>>());
    let instance = |id: &str| {
        let pipeline = Pipeline::new(&PipelineConfig {
            sink: SinkSpec::Kafka(out.clone()),
            sink_options: kdeck::engine::sink::SinkOptions {
                brokers: brokers(),
                group: group.clone(),
                transactional_id: Some(format!("{group}-{id}")),
                ..Default::default()
            },
            // Far slower than the revoke wait below and than the rebalance: a revoked
            // worker is mid-record, and flushes only after its member has the
            // partitions' new assignment (and the group's new generation).
            delay: Duration::from_millis(1500),
            ..Default::default()
        })
        .unwrap();
        let mut cfg = config(&group, &topic);
        cfg.commit = CommitStrategy::Eos;
        cfg.exactly_once = pipeline.exactly_once();
        cfg.revoke_timeout = Duration::from_millis(100);
        cfg.stop_at_end = true;
        engine::start(cfg, pipeline.factory()).unwrap()
    };
    let a = instance("a");
    // Everything received, none of it flushed yet (a transaction per 4096 records).
    wait_snapshot(&a, "a working on both partitions", Duration::from_secs(60), |s| s.partitions.len() == 2 && s.consumed == 12);
    // b joins: a's workers are revoked mid-batch and outlive the 100 ms wait.
    let b = instance("b");
    wait_until_finished(b, Duration::from_secs(120));
    wait_until_finished(a, Duration::from_secs(120));
    let seen: Vec<i64> = read_values(&out, 2, true).iter().map(|v| v["n"].as_i64().unwrap()).collect();
    let mut unique_seen = seen.clone();
    unique_seen.sort();
    unique_seen.dedup();
    assert_eq!(unique_seen, (0..12).collect::<Vec<_>>(), "every input in the output");
    assert_eq!(seen.len(), 12, "and each once: {} duplicates", seen.len() - unique_seen.len());
}
