//! The Kafka sink on its own against the real broker.

mod common;

use common::*;
use kdeck::engine::dlq::Letter;
use kdeck::engine::handler::Progress;
use kdeck::engine::sink::{SinkFactory, SinkOptions, SinkSpec};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::Timestamp;

#[test]
fn dead_letters_carried_in_an_eos_batch_still_go_to_the_dead_letter_topic_when_eos_is_switched_off() {
    let out = unique("sink-out");
    let dlq = unique("sink-dlq");
    create_topic(&out, 1);
    create_topic(&dlq, 1);
    let options = SinkOptions { brokers: brokers(), group: unique("g-sink"), transactional_id: Some(unique("tx")), ..Default::default() };
    let factory = SinkFactory::new(&SinkSpec::Kafka(out.clone()), &options).unwrap();
    let eos = factory.exactly_once().unwrap();
    eos.set_enabled(true).unwrap();
    let mut sink = factory.open("in", 0);
    let good = OwnedMessage::new(Some(b"good".to_vec()), None, "in".into(), Timestamp::NotAvailable, 0, 0, None);
    let poison = OwnedMessage::new(Some(b"poison".to_vec()), None, "in".into(), Timestamp::NotAvailable, 0, 1, None);
    sink.write(&good, &serde_json::json!({})).unwrap();
    let letter = Letter { topic: dlq.clone(), headers: OwnedHeaders::new(), at_ms: 0 };
    assert!(sink.carry_dead_letter(&poison, &letter), "under eos the dead letter rides in the batch");
    // The operator switches out of eos before the batch is flushed.
    eos.set_enabled(false).unwrap();
    sink.flush(Some(&Progress { topic: "in", partition: 0, next_offset: 2 })).unwrap();
    let outputs: Vec<Vec<u8>> = read_topic(&out).iter().map(|m| m.payload().unwrap().to_vec()).collect();
    let letters: Vec<Vec<u8>> = read_topic(&dlq).iter().map(|m| m.payload().unwrap().to_vec()).collect();
    assert_eq!(outputs, vec![b"good".to_vec()], "only the output in the output topic");
    assert_eq!(letters, vec![b"poison".to_vec()], "the dead letter in the dead-letter topic");
}
