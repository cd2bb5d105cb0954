//! `postgres://user@host/db`: a PostgreSQL database shared by instances on
//! many machines. Like the SQLite sink: a table per topic keyed by (topic,
//! partition, offset), or the user's `--sql` with the same named parameters;
//! each worker has its own connection and writes its batch in one
//! transaction, committed at flush.
//!
//! Exactly-once (`--commit eos`): the partition's next offset is written in
//! the batch's transaction (table `kdeck_offsets`), as a compare-and-set on the
//! offset this worker last saw *and* the generation it claimed when it first
//! touched the partition. A claim bumps the generation, so an instance that
//! lost the partition can never write again once the new owner has begun, and
//! the new owner starts from what the old one committed (the row lock orders
//! the two). A commit whose answer was lost with the connection is settled
//! from that row before anything is written again.
//!
//! Values are sent in PostgreSQL's text format and the server parses them for
//! the type it inferred for each parameter (as psql does), so `:amount` fits a
//! numeric column and `:customer` a text one.

use std::error::Error;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{Format, IsNull, ToSql, Type};
use postgres::{Client, Config};
use postgres_openssl::MakeTlsConnector;
use rdkafka::message::{Message, OwnedMessage};
use serde_json::Value;

use super::eos::ExactlyOnce;
use super::postgres_params::positional;
use super::{lossy, Sink};
use crate::engine::handler::{Failure, Progress, Stage};

const OFFSETS_TABLE: &str = "CREATE TABLE IF NOT EXISTS kdeck_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset BIGINT, generation BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, topic, partition))";

/// `CREATE TABLE IF NOT EXISTS` is not safe against itself: two sessions
/// creating one table at once, one fails on the catalog's unique index
/// (instances starting together on a fresh database, partitions' first writes
/// into a default table). kdeck's table creations take turns on this lock
/// (a transaction-level advisory lock: held to the end of the statement's
/// transaction, implicit or the batch's own).
fn create_if_missing(client: &mut Client, ddl: &str) -> Result<(), postgres::Error> {
    client.batch_execute(&format!("SELECT pg_advisory_xact_lock({DDL_LOCK}); {ddl}"))
}

/// The advisory lock key kdeck's table creations take turns on ("kdeckddl").
const DDL_LOCK: i64 = 0x6b6465636b64646c;

/// Parameters every record binds, whatever its format.
const RECORD_PARAMETERS: [&str; 6] = ["topic", "partition", "offset", "key", "value", "timestamp"];

/// The longest a statement, or a wait for a lock, may take (ms).
const STATEMENT_TIMEOUT_MS: u64 = 60_000;

/// Default-table rows per INSERT statement (8 parameters each; PostgreSQL takes 65,535).
const ROWS_PER_INSERT: usize = 500;

/// A value in PostgreSQL's text format: the server parses it for the
/// parameter's type. NULL when absent.
#[derive(Debug, Clone)]
struct Text(Option<String>);

impl ToSql for Text {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }
    postgres::types::to_sql_checked!();
}

/// The database: how to connect, without the password when shown.
#[derive(Clone)]
pub struct Database {
    config: Config,
    tls: Tls,
    /// `postgres://user@host:port/db`, never with a password.
    pub shown: String,
}

/// libpq's `sslmode` and `sslrootcert`, which the client library only knows
/// in part (disable, prefer, require).
#[derive(Clone, Debug, Default, PartialEq)]
struct Tls {
    /// disable, prefer (the default), require, verify-ca or verify-full.
    mode: String,
    root: Option<std::path::PathBuf>,
}

impl Tls {
    /// As libpq: verify-ca and verify-full check the server's certificate
    /// against the root; require and prefer do too when a root is given.
    fn verifies(&self) -> bool {
        self.mode.starts_with("verify") || self.root.is_some()
    }

