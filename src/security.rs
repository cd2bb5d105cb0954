//! Secured clusters: the options a kcat user expects (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, `--sasl-mechanism`, `--sasl-user`, `--sasl-password-file`,
//! `KDECK_SASL_PASSWORD`) turned into librdkafka properties, and a failed
//! first connection turned into one sentence that names the real problem
//! (a wrong password, an unknown CA, TLS against a plaintext port…) instead
//! of "cannot reach Kafka". A secret never appears in what is said.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

#[derive(Debug, Args, Clone, Default)]
pub struct SecurityArgs {
    /// CA certificate (PEM) the brokers' certificates are checked against; turns TLS on.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that ask for one (mTLS); turns TLS on.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN; turns SASL on.
    #[arg(long, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, value_name = "USER")]
    pub sasl_user: Option<String>,
    /// A file whose first line is the SASL password (or set KDECK_SASL_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub sasl_password_file: Option<PathBuf>,
}

/// The environment variable a SASL password may come from (never a flag:
/// the command line is visible to every user of the machine).
pub const PASSWORD_ENV: &str = "KDECK_SASL_PASSWORD";

impl SecurityArgs {
    /// librdkafka properties for these options, to go before any `-X` (which
    /// wins). `security.protocol` follows from what is given: TLS and SASL →
    /// SASL_SSL, SASL → SASL_PLAINTEXT, TLS → SSL.
    pub fn properties(&self) -> Result<Vec<(String, String)>, String> {
        self.properties_over(&[])
    }

    /// As `properties`, going after `before` (the config file's): a protocol
    /// set there is only ever added to (its SASL and `--tls-ca` → SASL_SSL).
    pub fn properties_over(&self, before: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let earlier = property(before, "security.protocol").unwrap_or_default().to_ascii_uppercase();
        let ours_tls = self.tls_ca.is_some() || self.tls_cert.is_some();
        let ours_sasl = self.sasl_mechanism.is_some() || self.sasl_user.is_some() || self.sasl_password_file.is_some();
        // What the file set stays on when ours add to it.
        let tls = ours_tls || (ours_sasl && earlier.ends_with("SSL"));
        let sasl = ours_sasl || (ours_tls && earlier.starts_with("SASL"));
        let protocol = match (tls, sasl) {
            (true, true) => Some("SASL_SSL"),
            (false, true) => Some("SASL_PLAINTEXT"),
            (true, false) => Some("SSL"),
            (false, false) => None,
        };
        if let Some(p) = protocol {
            out.push(("security.protocol".into(), p.into()));
        }
        let mut file = |key: &str, path: &Option<PathBuf>, what: &str| -> Result<(), String> {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(format!("{what} {} does not exist or is not a file", path.display()));
                }
                out.push((key.into(), path.display().to_string()));
            }
            Ok(())
        };
        file("ssl.ca.location", &self.tls_ca, "--tls-ca")?;
        file("ssl.certificate.location", &self.tls_cert, "--tls-cert")?;
        file("ssl.key.location", &self.tls_key, "--tls-key")?;
        if ours_sasl {
            let mechanism = self.sasl_mechanism.clone().unwrap_or_else(|| "SCRAM-SHA-512".into());
            if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&mechanism.as_str()) {
                return Err(format!("--sasl-mechanism `{mechanism}` is not one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"));
            }
            let user = self.sasl_user.clone().ok_or("--sasl-user is needed with SASL")?;
            out.push(("sasl.mechanism".into(), mechanism));
            out.push(("sasl.username".into(), user));
            out.push(("sasl.password".into(), self.password()?));
        }
        Ok(out)
    }

    fn password(&self) -> Result<String, String> {
        if let Some(path) = &self.sasl_password_file {
            return secret_file(path, "--sasl-password-file");
        }
        std::env::var(PASSWORD_ENV).map_err(|_| format!("a SASL password is needed: --sasl-password-file FILE or {PASSWORD_ENV}"))
    }
}

/// The first line of a file holding a secret (the file named by `flag`).
pub fn secret_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
    text.lines().next().map(str::to_string).filter(|p| !p.is_empty()).ok_or_else(|| format!("{flag} {} is empty", path.display()))
}

/// librdkafka's words about failed connections, kept to explain a failure.
#[derive(Clone, Default)]
pub struct Heard(Arc<Mutex<Vec<String>>>);

