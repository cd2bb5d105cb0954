//! Watching consumer groups from outside: never joining them, never
//! committing. Each `sample` reads the group's description, its committed
//! offsets, the partitions' ends, the commits written since the last sample
//! (from `__consumer_offsets`), and the age of the oldest record not yet
//! committed, and judges each partition (`verdict`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use kdeck_ui::watch::model::{GroupDescription, GroupPartitionView, GroupView, Verdict};

use crate::admin;
use crate::engine::record_times;
use super::offsets_topic::{Entry, OffsetsLog, OFFSETS_TOPIC};
use super::verdict::{self, Commit, Now};


#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
    /// The groups to watch; empty with `all`.
    pub groups: Vec<String>,
    pub all: bool,
    /// Commits a partition's verdict looks at (Burrow's window).
    pub window: usize,
    /// How far back the commit log is read at start.
    pub lookback: Duration,
    /// The least time without a commit, while behind, that counts as STOP.
    pub stop_after: Duration,
    pub timeout: Duration,
}

type Key = (String, String, i32);

/// How long a record that did not come is not asked for again.
const MISS_KEPT: Duration = Duration::from_secs(30);

pub struct Observer {
    options: Options,
    client: BaseConsumer,
    log: Result<OffsetsLog, String>,
    peek: BaseConsumer,
    /// The last commits of each (group, topic, partition), oldest first.
    history: HashMap<Key, VecDeque<Commit>>,
    /// The committed offset seen at the last sample, and since when it has been
    /// (the history, when the log is unreadable).
    last_committed: HashMap<Key, (i64, i64)>,
    /// (topic, partition) → (committed offset, that record's timestamp).
    record_times: HashMap<((String, i32), i64), Option<i64>>,
    /// Offsets whose record did not come when asked, and when.
    record_time_misses: HashMap<((String, i32), i64), std::time::Instant>,
    seen_since_ms: i64,
    /// The backfill did not reach the log's end in time.
    read_in_part: bool,
}