    fn connector(&self) -> Result<MakeTlsConnector, String> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let fail = |e: openssl::error::ErrorStack| format!("cannot set up TLS for PostgreSQL: {e}");
        let mut builder = SslConnector::builder(SslMethod::tls()).map_err(fail)?;
        if let Some(root) = &self.root {
            builder.set_ca_file(root).map_err(|e| format!("sslrootcert {} cannot be read as PEM certificates: {e}", root.display()))?;
        }
        if !self.verifies() {
            builder.set_verify(SslVerifyMode::NONE);
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let hostname = self.mode == "verify-full";
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(hostname);
            Ok(())
        });
        Ok(connector)
    }

    /// Takes `sslmode` and `sslrootcert` out of the URL's query.
    fn split(url: &str) -> Result<(String, Tls), String> {
        let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), Tls::default())) };
        let mut tls = Tls::default();
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", m)) => {
                    if !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&m) {
                        return Err(format!("sslmode `{m}` is not one of disable, prefer, require, verify-ca, verify-full"));
                    }
                    tls.mode = m.to_string();
                }
                Some(("sslrootcert", path)) => tls.root = Some(path.into()),
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        Ok((url, tls))
    }
}

impl Database {
    /// `url` as libpq takes it; the password from the URL, `password`
    /// (--sink-password-file), `PGPASSWORD` or `~/.pgpass`, in that order.
    pub fn new(url: &str, password: Option<&str>) -> Result<Database, String> {
        let (plain, tls) = Tls::split(url)?;
        let mut config: Config = plain.parse().map_err(|e| format!("--sink `{}` is not a PostgreSQL URL: {e}", redact(url)))?;
        config.ssl_mode(match tls.mode.as_str() {
            "disable" => postgres::config::SslMode::Disable,
            "" | "prefer" => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        if let Some(root) = &tls.root {
            if !root.is_file() {
                return Err(format!("sslrootcert {} does not exist or is not a file", root.display()));
            }
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        let user = config.get_user().map(str::to_string).or_else(|| std::env::var("PGUSER").ok()).or_else(|| std::env::var("USER").ok());
        let Some(user) = user else { return Err("--sink postgres:// needs a user: postgres://USER@host/db".into()) };
        config.user(&user);
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let dbname = config.get_dbname().unwrap_or(&user).to_string();
        if config.get_password().is_none() {
            let found = password.map(str::to_string).or_else(|| std::env::var("PGPASSWORD").ok()).or_else(|| pgpass(&host, port, &dbname, &user));
            if let Some(p) = found {
                config.password(p);
            }
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.application_name("kdeck");
        // A silent network cut or a server that stops answering must end in an
        // error the batch is retried on, not a worker blocked for ever: TCP
        // keepalives, and bounds on a statement, on waiting for a lock (the
        // group's advisory lock among them) and on an idle transaction.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let bounds = format!(
            "-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout=300000"
        );
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{bounds} {o}"),
            _ => bounds,
        };
        config.options(&options);
        Ok(Database { config, tls, shown: format!("postgres://{user}@{host}:{port}/{dbname}") })
    }

    pub fn connect(&self) -> Result<Client, String> {
        self.config.connect(self.tls.connector()?).map_err(|e| explain(&self.shown, &e))
    }
}

/// The URL without its password (in the user part or as `password=` in the query).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = base[s + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &base[..s + 3], &base[at + 1..])
        }
        _ => base.to_string(),
    };
    match query {
        None => base,
        Some(q) => {
            let kept: Vec<&str> = q.split('&').filter(|p| !p.starts_with("password=")).collect();
            if kept.is_empty() { base } else { format!("{base}?{}", kept.join("&")) }
        }
    }
}

/// The first `~/.pgpass` line for this host, port, database and user (`*` matches any).
fn pgpass(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE").map(std::path::PathBuf::from).or_else(|| dirs::home_dir().map(|h| h.join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let port = port.to_string();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let fields: Vec<&str> = line.splitn(5, ':').collect();
        let [h, p, d, u, pw] = fields[..] else { return None };
        let ok = |f: &str, v: &str| f == "*" || f == v;
        (ok(h, host) && ok(p, &port) && ok(d, db) && ok(u, user)).then(|| pw.to_string())
    })
}

