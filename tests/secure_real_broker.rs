//! Against the broker's secured listeners (`scripts/kafka start --secure`):
//! SASL_SSL with SCRAM-SHA-512, SSL with client certificates, SASL_PLAINTEXT.
//! kdeck connects with the friendly options, and every kind of bad input is
//! one sentence within the connect timeout; the password is never shown.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// The port of a secured listener: the plaintext one plus `offset`.
fn listener(offset: u16) -> String {
    let plain: u16 = brokers().rsplit(':').next().unwrap().parse().unwrap();
    format!("127.0.0.1:{}", plain + offset)
}

fn sasl_ssl() -> String {
    listener(2)
}
fn mtls() -> String {
    listener(3)
}
fn sasl_plaintext() -> String {
    listener(4)
}

fn alice_password() -> String {
    let users = std::fs::read_to_string(certs().join("users")).unwrap();
    users.lines().find_map(|l| l.strip_prefix("alice ")).unwrap().to_string()
}

fn password_file(dir: &std::path::Path, password: &str) -> PathBuf {
    let f = dir.join("password");
    std::fs::write(&f, format!("{password}\n")).unwrap();
    f
}

/// `kdeck lag --all` with these options, a 5 s connect timeout.
fn lag_with(brokers: &str, options: &[&str]) -> Output {
    kdeck().args(["lag", "--all", "-b", brokers, "--connect-timeout", "5s"]).args(options).output().unwrap()
}

/// A group alice may see, caught up on a topic she may read: `lag -G` on it
/// exits 0 whatever other groups the cluster has.
fn caught_up_group() -> String {
    let topic = unique("sec-conn");
    create_topic(&topic, 1);
    produce_raw(&topic, &[(0, None, Some(&b"{}"[..]), vec![])]);
    let group = unique("sec-conn-g");
    commit_offset(&group, &topic, 0, 1);
    group
}

#[test]
fn every_secured_listener_is_reached_with_the_friendly_options() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &alice_password());
    let pw = pw.to_str().unwrap();
    let ca_pem = ca("ca.pem");
    let (cert, key) = (ca("client.pem"), ca("client.key"));
    let group = caught_up_group();
    let lag = |brokers: &str, options: &[&str]| kdeck().args(["lag", "-G", &group, "-b", brokers]).args(options).output().unwrap();
    let ok = |out: Output, what: &str| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    ok(lag(&sasl_ssl(), &["--sasl-user", "alice", "--sasl-password-file", pw, "--tls-ca", &ca_pem]), "SASL_SSL");
    ok(lag(&mtls(), &["--tls-ca", &ca_pem, "--tls-cert", &cert, "--tls-key", &key]), "mTLS");
    ok(
        kdeck()
            .args(["lag", "-G", &group, "-b", &sasl_plaintext(), "--sasl-user", "alice"])
            .env("KDECK_SASL_PASSWORD", alice_password())
            .output()
            .unwrap(),
        "SASL_PLAINTEXT, the password from the environment",
    );
    // The same by -X, as librdkafka spells it.
    ok(
        lag(
            &sasl_ssl(),
            &["-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=alice", "-X", &format!("sasl.password={}", alice_password()), "-X", &format!("ssl.ca.location={ca_pem}")],
        ),
        "SASL_SSL by -X",
    );
}