impl Observer {
    pub fn new(options: Options) -> Result<Observer, String> {
        crate::security::check_connection(&options.brokers, &options.properties, options.timeout)?;
        // read_uncommitted: ends are high watermarks, as kafka-consumer-groups
        // shows them (a read_uncommitted consumer commits up to there).
        let client = consumer(&options, "kdeck-monitor", &[("isolation.level", "read_uncommitted")])?;
        let md = client.fetch_metadata(Some(OFFSETS_TOPIC), options.timeout).map_err(|e| {
            format!(
                "cannot reach Kafka at {} within {} ({e}); check --brokers and that the cluster is up",
                options.brokers,
                humantime::format_duration(options.timeout)
            )
        })?;
        // One record per partition is wanted: small fetches, no prefetching.
        let peek = consumer(
            &options,
            "kdeck-monitor-peek",
            &[("auto.offset.reset", "earliest"), ("max.partition.fetch.bytes", "65536"), ("queued.max.messages.kbytes", "1024")],
        )?;
        let offsets_partitions = md.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len() as i32);
        let started = now_ms();
        let log = OffsetsLog::open(&options, offsets_partitions, started);
        let seen_since_ms = if log.is_ok() { started - options.lookback.as_millis() as i64 } else { started };
        let mut observer =
            Observer { options, client, log, peek, history: HashMap::new(), last_committed: HashMap::new(), record_times: HashMap::new(), record_time_misses: HashMap::new(), seen_since_ms, read_in_part: false };
        observer.backfill();
        Ok(observer)
    }

    /// The client its admin calls go through (offset resets use it too).
    pub fn client(&self) -> &BaseConsumer {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// The groups this observer watches now (with `all`, listed anew).
    pub fn groups(&self) -> Result<Vec<String>, String> {
        if !self.options.all {
            return Ok(self.options.groups.clone());
        }
        Ok(admin::list_groups(&self.client, self.options.timeout)?.into_iter().map(|g| g.group).collect())
    }

    pub fn sample(&mut self) -> Result<Vec<GroupView>, String> {
        // Test failpoint (`KDECK_FAILPOINT=slow-sample:MS`): a sample that takes
        // that long, as with a broker that does not answer.
        if let Some(ms) = std::env::var("KDECK_FAILPOINT").ok().and_then(|f| f.strip_prefix("slow-sample:").and_then(|ms| ms.parse().ok())) {
            tracing::info!("failpoint slow-sample: {ms} ms");
            std::thread::sleep(Duration::from_millis(ms));
        }
        let groups = self.groups()?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        // The log first, the committed offsets after: every commit the log
        // shows is then at or before what OffsetFetch answers (a commit seen in
        // the log but not yet in the answer would look like a rewind).
        let logged = self.drain_log();
        let now = now_ms();
        let descriptions = admin::describe_groups(&self.client, &groups, self.options.timeout)?;
        let mut groups = Vec::new();
        for d in descriptions {
            let committed = admin::committed_offsets(&self.client, &d.group, self.options.timeout)?;
            groups.push((d, committed));
        }
        let mut ends: HashMap<(String, i32), Option<i64>> = HashMap::new();
        for (d, committed) in &groups {
            let assigned = d.members.iter().flat_map(|m| m.partitions.iter().cloned());
            for tp in committed.iter().map(|c| (c.topic.clone(), c.partition)).chain(assigned) {
                if let std::collections::hash_map::Entry::Vacant(slot) = ends.entry(tp) {
                    let (topic, partition) = slot.key();
                    let end = self.client.fetch_watermarks(topic, *partition, self.options.timeout).ok().map(|(_, hi)| hi);
                    slot.insert(end);
                }
            }
        }
        for entry in logged {
            self.record(entry, |topic, partition, offset| ends.get(&(topic.to_string(), partition)).copied().flatten().map(|e| (e - offset).max(0)));
        }
        let mut reports: Vec<GroupView> = groups.into_iter().map(|(d, committed)| self.report(d, &committed, &ends, now)).collect();
        self.fill_lag_times(&mut reports, now);
        Ok(reports)
    }

    fn report(&mut self, d: GroupDescription, committed: &[admin::Committed], ends: &HashMap<(String, i32), Option<i64>>, now: i64) -> GroupView {
        let members: HashMap<(String, i32), String> = d
            .members
            .iter()
            .flat_map(|m| m.partitions.iter().map(move |tp| (tp.clone(), format!("{}@{}", m.client_id, m.host))))
            .collect();
        // Partitions with an offset, and assigned ones without.
        let mut offsets: Vec<admin::Committed> = committed.to_vec();
        for (topic, partition) in members.keys() {
            if !offsets.iter().any(|c| &c.topic == topic && c.partition == *partition) {
                offsets.push(admin::Committed { topic: topic.clone(), partition: *partition, offset: None, error: None });
            }
        }
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut partitions = Vec::new();
        for admin::Committed { topic, partition, offset, error } in offsets {
            let key = (d.group.clone(), topic.clone(), partition);
            let end = ends.get(&(topic.clone(), partition)).copied().flatten();
            let lag = lag_of(offset, end);
            // The offset, and since when it has been seen: a commit the log has
            // not shown yet is dated then, not re-dated at every sample.
            let (moved, since) = match offset {
                Some(o) => match self.last_committed.get(&key) {
                    Some((before, at)) if *before == o => (false, *at),
                    before => {
                        let moved = before.is_some();
                        self.last_committed.insert(key.clone(), (o, now));
                        (moved, now)
                    }
                },
                None => (false, now),
            };
            if self.log.is_err() && moved {
                let commit = Commit { offset: offset.unwrap_or_default(), at_ms: now, lag };
                push(self.history.entry(key.clone()).or_default(), commit, self.options.window);
            }
            let logged: Vec<Commit> = self.history.get(&key).map(|h| h.iter().copied().collect()).unwrap_or_default();
            let window = verdict::with_current(&logged, offset, moved, lag, since);
            let at = Now { at_ms: now, lag, seen_since_ms: self.seen_since_ms, min_span_ms: self.options.stop_after.as_millis() as i64 };
            partitions.push(GroupPartitionView {
                error,
                member: members.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed: offset,
                end,
                lag,
                lag_ms: None,
                commit_rate: rate(&window),
                last_commit_ms: window.last().map(|c| c.at_ms),
                verdict: verdict::evaluate(&window, at),
            });
        }
        let mut history = match &self.log {
            Ok(_) if self.read_in_part => {
                format!("{OFFSETS_TOPIC}, not read to its end at start: commits are judged from {}", humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(self.seen_since_ms as u64)))
            }
            Ok(_) => format!("{OFFSETS_TOPIC}, from {} before start", humantime::format_duration(self.options.lookback)),
            Err(why) => format!("committed offsets polled ({why}): STALL cannot be told from STOP"),
        };
        // STOP rests on seeing no commit: not while the log may be hiding some.
        let stops = partitions.iter().any(|p| p.verdict == Some(Verdict::Stop));
        if stops && self.log.as_ref().is_ok_and(|log| log.behind(&d.group)) {
            for p in partitions.iter_mut().filter(|p| p.verdict == Some(Verdict::Stop)) {
                p.verdict = None;
            }
            history = format!("{OFFSETS_TOPIC}, held back by an open transaction: STOP cannot be judged until it ends");
        }
        GroupView {
            lag_history: Vec::new(),
            verdict: verdict::worst(partitions.iter().map(|p| p.verdict)),
            history,
            description: d,
            partitions,
        }
    }

    /// Reads the commits written since the last read into the history; a
    /// commit's lag is the partition's end now less its offset. A log that
    /// turns unreadable (say, access to it revoked) is given up for polling.
    fn drain_log(&mut self) -> Vec<Entry> {
        let Ok(log) = &mut self.log else { return Vec::new() };
        match log.drain(false).and_then(|(entries, _)| self.unreadable_watched(entries)) {
            Ok(entries) => entries,
            Err(why) => {
                self.log = Err(why);
                self.history.clear();
                self.seen_since_ms = now_ms();
                Vec::new()
            }
        }
    }

    /// A commit of a watched group that cannot be read ends the log's use: a
    /// missing commit would look like no commit. Other groups' do not matter.
    fn unreadable_watched(&self, entries: Vec<Entry>) -> Result<Vec<Entry>, String> {
        if let Some(Entry::Unreadable { why, .. }) = entries.iter().find(|e| matches!(e, Entry::Unreadable { group, .. } if self.watched(group))) {
            return Err(format!("cannot read {OFFSETS_TOPIC}: {why}"));
        }
        Ok(entries)
    }

    fn watched(&self, group: &str) -> bool {
        self.options.all || self.options.groups.iter().any(|g| g == group)
    }

    fn record(&mut self, entry: Entry, lag: impl Fn(&str, i32, i64) -> Option<i64>) {
        match entry {
            Entry::Commit { group, topic, partition, offset, at_ms } if self.watched(&group) => {
                let commit = Commit { offset, at_ms, lag: lag(&topic, partition, offset) };
                push(self.history.entry((group, topic, partition)).or_default(), commit, self.options.window);
            }
            Entry::Deleted { group, topic, partition } => {
                self.history.remove(&(group, topic, partition));
            }
            _ => {}
        }
    }

    /// The commit log from `lookback` ago up to its end at start.
    fn backfill(&mut self) {
        let Ok(log) = &mut self.log else { return };
        match log.drain(true).and_then(|(entries, complete)| Ok((self.unreadable_watched(entries)?, complete))) {
            Ok((entries, complete)) => {
                for entry in entries {
                    self.record(entry, |_, _, _| None);
                }
                if !complete {
                    // Commits not read yet must not look like no commits: a
                    // partition is not STOP for what was not read.
                    self.seen_since_ms = now_ms();
                    self.read_in_part = true;
                }
                self.lags_at_past_commits();
            }
            Err(why) => {
                self.log = Err(why);
                self.seen_since_ms = now_ms();
            }
        }
    }

    /// The lag at a commit read from the past: the partition's end at that
    /// time, as Kafka resolves a time to an offset (the first record at or
    /// after it; the end now if there is none), less the committed offset. One
    /// ListOffsets per round, one commit time per partition in each.
    fn lags_at_past_commits(&mut self) {
        let mut tried = std::collections::HashSet::new();
        loop {
            let mut asked: HashMap<(String, i32), i64> = HashMap::new();
            for ((_, topic, partition), commits) in &self.history {
                for c in commits.iter().filter(|c| c.lag.is_none()) {
                    let tp = (topic.clone(), *partition);
                    if !asked.contains_key(&tp) && tried.insert((tp.clone(), c.at_ms)) {
                        asked.insert(tp, c.at_ms);
                    }
                }
            }
            if asked.is_empty() {
                return;
            }
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), at) in &asked {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*at));
            }
            let Ok(found) = self.client.offsets_for_times(tpl, self.options.timeout) else { return };
            let mut ends_then = HashMap::new();
            for e in found.elements() {
                let end = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    Offset::End => self.client.fetch_watermarks(e.topic(), e.partition(), self.options.timeout).ok().map(|(_, hi)| hi),
                    _ => None,
                };
                ends_then.insert((e.topic().to_string(), e.partition()), end);
            }
            for ((_, topic, partition), commits) in &mut self.history {
                let tp = (topic.clone(), *partition);
                let (Some(at), Some(Some(end))) = (asked.get(&tp), ends_then.get(&tp)) else { continue };
                for c in commits.iter_mut().filter(|c| c.lag.is_none() && c.at_ms == *at) {
                    c.lag = Some((end - c.offset).max(0));
                }
            }
        }
    }

    /// Lag in time: the record at each lagging partition's committed offset
    /// is read once (per committed offset) for its timestamp.
    fn fill_lag_times(&mut self, reports: &mut [GroupView], now: i64) {
        // Keyed by the offset too: groups behind on one partition each have theirs.
        let lagging: Vec<((String, i32), i64)> = reports
            .iter()
            .flat_map(|r| &r.partitions)
            .filter(|p| p.lag.is_some_and(|l| l > 0))
            .filter_map(|p| p.committed.map(|o| ((p.topic.clone(), p.partition), o)))
            .collect();
        self.record_times.retain(|key, _| lagging.contains(key));
        self.record_time_misses.retain(|_, at| at.elapsed() < MISS_KEPT);
        let wanted: Vec<((String, i32), i64)> =
            lagging.iter().filter(|k| !self.record_times.contains_key(*k) && !self.record_time_misses.contains_key(*k)).cloned().collect();
        if !wanted.is_empty() {
            let found = record_times::first_timestamps(&self.peek, &wanted, Duration::from_secs(2));
            for key in wanted.into_iter().filter(|k| !found.contains_key(k)) {
                // Nothing there (a commit at a transaction marker, say): not asked again for a while.
                self.record_time_misses.insert(key, std::time::Instant::now());
            }
            self.record_times.extend(found);
        }
        for p in reports.iter_mut().flat_map(|r| r.partitions.iter_mut()) {
            p.lag_ms = match (p.lag, p.committed) {
                (Some(0), _) => Some(0),
                (Some(_), Some(o)) => self.record_times.get(&((p.topic.clone(), p.partition), o)).copied().flatten().map(|ts| (now - ts).max(0)),
                _ => None,
            };
        }
    }
}

