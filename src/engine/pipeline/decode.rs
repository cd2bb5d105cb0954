//! Turning record bytes into a JSON value: JSON, Avro and Protobuf (in the
//! Confluent wire format: magic byte 0, a 4-byte big-endian schema id, for
//! Protobuf the message indexes, then the payload), text and raw bytes.
//! Bad input is a permanent failure; a registry that cannot be reached is not.

use std::sync::Arc;

use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::Value;

use super::registry::{RegisteredSchema, Registry};
use crate::engine::handler::{Failure, Stage};
use crate::engine::sink::base64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Avro,
    Protobuf,
    Text,
    Bytes,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "avro" => Ok(Format::Avro),
            "protobuf" => Ok(Format::Protobuf),
            "text" => Ok(Format::Text),
            "bytes" => Ok(Format::Bytes),
            _ => Err(format!("unknown format `{s}`: expected json, avro, protobuf, text or bytes")),
        }
    }
}

/// Schemas to decode with, from a registry or from local files.
#[derive(Default)]
pub struct Decoder {
    pub registry: Option<Arc<Registry>>,
    /// Local Avro writer schema, used when there is no registry.
    pub avro_writer: Option<apache_avro::Schema>,
    /// Avro reader schema: records written with older or newer schemas are resolved to it.
    pub avro_reader: Option<apache_avro::Schema>,
    /// Local Protobuf message type, used when there is no registry.
    pub proto_message: Option<MessageDescriptor>,
}

pub struct Decoded {
    pub value: Value,
    /// The JSON Schema a Confluent-framed JSON record names in the registry.
    pub schema: Option<Arc<jsonschema::Validator>>,
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure::permanent(Stage::Decode, msg)
}

impl Decoder {
    pub fn decode(&self, format: Format, payload: Option<&[u8]>) -> Result<Decoded, Failure> {
        let plain = |value| Ok(Decoded { value, schema: None });
        let Some(bytes) = payload else {
            return match format {
                Format::Text | Format::Bytes => plain(Value::Null),
                _ => Err(bad("tombstone (null value) where a record was expected")),
            };
        };
        match format {
            Format::Bytes => plain(Value::String(base64(bytes))),
            Format::Text => plain(Value::String(utf8(bytes)?.to_string())),
            Format::Json => self.json(bytes),
            Format::Avro => self.avro(bytes).map(|value| Decoded { value, schema: None }),
            Format::Protobuf => self.protobuf(bytes).map(|value| Decoded { value, schema: None }),
        }
    }

    fn json(&self, bytes: &[u8]) -> Result<Decoded, Failure> {
        // JSON never starts with a 0 byte, so a framed record is unambiguous.
        if let (Some(0), Some(registry)) = (bytes.first(), &self.registry) {
            let (id, rest) = wire(bytes)?;
            let schema = match &*registry.schema(id)? {
                RegisteredSchema::Json(v) => Some(v.clone()),
                _ => return Err(bad(format!("schema {id} is not a JSON Schema, but the topic is read as JSON"))),
            };
            return Ok(Decoded { value: parse_json(rest)?, schema });
        }
        if bytes.first().is_some_and(|&b| b < 0x09) && bytes.len() >= 5 {
            return Err(bad(format!("not JSON: starts with byte {} (Confluent framing needs magic byte 0 and --schema-registry)", bytes[0])));
        }
        Ok(Decoded { value: parse_json(bytes)?, schema: None })
    }

    fn avro(&self, bytes: &[u8]) -> Result<Value, Failure> {
        let (id, mut rest) = wire(bytes)?;
        let from_registry;
        let writer = match (&self.registry, &self.avro_writer) {
            (Some(r), _) => {
                from_registry = r.schema(id)?;
                match &*from_registry {
                    RegisteredSchema::Avro(s) => s,
                    _ => return Err(bad(format!("schema {id} is not an Avro schema"))),
                }
            }
            (None, Some(local)) => local,
            (None, None) => return Err(bad("Avro needs --schema-registry or --avro-schema")),
        };
        let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
            .maybe_reader_schema(self.avro_reader.as_ref())
            .build()
            .and_then(|r| r.read_value(&mut rest))
            .map_err(|e| bad(format!("not Avro of schema {id}: {e}")))?;
        Value::try_from(value).map_err(|e| bad(format!("Avro value has no JSON form: {e}")))
    }

