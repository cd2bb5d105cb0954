//! Admin calls rust-rdkafka does not wrap. For the monitor: list the cluster's
//! groups, describe them (classic and KIP-848 "consumer" groups: librdkafka
//! asks ConsumerGroupDescribe and falls back to DescribeGroups), read a group's
//! committed offsets, all of its partitions, without joining, and reset them.
//! For the engine's start: which topics the ACLs let this client read.
//! Each call waits for its result on a queue of its own, up to `timeout`.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka_sys as rdsys;
use rdsys::rd_kafka_admin_op_t as Op;
use kdeck_ui::watch::model::{GroupDescription, MemberView};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    /// classic, consumer (KIP-848) or unknown.
    pub protocol: String,
    /// A group of plain consumers with no membership (assign and commit only).
    pub simple: bool,
}

/// A committed offset; None when the group has none for the partition, or
/// when it could not be read (then `error` says why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
    pub error: Option<String>,
}

pub fn list_groups(client: &BaseConsumer, timeout: Duration) -> Result<Vec<GroupListing>, String> {
    let event = call(client, Op::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, timeout, |rk, opts, q| unsafe {
        rdsys::rd_kafka_ListConsumerGroups(rk, opts, q)
    })?;
    let mut out = Vec::new();
    unsafe {
        let result = rdsys::rd_kafka_event_ListConsumerGroups_result(event.0);
        let mut n = 0;
        let errors = rdsys::rd_kafka_ListConsumerGroups_result_errors(result, &mut n);
        let failed: Vec<String> = slice(errors, n).iter().map(|e| error_string(*e)).collect();
        let listed = rdsys::rd_kafka_ListConsumerGroups_result_valid(result, &mut n);
        if n == 0 && !failed.is_empty() {
            return Err(format!("cannot list the groups: {}", failed.join("; ")));
        }
        // Some brokers answered: their groups are shown, the others' are missing.
        for e in &failed {
            tracing::warn!("some groups could not be listed: {e}");
        }
        for &g in slice(listed, n) {
            out.push(GroupListing {
                group: text(rdsys::rd_kafka_ConsumerGroupListing_group_id(g)),
                state: state_name(rdsys::rd_kafka_ConsumerGroupListing_state(g)),
                protocol: type_name(rdsys::rd_kafka_ConsumerGroupListing_type(g)),
                simple: rdsys::rd_kafka_ConsumerGroupListing_is_simple_consumer_group(g) != 0,
            });
        }
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

pub fn describe_groups(client: &BaseConsumer, groups: &[String], timeout: Duration) -> Result<Vec<GroupDescription>, String> {
    let names: Vec<CString> = groups.iter().map(|g| CString::new(g.as_str()).map_err(|_| format!("group `{g}` contains a NUL byte"))).collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = names.iter().map(|c| c.as_ptr()).collect();
    let event = call(client, Op::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS, timeout, |rk, opts, q| unsafe {
        rdsys::rd_kafka_DescribeConsumerGroups(rk, ptrs.as_mut_ptr(), ptrs.len(), opts, q)
    })?;
    let mut out = Vec::new();
    unsafe {
        let result = rdsys::rd_kafka_event_DescribeConsumerGroups_result(event.0);
        let mut n = 0;
        let described = rdsys::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut n);
        for &g in slice(described, n) {
            let error = rdsys::rd_kafka_ConsumerGroupDescription_error(g);
            let coordinator = rdsys::rd_kafka_ConsumerGroupDescription_coordinator(g);
            let mut d = GroupDescription {
                group: text(rdsys::rd_kafka_ConsumerGroupDescription_group_id(g)),
                state: state_name(rdsys::rd_kafka_ConsumerGroupDescription_state(g)),
                protocol: type_name(rdsys::rd_kafka_ConsumerGroupDescription_type(g)),
                assignor: text(rdsys::rd_kafka_ConsumerGroupDescription_partition_assignor(g)),
                coordinator: (!coordinator.is_null()).then(|| {
                    format!(
                        "{}:{} (id {})",
                        text(rdsys::rd_kafka_Node_host(coordinator)),
                        rdsys::rd_kafka_Node_port(coordinator),
                        rdsys::rd_kafka_Node_id(coordinator)
                    )
                }),
                members: Vec::new(),
                error: (!error.is_null()).then(|| error_string(error)),
            };
            for i in 0..rdsys::rd_kafka_ConsumerGroupDescription_member_count(g) {
                let m = rdsys::rd_kafka_ConsumerGroupDescription_member(g, i);
                let assignment = rdsys::rd_kafka_MemberDescription_assignment(m);
                let partitions = if assignment.is_null() {
                    Vec::new()
                } else {
                    elements(rdsys::rd_kafka_MemberAssignment_partitions(assignment)).into_iter().map(|(t, p, _, _)| (t, p)).collect()
                };
                let instance = rdsys::rd_kafka_MemberDescription_group_instance_id(m);
                d.members.push(MemberView {
                    member_id: text(rdsys::rd_kafka_MemberDescription_consumer_id(m)),
                    client_id: text(rdsys::rd_kafka_MemberDescription_client_id(m)),
                    host: text(rdsys::rd_kafka_MemberDescription_host(m)),
                    instance_id: (!instance.is_null()).then(|| text(instance)),
                    partitions,
                });
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// Every partition the group has an offset for, read as read_committed does
/// (require_stable). An offset an open transaction holds is not waited for:
/// librdkafka's admin call does not retry UNSTABLE_OFFSET_COMMIT, so that
/// partition comes back with the error, and the others are read.
pub fn committed_offsets(client: &BaseConsumer, group: &str, timeout: Duration) -> Result<Vec<Committed>, String> {
    let name = CString::new(group).map_err(|_| format!("group `{group}` contains a NUL byte"))?;
    let event = call(client, Op::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS, timeout, |rk, opts, q| unsafe {
        rdsys::rd_kafka_AdminOptions_set_require_stable_offsets(opts, 1);
        let mut request = rdsys::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), std::ptr::null());
        rdsys::rd_kafka_ListConsumerGroupOffsets(rk, &mut request, 1, opts, q);
        rdsys::rd_kafka_ListConsumerGroupOffsets_destroy(request);
    })?;
    let mut out = Vec::new();
    unsafe {
        let result = rdsys::rd_kafka_event_ListConsumerGroupOffsets_result(event.0);
        let mut n = 0;
        let groups = rdsys::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut n);
        for &g in slice(groups, n) {
            let error = rdsys::rd_kafka_group_result_error(g);
            if !error.is_null() {
                return Err(format!("cannot read the committed offsets of group `{group}`: {}", error_string(error)));
            }
            for (topic, partition, offset, err) in elements(rdsys::rd_kafka_group_result_partitions(g)) {
                let error = (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| resp_err(err));
                let offset = (error.is_none() && offset >= 0).then_some(offset);
                out.push(Committed { topic, partition, offset, error });
            }
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// Sets the group's committed offsets (the broker refuses while the group has
/// members). Every partition's own error is reported.
pub fn alter_offsets(client: &BaseConsumer, group: &str, offsets: &[(String, i32, i64)], timeout: Duration) -> Result<(), String> {
    let name = CString::new(group).map_err(|_| format!("group `{group}` contains a NUL byte"))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset)).map_err(|e| e.to_string())?;
    }
    let event = call(client, Op::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS, timeout, |rk, opts, q| unsafe {
        let mut request = rdsys::rd_kafka_AlterConsumerGroupOffsets_new(name.as_ptr(), tpl.ptr());
        rdsys::rd_kafka_AlterConsumerGroupOffsets(rk, &mut request, 1, opts, q);
        rdsys::rd_kafka_AlterConsumerGroupOffsets_destroy(request);
    })?;
    unsafe {
        let result = rdsys::rd_kafka_event_AlterConsumerGroupOffsets_result(event.0);
        let mut n = 0;
        let groups = rdsys::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut n);
        for &g in slice(groups, n) {
            let error = rdsys::rd_kafka_group_result_error(g);
            if !error.is_null() {
                return Err(format!("the cluster refused to set the offsets of group `{group}`: {}", error_string(error)));
            }
            for (topic, partition, _, err) in elements(rdsys::rd_kafka_group_result_partitions(g)) {
                if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    return Err(format!("the cluster refused to set the offset of {topic}[{partition}] for group `{group}`: {}", resp_err(err)));
                }
            }
        }
    }
    Ok(())
}