fn push(history: &mut VecDeque<Commit>, commit: Commit, window: usize) {
    history.push_back(commit);
    while history.len() > window.max(1) {
        history.pop_front();
    }
}

/// Offsets committed per second from the window's first commit to its last;
/// unknown over a rewind (no rate describes it).
fn rate(window: &[Commit]) -> Option<f64> {
    let (first, last) = (window.first()?, window.last()?);
    let span = last.at_ms - first.at_ms;
    let rewound = window.windows(2).any(|w| w[1].offset < w[0].offset);
    (span > 0 && !rewound).then(|| (last.offset - first.offset) as f64 * 1000.0 / span as f64)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// A client that never joins a group and never commits (`group.id` only
/// because librdkafka's consumer wants one for assign).
pub(super) fn consumer(options: &Options, group: &str, extra: &[(&str, &str)]) -> Result<BaseConsumer, String> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &options.brokers);
    for (k, v) in &options.properties {
        cc.set(k, v);
    }
    for (k, v) in extra {
        cc.set(*k, *v);
    }
    // Last, so no -X can make this client commit, or read as the watched group.
    cc.set("group.id", group).set("enable.auto.commit", "false").set("enable.auto.offset.store", "false").set("enable.partition.eof", "false");
    cc.remove("group.instance.id");
    cc.create().map_err(|e| format!("cannot create a Kafka client: {}", crate::security::client_error(&e)))
}

/// End less committed; unknown when either is, and when the committed offset
/// is past the end (the topic was recreated, say): that is not "caught up".
fn lag_of(committed: Option<i64>, end: Option<i64>) -> Option<i64> {
    let (c, e) = (committed?, end?);
    (e >= c).then_some(e - c)
}

#[cfg(test)]
mod tests {
    use super::lag_of;

    #[test]
    fn lag_is_unknown_past_the_end() {
        assert_eq!(lag_of(Some(5), Some(20)), Some(15));
        assert_eq!(lag_of(Some(20), Some(20)), Some(0));
        assert_eq!(lag_of(Some(30), Some(20)), None);
        assert_eq!(lag_of(None, Some(20)), None);
    }
}
