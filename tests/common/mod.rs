//! Shared test helpers: the real broker, an independent producer (kcat),
//! reading back committed offsets, and waiting on conditions with deadlines.
#![allow(dead_code)]

pub mod pg;
pub mod tmux;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// The real broker `scripts/test` started (`KDECK_TEST_BROKERS`).
pub fn brokers() -> String {
    std::env::var("KDECK_TEST_BROKERS").expect(
        "KDECK_TEST_BROKERS is not set: run the suite with scripts/test (it starts a real Kafka broker), \
         or start one with scripts/kafka start and export KDECK_TEST_BROKERS=127.0.0.1:9092",
    )
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("{prefix}-{}-{t}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A new one-partition topic and its dead-letter topic (`<topic>.dlq`).
pub fn topic_with_dlq(name: &str) -> (String, String) {
    let topic = unique(name);
    let dlq = format!("{topic}.dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    (topic, dlq)
}

pub fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]);
}

/// Sets topic configs (e.g. max.message.bytes) on an existing topic.
pub fn alter_topic(name: &str, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut change = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in configs {
        change = change.set(k, v);
    }
    for r in rt.block_on(admin.alter_configs([&change], &opts)).expect("alter configs") {
        r.expect("topic config altered");
    }
}

/// Creates a topic with topic configs (e.g. max.message.bytes).
pub fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut new = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = rt.block_on(admin.create_topics([&new], &opts));
    for r in res.expect("create topic") {
        r.expect("topic created");
    }
    // Metadata propagates asynchronously: wait until every partition has a leader.
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    wait_for("topic metadata", Duration::from_secs(30), || {
        c.fetch_metadata(Some(name), Duration::from_secs(5))
            .ok()
            .and_then(|md| md.topics().first().map(|t| t.error().is_none() && t.partitions().len() == partitions as usize))
            .unwrap_or(false)
    });
}

