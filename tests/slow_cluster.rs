//! A cluster slow to answer offset requests must not stall the poll thread
//! (which would stop fetching and, past max.poll.interval.ms, cost the member
//! its partitions): the committed offsets and ends of new partitions are read
//! elsewhere while records keep flowing.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn slow_offset_answers_do_not_stall_the_poll_thread() {
    let topic = unique("slow-offsets");
    create_topic(&topic, 3);
    produce_with_kcat(&topic, 3000, 50);
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.jsonl");
    let mut child = run_to_end(&unique("g-slow"), &topic, dir.path())
        .args(["--json", "--handler-delay", "2ms"])
        .env("KDECK_FAILPOINT", "slow-offsets:6000")
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let snapshots: Vec<serde_json::Value> =
        std::fs::read_to_string(&status).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    // While the offsets were outstanding (the first 6 s after the assignment), the
    // poll thread kept publishing fresh snapshots and records kept being processed.
    let early: Vec<&serde_json::Value> = snapshots.iter().filter(|s| s["partitions"].as_array().is_some_and(|p| !p.is_empty())).take(5).collect();
    assert!(early.len() >= 4, "{} snapshots with partitions", early.len());
    for pair in early.windows(2) {
        let gap = pair[1]["captured_at_ms"].as_u64().unwrap() - pair[0]["captured_at_ms"].as_u64().unwrap();
        assert!(gap < 2000, "the poll thread stalled for {gap} ms");
    }
    let (first, last) = (early[0]["processed"].as_u64().unwrap(), early[early.len() - 1]["processed"].as_u64().unwrap());
    assert!(last > first, "records flowed while the offsets were outstanding ({first} -> {last})");
}
