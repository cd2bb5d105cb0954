//! Turns CLI options, environment and config file into an `EngineConfig`:
//! CLI > env (clap reads it) > file > defaults. Every mistake the user can
//! make ends in one sentence naming the thing and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::cli::{PipelineArgs, RunArgs};
use crate::engine::pipeline::registry::{RegistrySpec, PASSWORD_ENV as REGISTRY_PASSWORD_ENV};
use crate::engine::pipeline::{Format, PipelineConfig};
use crate::engine::sink::SinkOptions;
use crate::engine::{CommitStrategy, EngineConfig, RetryOrdering, RetryPolicy, SinkSpec, Subscription};

/// The config file: the same keys as the `run` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub topics: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub commit: Option<String>,
    pub sink: Option<String>,
    pub handler_delay: Option<String>,
    pub max_queue: Option<usize>,
    pub max_queue_bytes: Option<String>,
    pub drain_timeout: Option<String>,
    pub unowned_after: Option<String>,
    pub connect_timeout: Option<String>,
    pub log_file: Option<PathBuf>,
    pub format: Option<String>,
    pub schema: Option<PathBuf>,
    pub schema_registry: Option<String>,
    pub registry_ca: Option<PathBuf>,
    pub registry_password_file: Option<PathBuf>,
    pub avro_schema: Option<PathBuf>,
    pub reader_schema: Option<PathBuf>,
    pub proto_descriptor: Option<PathBuf>,
    pub proto_message: Option<String>,
    pub sql: Option<String>,
    pub retry_max: Option<u32>,
    pub retry_backoff: Option<String>,
    pub ordering: Option<String>,
    pub dlq: Option<String>,
    pub dlq_timeout: Option<String>,
    pub audit: Option<PathBuf>,
    /// librdkafka properties, as with -X.
    #[serde(default)]
    pub properties: toml::Table,
    /// Per-topic formats, e.g. `payments = "avro"`.
    #[serde(default)]
    pub formats: std::collections::HashMap<String, String>,
    /// Dashboard key overrides, `action = "key"`.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
            anyhow!("the config file {} is not valid{at}: {}", path.display(), e.message().trim_end_matches('\n'))
        })
    }
}

/// Everything `run` needs.
pub struct RunConfig {
    pub engine: EngineConfig,
    pub pipeline: PipelineConfig,
    pub log_file: Option<PathBuf>,
    pub keymap: kdeck_ui::keymap::KeyMap,
}

fn duration(name: &str, v: Option<String>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(&s)
            .map_err(|_| anyhow!("--{name} `{s}` is not a duration; write it like 500ms, 10s or 2m")),
    }
}

/// The pipeline options, CLI over file; `group`, `brokers` and `properties` are
/// those of the consumer it serves (sinks that write to Kafka use them).
pub fn pipeline(args: &PipelineArgs, file: &FileConfig, group: &str, brokers: &str, properties: &[(String, String)]) -> Result<PipelineConfig> {
    let parse_format = |s: &str| s.parse::<Format>().map_err(|e| anyhow!(e));
    let mut topic_formats = std::collections::HashMap::new();
    for (topic, f) in &file.formats {
        topic_formats.insert(topic.clone(), parse_format(f)?);
    }
    Ok(PipelineConfig {
        format: match args.format.clone().or(file.format.clone()) {
            Some(f) => parse_format(&f)?,
            None => Format::Bytes,
        },
        topic_formats,
        schema: args.schema.clone().or(file.schema.clone()),
        schema_text: None,
        registry: registry(args, file)?,
        avro_schema: args.avro_schema.clone().or(file.avro_schema.clone()),
        reader_schema: args.reader_schema.clone().or(file.reader_schema.clone()),
        proto_descriptor: args.proto_descriptor.clone().or(file.proto_descriptor.clone()),
        proto_message: args.proto_message.clone().or(file.proto_message.clone()),
        sink: match args.sink.clone().or(file.sink.clone()) {
            Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
            None => SinkSpec::Null,
        },
        sink_options: SinkOptions {
            sink_password: match &args.sink_password_file {
                Some(path) => Some(crate::security::secret_file(path, "--sink-password-file").map_err(|e| anyhow!(e))?),
                None => None,
            },
            sql: match args.sql.clone().or(file.sql.clone()) {
                // A path to a file, or the statement itself.
                Some(s) if std::path::Path::new(&s).is_file() => {
                    Some(std::fs::read_to_string(&s).map_err(|e| anyhow!("cannot read the --sql file {s}: {e}"))?)
                }
                other => other,
            },
            group: group.to_string(),
            brokers: brokers.to_string(),
            properties: properties.to_vec(),
            transactional_id: args.transactional_id.clone(),
            transform: args.transform.clone(),
            exec_timeout: duration("exec-timeout", args.exec_timeout.clone(), Duration::from_secs(30))?,
            exec_batch: args.exec_batch.map_or(crate::engine::sink::EXEC_BATCH, |n| n as usize),
        },
        delay: duration("handler-delay", args.handler_delay.clone().or(file.handler_delay.clone()), Duration::ZERO)?,
    })
}

