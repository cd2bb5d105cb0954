//! The processing pipeline against the real broker: bad input goes to the
//! dead-letter topic with its source, good input to the sink, failures are
//! retried in order, a refusing dead-letter topic holds the partition back.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rdkafka::message::Message;

/// Produces one record with kcat (an independent client) to partition 0: `key<TAB>value`
/// on stdin, so an empty value stays empty and, with `-Z`, `None` becomes a tombstone.
fn kcat_one(topic: &str, key: &str, value: Option<&[u8]>, header: Option<(&str, &[u8])>) {
    let value = value.unwrap_or_default();
    assert!(!value.contains(&b'\n'), "line mode: no newline in values");
    let mut c = Command::new("kcat");
    c.args(["-P", "-b", &brokers(), "-t", topic, "-p", "0", "-K", "\t"]).stdin(Stdio::piped()).stderr(Stdio::piped());
    if value.is_empty() && header.is_none() && key.ends_with("null") {
        c.arg("-Z");
    }
    if let Some((k, v)) = header {
        let mut kv = format!("{k}=").into_bytes();
        kv.extend_from_slice(v);
        c.arg("-H").arg(std::ffi::OsStr::from_bytes(&kv));
    }
    let mut child = c.spawn().unwrap();
    let mut line = format!("{key}\t").into_bytes();
    line.extend_from_slice(value);
    line.push(b'\n');
    child.stdin.take().unwrap().write_all(&line).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kcat: {}", String::from_utf8_lossy(&out.stderr));
}

const SCHEMA: &str = r#"{"type":"object","required":["id","amount"],
  "properties":{"id":{"type":"integer"},"amount":{"type":"number","minimum":0}}}"#;

