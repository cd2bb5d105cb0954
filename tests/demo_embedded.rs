//! `kdeck demo` on the embedded cluster: runs on its own, processes records,
//! commits keep advancing, and it exits by itself.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn demo_headless_reports_processed_records_and_advancing_commits() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("status.jsonl");
    let mut child = kdeck()
        .args(["demo", "--headless", "--json", "--duration", "6s", "--rate", "1000", "--log-file"])
        .arg(dir.path().join("demo.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "demo exited with {status}");
    let out = std::fs::read_to_string(&stdout).unwrap();
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 4, "a JSON line a second: {}", lines.len());
    let last = lines.last().unwrap();
    assert_eq!(last["engine_state"], "stopped");
    assert!(last["processed"].as_u64().unwrap() >= 2_000, "processed {}", last["processed"]);
    assert_eq!(last["partitions"].as_array().unwrap().len(), 6);
    for key in ["consumed", "failed", "lag_total", "commit_strategy", "rebalance_state"] {
        assert!(last.get(key).is_some(), "{key} in the JSON status");
    }
    for p in last["partitions"].as_array().unwrap() {
        for key in ["topic", "partition", "position", "committed", "high_watermark", "lag", "paused"] {
            assert!(p.get(key).is_some(), "{key} in the partition status");
        }
    }
    // Commits advance while it runs: the summed committed offsets grow from line to line.
    let committed = |v: &serde_json::Value| -> i64 {
        v["partitions"].as_array().unwrap().iter().map(|p| p["committed"].as_i64().unwrap_or(0)).sum()
    };
    let sums: Vec<i64> = lines.iter().map(committed).collect();
    let rises = sums.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(rises >= 3, "committed offsets advanced repeatedly: {sums:?}");
    assert!(last["commits"].as_u64().unwrap() >= 3);

    // The traffic carries trouble: bad records dead-lettered, flaky ones retried.
    let failures = &last["failures"];
    for kind in ["decode/permanent", "validate/permanent", "handle/retryable"] {
        assert!(failures[kind].as_u64().unwrap_or(0) > 0, "{kind} in {failures}");
    }
    assert!(last["dead_lettered"].as_u64().unwrap() > 0);
    assert!(!last["dead_letters"].as_array().unwrap().is_empty());
    assert!(lines.iter().any(|l| !l["retry_queue"].as_array().unwrap().is_empty()), "the retry queue was seen in use");
}
