//! What a busy cluster does while kdeck consumes: partitions are added, topics
//! deleted, records removed by retention before they were read, a schema
//! registry that stops answering. Nothing is lost, nothing crashes, and what
//! happened is said.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn admin() -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime, AdminOptions) {
    let admin = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    (admin, rt, AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
}


fn errors(s: &serde_json::Value) -> String {
    s["errors"].as_array().map(|e| e.iter().map(|e| e["message"].as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

#[test]
fn partitions_added_while_consuming_are_picked_up() {
    let topic = unique("grow");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 100, 50);
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let mut child = spawn_run(&unique("g-grow"), &topic, &sink, &[]);
    wait_for("the first partition consumed", Duration::from_secs(30), || line_count(&sink) == 100);

    let (admin, rt, opts) = admin();
    for r in rt.block_on(admin.create_partitions([&NewPartitions::new(&topic, 3)], &opts)).unwrap() {
        r.unwrap();
    }
    let records: Vec<_> = (1..3).flat_map(|p| (0..50).map(move |_| (p, None, Some(&br#"{"late":true}"#[..]), vec![]))).collect();
    produce_raw(&topic, &records);
    // librdkafka sees the new partitions at its next metadata refresh (kdeck: every 10 s).
    wait_for("the added partitions consumed", Duration::from_secs(45), || line_count(&sink) == 200);
    let partitions: BTreeSet<i32> = seen_in_sink(&sink).keys().map(|(p, _)| *p).collect();
    assert_eq!(partitions, BTreeSet::from([0, 1, 2]));
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_topic_deleted_while_consuming_is_reported_without_a_crash() {
    let topic = unique("doomed");
    create_topic(&topic, 2);
    produce_with_kcat(&topic, 200, 50);
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let status = dir.path().join("status.jsonl");
    let mut child = kdeck()
        .args(["run", "--headless", "--json", "-b", &brokers(), "-G", &unique("g-doomed"), "-t", &topic])
        .arg("--sink")
        .arg(format!("jsonl:{}", sink.display()))
        .arg("--log-file")
        .arg(dir.path().join("kdeck.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("everything consumed", Duration::from_secs(30), || line_count(&sink) == 200);
    let (admin, rt, opts) = admin();
    for r in rt.block_on(admin.delete_topics(&[&topic], &opts)).unwrap() {
        r.unwrap();
    }
    wait_for("the deletion reported", Duration::from_secs(30), || {
        last_snapshot(&status).is_some_and(|s| {
            let e = errors(&s);
            e.contains(&topic) && (e.contains("nknown topic") || e.contains("does not exist"))
        })
    });
    assert!(child.try_wait().unwrap().is_none(), "still running: a deleted topic is not a crash");
    sigterm(&child);
    let code = wait_exit(&mut child, Duration::from_secs(30));
    assert!(code.code().is_some(), "exited, not killed by a signal: {code}");
    assert_eq!(line_count(&sink), 200, "nothing processed twice or invented");
}

#[test]
fn records_removed_by_retention_before_they_were_read_are_skipped_and_said() {
    let topic = unique("retention");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 1000, 50);
    let group = unique("g-retention");
    // The group had read up to 100 when retention removed everything below 500.
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", &group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(100)).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
    let (admin, rt, opts) = admin();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(&topic, 0, Offset::Offset(500)).unwrap();
    rt.block_on(admin.delete_records(&cut, &opts)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let out = run_to_end(&group, &topic, dir.path())
        .args(["--json", "--sink"])
        .arg(format!("jsonl:{}", sink.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Vec<i64> = seen_in_sink(&sink).keys().map(|(_, o)| *o).collect();
    assert_eq!(seen, (500..1000).collect::<Vec<_>>(), "the documented reset: from the log start, every record once");
    assert_eq!(committed_offsets(&group, &topic)[&0], 1000);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let e = errors(&last);
    assert!(e.contains("offset reset") && e.contains("records skipped"), "the skipped range is said: {e}");
}

#[test]
fn a_schema_registry_that_times_out_holds_the_partition_and_dead_letters_nothing() {
    let (topic, dlq) = topic_with_dlq("registry-down");
    // Confluent framing: magic 0, schema id 1, then a JSON value.
    let value = [&[0u8, 0, 0, 0, 1][..], br#"{"n":1}"#].concat();
    produce_raw(&topic, &(0..5).map(|_| (0, None, Some(&value[..]), vec![])).collect::<Vec<_>>());

    // A registry that answers kdeck's check at start, then never answers its
    // first request for a schema (kdeck gives up after 10 s), then answers 503
    // four times, then serves the schema.
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    std::thread::spawn(move || {
        let mut hung = Vec::new();
        let schema_requests = server.incoming_requests().filter_map(|req| {
            if req.url() == "/subjects" {
                let _ = req.respond(tiny_http::Response::from_string("[]"));
                return None;
            }
            Some(req)
        });
        for (n, req) in schema_requests.enumerate() {
            match n {
                0 => hung.push(req), // held open, never answered
                1..=4 => {
                    let _ = req.respond(tiny_http::Response::from_string("busy").with_status_code(503));
                }
                _ => {
                    let schema = serde_json::json!({"schemaType": "JSON", "schema": "{\"type\":\"object\"}"});
                    let _ = req.respond(tiny_http::Response::from_string(schema.to_string()));
                }
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.jsonl");
    let mut child = run_to_end(&unique("g-registry"), &topic, dir.path())
        .args(["--json", "--format", "json", "--schema-registry", &url])
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the partition held while the registry is down", Duration::from_secs(30), || {
        last_snapshot(&status)
            .is_some_and(|s| s["partitions"][0]["blocked"].as_str().is_some_and(|b| b.contains("decode unavailable: schema registry")))
    });
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert!(code.success());
    let last = last_snapshot(&status).unwrap();
    assert_eq!(last["processed"], 5);
    assert_eq!(last["dead_lettered"], 0, "a registry outage is not a bad record");
    assert!(read_topic(&dlq).is_empty());
}
