//! PostgreSQL restarted under kdeck: a run in the middle of its work, and
//! three instances killed at random moments. Its own test binary, so the
//! restarts cut no other test's connections; its tests take turns.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::pg::*;
use common::*;

/// The test database made writable again, even when a test fails.
struct ReadOnly;

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let mut c = pg();
        // A new session is read-only by default now: this one is not.
        c.batch_execute("SET default_transaction_read_only = off").unwrap();
        c.batch_execute("ALTER DATABASE kdeck RESET default_transaction_read_only").unwrap();
    }
}

/// One restart at a time.
static SERVER: Mutex<()> = Mutex::new(());

#[test]
fn a_postgres_restart_in_the_middle_of_a_run_loses_and_doubles_nothing() {
    let _turn = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-restart");
    create_topic(&topic, 3);
    let (table, sql) = fresh_totals("r");
    let expected = produce_orders(&topic, 3000, 10, 3);
    let group = unique("g-pg-restart");
    let status = dir.path().join("status.jsonl");
    let mut child = Killed(
        run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql, "--json", "--handler-delay", "2ms"])
            .stdout(std::fs::File::create(&status).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("some records written", Duration::from_secs(60), || {
        last_snapshot(&status).is_some_and(|s| s["processed"].as_u64().unwrap_or(0) > 300)
    });
    restart_postgres();
    let exit = wait_exit(&mut child.0, Duration::from_secs(120));
    assert!(exit.success(), "{}", std::fs::read_to_string(dir.path().join("stderr")).unwrap());
    assert_eq!(totals(&table), expected, "every customer's total and count exact");
    let last = last_snapshot(&status).unwrap();
    let problem = last["eos"]["last_problem"].as_str().unwrap_or_default().to_string();
    assert!(problem.contains("PostgreSQL"), "the run went through the restart (its last problem: `{problem}`)");
    assert!(last["eos"]["aborts"].as_u64().unwrap() >= 1, "{}", last["eos"]);
}


const RECORDS: usize = 200_000;
const PARTITIONS: usize = 6;

