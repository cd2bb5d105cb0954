//! Turns CLI options, environment and config file into an `EngineConfig`:
//! CLI > env (clap reads it) > file > defaults. Every mistake the user can
//! make ends in one sentence naming the thing and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::cli::RunArgs;
use crate::engine::{CommitStrategy, EngineConfig, SinkSpec, Subscription};

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
    pub drain_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub log_file: Option<PathBuf>,
    /// librdkafka properties, as with -X.
    #[serde(default)]
    pub properties: toml::Table,
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

/// Everything `run` needs besides the engine config.
pub struct RunConfig {
    pub engine: EngineConfig,
    pub sink: SinkSpec,
    pub handler_delay: Duration,
    pub log_file: Option<PathBuf>,
}

pub fn resolve(args: &RunArgs) -> Result<RunConfig> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let brokers = args.brokers.clone().or(file.brokers).ok_or_else(|| {
        anyhow!("no brokers given: pass -b HOST:PORT, set KDECK_BROKERS, or put `brokers` in the config file")
    })?;
    let group = args.group.clone().or(file.group).unwrap_or_else(|| "kdeck".to_string());
    let topics: Vec<String> = if args.topics.is_empty() { file.topics.unwrap_or_default() } else { args.topics.clone() };
    let topics: Vec<String> = topics.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    let pattern = args.pattern.clone().or(file.pattern);
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
    for kv in &args.properties {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("-X `{kv}` is not KEY=VALUE, e.g. -X security.protocol=SASL_SSL"))?;
        properties.push((k.trim().to_string(), v.to_string()));
    }

    let commit: CommitStrategy = match args.commit.clone().or(file.commit) {
        Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
        None => CommitStrategy::default(),
    };
    let sink: SinkSpec = match args.sink.clone().or(file.sink) {
        Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
        None => SinkSpec::Null,
    };
    let duration = |name: &str, v: Option<String>, default: Duration| -> Result<Duration> {
        match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(&s)
                .map_err(|_| anyhow!("--{name} `{s}` is not a duration; write it like 500ms, 10s or 2m")),
        }
    };
    let mut engine = EngineConfig::new(&brokers, &group, subscription);
    engine.properties = properties;
    engine.commit = commit;
    engine.max_queue = args.max_queue.or(file.max_queue).unwrap_or(10_000);
    if engine.max_queue < 2 {
        bail!("--max-queue must be at least 2");
    }
    engine.drain_timeout = duration("drain-timeout", args.drain_timeout.clone().or(file.drain_timeout), engine.drain_timeout)?;
    engine.connect_timeout =
        duration("connect-timeout", args.connect_timeout.clone().or(file.connect_timeout), engine.connect_timeout)?;
    engine.stop_at_end = args.stop_at_end;
    engine.sink_label = sink.to_string();
    let handler_delay = duration("handler-delay", args.handler_delay.clone().or(file.handler_delay), Duration::ZERO)?;
    Ok(RunConfig { engine, sink, handler_delay, log_file: args.output.log_file.clone().or(file.log_file) })
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
    fn cli_wins_over_the_file_and_the_file_over_defaults() {
        let f = file("brokers = \"file:9092\"\ngroup = \"g-file\"\ntopics = [\"a\"]\ncommit = \"per-message\"\n[properties]\n\"fetch.min.bytes\" = 10\n");
        let mut a = args(Some("cli:9092"), &[]);
        a.config = Some(f.path().to_path_buf());
        a.properties = vec!["fetch.min.bytes=20".into()];
        let c = resolve(&a).unwrap();
        assert_eq!(c.engine.brokers, "cli:9092");
        assert_eq!(c.engine.group, "g-file");
        assert_eq!(c.engine.subscription, Subscription::Topics(vec!["a".into()]));
        assert_eq!(c.engine.commit, CommitStrategy::PerMessage);
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
