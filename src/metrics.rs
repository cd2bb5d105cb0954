//! `--metrics ADDR`: `/metrics` in the Prometheus text format, from the
//! latest snapshot at each scrape (run and demo: the engine's; watch: the
//! observed groups'). Base units, `_total` counters, `group`, `topic` and
//! `partition` labels. A value kdeck does not know is left out, never shown
//! as 0.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use kdeck_ui::model::{LatencyHistogram, Snapshot};
use kdeck_ui::watch::model::{Verdict, WatchSnapshot};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

const VERDICTS: [Verdict; 5] = [Verdict::Ok, Verdict::Warn, Verdict::Rewind, Verdict::Stall, Verdict::Stop];

/// The metrics address, bound before anything else starts: a bad or busy
/// address is refused at once.
pub struct Endpoint {
    server: tiny_http::Server,
    bound: std::net::SocketAddr,
}

pub fn bind(addr: &str) -> Result<Endpoint> {
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let bound = server.server_addr().to_ip().ok_or_else(|| anyhow!("cannot serve metrics on {addr}: not an IP address"))?;
    Ok(Endpoint { server, bound })
}

pub fn bind_option(addr: Option<&str>) -> Result<Option<Endpoint>> {
    addr.map(bind).transpose()
}

/// Serves `/metrics` from a thread of its own; `families` is asked at each
/// scrape. Says where on stderr.
pub fn serve(endpoint: Endpoint, families: impl Fn() -> Vec<MetricFamily> + Send + 'static) -> Result<()> {
    let Endpoint { server, bound } = endpoint;
    eprintln!("kdeck: metrics on http://{bound}/metrics");
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for request in server.incoming_requests() {
            let response = if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
                let encoder = TextEncoder::new();
                let mut body = Vec::new();
                match encoder.encode(&families(), &mut body) {
                    Ok(()) => tiny_http::Response::from_data(body).with_header(
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], encoder.format_type().as_bytes()).expect("a valid header"),
                    ),
                    Err(e) => tiny_http::Response::from_string(format!("cannot encode the metrics: {e}")).with_status_code(500),
                }
            } else {
                tiny_http::Response::from_string("kdeck serves /metrics\n").with_status_code(404)
            };
            let _ = request.respond(response);
        }
    })?;
    Ok(())
}

/// Serves the engine's metrics.
pub fn serve_engine(endpoint: Option<Endpoint>, engine: &crate::engine::EngineHandle) -> Result<()> {
    match endpoint {
        Some(e) => serve(e, from_channel(engine.subscribe(), engine_families)),
        None => Ok(()),
    }
}

/// The engine's metrics (`kdeck run`, `kdeck demo`).
pub fn engine_families(s: &Snapshot) -> Vec<MetricFamily> {
    let g = [("group", s.group.as_str())];
    let mut out = vec![
        counter("kdeck_records_consumed_total", "Records received from Kafka.", vec![metric(&g, s.consumed as f64)]),
        counter("kdeck_records_processed_total", "Records that finished processing (including dead-lettered).", vec![metric(&g, s.processed as f64)]),
        counter("kdeck_records_failed_total", "Failed processing attempts.", vec![metric(&g, s.failed as f64)]),
        counter("kdeck_records_dead_lettered_total", "Records sent to the dead-letter topic.", vec![metric(&g, s.dead_lettered as f64)]),
        gauge("kdeck_retry_queue_records", "Records parked for another attempt.", vec![metric(&g, s.retry_queue.len() as f64)]),
        counter("kdeck_commits_total", "Offset commits the broker accepted.", vec![metric(&g, s.commits as f64)]),
        counter("kdeck_commit_failures_total", "Offset commits that failed.", vec![metric(&g, s.commit_failures as f64)]),
        counter("kdeck_rebalances_total", "Rebalances completed (assignments received).", vec![metric(&g, s.rebalances_total as f64)]),
        histogram("kdeck_commit_duration_seconds", "Offset commits, from the request until kdeck has the broker's answer.", &g, &s.commit_latency),
    ];
    let per_partition = |value: &dyn Fn(&kdeck_ui::model::PartitionView) -> Option<f64>| -> Vec<Series> {
        s.partitions
            .iter()
            .filter_map(|p| {
                let partition = p.partition.to_string();
                value(p).map(|v| metric(&[("group", &s.group), ("topic", &p.topic), ("partition", &partition)], v))
            })
            .collect()
    };
    out.push(gauge("kdeck_consumer_lag_records", "End offset less the committed offset.", per_partition(&|p| p.lag.map(|l| l as f64))));
    out.push(gauge(
        "kdeck_consumer_lag_seconds",
        "Age of the oldest record not yet committed (0 when caught up).",
        per_partition(&|p| p.lag_ms.map(|ms| ms as f64 / 1000.0)),
    ));
    out.push(gauge("kdeck_consumer_committed_offset", "The group's committed offset.", per_partition(&|p| p.committed.map(|o| o as f64))));
    out.push(gauge("kdeck_partition_queued_records", "Records waiting in the partition's worker queue.", per_partition(&|p| Some(p.queued as f64))));
    if let Some(eos) = &s.eos {
        out.push(counter("kdeck_eos_commits_total", "Exactly-once transactions committed.", vec![metric(&g, eos.commits as f64)]));
        out.push(counter("kdeck_eos_aborts_total", "Exactly-once transactions aborted.", vec![metric(&g, eos.aborts as f64)]));
    }
    drop_empty(out)
}

