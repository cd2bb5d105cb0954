//! Everything that reads bytes from the wire, fed arbitrary bytes: the
//! decoders (JSON, Avro, Protobuf, Confluent framing), schema-registry
//! answers, the four dead-letter header conventions, raw headers and the exec
//! protocol, and `__consumer_offsets` records. Each must answer with a value or
//! a failure, never panic.
//!
//! CI runs proptest's default case count; `scripts/fuzz` runs a million of each
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use rdkafka::message::OwnedMessage;

use super::dlq::headers::{source_of, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use super::pipeline::decode::{wire, Decoder, Format};

const AVRO: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"customer","type":"string"},{"name":"amount","type":"long"},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"extra","type":{"type":"map","values":"double"}},
    {"name":"note","type":["null","string"]}]}"#;

const PROTO: &str = r#"syntax = "proto3"; package t;
    message Order { string customer = 1; int64 amount = 2; repeated string tags = 3;
      map<string, double> extra = 4; Inner inner = 5; message Inner { bytes b = 1; } }"#;

fn decoder() -> Decoder {
    let file = super::pipeline::registry::compile_proto("order.proto", PROTO).unwrap();
    let proto_message = file.messages().next();
    Decoder { avro_writer: Some(apache_avro::Schema::parse_str(AVRO).unwrap()), proto_message, ..Default::default() }
}

/// Arbitrary bytes, and bytes that start like what the decoder expects (so the
/// fuzzing gets past the first checks).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|b| [&[0u8, 0, 0, 0, 1][..], &b].concat()),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|b| [&[0u8, 0, 0, 0, 1, 0][..], &b].concat()),
        "\\PC{0,200}".prop_map(|s| s.into_bytes()),
    ]
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in payload()) {
        let d = decoder();
        for format in [Format::Json, Format::Avro, Format::Protobuf, Format::Text, Format::Bytes] {
            let _ = d.decode(format, Some(&bytes));
        }
        let _ = wire(&bytes);
    }

    #[test]
    fn registry_answers_never_panic(body in "\\PC{0,300}", schema in "\\PC{0,100}", kind in prop_oneof![
        Just("AVRO".to_string()), Just("PROTOBUF".to_string()), Just("JSON".to_string()), "\\PC{0,8}"])
    {
        let _ = super::pipeline::registry::parse(7, &body);
        let answer = serde_json::json!({"schemaType": kind, "schema": schema}).to_string();
        let _ = super::pipeline::registry::parse(7, &answer);
    }

    #[test]
    fn dead_letter_headers_never_panic(
        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)), 12),
        names in proptest::collection::vec("\\PC{0,30}", 0..6),
    ) {
        // Each convention's names with arbitrary values (Spring's are binary big-endian).
        let conventions = [
            [SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET],
            ["kafka_dlt-original-topic", "kafka_dlt-original-partition", "kafka_dlt-original-offset"],
            ["source_topic", "source_partition", "source_offset"],
            ["__connect.errors.topic", "__connect.errors.partition", "__connect.errors.offset"],
        ];
        let mut pairs: Vec<(String, Option<Vec<u8>>)> =
            conventions.iter().flatten().zip(&values).map(|(k, v)| (k.to_string(), v.clone())).collect();
        pairs.extend(names.into_iter().map(|n| (n, None)));
        let _ = source_of(&pairs);
        for (k, _) in &pairs {
            let _ = super::dlq::headers::is_dead_letter_header(k);
        }
    }

    #[test]
    fn raw_headers_never_panic(headers in proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 0..16), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))), 0..6))
    {
        let built = super::headers::build(headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
        let record = OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, 0, Some(built));
        let raw = super::headers::of(&record);
        let _ = super::headers::display(&raw);
        let exact = super::headers::from_base64(&super::headers::to_base64(&raw)).unwrap();
        // Keys are NUL-terminated in librdkafka: what follows a NUL is not kept.
        let expected: Vec<_> = headers.iter().map(|(k, v)| (k.split(|b| *b == 0).next().unwrap().to_vec(), v.clone())).collect();
        prop_assert_eq!(exact, expected);
        let _ = super::sink::record_json(&record, &serde_json::Value::Null);
    }

    #[test]
    fn exec_answers_never_panic(answer in "\\PC{0,100}") {
        let _ = super::sink::parse_exec_answer(&answer);
    }

    #[test]
    fn offsets_topic_records_never_panic(
        key_version in 0i16..4, key in proptest::collection::vec(any::<u8>(), 0..64),
        value_version in 0i16..6, value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)))
    {
        let key = [&key_version.to_be_bytes()[..], &key].concat();
        let value = value.map(|v| [&value_version.to_be_bytes()[..], &v].concat());
        let _ = crate::monitor::offsets_topic::parse(Some(&key), value.as_deref());
        let _ = crate::monitor::offsets_topic::parse(None, value.as_deref());
    }
}
