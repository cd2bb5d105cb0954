//! Exactly-once into SQLite, proven by killing it: a non-idempotent aggregate
//! (per-customer totals) stays exact through SIGKILLs at random moments and a
//! second instance joining and dying; the same run with `batch:N` shows what
//! at-least-once costs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use rand::Rng;

const RECORDS: usize = 200_000;
const CUSTOMERS: usize = 100;
const UPSERT: &str = "INSERT INTO totals(customer, total, n) VALUES(:customer, :amount, 1)
    ON CONFLICT(customer) DO UPDATE SET total = total + excluded.total, n = n + 1";

/// Produces the input with kcat and returns the true per-customer (total, count).
fn produce_orders(topic: &str) -> BTreeMap<String, (i64, i64)> {
    let mut expected = BTreeMap::new();
    produce_more_orders(topic, RECORDS, &mut expected);
    assert_eq!(end_offsets(topic).values().sum::<i64>(), RECORDS as i64);
    expected
}

/// Produces `records` more orders, adding them to `expected`.
fn produce_more_orders(topic: &str, records: usize, expected: &mut BTreeMap<String, (i64, i64)>) {
    use std::io::Write;
    let mut rng = rand::rng();
    let mut input = Vec::with_capacity(records * 48);
    for i in 0..records {
        let customer = format!("c-{:03}", rng.random_range(0..CUSTOMERS));
        let amount: i64 = rng.random_range(1..1000);
        let e = expected.entry(customer.clone()).or_default();
        e.0 += amount;
        e.1 += 1;
        writeln!(input, "{customer}\t{{\"customer\":\"{customer}\",\"amount\":{amount},\"n\":{i}}}").unwrap();
    }
    let mut kcat = std::process::Command::new("kcat")
        .args(["-P", "-b", &brokers(), "-t", topic, "-K", "\t", "-X", "linger.ms=20"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    kcat.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(kcat.wait().unwrap().success());
}

struct Run {
    topic: String,
    group: String,
    db: PathBuf,
    dir: PathBuf,
    commit: &'static str,
    /// `--sink …` and whatever else the sink needs.
    sink: Vec<String>,
}

impl Run {
    /// One instance; `id` is its static group membership, so a restarted instance
    /// takes its place at once instead of waiting for the dead one's session to end.
    fn spawn(&self, id: &str) -> Child {
        self.spawn_with_env(id, &[])
    }

    fn spawn_with_env(&self, id: &str, env: &[(&str, &str)]) -> Child {
        let mut cmd = kdeck();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
            .args(["run", "--headless", "--stop-at-end", "-b", &brokers(), "-G", &self.group, "-t", &self.topic])
            .args(["--format", "json", "--commit", self.commit])
            .args(&self.sink)
            .args(["-X", &format!("group.instance.id={id}"), "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"])
            .args(["-X", "partition.assignment.strategy=range"])
            .arg("--audit")
            .arg(self.dir.join("audit.sqlite"))
            .arg("--log-file")
            .arg(self.dir.join(format!("kdeck-{id}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Progress: the group's committed offsets, summed (one client, reused: the
    /// loops below ask often).
    fn committed(&self) -> i64 {
        self.offsets().values().filter(|o| **o > 0).sum()
    }

    fn offsets(&self) -> BTreeMap<i32, i64> {
        use rdkafka::consumer::Consumer;
        thread_local! {
            static CLIENT: std::cell::RefCell<Option<(String, rdkafka::consumer::BaseConsumer)>> = const { std::cell::RefCell::new(None) };
        }
        CLIENT.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(g, _)| *g != self.group) {
                let consumer = rdkafka::config::ClientConfig::new()
                    .set("bootstrap.servers", brokers())
                    .set("group.id", &self.group)
                    .create()
                    .unwrap();
                *c = Some((self.group.clone(), consumer));
            }
            let (_, consumer) = c.as_ref().unwrap();
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..6 {
                tpl.add_partition(&self.topic, p);
            }
            consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .map(|t| {
                    t.elements()
                        .iter()
                        .map(|e| (e.partition(), if let rdkafka::Offset::Offset(o) = e.offset() { o } else { -1 }))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    fn at_end(&self, ends: &BTreeMap<i32, i64>) -> bool {
        self.offsets() == *ends
    }

    /// Records applied so far (the sum of the counts).
    fn applied(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .and_then(|c| c.query_row("SELECT COALESCE(SUM(n), 0) FROM totals", [], |r| r.get(0)))
            .unwrap_or(0)
    }

    fn totals(&self) -> BTreeMap<String, (i64, i64)> {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        let mut st = c.prepare("SELECT customer, total, n FROM totals").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))).unwrap().map(|r| r.unwrap()).collect()
    }

    /// Kills instances at random moments (after a random amount of progress), at
    /// least `kills` times, while a second instance joins and later dies; then runs
    /// to the end.
    fn kill_repeatedly(&self, kills: usize) {
        let mut rng = rand::rng();
        let mut a = self.spawn("a");
        let mut b: Option<Child> = None;
        for round in 0..kills {
            let target = self.committed() + rng.random_range(1_000..12_000);
            let progressed = wait_until(Duration::from_secs(60), || self.committed() >= target || a.try_wait().unwrap().is_some());
            assert!(progressed, "no progress in round {round}");
            if round == 3 {
                b = Some(self.spawn("b")); // joins mid-stream: the group rebalances
            }
            if round == 7 {
                if let Some(mut dead) = b.take() {
                    dead.kill().unwrap(); // the second instance dies; its partitions come back
                    dead.wait().unwrap();
                }
            }
            a.kill().unwrap(); // SIGKILL: no drain, no final commit
            a.wait().unwrap();
            a = self.spawn("a");
        }
        // To the end: the dead instance's partitions return after its session times out.
        let ends = end_offsets(&self.topic);
        let finished = wait_until(Duration::from_secs(120), || {
            let exited = a.try_wait().unwrap().is_some();
            if exited && !self.at_end(&ends) {
                a = self.spawn("a");
                return false;
            }
            exited
        });
        if let Some(mut b) = b {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = a.kill();
        assert!(finished, "did not get to the end: committed {} of {RECORDS}", self.committed());
    }
}

fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn setup(name: &str, commit: &'static str, dir: &Path) -> (Run, BTreeMap<String, (i64, i64)>) {
    let topic = unique(name);
    create_topic(&topic, 6);
    let expected = produce_orders(&topic);
    let db = dir.join("totals.sqlite");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE totals (customer TEXT PRIMARY KEY, total INTEGER NOT NULL, n INTEGER NOT NULL)")
        .unwrap();
    let sink = vec!["--sink".into(), format!("sqlite:{}", db.display()), "--sql".into(), UPSERT.into()];
    (Run { group: unique(&format!("g-{name}")), topic, db, dir: dir.to_path_buf(), commit, sink }, expected)
}

/// A Kafka-to-Kafka run: input of `produce_orders`, an empty output topic.
fn setup_kafka(name: &str, dir: &Path, extra: &[&str]) -> (Run, String) {
    let topic = unique(name);
    let out = format!("{topic}.out");
    create_topic(&topic, 6);
    create_topic(&out, 6);
    produce_orders(&topic);
    let mut sink = vec!["--sink".to_string(), format!("kafka:{out}")];
    sink.extend(extra.iter().map(|s| s.to_string()));
    (Run { group: unique(&format!("g-{name}")), topic, db: dir.join("unused.sqlite"), dir: dir.to_path_buf(), commit: "eos", sink }, out)
}

/// How often each input record (its `n`) is in the output, as a `read_committed` reader sees it.
fn output_counts(out: &str, committed: bool) -> (BTreeMap<i64, usize>, usize) {
    let values = read_values(out, 6, committed);
    let mut counts = BTreeMap::new();
    for v in &values {
        *counts.entry(v["n"].as_i64().unwrap()).or_insert(0) += 1;
    }
    (counts, values.len())
}

fn assert_exactly_once(counts: &BTreeMap<i64, usize>) {
    let missing = (0..RECORDS as i64).filter(|n| !counts.contains_key(n)).count();
    let twice = counts.values().filter(|c| **c > 1).count();
    assert_eq!((missing, twice), (0, 0), "every input exactly once in the output");
}

#[test]
fn exactly_once_kafka_to_kafka_survives_sigkill_and_a_second_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = setup_kafka("eos-kafka", dir.path(), &[]);
    run.kill_repeatedly(10);
    // A transaction the dead second instance left open hides what follows it from
    // read_committed readers until it times out (10 s): wait for the output to settle.
    let mut counts = output_counts(&out, true).0;
    wait_until(Duration::from_secs(60), || {
        counts = output_counts(&out, true).0;
        counts.len() == RECORDS || counts.values().any(|c| *c > 1)
    });
    assert_exactly_once(&counts);
}

#[test]
fn an_aborted_transaction_is_invisible_and_processing_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = setup_kafka("eos-abort", dir.path(), &["--transform", "fields:n,customer"]);
    // A malformed record: its dead letter rides in a transaction too.
    let dlq = format!("{}.dlq", run.topic);
    create_topic(&dlq, 1);
    produce_raw(&run.topic, &[(0, Some(b"bad"), Some(b"{not json"), vec![])]);
    let mut a = run.spawn_with_env("a", &[("KDECK_FAILPOINT", "abort-transaction:3")]);
    assert!(wait_exit(&mut a, Duration::from_secs(120)).success());
    let (counts, _) = output_counts(&out, true);
    assert_exactly_once(&counts);
    let dead = read_committed_count(&dlq);
    assert_eq!(dead, 1, "the dead letter, once");
    let (_, uncommitted) = output_counts(&out, false);
    assert!(uncommitted > RECORDS, "the aborted transaction's records are in the log ({uncommitted}) but not visible");
    let log = std::fs::read_to_string(dir.path().join("kdeck-a.log")).unwrap();
    assert!(log.contains("failpoint: transaction 3 aborted"), "the abort went through the abort path");
}

#[test]
fn a_commit_that_times_out_is_committed_again_not_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = setup_kafka("eos-slow-commit", dir.path(), &[]);
    let mut a = run.spawn_with_env("a", &[("KDECK_FAILPOINT", "slow-commit:2")]);
    assert!(wait_exit(&mut a, Duration::from_secs(120)).success());
    let (counts, _) = output_counts(&out, true);
    assert_exactly_once(&counts);
    let log = std::fs::read_to_string(dir.path().join("kdeck-a.log")).unwrap();
    assert!(log.contains("failpoint: commit 2 timed out"), "the retriable error happened");
    assert!(!log.contains("transaction aborted"), "a retriable commit error is answered with a commit, never an abort");
}

/// Runs to the end with `failpoint` making the second transaction's outcome
/// unknown; every input must be in the output exactly once.
fn an_unknown_outcome_is_settled(name: &str, failpoint: &str, logged: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = setup_kafka(name, dir.path(), &[]);
    let mut a = run.spawn_with_env("a", &[("KDECK_FAILPOINT", failpoint)]);
    assert!(wait_exit(&mut a, Duration::from_secs(120)).success());
    let (counts, _) = output_counts(&out, true);
    assert_exactly_once(&counts);
    let log = std::fs::read_to_string(dir.path().join("kdeck-a.log")).unwrap();
    assert!(log.contains(logged), "the failpoint fired");
}

/// A commit whose answer is lost (the coordinator took it, the reply never
/// came): the batch must not be sent again in a new transaction. The token
/// in the group's committed offset metadata says the commit happened.
#[test]
fn a_commit_whose_answer_is_lost_is_not_sent_again() {
    an_unknown_outcome_is_settled("eos-answer-lost", "commit-answer-lost:2", "the answer to commit 2 was lost");
}

/// The other unknown outcome: the commit never reached the coordinator. The
/// group's committed offset does not carry that transaction's token, so the
/// batch is sent again: nothing lost.
#[test]
fn a_commit_that_never_arrived_is_sent_again() {
    an_unknown_outcome_is_settled("eos-commit-lost", "commit-lost:2", "commit 2 never arrived");
}

#[test]
fn two_instances_with_one_transactional_id_fence_each_other_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough (about 15 s of work) that b starts while a is still mid-stream.
    let (run, out) = setup_kafka("eos-fence", dir.path(), &["--transactional-id", "kdeck-fence-test", "--handler-delay", "500us"]);
    let mut a = run.spawn("a");
    wait_until(Duration::from_secs(60), || run.committed() > 20_000);
    let mut b = run.spawn("b"); // same transactional id: its init fences a
    let both = wait_until(Duration::from_secs(180), || a.try_wait().unwrap().is_some() && b.try_wait().unwrap().is_some());
    let _ = (a.kill(), b.kill());
    assert!(both, "both instances finished");
    let (counts, _) = output_counts(&out, true);
    assert_exactly_once(&counts);
    let logs = std::fs::read_to_string(dir.path().join("kdeck-a.log")).unwrap() + &std::fs::read_to_string(dir.path().join("kdeck-b.log")).unwrap();
    assert!(logs.contains("fenced"), "one producer fenced the other");
}

#[test]
fn exactly_once_into_sqlite_survives_sigkill_and_a_second_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (run, expected) = setup("eos-sqlite", "eos", dir.path());
    run.kill_repeatedly(10);
    let got = run.totals();
    let wrong: Vec<_> = expected.iter().filter(|(c, v)| got.get(*c) != Some(v)).collect();
    assert!(wrong.is_empty(), "{} customers off, e.g. {:?} (got {:?})", wrong.len(), wrong.first(), wrong.first().map(|w| got.get(w.0)));
    assert_eq!(run.applied(), RECORDS as i64, "every record applied exactly once");
}

#[test]
fn at_least_once_loses_nothing_but_applies_some_records_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (run, expected) = setup("alo-sqlite", "batch:1000", dir.path());
    run.kill_repeatedly(10);
    let got = run.totals();
    for (customer, (total, n)) in &expected {
        let (t, c) = got[customer];
        assert!(c >= *n && t >= *total, "{customer}: nothing missing ({c} of {n})");
    }
    let twice = run.applied() - RECORDS as i64;
    eprintln!("at-least-once control: {twice} of {RECORDS} records applied twice after 10 SIGKILLs");
    assert!(twice > 0, "SIGKILL mid-batch re-applies what was not committed yet");
}