/// The watched groups' metrics (`kdeck watch`). After a failed sample the
/// groups' series are left out (an old lag must not pass for the current
/// one); `kdeck_watch_up` says 0 and the time of the last good sample stays.
pub fn watch_families(s: &WatchSnapshot) -> Vec<MetricFamily> {
    let up = s.error.is_none() && s.captured_at_ms > 0;
    let mut out = vec![gauge("kdeck_watch_up", "1 when the last sample of the groups succeeded, else 0 (also before the first).", vec![metric(&[], if up { 1.0 } else { 0.0 })])];
    if s.captured_at_ms > 0 {
        out.push(gauge(
            "kdeck_watch_last_sample_timestamp_seconds",
            "When the groups were last sampled successfully.",
            vec![metric(&[], s.captured_at_ms as f64 / 1000.0)],
        ));
    }
    if s.error.is_some() {
        return out;
    }
    let mut lag = Vec::new();
    let mut lag_seconds = Vec::new();
    let mut committed = Vec::new();
    let mut end = Vec::new();
    let mut partition_verdicts = Vec::new();
    let mut group_verdicts = Vec::new();
    let mut members = Vec::new();
    for g in &s.groups {
        let group = g.description.group.as_str();
        members.push(metric(&[("group", group)], g.description.members.len() as f64));
        group_verdicts.extend(state_set(&[("group", group)], g.verdict));
        for p in &g.partitions {
            let partition = p.partition.to_string();
            let labels = [("group", group), ("topic", p.topic.as_str()), ("partition", partition.as_str())];
            lag.extend(p.lag.map(|v| metric(&labels, v as f64)));
            lag_seconds.extend(p.lag_ms.map(|v| metric(&labels, v as f64 / 1000.0)));
            committed.extend(p.committed.map(|v| metric(&labels, v as f64)));
            end.extend(p.end.map(|v| metric(&labels, v as f64)));
            partition_verdicts.extend(state_set(&labels, p.verdict));
        }
    }
    out.extend([
        gauge("kdeck_consumer_lag_records", "End offset less the committed offset.", lag),
        gauge("kdeck_consumer_lag_seconds", "Age of the oldest record not yet committed (0 when caught up).", lag_seconds),
        gauge("kdeck_consumer_committed_offset", "The group's committed offset.", committed),
        gauge("kdeck_partition_end_offset", "The partition's end (high watermark).", end),
        gauge("kdeck_consumer_partition_verdict", "1 for the partition's current verdict (OK, WARN, STALL, STOP, REWIND); all 0 when unknown.", partition_verdicts),
        gauge("kdeck_consumer_group_verdict", "1 for the group's current verdict; all 0 when unknown.", group_verdicts),
        gauge("kdeck_consumer_group_members", "Members of the group.", members),
    ]);
    drop_empty(out)
}

