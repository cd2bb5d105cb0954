//! The broker is SIGKILLed in the middle of a stream and started again on its
//! data 20 s later. At-least-once loses nothing; exactly-once into SQLite keeps
//! its totals exact. A broker of its own (another port), so the rest of the
//! suite never sees the crash.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const PORT: u16 = 19092;

struct PrivateBroker;

impl PrivateBroker {
    fn script(verb: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka");
        let status = Command::new("bash").arg(script).arg(verb).env("KAFKA_PORT", PORT.to_string()).status().unwrap();
        assert!(status.success(), "scripts/kafka {verb} failed");
    }

    fn start() -> PrivateBroker {
        PrivateBroker::script("start");
        PrivateBroker
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        PrivateBroker::script("stop");
    }
}

#[test]
fn a_broker_killed_and_restarted_mid_stream_loses_nothing_and_keeps_exactly_once_exact() {
    let _broker = PrivateBroker::start();
    // Only this test runs in this binary: every helper now talks to the private broker.
    std::env::set_var("KDECK_TEST_BROKERS", format!("127.0.0.1:{PORT}"));
    let topic = unique("crash");
    create_topic(&topic, 3);
    let n = 30_000;
    let ends = produce_with_kcat(&topic, n, 60);

    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("alo.jsonl");
    let alo_group = unique("g-crash-alo");
    let mut alo = spawn_run(&alo_group, &topic, &sink, &["--stop-at-end", "--handler-delay", "1ms"]);

    let db = dir.path().join("eos.sqlite");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE totals(k INTEGER PRIMARY KEY, s INTEGER, c INTEGER)").unwrap();
    let eos_dir = dir.path().join("eos");
    std::fs::create_dir(&eos_dir).unwrap();
    let mut eos = run_to_end(&unique("g-crash-eos"), &topic, &eos_dir)
        .args(["--format", "json", "--commit", "eos", "--handler-delay", "1ms", "--sink"])
        .arg(format!("sqlite:{}", db.display()))
        .args(["--sql", "INSERT INTO totals(k, s, c) VALUES(1, :n, 1) ON CONFLICT(k) DO UPDATE SET s = s + excluded.s, c = c + 1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    wait_for("a fifth of the stream", Duration::from_secs(60), || line_count(&sink) >= n / 5);
    PrivateBroker::script("crash");
    // The scenario, not a wait for a condition: the broker stays down this long.
    std::thread::sleep(Duration::from_secs(20));
    PrivateBroker::script("restart");

    let status = wait_exit(&mut alo, Duration::from_secs(240));
    assert!(status.success(), "at-least-once run: {status}");
    let seen = seen_in_sink(&sink);
    assert_all_seen(&seen.keys().cloned().collect(), &ends);
    assert_eq!(committed_offsets(&alo_group, &topic), ends, "committed to the end");

    let status = wait_exit(&mut eos, Duration::from_secs(240));
    assert!(status.success(), "exactly-once run: {status}");
    let (s, c): (i64, i64) =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT s, c FROM totals", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(c, n as i64, "every record applied exactly once");
    assert_eq!(s, (0..n as i64).sum::<i64>());
}
