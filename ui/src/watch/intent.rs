//! What the operator can ask of `kdeck watch`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchIntent {
    /// Move an Empty group's committed offsets (`kafka-consumer-groups
    /// --reset-offsets`): one partition, or every partition it has an offset for.
    ResetOffsets { group: String, partition: Option<(String, i32)>, to: ResetTarget },
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetTarget {
    Earliest,
    Latest,
    /// The first record at or after this time (RFC 3339, as typed).
    Timestamp(String),
    Offset(i64),
}

impl std::fmt::Display for ResetTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetTarget::Earliest => write!(f, "earliest"),
            ResetTarget::Latest => write!(f, "latest"),
            ResetTarget::Timestamp(t) => write!(f, "the time {t}"),
            ResetTarget::Offset(o) => write!(f, "offset {o}"),
        }
    }
}
