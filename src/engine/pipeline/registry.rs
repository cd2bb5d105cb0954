//! A Confluent Schema Registry client: schemas fetched by id (`GET /schemas/ids/{id}`),
//! parsed once and cached. A 404 is permanent (the id does not exist); anything
//! else that goes wrong (network, 5xx) is retryable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use prost_reflect::{DescriptorPool, FileDescriptor};

use crate::engine::handler::{Failure, Stage};

pub enum RegisteredSchema {
    Avro(apache_avro::Schema),
    Protobuf(FileDescriptor),
    Json(Arc<jsonschema::Validator>),
}

pub struct Registry {
    url: String,
    auth: Option<String>,
    agent: ureq::Agent,
    cache: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
}

impl Registry {
    /// `url` may carry `user:password@` for basic auth.
    pub fn new(url: &str) -> Result<Registry, String> {
        let (url, auth) = split_credentials(url)?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Registry { url: url.trim_end_matches('/').to_string(), auth, agent, cache: Mutex::default() })
    }

    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, Failure> {
        if let Some(s) = self.cache.lock().unwrap().get(&id) {
            return Ok(s.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.url);
        let mut req = self.agent.get(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req
            .call()
            .map_err(|e| Failure::unavailable(Stage::Decode, format!("schema registry {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        match status {
            200 => {}
            404 => return Err(Failure::permanent(Stage::Decode, format!("unknown schema id {id} (not in the schema registry)"))),
            401 | 403 => {
                return Err(Failure::unavailable(Stage::Decode, format!("schema registry refused the credentials ({status})")))
            }
            // Its own trouble (5xx, throttling), not the record's.
            _ => return Err(Failure::unavailable(Stage::Decode, format!("schema registry answered {status} for id {id}"))),
        }
        let parsed = parse(id, &body).map_err(|e| Failure::permanent(Stage::Decode, e))?;
        let parsed = Arc::new(parsed);
        self.cache.lock().unwrap().insert(id, parsed.clone());
        Ok(parsed)
    }
}

pub(crate) fn parse(id: u32, body: &str) -> Result<RegisteredSchema, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("schema registry answer for id {id} is not JSON: {e}"))?;
    let text = v["schema"].as_str().ok_or_else(|| format!("schema registry answer for id {id} has no schema"))?;
    match v["schemaType"].as_str().unwrap_or("AVRO") {
        "AVRO" => apache_avro::Schema::parse_str(text)
            .map(RegisteredSchema::Avro)
            .map_err(|e| format!("schema {id} is not valid Avro: {e}")),
        "PROTOBUF" => compile_proto(&format!("schema-{id}.proto"), text).map(RegisteredSchema::Protobuf),
        "JSON" => {
            let schema: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("schema {id} is not JSON: {e}"))?;
            jsonschema::validator_for(&schema)
                .map(|v| RegisteredSchema::Json(Arc::new(v)))
                .map_err(|e| format!("schema {id} is not a valid JSON Schema: {e}"))
        }
        other => Err(format!("schema {id} has an unsupported type {other}")),
    }
}

/// Compiles .proto source (with the well-known Google imports available).
pub fn compile_proto(name: &str, source: &str) -> Result<FileDescriptor, String> {
    struct Source(String, String);
    impl protox::file::FileResolver for Source {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            if name == self.0 {
                protox::file::File::from_source(name, &self.1)
            } else {
                protox::file::GoogleFileResolver::new().open_file(name)
            }
        }
    }
    let mut compiler = protox::Compiler::with_file_resolver(Source(name.to_string(), source.to_string()));
    compiler.open_file(name).map_err(|e| format!("protobuf schema does not compile: {e}"))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(name).ok_or_else(|| format!("protobuf schema {name} vanished after compiling"))
}

fn split_credentials(url: &str) -> Result<(String, Option<String>), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("--schema-registry `{url}` is not a URL such as http://localhost:8081"));
    };
    match rest.split_once('@') {
        Some((cred, host)) => {
            let token = base64::engine::general_purpose::STANDARD.encode(cred);
            Ok((format!("{scheme}://{host}"), Some(format!("Basic {token}"))))
        }
        None => Ok((url.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let (url, auth) = split_credentials("https://u:p@registry:8081/").unwrap();
        assert_eq!(url, "https://registry:8081/");
        assert_eq!(auth.unwrap(), "Basic dTpw");
        assert!(split_credentials("localhost:8081").is_err());
    }

    #[test]
    fn protobuf_source_compiles_to_a_file_with_its_messages() {
        let f = compile_proto("x.proto", "syntax = \"proto3\"; package p; message A { string s = 1; } message B { int32 n = 1; }")
            .unwrap();
        let names: Vec<String> = f.messages().map(|m| m.full_name().to_string()).collect();
        assert_eq!(names, vec!["p.A", "p.B"]);
    }
}
