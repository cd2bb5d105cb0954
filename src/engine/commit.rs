//! Commit strategies: policies over *when* the finished watermark is committed,
//! never over *what* (that is always the watermark, see `offsets.rs`).
//! At-most-once is the exception by definition: it commits what it received
//! before processing it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// However a batch strategy is set, finished work is committed at least this often.
pub const BATCH_INTERVAL_CAP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStrategy {
    /// Commit synchronously whenever the watermark moves.
    PerMessage,
    /// Commit asynchronously after N finished records (or `BATCH_INTERVAL_CAP`).
    Batch(u64),
    /// Commit asynchronously every interval.
    Interval(Duration),
    /// Commit what was received before it is processed: a crash loses it, never repeats it.
    AtMostOnce,
    /// Exactly once: the sink stores each batch and its partition's next offset in one
    /// transaction and partitions start from there; Kafka offsets follow as with batch.
    Eos,
}

impl Default for CommitStrategy {
    fn default() -> Self {
        CommitStrategy::Batch(1000)
    }
}

/// How a due commit is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    Sync,
    Async,
}

impl CommitStrategy {
    /// Whether the finished-but-uncommitted work should be committed now, and how.
    /// `finished_since_commit` counts records finished since the last commit.
    pub fn due(&self, finished_since_commit: u64, since_last_commit: Duration) -> Option<CommitMode> {
        if finished_since_commit == 0 {
            return None;
        }
        match *self {
            CommitStrategy::PerMessage => Some(CommitMode::Sync),
            CommitStrategy::Batch(n) => {
                (finished_since_commit >= n || since_last_commit >= BATCH_INTERVAL_CAP).then_some(CommitMode::Async)
            }
            CommitStrategy::Interval(d) => (since_last_commit >= d).then_some(CommitMode::Async),
            // The sink's own offsets are the truth; Kafka's only show progress to lag tools.
            CommitStrategy::Eos => (since_last_commit >= BATCH_INTERVAL_CAP).then_some(CommitMode::Async),
            // Received records are committed before dispatch; the watermark of finished
            // work is never behind what is committed, so there is nothing left to do.
            CommitStrategy::AtMostOnce => None,
        }
    }
}

impl fmt::Display for CommitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitStrategy::PerMessage => write!(f, "per-message"),
            CommitStrategy::Batch(n) => write!(f, "batch:{n}"),
            CommitStrategy::Interval(d) => write!(f, "interval:{}", humantime::format_duration(*d)),
            CommitStrategy::AtMostOnce => write!(f, "at-most-once"),
            CommitStrategy::Eos => write!(f, "eos"),
        }
    }
}

impl FromStr for CommitStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected per-message, batch:N, interval:DURATION (e.g. interval:5s), at-most-once or eos";
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        match (name, arg) {
            ("per-message", None) => Ok(CommitStrategy::PerMessage),
            ("at-most-once", None) => Ok(CommitStrategy::AtMostOnce),
            ("eos", None) => Ok(CommitStrategy::Eos),
            ("batch", Some(n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(CommitStrategy::Batch(n)),
                _ => Err(format!("commit strategy `{s}`: the batch size must be a whole number above 0")),
            },
            ("interval", Some(d)) => match humantime::parse_duration(d) {
                Ok(d) if !d.is_zero() => Ok(CommitStrategy::Interval(d)),
                _ => Err(format!("commit strategy `{s}`: the interval must be a duration above 0 such as 500ms or 5s")),
            },
            _ => Err(format!("unknown commit strategy `{s}`: {usage}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_through_their_spelling() {
        for s in ["per-message", "batch:1000", "interval:5s", "at-most-once", "eos"] {
            assert_eq!(s.parse::<CommitStrategy>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_spellings_say_what_is_expected() {
        assert!("batch:0".parse::<CommitStrategy>().unwrap_err().contains("above 0"));
        assert!("interval:soon".parse::<CommitStrategy>().unwrap_err().contains("duration"));
        assert!("sometimes".parse::<CommitStrategy>().unwrap_err().contains("expected per-message"));
    }

    #[test]
    fn batch_commits_on_count_or_on_the_interval_cap() {
        let b = CommitStrategy::Batch(100);
        assert_eq!(b.due(99, Duration::from_millis(10)), None);
        assert_eq!(b.due(100, Duration::from_millis(10)), Some(CommitMode::Async));
        assert_eq!(b.due(1, BATCH_INTERVAL_CAP), Some(CommitMode::Async));
        assert_eq!(b.due(0, Duration::from_secs(60)), None, "nothing finished, nothing to commit");
    }

    #[test]
    fn per_message_commits_synchronously_and_interval_waits() {
        assert_eq!(CommitStrategy::PerMessage.due(1, Duration::ZERO), Some(CommitMode::Sync));
        let i = CommitStrategy::Interval(Duration::from_secs(2));
        assert_eq!(i.due(500, Duration::from_secs(1)), None);
        assert_eq!(i.due(1, Duration::from_secs(2)), Some(CommitMode::Async));
        assert_eq!(CommitStrategy::AtMostOnce.due(10, Duration::from_secs(9)), None);
    }
}
