//! Mistakes a user can make end in one clear sentence and a non-zero exit, quickly.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn run(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = kdeck().args(args).output().unwrap();
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreachable_broker_is_named_within_the_connect_timeout() {
    // Port 1 on loopback: nothing listens there.
    let (out, took) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--connect-timeout", "3s"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_missing_topic_is_named() {
    let topic = unique("missing");
    let (out, _) = run(&["run", "--headless", "-b", &brokers(), "-t", &topic]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("topic `{topic}` does not exist")), "{err}");
}

#[test]
fn a_bad_config_file_names_the_file_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdeck.toml");
    std::fs::write(&path, "brokers = \"127.0.0.1:9092\"\nmax-queue = \"lots\"\n").unwrap();
    let (out, _) = run(&["run", "--headless", "--config", path.to_str().unwrap(), "-t", "x"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("kdeck.toml is not valid at line 2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn an_unknown_librdkafka_property_is_named() {
    let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "-X", "fetch.max.bites=1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("fetch.max.bites") && err.contains("-X"), "{err}");
}

#[test]
fn an_unknown_option_is_refused() {
    let (out, took) = run(&["run", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"));
    assert!(took < Duration::from_secs(5));
}

#[test]
fn a_bad_commit_strategy_says_what_is_expected() {
    let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--commit", "sometimes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected per-message, batch:N"), "{}", stderr(&out));
}

#[test]
fn a_bad_unowned_after_is_one_sentence() {
    for (value, says) in [("soon", "is not a duration"), ("100ms", "at least 1s")] {
        let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--unowned-after", value]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{value}: {}", stderr(&out));
    }
}

#[test]
fn properties_the_guarantees_rest_on_are_refused_with_the_reason() {
    let refused = [
        (&["-X", "enable.auto.commit=true"][..], "has not finished"),
        (&["-X", "enable.auto.offset.store=true"][..], "before kdeck has finished them"),
        (&["-X", "group.id=other"][..], "-G/--group"),
        (&["--commit", "eos", "--sink", "kafka:out", "-X", "isolation.level=read_uncommitted"][..], "rolled back"),
    ];
    for (extra, why) in refused {
        let mut args = vec!["run", "--headless", "-b", "127.0.0.1:1", "-t", "x"];
        args.extend_from_slice(extra);
        let (out, took) = run(&args);
        assert!(!out.status.success(), "{extra:?} must be refused");
        let err = stderr(&out);
        assert!(err.contains("is refused") && err.contains(why), "{extra:?}: {err}");
        assert!(took < Duration::from_secs(5), "refused at once, before connecting");
    }
}

#[test]
fn sql_parameters_that_no_record_can_bind_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.sqlite");
    let sink = format!("sqlite:{}", db.display());
    let sql = "INSERT INTO t(c, a, o) VALUES(:customer, :amount, :offset)";
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(c, a, o)").unwrap();
    let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--sink", &sink, "--sql", sql]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--sql binds :customer, :amount from fields") && err.contains("--format json"), "{err}");
    assert!(!err.contains(":offset"), "record parameters always bind: {err}");
}

#[test]
fn the_commit_help_names_every_strategy() {
    let (out, _) = run(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("per-message | batch:N | interval:DURATION | at-most-once | eos"), "{help}");
}

#[test]
fn a_batched_exec_sink_under_key_ordering_is_refused() {
    let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--sink", "exec:cat", "--exec-batch", "4", "--ordering", "key"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--exec-batch above 1 needs --ordering partition"), "{err}");
    let (out, _) = run(&["run", "--headless", "-b", "127.0.0.1:1", "-t", "x", "--sink", "exec:cat", "--exec-batch", "0"]);
    assert!(!out.status.success(), "a batch of 0 is refused");
}
