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
    Quit,
}
