//! A Confluent Schema Registry client: schemas fetched by id (`GET /schemas/ids/{id}`),
//! parsed once and cached. A 404 is permanent (the id does not exist); anything
//! else that goes wrong (network, 5xx) is retryable. Over HTTPS it trusts a CA
//! of its own (`--registry-ca`); basic auth takes the user from the URL and the
//! password from a file or the environment, so it is never on the command line.

use std::collections::HashMap;
use std::path::PathBuf;
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

/// Where the registry is and how to reach it.
#[derive(Clone, Default)]
pub struct RegistrySpec {
    /// May carry `user@` or `user:password@` for basic auth.
    pub url: String,
    /// PEM file of the CA that signed the registry's certificate.
    pub ca: Option<PathBuf>,
    /// The password for the URL's user (from a file or the environment).
    pub password: Option<String>,
}

impl std::fmt::Debug for RegistrySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = split_credentials(&self.url).map(|(u, _, _)| u).unwrap_or_default();
        f.debug_struct("RegistrySpec").field("url", &url).field("ca", &self.ca).finish_non_exhaustive()
    }
}

/// The environment variable the registry password may come from.
pub const PASSWORD_ENV: &str = "KDECK_REGISTRY_PASSWORD";

pub struct Registry {
    /// Without credentials: safe to show.
    url: String,
    auth: Option<String>,
    agent: ureq::Agent,
    cache: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
}

impl Registry {
    pub fn new(spec: &RegistrySpec) -> Result<Registry, String> {
        let (url, user, in_url) = split_credentials(&spec.url)?;
        let password = match (in_url, &spec.password) {
            (Some(_), Some(_)) => return Err("the schema registry URL has a password and one is given besides; keep one".into()),
            (Some(p), None) => Some(p),
            (None, p) => p.clone(),
        };
        let auth = match (user, password) {
            (Some(u), p) => Some(basic(&u, p.as_deref().unwrap_or(""))),
            (None, Some(_)) => {
                return Err(format!("a schema registry password is given but no user: put it in the URL, as {}", with_user(&url)))
            }
            (None, None) => None,
        };
        let mut config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false);
        if let Some(ca) = &spec.ca {
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(root_certs(ca)?).build());
        }
        let agent = config.build().new_agent();
        Ok(Registry { url: url.trim_end_matches('/').to_string(), auth, agent, cache: Mutex::default() })
    }

    /// Asks the registry once, at start, so that a wrong CA, password or URL
    /// is one sentence then rather than every record failing later. A
    /// registry that is down or slow is not a mistake in the options: that
    /// comes back as `Ok(Some(why))`, and the records wait for it as they would
    /// for an outage later on.
    pub fn check(&self) -> Result<Option<String>, String> {
        let mut req = self.agent.get(&format!("{}/subjects", self.url));
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        match req.call() {
            Ok(resp) => match resp.status().as_u16() {
                401 | 403 if self.auth.is_none() => Err(format!(
                    "the schema registry at {} asks for credentials: put the user in the URL (https://user@host) and the password in {PASSWORD_ENV} or --registry-password-file",
                    self.url
                )),
                s @ (401 | 403) => Err(format!("the schema registry at {} refused the user and password ({s})", self.url)),
                // Anything else answered over HTTP(S) with our credentials: reachable.
                _ => Ok(None),
            },
            Err(e) if is_down(&e) => Ok(Some(format!("cannot reach the schema registry at {}: {e}", self.url))),
            Err(e) => Err(explain(&self.url, &e)),
        }
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

/// A registry that is not there (yet): nothing listens, or nothing answers in
/// time. A connection that is reset or closed once the request is sent is not
/// this: it is a server that does not speak what was asked of it.
fn is_down(e: &ureq::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(e) => matches!(e.kind(), ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable),
        _ => false,
    }
}

/// One sentence for a request that got no HTTP answer. The URL has no credentials.
fn explain(url: &str, e: &ureq::Error) -> String {
    let text = e.to_string();
    let closed = matches!(e, ureq::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionAborted));
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        format!("the schema registry's certificate at {url} is not signed by a CA kdeck trusts (give its CA with --registry-ca)")
    } else if text.contains("NotValidForName") {
        format!("the schema registry's certificate is not for the host in {url}")
    } else if text.contains("Expired") {
        format!("the schema registry's certificate at {url} has expired")
    } else if url.starts_with("https://") && (text.contains("InvalidContentType") || text.contains("corrupt message")) {
        format!("the schema registry at {url} does not speak HTTPS (try http://)")
    } else if url.starts_with("http://") && closed {
        format!("the schema registry at {url} closed the connection instead of answering: it does not speak plain HTTP (try https://)")
    } else {
        format!("cannot reach the schema registry at {url}: {text}")
    }
}

