//! Reading `__consumer_offsets`: every offset commit of every group, with the
//! time the coordinator wrote it. Committed offsets alone (OffsetFetch) cannot
//! tell a consumer that commits the same offset again and again (stalled) from
//! one that stopped committing (stopped); the commit log can, as in Burrow.
//!
//! Formats (Apache Kafka's OffsetCommitKey/OffsetCommitValue, checked against
//! a 4.1 broker): a key of version 0 or 1 is an offset commit (group, topic,
//! partition as int16-length strings); other key versions are group metadata
//! and KIP-848 records, skipped. Values: v0 and v2 offset, metadata,
//! commit time; v1 adds the expiry time; v3 adds the leader epoch after the
//! offset; v4 is v3 in the flexible encoding (compact strings, tagged fields).
//! A null value deletes the offset. Everything is bounds-checked: this is wire
//! data and a reader never panics on it (`fuzz` feeds it arbitrary bytes).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::observer::{consumer, Options};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One record of the offsets topic, as far as offsets are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Commit { group: String, topic: String, partition: i32, offset: i64, at_ms: i64 },
    /// The group's offset for the partition was deleted (expired or by an admin).
    Deleted { group: String, topic: String, partition: i32 },
    /// An offset commit of `group` this reader cannot read (a value version it
    /// does not know, or cut short).
    Unreadable { group: String, why: String },
    /// Group metadata, KIP-848 records.
    Other,
}

/// The partition of `__consumer_offsets` that holds `group`'s commits: the
/// coordinator's `abs(groupId.hashCode()) % partitions` (Java's String hash
/// over UTF-16 code units).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    // Kafka's Utils.abs maps i32::MIN to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

pub fn parse(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Entry, String> {
    let Some(key) = key else { return Ok(Entry::Other) };
    let mut k = Reader(key);
    let version = k.i16()?;
    if !(0..=1).contains(&version) {
        return Ok(Entry::Other);
    }
    let group = k.string()?;
    let topic = k.string()?;
    let partition = k.i32()?;
    let Some(value) = value else { return Ok(Entry::Deleted { group, topic, partition }) };
    match commit_value(value) {
        Ok((offset, at_ms)) => Ok(Entry::Commit { group, topic, partition, offset, at_ms }),
        Err(why) => Ok(Entry::Unreadable { group, why }),
    }
}

/// (offset, commit time) of an OffsetCommitValue.
fn commit_value(value: &[u8]) -> Result<(i64, i64), String> {
    let mut v = Reader(value);
    let (offset, at_ms) = match v.i16()? {
        // v1's expiry time follows the commit time and is not needed.
        0..=2 => {
            let offset = v.i64()?;
            v.string()?;
            (offset, v.i64()?)
        }
        3 => {
            let offset = v.i64()?;
            v.i32()?;
            v.string()?;
            (offset, v.i64()?)
        }
        4 => {
            let offset = v.i64()?;
            v.i32()?;
            v.compact_string()?;
            (offset, v.i64()?)
        }
        // A commit this reader cannot read must not look like no commit.
        v => return Err(format!("an offset commit has value version {v}, which kdeck does not read")),
    };
    Ok((offset, at_ms))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("offsets-topic record ends early: {n} bytes wanted, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    /// An int16-length string; -1 is null (read as empty).
    fn string(&mut self) -> Result<String, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(len as usize)?).into_owned())
    }
    /// A varint of length + 1; 0 is null (read as empty).
    fn compact_string(&mut self) -> Result<String, String> {
        let len = self.varint()?;
        if len == 0 {
            return Ok(String::new());
        }
        let len = usize::try_from(len - 1).map_err(|_| "offsets-topic string length too large".to_string())?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("offsets-topic varint longer than 10 bytes".into())
    }
}

/// The partitions of `__consumer_offsets` that hold the watched groups'
/// commits, read from `lookback` ago (under read_committed: a transactional
/// offset commit counts once its transaction commits).
pub struct OffsetsLog {
    /// read_committed: a transactional offset commit counts once committed.
    consumer: BaseConsumer,
    /// read_uncommitted, for the log's true end (see `behind`).
    ends: BaseConsumer,
    partitions: i32,
    /// (partition, where reading began (None: at the end), the end then):
    /// the backfill's goal.
    ends_at_start: Vec<(i32, Option<i64>, i64)>,
    timeout: Duration,
    /// `behind` per log partition, asked once a sample (cleared at each read).
    behind_now: std::cell::RefCell<std::collections::HashMap<i32, bool>>,
}