/// The schema registry and how to reach it; the password from a file or
/// the environment (never the command line, which every user can see).
fn registry(args: &PipelineArgs, file: &FileConfig) -> Result<Option<RegistrySpec>> {
    let Some(url) = args.schema_registry.clone().or(file.schema_registry.clone()) else {
        if args.registry_ca.is_some() || args.registry_password_file.is_some() {
            bail!("--registry-ca and --registry-password-file go with --schema-registry");
        }
        return Ok(None);
    };
    let password = match args.registry_password_file.clone().or(file.registry_password_file.clone()) {
        Some(path) => Some(crate::security::secret_file(&path, "--registry-password-file").map_err(|e| anyhow!(e))?),
        None => std::env::var(REGISTRY_PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    };
    Ok(Some(RegistrySpec { url, ca: args.registry_ca.clone().or(file.registry_ca.clone()), password }))
}

/// librdkafka properties that kdeck's guarantees rest on: overriding them would
/// commit or skip records kdeck has not finished, so they are refused.
fn guard_properties(properties: &[(String, String)], commit: CommitStrategy) -> Result<()> {
    for (k, v) in properties {
        let value = v.trim().to_ascii_lowercase();
        let why = match k.as_str() {
            "enable.auto.commit" if value != "false" => {
                "librdkafka would commit offsets of records kdeck has not finished; kdeck commits them itself (choose when with --commit)"
            }
            "enable.auto.offset.store" if value != "false" => {
                "librdkafka would mark records done as they are delivered, before kdeck has finished them"
            }
            "group.id" => "give the group with -G/--group (or `group` in the config file)",
            "isolation.level" if commit == CommitStrategy::Eos && value != "read_committed" => {
                "--commit eos must read only committed transactions, or it would process output that was rolled back"
            }
            _ => continue,
        };
        bail!("the librdkafka property {k}={v} (from -X or [properties]) is refused: {why}");
    }
    Ok(())
}

pub fn resolve(args: &RunArgs) -> Result<RunConfig> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let brokers = args.brokers.clone().or(file.brokers.clone()).ok_or_else(|| {
        anyhow!("no brokers given: pass -b HOST:PORT, set KDECK_BROKERS, or put `brokers` in the config file")
    })?;
    let group = args.group.clone().or(file.group.clone()).unwrap_or_else(|| "kdeck".to_string());
    let topics: Vec<String> = if args.topics.is_empty() { file.topics.clone().unwrap_or_default() } else { args.topics.clone() };
    let topics: Vec<String> = topics.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    let pattern = args.pattern.clone().or(file.pattern.clone());
    let subscription = match (topics.is_empty(), pattern) {
        (false, Some(_)) => bail!("give either --topic or --pattern, not both"),
        (false, None) => Subscription::Topics(topics),
        (true, Some(p)) => Subscription::Pattern(p),
        (true, None) => bail!("no topics given: pass -t TOPIC[,TOPIC...], --pattern REGEX, or set KDECK_TOPICS"),
    };

    let mut properties = Vec::new();
    for (k, v) in &file.properties {
        let v = match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        properties.push((k.clone(), v));
    }
    // The friendly options, then -X: a -X property wins.
    properties.extend(args.security.properties_over(&properties).map_err(|e| anyhow!(e))?);
    for kv in &args.properties {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("-X `{}` is not KEY=VALUE, e.g. -X security.protocol=SASL_SSL", crate::security::key_of(kv)))?;
        properties.push((k.trim().to_string(), v.to_string()));
    }

    let pipeline = pipeline(&args.pipeline, &file, &group, &brokers, &properties)?;
    let commit: CommitStrategy = match args.commit.clone().or(file.commit.clone()) {
        Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
        None => CommitStrategy::default(),
    };
    guard_properties(&properties, commit)?;
    let mut engine = EngineConfig::new(&brokers, &group, subscription);
    engine.properties = properties;
    engine.commit = commit;
    engine.max_queue = args.max_queue.or(file.max_queue).unwrap_or(10_000);
    if engine.max_queue < 2 {
        bail!("--max-queue must be at least 2");
    }
    if let Some(b) = args.max_queue_bytes.clone().or(file.max_queue_bytes) {
        let size: bytesize::ByteSize =
            b.parse().map_err(|_| anyhow!("--max-queue-bytes `{b}` is not a size, e.g. 64MiB or 512KiB"))?;
        if size.as_u64() < 4 << 20 {
            bail!("--max-queue-bytes must be at least 4MiB (librdkafka needs room for a fetch)");
        }
        engine.max_queue_bytes = size.as_u64() as usize;
    }
    engine.drain_timeout = duration("drain-timeout", args.drain_timeout.clone().or(file.drain_timeout), engine.drain_timeout)?;
    engine.connect_timeout =
        duration("connect-timeout", args.connect_timeout.clone().or(file.connect_timeout), engine.connect_timeout)?;
    engine.unowned_after = duration("unowned-after", args.unowned_after.clone().or(file.unowned_after.clone()), engine.unowned_after)?;
    if engine.unowned_after < Duration::from_secs(1) {
        bail!("--unowned-after must be at least 1s");
    }
    engine.stop_at_end = args.stop_at_end;
    engine.sink_label = pipeline.sink.to_string();
    let mut retry = RetryPolicy::default();
    if let Some(n) = args.retry_max.or(file.retry_max) {
        if n == 0 {
            bail!("--retry-max must be at least 1 (the first attempt counts)");
        }
        retry.max_attempts = n;
    }
    if let Some(b) = args.retry_backoff.clone().or(file.retry_backoff) {
        (retry.base, retry.max) = RetryPolicy::parse_backoff(&b).map_err(|e| anyhow!(e))?;
    }
    if let Some(o) = args.ordering.clone().or(file.ordering) {
        retry.ordering = o.parse::<RetryOrdering>().map_err(|e| anyhow!(e))?;
    }
    if retry.ordering == RetryOrdering::Key && pipeline.sink_options.exec_batch > 1 {
        // A run's later record of a key would not wait behind an earlier one parked in it.
        bail!("--exec-batch above 1 needs --ordering partition: with --ordering key a record could finish before an earlier one of its key");
    }
    engine.retry = retry;
    engine.dlq_topic = args.dlq.clone().or(file.dlq);
    engine.dlq_timeout = duration("dlq-timeout", args.dlq_timeout.clone().or(file.dlq_timeout), engine.dlq_timeout)?;
    if let Some(a) = args.audit.clone().or(file.audit) {
        engine.audit_path = a;
    }
    let keymap = kdeck_ui::keymap::KeyMap::default()
        .with_overrides(file.keys.iter().map(|(a, k)| (a.as_str(), k.as_str())))
        .map_err(|e| anyhow!("the config file's [keys]: {e}"))?;
    Ok(RunConfig { engine, pipeline, log_file: args.output.log_file.clone().or(file.log_file), keymap })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(brokers: Option<&str>, topics: &[&str]) -> RunArgs {
        RunArgs {
            brokers: brokers.map(String::from),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/kdeck.example.toml");
        let f = FileConfig::load(&path).unwrap();
        assert_eq!(f.max_queue_bytes.as_deref(), Some("64MiB"));
        let mut a = args(None, &[]);
        a.config = Some(path);
        let c = resolve(&a).unwrap();
        assert_eq!(c.engine.max_queue_bytes, 64 << 20);
    }

    #[test]
    fn cli_wins_over_the_file_and_the_file_over_defaults() {
        let f = file("brokers = \"file:9092\"\ngroup = \"g-file\"\ntopics = [\"a\"]\ncommit = \"per-message\"\nformat = \"json\"\n[properties]\n\"fetch.min.bytes\" = 10\n[formats]\nb = \"avro\"\n");
        let mut a = args(Some("cli:9092"), &[]);
        a.config = Some(f.path().to_path_buf());
        a.properties = vec!["fetch.min.bytes=20".into()];
        let c = resolve(&a).unwrap();
        assert_eq!(c.engine.brokers, "cli:9092");
        assert_eq!(c.engine.group, "g-file");
        assert_eq!(c.engine.subscription, Subscription::Topics(vec!["a".into()]));
        assert_eq!(c.engine.commit, CommitStrategy::PerMessage);
        assert_eq!(c.pipeline.format, Format::Json);
        assert_eq!(c.pipeline.topic_formats["b"], Format::Avro);
        // -X comes after the file's properties, so it wins when applied in order.
        assert_eq!(c.engine.properties, vec![("fetch.min.bytes".into(), "10".into()), ("fetch.min.bytes".into(), "20".into())]);
    }

    #[test]
    fn unknown_keys_in_the_file_are_named_with_their_line() {
        let f = file("brokers = \"x:1\"\ntopcis = [\"a\"]\n");
        let mut a = args(None, &[]);
        a.config = Some(f.path().to_path_buf());
        let e = resolve(&a).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("topcis"), "{e}");
    }

    #[test]
    fn missing_brokers_topics_and_bad_values_say_how_to_fix_them() {
        assert!(resolve(&args(None, &["t"])).err().unwrap().to_string().contains("KDECK_BROKERS"));
        assert!(resolve(&args(Some("b:1"), &[])).err().unwrap().to_string().contains("--pattern"));
        let mut a = args(Some("b:1"), &["t"]);
        a.commit = Some("often".into());
        assert!(resolve(&a).err().unwrap().to_string().contains("unknown commit strategy"));
        let mut a = args(Some("b:1"), &["t"]);
        a.properties = vec!["novalue".into()];
        assert!(resolve(&a).err().unwrap().to_string().contains("KEY=VALUE"));
    }
}