/// One sentence for a failed connection or statement at start.
fn explain(shown: &str, e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match *db.code() {
            SqlState::INVALID_PASSWORD => format!("PostgreSQL at {shown} refused the password (give it in PGPASSWORD, ~/.pgpass or --sink-password-file)"),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!("PostgreSQL at {shown} refused the user: {}", db.message()),
            SqlState::INVALID_CATALOG_NAME => format!("PostgreSQL at {shown}: {}", db.message()),
            _ => format!("PostgreSQL at {shown}: {}", db.message()),
        };
    }
    let cause = e.source().map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    if cause.contains("certificate verify failed") {
        return format!("PostgreSQL at {shown}: the server's certificate is not signed by the CA in sslrootcert, or not for this host ({cause})");
    }
    if cause.contains("server does not support TLS") || e.to_string().contains("server does not support TLS") {
        return format!("PostgreSQL at {shown} does not offer TLS (sslmode asks for it)");
    }
    if cause.contains("password missing") || e.to_string().contains("password missing") {
        return format!("PostgreSQL at {shown} asks for a password: give it in PGPASSWORD, ~/.pgpass or --sink-password-file");
    }
    format!("cannot reach PostgreSQL at {shown}: {cause}")
}

/// What a PostgreSQL sink writes, shared by its partitions.
pub struct PostgresTarget {
    db: Database,
    /// The user's statement with `$n` parameters, and their names in order.
    sql: Option<(String, Vec<String>)>,
    group: String,
    pub eos: Arc<ExactlyOnce>,
}

impl PostgresTarget {
    /// Connects once, so a wrong URL, password or `--sql` is one sentence at start.
    pub fn new(url: &str, password: Option<&str>, sql: Option<String>, group: &str) -> Result<PostgresTarget, String> {
        let db = Database::new(url, password)?;
        let mut client = db.connect()?;
        create_if_missing(&mut client, OFFSETS_TABLE).map_err(|e| explain(&db.shown, &e))?;
        let sql = match sql {
            None => None,
            Some(text) => {
                let (statement, names) = positional(&text);
                let prepared = client.prepare(&statement).map_err(|e| match e.as_db_error() {
                    Some(d) => format!("the --sql statement does not prepare on {}: {}", db.shown, d.message()),
                    None => explain(&db.shown, &e),
                })?;
                if !prepared.columns().is_empty() {
                    return Err("the --sql statement returns rows (a SELECT or RETURNING); give a statement that only writes".into());
                }
                Some((statement, names))
            }
        };
        let eos = Arc::new(ExactlyOnce::postgres(Box::new(Offsets { db: db.clone(), group: group.to_string(), client: Mutex::new(Some(client)), down_until: Mutex::new(None) })));
        Ok(PostgresTarget { db, sql, group: group.to_string(), eos })
    }

    pub fn field_parameters(&self) -> Vec<String> {
        self.sql.as_ref().map(|(_, names)| names.iter().filter(|n| !RECORD_PARAMETERS.contains(&n.as_str())).cloned().collect()).unwrap_or_default()
    }

    /// Never fails: the connection and the claim come with the first write,
    /// so a database that is down holds the partition with the reason.
    pub fn open(&self, topic: &str, partition: i32) -> PostgresSink {
        PostgresSink {
            topic: topic.to_string(),
            partition,
            db: self.db.clone(),
            client: None,
            in_tx: false,
            pending: Vec::new(),
            sql: self.sql.clone(),
            group: self.group.clone(),
            eos: self.eos.clone(),
            claim: None,
            unsettled: None,
            tables: std::collections::HashSet::new(),
            prepared: None,
        }
    }
}

/// Reads stored offsets for the engine (where an eos partition starts).
struct Offsets {
    db: Database,
    group: String,
    client: Mutex<Option<Client>>,
    /// After a failed connect, the next ones fail at once for a while: this
    /// runs in the rebalance callback, one partition after another, and the
    /// group's Kafka offsets (never ahead of the database) serve meanwhile.
    down_until: Mutex<Option<std::time::Instant>>,
}

impl super::eos::OffsetStore for Offsets {
    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, String> {
        let mut slot = self.client.lock().unwrap();
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let mut down = self.down_until.lock().unwrap();
            if down.is_some_and(|t| std::time::Instant::now() < t) {
                return Err(format!("PostgreSQL at {} was not reachable a moment ago", self.db.shown));
            }
            match self.db.connect() {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    *down = Some(std::time::Instant::now() + std::time::Duration::from_secs(30));
                    return Err(e);
                }
            }
        }
        let client = slot.as_mut().unwrap();
        let row = client
            .query_opt(
                "SELECT next_offset FROM kdeck_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
                &[&self.group, &topic, &partition],
            )
            .map_err(|e| {
                *slot = None;
                format!("cannot read the stored offsets from {}: {e}", self.db.shown)
            })?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

