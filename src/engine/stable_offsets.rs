//! The group's committed offsets, read by kdeck itself where transactions
//! commit them (exactly-once into Kafka), and handed to librdkafka in the
//! assignment.
//!
//! Why not let librdkafka read them: while a transaction holds a partition's
//! offset (UNSTABLE_OFFSET_COMMIT: sent, not yet committed or aborted),
//! librdkafka repeats its query; if the assignment changes meanwhile, the
//! answer to the query from before the change is applied to the new
//! assignment as "no committed offset" and auto.offset.reset starts the
//! partition over: every record below the held offset is processed again
//! (rd_kafka_assignment_apply_offsets, librdkafka 2.12.1; seen as 1,536
//! duplicates in the SIGKILL test, reproduced by
//! `an_open_transaction_on_the_groups_offsets_is_waited_for_across_a_rebalance`).

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::context::KConsumer;

/// How long to wait, and what to do meanwhile.
pub struct Wait<'a> {
    /// Asking again while a transaction holds an offset ends after this.
    pub up_to: Duration,
    /// Told once, the first time an answer is held up.
    pub waiting: &'a dyn Fn(&str),
    /// The run is stopping: give up (Ok(false)).
    pub stopping: &'a dyn Fn() -> bool,
}

/// Sets each partition's start in `tpl` to the group's committed offset (read
/// as `read_committed` does: only what committed transactions committed),
/// asking again while a transaction holds one. A partition with no committed
/// offset starts at `none` (auto.offset.reset; None: `error`, refused here).
/// Ok(false): the run stopped meanwhile and nothing was set.
pub fn set_committed_starts(
    consumer: &KConsumer,
    tpl: &mut TopicPartitionList,
    none: Option<Offset>,
    wait: Wait<'_>,
) -> Result<bool, String> {
    let mut query = TopicPartitionList::new();
    for e in tpl.elements() {
        query.add_partition(e.topic(), e.partition());
    }
    let until = Instant::now() + wait.up_to;
    let mut told = false;
    loop {
        if (wait.stopping)() {
            return Ok(false);
        }
        let held = match consumer.committed_offsets(query.clone(), Duration::from_secs(2)) {
            Ok(found) => match found.elements().iter().find_map(|e| e.error().err().map(|err| (e.topic().to_string(), e.partition(), err))) {
                None => {
                    for e in found.elements() {
                        let start = match (e.offset(), none) {
                            (Offset::Offset(o), _) => Offset::Offset(o),
                            (_, Some(reset)) => reset,
                            (_, None) => {
                                return Err(format!(
                                    "{}[{}] has no committed offset and auto.offset.reset is error",
                                    e.topic(),
                                    e.partition()
                                ))
                            }
                        };
                        tpl.set_partition_offset(e.topic(), e.partition(), start).map_err(|e| e.to_string())?;
                    }
                    return Ok(true);
                }
                Some((topic, partition, err)) if is_held(&err) => format!("{topic}[{partition}]: {err}"),
                Some((topic, partition, err)) => return Err(format!("cannot read the committed offset of {topic}[{partition}]: {err}")),
            },
            // librdkafka repeats a held query itself until the call's timeout.
            Err(err) if is_held(&err) => format!("{err}"),
            Err(err) => return Err(format!("cannot read the committed offsets: {err}")),
        };
        if Instant::now() >= until {
            return Err(format!("the committed offsets are still held by an open transaction after {} s ({held})", wait.up_to.as_secs()));
        }
        if !std::mem::replace(&mut told, true) {
            (wait.waiting)(&format!("waiting for an open transaction that holds the group's committed offsets to end ({held})"));
        }
    }
}

/// An answer that will come once a transaction ends (or the coordinator is back).
fn is_held(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnstableOffsetCommit
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::WaitingForCoordinator
        )
    )
}
