//! Time as the screen shows it: always relative to the snapshot's capture time,
//! never `now()`, so the same snapshot renders the same way.

/// `3s`, `4m05s`, `2h03m`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// How long before `now` something happened: `12s ago`.
pub fn ago(at_ms: u64, now_ms: u64) -> String {
    format!("{} ago", span(now_ms.saturating_sub(at_ms)))
}

/// Until something is due: `in 3s`, or `due` once it is.
pub fn until(at_ms: u64, now_ms: u64) -> String {
    if at_ms <= now_ms {
        "due".into()
    } else {
        format!("in {}", span(at_ms - now_ms + 999))
    }
}

/// Wall-clock time of day (UTC): `14:03:09`.
pub fn clock(at_ms: u64) -> String {
    let s = (at_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// `1.2k`, `3.4M`.
pub fn count(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_relative_times() {
        assert_eq!(span(5_400), "5s");
        assert_eq!(span(245_000), "4m05s");
        assert_eq!(span(7_380_000), "2h03m");
        assert_eq!(ago(1_000, 13_000), "12s ago");
        assert_eq!(until(10_000, 7_500), "in 3s");
        assert_eq!(until(1_000, 2_000), "due");
        assert_eq!(clock(3_723_000), "01:02:03");
        assert_eq!(count(12_345.0), "12.3k");
    }
}