/// The topics among `topics` the cluster's authorizer says this client may
/// not READ (it may DESCRIBE them: they are asked for by name, KIP-430's
/// authorized operations). A topic the cluster says nothing about (no
/// authorizer, an older broker, the topic's own error) is not in the answer.
pub fn unreadable<C: ConsumerContext>(client: &BaseConsumer<C>, topics: &[String], timeout: Duration) -> Result<Vec<String>, String> {
    let names: Vec<CString> = topics.iter().filter_map(|t| CString::new(t.as_str()).ok()).collect();
    let mut pointers: Vec<*const libc::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let event = call(client, Op::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS, timeout, |rk, opts, q| unsafe {
        let error = rdsys::rd_kafka_AdminOptions_set_include_authorized_operations(opts, 1);
        if !error.is_null() {
            rdsys::rd_kafka_error_destroy(error);
        }
        let collection = rdsys::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        rdsys::rd_kafka_DescribeTopics(rk, collection, opts, q);
        rdsys::rd_kafka_TopicCollection_destroy(collection);
    })?;
    let mut out = Vec::new();
    unsafe {
        let result = rdsys::rd_kafka_event_DescribeTopics_result(event.0);
        let mut n = 0;
        let described = rdsys::rd_kafka_DescribeTopics_result_topics(result, &mut n);
        for &d in slice(described, n) {
            if !rdsys::rd_kafka_TopicDescription_error(d).is_null() {
                continue;
            }
            let mut count = 0;
            let ops = rdsys::rd_kafka_TopicDescription_authorized_operations(d, &mut count);
            if ops.is_null() || count == 0 {
                continue;
            }
            use rdsys::rd_kafka_AclOperation_t::{RD_KAFKA_ACL_OPERATION_ALL as ALL, RD_KAFKA_ACL_OPERATION_READ as READ};
            if !std::slice::from_raw_parts(ops, count).iter().any(|op| *op == READ || *op == ALL) {
                out.push(text(rdsys::rd_kafka_TopicDescription_name(d)));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// An admin result event, destroyed when dropped.
struct Event(*mut rdsys::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_event_destroy(self.0) };
    }
}

/// Starts an admin call with options for `op` and a queue of its own, and
/// waits for its result event; a request-level error is the error.
fn call<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    op: Op,
    timeout: Duration,
    start: impl FnOnce(*mut rdsys::rd_kafka_t, *mut rdsys::rd_kafka_AdminOptions_t, *mut rdsys::rd_kafka_queue_t),
) -> Result<Event, String> {
    let rk = client.client().native_ptr();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    unsafe {
        let queue = rdsys::rd_kafka_queue_new(rk);
        let opts = rdsys::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as libc::c_char; 256];
        rdsys::rd_kafka_AdminOptions_set_request_timeout(opts, ms, errstr.as_mut_ptr(), errstr.len());
        start(rk, opts, queue);
        rdsys::rd_kafka_AdminOptions_destroy(opts);
        // The request times out at `ms`; a little more lets its error arrive.
        let event = rdsys::rd_kafka_queue_poll(queue, ms.saturating_add(1000));
        rdsys::rd_kafka_queue_destroy(queue);
        if event.is_null() {
            return Err(format!("no answer from the cluster within {}", humantime::format_duration(timeout)));
        }
        let event = Event(event);
        let err = rdsys::rd_kafka_event_error(event.0);
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(text(rdsys::rd_kafka_event_error_string(event.0)));
        }
        Ok(event)
    }
}