#[test]
fn a_run_over_sasl_ssl_consumes_to_the_end_and_its_dead_letters_go_out_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sec-run");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    let records: Vec<_> = (0..20).map(|i| (0, None, Some(if i == 7 { &b"not json"[..] } else { &b"{\"n\":1}"[..] }), vec![])).collect();
    produce_raw(&topic, &records);
    let pw = password_file(dir.path(), &alice_password());
    let out = kdeck()
        .args(["run", "--headless", "--stop-at-end", "-b", &sasl_ssl(), "-G", &unique("sec-g"), "-t", &topic, "--format", "json"])
        .args(["--sasl-user", "alice", "--sasl-password-file", pw.to_str().unwrap(), "--tls-ca", &ca("ca.pem")])
        .arg("--sink")
        .arg(format!("jsonl:{}", dir.path().join("out.jsonl").display()))
        .arg("--log-file")
        .arg(dir.path().join("kdeck.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(line_count(&dir.path().join("out.jsonl")), 19);
    assert_eq!(read_topic(&format!("{topic}.dlq")).len(), 1, "the dead letter went out over the same secured listener");
}

#[test]
fn bad_credentials_and_mismatched_tls_get_one_sentence_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let good = password_file(dir.path(), &alice_password());
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let (good, wrong) = (good.to_str().unwrap(), wrong.to_str().unwrap());
    let (ca_pem, other) = (ca("ca.pem"), ca("other-ca.pem"));
    let (stranger_cert, stranger_key, client_cert) = (ca("stranger.pem"), ca("stranger.key"), ca("client.pem"));
    let (expired_cert, expired_key) = (ca("expired.pem"), ca("expired.key"));
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        ("a wrong password", sasl_ssl(), vec!["--sasl-user", "alice", "--sasl-password-file", wrong, "--tls-ca", &ca_pem], "authentication failed for user alice with SCRAM-SHA-512"),
        ("an unknown CA", sasl_ssl(), vec!["--sasl-user", "alice", "--sasl-password-file", good, "--tls-ca", &other], "the broker's certificate is not signed by the given CA"),
        ("TLS against a plaintext port", brokers(), vec!["--tls-ca", &ca_pem], "does not speak TLS on this port"),
        ("no client certificate where one is required", mtls(), vec!["--tls-ca", &ca_pem], "the broker asks for a client certificate"),
        ("a client certificate of a CA the broker does not trust", mtls(), vec!["--tls-ca", &ca_pem, "--tls-cert", &stranger_cert, "--tls-key", &stranger_key], "does not trust the client certificate's CA"),
        ("a certificate and a key that do not match", mtls(), vec!["--tls-ca", &ca_pem, "--tls-cert", &client_cert, "--tls-key", &stranger_key], "the client certificate and its key do not match"),
        ("an expired client certificate", mtls(), vec!["--tls-ca", &ca_pem, "--tls-cert", &expired_cert, "--tls-key", &expired_key], "the broker refused the client certificate"),
        ("plaintext against a SASL port", sasl_plaintext(), vec![], "expects SASL on this port"),
        ("plaintext against a TLS port", mtls(), vec![], "whether it needs TLS or SASL"),
    ];
    for (what, brokers, options, expected) in cases {
        let started = Instant::now();
        let out = lag_with(&brokers, &options);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(err.contains(expected), "{what}: expected `{expected}` in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one sentence: {err}");
        assert!(started.elapsed() < Duration::from_secs(12), "{what}: took {:?}", started.elapsed());
        assert!(!err.contains(&alice_password()) && !err.contains("not-the-password"), "{what}: a password shown: {err}");
    }
}

#[test]
fn the_password_is_never_shown_in_output_logs_snapshots_or_the_audit_store() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sec-secret");
    create_topic(&topic, 1);
    create_topic(&format!("{topic}.dlq"), 1);
    produce_raw(&topic, &[(0, None, Some(&b"{}"[..]), vec![]), (0, None, Some(&b"oops"[..]), vec![])]);
    let password = alice_password();
    let wrong = "a-wrong-secret-4711";
    let run = |password: &str, tag: &str| {
        kdeck()
            .args(["run", "--headless", "--json", "--stop-at-end", "-b", &sasl_ssl(), "-G", &unique("sec-s"), "-t", &topic, "--format", "json"])
            .args(["--sasl-user", "alice", "--tls-ca", &ca("ca.pem"), "--connect-timeout", "5s"])
            .env("KDECK_SASL_PASSWORD", password)
            .arg("--log-file")
            .arg(dir.path().join(format!("{tag}.log")))
            .arg("--audit")
            .arg(dir.path().join("audit.sqlite"))
            .output()
            .unwrap()
    };
    let good = run(&password, "good");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let failed = run(wrong, "failed");
    assert!(!failed.status.success());
    let help = kdeck().args(["run", "--help"]).env("KDECK_SASL_PASSWORD", &password).output().unwrap();
    let mut seen: Vec<(String, Vec<u8>)> = vec![
        ("stdout".into(), good.stdout),
        ("stderr".into(), good.stderr),
        ("failed stdout".into(), failed.stdout),
        ("failed stderr".into(), failed.stderr),
        ("--help".into(), help.stdout),
    ];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        seen.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    for (name, bytes) in &seen {
        for secret in [password.as_bytes(), wrong.as_bytes()] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "a password is in {name}");
        }
    }
    assert!(seen.iter().any(|(n, b)| n.ends_with("good.log") && !b.is_empty()), "the log was written and searched");
}

/// `kdeck run` as alice over SASL_SSL (the password from the environment).
fn run_as_alice(group: &str, topic: &str, dir: &std::path::Path, extra: &[&str]) -> Output {
    run_as_alice_on(group, &["-t", topic], dir, extra)
}

