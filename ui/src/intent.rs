//! Everything the operator can ask of the engine. The engine turns each
//! intent into a command applied at a defined point of its loop; the outcome
//! shows in the next snapshot.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    PausePartition { topic: String, partition: i32 },
    ResumePartition { topic: String, partition: i32 },
    PauseAll,
    ResumeAll,
    /// A strategy in its CLI spelling (`per-message`, `batch:500`, `interval:2s`, `at-most-once`).
    SetCommitStrategy(String),
    /// Try a parked record now instead of at its due time.
    RetryNow { topic: String, partition: i32, offset: i64 },
    /// Give up on a parked record: send it to the dead-letter topic now.
    DeadLetterNow { topic: String, partition: i32, offset: i64 },
    /// Replay a dead-lettered record (by its audit-store id).
    Replay { audit_id: i64, mode: ReplayMode, force: bool },
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayMode {
    /// Run it through the pipeline again, in-process.
    Reprocess,
    /// Produce it again to its source topic and partition.
    Republish,
}