/// This worker's hold on its partition.
#[derive(Debug, Clone, Copy)]
struct Claim {
    generation: i64,
    /// The stored next offset as this worker last knew it.
    expected: Option<i64>,
}

pub struct PostgresSink {
    topic: String,
    partition: i32,
    db: Database,
    client: Option<Client>,
    in_tx: bool,
    /// The batch's writes not yet committed: done again in a new transaction
    /// after one is lost (a connection cut, a server restart).
    pending: Vec<Row>,
    sql: Option<(String, Vec<String>)>,
    group: String,
    eos: Arc<ExactlyOnce>,
    claim: Option<Claim>,
    /// A commit whose answer was lost or was an error: the next offset it
    /// tried and how many pending writes it held. Settled from the offsets row
    /// before anything is written again.
    unsettled: Option<(i64, usize)>,
    tables: std::collections::HashSet<String>,
    /// The user's statement, prepared on the current connection.
    prepared: Option<postgres::Statement>,
}

#[derive(Debug, Clone)]
enum Row {
    /// The default table of `topic`: topic, partition, offset, key, value,
    /// headers, timestamp, headers_b64.
    Default { topic: String, values: [Text; 8] },
    /// The user's statement, its parameters in order.
    User(Vec<Text>),
}

/// Only a user statement's data errors are the record's fault: bad values
/// (class 22), constraints (23) and the statement's own RAISE (P0001).
/// Everything else — the connection, a read-only server after a failover, a
/// missing table or privilege, timeouts — is the database's state: the batch
/// waits and is retried whole, and no record goes to the dead letters for it.
fn failure(e: &postgres::Error, user_statement: bool) -> Failure {
    match e.as_db_error() {
        Some(db) if user_statement && is_records_fault(db.code()) => {
            Failure::retryable(Stage::Handle, format!("--sql failed: {}", db.message()))
        }
        Some(db) => Failure::unavailable(Stage::Sink, format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => Failure::unavailable(Stage::Sink, format!("PostgreSQL: {e}")),
    }
}

fn is_records_fault(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("22") || c.starts_with("23") || c == "P0001"
}

impl PostgresSink {
    /// A live connection, with this worker's claim made and any lost commit settled.
    fn ready(&mut self) -> Result<(), Failure> {
        let (topic, partition) = (self.topic.clone(), self.partition);
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.lost();
        }
        if self.client.is_none() {
            let client = self.db.connect().map_err(|e| Failure::unavailable(Stage::Sink, e))?;
            self.client = Some(client);
        }
        if self.claim.is_none() {
            let claimed = self.client.as_mut().unwrap().query_one(
                "INSERT INTO kdeck_offsets (group_id, topic, partition, generation) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (group_id, topic, partition) DO UPDATE SET generation = kdeck_offsets.generation + 1
                 RETURNING generation, next_offset",
                &[&self.group, &topic, &partition],
            );
            let row = claimed.map_err(|e| self.fail(&e, false))?;
            self.claim = Some(Claim { generation: row.get(0), expected: row.get(1) });
        }
        if let Some((tried, held)) = self.unsettled {
            // Only a commit that was to move the offset tells, by the offset, whether it went in.
            let moving = self.claim.and_then(|c| c.expected).is_none_or(|e| tried > e);
            if moving && self.own_commit_reached(tried)? {
                // The commit went through: its batch is in the database
                // (writes added since, for a later batch, stay).
                self.pending.drain(..held.min(self.pending.len()));
                self.eos.closed(None);
            }
            self.unsettled = None;
        }
        Ok(())
    }

    /// The connection is gone: so is any open transaction (its writes stay pending).
    fn lost(&mut self) {
        self.client = None;
        self.prepared = None;
        self.in_tx = false;
        self.tables.clear();
    }

    /// A failure, and the connection dropped when it is the connection's.
    fn fail(&mut self, e: &postgres::Error, user_statement: bool) -> Failure {
        let f = failure(e, user_statement);
        // The database's own trouble: start again on a new connection (after a
        // failover the same URL may reach the new primary; a session's settings,
        // such as read-only, are fixed at connect).
        if f.unavailable || self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.rollback();
            self.lost();
        }
        f
    }

    fn begin(&mut self) -> Result<(), Failure> {
        self.ready()?;
        if self.in_tx {
            return Ok(());
        }
        self.client.as_mut().unwrap().batch_execute("BEGIN").map_err(|e| self.fail(&e, false))?;
        self.in_tx = true;
        if self.sql.is_some() {
            // The user's statements of one group apply one transaction at a time,
            // on every host: upserts into shared rows (a customer's total) from
            // several partitions otherwise deadlock, and PostgreSQL takes a second
            // to notice each one. (The default table's rows never collide.)
            let key = group_lock_key(&self.group);
            if let Err(e) = self.client.as_mut().unwrap().execute("SELECT pg_advisory_xact_lock($1)", &[&key]) {
                self.rollback();
                return Err(self.fail(&e, false));
            }
        }
        // A lost transaction's user statements are done again, in order.
        let rows: Vec<Row> = self.pending.iter().filter(|r| matches!(r, Row::User(_))).cloned().collect();
        for row in &rows {
            if let Err(e) = self.execute_user(row) {
                self.rollback();
                return Err(self.fail(&e, false));
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if let Some(c) = self.client.as_mut() {
            if self.in_tx && c.batch_execute("ROLLBACK").is_err() {
                self.lost();
            }
        }
        self.in_tx = false;
        self.tables.clear();
    }

    fn execute_user(&mut self, row: &Row) -> Result<(), postgres::Error> {
        let (Row::User(values), Some((sql, _))) = (row, &self.sql) else { return Ok(()) };
        let client = self.client.as_mut().unwrap();
        // Prepared once per connection: a statement given as text is parsed at every call.
        let statement = match &self.prepared {
            Some(s) => s.clone(),
            None => {
                let s = client.prepare(sql)?;
                self.prepared = Some(s.clone());
                s
            }
        };
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        client.execute(&statement, &params).map(|_| ())
    }

    fn table(&mut self, topic: &str) -> Result<String, postgres::Error> {
        let name = format!("\"{}\"", topic.replace('"', "\"\""));
        if !self.tables.contains(&name) {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                    topic TEXT NOT NULL, partition INTEGER NOT NULL, \"offset\" BIGINT NOT NULL,
                    key TEXT, value TEXT, headers TEXT, timestamp BIGINT, headers_b64 TEXT,
                    PRIMARY KEY (topic, partition, \"offset\"))"
            );
            create_if_missing(self.client.as_mut().unwrap(), &ddl)?;
            self.tables.insert(name.clone());
        }
        Ok(name)
    }

    /// The default-table rows of the batch, as multi-row INSERTs.
    fn insert_default_rows(&mut self) -> Result<(), postgres::Error> {
        let rows: Vec<(String, [Text; 8])> = self
            .pending
            .iter()
            .filter_map(|r| match r {
                Row::Default { topic, values } => Some((topic.clone(), values.clone())),
                Row::User(_) => None,
            })
            .collect();
        let mut by_topic: std::collections::BTreeMap<String, Vec<[Text; 8]>> = Default::default();
        for (topic, values) in rows {
            by_topic.entry(topic).or_default().push(values);
        }
        for (topic, rows) in by_topic {
            let table = self.table(&topic)?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let placeholders: Vec<String> = (0..chunk.len())
                    .map(|r| format!("({})", (1..=8).map(|c| format!("${}", r * 8 + c)).collect::<Vec<_>>().join(",")))
                    .collect();
                let sql = format!(
                    "INSERT INTO {table} (topic, partition, \"offset\", key, value, headers, timestamp, headers_b64) VALUES {} ON CONFLICT DO NOTHING",
                    placeholders.join(",")
                );
                let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flat_map(|r| r.iter().map(|v| v as &(dyn ToSql + Sync))).collect();
                self.client.as_mut().unwrap().execute(sql.as_str(), &params)?;
            }
        }
        Ok(())
    }

    /// The batch's offset: under eos a compare-and-set on generation and the
    /// offset last seen; otherwise it only follows what the database holds
    /// (never back), so a later eos start does not apply anything twice.
    /// Ok(true): the batch turned out to be in the database already (a commit
    /// whose answer went unnoticed); this transaction must not commit it again.
    fn advance(&mut self, p: &Progress, eos: bool) -> Result<bool, Failure> {
        let claim = self.claim.expect("claimed in ready()");
        if claim.expected.is_some_and(|e| p.next_offset <= e) {
            return Ok(false);
        }
        let client = self.client.as_mut().unwrap();
        let changed = if eos {
            client.execute(
                "UPDATE kdeck_offsets SET next_offset = $4
                 WHERE group_id = $1 AND topic = $2 AND partition = $3 AND generation = $5 AND next_offset IS NOT DISTINCT FROM $6",
                &[&self.group, &p.topic, &p.partition, &p.next_offset, &claim.generation, &claim.expected],
            )
        } else {
            client.execute(
                "UPDATE kdeck_offsets SET next_offset = GREATEST(COALESCE(next_offset, $4), $4)
                 WHERE group_id = $1 AND topic = $2 AND partition = $3",
                &[&self.group, &p.topic, &p.partition, &p.next_offset],
            )
        };
        let changed = changed.map_err(|e| self.fail(&e, false))?;
        if eos && changed != 1 && self.own_commit_reached(p.next_offset)? {
            return Ok(true);
        }
        if eos && changed != 1 {
            return Err(Failure::retryable(
                Stage::Sink,
                format!("fenced: another consumer of group {} claimed {}[{}]; this one no longer owns it", self.group, p.topic, p.partition),
            ));
        }
        Ok(false)
    }

    /// Whether this worker's own commits moved the stored offset to `offset`
    /// or past it (the same generation: nobody else wrote since the claim);
    /// if so, that is what it now expects.
    fn own_commit_reached(&mut self, offset: i64) -> Result<bool, Failure> {
        let row = self
            .client
            .as_mut()
            .unwrap()
            .query_one(
                "SELECT generation, next_offset FROM kdeck_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
                &[&self.group, &self.topic, &self.partition],
            )
            .map_err(|e| self.fail(&e, false))?;
        let (generation, stored): (i64, Option<i64>) = (row.get(0), row.get(1));
        let claim = self.claim.as_mut().expect("claimed in ready()");
        if generation == claim.generation && stored.is_some_and(|s| s >= offset) {
            claim.expected = claim.expected.max(stored);
            return Ok(true);
        }
        Ok(false)
    }

    fn default_row(record: &OwnedMessage, value: &Value) -> Row {
        let raw = crate::engine::headers::of(record);
        let exact = (!crate::engine::headers::all_text(&raw)).then(|| crate::engine::headers::to_base64(&raw).to_string());
        Row::Default {
            topic: record.topic().to_string(),
            values: [
                Text(Some(record.topic().to_string())),
                Text(Some(record.partition().to_string())),
                Text(Some(record.offset().to_string())),
                Text(lossy(record.key()).map(no_nul)),
                Text(Some(value.to_string())),
                Text(Some(Value::Object(crate::engine::headers::to_json(&raw)).to_string())),
                Text(record.timestamp().to_millis().map(|t| t.to_string())),
                Text(exact),
            ],
        }
    }

    fn user_row(&self, record: &OwnedMessage, value: &Value) -> Row {
        let names = self.sql.as_ref().map(|(_, n)| n.as_slice()).unwrap_or_default();
        Row::User(
            names
                .iter()
                .map(|name| {
                    Text(match name.as_str() {
                        "topic" => Some(record.topic().to_string()),
                        "partition" => Some(record.partition().to_string()),
                        "offset" => Some(record.offset().to_string()),
                        "key" => lossy(record.key()).map(no_nul),
                        "value" => Some(value.to_string()),
                        "timestamp" => record.timestamp().to_millis().map(|t| t.to_string()),
                        field => json_text(value.get(field)),
                    })
                })
                .collect(),
        )
    }
}

