//! The few fields of librdkafka's statistics JSON that kdeck shows.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub topics: HashMap<String, TopicStats>,
    pub cgrp: Option<GroupStats>,
    #[serde(default)]
    pub brokers: HashMap<String, BrokerStats>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TopicStats {
    #[serde(default)]
    pub partitions: HashMap<String, PartitionStats>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PartitionStats {
    pub partition: i32,
    #[serde(default = "unknown")]
    pub hi_offset: i64,
    #[serde(default = "unknown")]
    pub lo_offset: i64,
    #[serde(default = "unknown")]
    pub ls_offset: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupStats {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub join_state: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct BrokerStats {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub nodeid: i32,
}

fn unknown() -> i64 {
    -1
}

impl Stats {
    pub fn parse(raw: &[u8]) -> Option<Stats> {
        serde_json::from_slice(raw).ok()
    }

    /// (topic, partition, high watermark) for every real partition (librdkafka lists a `-1` one).
    pub fn high_watermarks(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.partitions().filter(|(_, p)| p.hi_offset >= 0).map(|(t, p)| (t, p.partition, p.hi_offset))
    }

    /// Log start offsets (the oldest record retention has kept).
    pub fn log_starts(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.partitions().filter(|(_, p)| p.lo_offset >= 0).map(|(t, p)| (t, p.partition, p.lo_offset))
    }

    fn partitions(&self) -> impl Iterator<Item = (&str, &PartitionStats)> {
        self.topics
            .iter()
            .flat_map(|(t, ts)| ts.partitions.values().filter(|p| p.partition >= 0).map(move |p| (t.as_str(), p)))
    }

    /// True when every real broker connection is down (bootstrap entries have node id -1).
    pub fn all_brokers_down(&self) -> bool {
        let real: Vec<_> = self.brokers.values().filter(|b| b.nodeid >= 0).collect();
        !real.is_empty() && real.iter().all(|b| b.state == "DOWN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_watermarks_and_group_state_and_skips_the_unassigned_partition() {
        let raw = br#"{"name":"x","topics":{"orders":{"partitions":{
            "0":{"partition":0,"hi_offset":42,"lo_offset":0,"ls_offset":42,"fetchq_cnt":3},
            "-1":{"partition":-1,"hi_offset":-1}}}},
            "cgrp":{"state":"up","join_state":"steady","rebalance_cnt":2},
            "brokers":{"127.0.0.1:9092/1":{"state":"UP","nodeid":1},"GroupCoordinator":{"state":"UP","nodeid":-1}}}"#;
        let s = Stats::parse(raw).unwrap();
        let hw: Vec<_> = s.high_watermarks().collect();
        assert_eq!(hw, vec![("orders", 0, 42)]);
        assert_eq!(s.cgrp.as_ref().unwrap().join_state, "steady");
        assert!(!s.all_brokers_down());
    }
}
