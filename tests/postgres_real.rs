//! The PostgreSQL sink against a real server (`scripts/postgres`, Debian's
//! packages): the default table, `--sql` upserts, exactly-once offsets with
//! generation claims, a commit whose answer is lost, switching into and out
//! of exactly-once while running, and bad input. (The
//! server's restarts are in postgres_restart.rs: they would cut these tests'
//! connections.)

mod common;

use std::time::{Duration, Instant};

use common::pg::*;
use common::*;

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
    // Run again from the stored offsets, the password in the URL this time:
    // nothing is written twice, and the password is nowhere in what kdeck says.
    let with_password = pg_url().replacen("://kdeck@", &format!("://kdeck:{}@", pg_password()), 1);
    let status = dir.path().join("again.jsonl");
    let again = run_to_end(&group, &topic, dir.path())
        .args(["--format", "json", "--commit", "eos", "--json", "--sink", &with_password])
        .env_remove("PGPASSWORD")
        .stdout(std::fs::File::create(&status).unwrap())
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM \"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 3000);
    let last = last_snapshot(&status).unwrap();
    assert_eq!(last["sink"], pg_url().as_str(), "the header shows the sink without its password");
    assert_eq!(last["eos"]["sink"], "postgres");
    for (name, text) in [
        ("stdout", std::fs::read_to_string(&status).unwrap()),
        ("stderr", String::from_utf8_lossy(&again.stderr).into_owned()),
        ("log", std::fs::read_to_string(dir.path().join("kdeck.log")).unwrap_or_default()),
    ] {
        assert!(!text.contains(&pg_password()), "the password is in {name}");
    }
}

#[test]
fn sql_upserts_under_eos_give_exact_totals_across_runs_and_a_kafka_offset_reset() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-totals");
    create_topic(&topic, 3);
    let (table, sql) = fresh_totals("t");
    let mut expected = produce_orders(&topic, 2000, 10, 3);
    let group = unique("g-pg-sql");
    let out = run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&table), expected);
    // The group's Kafka offsets go back to the start (an operator's reset):
    // the stored offsets win, and nothing is applied twice.
    for p in 0..3 {
        commit_offset(&group, &topic, p, 0);
    }
    for (c, (t, n)) in produce_orders(&topic, 600, 10, 3) {
        let e = expected.entry(c).or_default();
        e.0 += t;
        e.1 += n;
    }
    let out = run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&table), expected);
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

#[test]
fn a_commit_whose_answer_is_lost_is_settled_from_the_offsets_row_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-lost");
    create_topic(&topic, 3);
    let (table, sql) = fresh_totals("l");
    let expected = produce_orders(&topic, 900, 5, 3);
    let group = unique("g-pg-lost");
    let status = dir.path().join("status.jsonl");
    let mut child = Killed(
        run_pg(&group, &topic, dir.path(), &["--commit", "eos", "--sql", &sql, "--json", "--max-queue", "50"])
            .env("KDECK_FAILPOINT", "pg-commit-answer-lost:2")
            .stdout(std::fs::File::create(&status).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Unsettled, the batch would be fenced by its own commit for ever.
    let exit = wait_exit(&mut child.0, Duration::from_secs(60));
    assert!(exit.success(), "{}", std::fs::read_to_string(dir.path().join("stderr")).unwrap());
    let last = last_snapshot(&status).unwrap();
    assert!(last["eos"]["last_problem"].as_str().unwrap_or_default().contains("failpoint"), "{}", last["eos"]);
    assert_eq!(totals(&table), expected, "the batch whose answer was lost is in once");
}

#[test]
fn tls_with_the_servers_own_ca_and_one_sentence_when_it_is_not_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-tls");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 50, 100);
    // kdeck_tls may only connect over TLS (scripts/postgres's pg_hba.conf).
    let tls_url = |query: &str| pg_url().replacen("://kdeck@", "://kdeck_tls@", 1) + query;
    let run = |sink: String| {
        run_to_end(&unique("g-pg-tls"), &topic, dir.path())
            .args(["--format", "json", "--sink", &sink])
            .env("PGPASSWORD", pg_password())
            .output()
            .unwrap()
    };
    let ok = run(tls_url(&format!("?sslmode=verify-full&sslrootcert={}", pg_file("ca.pem"))));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM \"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 50);
    for (what, query, expected) in [
        ("another CA", format!("?sslmode=verify-full&sslrootcert={}", pg_file("other-ca.pem")), "not signed by the CA in sslrootcert"),
        ("no TLS where it is required", "?sslmode=disable".to_string(), "no encryption"),
    ] {
        let out = run(tls_url(&query));
        let err = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = err.lines().filter(|l| !l.starts_with("kdeck: logging to")).collect();
        assert!(!out.status.success(), "{what}");
        assert_eq!(said.len(), 1, "{what}: {err}");
        assert!(said[0].contains(expected), "{what}: expected `{expected}` in {err}");
    }
}

