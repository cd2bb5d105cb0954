//! `kdeck demo`: an embedded 3-broker cluster (or `-b` a real one), a topic
//! `orders` with 6 partitions, synthetic order events, and the engine
//! consuming them. Nothing to install. The traffic carries trouble on
//! purpose, so every panel has something to show: malformed JSON and schema
//! violations (dead-lettered at once), orders whose handler fails a few
//! times and then succeeds (the retry queue), poison orders that always fail
//! (dead-lettered after their retries) and slow ones (back-pressure, lag).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::cli::DemoArgs;
use crate::embedded::EmbeddedCluster;
use crate::engine::pipeline::{Format, Pipeline, PipelineConfig};
use crate::engine::{self, EngineConfig, Failure, Handler, HandlerFactory, RetryPolicy, Stage, Subscription};
use rdkafka::message::{Message, OwnedMessage};
use std::collections::HashMap;
use crate::headless;

pub const TOPIC: &str = "orders";
pub const DLQ: &str = "orders.dlq";
pub const PARTITIONS: i32 = 6;
const ORDER_SCHEMA: &str = include_str!("../assets/schemas/order.schema.json");

/// The demo's business logic on top of the pipeline: `"flaky": n` fails n times
/// then succeeds, `"poison": true` always fails, `"slow_ms": n` takes that long.
struct DemoHandler {
    inner: Box<dyn Handler>,
    failures: HashMap<i64, u64>,
}

impl Handler for DemoHandler {
    fn handle(&mut self, record: &OwnedMessage) -> Result<(), Failure> {
        self.inner.handle(record)?;
        let v: serde_json::Value = record.payload().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or_default();
        if let Some(ms) = v["slow_ms"].as_u64() {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if v["poison"] == true {
            return Err(Failure::retryable(Stage::Handle, "payment service rejects this order"));
        }
        if let Some(n) = v["flaky"].as_u64() {
            let failed = self.failures.entry(record.offset()).or_insert(0);
            if *failed < n {
                *failed += 1;
                return Err(Failure::retryable(Stage::Handle, format!("inventory service timed out ({failed} of {n})")));
            }
            self.failures.remove(&record.offset());
        }
        Ok(())
    }

    fn flush(&mut self, progress: Option<&crate::engine::handler::Progress>) -> Result<(), Failure> {
        self.inner.flush(progress)
    }

    fn carry_dead_letter(&mut self, record: &OwnedMessage, letter: &crate::engine::dlq::Letter) -> bool {
        self.inner.carry_dead_letter(record, letter)
    }

    fn batch_size(&self) -> Option<usize> {
        self.inner.batch_size()
    }
}

pub fn run(args: &DemoArgs, on_start: impl FnOnce(Arc<AtomicBool>) -> Result<()>) -> Result<()> {
    let until = args
        .duration
        .as_deref()
        .map(|d| humantime::parse_duration(d).map_err(|_| anyhow!("--duration `{d}` is not a duration; write it like 20s or 5m")))
        .transpose()?;
    let commit = args.commit.parse().map_err(|e: String| anyhow!(e))?;
    let endpoint = crate::metrics::bind_option(args.output.metrics.as_deref())?;

    // With -b: the cluster's security, the friendly options then -X (which wins).
    let mut properties = args.security.properties().map_err(|e| anyhow!(e))?;
    for kv in &args.properties {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("-X `{}` is not KEY=VALUE", crate::security::key_of(kv)))?;
        properties.push((k.trim().to_string(), v.to_string()));
    }
    if args.brokers.is_none() && !properties.is_empty() {
        return Err(anyhow!("--tls-* and --sasl-* need -b: the embedded cluster is plaintext"));
    }
    let (_cluster, brokers) = match &args.brokers {
        Some(b) => {
            crate::security::check_connection(b, &properties, Duration::from_secs(10)).map_err(|e| anyhow!(e))?;
            ensure_topic(b, &properties, TOPIC, PARTITIONS)?;
            ensure_topic(b, &properties, DLQ, 1)?;
            (None, b.clone())
        }
        None => {
            let c = EmbeddedCluster::new(3)?;
            c.create_topic(TOPIC, PARTITIONS, 3)?;
            c.create_topic(DLQ, 1, 3)?;
            let b = c.bootstrap_servers();
            (Some(c), b)
        }
    };
    eprintln!("kdeck demo: cluster {brokers}, topic {TOPIC} ({PARTITIONS} partitions), {} records/s", args.rate);

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, stop, rate, properties) = (brokers.clone(), stop.clone(), args.rate, properties.clone());
        std::thread::Builder::new().name("kdeck-demo-producer".into()).spawn(move || produce(&brokers, &properties, rate, &stop))?
    };

    let mut config = EngineConfig::new(&brokers, "kdeck-demo", Subscription::Topics(vec![TOPIC.to_string()]));
    config.commit = commit;
    config.sink_label = "null (demo handler)".into();
    config.properties = properties;
    config.dlq_topic = Some(DLQ.to_string());
    // Key ordering: a flaky order holds back only its customer's later orders.
    config.retry = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(300),
        max: Duration::from_secs(3),
        ordering: crate::engine::RetryOrdering::Key,
    };
    if let Some(a) = &args.audit {
        config.audit_path = a.clone();
    }
    let pipeline = Pipeline::new(&PipelineConfig { format: Format::Json, schema_text: Some(ORDER_SCHEMA.into()), ..Default::default() })
        .map_err(anyhow::Error::msg)?;
    let inner = pipeline.factory();
    let handlers: HandlerFactory = Arc::new(move |t: &str, p: i32| {
        Box::new(DemoHandler { inner: inner(t, p), failures: HashMap::new() }) as Box<dyn Handler>
    });
    let engine = engine::start(config, handlers)?;
    crate::metrics::serve_engine(endpoint, &engine)?;
    on_start(engine.shutdown_flag())?;
    let result = if args.output.headless || !crate::tui::available() {
        headless::run(engine, args.output.json, until)
    } else {
        if let Some(d) = until {
            // --duration works with the dashboard too.
            let flag = engine.shutdown_flag();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                flag.store(true, Ordering::SeqCst);
            });
        }
        crate::tui::run(engine, kdeck_ui::keymap::KeyMap::default(), crate::tui::strategies(false))
    };
    stop.store(true, Ordering::SeqCst);
    let _ = producer.join();
    result
}