/// The same with any subscription (`-t …` or `--pattern …`).
fn run_as_alice_on(group: &str, subscription: &[&str], dir: &std::path::Path, extra: &[&str]) -> Output {
    kdeck()
        .args(["run", "--headless", "--stop-at-end", "-b", &sasl_ssl(), "-G", group, "--connect-timeout", "5s"])
        .args(subscription)
        .args(["--sasl-user", "alice", "--tls-ca", &ca("ca.pem")])
        .args(extra)
        .env("KDECK_SASL_PASSWORD", alice_password())
        .arg("--log-file")
        .arg(dir.join("kdeck.log"))
        .arg("--audit")
        .arg(dir.join("audit.sqlite"))
        .output()
        .unwrap()
}

#[test]
fn what_the_acls_refuse_is_named_and_nothing_is_committed_past_it() {
    let dir = tempfile::tempdir().unwrap();
    // alice may use names beginning with sec- only.
    let hidden = unique("open");
    create_topic(&hidden, 1);
    let out = run_as_alice(&unique("sec-g"), &hidden, dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("user alice may not read topic `{hidden}`")) && err.contains("DESCRIBE"), "{err}");

    let topic = unique("sec-acl");
    create_topic(&topic, 1);
    produce_raw(&topic, &[(0, None, Some(&b"{}"[..]), vec![]), (0, None, Some(&b"not json"[..]), vec![]), (0, None, Some(&b"{}"[..]), vec![])]);
    let other_group = unique("other");
    let started = Instant::now();
    let out = run_as_alice(&other_group, &topic, dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("user alice may not use group `{other_group}`")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // A dead-letter topic alice may not write: the partition is blocked at the
    // bad record (offset 1), and nothing past it is committed. (It stays blocked,
    // writes retried, until the right is granted or the run is stopped.)
    let group = unique("sec-dlq");
    let status = dir.path().join("dlq.stderr");
    let mut child = Killed(
        kdeck()
            .args(["run", "--headless", "-b", &sasl_ssl(), "-G", &group, "-t", &topic, "--connect-timeout", "5s", "--format", "json", "--dlq", &hidden])
            .args(["--sasl-user", "alice", "--tls-ca", &ca("ca.pem")])
            .env("KDECK_SASL_PASSWORD", alice_password())
            .arg("--log-file")
            .arg(dir.path().join("dlq.log"))
            .arg("--audit")
            .arg(dir.path().join("dlq.sqlite"))
            .stderr(std::fs::File::create(&status).unwrap())
            .spawn()
            .unwrap(),
    );
    let blocked = format!("dead-letter topic {hidden} refused the record");
    wait_for("the partition blocked", Duration::from_secs(60), || std::fs::read_to_string(&status).is_ok_and(|s| s.contains(&blocked)));
    sigterm(&child.0);
    let exit = wait_exit(&mut child.0, Duration::from_secs(30));
    assert!(!exit.success());
    let err = std::fs::read_to_string(&status).unwrap();
    assert!(err.contains("TopicAuthorizationFailed") && err.contains("grant WRITE"), "{err}");
    assert!(committed_offsets(&group, &topic).get(&0).is_none_or(|o| *o <= 1), "{:?}", committed_offsets(&group, &topic));
}

#[test]
fn the_demo_runs_against_a_secured_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let users = std::fs::read_to_string(certs().join("users")).unwrap();
    let admin = users.lines().find_map(|l| l.strip_prefix("admin ")).unwrap();
    let pw = password_file(dir.path(), admin);
    let out = kdeck()
        .args(["demo", "-b", &sasl_ssl(), "--sasl-user", "admin", "--tls-ca", &ca("ca.pem"), "--headless", "--json", "--duration", "5s"])
        .arg("--sasl-password-file")
        .arg(&pw)
        .arg("--log-file")
        .arg(dir.path().join("demo.log"))
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(last["consumed"].as_u64().unwrap() > 0, "{last}");
}

