//! Facts about newly assigned partitions (the group's committed offset, the
//! log start and end) read on a thread of their own, with a client of their
//! own, so the poll thread never waits on the cluster for them: a slow cluster
//! would otherwise hold it for ten seconds a partition, past
//! `max.poll.interval.ms`.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::worker::WorkerId;
use super::Tp;

/// How long one question may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What was asked about: a partition as one assignment of it (its worker).
pub type Asked = (Tp, WorkerId);

#[derive(Debug)]
pub struct Fact {
    pub tp: Tp,
    pub worker: WorkerId,
    pub committed: Option<i64>,
    /// (log start, end), when asked for.
    pub watermarks: Option<(i64, i64)>,
}

/// An answer: the facts, or why they could not be read (asked again later).
pub type Answer = Result<Fact, (Asked, String)>;

pub struct PartitionFacts {
    questions: Sender<(Vec<Asked>, bool)>,
    answers: Receiver<Answer>,
}

impl PartitionFacts {
    /// `config` is the engine consumer's (same cluster, security and group);
    /// this client never joins the group, it only reads.
    pub fn start(config: &ClientConfig) -> Result<PartitionFacts, String> {
        let mut config = config.clone();
        config.set("statistics.interval.ms", "0");
        let client: BaseConsumer = config.create().map_err(|e| format!("cannot create the offsets reader: {}", crate::security::client_error(&e)))?;
        let (questions, asked) = crossbeam_channel::unbounded::<(Vec<Asked>, bool)>();
        let (answer, answers) = crossbeam_channel::unbounded();
        // Test failpoint (`KDECK_FAILPOINT=slow-offsets:MS`): every answer takes that long,
        // as on a cluster slow to answer offset requests.
        let slow = std::env::var("KDECK_FAILPOINT")
            .ok()
            .and_then(|f| f.strip_prefix("slow-offsets:").and_then(|ms| ms.parse().ok()))
            .map(Duration::from_millis);
        std::thread::Builder::new()
            .name("kdeck-facts".into())
            .spawn(move || {
                for (tps, ends) in asked {
                    if let Some(d) = slow {
                        std::thread::sleep(d);
                    }
                    for a in read(&client, tps, ends) {
                        if answer.send(a).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the offsets reader: {e}"))?;
        Ok(PartitionFacts { questions, answers })
    }

    /// Asks for the committed offsets of `tps`, and their watermarks with `ends`.
    pub fn ask(&self, tps: Vec<Asked>, ends: bool) {
        let _ = self.questions.send((tps, ends));
    }

    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

fn read(client: &BaseConsumer, tps: Vec<Asked>, ends: bool) -> Vec<Answer> {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), _) in &tps {
        tpl.add_partition(t, *p);
    }
    let committed = match client.committed_offsets(tpl, TIMEOUT) {
        Ok(c) => c,
        Err(e) => return tps.into_iter().map(|a| Err((a, format!("reading committed offsets failed: {e}")))).collect(),
    };
    tps.into_iter()
        .map(|(tp, worker)| {
            let committed = match committed.find_partition(&tp.0, tp.1).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            let watermarks = if ends {
                match client.fetch_watermarks(&tp.0, tp.1, TIMEOUT) {
                    Ok(w) => Some(w),
                    Err(e) => return Err(((tp.clone(), worker), format!("reading the end offset of {}[{}] failed: {e}", tp.0, tp.1))),
                }
            } else {
                None
            };
            Ok(Fact { tp, worker, committed, watermarks })
        })
        .collect()
}
