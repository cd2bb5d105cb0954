//! `kdeck lag` against the real broker: groups kdeck does not join, their lag
//! in records and in time, a verdict per Burrow rule from the commits in
//! `__consumer_offsets`, members of classic and KIP-848 groups, and the exit
//! status scripts read.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde_json::Value;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `n` records into partition `partition`, each with timestamp `ts_ms` (now if None).
fn produce(topic: &str, partition: i32, n: usize, ts_ms: Option<i64>) {
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("acks", "all").create().unwrap();
    for i in 0..n {
        let value = format!("{{\"n\":{i}}}");
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(partition).payload(value.as_bytes());
        if let Some(ts) = ts_ms {
            r = r.timestamp(ts);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// `kdeck lag --json` for these groups: its exit status and the report.
fn lag(groups: &[&str], extra: &[&str]) -> (i32, Value) {
    try_lag(groups, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// As `lag`, or what it printed instead of a report (a group not there yet).
fn try_lag(groups: &[&str], extra: &[&str]) -> Result<(i32, Value), String> {
    let out = kdeck().args(["lag", "--json", "-b", &brokers(), "-G", &groups.join(",")]).args(extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .map_err(|e| format!("kdeck lag printed no JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code().unwrap(), report))
}

fn group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["groups"].as_array().unwrap().iter().find(|g| g["group"] == name).unwrap_or_else(|| panic!("{name} not in {report}"))
}

fn partition(report: &Value, name: &str, p: i64) -> Value {
    group(report, name)["partitions"].as_array().unwrap().iter().find(|x| x["partition"] == p).cloned().unwrap()
}

#[test]
fn a_lagging_partition_shows_its_lag_in_records_and_in_time() {
    let topic = unique("mon-time");
    create_topic(&topic, 2);
    let two_minutes_ago = now_ms() - 120_000;
    produce(&topic, 0, 10, Some(two_minutes_ago));
    produce(&topic, 0, 10, None);
    produce(&topic, 1, 5, None);
    let g = unique("mon-time-g");
    commit_offset(&g, &topic, 0, 5);
    commit_offset(&g, &topic, 1, 5);

    let (status, report) = lag(&[&g], &[]);
    let p0 = partition(&report, &g, 0);
    assert_eq!((p0["committed"].as_i64(), p0["end"].as_i64(), p0["lag"].as_i64()), (Some(5), Some(20), Some(15)), "{p0}");
    let behind = p0["lag_ms"].as_i64().unwrap();
    assert!((120_000..180_000).contains(&behind), "the record at the committed offset is two minutes old: {behind} ms");
    let p1 = partition(&report, &g, 1);
    assert_eq!((p1["lag"].as_i64(), p1["lag_ms"].as_i64()), (Some(0), Some(0)), "{p1}");
    assert_eq!(group(&report, &g)["state"], "Empty");
    assert_eq!(group(&report, &g)["verdict"], "OK", "one recent commit while behind is not a problem yet: {report}");
    assert_eq!(status, 0);
}

#[test]
fn run_shows_lag_in_time_and_the_age_of_the_last_processed_record() {
    let topic = unique("run-time");
    create_topic(&topic, 1);
    let two_minutes_ago = now_ms() - 120_000;
    produce(&topic, 0, 40, Some(two_minutes_ago));
    let group = unique("run-time-g");
    let dir = tempfile::tempdir().unwrap();
    // Slow work and per-message commits: the partition stays behind for a while.
    let mut child = kdeck()
        .args(["run", "--headless", "--json", "-b", &brokers(), "-G", &group, "-t", &topic])
        .args(["--handler-delay", "100ms", "--commit", "per-message"])
        .arg("--log-file")
        .arg(dir.path().join("kdeck.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut behind = None;
    let mut caught_up = false;
    for line in lines {
        let snap: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let Some(p) = snap["partitions"].as_array().and_then(|a| a.first()).cloned() else { continue };
        if p["lag"].as_i64().is_some_and(|l| l > 0) && behind.is_none() {
            behind = p["lag_ms"].as_i64();
        }
        if let Some(age) = p["last_processed_age_ms"].as_i64() {
            assert!((110_000..180_000).contains(&age), "the records are two minutes old: {age} ms");
        }
        if p["lag"].as_i64() == Some(0) && p["committed"].as_i64() == Some(40) {
            assert_eq!(p["lag_ms"].as_i64(), Some(0), "caught up: {p}");
            caught_up = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(caught_up, "the run caught up");
    let behind = behind.expect("lag in time was known while behind");
    assert!((110_000..180_000).contains(&behind), "the oldest uncommitted record is two minutes old: {behind} ms");
}

#[test]
fn each_burrow_rule_gives_its_verdict_and_exit_status() {
    let topic = |name: &str, n: usize| {
        let t = unique(name);
        create_topic(&t, 1);
        produce(&t, 0, n, None);
        t
    };
    // OK: caught up.
    let (ok_t, ok) = (topic("mon-ok", 20), unique("mon-ok-g"));
    commit_offset(&ok, &ok_t, 0, 10);
    commit_offset(&ok, &ok_t, 0, 20);
    // STALL: the same offset committed again and again while behind.
    let (stall_t, stall) = (topic("mon-stall", 20), unique("mon-stall-g"));
    for _ in 0..3 {
        commit_offset(&stall, &stall_t, 0, 5);
    }
    // REWIND: the committed offset went backwards.
    let (rewind_t, rewind) = (topic("mon-rewind", 20), unique("mon-rewind-g"));
    commit_offset(&rewind, &rewind_t, 0, 15);
    commit_offset(&rewind, &rewind_t, 0, 5);
    // WARN: committing, but the end runs away faster (lag 8, 16, 24).
    let (warn_t, warn) = (topic("mon-warn", 10), unique("mon-warn-g"));
    commit_offset(&warn, &warn_t, 0, 2);
    produce(&warn_t, 0, 10, None);
    commit_offset(&warn, &warn_t, 0, 4);
    produce(&warn_t, 0, 10, None);
    commit_offset(&warn, &warn_t, 0, 6);

    let (status, report) = lag(&[&ok, &stall, &rewind, &warn], &[]);
    let verdicts: Vec<(&str, &Value)> = [("OK", &ok), ("STALL", &stall), ("REWIND", &rewind), ("WARN", &warn)]
        .iter()
        .map(|(want, g)| (*want, &group(&report, g)["verdict"]))
        .collect();
    for (want, got) in &verdicts {
        assert_eq!(*got, want, "{verdicts:?}\n{report}");
    }
    assert_eq!(status, 2, "the worst group is an error");
    assert_eq!(lag(&[&warn], &[]).0, 1);
    assert_eq!(lag(&[&ok], &[]).0, 0);
    assert_eq!(partition(&report, &warn, 0)["lag"].as_i64(), Some(24));
}

#[test]
fn a_partition_behind_that_stops_committing_is_stop() {
    let t = unique("mon-stop");
    create_topic(&t, 1);
    produce(&t, 0, 20, None);
    let g = unique("mon-stop-g");
    commit_offset(&g, &t, 0, 5);
    commit_offset(&g, &t, 0, 8);
    let started = std::time::Instant::now();
    let mut last = Value::Null;
    wait_for("STOP", Duration::from_secs(30), || {
        let (status, report) = lag(&[&g], &["--stop-after", "2s"]);
        last = report;
        group(&last, &g)["verdict"] == "STOP" && status == 2
    });
    assert!(started.elapsed() >= Duration::from_secs(2), "STOP before --stop-after passed: {last}");
}

#[test]
fn a_kdeck_member_whose_processing_is_stuck_is_stop_while_its_group_stays_stable() {
    let topic = unique("mon-stuck");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 10, 20);
    let g = unique("mon-stuck-g");
    let dir = tempfile::tempdir().unwrap();
    // The child answers ten records, then never again: processing is stuck.
    let sink = "exec:n=0; while IFS= read -r line; do n=$((n+1)); if [ $n -gt 10 ]; then sleep 3600; fi; echo ok; done";
    let _member = Killed(kdeck()
        .args(["run", "--headless", "-b", &brokers(), "-G", &g, "-t", &topic, "--sink", sink, "--exec-timeout", "10m", "--commit", "per-message"])
        .arg("--log-file")
        .arg(dir.path().join("kdeck.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    wait_for("the first ten committed", Duration::from_secs(60), || committed_offsets(&g, &topic).get(&0) == Some(&10));
    produce(&topic, 0, 20, None);
    let mut last = Value::Null;
    wait_for("STOP", Duration::from_secs(60), || {
        let Ok((status, report)) = try_lag(&[&g], &["--stop-after", "2s"]) else { return false };
        last = report;
        let p = partition(&last, &g, 0);
        status == 2 && group(&last, &g)["verdict"] == "STOP" && p["committed"].as_i64() == Some(10)
    });
    assert_eq!(group(&last, &g)["state"], "Stable", "the member is there, its processing is not: {last}");
    assert_eq!(partition(&last, &g, 0)["lag"].as_i64(), Some(20));
    // --all lists it too.
    let out = kdeck().args(["lag", "--json", "--all", "-b", &brokers()]).output().unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all["groups"].as_array().unwrap().iter().any(|x| x["group"] == g.as_str()), "{all}");
    // Stuck on a record: no graceful drain to wait for (Killed ends it).
}

#[test]
fn watching_never_commits_for_the_watched_group_even_when_x_says_so() {
    let topic = unique("mon-nocommit");
    create_topic(&topic, 1);
    produce(&topic, 0, 20, None);
    let g = unique("mon-nocommit-g");
    commit_offset(&g, &topic, 0, 5);
    let (_, report) = lag(&[&g], &["-X", &format!("group.id={g}"), "-X", "enable.auto.commit=true", "-X", "enable.auto.offset.store=true", "-X", "auto.commit.interval.ms=50"]);
    assert!(partition(&report, &g, 0)["lag_ms"].as_i64().is_some(), "the record at 5 was read: {report}");
    assert_eq!(committed_offsets(&g, &topic).get(&0), Some(&5), "kdeck lag committed for the group it watches");
}

#[test]
fn two_groups_behind_on_one_partition_both_get_their_lag_in_time() {
    let topic = unique("mon-two");
    create_topic(&topic, 1);
    produce(&topic, 0, 5, Some(now_ms() - 300_000));
    produce(&topic, 0, 5, Some(now_ms() - 60_000));
    let (a, b) = (unique("mon-two-a"), unique("mon-two-b"));
    commit_offset(&a, &topic, 0, 3);
    commit_offset(&b, &topic, 0, 7);
    let (_, report) = lag(&[&a, &b], &[]);
    let lag_a = partition(&report, &a, 0)["lag_ms"].as_i64().expect("a's lag in time");
    let lag_b = partition(&report, &b, 0)["lag_ms"].as_i64().expect("b's lag in time");
    assert!((290_000..400_000).contains(&lag_a), "{lag_a}");
    assert!((50_000..150_000).contains(&lag_b), "{lag_b}");
}

#[test]
fn watch_stops_at_once_even_in_the_middle_of_a_slow_sample() {
    let g = unique("mon-slow");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        kdeck()
            .args(["watch", "--json", "-b", &brokers(), "-G", &g])
            .arg("--history")
            .arg(dir.path().join("history.sqlite"))
            .arg("--log-file")
            .arg(dir.path().join("kdeck.log"))
            // Every sample takes 30 s, as with a broker that does not answer.
            .env("KDECK_FAILPOINT", "slow-sample:30000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = dir.path().join("kdeck.log");
    wait_for("the first sample to begin", Duration::from_secs(30), || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("failpoint slow-sample")));
    sigterm(&child.0);
    let started = std::time::Instant::now();
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?} to stop", started.elapsed());
    assert!(status.success() || status.code() == Some(130), "{status:?}");
}

/// A consumer that runs `body` on a thread of its own until dropped (`body`
/// is told to stop through its flag).
struct Member {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(config: &mut ClientConfig, topic: &str, body: impl FnOnce(BaseConsumer, &std::sync::atomic::AtomicBool) + Send + 'static) -> Member {
        let c: BaseConsumer = config.set("bootstrap.servers", brokers()).set("auto.offset.reset", "earliest").create().unwrap();
        c.subscribe(&[topic]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        Member { stop, thread: Some(std::thread::spawn(move || body(c, &flag))) }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A member that joined the group, read five records, paused its partition
/// (processing stuck) and goes on committing its position, as Java's
/// auto-commit does every few seconds.
fn paused_member(group: &str, topic: &str) -> Member {
    use rdkafka::consumer::CommitMode;
    use rdkafka::message::Message;
    let mut config = ClientConfig::new();
    config.set("group.id", group).set("client.id", "paused-member").set("enable.auto.commit", "false");
    let topic_name = topic.to_string();
    Member::start(&mut config, topic, move |c, stop| {
        let mut read = 0;
        while read < 5 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                read = m.offset() + 1;
            }
        }
        let mut at = rdkafka::TopicPartitionList::new();
        at.add_partition_offset(&topic_name, 0, rdkafka::Offset::Offset(read)).unwrap();
        let _ = c.pause(&c.assignment().unwrap());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = c.poll(Duration::from_millis(300));
            let _ = c.commit(&at, CommitMode::Sync);
        }
    })
}

/// A member of a KIP-848 ("consumer" protocol) group, polling.
fn kip848_member(group: &str, topic: &str) -> Member {
    let mut config = ClientConfig::new();
    config.set("group.id", group).set("group.protocol", "consumer").set("client.id", "kip848-member");
    Member::start(&mut config, topic, |c, stop| {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = c.poll(Duration::from_millis(100));
        }
        c.unsubscribe();
    })
}

#[test]
fn a_member_that_paused_processing_and_keeps_committing_is_stall() {
    let topic = unique("mon-paused");
    create_topic(&topic, 1);
    produce(&topic, 0, 30, None);
    let g = unique("mon-paused-g");
    let _member = paused_member(&g, &topic);
    let mut last = Value::Null;
    wait_for("STALL", Duration::from_secs(60), || {
        let Ok((status, report)) = try_lag(&[&g], &[]) else { return false };
        last = report;
        status == 2 && group(&last, &g)["verdict"] == "STALL"
    });
    let p = partition(&last, &g, 0);
    assert_eq!((p["committed"].as_i64(), p["lag"].as_i64()), (Some(5), Some(25)), "{p}");
    let members = group(&last, &g)["members"].as_array().unwrap().clone();
    assert_eq!(group(&last, &g)["state"], "Stable", "{last}");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["client_id"], "paused-member");
}

#[test]
fn members_of_classic_kip848_and_kdeck_groups_are_shown_without_joining() {
    let topic = unique("mon-members");
    create_topic(&topic, 3);
    produce_with_kcat(&topic, 30, 50);
    let (classic, kip848, ours) = (unique("mon-kcat"), unique("mon-848"), unique("mon-kdeck"));
    let _kcat = Killed(
        Command::new("kcat")
            .args(["-b", &brokers(), "-G", &classic, &topic, "-q", "-X", "client.id=kcat-member"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _member = kip848_member(&kip848, &topic);
    let dir = tempfile::tempdir().unwrap();
    let _kdeck = Killed(spawn_run(&ours, &topic, &dir.path().join("out.jsonl"), &["-X", "client.id=kdeck-member"]));

    let mut last = Value::Null;
    wait_for("three Stable groups with their members", Duration::from_secs(60), || {
        let Ok((_, report)) = try_lag(&[&classic, &kip848, &ours], &[]) else { return false };
        last = report;
        [&classic, &kip848, &ours].iter().all(|g| {
            let g = group(&last, g);
            let assigned: usize = g["members"].as_array().map_or(0, |m| m.iter().map(|m| m["partitions"].as_array().unwrap().len()).sum());
            g["state"] == "Stable" && assigned == 3
        })
    });
    assert_eq!(group(&last, &classic)["protocol"], "classic", "{last}");
    assert_eq!(group(&last, &kip848)["protocol"], "consumer", "{last}");
    assert_eq!(group(&last, &ours)["protocol"], "classic", "{last}");
    for (g, client) in [(&classic, "kcat-member"), (&kip848, "kip848-member"), (&ours, "kdeck-member")] {
        let members = group(&last, g)["members"].as_array().unwrap().clone();
        assert_eq!(members.len(), 1, "{last}");
        assert_eq!(members[0]["client_id"], client, "{last}");
        assert!(!members[0]["member_id"].as_str().unwrap().is_empty());
    }
    // Watching joined nothing: each group still has its one member.
    let again = lag(&[&classic, &kip848, &ours], &[]).1;
    for g in [&classic, &kip848, &ours] {
        assert_eq!(group(&again, g)["members"].as_array().unwrap().len(), 1, "{again}");
    }
}

#[test]
fn an_unknown_group_or_bad_input_exits_3_with_one_sentence() {
    let out = kdeck().args(["lag", "-b", &brokers(), "-G", &unique("mon-nosuch")]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let out = kdeck().args(["lag", "-b", &brokers(), "-G", "g", "--lookback", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lookback `soon` is not a duration"));
    let out = kdeck().args(["lag", "-b", &brokers(), "-G", "g", "--window", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a usage error is unknown, not an error verdict");
    let out = kdeck().args(["lag", "-b", "127.0.0.1:9", "-G", "g", "--connect-timeout", "1s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Kafka"));
}
