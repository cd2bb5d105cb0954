//! A verdict instead of a number: Burrow's evaluation of a partition over a
//! window of its last commits.
//!
//! In order, the first that holds:
//! 1. unknown: the lag now is unknown (no committed offset, or no end offset);
//! 2. REWIND: a commit in the window is below the one before it;
//! 3. STOP: behind, and the last commit is older than the window's span (the
//!    time from its first commit to its last), or than `min_span` if larger;
//! 4. OK: caught up now, or at any commit in the window;
//! 5. STALL: behind, and the window's commits (two or more) all have one offset;
//! 6. WARN: the offsets advance but the lag at each commit is at least the one
//!    before, and grew overall;
//! 7. OK.

pub use kdeck_ui::watch::model::Verdict;

/// For scripts and alerting: 0 OK, 1 WARN, 2 an error (STALL, STOP, REWIND).
pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Ok => 0,
        Verdict::Warn => 1,
        _ => 2,
    }
}

/// One commit of the partition: its offset, when the coordinator wrote it, and
/// the lag then (the partition's end at that time less the offset) if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub offset: i64,
    pub at_ms: i64,
    pub lag: Option<i64>,
}

/// What the evaluation knows beside the window.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at_ms: i64,
    /// The lag now; None when unknown.
    pub lag: Option<i64>,
    /// Commits from this time on would be in the window: with none there, the
    /// partition has not committed since.
    pub seen_since_ms: i64,
    /// The least span STOP waits for: one or two quick commits must not make a
    /// short pause look like a stopped consumer.
    pub min_span_ms: i64,
}

/// `window`: the partition's last commits, oldest first.
pub fn evaluate(window: &[Commit], now: Now) -> Option<Verdict> {
    let lag = now.lag?;
    if window.windows(2).any(|w| w[1].offset < w[0].offset) {
        return Some(Verdict::Rewind);
    }
    let span = match (window.first(), window.last()) {
        (Some(first), Some(last)) => last.at_ms - first.at_ms,
        _ => 0,
    };
    let last_at = window.last().map_or(now.seen_since_ms, |c| c.at_ms);
    if lag > 0 && now.at_ms - last_at > span.max(now.min_span_ms) {
        return Some(Verdict::Stop);
    }
    if lag == 0 || window.iter().any(|c| c.lag == Some(0)) {
        return Some(Verdict::Ok);
    }
    if window.is_empty() {
        // Behind, no commit seen, but not for long enough to call it stopped.
        return None;
    }
    if window.len() >= 2 && window.iter().all(|c| c.offset == window[0].offset) {
        return Some(Verdict::Stall);
    }
    let lags: Option<Vec<i64>> = window.iter().map(|c| c.lag).collect();
    if let Some(lags) = lags {
        let never_shrinks = lags.windows(2).all(|w| w[1] >= w[0]);
        if lags.len() >= 2 && never_shrinks && lags[lags.len() - 1] > lags[0] {
            return Some(Verdict::Warn);
        }
    }
    Some(Verdict::Ok)
}

/// The window as the verdict sees it: the commits read from the log, and the
/// group's committed offset read just now as a commit made by now when the
/// log has not shown it yet: it differs from the last commit in the window, or
/// (with none there) it moved since the last sample. The log can lag behind:
/// an open transaction on `__consumer_offsets` holds read_committed back.
pub fn with_current(window: &[Commit], committed: Option<i64>, moved: bool, lag: Option<i64>, now_ms: i64) -> Vec<Commit> {
    let mut out = window.to_vec();
    if let Some(offset) = committed {
        let unseen = match window.last() {
            Some(last) => last.offset != offset,
            None => moved,
        };
        if unseen {
            out.push(Commit { offset, at_ms: now_ms, lag });
        }
    }
    out
}

