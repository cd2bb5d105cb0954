//! Replaying dead-lettered records (reprocess and republish), the replay-once
//! rule, and redriving dead-letter topics written by Spring, Karafka and Connect.

mod common;

use std::process::Output;

use common::*;
use rdkafka::message::Message;

/// An exec handler that refuses (permanently) values containing "poison" while
/// the flag file exists, and logs every record it accepts.
const HANDLER: &str = r#"
import json, os, sys
flag, log = sys.argv[1], open(sys.argv[2], "a")
for line in sys.stdin:
    r = json.loads(line)
    if "poison" in json.dumps(r["value"]) and os.path.exists(flag):
        print("fail: poisoned", flush=True); continue
    log.write(json.dumps(r["value"]) + "\n"); log.flush()
    print("ok", flush=True)
"#;

struct Setup {
    dir: tempfile::TempDir,
    topic: String,
    dlq: String,
}

impl Setup {
    fn sink(&self) -> String {
        let d = self.dir.path();
        format!("exec:python3 -u {} {} {}", d.join("h.py").display(), d.join("flag").display(), d.join("sink.log").display())
    }
    fn audit(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.sqlite")
    }
    fn sink_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default().lines().map(String::from).collect()
    }
    fn run(&self, group: &str) {
        let out = run_to_end(group, &self.topic, self.dir.path())
            .args(["--format", "json", "--dlq", &self.dlq, "--sink", &self.sink()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kdeck: {}", String::from_utf8_lossy(&out.stderr));
    }
    fn replay(&self, args: &[&str]) -> Output {
        kdeck()
            .args(["dlq", "replay", "-b", &brokers(), "--dlq", &self.dlq, "--format", "json", "--sink", &self.sink()])
            .arg("--audit")
            .arg(self.audit())
            .args(args)
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn replays_land_once_in_the_sink_are_audited_and_a_second_needs_force() {
    let s = Setup { dir: tempfile::tempdir().unwrap(), topic: unique("replay"), dlq: String::new() };
    let s = Setup { dlq: format!("{}.dlq", s.topic), ..s };
    create_topic(&s.topic, 2);
    create_topic(&s.dlq, 1);
    std::fs::write(s.dir.path().join("h.py"), HANDLER).unwrap();
    std::fs::write(s.dir.path().join("flag"), "").unwrap();
    produce_raw(
        &s.topic,
        &[
            (0, Some(b"a"), Some(br#"{"n":1}"#), vec![]),
            (0, Some(b"b"), Some(br#"{"n":2,"poison":"reprocess me"}"#), vec![]),
            (1, Some(b"c"), Some(br#"{"n":3,"poison":"republish me"}"#), vec![]),
            (1, Some(b"d"), Some(br#"{"n":4}"#), vec![("trace", b"t-4")]),
        ],
    );
    let group = unique("g-replay");
    s.run(&group);
    assert_eq!(s.sink_lines().len(), 2, "the two poisoned records went to the dead-letter topic");
    let dead = read_topic(&s.dlq);
    assert_eq!(dead.len(), 2);
    let (to_reprocess, to_republish) = if dead[0].payload().unwrap().windows(9).any(|w| w == b"reprocess") {
        (&dead[0], &dead[1])
    } else {
        (&dead[1], &dead[0])
    };

    // The handler is fixed: the poison no longer fails.
    std::fs::remove_file(s.dir.path().join("flag")).unwrap();
    let at = |m: &rdkafka::message::OwnedMessage| (m.partition().to_string(), m.offset().to_string());

    // Reprocess in-process: the record goes through the pipeline into the sink.
    let (p, o) = at(to_reprocess);
    let out = s.replay(&["--mode", "reprocess", "--partition", &p, "--offset", &o]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.sink_lines().iter().any(|l| l.contains("reprocess me")));
    // Twice is refused without --force; nothing lands again.
    let again = s.replay(&["--mode", "reprocess", "--partition", &p, "--offset", &o]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("replayed 1 time(s) already; use --force"), "{}", stderr(&again));
    assert_eq!(s.sink_lines().iter().filter(|l| l.contains("reprocess me")).count(), 1, "exactly once in the sink");

    // Republish: back to its source topic and partition; the consumer group processes it.
    let (p, o) = at(to_republish);
    let out = s.replay(&["--mode", "republish", "--partition", &p, "--offset", &o]);
    assert!(out.status.success(), "{}", stderr(&out));
    let republished = read_topic(&s.topic).into_iter().find(|m| m.offset() == 2 && m.partition() == 1).expect("republished");
    assert!(String::from_utf8_lossy(republished.payload().unwrap()).contains("republish me"));
    assert_eq!(header(&republished, "kdeck.error.message"), None, "dead-letter headers are not carried back");
    s.run(&group);
    assert_eq!(s.sink_lines().iter().filter(|l| l.contains("republish me")).count(), 1, "exactly once in the sink");

    // Both replays and the refusal's absence of effect are in the audit store.
    let out = kdeck().args(["audit", "list", "--kind", "replay", "--audit"]).arg(s.audit()).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.contains("reprocess") && listing.contains("republish"), "{listing}");
    let export = kdeck().args(["audit", "export", "--json", "--audit"]).arg(s.audit()).output().unwrap();
    let kinds: Vec<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "dead_letter").count(), 2);
    assert!(kinds.iter().any(|k| k == "rebalance"));
    let first_id = listing.split_whitespace().next().unwrap();
    let show = kdeck().args(["audit", "show", first_id, "--audit"]).arg(s.audit()).output().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(event["kind"], "replay");
    assert_eq!(event["detail"]["ok"], true);

    // --force replays again, and that is audited too.
    let (p, o) = at(to_reprocess);
    let forced = s.replay(&["--mode", "reprocess", "--partition", &p, "--offset", &o, "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
}

#[test]
fn dead_letter_topics_of_spring_karafka_and_connect_are_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let source = unique("foreign-src");
    let dlq = unique("foreign-dlq");
    create_topic(&source, 3);
    create_topic(&dlq, 1);
    produce_raw(
        &dlq,
        &[
            (
                0,
                Some(b"s"),
                Some(b"from spring"),
                vec![
                    ("kafka_dlt-original-topic", source.as_bytes()),
                    ("kafka_dlt-original-partition", &1i32.to_be_bytes()),
                    ("kafka_dlt-original-offset", &17i64.to_be_bytes()),
                    ("kafka_dlt-exception-fqcn", b"java.lang.IllegalStateException"),
                    ("kafka_dlt-exception-message", b"spring said no"),
                ],
            ),
            (0, Some(b"k"), Some(b"from karafka"), vec![("source_topic", source.as_bytes()), ("source_partition", b"2"), ("source_offset", b"5")]),
            (
                0,
                Some(b"c"),
                Some(b"from connect"),
                vec![
                    ("__connect.errors.topic", source.as_bytes()),
                    ("__connect.errors.partition", b"0"),
                    ("__connect.errors.offset", b"9"),
                    ("__connect.errors.exception.message", b"connect said no"),
                ],
            ),
        ],
    );
    let list = kdeck().args(["dlq", "list", "-b", &brokers(), "--dlq", &dlq]).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    for expect in ["(spring)", "(karafka)", "(connect)", "spring said no", "connect said no", &format!("{source}[1]@17")] {
        assert!(listing.contains(expect), "{expect} in:\n{listing}");
    }

    let out = kdeck()
        .args(["dlq", "replay", "-b", &brokers(), "--dlq", &dlq, "--mode", "republish", "--audit"])
        .arg(dir.path().join("audit.sqlite"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back: Vec<(i32, String)> = read_topic(&source)
        .iter()
        .map(|m| (m.partition(), String::from_utf8_lossy(m.payload().unwrap()).into_owned()))
        .collect();
    assert_eq!(
        back,
        vec![(0, "from connect".to_string()), (1, "from spring".to_string()), (2, "from karafka".to_string())],
        "each went back to the partition its headers name"
    );
    let show = kdeck().args(["dlq", "show", "-b", &brokers(), "--dlq", &dlq, "--partition", "0", "--offset", "0"]).output().unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("header kafka_dlt-exception-fqcn: java.lang.IllegalStateException") && shown.contains("from spring"), "{shown}");

    // A time range selects by when the record was dead-lettered.
    let hour = std::time::Duration::from_secs(3600);
    let now = std::time::SystemTime::now();
    let (hour_ago, in_an_hour) =
        (humantime::format_rfc3339_seconds(now - hour).to_string(), humantime::format_rfc3339_seconds(now + hour).to_string());
    let count = |args: &[&str]| {
        let o = kdeck().args(["dlq", "list", "-b", &brokers(), "--dlq", &dlq]).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert_eq!(count(&["--since", &hour_ago]), 3);
    assert_eq!(count(&["--since", &in_an_hour]), 0);
    assert_eq!(count(&["--until", &hour_ago]), 0);
    assert_eq!(count(&["--since", &hour_ago, "--until", &in_an_hour, "--source-topic", &source]), 3);

    // Only the Spring record matches a filter on its exception class.
    let filtered = kdeck()
        .args(["dlq", "list", "-b", &brokers(), "--dlq", &dlq, "--error", "IllegalState"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&filtered.stdout).lines().count(), 1);
}
