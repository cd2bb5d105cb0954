//! The Schema Registry over HTTPS with basic auth and a CA of its own
//! (`--registry-ca`): records decode through it, and every wrong setting is
//! one sentence at start, never a password.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const USER: &str = "reader";
const PASSWORD: &str = "registry-s3cret-77";
const SCHEMA: &str = r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#;

/// A topic of three Confluent-framed JSON records (schema id 5).
fn framed_topic() -> String {
    let topic = unique("reg-https");
    create_topic(&topic, 1);
    let values: Vec<Vec<u8>> = (1..=3).map(|n| [&[0u8, 0, 0, 0, 5][..], format!("{{\"n\":{n}}}").as_bytes()].concat()).collect();
    produce_raw(&topic, &values.iter().map(|v| (0, None, Some(&v[..]), vec![])).collect::<Vec<_>>());
    topic
}

/// `kdeck run` to the end of `topic` through `registry` with `extra` options.
fn run(topic: &str, dir: &std::path::Path, registry: &str, extra: &[&str], password_env: Option<&str>) -> Output {
    let mut cmd = run_to_end(&unique("g-reg-https"), topic, dir);
    cmd.args(["--format", "json", "--schema-registry", registry]).args(extra);
    cmd.arg("--sink").arg(format!("jsonl:{}", dir.join("out.jsonl").display()));
    cmd.env_remove("KDECK_REGISTRY_PASSWORD");
    if let Some(p) = password_env {
        cmd.env("KDECK_REGISTRY_PASSWORD", p);
    }
    cmd.output().unwrap()
}

#[test]
fn records_decode_through_an_https_registry_with_basic_auth_and_its_own_ca() {
    let upstream = fake_registry_with_auth(vec![(5, "reg-value", "JSON", SCHEMA.to_string())], Some(&format!("{USER}:{PASSWORD}")));
    let (_front, https) = https_front(&upstream);
    let topic = framed_topic();
    let with_user = https.replace("https://", &format!("https://{USER}@"));
    let ca_pem = ca("ca.pem");

    // The password from the environment, then from a file.
    let dir = tempfile::tempdir().unwrap();
    let out = run(&topic, dir.path(), &with_user, &["--registry-ca", &ca_pem], Some(PASSWORD));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(line_count(&dir.path().join("out.jsonl")), 3);
    let file = dir.path().join("registry-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let out = run(&topic, dir2.path(), &with_user, &["--registry-ca", &ca_pem, "--registry-password-file", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(dir2.path().join("out.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["value"]["n"], 1, "{first}");
    for log in [dir.path().join("kdeck.log"), dir2.path().join("kdeck.log")] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(PASSWORD), "the password is in {}", log.display());
    }
}

#[test]
fn a_wrong_ca_password_or_scheme_is_one_sentence_at_start() {
    let upstream = fake_registry_with_auth(vec![(5, "reg-value", "JSON", SCHEMA.to_string())], Some(&format!("{USER}:{PASSWORD}")));
    let (_front, https) = https_front(&upstream);
    let topic = framed_topic();
    let with_user = https.replace("https://", &format!("https://{USER}@"));
    let (ca_pem, other) = (ca("ca.pem"), ca("other-ca.pem"));
    let plain_http = with_user.replace("https://", "http://");
    let (_plain_front, plain) = http_front(&upstream);
    let https_to_http = plain.replace("http://", &format!("https://{USER}@"));
    let cases: Vec<(&str, &str, Vec<&str>, Option<&str>, &str)> = vec![
        ("no --registry-ca", &with_user, vec![], Some(PASSWORD), "is not signed by a CA kdeck trusts (give its CA with --registry-ca)"),
        ("another CA", &with_user, vec!["--registry-ca", &other], Some(PASSWORD), "is not signed by a CA kdeck trusts"),
        ("a wrong password", &with_user, vec!["--registry-ca", &ca_pem], Some("not-the-password-99"), "refused the user and password (401)"),
        ("no credentials", &https, vec!["--registry-ca", &ca_pem], None, "asks for credentials"),
        ("http:// against HTTPS", &plain_http, vec![], Some(PASSWORD), "does not speak plain HTTP"),
        ("https:// against HTTP", &https_to_http, vec!["--registry-ca", &ca_pem], Some(PASSWORD), "does not speak HTTPS"),
    ];
    for (what, url, extra, password, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = run(&topic, dir.path(), url, &extra, password);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: exited 0");
        assert!(err.contains(expected), "{what}: expected `{expected}` in: {err}");
        let said: Vec<&str> = err.lines().filter(|l| !l.starts_with("kdeck: logging to")).collect();
        assert_eq!(said.len(), 1, "{what}: one sentence: {err}");
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: took {:?}", started.elapsed());
        assert!(!err.contains(PASSWORD) && !err.contains("not-the-password-99"), "{what}: a password shown: {err}");
        assert!(!dir.path().join("out.jsonl").exists() || line_count(&dir.path().join("out.jsonl")) == 0, "{what}: records went through");
    }
}