/// A group's verdict: the worst of its partitions'; unknown ones do not count.
pub fn worst(verdicts: impl IntoIterator<Item = Option<Verdict>>) -> Option<Verdict> {
    verdicts.into_iter().flatten().max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(points: &[(i64, i64, i64)]) -> Vec<Commit> {
        points.iter().map(|&(offset, at_ms, lag)| Commit { offset, at_ms, lag: Some(lag) }).collect()
    }

    fn now(at_ms: i64, lag: i64) -> Now {
        Now { at_ms, lag: Some(lag), seen_since_ms: 0, min_span_ms: 1_000 }
    }

    #[test]
    fn ok_when_caught_up_now_or_at_any_commit_in_the_window() {
        let w = commits(&[(10, 1_000, 0), (20, 2_000, 5), (30, 3_000, 9)]);
        assert_eq!(evaluate(&w, now(3_100, 9)), Some(Verdict::Ok));
        let w = commits(&[(10, 1_000, 3), (20, 2_000, 5)]);
        assert_eq!(evaluate(&w, now(2_100, 0)), Some(Verdict::Ok));
    }

    #[test]
    fn ok_when_the_lag_shrinks_while_committing() {
        let w = commits(&[(10, 1_000, 50), (40, 2_000, 30), (70, 3_000, 10)]);
        assert_eq!(evaluate(&w, now(3_100, 10)), Some(Verdict::Ok));
    }

    #[test]
    fn warn_when_committing_but_the_lag_keeps_growing() {
        let w = commits(&[(10, 1_000, 5), (20, 2_000, 5), (30, 3_000, 8)]);
        assert_eq!(evaluate(&w, now(3_100, 8)), Some(Verdict::Warn));
    }

    #[test]
    fn stall_when_committing_the_same_offset_while_behind() {
        let w = commits(&[(10, 1_000, 5), (10, 2_000, 7), (10, 3_000, 9)]);
        assert_eq!(evaluate(&w, now(3_100, 9)), Some(Verdict::Stall));
    }

    #[test]
    fn stop_when_no_commit_for_longer_than_the_window_while_behind() {
        let w = commits(&[(10, 1_000, 5), (20, 2_000, 5), (30, 3_000, 5)]);
        // The window spans 2 s: 1.9 s after the last commit is not yet a stop.
        assert_eq!(evaluate(&w, now(4_900, 5)), Some(Verdict::Ok));
        assert_eq!(evaluate(&w, now(5_100, 5)), Some(Verdict::Stop));
        // A window of one commit spans nothing: min_span (1 s) is the bound.
        assert_eq!(evaluate(&w[..1], now(1_900, 5)), Some(Verdict::Ok));
        assert_eq!(evaluate(&w[..1], now(2_100, 5)), Some(Verdict::Stop));
        // Caught up, a consumer that has nothing to commit is not stopped.
        assert_eq!(evaluate(&w, now(60_000, 0)), Some(Verdict::Ok));
        // No commit seen since the observation began long ago, while behind.
        assert_eq!(evaluate(&[], Now { seen_since_ms: 0, ..now(60_000, 5) }), Some(Verdict::Stop));
    }

    #[test]
    fn rewind_when_the_committed_offset_goes_backwards() {
        let w = commits(&[(10, 1_000, 5), (30, 2_000, 5), (0, 3_000, 40)]);
        assert_eq!(evaluate(&w, now(3_100, 40)), Some(Verdict::Rewind));
    }

    #[test]
    fn unknown_when_the_lag_is_unknown_or_too_little_was_seen() {
        let w = commits(&[(10, 1_000, 5)]);
        assert_eq!(evaluate(&w, Now { lag: None, ..now(1_100, 5) }), None);
        assert_eq!(evaluate(&[], Now { seen_since_ms: 900, ..now(1_100, 5) }), None);
        assert_eq!(evaluate(&[], Now { seen_since_ms: 900, ..now(1_100, 0) }), Some(Verdict::Ok));
    }

    #[test]
    fn a_commit_the_log_has_not_shown_yet_counts_as_made_now() {
        let w = commits(&[(10, 1_000, 5), (20, 2_000, 5)]);
        // The log is behind: 30 is committed, the window ends at 20. Not a stop.
        let seen = with_current(&w, Some(30), false, Some(5), 90_000);
        assert_eq!(seen.last(), Some(&Commit { offset: 30, at_ms: 90_000, lag: Some(5) }));
        assert_eq!(evaluate(&seen, now(90_000, 5)), Some(Verdict::Ok));
        assert_eq!(evaluate(&w, now(90_000, 5)), Some(Verdict::Stop), "without it");
        // Below the window's last: a rewind the log has not shown yet.
        assert_eq!(evaluate(&with_current(&w, Some(0), false, Some(40), 2_500), now(2_500, 40)), Some(Verdict::Rewind));
        // The same offset adds nothing; an empty window gains one only when the offset moved.
        assert_eq!(with_current(&w, Some(20), false, Some(5), 3_000), w);
        assert!(with_current(&[], Some(20), false, Some(5), 3_000).is_empty());
        assert_eq!(with_current(&[], Some(20), true, Some(5), 3_000).len(), 1);
    }

    #[test]
    fn a_group_is_as_bad_as_its_worst_partition() {
        assert_eq!(worst([Some(Verdict::Ok), None, Some(Verdict::Warn)]), Some(Verdict::Warn));
        assert_eq!(worst([Some(Verdict::Warn), Some(Verdict::Stall)]).map(exit_code), Some(2));
        assert_eq!(worst([None, None]), None);
    }
}
