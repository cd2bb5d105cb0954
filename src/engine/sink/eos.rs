//! The exactly-once switch of a sink that can honour `--commit eos`, and what
//! the engine needs from it: where partitions start, and whether the sink
//! commits the consumed offsets itself (Kafka transactions) or the engine does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kdeck_ui::model::EosView;
use rdkafka::consumer::ConsumerGroupMetadata;

pub struct ExactlyOnce {
    enabled: AtomicBool,
    store: Store,
    commits: AtomicU64,
    aborts: AtomicU64,
    /// (records, began at ms) of the transaction being committed.
    open: Mutex<Option<(usize, u64)>>,
    last_problem: Mutex<Option<String>>,
    /// What the sink does when exactly-once comes on (Kafka: start its producer).
    on_enable: std::sync::OnceLock<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
}

/// A database that keeps the partitions' offsets beside the results.
pub trait OffsetStore: Send + Sync {
    fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, String>;
    fn name(&self) -> &'static str;
}

enum Store {
    /// Offsets kept in the database, written in each batch's transaction.
    Sqlite { path: PathBuf, group: String },
    /// The same in a database reached over the network (PostgreSQL).
    Database(Box<dyn OffsetStore>),
    /// Offsets sent to each producer transaction; the group's metadata (generation)
    /// fences a member that lost its partitions, and the assignment epochs fence a
    /// worker of this member that outlived its partition's revoke.
    Kafka { metadata: Mutex<Membership> },
}

impl std::fmt::Debug for ExactlyOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.store {
            Store::Sqlite { .. } => "sqlite",
            Store::Database(d) => d.name(),
            Store::Kafka { .. } => "kafka",
        };
        write!(f, "ExactlyOnce({kind}, enabled: {})", self.enabled())
    }
}

impl ExactlyOnce {
    fn new(store: Store) -> ExactlyOnce {
        ExactlyOnce {
            enabled: AtomicBool::new(false),
            store,
            commits: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            open: Mutex::new(None),
            last_problem: Mutex::new(None),
            on_enable: std::sync::OnceLock::new(),
        }
    }

    pub fn sqlite(path: &Path, group: &str) -> ExactlyOnce {
        ExactlyOnce::new(Store::Sqlite { path: path.to_path_buf(), group: group.to_string() })
    }

    pub fn postgres(store: Box<dyn OffsetStore>) -> ExactlyOnce {
        ExactlyOnce::new(Store::Database(store))
    }

    pub fn kafka() -> ExactlyOnce {
        ExactlyOnce::new(Store::Kafka { metadata: Mutex::new(Membership::default()) })
    }

