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
    use std::io::Write;
    let mut rng = rand::rng();
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut input = Vec::with_capacity(RECORDS * 48);
    for i in 0..RECORDS {
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
    assert_eq!(end_offsets(topic).values().sum::<i64>(), RECORDS as i64);
    expected
}

struct Run {
    topic: String,
    group: String,
    db: PathBuf,
    dir: PathBuf,
    commit: &'static str,
}

impl Run {
    /// One instance; `id` is its static group membership, so a restarted instance
    /// takes its place at once instead of waiting for the dead one's session to end.
    fn spawn(&self, id: &str) -> Child {
        kdeck()
            .args(["run", "--headless", "--stop-at-end", "-b", &brokers(), "-G", &self.group, "-t", &self.topic])
            .args(["--format", "json", "--commit", self.commit, "--sql", UPSERT])
            .arg("--sink")
            .arg(format!("sqlite:{}", self.db.display()))
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
            let target = self.applied() + rng.random_range(1_000..12_000);
            let progressed = wait_until(Duration::from_secs(60), || self.applied() >= target || a.try_wait().unwrap().is_some());
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
        let finished = wait_until(Duration::from_secs(120), || {
            if a.try_wait().unwrap().is_some() && self.applied() < RECORDS as i64 {
                a = self.spawn("a");
            }
            a.try_wait().unwrap().is_some() && self.applied() >= RECORDS as i64
        });
        if let Some(mut b) = b {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = a.kill();
        assert!(finished, "did not get to the end: {} of {RECORDS} applied", self.applied());
    }
}

fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
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
    (Run { group: unique(&format!("g-{name}")), topic, db, dir: dir.to_path_buf(), commit }, expected)
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