    fn protobuf(&self, bytes: &[u8]) -> Result<Value, Failure> {
        let (id, rest) = wire(bytes)?;
        let (path, payload) = message_indexes(rest)?;
        let message = match (&self.registry, &self.proto_message) {
            (Some(r), _) => match &*r.schema(id)? {
                RegisteredSchema::Protobuf(file) => {
                    let mut found = file.messages().nth(path[0]);
                    for &i in &path[1..] {
                        found = found.and_then(|m| m.child_messages().nth(i));
                    }
                    found.ok_or_else(|| bad(format!("schema {id} has no message at index path {path:?}")))?
                }
                _ => return Err(bad(format!("schema {id} is not a Protobuf schema"))),
            },
            (None, Some(m)) => m.clone(),
            (None, None) => return Err(bad("Protobuf needs --schema-registry or --proto-descriptor with --proto-message")),
        };
        let msg = DynamicMessage::decode(message.clone(), payload)
            .map_err(|e| bad(format!("not a {} message: {e}", message.full_name())))?;
        serde_json::to_value(&msg).map_err(|e| bad(format!("Protobuf value has no JSON form: {e}")))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Failure> {
    std::str::from_utf8(bytes).map_err(|e| bad(format!("not valid UTF-8: {e}")))
}

/// serde_json refuses nesting deeper than 128 levels, so hostile input cannot blow the stack.
fn parse_json(bytes: &[u8]) -> Result<Value, Failure> {
    if bytes.is_empty() {
        return Err(bad("empty value (0 bytes) where JSON was expected"));
    }
    let text = utf8(bytes)?;
    serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))
}

/// Splits the Confluent header: magic byte 0 and a big-endian schema id.
pub fn wire(bytes: &[u8]) -> Result<(u32, &[u8]), Failure> {
    if bytes.len() < 5 {
        return Err(bad(format!("{} bytes is too short for the Confluent wire format", bytes.len())));
    }
    if bytes[0] != 0 {
        return Err(bad(format!("magic byte {} is not the Confluent wire format's 0", bytes[0])));
    }
    Ok((u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]), &bytes[5..]))
}

/// Confluent Protobuf message indexes: a zigzag varint count, then that many
/// zigzag varint indexes; a count of 0 means the first message, `[0]`.
fn message_indexes(bytes: &[u8]) -> Result<(Vec<usize>, &[u8]), Failure> {
    let mut rest = bytes;
    let mut next = || -> Result<i64, Failure> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, tail) = rest.split_first().ok_or_else(|| bad("truncated Protobuf message indexes"))?;
            rest = tail;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(bad("malformed Protobuf message indexes"))
    };
    let count = next()?;
    if !(0..=64).contains(&count) {
        return Err(bad(format!("implausible Protobuf message index count {count}")));
    }
    let mut path = Vec::new();
    for _ in 0..count {
        let i = next()?;
        path.push(usize::try_from(i).map_err(|_| bad(format!("negative Protobuf message index {i}")))?);
    }
    if path.is_empty() {
        path.push(0);
    }
    Ok((path, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> Result<Value, Failure> {
        Decoder::default().decode(Format::Json, Some(bytes)).map(|d| d.value)
    }

    #[test]
    fn hostile_json_fails_permanently_without_crashing() {
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        for (input, expect) in [
            (&b"{\"a\":"[..], "malformed JSON"),
            (&b""[..], "empty value"),
            (&b"\xff\xfe{}"[..], "UTF-8"),
            (deep.as_bytes(), "recursion limit"),
            (&b"\x01\x00\x00\x00\x07{}"[..], "starts with byte 1"),
        ] {
            let e = json(input).unwrap_err();
            assert!(e.permanent && e.stage == Stage::Decode, "{e:?}");
            assert!(e.message.contains(expect), "{expect}: {}", e.message);
        }
        assert!(Decoder::default().decode(Format::Json, None).err().unwrap().message.contains("tombstone"));
        assert_eq!(json(br#"{"a":1}"#).unwrap(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn message_indexes_follow_the_confluent_encoding() {
        assert_eq!(message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        // count 2 (zigzag 4), indexes 1 (zigzag 2) and 0
        assert_eq!(message_indexes(&[4, 2, 0, 7]).unwrap(), (vec![1, 0], &[7u8][..]));
    }

    fn encode(schema: &apache_avro::Schema, r: apache_avro::types::Record) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema).build().unwrap().write_value_to_vec(r).unwrap()
    }

    #[test]
    fn avro_evolves_from_an_old_writer_to_a_new_reader_and_back() {
        use apache_avro::{types::Record, Schema};
        let old = Schema::parse_str(r#"{"type":"record","name":"O","fields":[{"name":"id","type":"long"}]}"#).unwrap();
        let new = Schema::parse_str(
            r#"{"type":"record","name":"O","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":"none"}]}"#,
        )
        .unwrap();
        let mut r = Record::new(&old).unwrap();
        r.put("id", 7i64);
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend(encode(&old, r));
        let d = Decoder { avro_writer: Some(old.clone()), avro_reader: Some(new.clone()), ..Default::default() };
        assert_eq!(d.decode(Format::Avro, Some(&framed)).unwrap().value, serde_json::json!({"id": 7, "note": "none"}));

        let mut r = Record::new(&new).unwrap();
        r.put("id", 8i64);
        r.put("note", "dropped by the old reader");
        let mut framed = vec![0, 0, 0, 0, 2];
        framed.extend(encode(&new, r));
        let d = Decoder { avro_writer: Some(new), avro_reader: Some(old), ..Default::default() };
        assert_eq!(d.decode(Format::Avro, Some(&framed)).unwrap().value, serde_json::json!({"id": 8}));
    }
}
