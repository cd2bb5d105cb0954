//! Asynchronous commits whose outcome we actually learn.
//!
//! rust-rdkafka's `commit(.., Async)` never reports back: librdkafka only posts
//! the result of a manual async commit when a C `offset_commit_cb` is set, and
//! rust-rdkafka uses the event API instead. `rd_kafka_commit_queue` with a
//! queue of our own delivers every result as an event we poll without blocking.

use std::ffi::CStr;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use rdkafka_sys as rdsys;

use super::context::KConsumer;
use super::Tp;

/// The outcome of one commit: per partition, the offset and whether it was stored.
pub struct CommitOutcome {
    /// A request-level error, if any.
    pub error: Option<String>,
    pub partitions: Vec<(Tp, i64, Option<String>)>,
}

pub struct CommitQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
}

// SAFETY: librdkafka queues are thread-safe; the handle is only used from the poll thread anyway.
unsafe impl Send for CommitQueue {}

impl CommitQueue {
    pub fn new(consumer: &KConsumer) -> CommitQueue {
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        CommitQueue { queue }
    }

    /// Sends the commit; the outcome arrives later through `outcomes`.
    pub fn commit(&self, consumer: &KConsumer, tpl: &TopicPartitionList) -> Result<(), String> {
        let err = unsafe {
            rdsys::rd_kafka_commit_queue(consumer.client().native_ptr(), tpl.ptr(), self.queue, None, std::ptr::null_mut())
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(err_str(err))
        }
    }

    /// Every commit outcome that has arrived, without waiting.
    pub fn outcomes(&self) -> Vec<CommitOutcome> {
        let mut out = Vec::new();
        loop {
            let ev = unsafe { rdsys::rd_kafka_queue_poll(self.queue, 0) };
            if ev.is_null() {
                return out;
            }
            unsafe {
                if rdsys::rd_kafka_event_type(ev) == rdsys::RD_KAFKA_EVENT_OFFSET_COMMIT {
                    let err = rdsys::rd_kafka_event_error(ev);
                    let error = (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err_str(err));
                    let mut partitions = Vec::new();
                    let list = rdsys::rd_kafka_event_topic_partition_list(ev);
                    if !list.is_null() {
                        let list = &*list;
                        for i in 0..list.cnt as usize {
                            let e = &*list.elems.add(i);
                            let topic = CStr::from_ptr(e.topic).to_string_lossy().into_owned();
                            let perr = (e.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err_str(e.err));
                            partitions.push(((topic, e.partition), e.offset, perr));
                        }
                    }
                    out.push(CommitOutcome { error, partitions });
                }
                rdsys::rd_kafka_event_destroy(ev);
            }
        }
    }
}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) };
    }
}

fn err_str(err: rdsys::rd_kafka_resp_err_t) -> String {
    unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(err)) }.to_string_lossy().into_owned()
}
