//! `jsonl:PATH`: one JSON line per record, appended.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rdkafka::message::OwnedMessage;
use serde_json::Value;

use super::{record_json, Sink};
use crate::engine::handler::{Failure, Progress, Stage};

#[derive(Clone)]
pub struct SharedFile {
    file: Arc<Mutex<BufWriter<File>>>,
    line: Vec<u8>,
}

impl SharedFile {
    pub fn open(path: &Path) -> Result<SharedFile, String> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the sink file {}: {e}", path.display()))?;
        Ok(SharedFile { file: Arc::new(Mutex::new(BufWriter::new(f))), line: Vec::new() })
    }
}

impl Sink for SharedFile {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &record_json(record, value))
            .map_err(|e| Failure::retryable(Stage::Sink, e.to_string()))?;
        self.line.push(b'\n');
        // One write per line under the lock, so lines of different partitions never interleave.
        self.file
            .lock()
            .unwrap()
            .write_all(&self.line)
            .map_err(|e| Failure::unavailable(Stage::Sink, format!("sink write failed: {e}")))
    }

    fn flush(&mut self, _: Option<&Progress>) -> Result<(), Failure> {
        self.file.lock().unwrap().flush().map_err(|e| Failure::retryable(Stage::Sink, format!("sink flush failed: {e}")))
    }
}
