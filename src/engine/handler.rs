//! What a worker does with a record. The pipeline (decode, validate, sinks)
//! plugs in here; the engine only needs to know when a record has finished.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::{Headers, Message, OwnedMessage};

/// Handles the records of one partition, in order, on that partition's worker thread.
pub trait Handler: Send {
    /// Processes one record. An error is retried (with backoff) until it succeeds
    /// or the partition is revoked; the record is never skipped.
    fn handle(&mut self, record: &OwnedMessage) -> Result<(), String>;

    /// Makes the records handled so far durable. Records are reported finished
    /// (and so become committable) only after this returns Ok.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Builds one handler per assigned partition.
pub type HandlerFactory = Arc<dyn Fn(&str, i32) -> Box<dyn Handler> + Send + Sync>;

/// Where handled records go, as chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Nothing: records are consumed and counted.
    Null,
    /// One JSON line per record (topic, partition, offset, key, value, timestamp, headers)
    /// appended to a file: handy for debugging and for scripts.
    Jsonl(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "null" => Ok(SinkSpec::Null),
            Some(("jsonl", path)) if !path.is_empty() => Ok(SinkSpec::Jsonl(PathBuf::from(path))),
            _ => Err(format!("unknown sink `{s}`: expected null or jsonl:PATH")),
        }
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Null => write!(f, "null"),
            SinkSpec::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
        }
    }
}

impl SinkSpec {
    /// A factory of handlers writing to this sink, each first waiting `delay`
    /// per record (to simulate slow work in demos and tests).
    pub fn factory(&self, delay: Duration) -> Result<HandlerFactory, String> {
        let file = match self {
            SinkSpec::Null => None,
            SinkSpec::Jsonl(path) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open the sink file {}: {e}", path.display()))?;
                Some(Arc::new(Mutex::new(BufWriter::new(f))))
            }
        };
        Ok(Arc::new(move |_topic: &str, _partition: i32| -> Box<dyn Handler> {
            Box::new(SinkHandler { file: file.clone(), delay, line: Vec::new() })
        }))
    }
}

struct SinkHandler {
    file: Option<Arc<Mutex<BufWriter<File>>>>,
    delay: Duration,
    line: Vec<u8>,
}

impl Handler for SinkHandler {
    fn handle(&mut self, record: &OwnedMessage) -> Result<(), String> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let Some(file) = &self.file else { return Ok(()) };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &record_json(record)).map_err(|e| e.to_string())?;
        self.line.push(b'\n');
        // One write per line under the lock, so lines of different partitions never interleave.
        file.lock().unwrap().write_all(&self.line).map_err(|e| format!("sink write failed: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        match &self.file {
            Some(file) => file.lock().unwrap().flush().map_err(|e| format!("sink flush failed: {e}")),
            None => Ok(()),
        }
    }
}

/// A record as JSON: text where the bytes are UTF-8, otherwise lossy text.
pub fn record_json(record: &OwnedMessage) -> serde_json::Value {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers()
        .map(|h| h.iter().map(|h| (h.key.to_string(), text(h.value).into())).collect())
        .unwrap_or_default();
    serde_json::json!({
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "key": text(record.key()),
        "value": text(record.payload()),
        "timestamp": record.timestamp().to_millis(),
        "headers": headers,
    })
}
