//! The dead-letter topic: records that cannot be processed are produced there
//! (acks=all, idempotent) with headers naming their source and the failure,
//! and recorded in the audit store. A record counts as finished only once the
//! topic has acknowledged it.

pub mod headers;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdeck_ui::model::DeadLetterView;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use serde_json::json;

use self::headers::*;
use super::audit::Audit;
use super::handler::Failure;
use super::sink::{base64, lossy};

type Delivered = Result<(i32, i64), String>;

pub struct DeliveryContext;
impl ClientContext for DeliveryContext {}
impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<crossbeam_channel::Sender<Delivered>>;
    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(explain(e)),
        });
    }
}

/// An error in words, with what to change when retrying cannot help by itself.
pub fn explain(e: &rdkafka::error::KafkaError) -> String {
    use rdkafka::types::RDKafkaErrorCode::*;
    let advice = match e.rdkafka_error_code() {
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge) => {
            "; it can never be written as it is: raise the topic's max.message.bytes (and -X message.max.bytes) to take it"
        }
        Some(TopicAuthorizationFailed | ClusterAuthorizationFailed) => {
            "; it can never be written without the right: grant WRITE on the topic to this user (or choose another topic)"
        }
        _ => "",
    };
    format!("{e}{advice}")
}

/// A producer whose sends can be waited on (dead letters, republished replays).
pub struct Producer {
    producer: ThreadedProducer<DeliveryContext>,
    timeout: Duration,
}

impl Producer {
    /// `properties` are the client's (`-X`): security settings apply here too.
    pub fn new(brokers: &str, properties: &[(String, String)], timeout: Duration) -> Result<Producer, String> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", brokers);
        for (k, v) in properties {
            if !is_consumer_only(k) {
                cc.set(k, v);
            }
        }
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            // A missing topic fails the send within the timeout instead of the default 30 s.
            .set("topic.metadata.propagation.max.ms", timeout.as_millis().to_string());
        let producer = cc.create_with_context(DeliveryContext).map_err(|e| format!("cannot create the dead-letter producer: {}", crate::security::client_error(&e)))?;
        Ok(Producer { producer, timeout })
    }

    /// Produces and waits for the acknowledgement: (partition, offset).
    pub fn send(&self, topic: &str, partition: Option<i32>, key: Option<&[u8]>, payload: Option<&[u8]>, headers: OwnedHeaders) -> Delivered {
        let ack = self.enqueue(topic, partition, key, payload, headers)?;
        self.wait(ack)
    }

    /// Sends every record (topic, key, value, headers), then waits for all their acknowledgements.
    pub fn send_all<'a>(
        &self,
        records: impl Iterator<Item = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>, OwnedHeaders)>,
    ) -> Result<(), String> {
        let acks = records.map(|(t, k, v, h)| self.enqueue(t, None, k, v, h)).collect::<Result<Vec<_>, _>>()?;
        acks.into_iter().try_for_each(|ack| self.wait(ack).map(|_| ()))
    }

    /// Hands one record to the producer (waiting while its queue is full); the
    /// receiver gets the delivery report.
    fn enqueue(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<crossbeam_channel::Receiver<Delivered>, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx)).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        send_when_room(&self.producer, record).map_err(|e| explain(&e))?;
        Ok(rx)
    }

    fn wait(&self, ack: crossbeam_channel::Receiver<Delivered>) -> Delivered {
        ack.recv_timeout(self.timeout + Duration::from_secs(5)).map_err(|_| "no acknowledgement in time".to_string())?
    }
}

/// Sends, waiting while the producer's queue is full (its background thread drains it).
pub fn send_when_room<C: ProducerContext, K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> rdkafka::error::KafkaResult<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                std::thread::sleep(Duration::from_millis(5));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Properties only a consumer understands (the producers take the rest of `-X`).
pub fn is_consumer_only(key: &str) -> bool {
    key.starts_with("group.") || key.starts_with("partition.assignment") || key.starts_with("session.timeout")
        || key.starts_with("heartbeat.") || key.starts_with("max.poll") || key.starts_with("auto.offset")
        || key.starts_with("enable.auto") || key.starts_with("fetch.") || key.starts_with("queued.")
        || key.starts_with("isolation.") || key == "group.id" || key.starts_with("statistics.")
}

/// A dead-letter record ready to be produced.
pub struct Letter {
    pub topic: String,
    pub headers: OwnedHeaders,
    pub at_ms: u64,
}

pub struct DeadLetterQueue {
    producer: Producer,
    /// `--dlq TOPIC`; otherwise `<source topic>.dlq`.
    topic: Option<String>,
    group: String,
    audit: Arc<Audit>,
}