unsafe fn slice<'a, T>(ptr: *mut *const T, n: usize) -> &'a [*const T] {
    if ptr.is_null() || n == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, n)
    }
}

/// (topic, partition, offset, error) of each element of a list librdkafka owns.
unsafe fn elements(list: *const rdsys::rd_kafka_topic_partition_list_t) -> Vec<(String, i32, i64, rdsys::rd_kafka_resp_err_t)> {
    if list.is_null() || (*list).cnt <= 0 {
        return Vec::new();
    }
    std::slice::from_raw_parts((*list).elems, (*list).cnt as usize)
        .iter()
        .map(|e| (text(e.topic), e.partition, e.offset, e.err))
        .collect()
}

unsafe fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

unsafe fn error_string(error: *const rdsys::rd_kafka_error_t) -> String {
    text(rdsys::rd_kafka_error_string(error))
}

fn resp_err(err: rdsys::rd_kafka_resp_err_t) -> String {
    unsafe { text(rdsys::rd_kafka_err2str(err)) }
}

fn state_name(state: rdsys::rd_kafka_consumer_group_state_t) -> String {
    unsafe { text(rdsys::rd_kafka_consumer_group_state_name(state)) }
}

fn type_name(kind: rdsys::rd_kafka_consumer_group_type_t) -> String {
    unsafe { text(rdsys::rd_kafka_consumer_group_type_name(kind)) }.to_lowercase()
}
