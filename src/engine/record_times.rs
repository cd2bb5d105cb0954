//! Lag in time: the timestamp of the oldest record not yet committed, which is
//! the first record at or after the committed offset. It is read by a client
//! of its own that never joins a group and never commits, on a thread of its
//! own (the poll thread never waits on it), once per committed offset.
//! `kdeck watch` reads it the same way (`first_timestamps`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Tp;

/// How long one round of reading may take.
const WAIT: Duration = Duration::from_secs(2);

/// (partition, offset asked for) → the timestamp of the first record at or
/// after that offset; None: the record has no timestamp. Several offsets of
/// one partition are read in rounds (one offset per partition a round), all
/// within `wait`. A record that did not arrive (nothing there yet, or an open
/// transaction holding read_committed back) is left out.
pub fn first_timestamps(consumer: &BaseConsumer, wanted: &[(Tp, i64)], wait: Duration) -> HashMap<(Tp, i64), Option<i64>> {
    let mut found = HashMap::new();
    let mut left: Vec<(Tp, i64)> = wanted.to_vec();
    left.sort();
    left.dedup();
    let deadline = Instant::now() + wait;
    while !left.is_empty() && Instant::now() < deadline {
        // This round: the first offset left of each partition.
        let mut round: Vec<(Tp, i64)> = Vec::new();
        left.retain(|(tp, o)| {
            if round.iter().any(|(r, _)| r == tp) {
                true
            } else {
                round.push((tp.clone(), *o));
                false
            }
        });
        read_round(consumer, round, deadline, &mut found);
    }
    found
}

fn read_round(consumer: &BaseConsumer, mut missing: Vec<(Tp, i64)>, deadline: Instant, found: &mut HashMap<(Tp, i64), Option<i64>>) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &missing {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if consumer.assign(&tpl).is_err() {
        return;
    }
    while !missing.is_empty() && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
        if let Some(i) = missing.iter().position(|((t, p), o)| t == m.topic() && *p == m.partition() && m.offset() >= *o) {
            let asked = missing.swap_remove(i);
            found.insert(asked, m.timestamp().to_millis().filter(|ts| *ts >= 0));
        }
    }
    let _ = consumer.unassign();
}

/// A client for `first_timestamps`: the given config (cluster, security) with
/// a group of its own that it never joins, no commits, small fetches.
pub fn reader(config: &ClientConfig) -> Result<BaseConsumer, String> {
    let mut config = config.clone();
    config.remove("group.instance.id");
    config
        .set("group.id", "kdeck-record-times")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "0")
        .set("max.partition.fetch.bytes", "65536")
        .set("queued.max.messages.kbytes", "1024");
    config.create().map_err(|e| format!("cannot create the record-time reader: {}", crate::security::client_error(&e)))
}

/// The engine's reader thread: asked for (partition, committed offset) pairs,
/// answers with what it found.
pub struct RecordTimes {
    questions: Sender<Vec<(Tp, i64)>>,
    answers: Receiver<(Tp, i64, Option<i64>)>,
}

impl RecordTimes {
    pub fn start(config: &ClientConfig) -> Result<RecordTimes, String> {
        let consumer = reader(config)?;
        let (questions, asked) = crossbeam_channel::unbounded::<Vec<(Tp, i64)>>();
        let (answer, answers) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("kdeck-record-times".into())
            .spawn(move || {
                while let Ok(mut wanted) = asked.recv() {
                    // Questions that queued up while reading are answered together.
                    for more in asked.try_iter() {
                        wanted.extend(more);
                    }
                    // Only the latest question about a partition still matters.
                    let latest: HashMap<Tp, i64> = wanted.drain(..).collect();
                    let wanted: Vec<(Tp, i64)> = latest.into_iter().collect();
                    for ((tp, offset), ts) in first_timestamps(&consumer, &wanted, WAIT) {
                        if answer.send((tp, offset, ts)).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the record-time reader: {e}"))?;
        Ok(RecordTimes { questions, answers })
    }

    pub fn ask(&self, wanted: Vec<(Tp, i64)>) {
        let _ = self.questions.send(wanted);
    }

    pub fn answers(&self) -> impl Iterator<Item = (Tp, i64, Option<i64>)> + '_ {
        self.answers.try_iter()
    }
}
