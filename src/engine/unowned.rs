//! Partitions that no member of a Stable classic group owns, and the one
//! rebalance the protocol lets anyone ask for, to give them out again.
//!
//! Why they can exist: under the cooperative protocol a member that gives
//! partitions up rejoins once it has let them go, and that second rebalance
//! hands them to the others. A static member (`group.instance.id`) restarted
//! while the group is Stable takes its old place without a rebalance (KIP-345),
//! with the assignment it had. So a member killed while it gives partitions up,
//! and restarted at once, leaves them owned by no one for as long as the
//! membership does not change (tests/static_membership.rs). The broker does
//! not notice, and librdkafka has no call to rejoin the group (only a leader's
//! rejoin, or changed metadata, would start a rebalance).
//!
//! So every static kdeck member of a cooperative-sticky group describes its
//! group now and then. Partitions of the subscription that stay unowned for
//! `after`, while the group is Stable and its members and their assignments do
//! not change, get the one rebalance anyone can start: a short-lived dynamic
//! member joins and leaves at once. It subscribes only to the topics of those
//! partitions, pauses what it is given and never commits; its leaving gives
//! them to the members. If they stay unowned (a leader whose metadata has not
//! seen new partitions yet), the wait doubles each time.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use super::core::Notice;
use super::{Subscription, Tp};
use kdeck_ui::watch::model::GroupDescription;

/// How long one question to the cluster may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the short-lived member waits to be part of a rebalance.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// The partitions of `topics` (name → partition count) that no member owns.
pub fn unowned(group: &GroupDescription, topics: &BTreeMap<String, i32>) -> BTreeSet<Tp> {
    let owned: BTreeSet<&Tp> = group.members.iter().flat_map(|m| m.partitions.iter()).collect();
    topics.iter().flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p))).filter(|tp| !owned.contains(tp)).collect()
}

/// Partitions unowned across checks: which have been so, continuously and
/// with no change in the group's members or their assignments, for long
/// enough to ask for a rebalance.
pub struct Tracker {
    after: Duration,
    wait: Duration,
    since: Option<Unowned>,
}

struct Unowned {
    tps: BTreeSet<Tp>,
    members: u64,
    since: Instant,
}

/// What a check saw.
pub struct Seen {
    pub stable: bool,
    /// The members and their assignments, as one value that changes with them.
    pub members: u64,
    pub unowned: BTreeSet<Tp>,
}

impl Tracker {
    pub fn new(after: Duration) -> Tracker {
        Tracker { after, wait: after, since: None }
    }

    /// One check. Returns the partitions to ask a rebalance for.
    pub fn observe(&mut self, seen: Seen, now: Instant) -> Option<BTreeSet<Tp>> {
        if !seen.stable {
            // A rebalance: what was seen before it does not count.
            self.since = None;
            return None;
        }
        if seen.unowned.is_empty() {
            // All owned: the next time starts from the first wait.
            self.wait = self.after;
            self.since = None;
            return None;
        }
        let (tps, since) = match self.since.take() {
            Some(u) if u.members == seen.members => {
                let still: BTreeSet<Tp> = u.tps.intersection(&seen.unowned).cloned().collect();
                if still.is_empty() {
                    (seen.unowned, now)
                } else {
                    (still, u.since)
                }
            }
            _ => (seen.unowned, now),
        };
        if now.duration_since(since) >= self.wait {
            // Asked for: if they are still unowned after it, wait longer next time.
            self.wait = self.wait.saturating_mul(2).min(self.after.saturating_mul(16));
            return Some(tps);
        }
        self.since = Some(Unowned { tps, members: seen.members, since });
        None
    }
}

