//! Replaying dead-lettered records: reprocess them through the pipeline
//! in-process, or republish them to their source topic and partition. Every
//! replay is audited; replaying a record that was replayed before needs `force`.

use kdeck_ui::intent::ReplayMode;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::Timestamp;
use serde_json::{json, Value};

use super::audit::Audit;
use super::dlq::headers::{source_of, SourceRef};
use super::dlq::Producer;
use super::handler::HandlerFactory;

/// A dead-lettered record, restored to what it was at its source.
pub struct ReplayTarget {
    /// Identity for the replay-once rule: where it sits in the dead-letter topic.
    pub id: String,
    pub source: SourceRef,
    pub record: OwnedMessage,
}

fn decode_b64(v: &Value) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine as _;
    match v.as_str() {
        None => Ok(None),
        Some(s) => base64::engine::general_purpose::STANDARD.decode(s).map(Some).map_err(|e| format!("corrupt payload in the audit store: {e}")),
    }
}

impl ReplayTarget {
    /// From a dead-letter event of the audit store.
    pub fn from_audit(audit: &Audit, id: i64) -> Result<ReplayTarget, String> {
        let ev = audit.get(id)?.ok_or_else(|| format!("no audit event {id}"))?;
        if ev.kind != "dead_letter" {
            return Err(format!("audit event {id} is a {}, not a dead-lettered record", ev.kind));
        }
        let d = &ev.detail;
        let src = &d["source"];
        let source = SourceRef {
            topic: src["topic"].as_str().unwrap_or_default().to_string(),
            partition: src["partition"].as_i64().unwrap_or(-1) as i32,
            offset: src["offset"].as_i64().unwrap_or(-1),
            group: src["group"].as_str().map(String::from),
            error: d["error"]["message"].as_str().map(String::from),
            convention: "kdeck",
        };
        // The exact bytes where the text form was not exact.
        let headers = match super::headers::from_base64(&d["headers_b64"]) {
            Some(exact) => super::headers::build(exact.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))),
            None => {
                let mut headers = OwnedHeaders::new();
                if let Some(h) = d["headers"].as_object() {
                    for (k, v) in h {
                        headers = headers.insert(Header { key: k, value: v.as_str().map(str::as_bytes) });
                    }
                }
                headers
            }
        };
        let ts = src["timestamp"].as_i64().map_or(Timestamp::NotAvailable, Timestamp::CreateTime);
        let record = OwnedMessage::new(
            decode_b64(&d["value_b64"])?,
            decode_b64(&d["key_b64"])?,
            source.topic.clone(),
            ts,
            source.partition,
            source.offset,
            Some(headers),
        );
        let dlq = &d["dlq"];
        let id = format!("{}/{}/{}", dlq["topic"].as_str().unwrap_or_default(), dlq["partition"], dlq["offset"]);
        Ok(ReplayTarget { id, source, record })
    }

    /// From a record read off a dead-letter topic (kdeck's or another tool's).
    pub fn from_dlq_record(m: &OwnedMessage) -> Result<ReplayTarget, String> {
        let pairs = super::headers::pairs(m);
        let source = source_of(&pairs).ok_or_else(|| {
            format!("{}[{}]@{} names no source topic (no kdeck, Spring, Karafka or Connect headers)", m.topic(), m.partition(), m.offset())
        })?;
        let headers = super::headers::without(m, super::dlq::headers::is_dead_letter_header_bytes);
        let record = OwnedMessage::new(
            m.payload().map(<[u8]>::to_vec),
            m.key().map(<[u8]>::to_vec),
            source.topic.clone(),
            m.timestamp(),
            source.partition,
            source.offset,
            Some(headers),
        );
        Ok(ReplayTarget { id: format!("{}/{}/{}", m.topic(), m.partition(), m.offset()), source, record })
    }
}

/// Replays one record and audits the outcome. Returns what happened, in one line.
pub fn replay(
    target: &ReplayTarget,
    mode: ReplayMode,
    force: bool,
    audit: &Audit,
    producer: &Producer,
    handlers: &HandlerFactory,
) -> Result<String, String> {
    let before = audit.replayed(&target.id)?;
    if before > 0 && !force {
        return Err(format!("{} was replayed {before} time(s) already; use --force to replay it again", target.id));
    }
    let r = &target.record;
    let outcome = match mode {
        ReplayMode::Reprocess => {
            let mut handler = handlers(r.topic(), r.partition());
            handler.handle(r).and_then(|()| handler.flush(None)).map(|()| "reprocessed through the pipeline".to_string()).map_err(|f| f.to_string())
        }
        ReplayMode::Republish => {
            let headers = r.headers().cloned().unwrap_or_default();
            producer
                .send(r.topic(), Some(r.partition()), r.key(), r.payload(), headers)
                .map(|(p, o)| format!("republished to {}[{p}]@{o}", r.topic()))
        }
    };
    let mode_name = match mode {
        ReplayMode::Reprocess => "reprocess",
        ReplayMode::Republish => "republish",
    };
    let detail = json!({
        "record": target.id, "mode": mode_name, "forced": force && before > 0,
        "source": {"topic": target.source.topic, "partition": target.source.partition, "offset": target.source.offset,
                   "convention": target.source.convention},
        "ok": outcome.is_ok(),
        "outcome": match &outcome { Ok(o) => o.clone(), Err(e) => e.clone() },
    });
    match &outcome {
        // Only a replay that worked counts towards the replay-once rule.
        Ok(o) => audit.replay(&target.id, &format!("replay {} ({mode_name}): {o}", target.id), &detail)?,
        Err(e) => audit.record("replay", &format!("replay {} ({mode_name}) failed: {e}", target.id), &detail)?,
    };
    outcome
}
