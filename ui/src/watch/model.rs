//! What `kdeck watch` and `kdeck lag` show of consumer groups kdeck does not
//! join: built by kdeck's monitor, read by the views and printed as JSON.
//! Unknown values are None (shown `?`, `null` in JSON), never a guess.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WatchSnapshot {
    pub captured_at_ms: u64,
    pub cluster: String,
    pub groups: Vec<GroupView>,
    /// Why the last sample failed, if it did (the groups are then the sample before).
    pub error: Option<String>,
    /// Outcomes of operator actions (offset resets), newest last, bounded.
    pub notices: Vec<String>,
}

/// Burrow's verdicts, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Rewind,
    Stall,
    Stop,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Rewind => "REWIND",
            Verdict::Stall => "STALL",
            Verdict::Stop => "STOP",
        }
    }
}

/// A group as the cluster describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupDescription {
    pub group: String,
    /// Stable, PreparingRebalance, CompletingRebalance, Empty, Dead or Unknown.
    pub state: String,
    /// classic, consumer (KIP-848) or unknown.
    pub protocol: String,
    pub assignor: String,
    /// host:port (id N); None when the group has no coordinator.
    pub coordinator: Option<String>,
    pub members: Vec<MemberView>,
    /// Why the group could not be described, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub instance_id: Option<String>,
    pub partitions: Vec<(String, i32)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupView {
    #[serde(flatten)]
    pub description: GroupDescription,
    pub partitions: Vec<GroupPartitionView>,
    /// The worst of the partitions' verdicts; None when none could be judged.
    pub verdict: Option<Verdict>,
    /// Where the commit history comes from, or why it is missing.
    pub history: String,
    /// The group's total lag over the chart's span, oldest first (watch only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub lag_history: Vec<LagPoint>,
}

impl GroupView {
    /// Sum of the partitions' lags; None while any is unknown.
    pub fn lag_total(&self) -> Option<i64> {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupPartitionView {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub end: Option<i64>,
    pub lag: Option<i64>,
    /// Now less the timestamp of the oldest record not yet committed; 0 caught up.
    pub lag_ms: Option<i64>,
    /// Offsets committed per second over the window.
    pub commit_rate: Option<f64>,
    pub last_commit_ms: Option<i64>,
    pub verdict: Option<Verdict>,
    /// client id @ host of the member it is assigned to.
    pub member: Option<String>,
    /// Why the committed offset is unknown, when it could not be read (an open
    /// transaction holding it, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One point of a lag chart.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LagPoint {
    pub at_ms: u64,
    /// Records behind, summed over the group's partitions; None if any was unknown.
    pub lag: Option<i64>,
    /// The most behind partition's lag in time.
    pub lag_ms: Option<i64>,
    /// Committed offsets summed over the group's partitions (their rise is the
    /// group's throughput); None if any was unknown.
    #[serde(default)]
    pub committed: Option<i64>,
}