impl ClientContext for Heard {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) || fac == "FAIL" {
            self.0.lock().unwrap().push(message.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Heard {}

/// Connects once, as the command's clients will, and fails with one sentence
/// naming the problem if the cluster cannot be reached or refuses us.
pub fn check_connection(brokers: &str, properties: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        cc.set(k, v);
    }
    // Only reads metadata: never joins or commits.
    cc.set("group.id", "kdeck-connection-check").set("enable.auto.commit", "false");
    cc.remove("group.instance.id");
    // Warnings and errors reach `Heard` (rust-rdkafka otherwise follows the
    // `log` crate's level, which commands without a logger leave at off).
    cc.set_log_level(RDKafkaLogLevel::Warning);
    let heard = Heard::default();
    let client: BaseConsumer<Heard> = cc.create_with_context(heard.clone()).map_err(|e| explain_creation(&e, properties))?;
    match client.fetch_metadata(None, timeout) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Error events arrive on the client's queue: served here.
            for _ in 0..10 {
                let _ = client.poll(Duration::ZERO);
            }
            let words = heard.0.lock().unwrap().clone();
            Err(explain(brokers, properties, &words).unwrap_or_else(|| {
                let hint = if property(properties, "security.protocol").is_none() { ", and whether it needs TLS or SASL (--tls-ca, --sasl-user)" } else { "" };
                format!(
                    "cannot reach Kafka at {brokers} within {} ({e}); check --brokers, that the cluster is up{hint}",
                    humantime::format_duration(timeout)
                )
            }))
        }
    }
}

/// What a malformed `-X` is shown as: its key, never what may be a secret after it.
pub fn key_of(kv: &str) -> String {
    let key: String = kv.chars().take_while(|c| !matches!(c, ':' | ' ')).take(60).collect();
    if key.len() < kv.len() {
        format!("{key}…")
    } else {
        key
    }
}

/// Who the cluster sees, as a sentence names it: `user alice`, `the client
/// certificate's user`, `this client`.
pub fn who(properties: &[(String, String)]) -> String {
    match (property(properties, "sasl.username"), property(properties, "ssl.certificate.location")) {
        (Some(user), _) => format!("user {user}"),
        (None, Some(_)) => "the client certificate's user".into(),
        _ => "this client".into(),
    }
}

fn property<'a>(properties: &'a [(String, String)], key: &str) -> Option<&'a str> {
    properties.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A client creation error without the property's value (rust-rdkafka's own
/// text repeats it, and it may be a password): the key and librdkafka's words.
pub fn client_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() { desc.clone() } else { desc.replace(value.as_str(), "…") };
            format!("librdkafka refused property `{key}`: {desc}")
        }
        other => other.to_string(),
    }
}

/// A client that could not be created because of its TLS files.
fn explain_creation(e: &KafkaError, properties: &[(String, String)]) -> String {
    let text = client_error(e);
    if text.contains("key values mismatch") {
        return "the client certificate and its key do not match (--tls-cert, --tls-key)".into();
    }
    if text.contains("ssl.key.location") {
        return format!("the client key {} cannot be read as a PEM private key", property(properties, "ssl.key.location").unwrap_or("?"));
    }
    if text.contains("ssl.certificate.location") {
        return format!("the client certificate {} cannot be read as a PEM certificate", property(properties, "ssl.certificate.location").unwrap_or("?"));
    }
    if text.contains("ssl.ca.location") {
        return format!("the CA file {} cannot be read as PEM certificates", property(properties, "ssl.ca.location").unwrap_or("?"));
    }
    format!("the Kafka client configuration is invalid: {text} (check the -X options and the config file)")
}

