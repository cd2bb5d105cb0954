//! The PostgreSQL sink against a real server (`scripts/postgres`, Debian's
//! packages): the default table, `--sql` upserts, exactly-once offsets with
//! generation claims, a server restart in the middle of a run, and bad input.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn pg_url() -> String {
    std::env::var("KDECK_TEST_PG").expect("KDECK_TEST_PG is not set: run the suite with scripts/test (it starts scripts/postgres)")
}

fn pg_password() -> String {
    let file = std::env::var("KDECK_TEST_PG_PASSWORD_FILE").expect("KDECK_TEST_PG_PASSWORD_FILE is not set (scripts/test sets it)");
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

/// A client of the test database, as the tests' independent reader.
fn pg() -> postgres::Client {
    let mut config: postgres::Config = pg_url().parse().unwrap();
    config.password(pg_password());
    config.connect(postgres::NoTls).unwrap()
}

/// `kdeck run` to the end of `topic` into PostgreSQL (password from PGPASSWORD).
fn run_pg(group: &str, topic: &str, dir: &std::path::Path, extra: &[&str]) -> std::process::Command {
    let mut c = run_to_end(group, topic, dir);
    c.args(["--format", "json", "--sink", &pg_url()]).args(extra).env("PGPASSWORD", pg_password());
    c
}

/// Orders for `customers` customers: (customer, amount in cents) per record.
fn produce_orders(topic: &str, n: usize, customers: usize) -> BTreeMap<String, (i64, i64)> {
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut records = Vec::new();
    for i in 0..n {
        let customer = format!("c{}", i % customers);
        let cents = (i as i64 * 37) % 1000 + 1;
        let e = expected.entry(customer.clone()).or_default();
        e.0 += cents;
        e.1 += 1;
        records.push((customer, format!("{{\"customer\":\"c{}\",\"cents\":{cents}}}", i % customers)));
    }
    let by_partition: Vec<(i32, Option<&[u8]>, Option<&[u8]>, Vec<(&str, &[u8])>)> =
        records.iter().enumerate().map(|(i, (k, v))| ((i % 3) as i32, Some(k.as_bytes()), Some(v.as_bytes()), vec![])).collect();
    for chunk in by_partition.chunks(5000) {
        produce_raw(topic, chunk);
    }
    expected
}

const TOTALS_SQL: &str = "INSERT INTO {table} (customer, total, n) VALUES (:customer, :cents, 1)
    ON CONFLICT (customer) DO UPDATE SET total = {table}.total + excluded.total, n = {table}.n + 1";

/// A totals table of its own and the upsert into it.
fn totals_table(name: &str) -> String {
    pg().batch_execute(&format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (customer TEXT PRIMARY KEY, total NUMERIC NOT NULL, n BIGINT NOT NULL)")).unwrap();
    TOTALS_SQL.replace("{table}", name)
}

fn totals(name: &str) -> BTreeMap<String, (i64, i64)> {
    pg().query(&format!("SELECT customer, total::bigint, n FROM {name}"), &[]).unwrap().iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

fn stored_offsets(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    pg().query("SELECT partition, next_offset FROM kdeck_offsets WHERE group_id = $1 AND topic = $2", &[&group, &topic])
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>(1).map(|o| (r.get(0), o)))
        .collect()
}

#[test]
fn the_default_table_under_eos_holds_every_record_once_and_the_offsets_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-default");
    create_topic(&topic, 3);
    let ends = produce_with_kcat(&topic, 3000, 100);
    let group = unique("g-pg");
    let out = run_pg(&group, &topic, dir.path(), &["--commit", "eos"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM \"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 3000);
    assert_eq!(stored_offsets(&group, &topic), ends, "the offsets are stored with the rows");
    assert_eq!(committed_offsets(&group, &topic), ends, "Kafka's offsets follow, for lag tools");
    // Run again from the stored offsets: nothing is written twice, nothing new.
    let again = run_pg(&group, &topic, dir.path(), &["--commit", "eos"]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM \"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 3000);
}

#[test]
fn sql_upserts_under_eos_give_exact_totals_across_runs_and_a_kafka_offset_reset() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-totals");
    create_topic(&topic, 3);
    let table = format!("totals_{}", unique("t").replace('-', "_"));
    let sql = totals_table(&table);
    let mut expected = produce_orders(&topic, 2000, 10);
    let group = unique("g-pg-sql");
    let out = run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&table), expected);
    // The group's Kafka offsets go back to the start (an operator's reset):
    // the stored offsets win, and nothing is applied twice.
    for p in 0..3 {
        commit_offset(&group, &topic, p, 0);
    }
    for (c, (t, n)) in produce_orders(&topic, 600, 10) {
        let e = expected.entry(c).or_default();
        e.0 += t;
        e.1 += n;
    }
    let out = run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&table), expected);
}

