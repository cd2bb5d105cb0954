//! `kdeck run` as a process against the real broker: everything processed and
//! committed, SIGTERM and restart, a second instance joining under each
//! rebalance protocol. Records come from kcat, an independent client.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn processes_100k_records_and_commits_every_partition_to_its_end() {
    let topic = unique("all");
    let group = unique("g-all");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 100_000, 100);
    assert_eq!(ends.len(), 6);
    assert!(ends.values().all(|&n| n > 10_000), "keys spread over all partitions: {ends:?}");

    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let mut child = spawn_run(&group, &topic, &sink, &["--stop-at-end"]);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "kdeck exited with {status}");

    let seen = seen_in_sink(&sink);
    assert_eq!(seen.len(), 100_000);
    assert_all_seen(&seen.keys().cloned().collect(), &ends);
    assert_eq!(committed_offsets(&group, &topic), ends, "committed offsets equal the end offsets");
}

#[test]
fn sigterm_half_way_then_restart_skips_nothing() {
    let topic = unique("term");
    let group = unique("g-term");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 30_000, 100);
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");

    // Slow enough (about 5 s) to be stopped in the middle.
    let mut first = spawn_run(&group, &topic, &sink, &["--handler-delay", "1ms", "--commit", "batch:500"]);
    wait_for("a third of the records", Duration::from_secs(60), || line_count(&sink) >= 10_000);
    let asked = Instant::now();
    sigterm(&first);
    let status = wait_exit(&mut first, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert!(asked.elapsed() < Duration::from_secs(15), "shutdown took {:?}", asked.elapsed());
    let first_run = line_count(&sink);
    assert!(first_run < 30_000, "stopped half-way, not at the end ({first_run})");
    // The final commit covers what the first run finished: nothing it finished is lost,
    // and nothing beyond what it finished was committed.
    let committed = committed_offsets(&group, &topic);
    let seen_first = seen_in_sink(&sink);
    for (&p, &c) in &committed {
        assert!(c >= 0, "partition {p} committed at shutdown");
        for o in 0..c {
            assert!(seen_first.contains_key(&(p, o)), "committed past unprocessed {p}@{o}");
        }
    }

    let mut second = spawn_run(&group, &topic, &sink, &["--stop-at-end"]);
    assert!(wait_exit(&mut second, Duration::from_secs(60)).success());
    let seen = seen_in_sink(&sink);
    assert_all_seen(&seen.keys().cloned().collect(), &ends);
    let repeats: usize = seen.values().map(|&n| n - 1).sum();
    assert!(repeats < 2_000, "a graceful stop repeats little ({repeats})");
    assert_eq!(committed_offsets(&group, &topic), ends);
}

/// A second instance joins mid-stream: both get partitions, nothing is missed.
fn second_instance_joins(extra: &[&str]) {
    let topic = unique("join");
    let group = unique("g-join");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 30_000, 100);
    let dir = tempfile::tempdir().unwrap();
    let (sink_a, sink_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let mut args = vec!["--stop-at-end", "--handler-delay", "1ms"];
    args.extend_from_slice(extra);

    let mut a = spawn_run(&group, &topic, &sink_a, &args);
    wait_for("instance A to start processing", Duration::from_secs(60), || line_count(&sink_a) >= 2_000);
    let mut b = spawn_run(&group, &topic, &sink_b, &args);
    let status_b = wait_exit(&mut b, Duration::from_secs(120));
    let status_a = wait_exit(&mut a, Duration::from_secs(120));
    assert!(status_a.success() && status_b.success(), "A: {status_a}, B: {status_b}");

    let (seen_a, seen_b) = (seen_in_sink(&sink_a), seen_in_sink(&sink_b));
    assert!(!seen_b.is_empty(), "the second instance got partitions");
    let a_after_join: BTreeSet<i32> = seen_a.keys().map(|(p, _)| *p).collect();
    assert!(!a_after_join.is_empty());
    let all: BTreeSet<(i32, i64)> = seen_a.keys().chain(seen_b.keys()).cloned().collect();
    assert_all_seen(&all, &ends);
    assert_eq!(committed_offsets(&group, &topic), ends);
}

#[test]
fn second_instance_joins_with_range() {
    second_instance_joins(&["-X", "partition.assignment.strategy=range"]);
}

#[test]
fn second_instance_joins_with_cooperative_sticky() {
    second_instance_joins(&["-X", "partition.assignment.strategy=cooperative-sticky"]);
}

#[test]
fn second_instance_joins_with_the_kip848_consumer_protocol() {
    second_instance_joins(&["-X", "group.protocol=consumer"]);
}
