//! decode → validate → handle/sink, as one `Handler` per partition.

pub mod decode;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};

pub use self::decode::{Decoder, Format};
use self::registry::{Registry, RegistrySpec};
use super::handler::{Failure, Handler, HandlerFactory, Progress, Stage};
use super::sink::{Sink, SinkFactory, SinkOptions, SinkSpec};

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub format: Format,
    /// Per-topic formats (from the config file) over `format`.
    pub topic_formats: HashMap<String, Format>,
    /// JSON Schema every decoded value must satisfy: a file, or the schema itself.
    pub schema: Option<PathBuf>,
    pub schema_text: Option<String>,
    pub registry: Option<RegistrySpec>,
    pub avro_schema: Option<PathBuf>,
    pub reader_schema: Option<PathBuf>,
    pub proto_descriptor: Option<PathBuf>,
    pub proto_message: Option<String>,
    pub sink: SinkSpec,
    pub sink_options: SinkOptions,
    /// Simulated work per record (demos and tests).
    pub delay: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            format: Format::Bytes,
            topic_formats: HashMap::new(),
            schema: None,
            schema_text: None,
            registry: None,
            avro_schema: None,
            reader_schema: None,
            proto_descriptor: None,
            proto_message: None,
            sink: SinkSpec::Null,
            sink_options: SinkOptions::default(),
            delay: Duration::ZERO,
        }
    }
}

/// The registry client, asked once: a wrong CA or password stops the start;
/// a registry that is down is said, and records wait for it.
fn registry(spec: &RegistrySpec) -> Result<Arc<Registry>, String> {
    let r = Registry::new(spec)?;
    if let Some(why) = r.check()? {
        tracing::warn!("{why}; records that need a schema wait for it");
    }
    Ok(Arc::new(r))
}

/// Everything the partitions share: schemas, the registry client, the sink factory.
pub struct Pipeline {
    formats: HashMap<String, Format>,
    default_format: Format,
    decoder: Decoder,
    validator: Option<jsonschema::Validator>,
    sinks: SinkFactory,
    delay: Duration,
    /// Neither the sink nor a schema reads decoded values.
    values_unused: bool,
}

/// `--sql` parameters named after fields bind from decoded JSON objects: with
/// values read as bytes or text no record can ever bind them, and every row
/// would be NULLs. That is a mistake to refuse at start, not to write.
fn check_bindable(fields: &[String], cfg: &PipelineConfig) -> Result<(), String> {
    let structured = |f: &Format| matches!(f, Format::Json | Format::Avro | Format::Protobuf);
    let all_structured = structured(&cfg.format) || (!cfg.topic_formats.is_empty() && cfg.topic_formats.values().all(structured));
    if fields.is_empty() || all_structured {
        return Ok(());
    }
    let names: Vec<String> = fields.iter().map(|f| format!(":{f}")).collect();
    Err(format!(
        "--sql binds {} from fields of decoded values, but records are read as {}, which has no fields; \
         add --format json (or avro/protobuf), or bind :value and extract with json_extract(:value, '$.{}')",
        names.join(", "),
        format!("{:?}", cfg.format).to_lowercase(),
        fields[0]
    ))
}

impl Pipeline {
    /// Loads schemas and opens the sink; every problem is one sentence naming the file.
    pub fn new(cfg: &PipelineConfig) -> Result<Arc<Pipeline>, String> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))
        };
        let avro = |p: &PathBuf| {
            apache_avro::Schema::parse_str(&read(p, "Avro schema")?)
                .map_err(|e| format!("the Avro schema {} is not valid: {e}", p.display()))
        };
        let schema = match (&cfg.schema, &cfg.schema_text) {
            (Some(p), _) => Some((read(p, "JSON Schema")?, p.display().to_string())),
            (None, Some(text)) => Some((text.clone(), "given".to_string())),
            (None, None) => None,
        };
        let validator = match schema {
            None => None,
            Some((text, name)) => {
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("the JSON Schema {name} is not JSON: {e}"))?;
                Some(jsonschema::validator_for(&v).map_err(|e| format!("the JSON Schema {name} is not valid: {e}"))?)
            }
        };
        let proto_message = match (&cfg.proto_descriptor, &cfg.proto_message) {
            (None, None) => None,
            (Some(p), Some(name)) => {
                let bytes = std::fs::read(p).map_err(|e| format!("cannot read the descriptor set {}: {e}", p.display()))?;
                let pool = prost_reflect::DescriptorPool::decode(bytes.as_slice())
                    .map_err(|e| format!("{} is not a Protobuf descriptor set: {e}", p.display()))?;
                Some(pool.get_message_by_name(name).ok_or_else(|| format!("message {name} is not in {}", p.display()))?)
            }
            _ => return Err("--proto-descriptor and --proto-message go together".into()),
        };
        let decoder = Decoder {
            registry: cfg.registry.as_ref().map(registry).transpose()?,
            avro_writer: cfg.avro_schema.as_ref().map(avro).transpose()?,
            avro_reader: cfg.reader_schema.as_ref().map(avro).transpose()?,
            proto_message,
        };
        let sinks = SinkFactory::new(&cfg.sink, &cfg.sink_options)?;
        check_bindable(&sinks.field_parameters(), cfg)?;
        // Bytes decode to base64 text that nothing would read (5% of the null sink's CPU).
        let values_unused = !sinks.uses_values() && validator.is_none();
        Ok(Arc::new(Pipeline {
            formats: cfg.topic_formats.clone(),
            default_format: cfg.format,
            decoder,
            validator,
            sinks,
            delay: cfg.delay,
            values_unused,
        }))
    }

    pub fn factory(self: &Arc<Self>) -> HandlerFactory {
        let p = self.clone();
        Arc::new(move |topic: &str, partition: i32| -> Box<dyn Handler> {
            Box::new(PipelineHandler { sink: p.sinks.open(topic, partition), pipeline: p.clone() })
        })
    }

    /// Present when the sink can honour `--commit eos`.
    pub fn exactly_once(&self) -> Option<Arc<super::sink::ExactlyOnce>> {
        self.sinks.exactly_once()
    }

    fn format(&self, topic: &str) -> Format {
        self.formats.get(topic).copied().unwrap_or(self.default_format)
    }
}

