//! Avro (with schema evolution) and Protobuf in the Confluent wire format,
//! through a Schema Registry: a stand-in speaking the registry's REST API.

mod common;

use std::collections::BTreeMap;

use apache_avro::types::Record;
use apache_avro::Schema;
use common::*;
use prost_reflect::{DescriptorPool, DynamicMessage, Value as PValue};

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},
  {"name":"note","type":"string","default":"none"}]}"#;
const PROTO: &str = r#"syntax = "proto3"; package shop;
message Ping { int32 n = 1; }
message Order { string id = 1; int64 cents = 2; repeated string items = 3; }"#;

fn framed(id: u32, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend(body);
    v
}

fn avro(schema: &Schema, fill: impl FnOnce(&mut Record)) -> Vec<u8> {
    let mut r = Record::new(schema).unwrap();
    fill(&mut r);
    apache_avro::writer::datum::GenericDatumWriter::builder(schema).build().unwrap().write_value_to_vec(r).unwrap()
}

/// Runs kdeck to the end of `topic` with a jsonl sink; returns offset -> decoded value.
fn consume(topic: &str, extra: &[&str]) -> BTreeMap<i64, serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.jsonl");
    let mut out = run_to_end(&unique("g-schema"), topic, dir.path())
        .args(extra)
        .arg("--sink")
        .arg(format!("jsonl:{}", sink.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A decode that keeps failing (e.g. refused credentials) parks its record: bound the wait.
    assert!(wait_exit(&mut out, std::time::Duration::from_secs(60)).success());
    std::fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["offset"].as_i64().unwrap(), v["value"].clone())
        })
        .collect()
}

#[test]
fn avro_through_the_registry_evolves_both_ways() {
    let registry = fake_registry_with_auth(
        vec![(21, "orders-value", "AVRO", V1.to_string()), (22, "orders-value", "AVRO", V2.to_string())],
        Some("reader:s3cret"),
    );
    // Basic auth rides in the URL, as users write it.
    let registry = registry.replace("http://", "http://reader:s3cret@");
    let (v1, v2) = (Schema::parse_str(V1).unwrap(), Schema::parse_str(V2).unwrap());
    let topic = unique("avro");
    create_topic(&topic, 1);
    let old = framed(21, avro(&v1, |r| r.put("id", 1i64)));
    let new = framed(
        22,
        avro(&v2, |r| {
            r.put("id", 2i64);
            r.put("note", "gift wrap");
        }),
    );
    produce_raw(&topic, &[(0, None, Some(&old), vec![]), (0, None, Some(&new), vec![])]);
    let dir = tempfile::tempdir().unwrap();
    let (v1_file, v2_file) = (dir.path().join("v1.avsc"), dir.path().join("v2.avsc"));
    std::fs::write(&v1_file, V1).unwrap();
    std::fs::write(&v2_file, V2).unwrap();

    // Each record read with its own writer schema.
    let plain = consume(&topic, &["--format", "avro", "--schema-registry", &registry]);
    assert_eq!(plain[&0], serde_json::json!({"id": 1}));
    assert_eq!(plain[&1], serde_json::json!({"id": 2, "note": "gift wrap"}));
    // New reader: the old record gains the default.
    let newer = consume(&topic, &["--format", "avro", "--schema-registry", &registry, "--reader-schema", v2_file.to_str().unwrap()]);
    assert_eq!(newer[&0], serde_json::json!({"id": 1, "note": "none"}));
    // Old reader: the new record's added field is dropped.
    let older = consume(&topic, &["--format", "avro", "--schema-registry", &registry, "--reader-schema", v1_file.to_str().unwrap()]);
    assert_eq!(older[&1], serde_json::json!({"id": 2}));
}

#[test]
fn protobuf_through_the_registry_follows_the_message_indexes() {
    let registry = fake_registry(vec![(31, "shop-value", "PROTOBUF", PROTO.to_string())]);
    let file = kdeck::engine::pipeline::registry::compile_proto("shop.proto", PROTO).unwrap();
    let pool: &DescriptorPool = file.parent_pool();
    let order = pool.get_message_by_name("shop.Order").unwrap();
    let mut msg = DynamicMessage::new(order);
    msg.set_field_by_name("id", PValue::String("o-1".into()));
    msg.set_field_by_name("cents", PValue::I64(1999));
    msg.set_field_by_name("items", PValue::List(vec![PValue::String("kb".into()), PValue::String("mouse".into())]));
    let mut body = vec![2, 2]; // message indexes: count 1, index 1 (zigzag): the second message, Order
    prost::Message::encode(&msg, &mut body).unwrap();
    let ping = pool.get_message_by_name("shop.Ping").unwrap();
    let mut p = DynamicMessage::new(ping);
    p.set_field_by_name("n", PValue::I32(5));
    let mut first = vec![0]; // index list [0] written as the single byte 0
    prost::Message::encode(&p, &mut first).unwrap();

    let topic = unique("proto");
    create_topic(&topic, 1);
    produce_raw(&topic, &[(0, None, Some(&framed(31, body)), vec![]), (0, None, Some(&framed(31, first)), vec![])]);
    let got = consume(&topic, &["--format", "protobuf", "--schema-registry", &registry]);
    assert_eq!(got[&0], serde_json::json!({"id": "o-1", "cents": "1999", "items": ["kb", "mouse"]}));
    assert_eq!(got[&1], serde_json::json!({"n": 5}));
}