/// The advisory lock of a group's user statements: FNV-1a of its name, the
/// same on every host and in every version.
fn group_lock_key(group: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"kdeck:".iter().chain(group.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Test failpoint `KDECK_FAILPOINT=pg-commit-answer-lost:N`: the N-th COMMIT
/// of the process goes through and its answer is treated as lost.
fn answer_lost_now() -> bool {
    static COMMITS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static AT: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("KDECK_FAILPOINT").ok()?.strip_prefix("pg-commit-answer-lost:")?.parse().ok());
    at.is_some_and(|at| COMMITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at)
}

/// PostgreSQL text cannot hold NUL: it is kept as U+FFFD (the JSON columns
/// escape it, so the value itself is exact).
fn no_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

fn json_text(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(no_nul(s.clone())),
        Some(other) => Some(other.to_string()),
    }
}

impl Sink for PostgresSink {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        if self.eos.enabled() {
            self.ready()?;
            if self.claim.and_then(|c| c.expected).is_some_and(|e| record.offset() < e) {
                // Below the stored offset its effect is in the database already.
                return Ok(());
            }
        }
        if self.sql.is_none() {
            // Written at flush, in multi-row statements.
            self.pending.push(Self::default_row(record, value));
            return Ok(());
        }
        let row = self.user_row(record, value);
        self.begin()?;
        match self.execute_user(&row) {
            Ok(()) => {
                self.pending.push(row);
                Ok(())
            }
            Err(e) => {
                // PostgreSQL aborts the whole transaction on an error: the rows
                // before this one are done again in the next.
                let f = self.fail(&e, true);
                self.rollback();
                Err(f)
            }
        }
    }

    fn flush(&mut self, progress: Option<&Progress>) -> Result<(), Failure> {
        let eos = self.eos.enabled();
        if progress.is_none() && self.pending.is_empty() && !self.in_tx {
            return Ok(());
        }
        let outcome = self.begin().and_then(|()| {
            self.insert_default_rows().map_err(|e| self.fail(&e, false))?;
            match progress {
                Some(p) => self.advance(p, eos),
                None => Ok(false),
            }
        });
        match outcome {
            Err(f) => {
                self.rollback();
                if eos {
                    self.eos.closed(Some(&f.message));
                }
                return Err(f);
            }
            Ok(true) => {
                // In the database already: this transaction's second copy goes.
                self.rollback();
                self.pending.clear();
                if eos {
                    self.eos.closed(None);
                }
                return Ok(());
            }
            Ok(false) => {}
        }
        let committed = self.client.as_mut().unwrap().batch_execute("COMMIT");
        if committed.is_ok() && answer_lost_now() {
            // A commit applied whose answer is an error, the connection still open
            // (as a FATAL after a cancelled wait for a synchronous standby).
            self.in_tx = false;
            self.unsettled = progress.map(|p| (p.next_offset, self.pending.len()));
            let f = Failure::unavailable(Stage::Sink, "PostgreSQL: failpoint: the answer to COMMIT was lost");
            if eos {
                self.eos.closed(Some(&f.message));
            }
            return Err(f);
        }
        if let Err(e) = committed {
            // Whatever the error, the commit may have been applied: settled from
            // the offsets row before anything is written again.
            self.unsettled = progress.map(|p| (p.next_offset, self.pending.len()));
            let f = self.fail(&e, false);
            self.rollback();
            if eos {
                self.eos.closed(Some(&f.message));
            }
            return Err(f);
        }
        self.in_tx = false;
        self.pending.clear();
        if let (Some(p), Some(claim)) = (progress, self.claim.as_mut()) {
            claim.expected = claim.expected.max(Some(p.next_offset));
        }
        if eos {
            self.eos.closed(None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_from_the_query() {
        let (url, tls) = Tls::split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x").unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(tls, Tls { mode: "verify-full".into(), root: Some("/ca.pem".into()) });
        assert!(Tls::split("postgres://u@h/db?sslmode=allow-ish").unwrap_err().contains("sslmode `allow-ish`"));
        assert!(!Tls::split("postgres://u@h/db?sslmode=require").unwrap().1.verifies(), "require without a root: as libpq, no check");
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(redact("postgres://kdeck:s3cret@db:5432/x"), "postgres://kdeck@db:5432/x");
        assert_eq!(redact("postgres://kdeck@db/x?password=s3cret&sslmode=require"), "postgres://kdeck@db/x?sslmode=require");
        let spec: super::super::SinkSpec = "postgres://kdeck:s3cret@db/x?password=s3cret".parse().unwrap();
        assert!(!format!("{spec} {spec:?}").contains("s3cret"), "{spec:?}");
        let options = super::super::SinkOptions { sink_password: Some("s3cret".into()), ..Default::default() };
        assert!(!format!("{options:?}").contains("s3cret"));
        let d = Database::new("postgres://kdeck:s3cret@db:5433/x", None).unwrap();
        assert_eq!(d.shown, "postgres://kdeck@db:5433/x");
        assert!(Database::new("postgres://kdeck:s3cret@db:notaport/x", None).err().unwrap().contains("postgres://kdeck@db:notaport/x"));
    }
}
