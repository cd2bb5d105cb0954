//! Topics written by transactional producers: every transaction leaves a marker
//! that takes an offset and is never delivered. kdeck must commit past the
//! markers (and past aborted records it skips), show no lag at the end, and let
//! `--stop-at-end` and `kdeck dlq list` finish.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Two committed transactions of 500 around an aborted one of 200:
/// offsets 0..499, marker 500, 501..700 aborted, marker 701, 702..1201, marker 1202.
const TRANSACTIONS: [(usize, bool); 3] = [(500, true), (200, false), (500, true)];

fn transactional_topic(name: &str) -> String {
    let topic = unique(name);
    create_topic(&topic, 1);
    produce_transactions(&topic, &TRANSACTIONS);
    assert_eq!(end_offsets(&topic)[&0], 1203, "1200 records and 3 markers");
    topic
}

fn run_until_end(topic: &str, extra: &[&str]) -> (String, serde_json::Value, usize) {
    let group = unique("g-txn");
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let started = Instant::now();
    let mut cmd = run_to_end(&group, topic, dir.path());
    cmd.args(["--json", "--sink"]).arg(format!("jsonl:{}", sink.display())).args(extra);
    let (status, last, _) = run_json(cmd, Duration::from_secs(60));
    assert!(status.success(), "kdeck exited with {status}");
    assert!(started.elapsed() < Duration::from_secs(60));
    (group, last, line_count(&sink))
}

fn assert_at_end(group: &str, topic: &str, last: &serde_json::Value) {
    assert_eq!(committed_offsets(group, topic)[&0], 1203, "committed past the last marker");
    let p = &last["partitions"][0];
    assert_eq!(p["committed"], 1203, "{p}");
    assert_eq!(p["lag"], 0, "no lag at the end: {p}");
    assert_eq!(last["lag_total"], 0);
}

#[test]
fn read_committed_skips_aborted_records_and_commits_past_every_marker() {
    let topic = transactional_topic("txn-rc");
    let (group, last, processed) = run_until_end(&topic, &["-X", "isolation.level=read_committed"]);
    assert_eq!(processed, 1000, "only the committed transactions' records");
    assert_at_end(&group, &topic, &last);
}

#[test]
fn read_uncommitted_sees_aborted_records_and_commits_past_every_marker() {
    let topic = transactional_topic("txn-ru");
    let (group, last, processed) = run_until_end(&topic, &["-X", "isolation.level=read_uncommitted"]);
    assert_eq!(processed, 1200, "aborted records are delivered too");
    assert_at_end(&group, &topic, &last);
}

#[test]
fn exactly_once_into_kafka_commits_past_markers_of_its_input() {
    let topic = transactional_topic("txn-eos");
    let out = unique("txn-eos-out");
    create_topic(&out, 1);
    let group = unique("g-txn-eos");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = run_to_end(&group, &topic, dir.path());
    cmd.args(["--json", "--commit", "eos", "--sink"]).arg(format!("kafka:{out}"));
    let (status, last, _) = run_json(cmd, Duration::from_secs(60));
    assert!(status.success(), "kdeck exited with {status}");
    assert_at_end(&group, &topic, &last);
}

#[test]
fn dlq_list_reads_a_dead_letter_topic_written_in_transactions_to_its_end() {
    let topic = transactional_topic("txn-dlq");
    let started = Instant::now();
    let out = kdeck().args(["dlq", "list", "-b", &brokers(), "--dlq", &topic]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1000, "the committed records, once each");
}
