//! `kdeck audit …` and `kdeck dlq …`: reading the audit store, and reading and
//! redriving a dead-letter topic from the command line.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use kdeck_ui::intent::ReplayMode;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::{AuditArgs, AuditCommand, DlqArgs, DlqCommand, DlqFilter, DlqSource};
use crate::config::{self, FileConfig};
use crate::engine::audit::{self, Audit};
use crate::engine::dlq::headers::{source_of, ERROR_CLASS, ERROR_STAGE};
use crate::engine::dlq::{preview, Producer};
use crate::engine::pipeline::Pipeline;
use crate::engine::replay::{self, ReplayTarget};
use crate::engine::sink::lossy;

pub fn audit(args: &AuditArgs) -> Result<()> {
    let path = args.audit.clone().unwrap_or_else(audit::default_path);
    if !path.exists() {
        bail!("there is no audit store at {}; pass --audit PATH", path.display());
    }
    let store = Audit::open(&path).map_err(|e| anyhow!(e))?;
    match &args.command {
        AuditCommand::List { kind, limit } => {
            for e in store.list(kind.as_deref(), *limit).map_err(|e| anyhow!(e))? {
                println!("{:>6}  {}  {:<11}  {}", e.id, rfc3339(e.at_ms), e.kind, e.summary);
            }
        }
        AuditCommand::Show { id } => {
            let e = store.get(*id).map_err(|e| anyhow!(e))?.ok_or_else(|| anyhow!("no audit event {id} in {}", path.display()))?;
            println!("{}", serde_json::to_string_pretty(&e)?);
        }
        AuditCommand::Export { .. } => {
            let mut all = store.list(None, usize::MAX >> 1).map_err(|e| anyhow!(e))?;
            all.reverse();
            for e in all {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
    }
    Ok(())
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn dlq(args: &DlqArgs) -> Result<()> {
    match &args.command {
        DlqCommand::List { source, filter } => {
            for m in read(source, filter)? {
                println!("{}", describe(&m));
            }
            Ok(())
        }
        DlqCommand::Show { source, partition, offset } => {
            let filter = DlqFilter { partition: Some(*partition), offset: Some(*offset), ..Default::default() };
            let m = read(source, &filter)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{}[{partition}] has no record at offset {offset}", source.dlq))?;
            println!("{}", describe(&m));
            println!("key: {}", lossy(m.key()).unwrap_or_else(|| "(none)".into()));
            for (k, v) in crate::engine::headers::display(&crate::engine::headers::of(&m)) {
                println!("header {k}: {v}");
            }
            println!("value:\n{}", preview(m.payload(), 4000));
            Ok(())
        }
        DlqCommand::Replay { source, filter, mode, force, pipeline, audit } => {
            let mode = match mode.as_str() {
                "republish" => ReplayMode::Republish,
                "reprocess" => ReplayMode::Reprocess,
                other => bail!("unknown replay mode `{other}`: expected republish or reprocess"),
            };
            let props = properties(source)?;
            let store = Audit::open(&audit.clone().unwrap_or_else(audit::default_path)).map_err(|e| anyhow!(e))?;
            let producer = Producer::new(&source.brokers, &props, Duration::from_secs(10)).map_err(|e| anyhow!(e))?;
            let handlers = Pipeline::new(&config::pipeline(pipeline, &FileConfig::default(), "kdeck-replay", &source.brokers, &props)?).map_err(|e| anyhow!(e))?.factory();
            let records = read(source, filter)?;
            if records.is_empty() {
                bail!("no record of {} matches the filter", source.dlq);
            }
            let mut failed = 0;
            for m in &records {
                let outcome = ReplayTarget::from_dlq_record(m)
                    .and_then(|t| replay::replay(&t, mode, *force, &store, &producer, &handlers));
                match outcome {
                    Ok(o) => println!("{}[{}]@{}: {o}", m.topic(), m.partition(), m.offset()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}[{}]@{}: {e}", m.topic(), m.partition(), m.offset());
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} replays failed (see above); each attempt is in the audit store", records.len());
            }
            Ok(())
        }
    }
}

fn properties(source: &DlqSource) -> Result<Vec<(String, String)>> {
    let mut out = source.security.properties().map_err(|e| anyhow!(e))?;
    for kv in &source.properties {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("-X `{}` is not KEY=VALUE", crate::security::key_of(kv)))?;
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// Reads the dead-letter topic from its start to its current end (no group, nothing committed).
fn read(source: &DlqSource, filter: &DlqFilter) -> Result<Vec<OwnedMessage>> {
    let mut cc = ClientConfig::new();
    // assign() needs a group id; nothing is committed under it.
    cc.set("bootstrap.servers", &source.brokers)
        .set("group.id", "kdeck-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in properties(source)? {
        cc.set(k, v);
    }
    let timeout = Duration::from_secs(10);
    crate::security::check_connection(&source.brokers, &properties(source)?, timeout).map_err(|e| anyhow!(e))?;
    let consumer: BaseConsumer = cc.create().map_err(|e| anyhow!("cannot create a Kafka client: {}", crate::security::client_error(&e)))?;
    let md = consumer
        .fetch_metadata(Some(&source.dlq), timeout)
        .map_err(|e| anyhow!("cannot reach Kafka at {} ({e}); check --brokers", source.brokers))?;
    let topic = md.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty());
    let Some(topic) = topic else {
        bail!("topic `{}` does not exist on {}", source.dlq, source.brokers);
    };
    let since = filter.since.as_deref().map(parse_time).transpose()?;
    let until = filter.until.as_deref().map(parse_time).transpose()?;

    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in topic.partitions().iter().map(|p| p.id()).filter(|p| filter.partition.is_none_or(|f| f == *p)) {
        let (lo, hi) = consumer.fetch_watermarks(&source.dlq, p, timeout)?;
        let start = filter.offset.unwrap_or(lo).max(lo);
        if start < hi {
            tpl.add_partition_offset(&source.dlq, p, Offset::Offset(start))?;
            ends.push((p, hi));
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut remaining: std::collections::HashMap<i32, i64> = ends.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("reading {} did not reach its end within 60 s", source.dlq);
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            // A topic written in transactions ends with a marker that is never
            // delivered: the position, which moves past it, says the end is reached.
            if filter.offset.is_none() {
                remaining.retain(|p, end| position(&consumer, &source.dlq, *p).is_none_or(|pos| pos < *end));
            }
            continue;
        };
        let m = match m {
            // The group is only a name assign() needs; a cluster whose ACLs
            // refuse it says so here, and nothing here uses the group.
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed)) => continue,
            m => m?.detach(),
        };
        let p = m.partition();
        if filter.offset.is_some() || remaining.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
            // With --offset, reading started there: the first record is the one asked for.
            remaining.remove(&p);
        }
        if filter.offset.is_none_or(|o| o == m.offset()) && matches(&m, filter, since, until) {
            out.push(m);
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

/// The consumer's position in a partition: one past what it has delivered or skipped.
fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let tpl = consumer.position().ok()?;
    match tpl.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn parse_time(s: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| anyhow!("`{s}` is not a time like 2026-11-26T10:00:00Z"))?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
}

fn header<'a>(m: &'a OwnedMessage, key: &str) -> Option<&'a [u8]> {
    crate::engine::headers::last(m, key)
}

