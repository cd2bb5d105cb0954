//! `kdeck lag` beside open transactions on `__consumer_offsets` (Kafka
//! Streams and other exactly-once groups keep them open for a while): an offset
//! an open transaction holds is unknown, not an error for the whole sample, and
//! commits the transaction hides from read_committed are never read as no
//! commits (a false STOP). A file of its own: test files run one after another,
//! so these transactions hold back no other test's commit log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn lag(groups: &[&str]) -> (i32, Value) {
    let out = kdeck().args(["lag", "--json", "-b", &brokers(), "-G", &groups.join(",")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

fn group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["groups"].as_array().unwrap().iter().find(|g| g["group"] == name).unwrap_or_else(|| panic!("{name} not in {report}"))
}

fn partition(report: &Value, name: &str, p: i64) -> Value {
    group(report, name)["partitions"].as_array().unwrap().iter().find(|x| x["partition"] == p).cloned().unwrap()
}

fn produce(topic: &str, partition: i32, n: usize) {
    let records: Vec<_> = (0..n).map(|_| (partition, None, Some(&b"{}"[..]), vec![])).collect();
    produce_raw(topic, &records);
}

#[test]
fn an_offset_held_by_an_open_transaction_is_unknown_and_the_rest_is_judged() {
    let topic = unique("mon-held");
    create_topic(&topic, 2);
    produce(&topic, 0, 20);
    produce(&topic, 1, 20);
    let g = unique("mon-held-g");
    commit_offset(&g, &topic, 0, 2);
    commit_offset(&g, &topic, 1, 20);
    let holder = hold_offset_in_open_transaction(&g, &topic, 0, 5);
    let started = std::time::Instant::now();
    let (status, report) = lag(&[&g]);
    let held = partition(&report, &g, 0);
    assert!(held["committed"].is_null() && held["lag"].is_null() && held["verdict"].is_null(), "{held}");
    assert!(held["error"].as_str().is_some_and(|e| e.to_lowercase().contains("unstable")), "the reason is shown: {held}");
    assert_eq!(partition(&report, &g, 1)["verdict"], "OK", "{report}");
    assert_eq!(status, 0, "{report}");
    assert!(started.elapsed() < Duration::from_secs(8), "an open transaction on the commit log is not waited out: {:?}", started.elapsed());
    drop(holder);
}


#[test]
fn commits_an_open_transaction_hides_are_not_taken_for_no_commits() {
    let topic = unique("mon-hidden");
    create_topic(&topic, 1);
    produce(&topic, 0, 20);
    // A group whose commits share their partition of __consumer_offsets with the holder's.
    let holder_group = unique("mon-hidden-holder");
    let partitions = offsets_topic_partitions();
    let home = kdeck::monitor::offsets_topic::partition_for(&holder_group, partitions);
    let g = (0..1000).map(|i| format!("{holder_group}-{i}")).find(|g| kdeck::monitor::offsets_topic::partition_for(g, partitions) == home).unwrap();
    let holder = hold_offset_in_open_transaction(&holder_group, &topic, 0, 1);
    // Written after the open transaction began: invisible to read_committed until it ends.
    commit_offset(&g, &topic, 0, 5);
    let (status, report) = lag(&[&g]);
    let p = partition(&report, &g, 0);
    assert_eq!(p["committed"].as_i64(), Some(5), "{p}");
    assert!(p["verdict"].is_null(), "no commit seen is not no commit made: {report}");
    assert!(group(&report, &g)["history"].as_str().unwrap().contains("open transaction"), "{report}");
    assert_eq!(status, 3);
    drop(holder);
}

#[test]
fn a_group_committed_past_an_open_transactions_records_has_a_known_lag() {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let topic = unique("mon-open-records");
    create_topic(&topic, 1);
    // Ten records in a transaction left open: the high watermark is 10, the
    // last stable offset 0. A read_uncommitted consumer reads and commits 10.
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("open-records"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p.begin_transaction().unwrap();
    for _ in 0..10 {
        p.send(BaseRecord::<(), [u8]>::to(&topic).partition(0).payload(&b"{}"[..])).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let g = unique("mon-open-records-g");
    commit_offset(&g, &topic, 0, 10);
    let (_, report) = lag(&[&g]);
    let part = partition(&report, &g, 0);
    assert_eq!((part["end"].as_i64(), part["lag"].as_i64()), (Some(10), Some(0)), "{part}");
    p.abort_transaction(Duration::from_secs(30)).unwrap();
}

fn offsets_topic_partitions() -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::config::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let md = c.fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10)).unwrap();
    md.topics()[0].partitions().len() as i32
}