#[test]
fn a_postgres_restart_in_the_middle_of_a_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-restart");
    create_topic(&topic, 3);
    let table = format!("totals_{}", unique("r").replace('-', "_"));
    let sql = totals_table(&table);
    let expected = produce_orders(&topic, 3000, 10);
    let group = unique("g-pg-restart");
    let status = dir.path().join("status.jsonl");
    let mut child = Killed(
        run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql, "--json", "--handler-delay", "2ms"])
            .stdout(std::fs::File::create(&status).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("some records written", Duration::from_secs(60), || {
        last_snapshot(&status).is_some_and(|s| s["processed"].as_u64().unwrap_or(0) > 300)
    });
    let restart = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres")).arg("restart").output().unwrap();
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    let exit = wait_exit(&mut child.0, Duration::from_secs(120));
    assert!(exit.success(), "{}", std::fs::read_to_string(dir.path().join("stderr")).unwrap());
    assert_eq!(totals(&table), expected, "every customer's total and count exact");
    let last = last_snapshot(&status).unwrap();
    let problem = last["eos"]["last_problem"].as_str().unwrap_or_default().to_string();
    assert!(problem.contains("PostgreSQL"), "the run went through the restart (its last problem: `{problem}`)");
    assert!(last["eos"]["aborts"].as_u64().unwrap() >= 1, "{}", last["eos"]);
}

#[test]
fn a_wrong_url_password_or_table_is_one_sentence_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-bad");
    create_topic(&topic, 1);
    let url = pg_url();
    let closed_port = url.replace(":5433/", ":1/").replace(&format!(":{}/", std::env::var("PG_PORT").unwrap_or("5433".into())), ":1/");
    let cases: Vec<(&str, String, Vec<&str>, Option<&str>, &str)> = vec![
        ("a wrong password", url.clone(), vec![], Some("not-the-password-42"), "refused the password"),
        ("no password", url.clone(), vec![], None, "asks for a password"),
        ("nothing listening", closed_port, vec![], Some("x"), "cannot reach PostgreSQL at postgres://kdeck@127.0.0.1:1/kdeck"),
        ("a missing table", url.clone(), vec!["--sql", "INSERT INTO no_such_table (a) VALUES (:customer)"], None, "relation \"no_such_table\" does not exist"),
        ("a statement that reads", url.clone(), vec!["--sql", "SELECT :customer"], None, "returns rows"),
        ("not a URL", "postgres://kdeck:pw@127.0.0.1:notaport/kdeck".into(), vec![], None, "is not a PostgreSQL URL"),
    ];
    for (what, sink, extra, password, expected) in cases {
        let started = Instant::now();
        let mut cmd = run_to_end(&unique("g-pg-bad"), &topic, dir.path());
        cmd.args(["--format", "json", "--sink", &sink]).args(&extra).env_remove("PGPASSWORD").env("PGPASSFILE", "/nonexistent");
        match password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None if extra.is_empty() => &mut cmd,
            None => cmd.env("PGPASSWORD", pg_password()),
        };
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = err.lines().filter(|l| !l.starts_with("kdeck: logging to")).collect();
        assert!(!out.status.success(), "{what}: exited 0");
        assert_eq!(said.len(), 1, "{what}: one sentence: {err}");
        assert!(said[0].contains(expected), "{what}: expected `{expected}` in: {err}");
        assert!(!err.contains(&pg_password()) && !err.contains("not-the-password-42") && !err.contains(":pw@"), "{what}: a password shown: {err}");
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: {:?}", started.elapsed());
    }
}