    /// A transaction of `records` begins.
    pub fn opened(&self, records: usize) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        *self.open.lock().unwrap() = Some((records, now));
    }

    /// The open transaction ended: committed, or aborted (fenced, failed) for `problem`.
    pub fn closed(&self, problem: Option<&str>) {
        *self.open.lock().unwrap() = None;
        match problem {
            None => self.commits.fetch_add(1, Ordering::Relaxed),
            Some(p) => {
                *self.last_problem.lock().unwrap() = Some(p.to_string());
                self.aborts.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    pub fn view(&self) -> EosView {
        let open = *self.open.lock().unwrap();
        EosView {
            sink: match &self.store {
                Store::Sqlite { .. } => "sqlite",
                Store::Database(d) => d.name(),
                Store::Kafka { .. } => "kafka",
            }
            .into(),
            enabled: self.enabled(),
            commits: self.commits.load(Ordering::Relaxed),
            aborts: self.aborts.load(Ordering::Relaxed),
            open_records: open.map(|o| o.0),
            open_since_ms: open.map(|o| o.1),
            last_problem: self.last_problem.lock().unwrap().clone(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// SQLite's stored offsets outlive a switch out of eos: every flush keeps them
    /// at what the database holds whatever the strategy, so an eos start from
    /// them never applies a record twice.
    pub fn set_enabled(&self, on: bool) -> Result<(), String> {
        if on {
            if let Some(start) = self.on_enable.get() {
                start()?;
            }
        }
        self.enabled.store(on, Ordering::SeqCst);
        Ok(())
    }

    /// Registers what the sink does when exactly-once comes on (once).
    pub fn on_enable(&self, f: Box<dyn Fn() -> Result<(), String> + Send + Sync>) {
        let _ = self.on_enable.set(f);
    }

    /// Where a partition starts when the sink keeps its offsets itself.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, String> {
        match &self.store {
            Store::Sqlite { path, group } => super::sqlite::stored(&super::sqlite::open(path)?, group, topic, partition)
                .map_err(|e| format!("cannot read the stored offsets: {e}")),
            Store::Database(d) => d.next_offset(topic, partition),
            Store::Kafka { .. } => Ok(None), // transactions commit to the group itself
        }
    }

    /// True when the sink's transactions commit the consumed offsets: the engine
    /// must not commit on its own meanwhile.
    pub fn commits_offsets(&self) -> bool {
        matches!(self.store, Store::Kafka { .. })
    }

    /// The consumer's current group metadata (after every assignment).
    pub fn set_group_metadata(&self, m: Option<ConsumerGroupMetadata>) {
        if let Store::Kafka { metadata } = &self.store {
            metadata.lock().unwrap().metadata = m;
        }
    }

    /// A partition was assigned or revoked: whatever worked on it before may
    /// no longer send offsets for it. Called before the new assignment's
    /// workers start and before a revoke returns to librdkafka.
    pub fn next_epoch(&self, topic: &str, partition: i32) {
        if let Store::Kafka { metadata } = &self.store {
            *metadata.lock().unwrap().epochs.entry((topic.to_string(), partition)).or_default() += 1;
        }
    }

    /// The current assignment epoch of a partition (a sink takes it when it opens).
    pub fn epoch(&self, topic: &str, partition: i32) -> u64 {
        match &self.store {
            Store::Kafka { metadata } => metadata.lock().unwrap().epochs.get(&(topic.to_string(), partition)).copied().unwrap_or(0),
            Store::Sqlite { .. } | Store::Database(_) => 0,
        }
    }

    /// Whether a worker that began in `epoch` still owns the partition.
    pub fn is_current(&self, topic: &str, partition: i32, epoch: u64) -> bool {
        self.epoch(topic, partition) == epoch
    }

    /// Runs `f` with the group metadata if every partition is still in the
    /// epoch its worker began in; under the lock, so a revoke cannot slip in
    /// between the check and the offsets sent. None: one was revoked since.
    pub fn with_group_metadata_if_current<'a, T>(
        &self,
        mut parts: impl Iterator<Item = (&'a str, i32, u64)>,
        f: impl FnOnce(Option<&ConsumerGroupMetadata>) -> T,
    ) -> Option<T> {
        match &self.store {
            Store::Kafka { metadata } => {
                let m = metadata.lock().unwrap();
                let current = |(t, p, e): (&str, i32, u64)| m.epochs.get(&(t.to_string(), p)).copied().unwrap_or(0) == e;
                parts.all(current).then(|| f(m.metadata.as_ref()))
            }
            Store::Sqlite { .. } | Store::Database(_) => Some(f(None)),
        }
    }
}

/// This member in the group, as exactly-once into Kafka needs it.
#[derive(Default)]
pub struct Membership {
    metadata: Option<ConsumerGroupMetadata>,
    /// Bumped at every assign and revoke of a partition.
    epochs: std::collections::HashMap<(String, i32), u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_of_several_partitions_sends_no_offsets_once_one_of_them_is_revoked() {
        let eos = ExactlyOnce::kafka();
        eos.next_epoch("t", 0);
        eos.next_epoch("t", 1);
        let began = [("t", 0, eos.epoch("t", 0)), ("t", 1, eos.epoch("t", 1))];
        assert_eq!(eos.with_group_metadata_if_current(began.into_iter(), |_| "sent"), Some("sent"));
        eos.next_epoch("t", 1); // partition 1 revoked
        assert!(!eos.is_current("t", 1, began[1].2));
        assert!(eos.is_current("t", 0, began[0].2));
        assert_eq!(eos.with_group_metadata_if_current(began.into_iter(), |_| "sent"), None);
    }
}