/// Three instances, as if on three hosts, sharing one database.
struct Fleet {
    group: String,
    topic: String,
    sql: String,
    commit: &'static str,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn spawn(&self, id: usize) -> Killed {
        let mut cmd = kdeck();
        cmd.args(["run", "--headless", "-b", &brokers(), "-G", &self.group, "-t", &self.topic, "--format", "json"])
            .args(["--commit", self.commit, "--sink", &pg_url(), "--sql", &self.sql])
            // Static membership: a restarted instance takes its place at once.
            .args(["-X", &format!("group.instance.id=host-{id}"), "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"])
            .args(["-X", "partition.assignment.strategy=cooperative-sticky"])
            .env("PGPASSWORD", pg_password())
            .arg("--audit")
            .arg(self.dir.path().join(format!("audit-{id}.sqlite")))
            .arg("--log-file")
            .arg(self.dir.path().join(format!("kdeck-{id}.log")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // KDECK_FLEET_DEBUG=1: librdkafka's group protocol in the hosts' logs,
        // kept in /tmp when a round stalls.
        if std::env::var_os("KDECK_FLEET_DEBUG").is_some() {
            cmd.args(["-X", "debug=cgrp"]).env("KDECK_LOG", "info,librdkafka=debug");
        }
        Killed(cmd.spawn().unwrap())
    }

    /// Records whose effect the database holds, by its stored offsets.
    fn stored(&self) -> i64 {
        stored_offsets(&self.group, &self.topic).values().sum()
    }

    /// Waits for `target` stored; if it does not come, says what the database
    /// sessions and the hosts' logs show, so a stall explains itself.
    fn wait_stored(&self, what: &str, target: i64, deadline: Duration) {
        let until = std::time::Instant::now() + deadline;
        while self.stored() < target {
            if std::time::Instant::now() > until {
                let ends = end_offsets(&self.topic);
                let stored = stored_offsets(&self.group, &self.topic);
                let committed = committed_offsets(&self.group, &self.topic);
                eprintln!("ends {ends:?}\nstored {stored:?}\nkafka committed {committed:?}");
                let sessions: Vec<String> = pg()
                    .query(
                        "SELECT state || ' ' || coalesce(wait_event, '') || ' ' || left(query, 80) FROM pg_stat_activity WHERE application_name = 'kdeck'",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut logs = String::new();
                for id in 0..3 {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("kdeck-{id}.log"))).unwrap_or_default();
                    let tail: Vec<&str> =
                        log.lines().filter(|l| !l.contains(" INFO ") || l.contains("ssign") || l.contains("evoke") || l.contains("ebalance")).collect();
                    logs += &format!("host-{id}:\n{}\n", tail[tail.len().saturating_sub(15)..].join("\n"));
                }
                if std::env::var_os("KDECK_FLEET_DEBUG").is_some() {
                    let keep = std::path::PathBuf::from(format!("/tmp/fleet-stall-{}", std::process::id()));
                    let _ = std::process::Command::new("cp").arg("-r").arg(self.dir.path()).arg(&keep).status();
                    eprintln!("logs kept in {}", keep.display());
                }
                panic!("{what}: stored {} of {target} after {deadline:?}\nsessions: {sessions:#?}\n{logs}", self.stored());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// ≥ 10 SIGKILLs of random instances at random amounts of progress, and one
/// PostgreSQL restart, while three instances work through RECORDS; then on
/// to the end. Returns what was expected and what the database holds.
fn killed_repeatedly(commit: &'static str) -> (BTreeMap<String, (i64, i64)>, BTreeMap<String, (i64, i64)>) {
    use rand::Rng;
    let topic = unique("pg-fleet");
    create_topic(&topic, PARTITIONS as i32);
    let (table, sql) = fresh_totals("f");
    let fleet = Fleet { group: unique("g-fleet"), topic: topic.clone(), sql, commit, dir: tempfile::tempdir().unwrap() };
    let expected = produce_orders(&topic, RECORDS, 50, PARTITIONS);
    let mut hosts: Vec<Killed> = (0..3).map(|i| fleet.spawn(i)).collect();
    let mut rng = rand::rng();
    for round in 0..12 {
        let target = fleet.stored() + rng.random_range(2_000..12_000);
        fleet.wait_stored(&format!("progress in round {round}"), target.min(RECORDS as i64), Duration::from_secs(90));
        if round == 5 {
            restart_postgres();
        }
        let victim = rng.random_range(0..3);
        let _ = hosts[victim].0.kill(); // SIGKILL: no drain, no final commit
        let _ = hosts[victim].0.wait();
        hosts[victim] = fleet.spawn(victim);
    }
    fleet.wait_stored("every record's effect in the database", RECORDS as i64, Duration::from_secs(240));
    drop(hosts);
    let asked = (0..3)
        .map(|id| std::fs::read_to_string(fleet.dir.path().join(format!("kdeck-{id}.log"))).unwrap_or_default())
        .map(|log| log.matches("owned by no member").count())
        .sum::<usize>();
    println!("{commit}: rebalances asked for partitions no member owned: {asked}");
    (expected, totals(&table))
}

#[test]
fn three_hosts_killed_at_random_and_a_postgres_restart_keep_every_total_exact_under_eos() {
    let _turn = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let (expected, got) = killed_repeatedly("eos");
    let applied: i64 = got.values().map(|(_, n)| n).sum();
    assert_eq!(applied, RECORDS as i64, "every record applied once");
    assert_eq!(got, expected, "every customer's total and count exact");
}

#[test]
fn the_same_at_least_once_loses_nothing_and_counts_its_duplicates() {
    let _turn = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let (expected, got) = killed_repeatedly("batch:1000");
    for (customer, (_, n)) in &expected {
        assert!(got.get(customer).is_some_and(|(_, g)| g >= n), "{customer}: nothing lost ({:?} < {n})", got.get(customer));
    }
    let applied: i64 = got.values().map(|(_, n)| n).sum();
    println!("at-least-once: {} duplicates in {RECORDS} records after the kills", applied - RECORDS as i64);
}

#[test]
fn a_read_only_database_after_a_failover_holds_the_batch_and_dead_letters_nothing() {
    let _turn = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (topic, dlq) = topic_with_dlq("pg-readonly");
    let (table, sql) = fresh_totals("ro");
    let group = unique("g-pg-ro");
    let mut expected = produce_orders(&topic, 500, 10, 1);
    let status = dir.path().join("status.jsonl");
    let mut child = Killed(
        kdeck()
            .args(["run", "--headless", "--json", "-b", &brokers(), "-G", &group, "-t", &topic, "--format", "json", "--commit", "eos"])
            .args(["--sink", &pg_url(), "--sql", &sql, "--dlq", &dlq, "--retry-max", "2", "--retry-backoff", "50ms..200ms"])
            .arg("--log-file")
            .arg(dir.path().join("kdeck.log"))
            .arg("--audit")
            .arg(dir.path().join("audit.sqlite"))
            .env("PGPASSWORD", pg_password())
            .stdout(std::fs::File::create(&status).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let stored = || stored_offsets(&group, &topic).get(&0).copied().unwrap_or(0);
    wait_for("the first records in the database", Duration::from_secs(60), || stored() == 500);
    // What a failover leaves behind: the URL reaches a server that only reads.
    // kdeck is idle, so the next record meets it on its own (nothing pending).
    let kick = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kdeck'";
    let read_only = ReadOnly;
    pg().batch_execute("ALTER DATABASE kdeck SET default_transaction_read_only = on").unwrap();
    pg().batch_execute(kick).unwrap();
    for (c, (t, n)) in produce_orders(&topic, 300, 10, 1) {
        let e = expected.entry(c).or_default();
        e.0 += t;
        e.1 += n;
    }
    wait_for("the partition held with the reason", Duration::from_secs(60), || {
        last_snapshot(&status).is_some_and(|s| s.to_string().contains("read-only"))
    });
    drop(read_only);
    pg().batch_execute(kick).unwrap();
    wait_for("every record in the database", Duration::from_secs(60), || stored() == 800);
    sigterm(&child.0);
    wait_exit(&mut child.0, Duration::from_secs(30));
    assert!(read_topic(&dlq).is_empty(), "a read-only database is not a bad record");
    assert_eq!(totals(&table), expected);
}