pub struct PipelineHandler {
    pipeline: Arc<Pipeline>,
    sink: Box<dyn Sink>,
}

impl PipelineHandler {
    /// The record's value, decoded and checked against its schemas.
    fn value(&self, record: &OwnedMessage) -> Result<serde_json::Value, Failure> {
        let p = &self.pipeline;
        if !p.delay.is_zero() {
            std::thread::sleep(p.delay);
        }
        let format = p.format(record.topic());
        if p.values_unused && format == Format::Bytes {
            // Bytes always decode; with no sink or schema to read the value there is nothing to do.
            return Ok(serde_json::Value::Null);
        }
        let decoded = p.decoder.decode(format, record.payload())?;
        for v in decoded.schema.as_deref().into_iter().chain(p.validator.as_ref()) {
            if let Err(e) = v.validate(&decoded.value) {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "the value".to_string() } else { at };
                return Err(Failure::permanent(Stage::Validate, format!("{at}: {e}")));
            }
        }
        Ok(decoded.value)
    }
}

impl Handler for PipelineHandler {
    fn handle(&mut self, record: &OwnedMessage) -> Result<(), Failure> {
        let value = self.value(record)?;
        self.sink.write(record, &value)
    }

    fn run_size(&self) -> usize {
        self.sink.run_size()
    }

    /// Each record decoded and checked on its own; those that pass go to the
    /// sink in one run.
    fn handle_run(&mut self, records: &[OwnedMessage]) -> Vec<Result<(), Failure>> {
        let mut outcomes: Vec<Option<Result<(), Failure>>> = vec![None; records.len()];
        let mut values = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match self.value(record) {
                Ok(v) => values.push((i, v)),
                Err(f) => outcomes[i] = Some(Err(f)),
            }
        }
        let run: Vec<(&OwnedMessage, &serde_json::Value)> = values.iter().map(|(i, v)| (&records[*i], v)).collect();
        for ((i, _), outcome) in values.iter().zip(self.sink.write_run(&run)) {
            outcomes[*i] = Some(outcome);
        }
        // Up to the first record the sink did not get to (if it broke part-way).
        outcomes.into_iter().map_while(|o| o).collect()
    }

    fn flush(&mut self, progress: Option<&Progress>) -> Result<(), Failure> {
        self.sink.flush(progress)
    }

    fn carry_dead_letter(&mut self, record: &OwnedMessage, letter: &crate::engine::dlq::Letter) -> bool {
        self.sink.carry_dead_letter(record, letter)
    }

    fn batch_size(&self) -> Option<usize> {
        self.sink.batch_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_descriptor_set_decodes_protobuf_without_a_registry() {
        let source = "syntax = \"proto3\"; package t; message M { string s = 1; }";
        let file = registry::compile_proto("t.proto", source).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let desc = dir.path().join("t.desc");
        std::fs::write(&desc, file.parent_pool().encode_to_vec()).unwrap();
        let p = Pipeline::new(&PipelineConfig {
            format: Format::Protobuf,
            proto_descriptor: Some(desc),
            proto_message: Some("t.M".into()),
            ..Default::default()
        })
        .unwrap();
        let mut m = prost_reflect::DynamicMessage::new(file.parent_pool().get_message_by_name("t.M").unwrap());
        m.set_field_by_name("s", prost_reflect::Value::String("hi".into()));
        let mut bytes = vec![0, 0, 0, 0, 9, 0];
        prost::Message::encode(&m, &mut bytes).unwrap();
        let d = p.decoder.decode(Format::Protobuf, Some(&bytes)).map_err(|f| f.message).unwrap();
        assert_eq!(d.value, serde_json::json!({"s": "hi"}));
    }

    #[test]
    fn bad_schema_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let e = Pipeline::new(&PipelineConfig { schema: Some(bad), ..Default::default() }).err().unwrap();
        assert!(e.contains("bad.json is not JSON"), "{e}");
        let e = Pipeline::new(&PipelineConfig { avro_schema: Some(dir.path().join("missing.avsc")), ..Default::default() })
            .err()
            .unwrap();
        assert!(e.contains("cannot read the Avro schema") && e.contains("missing.avsc"), "{e}");
    }
}