/// Starts the watching thread. `config` is the engine consumer's (cluster,
/// security, group, assignor); the watching client never joins the group.
/// It stops with the engine (`stopped`); a rebalance it is asking for then
/// stops waiting and leaves the group (the engine waits for that, briefly).
pub fn watch(
    config: &ClientConfig,
    group: &str,
    subscription: &Subscription,
    after: Duration,
    notices: Sender<Notice>,
    stopped: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let mut watcher = config.clone();
    watcher.remove("group.instance.id");
    watcher.set("statistics.interval.ms", "0");
    let client: BaseConsumer = watcher.create().map_err(|e| format!("cannot create the group watcher: {}", crate::security::client_error(&e)))?;
    let (config, group, subscription) = (config.clone(), group.to_string(), subscription.clone());
    // A check every quarter of the wait, at least once a second.
    let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let thread = std::thread::Builder::new()
        .name("kdeck-unowned".into())
        .spawn(move || {
            let pause = |d: Duration| {
                let until = Instant::now() + d;
                while Instant::now() < until && !stopped.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            };
            let mut tracker = Tracker::new(after);
            while !stopped.load(Ordering::SeqCst) {
                if let Some(tps) = check(&client, &group, &subscription).and_then(|seen| tracker.observe(seen, Instant::now())) {
                    // Other kdeck members see the same: a random delay and a
                    // second look, so the first one's rebalance is seen.
                    pause(every.mul_f64(rand::random::<f64>()));
                    let still = check(&client, &group, &subscription).filter(|s| s.stable).map(|s| s.unowned).unwrap_or_default();
                    let tps: BTreeSet<Tp> = tps.intersection(&still).cloned().collect();
                    if !tps.is_empty() && !stopped.load(Ordering::SeqCst) {
                        let names: Vec<String> = tps.iter().map(|(t, p)| format!("{t}[{p}]")).collect();
                        let message = format!(
                            "{} owned by no member of the group for {} (a static member restarted while it gave them up?): asking for a rebalance",
                            names.join(", "),
                            humantime::format_duration(after)
                        );
                        tracing::warn!("{message}");
                        let _ = notices.send(Notice { area: "rebalance", error: true, message });
                        if let Err(e) = nudge(&config, &tps, &stopped) {
                            tracing::warn!("the rebalance for unowned partitions could not be asked for: {e}");
                        }
                    }
                }
                pause(every);
            }
        })
        .map_err(|e| format!("cannot start the group watcher: {e}"))?;
    Ok(thread)
}

/// Describes the group: None when the cluster did not answer (asked again
/// at the next check).
fn check(client: &BaseConsumer, group: &str, subscription: &Subscription) -> Option<Seen> {
    let described = crate::admin::describe_groups(client, &[group.to_string()], TIMEOUT).ok()?;
    let g = described.into_iter().next().filter(|g| g.error.is_none())?;
    // Only classic cooperative groups: an eager rebalance takes everything
    // back from everyone, and KIP-848 groups are assigned by the broker, which
    // frees what a replaced member was giving up.
    let stable = g.state == "Stable" && g.protocol == "classic" && g.assignor == "cooperative-sticky";
    let topics = if stable { partition_counts(client, &g, subscription)? } else { BTreeMap::new() };
    let mut members: Vec<(&String, Vec<&Tp>)> = g.members.iter().map(|m| (&m.member_id, m.partitions.iter().collect())).collect();
    members.sort();
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    members.hash(&mut hash);
    Some(Seen { stable, members: hash.finish(), unowned: unowned(&g, &topics) })
}

/// The subscribed topics and those the members own, with their partition
/// counts. For a pattern, the topics the group has offsets for that match it
/// count too (a topic the replaced member had whole is owned by no one). The
/// pattern is matched by this crate's regex, not librdkafka's dialect: a topic
/// only this side matches is counted only if the group has offsets for it.
fn partition_counts(client: &BaseConsumer, group: &GroupDescription, subscription: &Subscription) -> Option<BTreeMap<String, i32>> {
    let mut names: BTreeSet<String> = group.members.iter().flat_map(|m| m.partitions.iter().map(|(t, _)| t.clone())).collect();
    match subscription {
        Subscription::Topics(topics) => names.extend(topics.iter().cloned()),
        Subscription::Pattern(p) => {
            if let Ok(pattern) = regex::Regex::new(&super::anchored(p)) {
                let committed = crate::admin::committed_offsets(client, &group.group, TIMEOUT).ok()?;
                names.extend(committed.into_iter().filter(|c| c.offset.is_some() && pattern.is_match(&c.topic)).map(|c| c.topic));
            }
        }
    }
    let mut counts = BTreeMap::new();
    for t in &names {
        let md = client.fetch_metadata(Some(t), TIMEOUT).ok()?;
        if let Some(topic) = md.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty()) {
            counts.insert(t.clone(), topic.partitions().len() as i32);
        }
    }
    Some(counts)
}

/// Knows when it has been given its first assignment, and pauses what it is
/// given: it is there to start a rebalance, not to read.
#[derive(Default)]
struct Joined(AtomicBool);

impl ClientContext for Joined {}

