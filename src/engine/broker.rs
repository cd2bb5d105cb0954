//! What the engine asks of the consumer, as a small seam: commits, pauses,
//! positions and the group's metadata. The live implementation is the
//! librdkafka consumer (and the commit queue, where async commits report back);
//! tests drive the engine's decisions through a fake with no broker at all.

use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::{Offset, TopicPartitionList};

pub use super::commit_queue::CommitOutcome;
use super::commit_queue::CommitQueue;
use super::context::KConsumer;
use super::Tp;

pub trait Broker {
    fn commit_sync(&self, offsets: &[(Tp, i64)]) -> Result<(), String>;
    /// Whether `commit_async` reports its outcome later (through `commit_outcomes`).
    fn can_commit_async(&self) -> bool;
    fn commit_async(&self, offsets: &[(Tp, i64)]) -> Result<(), String>;
    /// Outcomes of asynchronous commits that have come back since last asked.
    fn commit_outcomes(&self) -> Vec<CommitOutcome>;
    fn pause(&self, tps: &[Tp]) -> Result<(), String>;
    fn resume(&self, tps: &[Tp]) -> Result<(), String>;
    /// Resumes partitions paused while assigned, and has their fetching start again
    /// at once. Returns the positions it resumed them at: librdkafka forgets them
    /// until the next record comes (see Live).
    fn resume_fetching(&self, tps: &[Tp]) -> Result<Vec<(Tp, i64)>, String> {
        self.resume(tps).map(|()| Vec::new())
    }
    /// The consumer's position of each assigned partition that has one.
    fn positions(&self) -> Result<Vec<(Tp, i64)>, String>;
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
}

/// The real consumer. Without a commit queue (inside a rebalance callback)
/// every commit is synchronous.
pub struct Live<'a> {
    pub consumer: &'a KConsumer,
    pub queue: Option<&'a CommitQueue>,
}

fn list(tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        tpl.add_partition(t, *p);
    }
    tpl
}

fn with_offsets(offsets: &[(Tp, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    tpl
}

impl Broker for Live<'_> {
    fn commit_sync(&self, offsets: &[(Tp, i64)]) -> Result<(), String> {
        self.consumer.commit(&with_offsets(offsets), CommitMode::Sync).map_err(|e| e.to_string())
    }

    fn can_commit_async(&self) -> bool {
        self.queue.is_some()
    }

    fn commit_async(&self, offsets: &[(Tp, i64)]) -> Result<(), String> {
        match self.queue {
            Some(q) => q.commit(self.consumer, &with_offsets(offsets)),
            None => self.commit_sync(offsets),
        }
    }

    fn commit_outcomes(&self) -> Vec<CommitOutcome> {
        self.queue.map(CommitQueue::outcomes).unwrap_or_default()
    }

    fn pause(&self, tps: &[Tp]) -> Result<(), String> {
        self.consumer.pause(&list(tps)).map_err(|e| e.to_string())
    }

    fn resume(&self, tps: &[Tp]) -> Result<(), String> {
        self.consumer.resume(&list(tps)).map_err(|e| e.to_string())
    }

    /// librdkafka's resume does not wake the broker thread: with every partition
    /// paused it sleeps up to a second (rd_kafka_max_block_ms) before it fetches
    /// again, and the workers starve meanwhile (JSON into SQLite spent half of a
    /// run that way). A seek to where the partition resumes anyway (its
    /// position: one past the last record delivered) sets the fetcher going,
    /// which wakes the thread. The seek also resets librdkafka's position
    /// until the next record is delivered, so the positions are returned: past
    /// trailing transaction markers, the engine needs them.
    fn resume_fetching(&self, tps: &[Tp]) -> Result<Vec<(Tp, i64)>, String> {
        self.resume(tps)?;
        let sought: Vec<(Tp, i64)> = self.positions()?.into_iter().filter(|(tp, _)| tps.contains(tp)).collect();
        let mut at = TopicPartitionList::new();
        for ((t, p), o) in &sought {
            at.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(|e| e.to_string())?;
        }
        if at.count() > 0 {
            // Asynchronous (timeout 0): the poll thread does not wait for it.
            self.consumer.seek_partitions(at, std::time::Duration::ZERO).map_err(|e| e.to_string())?;
        }
        Ok(sought)
    }

    fn positions(&self) -> Result<Vec<(Tp, i64)>, String> {
        let tpl = self.consumer.position().map_err(|e| e.to_string())?;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }
}
