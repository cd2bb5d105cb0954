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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;

/// A static member `host-{id}` in a cooperative-sticky group; `subscription`
/// is `-t TOPIC` or `--pattern P`.
fn member(id: usize, group: &str, subscription: &[&str], sink: &Path, extra: &[&str]) -> Killed {
    Killed(
        kdeck()
            .args(["run", "--headless", "-b", &brokers(), "-G", group])
            .args(subscription)
            .arg("--sink")
            .arg(format!("jsonl:{}", sink.display()))
            .arg("--log-file")
            .arg(sink.with_extension("log"))
            .arg("--audit")
            .arg(sink.with_extension("audit.sqlite"))
            .args(["-X", &format!("group.instance.id=host-{id}"), "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"])
            .args(["-X", "partition.assignment.strategy=cooperative-sticky", "--unowned-after", "3s"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn log_has(sink: &Path, what: &str) -> bool {
    std::fs::read_to_string(sink.with_extension("log")).is_ok_and(|l| l.contains(what))
}

/// host-0 alone takes every partition and holds a record of each in hand (its
/// revoke then waits up to the revoke timeout, 10 s, for them); host-1 joins,
/// so the first half gives it nothing and asks host-0 for some; host-0 is
/// killed in its revoke, never rejoins, and is restarted. Every record of
/// `ends` must still be processed, by a rebalance a member asked for.
fn killed_while_giving_partitions_up(group: &str, subscription: &[&str], all_assigned: &[String], ends: &BTreeMap<(String, i32), i64>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str| dir.path().join(format!("{name}.jsonl"));
    let mut slow = member(0, group, subscription, &sink("host-0-slow"), &["--handler-delay", "60s"]);
    wait_for("host-0 assigned every partition", Duration::from_secs(30), || all_assigned.iter().all(|tp| log_has(&sink("host-0-slow"), tp)));
    let _host1 = member(1, group, subscription, &sink("host-1"), &[]);
    wait_for("host-1's first assignment", Duration::from_secs(30), || log_has(&sink("host-1"), "assigned"));
    let _ = slow.0.kill();
    let _ = slow.0.wait();
    let _host0 = member(0, group, subscription, &sink("host-0"), &[]);

    // (topic, partition, offset) of every record either member wrote.
    let seen = || -> BTreeSet<(String, i32, i64)> {
        ["host-0", "host-1"]
            .iter()
            .flat_map(|h| std::fs::read_to_string(sink(h)).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .map(|v| (v["topic"].as_str().unwrap_or_default().to_string(), v["partition"].as_i64().unwrap() as i32, v["offset"].as_i64().unwrap()))
            .collect()
    };
    let total: i64 = ends.values().sum();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while (seen().len() as i64) < total && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing: Vec<(String, i32, i64)> =
        ends.iter().flat_map(|((t, p), &end)| (0..end).map(move |o| (t.clone(), *p, o))).filter(|r| !seen().contains(r)).collect();
    assert!(missing.is_empty(), "{} records never processed, first: {:?}", missing.len(), &missing[..missing.len().min(5)]);
    // Given out again by the rebalance kdeck asked for, not by chance.
    assert!(["host-0", "host-1"].iter().any(|h| log_has(&sink(h), "owned by no member")), "a member saw the unowned partitions and asked for a rebalance");
}

#[test]
fn a_static_member_killed_while_it_gives_partitions_up_leaves_none_unconsumed() {
    let topic = unique("static-coop");
    create_topic(&topic, 6);
    let ends = produce_with_kcat(&topic, 120, 50).into_iter().map(|(p, e)| ((topic.clone(), p), e)).collect();
    let assigned: Vec<String> = (0..6).map(|p| format!("(\"{topic}\", {p})")).collect();
    killed_while_giving_partitions_up(&unique("g-static-coop"), &["-t", &topic], &assigned, &ends);
}

#[test]
fn a_whole_topic_left_unowned_under_a_pattern_is_given_out_again() {
    // Two one-partition topics: host-0 gives one of them up whole, so no
    // member's assignment names it; the group's offsets for it do.
    let prefix = unique("static-pat");
    let topics = [format!("{prefix}-a"), format!("{prefix}-b")];
    let group = unique("g-static-pat");
    let mut ends = BTreeMap::new();
    for t in &topics {
        create_topic(t, 1);
        ends.insert((t.clone(), 0), produce_with_kcat(t, 20, 50)[&0]);
        commit_offset(&group, t, 0, 0);
    }
    let assigned: Vec<String> = topics.iter().map(|t| format!("(\"{t}\", 0)")).collect();
    killed_while_giving_partitions_up(&group, &["--pattern", &format!("^{prefix}-")], &assigned, &ends);
}