#[test]
fn the_password_comes_from_a_file_or_pgpass_never_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-pw");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 20, 100);
    let file = dir.path().join("pg-password");
    std::fs::write(&file, format!("{}\n", pg_password())).unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("# host:port:db:user:password\n127.0.0.1:*:kdeck:kdeck:{}\n", pg_password())).unwrap();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = run_to_end(&unique("g-pg-pw"), &topic, dir.path());
        cmd.args(["--format", "json", "--sink", &pg_url()]).args(extra).env_remove("PGPASSWORD").env("PGPASSFILE", "/nonexistent");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let by_file = run(&["--sink-password-file", file.to_str().unwrap()], &[]);
    assert!(by_file.status.success(), "{}", String::from_utf8_lossy(&by_file.stderr));
    let by_pgpass = run(&[], &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert!(by_pgpass.status.success(), "{}", String::from_utf8_lossy(&by_pgpass.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM \"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 20);
}

#[test]
fn switching_into_and_out_of_eos_while_running_applies_every_record_once() {
    use kdeck::engine::pipeline::{Format, Pipeline, PipelineConfig};
    use kdeck::engine::{self, Command, CommitStrategy, EngineConfig, SinkSpec, Subscription};

    let topic = unique("pg-switch");
    create_topic(&topic, 3);
    let expected = produce_orders(&topic, 6000, 7, 3);
    let (table, sql) = fresh_totals("sw");
    let group = unique("g-pg-switch");
    let pipeline = Pipeline::new(&PipelineConfig {
        format: Format::Json,
        sink: SinkSpec::Postgres(pg_url()),
        sink_options: kdeck::engine::sink::SinkOptions {
            sql: Some(sql),
            sink_password: Some(pg_password()),
            group: group.clone(),
            ..Default::default()
        },
        delay: Duration::from_millis(1),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(&brokers(), &group, Subscription::Topics(vec![topic.clone()]));
    cfg.audit_path = dir.path().join("audit.sqlite");
    cfg.max_queue = 100; // a switch into eos first finishes what is queued
    cfg.exactly_once = pipeline.exactly_once();
    cfg.stop_at_end = true;
    let engine = engine::start(cfg, pipeline.factory()).unwrap();
    let applied = || totals(&table).values().map(|(_, n)| n).sum::<i64>();
    let stored = || stored_offsets(&group, &topic).values().sum::<i64>();
    let until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    until("progress at the default strategy", &|| applied() >= 500);
    let (offsets, rows) = (stored(), applied());
    assert!(offsets <= rows, "outside eos the stored offsets follow the database ({offsets} <= {rows})");
    engine.send(Command::SetStrategy(CommitStrategy::Eos));
    until("eos", &|| engine.snapshot().commit_strategy == "eos");
    let at_switch = applied();
    until("offsets committed with the writes", &|| applied() > at_switch + 500 && stored_offsets(&group, &topic).len() == 3);
    let view = engine.snapshot().eos.clone().expect("the sink can do eos");
    assert!(view.enabled && view.commits > 0, "{view:?}");
    engine.send(Command::SetStrategy(CommitStrategy::Batch(100)));
    until("back to batch", &|| engine.snapshot().commit_strategy == "batch:100");
    until("the end", &|| engine.is_finished());
    engine.join().unwrap();
    assert_eq!(totals(&table), expected, "every record applied once across both handovers");
    assert_eq!(stored_offsets(&group, &topic), end_offsets(&topic), "the stored offsets follow the database to the end");
    assert_eq!(committed_offsets(&group, &topic), end_offsets(&topic));
}

#[test]
fn instances_and_partitions_starting_together_on_a_fresh_database_create_its_tables_once() {
    use kdeck::engine::pipeline::{Format, Pipeline, PipelineConfig};
    use kdeck::engine::SinkSpec;

    // A schema of its own stands for a fresh database: kdeck's tables go there.
    let schema = unique("fresh").replace('-', "_");
    pg().batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
    let url = format!("{}?options=-csearch_path%3D{schema}", pg_url());
    // Eight instances at once: each creates kdeck_offsets if it is missing.
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let instances: Vec<_> = (0..8)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                Pipeline::new(&PipelineConfig {
                    format: Format::Json,
                    sink: SinkSpec::Postgres(url),
                    sink_options: kdeck::engine::sink::SinkOptions { sink_password: Some(pg_password()), group: "g".into(), ..Default::default() },
                    ..Default::default()
                })
                .map(|_| ())
            })
        })
        .collect();
    for i in instances {
        i.join().unwrap().expect("every instance starts");
    }
    // Six partitions' first writes at once: each creates the topic's table if it is missing.
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-fresh");
    create_topic(&topic, 6);
    produce_with_kcat(&topic, 600, 100);
    let out = run_to_end(&unique("g-pg-fresh"), &topic, dir.path())
        .args(["--format", "json", "--sink", &url, "--commit", "eos"])
        .env("PGPASSWORD", pg_password())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: i64 = pg().query_one(&format!("SELECT count(*) FROM {schema}.\"{topic}\""), &[]).unwrap().get(0);
    assert_eq!(rows, 600);
}