/// What librdkafka said while failing to connect, as one sentence; None when
/// nothing points at a cause (the cluster is just not there).
pub fn explain(brokers: &str, properties: &[(String, String)], heard: &[String]) -> Option<String> {
    let said = |needle: &str| heard.iter().any(|w| w.contains(needle));
    let protocol = property(properties, "security.protocol").unwrap_or("plaintext").to_uppercase();
    let tls = protocol.contains("SSL");
    if said("Authentication failed") || said("invalid credentials") {
        return Some(format!(
            "authentication failed for user {} with {}",
            property(properties, "sasl.username").unwrap_or("(none given)"),
            property(properties, "sasl.mechanism").unwrap_or("GSSAPI")
        ));
    }
    if said("Unsupported SASL mechanism") || said("SASL mechanism") && said("not supported") {
        return Some(format!(
            "the brokers at {brokers} do not offer SASL mechanism {} here",
            property(properties, "sasl.mechanism").unwrap_or("GSSAPI")
        ));
    }
    if said("certificate verify failed") {
        return Some(match property(properties, "ssl.ca.location") {
            Some(ca) => format!("the broker's certificate is not signed by the given CA ({ca})"),
            None => "the broker's certificate is not signed by a CA this machine trusts; pass --tls-ca".into(),
        });
    }
    if said("No matching issuer found") {
        return Some("the broker does not trust the client certificate's CA (--tls-cert); it asks for one it does".into());
    }
    if said("certificate required") {
        return Some("the broker asks for a client certificate: pass --tls-cert and --tls-key".into());
    }
    if said("unknown ca") || said("bad certificate") || said("certificate unknown") || said("certificate expired") {
        return Some("the broker refused the client certificate (not signed by a CA it trusts, or expired)".into());
    }
    if tls && said("connecting to a PLAINTEXT broker listener") {
        return Some(format!("the broker at {brokers} does not speak TLS on this port; use its TLS port, or drop --tls-* (security.protocol={protocol})"));
    }
    if tls && (said("wrong version number") || said("packet length too long") || said("record layer failure") || said("unexpected eof")) {
        return Some(format!("the broker at {brokers} does not speak TLS on this port; use its TLS port, or drop --tls-* (security.protocol={protocol})"));
    }
    if !tls && said("connecting to a SSL listener") {
        return Some(format!("the broker at {brokers} expects TLS on this port: pass --tls-ca (security.protocol=SSL or SASL_SSL)"));
    }
    if !protocol.contains("SASL") && (said("connecting to a SASL listener") || said("in state UP") && said("connection closed by peer")) {
        return Some(format!("the broker at {brokers} closed the connection before any request was answered: it expects SASL on this port (--sasl-user and a password)"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_wrong_password_is_named_without_the_password() {
        let p = props(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512"), ("sasl.username", "alice"), ("sasl.password", "s3cret")]);
        let heard = ["sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512".to_string()];
        let said = explain("b:9094", &p, &heard).unwrap();
        assert_eq!(said, "authentication failed for user alice with SCRAM-SHA-512");
        assert!(!said.contains("s3cret"));
    }

    #[test]
    fn a_property_librdkafka_refuses_is_named_without_its_value() {
        for (key, value) in [("sasl.pasword", "hunter2"), ("sasl.oauthbearer.client.secret", "hunter2"), ("security.protocol", "hunter2")] {
            let e = check_connection("127.0.0.1:1", &props(&[(key, value)]), Duration::from_millis(100)).unwrap_err();
            assert!(!e.contains("hunter2") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn tls_given_over_a_files_sasl_keeps_sasl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let file = props(&[("security.protocol", "SASL_PLAINTEXT"), ("sasl.username", "alice")]);
        let args = SecurityArgs { tls_ca: Some(ca), ..Default::default() };
        let p = args.properties_over(&file).unwrap();
        assert_eq!(property(&p, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(property(&p, "sasl.username"), None, "the file's own SASL settings stay as they are");
        assert_eq!(property(&SecurityArgs::default().properties_over(&file).unwrap(), "security.protocol"), None);
    }

    #[test]
    fn a_malformed_x_is_shown_by_its_key_only() {
        assert_eq!(key_of("sasl.password:hunter2"), "sasl.password…");
        assert_eq!(key_of("sasl.password hunter2"), "sasl.password…");
        assert_eq!(key_of("fetch.min.bytes"), "fetch.min.bytes");
        assert!(!key_of(&format!("{}x", "a".repeat(100))).contains("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn the_options_give_the_protocol_and_a_password_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let args = SecurityArgs { tls_ca: Some(ca), sasl_user: Some("alice".into()), sasl_password_file: Some(pw), ..Default::default() };
        let p = args.properties().unwrap();
        assert_eq!(property(&p, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(property(&p, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(property(&p, "sasl.password"), Some("hunter2"));
        let bad = SecurityArgs { sasl_mechanism: Some("NTLM".into()), sasl_user: Some("a".into()), ..Default::default() };
        assert!(bad.properties().unwrap_err().contains("`NTLM` is not one of"));
        assert!(SecurityArgs::default().properties().unwrap().is_empty());
    }
}
