//! Per-partition offset tracking: which received records have finished, and
//! the contiguous watermark below which everything has.
//!
//! Offsets within a partition are increasing but not dense (compaction,
//! transaction markers), so "contiguous" means "every record *received*
//! below the watermark has finished", not "every integer".

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Received, in offset order, with a finished flag and the bytes the record
    /// holds; the finished prefix is popped.
    pending: VecDeque<(i64, bool, usize)>,
    /// Everything below this offset has finished (None before the first record).
    watermark: Option<i64>,
    unfinished: usize,
    /// Bytes of the records received and not finished (queued, in hand, parked).
    unfinished_bytes: usize,
}

impl OffsetTracker {
    /// Registers a record handed to a worker. Offsets must increase; a repeat or
    /// an older offset (a rewind after a failed commit) restarts tracking there.
    pub fn received(&mut self, offset: i64) {
        self.received_sized(offset, 0)
    }

    /// `received`, for a record holding `bytes` of memory until it finishes.
    pub fn received_sized(&mut self, offset: i64, bytes: usize) {
        if let Some(&(last, _, _)) = self.pending.back() {
            if offset <= last {
                self.reset_to(offset);
            }
        } else if matches!(self.watermark, Some(w) if offset < w) {
            self.reset_to(offset);
        }
        self.pending.push_back((offset, false, bytes));
        self.unfinished += 1;
        self.unfinished_bytes += bytes;
    }

    /// Declares everything below `offset` done before any record arrives (a start
    /// offset kept outside Kafka).
    pub fn start_at(&mut self, offset: i64) {
        if self.pending.is_empty() && self.watermark.is_none() {
            self.watermark = Some(offset);
        }
    }

    /// Everything below `position` (the consumer's position: one past the last
    /// record delivered, or past the transaction markers and aborted records it
    /// skipped) is done when nothing received is still unfinished. Those skipped
    /// offsets are never delivered, so without this the watermark would stop
    /// short of them for ever.
    pub fn caught_up_to(&mut self, position: i64) -> bool {
        if self.pending.is_empty() && self.watermark.is_none_or(|w| position > w) {
            self.watermark = Some(position);
            return true;
        }
        false
    }

    /// Marks a received record finished and advances the watermark over the finished prefix.
    /// Returns false when the offset was never received (ignored).
    pub fn finished(&mut self, offset: i64) -> bool {
        let Ok(i) = self.pending.binary_search_by_key(&offset, |&(o, _, _)| o) else {
            return false;
        };
        if !self.pending[i].1 {
            self.pending[i].1 = true;
            self.unfinished -= 1;
            self.unfinished_bytes -= self.pending[i].2;
        }
        while let Some(&(o, true, _)) = self.pending.front() {
            self.watermark = Some(o + 1);
            self.pending.pop_front();
        }
        true
    }

    /// The next offset to commit: every received record below it has finished.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Received records that have not finished yet.
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// Bytes held by received records that have not finished.
    pub fn unfinished_bytes(&self) -> usize {
        self.unfinished_bytes
    }

