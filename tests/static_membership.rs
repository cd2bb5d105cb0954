//! Static members (`group.instance.id`) in a cooperative-sticky group, killed
//! between the two halves of an incremental rebalance.
//!
//! Under the cooperative protocol a member that gives partitions up rejoins
//! once it has let them go, and that second rebalance hands them to the others.
//! A static member restarted while the group is Stable takes its old place
//! without a rebalance (KIP-345). So a member killed while it gives partitions
//! up, and restarted at once, leaves them assigned to no one, until a kdeck
//! member sees that and asks for a rebalance (src/engine/unowned.rs).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn member(id: usize, group: &str, topic: &str, sink: &Path, extra: &[&str]) -> Killed {
    let instance = format!("group.instance.id=host-{id}");
    let mut args = vec!["-X", &instance, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"];
    args.extend(["-X", "partition.assignment.strategy=cooperative-sticky", "--unowned-after", "3s"]);
    args.extend(extra);
    Killed(spawn_run(group, topic, sink, &args))
}

fn log_has(sink: &Path, what: &str) -> bool {
    std::fs::read_to_string(sink.with_extension("log")).is_ok_and(|l| l.contains(what))
}

#[test]
fn a_static_member_killed_while_it_gives_partitions_up_leaves_none_unconsumed() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("static-coop");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 120, 50);
    let group = unique("g-static-coop");
    let sink = |name: &str| dir.path().join(format!("{name}.jsonl"));

    // host-0 alone takes all six partitions and holds a record of each in hand
    // (its revoke then waits up to the revoke timeout, 10 s, for them).
    let mut slow = member(0, &group, &topic, &sink("host-0-slow"), &["--handler-delay", "60s"]);
    wait_for("host-0 assigned all six partitions", Duration::from_secs(30), || log_has(&sink("host-0-slow"), &format!("(\"{topic}\", 5)")));
    // host-1 joins: the first half gives it nothing and asks host-0 for three.
    let _host1 = member(1, &group, &topic, &sink("host-1"), &[]);
    wait_for("host-1's first assignment", Duration::from_secs(30), || log_has(&sink("host-1"), "assigned"));
    // host-0 is in its revoke now: killed there, it never rejoins.
    let _ = slow.0.kill();
    let _ = slow.0.wait();
    let _host0 = member(0, &group, &topic, &sink("host-0"), &[]);

    let seen = || {
        let mut all: std::collections::BTreeSet<(i32, i64)> = seen_in_sink(&sink("host-0")).into_keys().collect();
        all.extend(seen_in_sink(&sink("host-1")).into_keys());
        all
    };
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while seen().len() < 120 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let by_partition = seen().iter().fold(std::collections::BTreeMap::<i32, usize>::new(), |mut m, (p, _)| {
        *m.entry(*p).or_default() += 1;
        m
    });
    assert_all_seen(&seen(), &ends);
    assert_eq!(by_partition.len(), 6, "{by_partition:?}");
    // Given out again by the rebalance kdeck asked for, not by chance.
    assert!(
        ["host-0", "host-1"].iter().any(|h| log_has(&sink(h), "owned by no member")),
        "a member saw the unowned partitions and asked for a rebalance"
    );
}
