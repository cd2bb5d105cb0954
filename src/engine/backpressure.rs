//! Automatic back-pressure with hysteresis. Pausing makes librdkafka drop its
//! prefetched data for the partition and refetch on resume, so flapping is
//! expensive: pause at a high-water mark, resume only below a low-water mark
//! and after a minimum pause.

use std::time::{Duration, Instant};

/// Marks in records and in bytes: whichever is crossed first pauses.
#[derive(Debug, Clone, Copy)]
pub struct BackPressure {
    pub high_water: usize,
    pub low_water: usize,
    pub high_bytes: usize,
    pub low_bytes: usize,
    pub min_pause: Duration,
}

impl BackPressure {
    pub fn new(high_water: usize, high_bytes: usize) -> Self {
        let high_water = high_water.max(2);
        BackPressure {
            high_water,
            low_water: high_water / 4,
            high_bytes,
            low_bytes: high_bytes / 4,
            min_pause: Duration::from_millis(100),
        }
    }

    /// The new back-pressure pause for a partition holding `queued` records of
    /// `bytes` in all: `Some(since)` when paused. A record larger than the byte
    /// mark still goes through, alone: the pause comes after it.
    pub fn decide(&self, queued: usize, bytes: usize, paused_since: Option<Instant>, now: Instant) -> Option<Instant> {
        match paused_since {
            None if queued >= self.high_water || bytes >= self.high_bytes => Some(now),
            Some(since)
                if queued <= self.low_water && bytes <= self.low_bytes && now.duration_since(since) >= self.min_pause =>
            {
                None
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_at_high_water_and_resumes_only_below_low_water_after_the_minimum() {
        let bp = BackPressure::new(100, usize::MAX);
        let t0 = Instant::now();
        assert_eq!(bp.decide(99, 0, None, t0), None);
        let since = bp.decide(100, 0, None, t0).expect("paused at the high-water mark");
        let later = t0 + Duration::from_secs(1);
        assert_eq!(bp.decide(50, 0, Some(since), later), Some(since), "between the marks: stays paused");
        assert_eq!(bp.decide(10, 0, Some(since), t0 + Duration::from_millis(50)), Some(since), "too soon");
        assert_eq!(bp.decide(25, 0, Some(since), later), None, "at the low-water mark: resumes");
    }

    #[test]
    fn bytes_pause_too_whichever_mark_comes_first() {
        let bp = BackPressure::new(10_000, 8 << 20);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(bp.decide(3, 1 << 20, None, t0), None);
        let since = bp.decide(9, 9 << 20, None, t0).expect("a few huge records pause");
        assert_eq!(bp.decide(2, 3 << 20, Some(since), later), Some(since), "above a quarter of the bytes");
        assert_eq!(bp.decide(1, 1 << 20, Some(since), later), None);
    }
}