impl OffsetsLog {
    pub fn open(options: &Options, partitions: i32, started_ms: i64) -> Result<OffsetsLog, String> {
        if partitions == 0 {
            return Err(format!("{OFFSETS_TOPIC} is not visible"));
        }
        let consumer = consumer(options, "kdeck-monitor-log", &[("isolation.level", "read_committed"), ("auto.offset.reset", "latest")])?;
        let ids: Vec<i32> = if options.all {
            (0..partitions).collect()
        } else {
            let mut ids: Vec<i32> = options.groups.iter().map(|g| partition_for(g, partitions)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let from = started_ms - options.lookback.as_millis() as i64;
        let mut tpl = TopicPartitionList::new();
        for p in &ids {
            tpl.add_partition_offset(OFFSETS_TOPIC, *p, Offset::Offset(from)).map_err(|e| e.to_string())?;
        }
        let starts = consumer.offsets_for_times(tpl, options.timeout).map_err(|e| format!("cannot read {OFFSETS_TOPIC}: {e}"))?;
        let mut ends = Vec::new();
        for e in starts.elements() {
            e.error().map_err(|err| format!("cannot read {OFFSETS_TOPIC}: {err}"))?;
            // A read_committed client's end is the last stable offset: what reading can reach.
            let (_, hi) = consumer.fetch_watermarks(OFFSETS_TOPIC, e.partition(), options.timeout).map_err(|e| format!("cannot read {OFFSETS_TOPIC}: {e}"))?;
            let start = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ends.push((e.partition(), start, hi));
        }
        // Nothing since the lookback: read from the end measured now, so that
        // commits written before librdkafka resolves "the end" are not missed.
        let mut from = TopicPartitionList::new();
        for (p, start, hi) in &ends {
            from.add_partition_offset(OFFSETS_TOPIC, *p, Offset::Offset(start.unwrap_or(*hi))).map_err(|e| e.to_string())?;
        }
        consumer.assign(&from).map_err(|e| format!("cannot read {OFFSETS_TOPIC}: {e}"))?;
        let true_ends = super::observer::consumer(options, "kdeck-monitor-log", &[("isolation.level", "read_uncommitted")])?;
        Ok(OffsetsLog { consumer, ends: true_ends, partitions, ends_at_start: ends, timeout: options.timeout, behind_now: Default::default() })
    }

    /// True when `group`'s commits may be hidden: an open transaction in its
    /// partition of the log (its last stable offset is below its end) holds
    /// read_committed back, so newer commits are not seen yet. Unknown counts
    /// as behind.
    pub fn behind(&self, group: &str) -> bool {
        let p = partition_for(group, self.partitions);
        if let Some(known) = self.behind_now.borrow().get(&p) {
            return *known;
        }
        let behind = self.query_behind(p);
        self.behind_now.borrow_mut().insert(p, behind);
        behind
    }

    fn query_behind(&self, p: i32) -> bool {
        let stable = self.consumer.fetch_watermarks(OFFSETS_TOPIC, p, self.timeout).map(|(_, hi)| hi);
        let end = self.ends.fetch_watermarks(OFFSETS_TOPIC, p, self.timeout).map(|(_, hi)| hi);
        match (stable, end) {
            (Ok(stable), Ok(end)) => stable < end,
            _ => true,
        }
    }

    /// What has arrived. The backfill reads up to the log's end at start, for
    /// up to the timeout (an open transaction on the log holds read_committed
    /// back); later reads take what is already here.
    /// Being refused the log is an error; other consumer errors are retried by
    /// librdkafka and skipped here.
    /// Also says whether the backfill reached the end.
    pub fn drain(&mut self, backfill: bool) -> Result<(Vec<Entry>, bool), String> {
        self.behind_now.borrow_mut().clear();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + self.timeout;
        // Positions are asked for at the start, after each thousand records and
        // whenever nothing is waiting: not after every record.
        let mut check = backfill;
        loop {
            if check && self.reached_start_end() {
                return Ok((out, true));
            }
            check = false;
            match self.consumer.poll(if backfill { Duration::from_millis(100) } else { Duration::ZERO }) {
                Some(Ok(m)) => {
                    // A key that cannot be read belongs to no group kdeck can name: skipped.
                    if let Ok(entry) = parse(m.key(), m.payload()) {
                        out.push(entry);
                    }
                    check = backfill && out.len() % 1000 == 0;
                }
                Some(Err(e)) if refused(&e) => return Err(format!("cannot read {OFFSETS_TOPIC}: {e}")),
                Some(Err(_)) => {}
                None if !backfill => break,
                None => check = true,
            }
            if std::time::Instant::now() > deadline {
                break;
            }
        }
        Ok((out, !backfill))
    }

    fn reached_start_end(&self) -> bool {
        let Ok(positions) = self.consumer.position() else { return false };
        self.ends_at_start.iter().all(|(p, start, end)| {
            let position = match positions.find_partition(OFFSETS_TOPIC, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            reached(*start, *end, position)
        })
    }
}

/// Whether reading a partition from `start` (None: from its end) has reached
/// `end`. A partition with nothing to read has: librdkafka reports no
/// position until a record arrives, and none may ever come.
fn reached(start: Option<i64>, end: i64, position: Option<i64>) -> bool {
    match start {
        None => true,
        Some(s) if s >= end => true,
        Some(_) => position.is_some_and(|p| p >= end),
    }
}

fn refused(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::TopicAuthorizationFailed | C::GroupAuthorizationFailed | C::ClusterAuthorizationFailed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: i16, group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut k = version.to_be_bytes().to_vec();
        for s in [group, topic] {
            k.extend((s.len() as i16).to_be_bytes());
            k.extend(s.as_bytes());
        }
        k.extend(partition.to_be_bytes());
        k
    }

    #[test]
    fn a_flexible_v4_commit_as_a_kafka_4_1_broker_writes_it() {
        // Bytes of a real record (group grp-probe2, probe1[0], offset 8).
        let value = [
            0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x08, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x01, 0xa2, 0x1d, 0x13, 0xa8, 0xdc, 0x00,
        ];
        let entry = parse(Some(&key(1, "grp-probe2", "probe1", 0)), Some(&value)).unwrap();
        assert_eq!(
            entry,
            Entry::Commit { group: "grp-probe2".into(), topic: "probe1".into(), partition: 0, offset: 8, at_ms: 0x01a2_1d13_a8dc }
        );
    }

    #[test]
    fn older_value_versions_and_tombstones() {
        let k = key(0, "g", "t", 3);
        let mut v1 = 1i16.to_be_bytes().to_vec();
        v1.extend(42i64.to_be_bytes());
        v1.extend(2i16.to_be_bytes());
        v1.extend(b"md");
        v1.extend(1000i64.to_be_bytes());
        v1.extend(9000i64.to_be_bytes());
        assert!(matches!(parse(Some(&k), Some(&v1)).unwrap(), Entry::Commit { offset: 42, at_ms: 1000, .. }));
        let mut v3 = 3i16.to_be_bytes().to_vec();
        v3.extend(7i64.to_be_bytes());
        v3.extend(5i32.to_be_bytes());
        v3.extend((-1i16).to_be_bytes());
        v3.extend(2000i64.to_be_bytes());
        assert!(matches!(parse(Some(&k), Some(&v3)).unwrap(), Entry::Commit { offset: 7, at_ms: 2000, .. }));
        assert!(matches!(parse(Some(&k), None).unwrap(), Entry::Deleted { partition: 3, .. }));
        assert_eq!(parse(Some(&key(2, "g", "t", 0)), Some(&v3)).unwrap(), Entry::Other);
    }

    #[test]
    fn a_truncated_record_is_an_error_not_a_panic() {
        let k = key(1, "g", "t", 0);
        assert!(parse(Some(&k[..k.len() - 1]), Some(&[0, 3])).is_err());
        assert!(matches!(parse(Some(&k), Some(&[0, 4, 0, 0])).unwrap(), Entry::Unreadable { .. }));
    }

    #[test]
    fn a_commit_of_a_value_version_not_known_is_unreadable_not_nothing() {
        let mut v5 = 5i16.to_be_bytes().to_vec();
        v5.extend([0u8; 30]);
        match parse(Some(&key(1, "g", "t", 0)), Some(&v5)).unwrap() {
            Entry::Unreadable { group, why } => assert!(group == "g" && why.contains("value version 5"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(Some(&key(1, "g", "t", 0)), Some(&[0, 4, 0])).unwrap(), Entry::Unreadable { .. }), "cut short");
        // Other key versions (group metadata, KIP-848 records) are not commits.
        assert_eq!(parse(Some(&key(7, "g", "t", 0)), Some(&v5)).unwrap(), Entry::Other);
    }

    #[test]
    fn a_quiet_partition_is_read_to_its_end_at_once() {
        // No record since the lookback: reading starts at the end, nothing will come.
        assert!(reached(None, 40, None));
        assert!(reached(Some(40), 40, None));
        assert!(!reached(Some(10), 40, None));
        assert!(!reached(Some(10), 40, Some(39)));
        assert!(reached(Some(10), 40, Some(40)));
    }

    #[test]
    fn the_partition_follows_javas_string_hash() {
        // grp-probe's metadata was in partition 4 of a 6-partition offsets topic.
        assert_eq!(partition_for("grp-probe", 6), 4);
        assert_eq!(partition_for("grp-probe", 50), 8);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() == i32::MIN: Kafka's abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
