//! Resetting an Empty group's committed offsets, as `kafka-consumer-groups
//! --reset-offsets` does: to the earliest or latest offset, to the first
//! record at or after a time, or to an offset (kept within the partition's
//! range). Refused, with the reason, while the group has members: they would
//! overwrite the reset with their next commit.

use std::time::Duration;

use kdeck_ui::watch::intent::ResetTarget;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::admin;

/// One partition's move: (topic, partition, committed before, reset to).
pub type Move = (String, i32, Option<i64>, i64);

pub fn reset(client: &BaseConsumer, group: &str, partition: Option<(String, i32)>, to: &ResetTarget, timeout: Duration) -> Result<Vec<Move>, String> {
    let described = admin::describe_groups(client, &[group.to_string()], timeout)?;
    let d = described.first().ok_or_else(|| format!("group `{group}` was not described"))?;
    if d.state != "Empty" {
        return Err(format!(
            "group `{group}` is {} with {} member{}: offsets can be reset only when it is Empty (stop its consumers first)",
            d.state,
            d.members.len(),
            if d.members.len() == 1 { "" } else { "s" }
        ));
    }
    let committed = admin::committed_offsets(client, group, timeout)?;
    let partitions: Vec<(String, i32, Option<i64>)> = match &partition {
        Some((t, p)) => vec![(t.clone(), *p, committed.iter().find(|c| &c.topic == t && c.partition == *p).and_then(|c| c.offset))],
        None => committed.iter().map(|c| (c.topic.clone(), c.partition, c.offset)).collect(),
    };
    if partitions.is_empty() {
        return Err(format!("group `{group}` has no committed offsets to reset"));
    }
    let at_ms = match to {
        ResetTarget::Timestamp(t) => Some(
            humantime::parse_rfc3339_weak(t)
                .map_err(|_| format!("`{t}` is not a time like 2026-11-27T10:00:00Z"))?
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| format!("`{t}` is before 1970"))?
                .as_millis() as i64,
        ),
        _ => None,
    };
    let mut moves = Vec::new();
    for (topic, p, before) in partitions {
        let (low, high) = client
            .fetch_watermarks(&topic, p, timeout)
            .map_err(|e| format!("cannot read the offsets of {topic}[{p}]: {e}"))?;
        let target = match to {
            ResetTarget::Earliest => low,
            ResetTarget::Latest => high,
            ResetTarget::Offset(o) => within(*o, low, high),
            ResetTarget::Timestamp(_) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Offset(at_ms.unwrap_or_default())).map_err(|e| e.to_string())?;
                let cannot = |e: String| format!("cannot find the offset at that time in {topic}[{p}]: {e}");
                let found = client.offsets_for_times(tpl, timeout).map_err(|e| cannot(e.to_string()))?;
                let answer = found.find_partition(&topic, p).ok_or_else(|| cannot("no answer for the partition".into()))?;
                answer.error().map_err(|e| cannot(e.to_string()))?;
                match answer.offset() {
                    Offset::Offset(o) => o,
                    // No record at or after the time: the end.
                    Offset::End => high,
                    other => return Err(cannot(format!("the answer was {other:?}"))),
                }
            }
        };
        moves.push((topic, p, before, target));
    }
    let offsets: Vec<(String, i32, i64)> = moves.iter().map(|(t, p, _, o)| (t.clone(), *p, *o)).collect();
    admin::alter_offsets(client, group, &offsets, timeout)?;
    Ok(moves)
}

/// `offset` kept within the partition's range, as kafka-consumer-groups does;
/// never a panic when the range comes back inverted.
fn within(offset: i64, low: i64, high: i64) -> i64 {
    offset.max(low).min(high)
}

/// `orders[0] 120→0, orders[1] ?→0`.
pub fn describe(moves: &[Move]) -> String {
    moves
        .iter()
        .map(|(t, p, before, after)| format!("{t}[{p}] {}→{after}", before.map_or("?".to_string(), |b| b.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn an_offset_is_kept_within_the_range_without_panicking_on_an_inverted_one() {
        assert_eq!(within(42, 0, 100), 42);
        assert_eq!(within(-5, 10, 100), 10);
        assert_eq!(within(500, 10, 100), 100);
        assert_eq!(within(42, 100, 10), 10, "low above high (answers from two moments)");
    }
}