    fn reset_to(&mut self, offset: i64) {
        self.pending.clear();
        self.unfinished = 0;
        self.unfinished_bytes = 0;
        self.watermark = Some(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_the_oldest_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.received(o);
        }
        assert_eq!(t.watermark(), None);
        t.finished(11);
        t.finished(12);
        assert_eq!(t.watermark(), None, "10 is still running");
        t.finished(10);
        assert_eq!(t.watermark(), Some(13));
        assert_eq!(t.unfinished(), 2);
        t.finished(14);
        assert_eq!(t.watermark(), Some(13));
        t.finished(13);
        assert_eq!(t.watermark(), Some(15));
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn bytes_are_held_until_their_record_finishes() {
        let mut t = OffsetTracker::default();
        t.received_sized(0, 100);
        t.received_sized(1, 900_000);
        t.received_sized(2, 50);
        assert_eq!(t.unfinished_bytes(), 900_150);
        t.finished(1);
        assert_eq!(t.unfinished_bytes(), 150, "finished out of order still frees its bytes");
        t.finished(0);
        t.finished(2);
        assert_eq!(t.unfinished_bytes(), 0);
        t.received_sized(3, 10);
        t.received_sized(3, 10); // a rewind restarts the count
        assert_eq!(t.unfinished_bytes(), 10);
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_the_watermark_back() {
        let mut t = OffsetTracker::default();
        t.received(3);
        t.received(7); // 4..6 compacted away or transaction markers
        t.finished(3);
        t.finished(7);
        assert_eq!(t.watermark(), Some(8));
    }

    #[test]
    fn unknown_and_repeated_completions_are_ignored() {
        let mut t = OffsetTracker::default();
        t.received(1);
        assert!(!t.finished(2));
        assert!(t.finished(1));
        assert!(!t.finished(1));
        assert_eq!(t.watermark(), Some(2));
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn an_idle_partition_is_done_up_to_its_position_past_transaction_markers() {
        let mut t = OffsetTracker::default();
        for o in 0..3 {
            t.received(o);
        }
        // offset 3 is a commit marker: never delivered, but the position moves past it.
        assert!(!t.caught_up_to(4), "records still in flight hold the watermark");
        for o in 0..3 {
            t.finished(o);
        }
        assert_eq!(t.watermark(), Some(3));
        assert!(t.caught_up_to(4));
        assert_eq!(t.watermark(), Some(4));
        assert!(!t.caught_up_to(4), "no change, nothing to report");
        assert!(!t.caught_up_to(2), "a position never moves the watermark back");
        assert_eq!(t.watermark(), Some(4));
        t.received(4);
        assert!(!t.caught_up_to(5));
    }

    #[test]
    fn a_rewind_restarts_tracking_at_the_older_offset() {
        let mut t = OffsetTracker::default();
        t.received(5);
        t.received(6);
        t.finished(5);
        t.received(5); // redelivered after a seek
        assert_eq!(t.watermark(), Some(5));
        assert_eq!(t.unfinished(), 1);
        t.finished(5);
        assert_eq!(t.watermark(), Some(6));
    }

    mod model {
        use super::super::OffsetTracker;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// A record delivered `gap` offsets after the last (compaction, markers).
            Receive { gap: u8 },
            /// The `pick`-th unfinished record finishes (handled, dead-lettered or
            /// un-parked: finishing is out of order across parked records).
            Finish { pick: usize },
            /// The consumer's position runs `ahead` past the last delivered record
            /// (transaction markers, aborted records skipped).
            Skip { ahead: u8 },
            /// A commit of whatever the tracker says is done.
            Commit,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u8..3).prop_map(|gap| Op::Receive { gap }),
                4 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
                1 => (0u8..3).prop_map(|ahead| Op::Skip { ahead }),
                2 => Just(Op::Commit),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            /// Whatever the interleaving, nothing is ever committed past a record that
            /// was received and has not finished, and the commit never goes back.
            #[test]
            fn never_commits_past_an_unfinished_record(ops in proptest::collection::vec(op(), 1..200)) {
                let mut t = OffsetTracker::default();
                let (mut next, mut unfinished, mut committed) = (0i64, Vec::<i64>::new(), None::<i64>);
                for op in ops {
                    match op {
                        Op::Receive { gap } => {
                            let o = next + gap as i64;
                            t.received_sized(o, 10);
                            unfinished.push(o);
                            next = o + 1;
                        }
                        Op::Finish { pick } if !unfinished.is_empty() => {
                            let o = unfinished.remove(pick % unfinished.len());
                            prop_assert!(t.finished(o));
                        }
                        Op::Finish { .. } => {}
                        Op::Skip { ahead } => {
                            // librdkafka's position: past everything delivered, and past what it skipped.
                            next += ahead as i64;
                            t.caught_up_to(next);
                        }
                        Op::Commit => {
                            if let Some(w) = t.watermark() {
                                prop_assert!(committed.is_none_or(|c| w >= c), "the commit went back from {:?} to {w}", committed);
                                committed = Some(w);
                            }
                        }
                    }
                    if let (Some(c), Some(&oldest)) = (committed, unfinished.iter().min()) {
                        prop_assert!(c <= oldest, "committed {c} past unfinished {oldest}");
                    }
                    prop_assert_eq!(t.unfinished(), unfinished.len());
                    prop_assert_eq!(t.unfinished_bytes(), unfinished.len() * 10);
                }
                // Once everything has finished, the watermark is the position.
                for o in unfinished.drain(..) {
                    t.finished(o);
                }
                t.caught_up_to(next);
                prop_assert_eq!(t.watermark().unwrap_or(next), next);
            }
        }
    }
}