fn pairs(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    crate::engine::headers::pairs(m)
}

fn matches(m: &OwnedMessage, f: &DlqFilter, since: Option<i64>, until: Option<i64>) -> bool {
    let ts = m.timestamp().to_millis().unwrap_or(0);
    if since.is_some_and(|s| ts < s) || until.is_some_and(|u| ts >= u) {
        return false;
    }
    if let Some(t) = &f.source_topic {
        if source_of(&pairs(m)).is_none_or(|s| &s.topic != t) {
            return false;
        }
    }
    if let Some(e) = &f.error {
        let fields = [ERROR_CLASS, ERROR_STAGE, "kafka_dlt-exception-fqcn", "__connect.errors.exception.class.name"];
        if !fields.iter().any(|k| header(m, k).is_some_and(|v| String::from_utf8_lossy(v).contains(e.as_str()))) {
            return false;
        }
    }
    true
}

fn describe(m: &OwnedMessage) -> String {
    let src = source_of(&pairs(m))
        .map(|s| format!("{}[{}]@{} ({})", s.topic, s.partition, s.offset, s.convention))
        .unwrap_or_else(|| "unknown source".into());
    let text = |k: &str| header(m, k).map(|v| String::from_utf8_lossy(v).into_owned());
    let why = text("kdeck.error.message")
        .map(|msg| format!("{} {}: {msg}", text(ERROR_STAGE).unwrap_or_default(), text(ERROR_CLASS).unwrap_or_default()))
        .or_else(|| text("kafka_dlt-exception-message"))
        .or_else(|| text("__connect.errors.exception.message"))
        .unwrap_or_default();
    let at = m.timestamp().to_millis().map(|t| rfc3339(t as u64)).unwrap_or_default();
    format!("{}[{}]@{}  {at}  from {src}  {why}", m.topic(), m.partition(), m.offset())
}
