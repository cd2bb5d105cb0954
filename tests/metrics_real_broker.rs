//! `--metrics`: the real binary's `/metrics` scraped and parsed by an
//! independent parser (the Prometheus project's Python client, from Debian's
//! packages), from `run`, `watch` and `demo`. A malformed line fails the
//! parse; a series twice fails the test.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// (name, labels as `k=v,…` sorted) → value.
type Series = BTreeMap<(String, String), f64>;

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
seen = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        key = s.name + "|" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        if key in seen:
            sys.exit(f"duplicate series {key}")
        seen[key] = s.value
print(json.dumps(seen))
"#;

/// Scrapes `url` and parses it; panics with the parser's words if it fails.
fn scrape(url: &str) -> Series {
    let body = ureq::get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}")).into_body().read_to_string().unwrap();
    let mut python = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-prometheus-client (scripts/test installs it)");
    python.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused /metrics: {}\n{body}", String::from_utf8_lossy(&out.stderr));
    let parsed: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(k, v)| {
            let (name, labels) = k.split_once('|').unwrap();
            ((name.to_string(), labels.to_string()), v)
        })
        .collect()
}

fn value(series: &Series, name: &str, labels: &str) -> Option<f64> {
    series.get(&(name.to_string(), labels.to_string())).copied()
}

/// The address the child printed on stderr (`kdeck: metrics on http://…/metrics`).
fn metrics_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("kdeck ended before serving metrics").unwrap();
        if let Some(url) = line.strip_prefix("kdeck: metrics on ") {
            break url.to_string();
        }
    };
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    url
}

/// `kdeck ARGS --metrics 127.0.0.1:0` with its log (and audit, history) in
/// `dir`; its metrics URL.
fn spawn_with_metrics(args: &[&str], dir: &std::path::Path) -> (Killed, String) {
    let mut child = Killed(
        kdeck()
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .arg("--log-file")
            .arg(dir.join("kdeck.log"))
            .arg(if args[0] == "watch" { "--history" } else { "--audit" })
            .arg(dir.join("store.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let url = metrics_url(&mut child.0);
    (child, url)
}

#[test]
fn run_serves_its_counters_lag_and_commit_latency() {
    let topic = unique("metrics-run");
    create_topic(&topic, 2);
    produce_with_kcat(&topic, 200, 50);
    let group = unique("metrics-run-g");
    let dir = tempfile::tempdir().unwrap();
    let (_child, url) = spawn_with_metrics(&["run", "--headless", "-b", &brokers(), "-G", &group, "-t", &topic, "--commit", "batch:10"], dir.path());
    let g = format!("group={group}");
    let mut last = Series::new();
    wait_for("every record processed and committed", Duration::from_secs(60), || {
        last = scrape(&url);
        value(&last, "kdeck_records_processed_total", &g) == Some(200.0)
            && (0..2).all(|p| value(&last, "kdeck_consumer_lag_records", &format!("{g},partition={p},topic={topic}")) == Some(0.0))
    });
    assert_eq!(value(&last, "kdeck_records_consumed_total", &g), Some(200.0));
    assert_eq!(value(&last, "kdeck_records_dead_lettered_total", &g), Some(0.0));
    assert_eq!(value(&last, "kdeck_rebalances_total", &g), Some(1.0));
    let commits = value(&last, "kdeck_commits_total", &g).unwrap();
    assert!(commits >= 1.0);
    let timed = value(&last, "kdeck_commit_duration_seconds_count", &g).unwrap();
    assert!(timed >= commits, "every accepted commit was timed: {timed} < {commits}");
    assert_eq!(value(&last, "kdeck_commit_duration_seconds_bucket", &format!("{g},le=+Inf")), Some(timed));
    let ends = end_offsets(&topic);
    for (p, end) in ends {
        assert_eq!(value(&last, "kdeck_consumer_committed_offset", &format!("{g},partition={p},topic={topic}")), Some(end as f64));
    }
}

#[test]
fn watch_serves_lag_in_records_and_seconds_and_one_verdict_per_group() {
    let topic = unique("metrics-watch");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 30, 20);
    let group = unique("metrics-watch-g");
    commit_offset(&group, &topic, 0, 10);
    let dir = tempfile::tempdir().unwrap();
    let (_child, url) = spawn_with_metrics(&["watch", "--json", "-b", &brokers(), "-G", &group], dir.path());
    let labels = format!("group={group},partition=0,topic={topic}");
    let mut last = Series::new();
    wait_for("the first sample", Duration::from_secs(30), || {
        last = scrape(&url);
        value(&last, "kdeck_consumer_lag_records", &labels).is_some()
    });
    assert_eq!(value(&last, "kdeck_consumer_lag_records", &labels), Some(20.0));
    assert_eq!(value(&last, "kdeck_consumer_committed_offset", &labels), Some(10.0));
    assert_eq!(value(&last, "kdeck_partition_end_offset", &labels), Some(30.0));
    let behind = value(&last, "kdeck_consumer_lag_seconds", &labels).unwrap();
    assert!((0.0..120.0).contains(&behind), "{behind}");
    assert_eq!(value(&last, "kdeck_consumer_group_members", &format!("group={group}")), Some(0.0));
    let verdicts: Vec<(&str, f64)> = ["OK", "WARN", "REWIND", "STALL", "STOP"]
        .iter()
        .map(|v| (*v, value(&last, "kdeck_consumer_group_verdict", &format!("group={group},verdict={v}")).unwrap()))
        .collect();
    assert_eq!(verdicts.iter().map(|(_, x)| x).sum::<f64>(), 1.0, "{verdicts:?}");
    assert_eq!(verdicts[0], ("OK", 1.0), "one recent commit while behind: {verdicts:?}");
}

#[test]
fn demo_serves_metrics_and_a_bad_address_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, url) = spawn_with_metrics(&["demo", "--headless", "--rate", "500", "--duration", "60s"], dir.path());
    wait_for("demo records consumed", Duration::from_secs(60), || {
        scrape(&url).iter().any(|((name, _), v)| name == "kdeck_records_consumed_total" && *v > 0.0)
    });
    let out = kdeck()
        .args(["run", "-b", &brokers(), "-G", "g", "-t", "t", "--headless", "--metrics", "127.0.0.1:notaport"])
        .arg("--log-file")
        .arg(dir.path().join("bad.log"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot serve metrics on 127.0.0.1:notaport"), "{err}");
}