#[test]
fn the_config_files_properties_reach_the_eos_dead_letter_and_replay_producers() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, out) = (unique("sec-eos-in"), unique("sec-eos-out"));
    let dlq = format!("{topic}.dlq");
    for t in [&topic, &out, &dlq] {
        create_topic(t, 1);
    }
    let records: Vec<_> = (0..20).map(|i| (0, None, Some(if i == 7 { &b"not json"[..] } else { &b"{\"n\":1}"[..] }), vec![])).collect();
    produce_raw(&topic, &records);
    // Everything about the cluster in the config file, nothing on the command line.
    let config = dir.path().join("kdeck.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = \"{}\"\n[properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"alice\"\n\"sasl.password\" = \"{}\"\n\"ssl.ca.location\" = \"{}\"\n",
            sasl_ssl(),
            alice_password(),
            ca("ca.pem")
        ),
    )
    .unwrap();
    let group = unique("sec-eos-g");
    let eos = |transactional_id: &str| {
        kdeck()
            .args(["run", "--headless", "--stop-at-end", "--connect-timeout", "5s", "-G", &group, "-t", &topic, "--format", "json"])
            .args(["--commit", "eos", "--sink", &format!("kafka:{out}"), "--transactional-id", transactional_id, "--dlq", &dlq])
            .arg("--config")
            .arg(&config)
            .arg("--log-file")
            .arg(dir.path().join("kdeck.log"))
            .arg("--audit")
            .arg(dir.path().join("audit.sqlite"))
            .output()
            .unwrap()
    };
    // A transactional id the ACLs refuse: named, and nothing written or committed.
    let refused = eos(&unique("other-tx"));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("may not use transactional id `other-tx") && err.contains("grant WRITE and DESCRIBE"), "{err}");
    assert_eq!(committed_offsets(&group, &topic).get(&0), Some(&-1), "nothing committed");
    assert_eq!(read_committed_count(&out), 0, "nothing written");

    let done = eos(&unique("sec-tx"));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(read_committed_count(&out), 19, "the eos producer wrote over SASL_SSL");
    assert_eq!(read_committed_count(&dlq), 1, "the dead letter went out over SASL_SSL");
    assert_eq!(committed_offsets(&group, &topic).get(&0), Some(&20));

    // The replay producer: the dead letter back to its source topic, over SASL_SSL.
    let replay = kdeck()
        .args(["dlq", "replay", "-b", &sasl_ssl(), "--dlq", &dlq, "--mode", "republish", "--sasl-user", "alice", "--tls-ca", &ca("ca.pem")])
        .env("KDECK_SASL_PASSWORD", alice_password())
        .arg("--audit")
        .arg(dir.path().join("audit.sqlite"))
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(end_offsets(&topic).get(&0), Some(&21), "the replayed record is back in its source topic");
}

#[test]
fn a_topic_alice_may_see_but_not_read_is_named_among_others_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // scripts/kafka lets alice DESCRIBE topics beginning with seen-, not READ them.
    let (readable, unreadable) = (unique("sec-ok"), unique("seen-x"));
    create_topic(&readable, 1);
    create_topic(&unreadable, 1);
    produce_raw(&readable, &[(0, None, Some(&b"{}"[..]), vec![])]);
    produce_raw(&unreadable, &[(0, None, Some(&b"{}"[..]), vec![])]);
    let group = unique("sec-seen");
    let started = Instant::now();
    let out = run_as_alice(&group, &readable, dir.path(), &["-t", &unreadable]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("user alice may not read topic `{unreadable}`")) && err.contains("grant READ"), "{err}");
    assert!(!err.contains(&readable), "only the unreadable topic is named: {err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(committed_offsets(&group, &readable).get(&0), Some(&-1), "nothing consumed before the refusal was found");

    // By a pattern, found only when a fetch is refused (librdkafka's error names
    // no topic): the assigned topics are asked which one it is.
    let pattern = format!("^({readable}|{unreadable})$");
    let out = run_as_alice_on(&group, &["--pattern", &pattern], dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(!out.status.success());
    assert!(last.contains(&format!("user alice may not read topic `{unreadable}`")) && !last.contains(&readable), "{err}");
}

#[test]
fn a_kip_848_group_alice_may_see_but_not_use_stops_the_run() {
    // scripts/kafka lets alice DESCRIBE groups beginning with seen-, not READ them:
    // the coordinator is found, and the heartbeat is refused (a fatal error in
    // librdkafka's consumer protocol, reported once).
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sec-848");
    create_topic(&topic, 1);
    let group = unique("seen-g");
    let started = Instant::now();
    let mut child = Killed(
        kdeck()
            .args(["run", "--headless", "--stop-at-end", "-b", &sasl_ssl(), "-G", &group, "-t", &topic, "--connect-timeout", "5s"])
            .args(["--sasl-user", "alice", "--tls-ca", &ca("ca.pem"), "-X", "group.protocol=consumer"])
            .env("KDECK_SASL_PASSWORD", alice_password())
            .arg("--log-file")
            .arg(dir.path().join("kdeck.log"))
            .arg("--audit")
            .arg(dir.path().join("audit.sqlite"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let exit = wait_exit(&mut child.0, Duration::from_secs(30));
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(!exit.success());
    assert!(err.contains(&format!("user alice may not use group `{group}`")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}
