//! A broken sink is not a bad record: when the sink itself cannot work, kdeck
//! holds the partition with the reason and tries the sink again; healthy
//! records are never dead-lettered for it, and the exit status says the run
//! did not finish its work. A command that cannot start is refused at once.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;


#[test]
fn an_exec_sink_that_cannot_start_is_refused_before_any_record_moves() {
    let topic = unique("exec-typo");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 20, 50);
    let group = unique("g-exec-typo");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run_to_end(&group, &topic, dir.path()).args(["--sink", "exec:/nonexistent/prog"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the exec sink `/nonexistent/prog` exited at start") && err.contains("command not found"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(committed_offsets(&group, &topic)[&0], -1, "nothing moved");
}

#[test]
fn a_sink_that_goes_down_holds_the_partition_and_dead_letters_nothing() {
    let (topic, dlq) = topic_with_dlq("exec-down");
    produce_with_kcat(&topic, 20, 50);
    let group = unique("g-exec-down");
    let dir = tempfile::tempdir().unwrap();
    let down = dir.path().join("down");
    let written = dir.path().join("written.jsonl");
    // Answers `ok` while the flag file is absent; exits (the sink is down) while it exists.
    let child = format!(
        "exec:while IFS= read -r line; do [ -e {d} ] && exit 3; printf '%s\\n' \"$line\" >> {w}; echo ok; done",
        d = down.display(),
        w = written.display()
    );
    std::fs::write(&down, "").unwrap();
    let status = dir.path().join("status.jsonl");
    let spawn = || {
        run_to_end(&group, &topic, dir.path())
            .args(["--json", "--sink", &child])
            .stdout(std::fs::File::create(&status).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut first = spawn();
    wait_for("the partition blocked by the sink", Duration::from_secs(30), || {
        last_snapshot(&status).is_some_and(|s| {
            s["partitions"][0]["blocked"].as_str().is_some_and(|b| b.contains("sink unavailable") && b.contains("exited"))
        })
    });
    let s = last_snapshot(&status).unwrap();
    assert_eq!(s["partitions"][0]["state"], "blocked");
    assert_eq!(s["dead_lettered"], 0);
    sigterm(&first);
    let code = wait_exit(&mut first, Duration::from_secs(30));
    let err = read_all(first.stderr.take());
    assert!(!code.success(), "a run stopped while its sink was down failed");
    assert!(err.contains("could not advance: sink unavailable"), "{err}");
    assert!(committed_offsets(&group, &topic)[&0] <= 0, "nothing committed past the held record");
    assert!(read_topic(&dlq).is_empty(), "no healthy record was dead-lettered");

    // The sink comes back: everything goes through, nothing dead-lettered.
    std::fs::remove_file(&down).unwrap();
    let mut second = spawn();
    let code = wait_exit(&mut second, Duration::from_secs(60));
    assert!(code.success(), "{}", read_all(second.stderr.take()));
    assert_eq!(line_count(&written), 20);
    assert_eq!(committed_offsets(&group, &topic)[&0], 20);
    assert!(read_topic(&dlq).is_empty());
}

#[test]
fn an_exec_sink_that_never_answers_is_bounded_by_its_timeout_and_never_hangs_kdeck() {
    let topic = unique("exec-silent");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    produce_with_kcat(&topic, 5, 50);
    let group = unique("g-exec-silent");
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.jsonl");
    // Reads every record and never answers.
    let mut child = run_to_end(&group, &topic, dir.path())
        .args(["--json", "--exec-timeout", "1s", "--sink", "exec:cat > /dev/null"])
        .stdout(std::fs::File::create(&status).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the partition held by the silent child", Duration::from_secs(30), || {
        last_snapshot(&status).is_some_and(|s| s["partitions"][0]["blocked"].as_str().is_some_and(|b| b.contains("did not answer within 1s")))
    });
    assert_eq!(last_snapshot(&status).unwrap()["dead_lettered"], 0);
    let asked = Instant::now();
    sigterm(&child);
    let code = wait_exit(&mut child, Duration::from_secs(30));
    assert!(asked.elapsed() < Duration::from_secs(15), "shutdown is bounded: {:?}", asked.elapsed());
    assert!(!code.success(), "stopped while the sink could not work");
    assert_eq!(committed_offsets(&group, &topic)[&0], -1);
}

#[test]
fn what_an_exec_child_prints_unasked_is_not_taken_for_an_answer() {
    let topic = unique("exec-banner");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    produce_with_kcat(&topic, 10, 50);
    let group = unique("g-exec-banner");
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written.jsonl");
    // A banner first, then a proper answer per record.
    let child = format!(
        "exec:echo 'handler v1.2 ready'; while IFS= read -r line; do printf '%s\\n' \"$line\" >> {w}; echo ok; done",
        w = written.display()
    );
    let out = run_to_end(&group, &topic, dir.path()).args(["--json", "--sink", &child]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["dead_lettered"], 0);
    assert_eq!(last["failed"], 0, "the banner was not the first record's answer");
    assert_eq!(line_count(&written), 10);
}