#[test]
fn eos_then_at_least_once_then_eos_on_one_database_applies_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos-handover");
    create_topic(&topic, 6);
    let db = dir.path().join("totals.sqlite");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE totals (customer TEXT PRIMARY KEY, total INTEGER NOT NULL, n INTEGER NOT NULL)")
        .unwrap();
    let sink = vec!["--sink".into(), format!("sqlite:{}", db.display()), "--sql".into(), UPSERT.into()];
    let mut run = Run { group: unique("g-eos-handover"), topic: topic.clone(), db, dir: dir.path().to_path_buf(), commit: "eos", sink };
    let mut expected = BTreeMap::new();
    for commit in ["eos", "batch:1000", "eos"] {
        produce_more_orders(&topic, 5_000, &mut expected);
        run.commit = commit;
        let mut a = run.spawn("a");
        assert!(wait_exit(&mut a, Duration::from_secs(120)).success(), "the {commit} run");
        assert_eq!(run.totals(), expected, "every aggregate exact after the {commit} run");
    }
}

/// Another producer's transaction holds the group's offset of partition 0
/// (UNSTABLE_OFFSET_COMMIT until it ends) while the group rebalances. librdkafka
/// applies the answer of its own offset query from before the rebalance to the
/// new assignment as "no committed offset", and auto.offset.reset starts the
/// partition from its beginning: every record below the held offset is
/// processed again. kdeck reads the offsets itself and waits for them.
#[test]
fn an_open_transaction_on_the_groups_offsets_is_waited_for_across_a_rebalance() {
    use rdkafka::producer::Producer;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos-unstable");
    let out = format!("{topic}.out");
    create_topic(&topic, 2);
    create_topic(&out, 2);
    let values: Vec<(i32, String)> = (0..2).flat_map(|p| (0..100).map(move |i| (p, format!("{{\"p\":{p},\"i\":{i}}}")))).collect();
    let records: Vec<_> = values.iter().map(|(p, v)| (*p, None, Some(v.as_bytes()), vec![])).collect();
    produce_raw(&topic, &records);
    let group = unique("g-eos-unstable");

    // The holder: offset 50 of partition 0 sent in a transaction that stays open.
    let holder = hold_offset_in_open_transaction(&group, &topic, 0, 50);

    let run = Run {
        topic: topic.clone(),
        group: group.clone(),
        db: dir.path().join("unused.sqlite"),
        dir: dir.path().to_path_buf(),
        commit: "eos",
        sink: vec!["--sink".into(), format!("kafka:{out}")],
    };
    let mut a = run.spawn("a");
    let log = dir.path().join("kdeck-a.log");
    let logged = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().matches(what).count();
    // (librdkafka reads the offsets after the assignment; kdeck, before it, waiting.)
    let waits = || logged("waiting for an open transaction") > 0;
    wait_for("a's assignment", Duration::from_secs(60), || logged("assigned") >= 1 || waits());
    // A second member: the group rebalances while partition 0's offset is held.
    let mut b = run.spawn("b");
    wait_for("the rebalance", Duration::from_secs(60), || logged("assigned") >= 2 || waits());
    let partition = |p: i64| move |v: &serde_json::Value| v["p"].as_i64() == Some(p);
    // librdkafka's stale answer comes back within its retry backoff: give it time to.
    let early = wait_until(Duration::from_secs(3), || read_values(&out, 2, true).iter().any(partition(0)));
    holder.commit_transaction(Duration::from_secs(30)).unwrap();
    let finished = wait_until(Duration::from_secs(60), || {
        read_values(&out, 2, true).iter().filter(|v| partition(0)(v)).count() >= 50
    });
    let _ = (a.kill(), b.kill(), a.wait(), b.wait());
    let mut seen: Vec<i64> = read_values(&out, 2, true).iter().filter(|v| partition(0)(v)).map(|v| v["i"].as_i64().unwrap()).collect();
    seen.sort();
    assert!(!early, "partition 0 was processed while its offset was held: {} records", seen.len());
    assert!(finished, "partition 0 went on from the held offset once the transaction ended");
    assert_eq!(seen, (50..100).collect::<Vec<_>>(), "partition 0 from offset 50, each record once");
}

/// A restarted instance aborts what its killed predecessor (same transactional
/// id) left open as it starts: the offsets that transaction holds are free at
/// once, not after its timeout (a minute here).
#[test]
fn a_restarted_instance_frees_what_its_killed_predecessor_left_open_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = setup_kafka("eos-restart", dir.path(), &["-X", "transaction.timeout.ms=60000"]);
    let mut a = run.spawn_with_env("a", &[("KDECK_FAILPOINT", "hang-before-commit:3")]);
    let log = dir.path().join("kdeck-a.log");
    wait_for("the hanging transaction", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("failpoint: transaction 3 hangs")
    });
    a.kill().unwrap();
    a.wait().unwrap();
    // (While the transaction holds an offset, reading the group's offsets fails: 0.)
    let before = run.committed();
    let mut a = run.spawn("a");
    let progressed = wait_until(Duration::from_secs(30), || run.committed() > before);
    if !progressed {
        let _ = a.kill();
    }
    assert!(progressed, "the restarted instance made progress within 30 s");
    assert!(wait_exit(&mut a, Duration::from_secs(120)).success());
    let (counts, _) = output_counts(&out, true);
    assert_exactly_once(&counts);
}
