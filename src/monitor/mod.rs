//! Monitoring consumer groups from outside, without joining them: who is in
//! a group, its committed offsets, lag in records and in time, and a verdict
//! per partition and group (Burrow's rules, `verdict.rs`), from the group's
//! commits in `__consumer_offsets` (`offsets_topic.rs`). `kdeck lag` prints one
//! observation; the engine knows nothing of this module.

pub mod history;
pub mod observer;
pub mod offsets_topic;
pub mod reset;
pub mod verdict;

pub use observer::{Observer, Options};