/// Produces `n` keyed records (`key-i` / a JSON value of about `size` bytes) with kcat,
/// an independent client. Returns the records per partition.
pub fn produce_with_kcat(topic: &str, n: usize, size: usize) -> BTreeMap<i32, i64> {
    let mut child = Command::new("kcat")
        .args(["-P", "-b", &brokers(), "-t", topic, "-K", "\t", "-X", "linger.ms=20"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        let pad = "x".repeat(size.saturating_sub(40));
        for i in 0..n {
            writeln!(stdin, "key-{i}\t{{\"n\":{i},\"pad\":\"{pad}\"}}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kcat failed: {}", String::from_utf8_lossy(&out.stderr));
    let ends = end_offsets(topic);
    assert_eq!(ends.values().sum::<i64>(), n as i64, "kcat produced every record");
    ends
}

/// High watermark of every partition of `topic`.
pub fn end_offsets(topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// The group's committed offset of every partition of `topic` (-1 where none).
pub fn committed_offsets(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in end_offsets(topic).keys() {
        tpl.add_partition(topic, *p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 }))
        .collect()
}

/// Every (partition, offset) a `jsonl:` sink file holds, with how often each was seen.
pub fn seen_in_sink(path: &Path) -> BTreeMap<(i32, i64), usize> {
    let mut seen = BTreeMap::new();
    let Ok(f) = std::fs::File::open(path) else { return seen };
    for line in std::io::BufReader::new(f).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad sink line {line:?}: {e}"));
        *seen.entry((v["partition"].as_i64().unwrap() as i32, v["offset"].as_i64().unwrap())).or_insert(0) += 1;
    }
    seen
}

/// Asserts that `seen` holds every offset below each partition's end.
pub fn assert_all_seen(seen: &BTreeSet<(i32, i64)>, ends: &BTreeMap<i32, i64>) {
    let mut missing = Vec::new();
    for (&p, &end) in ends {
        for o in 0..end {
            if !seen.contains(&(p, o)) {
                missing.push((p, o));
            }
        }
    }
    assert!(missing.is_empty(), "{} records never processed, first: {:?}", missing.len(), &missing[..missing.len().min(10)]);
}

pub fn line_count(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// Polls `cond` until it holds; panics with `what` at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kdeck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdeck"));
    c.env_remove("KDECK_BROKERS").env_remove("KDECK_GROUP").env_remove("KDECK_TOPICS");
    c
}

/// `kdeck run --headless --stop-at-end` on the test broker for `group` and `topic`,
/// with its audit store and log in `dir`; add the pipeline options.
pub fn run_to_end(group: &str, topic: &str, dir: &Path) -> Command {
    let mut c = kdeck();
    c.args(["run", "--headless", "--stop-at-end", "-b", &brokers(), "-G", group, "-t", topic])
        .arg("--audit")
        .arg(dir.join("audit.sqlite"))
        .arg("--log-file")
        .arg(dir.join("kdeck.log"));
    c
}

/// Starts `kdeck run --headless` against the test broker with a jsonl sink.
/// Its status lines go to `<sink>.stderr`, its log to `<sink>.log`.
pub fn spawn_run(group: &str, topic: &str, sink: &Path, extra: &[&str]) -> Child {
    let log = sink.with_extension("log");
    let stderr = std::fs::File::create(sink.with_extension("stderr")).unwrap();
    kdeck()
        .args(["run", "--headless", "-b", &brokers(), "-G", group, "-t", topic])
        .arg("--sink")
        .arg(format!("jsonl:{}", sink.display()))
        .arg("--log-file")
        .arg(&log)
        .arg("--audit")
        .arg(sink.with_extension("audit.sqlite"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Waits for a child with a deadline; kills it and panics if it does not exit.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = read_all(child.stderr.take());
            panic!("kdeck did not exit within {deadline:?}; stderr:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn read_all(r: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Produces records with an rdkafka producer (for payloads and headers kcat cannot pass):
/// (partition, key, value, headers).
pub fn produce_raw(topic: &str, records: &[(i32, Option<&[u8]>, Option<&[u8]>, Vec<(&str, &[u8])>)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("acks", "all").create().unwrap();
    for (partition, key, value, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(*partition).headers(h);
        if let Some(k) = key {
            r = r.key(*k);
        }
        if let Some(v) = value {
            r = r.payload(*v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Every record of `topic` from the start to its current end (read_uncommitted;
/// a transactional topic's control records are not records, so the end is
/// known by librdkafka's end-of-partition event, not by the last offset read).
pub fn read_topic(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::message::Message;
    // assign() needs a group id; nothing is ever committed under it.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "kdeck-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let ends = end_offsets(topic);
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut left: BTreeSet<i32> = ends.into_iter().filter(|(_, e)| *e > 0).map(|(p, _)| p).collect();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() {
        assert!(Instant::now() < until, "reading {topic} timed out");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            _ => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    out
}

pub fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    m.headers()?.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Where `scripts/kafka start --secure` put the CA, certificates and users.
pub fn certs() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("KDECK_TEST_CERTS").expect(
        "KDECK_TEST_CERTS is not set: run the suite with scripts/test, or start the broker with scripts/kafka start --secure \
         and export KDECK_TEST_CERTS=/tmp/kdeck-kafka-9092/certs",
    ))
}

/// The path of a file in `certs()`.
pub fn ca(name: &str) -> String {
    certs().join(name).display().to_string()
}

/// `upstream` (a stand-in on plain HTTP) behind HTTPS on loopback, with the
/// broker's certificate from the test CA (`tests/common/https_front.py`).
/// Returns the front's process (killed when dropped) and its https:// URL.
pub fn https_front(upstream: &str) -> (Killed, String) {
    front(&ca("broker.pem"), &ca("broker.key"), upstream, "https")
}

/// `upstream` behind Python's HTTP server, which answers what is not HTTP
/// (a TLS handshake) with 400 at once, as production HTTP servers do.
pub fn http_front(upstream: &str) -> (Killed, String) {
    front("-", "-", upstream, "http")
}

fn front(cert: &str, key: &str, upstream: &str, scheme: &str) -> (Killed, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/https_front.py");
    let mut child = Command::new("/usr/bin/python3")
        .args([script, cert, key, upstream])
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (scripts/test installs it)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the HTTPS front printed `{line}`, not its port"));
    (Killed(child), format!("{scheme}://127.0.0.1:{port}"))
}

/// A stand-in Schema Registry on loopback: `GET /schemas/ids/{id}` answers from `schemas`
/// (id -> (schemaType, schema text)), 404 otherwise; `GET /subjects/{s}/versions/latest`
/// answers the highest id registered under that subject. With `auth` ("user:password")
/// it answers 401 to requests without that basic auth. Returns its URL.
pub fn fake_registry(schemas: Vec<(u32, &'static str, &'static str, String)>) -> String {
    fake_registry_with_auth(schemas, None)
}

pub fn fake_registry_with_auth(schemas: Vec<(u32, &'static str, &'static str, String)>, auth: Option<&str>) -> String {
    use base64::Engine as _;
    let expected = auth.map(|a| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(a)));
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let authorized = expected.as_ref().is_none_or(|e| {
                req.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str() == e)
            });
            if !authorized {
                let _ = req.respond(tiny_http::Response::from_string("unauthorized").with_status_code(401));
                continue;
            }
            let path = req.url().to_string();
            let found = if let Some(id) = path.strip_prefix("/schemas/ids/") {
                schemas.iter().find(|s| id.parse() == Ok(s.0))
            } else if let Some(rest) = path.strip_prefix("/subjects/") {
                let subject = rest.split('/').next().unwrap_or_default();
                schemas.iter().filter(|s| s.1 == subject).max_by_key(|s| s.0)
            } else {
                None
            };
            let resp = match found {
                Some((id, subject, kind, schema)) => tiny_http::Response::from_string(
                    serde_json::json!({"id": id, "subject": subject, "version": 1, "schemaType": kind, "schema": schema}).to_string(),
                ),
                None => tiny_http::Response::from_string(r#"{"error_code":40403,"message":"Schema not found"}"#).with_status_code(404),
            };
            let _ = req.respond(resp);
        }
    });
    url
}

/// Rows of a SQLite sink table: (partition, offset) -> value JSON text.
pub fn sqlite_rows(path: &Path, topic: &str) -> BTreeMap<(i32, i64), String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut st = conn.prepare(&format!("SELECT partition, offset, value FROM \"{topic}\"")).unwrap();
    let rows = st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?))).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Produces transactions to partition 0 of `topic` with an rdkafka transactional
/// producer (as Kafka Streams or Flink would): for each (records, commit) one
/// transaction of `records` JSON values `{"n": i}`, committed or aborted. Each
/// transaction leaves a marker that takes an offset and is never delivered.
pub fn produce_transactions(topic: &str, transactions: &[(usize, bool)]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("txn-producer"))
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    p.init_transactions(timeout).unwrap();
    let mut n = 0;
    for &(records, commit) in transactions {
        p.begin_transaction().unwrap();
        for _ in 0..records {
            let value = format!("{{\"n\":{n}}}");
            let key = format!("key-{n}");
            p.send(BaseRecord::to(topic).partition(0).key(&key).payload(&value)).map_err(|(e, _)| e).unwrap();
            n += 1;
        }
        p.flush(timeout).unwrap();
        if commit {
            p.commit_transaction(timeout).unwrap();
        } else {
            p.abort_transaction(timeout).unwrap();
        }
    }
}

/// The last JSON snapshot `--json` wrote to `path` so far.
pub fn last_snapshot(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|l| serde_json::from_str(l).ok())
}

/// Every JSON value in `topic` (of `partitions` partitions) as a reader sees it,
/// `read_committed` or not, read to the end of each partition.
pub fn read_values(topic: &str, partitions: usize, committed: bool) -> Vec<serde_json::Value> {
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("g-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let (mut out, mut at_eof) = (Vec::new(), BTreeSet::new());
    let until = Instant::now() + Duration::from_secs(120);
    while at_eof.len() < partitions {
        assert!(Instant::now() < until, "reading {topic} timed out");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_eof.remove(&m.partition());
                out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_eof.insert(p);
            }
            _ => {}
        }
    }
    out
}

/// Records a `read_committed` reader sees in a one-partition topic.
pub fn read_committed_count(topic: &str) -> usize {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("g-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut n = 0;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < until, "reading {topic} timed out");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => n += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return n,
            _ => {}
        }
    }
}