/// A client config for `brokers` with the cluster's properties.
fn client(brokers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in properties.iter().filter(|(k, _)| !crate::engine::dlq::is_consumer_only(k)) {
        cc.set(k, v);
    }
    cc
}

fn ensure_topic(brokers: &str, properties: &[(String, String)], name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(brokers, properties)
        .create()
        .map_err(|e| anyhow!("cannot create an admin client for {brokers}: {e}"))?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(admin.create_topics([&topic], &opts))
        .map_err(|e| anyhow!("cannot reach Kafka at {brokers} to create topic {name}: {e}"))?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(anyhow!("cannot create topic {t} on {brokers}: {code}"));
            }
        }
    }
    Ok(())
}

/// Synthetic order events at about `rate` per second, keyed by customer.
fn produce(brokers: &str, properties: &[(String, String)], rate: u32, stop: &AtomicBool) {
    let producer: BaseProducer = match client(brokers, properties)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("demo producer: {e}");
            return;
        }
    };
    let mut rng = rand::rng();
    let tick = Duration::from_millis(10);
    let per_tick = (rate as f64 / 100.0).max(0.0);
    let mut owed = 0.0;
    let mut n: u64 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            n += 1;
            let customer = format!("c-{:04}", rng.random_range(0..500));
            let value = order_json(n, &customer, &mut rng);
            let value = with_trouble(value, &mut rng);
            let mut record = BaseRecord::to(TOPIC).key(customer.as_str()).payload(value.as_str());
            while let Err((e, r)) = producer.send(record) {
                // Queue full: let deliveries drain, then try again.
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tracing::debug!("demo producer: {e}");
                producer.poll(Duration::from_millis(50));
                record = r;
            }
        }
        producer.poll(Duration::ZERO);
        next += tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        } else {
            next = Instant::now();
        }
    }
    let _ = producer.flush(Duration::from_secs(2));
}

/// About 1 in 100 records is malformed, 1 in 100 breaks the schema, 2 in 100 are
/// flaky, 1 in 500 is poison and 1 in 200 is slow.
fn with_trouble(order: String, rng: &mut impl Rng) -> String {
    let roll = rng.random_range(0..1000);
    let tweak = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&order).unwrap_or_default();
        f(&mut v);
        v.to_string()
    };
    match roll {
        0..10 => order[..order.len() / 2].to_string(), // cut short: malformed JSON
        10..20 => tweak(&|v| v["amount"] = serde_json::json!(-5)), // violates the schema
        20..40 => tweak(&|v| v["flaky"] = serde_json::json!(1 + (order.len() % 3))),
        40..42 => tweak(&|v| v["poison"] = serde_json::json!(true)),
        42..47 => tweak(&|v| v["slow_ms"] = serde_json::json!(50)),
        _ => order,
    }
}

fn order_json(n: u64, customer: &str, rng: &mut impl Rng) -> String {
    const SKUS: [&str; 6] = ["kb-01", "mouse-02", "cable-03", "dock-04", "ssd-05", "fan-06"];
    let items: Vec<_> = (0..rng.random_range(1..4))
        .map(|_| serde_json::json!({"sku": SKUS[rng.random_range(0..SKUS.len())], "qty": rng.random_range(1..5)}))
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    serde_json::json!({
        "order_id": format!("o-{n:08}"),
        "customer": customer,
        "amount": (rng.random_range(100..50_000) as f64) / 100.0,
        "currency": "EUR",
        "items": items,
        "created_at": now,
    })
    .to_string()
}