impl DeadLetterQueue {
    pub fn new(producer: Producer, topic: Option<String>, group: &str, audit: Arc<Audit>) -> DeadLetterQueue {
        DeadLetterQueue { producer, topic, group: group.to_string(), audit }
    }

    pub fn topic_for(&self, source: &str) -> String {
        self.topic.clone().unwrap_or_else(|| format!("{source}.dlq"))
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Writes the record to the dead-letter topic and the audit store. An error
    /// means it is not in the topic: the record is not finished.
    pub fn send(&self, record: &OwnedMessage, failure: &Failure, attempts: u32) -> Result<DeadLetterView, String> {
        let letter = self.letter(record, failure, attempts);
        let (partition, offset) = self
            .producer
            .send(&letter.topic, None, record.key(), record.payload(), letter.headers.clone())
            .map_err(|e| format!("dead-letter topic {} refused the record: {e}", letter.topic))?;
        Ok(self.sent(record, failure, attempts, &letter, partition, offset))
    }

    /// The dead-letter record for `record`: its topic and headers (the original
    /// ones, then where it came from and why it failed).
    pub fn letter(&self, record: &OwnedMessage, failure: &Failure, attempts: u32) -> Letter {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        // The original headers byte for byte, less an earlier dead-letter's.
        let mut headers = super::headers::without(record, is_dead_letter_header_bytes);
        let ts = record.timestamp().to_millis().unwrap_or(-1).to_string();
        let fields = [
            (SOURCE_TOPIC, record.topic().to_string()),
            (SOURCE_PARTITION, record.partition().to_string()),
            (SOURCE_OFFSET, record.offset().to_string()),
            (SOURCE_TIMESTAMP, ts),
            (SOURCE_GROUP, self.group.clone()),
            (ERROR_STAGE, failure.stage.to_string()),
            (ERROR_CLASS, failure.class().to_string()),
            (ERROR_MESSAGE, failure.message.clone()),
            (ERROR_ATTEMPTS, attempts.to_string()),
            (ERROR_AT, now.to_string()),
        ];
        for (k, v) in &fields {
            headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        Letter { topic: self.topic_for(record.topic()), headers, at_ms: now }
    }

    /// Audits a dead letter that is (or, in a transaction, will be) in the topic;
    /// a position of -1 is not known yet.
    pub fn sent(&self, record: &OwnedMessage, failure: &Failure, attempts: u32, letter: &Letter, dlq_partition: i32, dlq_offset: i64) -> DeadLetterView {
        let (now, dlq_topic) = (letter.at_ms, letter.topic.clone());
        let raw = super::headers::of(record);
        let mut detail = json!({
            "source": {"topic": record.topic(), "partition": record.partition(), "offset": record.offset(),
                       "timestamp": record.timestamp().to_millis(), "group": self.group},
            "dlq": {"topic": dlq_topic, "partition": dlq_partition, "offset": dlq_offset},
            "error": {"stage": failure.stage.to_string(), "class": failure.class(), "message": failure.message, "attempts": attempts},
            "key_b64": record.key().map(base64),
            "value_b64": record.payload().map(base64),
            "key": lossy(record.key()),
            "value_preview": lossy(record.payload().map(|p| &p[..p.len().min(4096)])),
            "headers": super::headers::to_json(&raw),
        });
        if !super::headers::all_text(&raw) {
            detail["headers_b64"] = super::headers::to_base64(&raw);
        }
        let summary = format!(
            "{}[{}]@{} -> {dlq_topic}[{dlq_partition}]@{dlq_offset}: {}",
            record.topic(),
            record.partition(),
            record.offset(),
            failure
        );
        // The record is safely in the topic now; an audit failure must not make us write it twice.
        let audit_id = self.audit.record("dead_letter", &summary, &detail).map_err(|e| tracing::warn!("{e}")).ok();
        DeadLetterView {
            at_ms: now,
            topic: record.topic().to_string(),
            partition: record.partition(),
            offset: record.offset(),
            key: lossy(record.key()),
            stage: failure.stage.to_string(),
            class: failure.class().to_string(),
            message: failure.message.clone(),
            attempts,
            dlq_topic,
            dlq_partition,
            dlq_offset,
            audit_id,
            headers: super::headers::display(&raw),
            value_preview: preview(record.payload(), 2048),
        }
    }
}

/// Pretty JSON when the payload parses, text otherwise, cut at `max` bytes.
pub fn preview(payload: Option<&[u8]>, max: usize) -> String {
    let Some(p) = payload else { return "(null)".into() };
    let text = match serde_json::from_slice::<serde_json::Value>(p) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(p).into_owned(),
    };
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..cut], p.len())
}