fn root_certs(path: &std::path::Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read --registry-ca {}: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("--registry-ca {} holds no PEM certificate", path.display()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn with_user(url: &str) -> String {
    url.replacen("://", "://USER@", 1)
}

/// The URL without credentials, the user and the password from it.
fn split_credentials(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("--schema-registry `{}` is not a URL such as http://localhost:8081", url.rsplit('@').next().unwrap_or(url)));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("--schema-registry `{scheme}://…` must be http:// or https://"));
    }
    // Credentials end at the last '@' (a password may hold '@' and '/'); a '/'
    // before it with no ':' means the '@' is in the path, not credentials.
    let creds = rest.rfind('@').filter(|&at| rest[..at].contains(':') || !rest[..at].contains('/'));
    match creds {
        Some(at) => {
            let (cred, host) = (&rest[..at], &rest[at + 1..]);
            let (user, password) = match cred.split_once(':') {
                Some((u, p)) => (decode(u), Some(decode(p))),
                None => (decode(cred), None),
            };
            Ok((format!("{scheme}://{host}"), Some(user), password))
        }
        None => Ok((url.to_string(), None, None)),
    }
}

/// Percent-decoding of a URL's user or password (`%2F` is `/`); bytes that
/// are not a valid escape stay as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let (url, user, password) = split_credentials("https://u:p@registry:8081/").unwrap();
        assert_eq!((url.as_str(), user.as_deref(), password.as_deref()), ("https://registry:8081/", Some("u"), Some("p")));
        let r = Registry::new(&RegistrySpec { url: "https://u:p@registry:8081/".into(), ..Default::default() }).unwrap();
        assert_eq!(r.auth.unwrap(), "Basic dTpw");
        assert!(split_credentials("localhost:8081").is_err());
        assert!(split_credentials("ftp://registry").is_err());
    }

    #[test]
    fn the_password_may_come_apart_from_the_url_and_is_never_shown() {
        let spec = RegistrySpec { url: "https://reader@registry:8081".into(), password: Some("p@ss:w/rd".into()), ..Default::default() };
        let r = Registry::new(&spec).unwrap();
        assert_eq!(r.auth.unwrap(), basic("reader", "p@ss:w/rd"));
        assert_eq!(r.url, "https://registry:8081");
        assert!(!format!("{spec:?}").contains("p@ss"), "{spec:?}");
        // A password with '/' (Confluent Cloud secrets have them), or escaped.
        let (url, user, password) = split_credentials("https://KEY:ab/cd@registry/x").unwrap();
        assert_eq!((url.as_str(), user.as_deref(), password.as_deref()), ("https://registry/x", Some("KEY"), Some("ab/cd")));
        assert!(!format!("{:?}", RegistrySpec { url: "https://KEY:ab/cd@registry".into(), ..Default::default() }).contains("ab/cd"));
        assert_eq!(split_credentials("https://KEY:ab%2Fcd%40@registry").unwrap().2.as_deref(), Some("ab/cd@"));
        assert_eq!(split_credentials("https://registry/a@b").unwrap().0, "https://registry/a@b", "an '@' in the path is not credentials");
        // A password with '@' in the URL itself.
        let (url, _, password) = split_credentials("https://u:a@b@registry/x").unwrap();
        assert_eq!((url.as_str(), password.as_deref()), ("https://registry/x", Some("a@b")));
        let shown = format!("{:?}", RegistrySpec { url: "https://u:hunter2@registry".into(), ..Default::default() });
        assert!(!shown.contains("hunter2"), "{shown}");
        // A password without a user, and two passwords, are refused in one sentence.
        let no_user = Registry::new(&RegistrySpec { url: "https://registry".into(), password: Some("x".into()), ..Default::default() });
        assert!(no_user.err().unwrap().contains("https://USER@registry"));
        let two = Registry::new(&RegistrySpec { url: "https://u:p@registry".into(), password: Some("x".into()), ..Default::default() });
        assert!(two.is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let r = Registry::new(&RegistrySpec { url: "https://registry".into(), ca: Some(f), ..Default::default() });
        assert!(r.err().unwrap().contains("holds no PEM certificate"));
    }

    #[test]
    fn protobuf_source_compiles_to_a_file_with_its_messages() {
        let f = compile_proto("x.proto", "syntax = \"proto3\"; package p; message A { string s = 1; } message B { int32 n = 1; }")
            .unwrap();
        let names: Vec<String> = f.messages().map(|m| m.full_name().to_string()).collect();
        assert_eq!(names, vec!["p.A", "p.B"]);
    }
}