/// Runs a `kdeck … --json` command to its exit within `deadline` (its output
/// goes to files, so a long run never fills a pipe): its exit status, its last
/// JSON snapshot and what it printed on stderr.
pub fn run_json(mut cmd: Command, deadline: Duration) -> (ExitStatus, serde_json::Value, String) {
    let (out, err) = (tempfile::NamedTempFile::new().unwrap(), tempfile::NamedTempFile::new().unwrap());
    let mut child = cmd.stdout(out.reopen().unwrap()).stderr(err.reopen().unwrap()).spawn().unwrap();
    let status = wait_exit(&mut child, deadline);
    let last = last_snapshot(out.path()).expect("kdeck printed a JSON snapshot");
    (status, last, std::fs::read_to_string(err.path()).unwrap_or_default())
}

/// Commits `offset` for `group` as a plain client does (assign and commit, no
/// membership): the group stays Empty.
pub fn commit_offset(group: &str, topic: &str, partition: i32, offset: i64) {
    use rdkafka::consumer::CommitMode;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

/// A child process killed (and reaped) when dropped, whatever the test's outcome.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A transactional producer with a transaction open; aborted when dropped (a
/// failed test must not leave it to hold the commit log of the tests after it).
pub struct Holder(pub rdkafka::producer::BaseProducer);

impl std::ops::Deref for Holder {
    type Target = rdkafka::producer::BaseProducer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        use rdkafka::producer::Producer;
        let _ = self.0.abort_transaction(Duration::from_secs(10));
    }
}

/// A transactional producer that has sent `offset` of `topic[partition]` for
/// `group` in a transaction it leaves open (until dropped, or its timeout):
/// the group's offset stays held (UNSTABLE_OFFSET_COMMIT) meanwhile.
pub fn hold_offset_in_open_transaction(group: &str, topic: &str, partition: i32, offset: i64) -> Holder {
    use rdkafka::producer::{BaseProducer, Producer};
    let meta = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", group).create::<BaseConsumer>().unwrap();
    let holder: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("holder"))
        .set("transaction.timeout.ms", "120000")
        .create()
        .unwrap();
    holder.init_transactions(Duration::from_secs(30)).unwrap();
    holder.begin_transaction().unwrap();
    let mut held = TopicPartitionList::new();
    held.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
    holder.send_offsets_to_transaction(&held, &meta.group_metadata().unwrap(), Duration::from_secs(30)).unwrap();
    Holder(holder)
}