#[test]
fn bad_inputs_go_to_the_dead_letter_topic_and_good_ones_to_the_sink() {
    let topic = unique("corpus");
    let dlq = format!("{topic}.dlq");
    let group = unique("g-corpus");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let dir = tempfile::tempdir().unwrap();
    let registry = fake_registry(vec![(1, "corpus-value", "JSON", SCHEMA.to_string())]);

    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let big = format!(r#"{{"id":100,"amount":1,"pad":"{}"}}"#, "x".repeat(900 * 1024));
    let mut framed_unknown = vec![0u8, 0, 0, 0x27, 0x0f];
    framed_unknown.extend_from_slice(br#"{"id":1,"amount":1}"#);
    let mut framed_known = vec![0u8, 0, 0, 0, 1];
    framed_known.extend_from_slice(br#"{"id":7,"amount":7}"#);
    let mut wrong_magic = vec![1u8, 0, 0, 0, 1];
    wrong_magic.extend_from_slice(br#"{"id":1,"amount":1}"#);
    // (value, header, good?, stage of the failure when bad)
    let corpus: Vec<(Option<Vec<u8>>, Option<(&str, &[u8])>, Option<&str>)> = vec![
        (Some(br#"{"id":1,"amount":10}"#.to_vec()), None, None),
        (Some(br#"{"id":2,"amount":"#.to_vec()), None, Some("decode")), // malformed JSON
        (Some(br#"{"id":3,"amount":30}"#.to_vec()), None, None),
        (Some(b"\xff\xfe{\"id\":4}".to_vec()), None, Some("decode")), // invalid UTF-8
        (Some(Vec::new()), None, Some("decode")),                     // empty value
        (None, None, Some("decode")),                                 // tombstone
        (Some(wrong_magic), None, Some("decode")),                    // Confluent magic byte wrong
        (Some(framed_unknown), None, Some("decode")),                 // unknown schema id 9999
        (Some(br#"{"id":9,"amount":-5}"#.to_vec()), None, Some("validate")), // violates the schema
        (Some(deep.into_bytes()), None, Some("decode")),              // 5000 levels deep
        (Some(big.into_bytes()), None, None),                         // 900 KB, valid
        (Some(br#"{"id":11,"amount":11}"#.to_vec()), Some(("trace", b"\xc3\x28\xff")), None), // non-UTF-8 header
        (Some(framed_known), None, None),                             // framed, known JSON schema
        (Some(br#"{"id":13,"amount":13}"#.to_vec()), None, None),
    ];
    for (n, (value, header, _)) in corpus.iter().enumerate() {
        // A key ending in "null" asks kcat for a tombstone when the value is empty.
        let key = if value.is_none() { format!("k{n}-null") } else { format!("k{n}") };
        kcat_one(&topic, &key, value.as_deref(), *header);
    }
    assert_eq!(end_offsets(&topic)[&0], corpus.len() as i64, "kcat produced every record");

    let db = dir.path().join("sink.sqlite");
    let out = run_to_end(&group, &topic, dir.path())
        .args(["--format", "json", "--schema-registry", &registry, "--dlq", &dlq])
        .arg("--schema")
        .arg(write(dir.path(), "schema.json", SCHEMA))
        .arg("--sink")
        .arg(format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "kdeck: {}", String::from_utf8_lossy(&out.stderr));

    let rows = sqlite_rows(&db, &topic);
    let good: Vec<i64> = corpus.iter().enumerate().filter(|c| c.1 .2.is_none()).map(|c| c.0 as i64).collect();
    assert_eq!(rows.keys().map(|k| k.1).collect::<Vec<_>>(), good, "every good record, and only those, in the sink");
    assert!(rows[&(0, 10)].len() > 900 * 1024);
    assert_eq!(rows[&(0, 12)], r#"{"amount":7,"id":7}"#);

    let dead = read_topic(&dlq);
    let bad: BTreeMap<i64, &str> = corpus.iter().enumerate().filter_map(|(n, c)| c.2.map(|s| (n as i64, s))).collect();
    assert_eq!(dead.len(), bad.len(), "every bad record, once");
    for m in &dead {
        let offset: i64 = header(m, "kdeck.source.offset").unwrap().parse().unwrap();
        assert_eq!(header(m, "kdeck.source.topic").unwrap(), topic);
        assert_eq!(header(m, "kdeck.source.partition").unwrap(), "0");
        assert_eq!(header(m, "kdeck.source.group").unwrap(), group);
        assert_eq!(header(m, "kdeck.error.stage").unwrap(), bad[&offset], "stage of offset {offset}");
        assert_eq!(header(m, "kdeck.error.class").unwrap(), "permanent");
        assert_eq!(header(m, "kdeck.error.attempts").unwrap(), "1", "permanent failures are not retried");
        assert!(header(m, "kdeck.source.timestamp").is_some() && header(m, "kdeck.error.at").is_some());
        assert!(String::from_utf8_lossy(m.key().unwrap()).starts_with(&format!("k{offset}")), "original key kept");
        assert_eq!(m.payload().map(<[u8]>::to_vec), corpus[offset as usize].0, "original value kept");
    }
    let messages: Vec<String> = dead.iter().map(|m| header(m, "kdeck.error.message").unwrap()).collect();
    for expect in ["malformed JSON", "UTF-8", "empty value", "tombstone", "magic byte", "unknown schema id 9999", "recursion limit"] {
        assert!(messages.iter().any(|m| m.contains(expect)), "{expect} in {messages:?}");
    }
    assert_eq!(committed_offsets(&group, &topic), end_offsets(&topic), "committed to the end");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An exec handler: `{"n":…, "fail":k}` answers `retry` k times, then `ok`;
/// `"always":"retry"` or `"always":"fail"` always does; each ok is logged in order.
const HANDLER: &str = r#"
import json, sys
seen = {}
log = open(sys.argv[1], "a")
for line in sys.stdin:
    r = json.loads(line)
    v = r["value"]
    n = v["n"]
    if v.get("always") == "retry":
        print("retry: still broken", flush=True); continue
    if v.get("always") == "fail":
        print("fail: cannot be handled", flush=True); continue
    seen[n] = seen.get(n, 0) + 1
    if seen[n] <= v.get("fail", 0):
        print("retry: transient %d" % seen[n], flush=True); continue
    log.write("%d %s %d\n" % (r["partition"], r["key"], n)); log.flush()
    print("ok", flush=True)
"#;

fn run_with_handler(topic: &str, dlq: &str, dir: &Path, ordering: &str, extra: &[&str]) -> Vec<(String, i64)> {
    let script = write(dir, "handler.py", HANDLER);
    let log = dir.join(format!("handled-{ordering}{}.log", extra.join("")));
    let group = unique("g-retry");
    let out = run_to_end(&group, topic, dir)
        .args(["--format", "json", "--dlq", dlq, "--ordering", ordering, "--retry-max", "3", "--retry-backoff", "20ms..100ms"])
        .arg("--sink")
        .arg(format!("exec:python3 -u {} {}", script.display(), log.display()))
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "kdeck: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed_offsets(&group, topic), end_offsets(topic));
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn transient_failures_are_retried_in_order_and_exhausted_ones_dead_lettered() {
    let (topic, dlq) = topic_with_dlq("retry");
    // Key a: record 1 fails twice, then works. Key b never waits for it under key ordering.
    let records: Vec<(&str, String)> = vec![
        ("a", r#"{"n":0}"#.into()),
        ("a", r#"{"n":1,"fail":2}"#.into()),
        ("b", r#"{"n":2}"#.into()),
        ("a", r#"{"n":3}"#.into()),
        ("b", r#"{"n":4}"#.into()),
        ("c", r#"{"n":5,"always":"retry"}"#.into()),
        ("d", r#"{"n":6,"always":"fail"}"#.into()),
        ("b", r#"{"n":7}"#.into()),
    ];
    let raw: Vec<_> = records.iter().map(|(k, v)| (0, Some(k.as_bytes()), Some(v.as_bytes()), vec![])).collect();
    produce_raw(&topic, &raw);
    let dir = tempfile::tempdir().unwrap();

    // Partition ordering: strictly in offset order, the flaky record included.
    let handled = run_with_handler(&topic, &dlq, dir.path(), "partition", &[]);
    let order: Vec<i64> = handled.iter().map(|h| h.1).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4, 7], "in order; 5 and 6 were dead-lettered");

    // Key ordering: b's records go on while a's record 1 is parked; a's stay in order.
    let handled = run_with_handler(&topic, &dlq, dir.path(), "key", &[]);
    let pos = |n: i64| handled.iter().position(|h| h.1 == n).unwrap();
    assert!(pos(2) < pos(1), "key b was not held back by key a: {handled:?}");
    assert!(pos(0) < pos(1) && pos(1) < pos(3), "key a stays in order: {handled:?}");
    assert!(pos(2) < pos(4) && pos(4) < pos(7), "key b stays in order: {handled:?}");

    // Both runs dead-lettered the same two records: 5 after 3 attempts, 6 at once.
    let dead = read_topic(&dlq);
    assert_eq!(dead.len(), 4);
    for m in dead {
        match header(&m, "kdeck.source.offset").unwrap().as_str() {
            "5" => {
                assert_eq!(header(&m, "kdeck.error.class").unwrap(), "retryable");
                assert_eq!(header(&m, "kdeck.error.attempts").unwrap(), "3");
                assert_eq!(header(&m, "kdeck.error.message").unwrap(), "still broken");
            }
            "6" => {
                assert_eq!(header(&m, "kdeck.error.stage").unwrap(), "handle");
                assert_eq!(header(&m, "kdeck.error.class").unwrap(), "permanent");
                assert_eq!(header(&m, "kdeck.error.attempts").unwrap(), "1");
            }
            other => panic!("unexpected dead letter for offset {other}"),
        }
    }
}

/// `--exec-batch 4`: the records go to the child four at a time; each answer
/// still decides its own record (the flaky one is retried, the bad ones are
/// dead-lettered), and every good record is handled once.
#[test]
fn a_batched_exec_sink_settles_each_record_by_its_own_answer() {
    let (topic, dlq) = topic_with_dlq("retry-batched");
    let values =
        [r#"{"n":0}"#, r#"{"n":1,"fail":2}"#, r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#, r#"{"n":5,"always":"retry"}"#, r#"{"n":6,"always":"fail"}"#, r#"{"n":7}"#];
    let raw: Vec<_> = values.iter().map(|v| (0, Some(&b"k"[..]), Some(v.as_bytes()), vec![])).collect();
    produce_raw(&topic, &raw);
    let dir = tempfile::tempdir().unwrap();
    let mut handled: Vec<i64> = run_with_handler(&topic, &dlq, dir.path(), "partition", &["--exec-batch", "4"]).iter().map(|h| h.1).collect();
    handled.sort();
    assert_eq!(handled, vec![0, 1, 2, 3, 4, 7], "each good record once");
    let mut dead: Vec<String> = read_topic(&dlq).iter().map(|m| header(m, "kdeck.source.offset").unwrap()).collect();
    dead.sort();
    assert_eq!(dead, vec!["5", "6"]);
}

/// A child that exits part-way through a run (after three answers, every
/// time): the records it did not answer are written again to the next child;
/// none is lost and none handled twice.
#[test]
fn a_batched_exec_child_that_exits_part_way_loses_nothing() {
    let topic = unique("exec-exits");
    let group = unique("g-exec-exits");
    create_topic(&topic, 1);
    let values: Vec<String> = (0..40).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let raw: Vec<_> = values.iter().map(|v| (0, None, Some(v.as_bytes()), vec![])).collect();
    produce_raw(&topic, &raw);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("handled.log");
    let script = write(
        dir.path(),
        "three.py",
        "import json, sys\nlog = open(sys.argv[1], 'a')\nfor i, line in enumerate(sys.stdin):\n    log.write('%d\\n' % json.loads(line)['value']['n']); log.flush()\n    print('ok', flush=True)\n    if i == 2: sys.exit(0)\n",
    );
    let out = run_to_end(&group, &topic, dir.path())
        .args(["--format", "json", "--exec-batch", "8", "--sink"])
        .arg(format!("exec:python3 -u {} {}", script.display(), log.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "kdeck: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed_offsets(&group, &topic), end_offsets(&topic));
    let mut handled: Vec<i64> = std::fs::read_to_string(&log).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    handled.sort();
    assert_eq!(handled, (0..40).collect::<Vec<_>>(), "every record handled once");
}

#[test]
fn a_refusing_dead_letter_topic_holds_the_partition_until_it_recovers() {
    let topic = unique("dlqdown");
    let dlq = format!("{topic}.dlq"); // not created yet: writes are refused
    let group = unique("g-dlqdown");
    create_topic(&topic, 1);
    let mut raw: Vec<(i32, Option<&[u8]>, Option<&[u8]>, Vec<(&str, &[u8])>)> = Vec::new();
    let good = br#"{"ok":true}"#;
    for _ in 0..5 {
        raw.push((0, None, Some(good), vec![]));
    }
    raw.push((0, None, Some(b"{broken"), vec![]));
    for _ in 0..5 {
        raw.push((0, None, Some(good), vec![]));
    }
    produce_raw(&topic, &raw);
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let status = dir.path().join("status.jsonl");
    let mut child = kdeck()
        .args(["run", "--headless", "--json", "--stop-at-end", "-b", &brokers(), "-G", &group, "-t", &topic])
        .args(["--format", "json", "--dlq", &dlq, "--dlq-timeout", "1s", "--commit", "per-message"])
        .arg("--sink")
        .arg(format!("jsonl:{}", sink.display()))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .arg("--log-file")
        .arg(dir.path().join("kdeck.log"))
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    wait_for("the partition to show as blocked", Duration::from_secs(60), || {
        std::fs::read_to_string(&status).unwrap_or_default().lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["partitions"][0]["state"] == "blocked" && v["partitions"][0]["paused"] == true
        })
    });
    let committed = committed_offsets(&group, &topic)[&0];
    assert!(committed <= 5, "nothing committed past the failing record at offset 5 (committed {committed})");
    assert!(child.try_wait().unwrap().is_none(), "still running, waiting for the dead-letter topic");
    assert_eq!(seen_in_sink(&sink).len(), 5, "the records before it were processed");

    create_topic(&dlq, 1);
    let status_code = wait_exit(&mut child, Duration::from_secs(90));
    assert!(status_code.success());
    assert_eq!(seen_in_sink(&sink).len(), 10, "every good record processed");
    let dead = read_topic(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "kdeck.source.offset").unwrap(), "5");
    assert_eq!(committed_offsets(&group, &topic)[&0], 11);
}

#[test]
fn a_dead_letter_that_can_never_be_written_says_so_and_moves_on_once_it_can() {
    let topic = unique("dlq-too-large");
    let dlq = format!("{topic}.dlq");
    create_topic(&topic, 1);
    create_topic_with(&dlq, 1, &[("max.message.bytes", "1000")]);
    let poison = vec![b'!'; 5_000]; // not JSON: dead-lettered, and too large for the topic
    let good = br#"{"n":1}"#;
    let mut records: Vec<_> = (0..5).map(|_| (0, None, Some(&good[..]), vec![])).collect();
    records.push((0, None, Some(&poison[..]), vec![]));
    records.extend((0..5).map(|_| (0, None, Some(&good[..]), vec![])));
    produce_raw(&topic, &records);
    let group = unique("g-dlq-too-large");
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.jsonl");
    let mut child = run_to_end(&group, &topic, dir.path())
        .args(["--json", "--format", "json", "--commit", "per-message"])
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the partition blocked with the reason", Duration::from_secs(30), || {
        last_snapshot(&status).is_some_and(|s| s["partitions"][0]["blocked"].as_str().is_some_and(|b| b.contains("can never be written as it is")))
    });
    wait_for("the records before it committed", Duration::from_secs(10), || committed_offsets(&group, &topic)[&0] == 5);
    assert_eq!(committed_offsets(&group, &topic)[&0], 5, "nothing committed past the record");

    // The operator raises the limit: the held record goes, the rest follow by themselves.
    alter_topic(&dlq, &[("max.message.bytes", "1000000")]);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert!(code.success());
    assert_eq!(committed_offsets(&group, &topic)[&0], 11);
    let dead = read_topic(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload().map(<[u8]>::len), Some(5_000));
}
