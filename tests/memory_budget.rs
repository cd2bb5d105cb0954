//! Memory is bounded by bytes, not only by record count: huge records with a
//! slow handler stay within the budget (`--max-queue-bytes`, default 64 MiB),
//! and records without a key are not held behind a parked one under
//! `--ordering key`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The peak resident set of a running process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn huge_records_with_a_slow_handler_stay_within_the_memory_budget() {
    let topic = unique("huge");
    create_topic(&topic, 2);
    let payload = vec![b'x'; 900_000];
    let records: Vec<_> = (0..400).map(|i| (i % 2, None, Some(&payload[..]), vec![])).collect();
    produce_raw(&topic, &records);
    let group = unique("g-huge");
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_to_end(&group, &topic, dir.path())
        .args(["--handler-delay", "15ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "kdeck did not finish 360 MB in time");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", read_all(child.stderr.take()));
    assert_eq!(committed_offsets(&group, &topic).values().sum::<i64>(), 400, "everything processed and committed");
    let peak_mib = peak / 1024;
    eprintln!("peak RSS {peak_mib} MiB for 360 MB of 900 KB records");
    assert!(peak_mib < 250, "peak RSS {peak_mib} MiB: the byte budget does not hold");
}

#[test]
fn records_without_a_key_do_not_wait_behind_a_parked_one() {
    let topic = unique("keyless");
    create_topic(&topic, 1);
    let mut values = vec!["{\"poison\":true}".to_string()];
    values.extend((0..10).map(|i| format!("{{\"n\":{i}}}")));
    let records: Vec<_> = values.iter().map(|v| (0, None, Some(v.as_bytes()), vec![])).collect();
    produce_raw(&topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let handler = format!(
        "exec:while IFS= read -r line; do case \"$line\" in *poison*) echo 'retry: not yet';; *) printf '%s\\n' \"$line\" >> {}; echo ok;; esac; done",
        out.display()
    );
    let mut child = run_to_end(&unique("g-keyless"), &topic, dir.path())
        .args(["--format", "json", "--ordering", "key", "--retry-backoff", "30s..30s", "--sink", &handler])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The poison record waits 15–30 s for its next attempt; the others must not.
    wait_for("the ten keyless records behind the parked one", Duration::from_secs(12), || line_count(&out) == 10);
    assert!(!std::fs::read_to_string(&out).unwrap().contains("poison"), "the poison record is still parked");
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(30));
}
