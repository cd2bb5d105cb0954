//! Headers are bytes: a header key that is not UTF-8 (legal in Kafka) goes through
//! the sink, the dead-letter copy, the audit store and `kdeck dlq show` intact.
//! And a worker that dies never does so silently: the partition is blocked with
//! the reason, nothing past it is committed, and the process exits non-zero.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use kdeck::engine::headers;
use rdkafka::message::Message;

const ODD_KEY: &[u8] = b"\xff\xfe";
const ODD_VALUE: &[u8] = b"v\x80";

/// Produces with kcat, which passes header bytes through as given.
fn produce_with_odd_header(topic: &str, values: &[&str]) {
    let mut header = ODD_KEY.to_vec();
    header.push(b'=');
    header.extend_from_slice(ODD_VALUE);
    let mut child = Command::new("kcat")
        .args(["-P", "-b", &brokers(), "-t", topic, "-p", "0", "-H"])
        .arg(OsStr::from_bytes(&header))
        .args(["-H", "plain=text"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for v in values {
            writeln!(stdin, "{v}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_header_key_that_is_not_utf8_is_carried_byte_for_byte() {
    let (topic, dlq) = topic_with_dlq("odd-headers");
    produce_with_odd_header(&topic, &[r#"{"n":1}"#, "not json", r#"{"n":3}"#]);
    let group = unique("g-odd");
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let out = run_to_end(&group, &topic, dir.path())
        .args(["--format", "json", "--sink"])
        .arg(format!("jsonl:{}", sink.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "kdeck failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed_offsets(&group, &topic)[&0], 3, "all three finished and committed");

    // The sink: text for people, the exact bytes beside it.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&sink).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["headers"]["plain"], "text");
    let exact = headers::from_base64(&lines[0]["headers_b64"]).expect("exact headers in base64");
    assert!(exact.contains(&(ODD_KEY.to_vec(), Some(ODD_VALUE.to_vec()))), "{exact:?}");

    // The dead-letter copy keeps the original header bytes.
    let letters = read_topic(&dlq);
    assert_eq!(letters.len(), 1);
    let raw = headers::of(&letters[0]);
    assert!(raw.iter().any(|h| h.key == ODD_KEY && h.value == Some(ODD_VALUE)), "{raw:?}");
    assert_eq!(headers::last(&letters[0], "kdeck.source.offset"), Some(&b"1"[..]));
    assert_eq!(letters[0].payload(), Some(&b"not json"[..]));

    // The audit store has the exact bytes too.
    let audit = kdeck().args(["audit", "export", "--json", "--audit"]).arg(dir.path().join("audit.sqlite")).output().unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    let dead = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|e| e["kind"] == "dead_letter").unwrap();
    let exact = headers::from_base64(&dead["detail"]["headers_b64"]).expect("audit keeps exact headers");
    assert!(exact.contains(&(ODD_KEY.to_vec(), Some(ODD_VALUE.to_vec()))));

    // `kdeck dlq show` prints it for a person: lossy text and the bytes in base64.
    let show = kdeck().args(["dlq", "show", "-b", &brokers(), "--dlq", &dlq, "--partition", "0", "--offset", "0"]).output().unwrap();
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("header \u{fffd}\u{fffd} (base64 //4=): v\u{fffd} (base64 doA=)"), "{shown}");
}

#[test]
fn a_worker_that_dies_blocks_its_partition_and_the_run_fails() {
    let topic = unique("worker-death");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 20, 50);
    let group = unique("g-death");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = run_to_end(&group, &topic, dir.path());
    cmd.arg("--json").env("KDECK_FAILPOINT", "panic-worker").env("RUST_BACKTRACE", "0");
    let (status, last, stderr) = run_json(cmd, Duration::from_secs(60));
    assert!(!status.success(), "a run that cannot make progress fails");
    assert!(stderr.contains(&format!("{topic}[0] cannot advance: its worker crashed at offset 0")), "{stderr}");
    let p = &last["partitions"][0];
    assert_eq!(p["state"], "blocked", "{p}");
    assert!(p["blocked"].as_str().unwrap().contains("failpoint panic-worker"), "{p}");
    assert_eq!(p["committed"], serde_json::Value::Null);
    assert_eq!(p["lag"], 20, "nothing committed: all 20 records wait, never lag 0");
    assert!(committed_offsets(&group, &topic)[&0] <= 0, "nothing past the crashed record is committed");
}