impl ConsumerContext for Joined {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = consumer.pause(tpl);
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// A dynamic member joins the group (a rebalance) and leaves it (another):
/// the leader assigns everything again. It subscribes only to the topics of
/// the unowned partitions, so it can only be given theirs; it never commits.
fn nudge(config: &ClientConfig, tps: &BTreeSet<Tp>, stop: &AtomicBool) -> Result<(), String> {
    let mut c = config.clone();
    c.remove("group.instance.id");
    c.set("client.id", "kdeck-rebalance")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("statistics.interval.ms", "0")
        // Killed before it leaves, it is out of the group this soon (the
        // broker's least, group.min.session.timeout.ms, is 6 s by default).
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    let consumer: BaseConsumer<Joined> = c.create_with_context(Joined::default()).map_err(|e| crate::security::client_error(&e))?;
    let topics: BTreeSet<&str> = tps.iter().map(|(t, _)| t.as_str()).collect();
    consumer.subscribe(&topics.into_iter().collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    let until = Instant::now() + JOIN_WAIT;
    let mut last_error = None;
    while !consumer.context().0.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        if Instant::now() >= until {
            let why = last_error.map_or_else(String::new, |e| format!(": {e}"));
            return Err(format!("the short-lived member was not let into the group within {JOIN_WAIT:?}{why}"));
        }
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            last_error = Some(e);
        }
    }
    // Dropping closes the consumer: it leaves the group (LeaveGroup).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdeck_ui::watch::model::MemberView;

    fn group(owned: &[(&str, i32)]) -> GroupDescription {
        GroupDescription {
            group: "g".into(),
            state: "Stable".into(),
            protocol: "classic".into(),
            assignor: "cooperative-sticky".into(),
            coordinator: None,
            members: vec![MemberView {
                member_id: "m".into(),
                client_id: "c".into(),
                host: "h".into(),
                instance_id: Some("host-0".into()),
                partitions: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            }],
            error: None,
        }
    }

    fn tps(v: &[(&str, i32)]) -> BTreeSet<Tp> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn unowned_are_the_subscribed_partitions_no_member_has() {
        let topics = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        assert_eq!(unowned(&group(&[("a", 0), ("a", 2)]), &topics), tps(&[("a", 1), ("b", 0)]));
        assert!(unowned(&group(&[("a", 0), ("a", 1), ("a", 2), ("b", 0)]), &topics).is_empty());
    }

    fn seen(stable: bool, members: u64, unowned: &[(&str, i32)]) -> Seen {
        Seen { stable, members, unowned: tps(unowned) }
    }

    #[test]
    fn a_rebalance_is_asked_for_only_after_the_wait_of_unownership_in_a_group_that_does_not_change() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut tr = Tracker::new(10 * s);
        assert_eq!(tr.observe(seen(true, 1, &[("a", 1)]), t0), None);
        assert_eq!(tr.observe(seen(true, 1, &[("a", 1)]), t0 + 5 * s), None);
        // A rebalance in between (not Stable) starts the wait again.
        assert_eq!(tr.observe(seen(false, 1, &[]), t0 + 6 * s), None);
        assert_eq!(tr.observe(seen(true, 1, &[("a", 1)]), t0 + 7 * s), None);
        // So does a member replaced (a new member id), as a restart does.
        assert_eq!(tr.observe(seen(true, 2, &[("a", 1)]), t0 + 8 * s), None);
        assert_eq!(tr.observe(seen(true, 2, &[("a", 1)]), t0 + 17 * s), None);
        // Only what stayed unowned all along counts.
        assert_eq!(tr.observe(seen(true, 2, &[("a", 1), ("a", 2)]), t0 + 18 * s), Some(tps(&[("a", 1)])));
    }

    #[test]
    fn partitions_still_unowned_after_a_rebalance_wait_twice_as_long_until_all_are_owned() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut tr = Tracker::new(10 * s);
        tr.observe(seen(true, 1, &[("a", 1)]), t0);
        assert!(tr.observe(seen(true, 1, &[("a", 1)]), t0 + 10 * s).is_some());
        // The rebalance it asked for, and the group Stable again without them.
        tr.observe(seen(false, 3, &[]), t0 + 11 * s);
        tr.observe(seen(true, 4, &[("a", 1)]), t0 + 12 * s);
        assert_eq!(tr.observe(seen(true, 4, &[("a", 1)]), t0 + 31 * s), None);
        assert!(tr.observe(seen(true, 4, &[("a", 1)]), t0 + 32 * s).is_some());
        // All owned: the next unownership waits the first wait again.
        tr.observe(seen(true, 5, &[]), t0 + 40 * s);
        tr.observe(seen(true, 5, &[("b", 0)]), t0 + 41 * s);
        assert!(tr.observe(seen(true, 5, &[("b", 0)]), t0 + 51 * s).is_some());
    }
}
