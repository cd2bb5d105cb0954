//! What a worker does with a record, and how a failure is classified. The
//! pipeline (decode, validate, sink) implements `Handler`; the engine only
//! needs to know whether a record finished, or failed for good or for now.

use std::fmt;
use std::sync::Arc;

use rdkafka::message::OwnedMessage;

/// Where in the pipeline a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Decode,
    Validate,
    Handle,
    Sink,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Handle => "handle",
            Stage::Sink => "sink",
        })
    }
}

/// A failed attempt. Permanent failures go straight to the dead-letter topic;
/// retryable ones are parked and tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub permanent: bool,
    /// Not this record's fault: what it needs (the sink, the schema registry)
    /// cannot work right now. The partition is held and the record tried again
    /// until it can; it is never dead-lettered for this.
    pub unavailable: bool,
    pub message: String,
}

impl Failure {
    pub fn permanent(stage: Stage, message: impl Into<String>) -> Failure {
        Failure { stage, permanent: true, unavailable: false, message: message.into() }
    }

    pub fn retryable(stage: Stage, message: impl Into<String>) -> Failure {
        Failure { stage, permanent: false, unavailable: false, message: message.into() }
    }

    pub fn unavailable(stage: Stage, message: impl Into<String>) -> Failure {
        Failure { stage, permanent: false, unavailable: true, message: message.into() }
    }

    pub fn class(&self) -> &'static str {
        if self.permanent {
            "permanent"
        } else if self.unavailable {
            "unavailable"
        } else {
            "retryable"
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.stage, self.class(), self.message)
    }
}

/// How far a partition's processing has got: everything below `next_offset` finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub next_offset: i64,
}

/// Handles the records of one partition, in order, on that partition's worker thread.
pub trait Handler: Send {
    /// Processes one record.
    fn handle(&mut self, record: &OwnedMessage) -> Result<(), Failure>;

    /// How many records a worker may hand over at once (`handle_run`); 1: one at a time.
    fn run_size(&self) -> usize {
        1
    }

    /// Handles records in order, all at once (a pipelined sink): their outcomes in
    /// order. Records past the outcomes returned were not handled (the sink broke
    /// part-way) and are handed over again.
    fn handle_run(&mut self, records: &[OwnedMessage]) -> Vec<Result<(), Failure>> {
        records.iter().map(|r| self.handle(r)).collect()
    }

    /// Makes the records handled so far durable. Records are reported finished
    /// (and so become committable) only after this returns Ok. `progress` says how
    /// far the partition got, so an exactly-once sink can store it in the same
    /// transaction; it is None for work outside the stream (replays).
    fn flush(&mut self, _progress: Option<&Progress>) -> Result<(), Failure> {
        Ok(())
    }

    /// How many records to handle between flushes, when the handler knows better
    /// than the default (a transaction per flush wants larger batches).
    fn batch_size(&self) -> Option<usize> {
        None
    }

    /// Offers to produce a dead letter with the batch (in the same transaction as
    /// its outputs and offsets). False: the worker writes it to the topic itself.
    fn carry_dead_letter(&mut self, _record: &OwnedMessage, _letter: &crate::engine::dlq::Letter) -> bool {
        false
    }
}

/// Builds one handler per assigned partition.
pub type HandlerFactory = Arc<dyn Fn(&str, i32) -> Box<dyn Handler> + Send + Sync>;
