//! PostgreSQL for the tests: the server `scripts/postgres` started, an
//! independent client of it, and the orders/totals fixtures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

pub fn pg_url() -> String {
    std::env::var("KDECK_TEST_PG").expect("KDECK_TEST_PG is not set: run the suite with scripts/test (it starts scripts/postgres)")
}

pub fn pg_password() -> String {
    let file = std::env::var("KDECK_TEST_PG_PASSWORD_FILE").expect("KDECK_TEST_PG_PASSWORD_FILE is not set (scripts/test sets it)");
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

/// A client of the test database, as the tests' independent reader (waiting
/// out a server that is starting up).
pub fn pg() -> postgres::Client {
    let mut config: postgres::Config = pg_url().parse().unwrap();
    config.password(pg_password());
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match config.connect(postgres::NoTls) {
            Ok(c) => return c,
            Err(_) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot connect to the test PostgreSQL: {e}"),
        }
    }
}

/// `scripts/postgres restart`: the server stopped at once (as a crash) and started.
pub fn restart_postgres() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres")).arg("restart").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `kdeck run` to the end of `topic` into PostgreSQL (password from PGPASSWORD).
pub fn run_pg(group: &str, topic: &str, dir: &std::path::Path, extra: &[&str]) -> std::process::Command {
    let mut c = run_to_end(group, topic, dir);
    c.args(["--format", "json", "--sink", &pg_url()]).args(extra).env("PGPASSWORD", pg_password());
    c
}

/// Orders for `customers` customers spread over `partitions`; returns each
/// customer's (total cents, count).
pub fn produce_orders(topic: &str, n: usize, customers: usize, partitions: usize) -> BTreeMap<String, (i64, i64)> {
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
        records.iter().enumerate().map(|(i, (k, v))| ((i % partitions) as i32, Some(k.as_bytes()), Some(v.as_bytes()), vec![])).collect();
    for chunk in by_partition.chunks(5000) {
        produce_raw(topic, chunk);
    }
    expected
}

pub const TOTALS_SQL: &str = "INSERT INTO {table} (customer, total, n) VALUES (:customer, :cents, 1)
    ON CONFLICT (customer) DO UPDATE SET total = {table}.total + excluded.total, n = {table}.n + 1";

/// A new totals table named after `prefix`, and the upsert into it.
pub fn fresh_totals(prefix: &str) -> (String, String) {
    let table = format!("totals_{}", unique(prefix).replace('-', "_"));
    pg().batch_execute(&format!("CREATE TABLE {table} (customer TEXT PRIMARY KEY, total NUMERIC NOT NULL, n BIGINT NOT NULL)")).unwrap();
    let sql = TOTALS_SQL.replace("{table}", &table);
    (table, sql)
}

pub fn totals(name: &str) -> BTreeMap<String, (i64, i64)> {
    pg().query(&format!("SELECT customer, total::bigint, n FROM {name}"), &[]).unwrap().iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

pub fn stored_offsets(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    pg().query("SELECT partition, next_offset FROM kdeck_offsets WHERE group_id = $1 AND topic = $2", &[&group, &topic])
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>(1).map(|o| (r.get(0), o)))
        .collect()
}


/// A file in the directory `scripts/postgres` keeps its CA and password in.
pub fn pg_file(name: &str) -> String {
    let password = std::path::PathBuf::from(std::env::var("KDECK_TEST_PG_PASSWORD_FILE").unwrap());
    password.parent().unwrap().join(name).display().to_string()
}