/// One series per verdict, 1 for the current one: the set of series stays the
/// same as the verdict changes.
fn state_set(labels: &[(&str, &str)], current: Option<Verdict>) -> Vec<Series> {
    VERDICTS
        .iter()
        .map(|v| {
            let mut l = labels.to_vec();
            l.push(("verdict", v.as_str()));
            metric(&l, if Some(*v) == current { 1.0 } else { 0.0 })
        })
        .collect()
}

/// A family with no series has nothing to say (and an empty TYPE line confuses parsers).
fn drop_empty(families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    families.into_iter().filter(|f| !f.get_metric().is_empty()).collect()
}

/// A series before it is typed: its labels and value.
struct Series {
    labels: Vec<LabelPair>,
    value: f64,
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(name: &str, help: &str, series: Vec<Series>) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|s| {
            let mut m = Metric::from_label(s.labels);
            let mut c = Counter::default();
            c.set_value(s.value);
            m.set_counter(c);
            m
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

fn gauge(name: &str, help: &str, series: Vec<Series>) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|s| {
            let mut g = Gauge::default();
            g.set_value(s.value);
            let mut m = Metric::from_label(s.labels);
            m.set_gauge(g);
            m
        })
        .collect();
    family(name, help, MetricType::GAUGE, metrics)
}

fn histogram(name: &str, help: &str, labels: &[(&str, &str)], h: &LatencyHistogram) -> MetricFamily {
    let mut hist = Histogram::default();
    let mut cumulative = 0;
    let buckets = h
        .bounds_ms
        .iter()
        .zip(&h.counts)
        .map(|(bound, count)| {
            cumulative += count;
            let mut b = Bucket::default();
            b.set_upper_bound(bound / 1000.0);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    hist.set_bucket(buckets);
    hist.set_sample_count(h.count());
    hist.set_sample_sum(h.sum_ms / 1000.0);
    let mut m = Metric::from_label(metric(labels, 0.0).labels);
    m.set_histogram(hist);
    family(name, help, MetricType::HISTOGRAM, vec![m])
}

fn metric(labels: &[(&str, &str)], value: f64) -> Series {
    let labels = labels
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect();
    Series { labels, value }
}

/// For `serve`: the latest snapshot of a watch channel, as families.
pub fn from_channel<T: Send + Sync + 'static>(
    rx: tokio::sync::watch::Receiver<Arc<T>>,
    families: fn(&T) -> Vec<MetricFamily>,
) -> impl Fn() -> Vec<MetricFamily> + Send + 'static {
    move || families(&rx.borrow())
}

#[cfg(test)]
mod tests {
    use kdeck_ui::watch::model::{GroupDescription, GroupPartitionView, GroupView, WatchSnapshot};

    fn names(s: &WatchSnapshot) -> Vec<String> {
        super::watch_families(s).iter().map(|f| f.name().to_string()).collect()
    }

    #[test]
    fn after_a_failed_sample_no_old_lag_is_served() {
        let mut s = WatchSnapshot {
            captured_at_ms: 1_795_700_000_000,
            groups: vec![GroupView {
                description: GroupDescription { group: "g".into(), ..Default::default() },
                partitions: vec![GroupPartitionView { topic: "t".into(), lag: Some(7), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(names(&s).contains(&"kdeck_consumer_lag_records".to_string()));
        let before_any = WatchSnapshot::default();
        let up = super::watch_families(&before_any).into_iter().find(|f| f.name() == "kdeck_watch_up").unwrap();
        assert_eq!(up.get_metric()[0].get_gauge().get_value(), 0.0, "no sample yet is not up");
        s.error = Some("cannot reach Kafka".into());
        let after = names(&s);
        assert!(!after.contains(&"kdeck_consumer_lag_records".to_string()), "{after:?}");
        assert!(after.contains(&"kdeck_watch_up".to_string()) && after.contains(&"kdeck_watch_last_sample_timestamp_seconds".to_string()));
        let up = super::watch_families(&s).into_iter().find(|f| f.name() == "kdeck_watch_up").unwrap();
        assert_eq!(up.get_metric()[0].get_gauge().get_value(), 0.0);
    }
}
