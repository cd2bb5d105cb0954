//! Lag history in SQLite (the state directory's `history.sqlite` by default),
//! kept across restarts and bounded: a row per partition per second for the
//! last hour, and per minute for seven days (the minute keeps its worst lag,
//! the most recent offsets). Charts read the group's total.

use std::path::{Path, PathBuf};

use kdeck_ui::watch::model::{GroupView, LagPoint};
use rusqlite::{params, Connection};

const SECOND_ROWS_KEPT_S: i64 = 3600;
const MINUTE_ROWS_KEPT_MIN: i64 = 7 * 24 * 60;

pub struct History {
    conn: Connection,
    /// The minute up to which the per-second rows are rolled up.
    rolled_up_to_min: i64,
}

pub fn default_path() -> PathBuf {
    crate::logging::default_dir().join("history.sqlite")
}

impl History {
    pub fn open(path: &Path) -> Result<History, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let fail = |e: rusqlite::Error| format!("cannot open the history store {}: {e}", path.display());
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
        let table = |name: &str, at: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                    cluster TEXT NOT NULL, grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,
                    {at} INTEGER NOT NULL, lag INTEGER, lag_ms INTEGER, committed INTEGER, end_offset INTEGER,
                    PRIMARY KEY (cluster, grp, {at}, topic, part)) WITHOUT ROWID;"
            )
        };
        conn.execute_batch(&(table("lag_1s", "at_s") + &table("lag_1m", "at_min"))).map_err(fail)?;
        let rolled_up_to_min = conn
            .query_row("SELECT COALESCE(MAX(at_min) + 1, 0) FROM lag_1m", [], |r| r.get(0))
            .map_err(fail)?;
        Ok(History { conn, rolled_up_to_min })
    }

    /// One sample of every group at `now_ms`, then the roll-up and the bounds.
    pub fn record(&mut self, cluster: &str, groups: &[GroupView], now_ms: u64) -> Result<(), String> {
        let fail = |e: rusqlite::Error| format!("history write failed: {e}");
        let at_s = (now_ms / 1000) as i64;
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO lag_1s (cluster, grp, topic, part, at_s, lag, lag_ms, committed, end_offset)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(fail)?;
            for g in groups {
                for p in &g.partitions {
                    insert
                        .execute(params![cluster, g.description.group, p.topic, p.partition, at_s, p.lag, p.lag_ms, p.committed, p.end])
                        .map_err(fail)?;
                }
            }
        }
        let now_min = at_s / 60;
        if now_min > self.rolled_up_to_min {
            // Whole minutes only: the current one is still being written.
            tx.execute(
                "INSERT OR REPLACE INTO lag_1m (cluster, grp, topic, part, at_min, lag, lag_ms, committed, end_offset)
                 SELECT cluster, grp, topic, part, at_s / 60, MAX(lag), MAX(lag_ms), MAX(committed), MAX(end_offset)
                 FROM lag_1s WHERE at_s >= ?1 AND at_s < ?2 GROUP BY cluster, grp, topic, part, at_s / 60",
                params![self.rolled_up_to_min * 60, now_min * 60],
            )
            .map_err(fail)?;
            tx.execute("DELETE FROM lag_1s WHERE at_s < ?1", params![at_s - SECOND_ROWS_KEPT_S]).map_err(fail)?;
            tx.execute("DELETE FROM lag_1m WHERE at_min < ?1", params![now_min - MINUTE_ROWS_KEPT_MIN]).map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        self.rolled_up_to_min = self.rolled_up_to_min.max(now_min);
        Ok(())
    }

    /// The group's total lag over the last `span_ms` before `now_ms`, oldest
    /// first: per second up to an hour, per minute beyond. A point's lag is
    /// unknown when any partition's was.
    pub fn chart(&self, cluster: &str, group: &str, span_ms: u64, now_ms: u64) -> Result<Vec<LagPoint>, String> {
        let per_second = span_ms <= SECOND_ROWS_KEPT_S as u64 * 1000;
        let (table, at, unit_ms) = if per_second { ("lag_1s", "at_s", 1000) } else { ("lag_1m", "at_min", 60_000) };
        let from = (now_ms.saturating_sub(span_ms) / unit_ms) as i64;
        let sql = format!(
            "SELECT {at}, CASE WHEN COUNT(lag) = COUNT(*) THEN SUM(lag) END, MAX(lag_ms),
                    CASE WHEN COUNT(committed) = COUNT(*) THEN SUM(committed) END
             FROM {table} WHERE cluster = ?1 AND grp = ?2 AND {at} >= ?3 GROUP BY {at} ORDER BY {at}"
        );
        let fail = |e: rusqlite::Error| format!("history read failed: {e}");
        let mut q = self.conn.prepare_cached(&sql).map_err(fail)?;
        let rows = q
            .query_map(params![cluster, group, from], |r| {
                Ok(LagPoint { at_ms: r.get::<_, i64>(0)? as u64 * unit_ms, lag: r.get(1)?, lag_ms: r.get(2)?, committed: r.get(3)? })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdeck_ui::watch::model::{GroupDescription, GroupPartitionView};

    fn group(lags: &[Option<i64>]) -> GroupView {
        GroupView {
            description: GroupDescription { group: "g".into(), ..Default::default() },
            partitions: lags
                .iter()
                .enumerate()
                .map(|(i, lag)| GroupPartitionView {
                    topic: "t".into(),
                    partition: i as i32,
                    lag: *lag,
                    lag_ms: lag.map(|l| l * 10),
                    committed: Some(100),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    const T0: u64 = 1_795_000_020_000; // a whole minute

    #[test]
    fn samples_survive_a_restart_and_sum_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut h = History::open(&path).unwrap();
        h.record("c", &[group(&[Some(3), Some(4)])], T0).unwrap();
        h.record("c", &[group(&[Some(5), None])], T0 + 1000).unwrap();
        drop(h);
        let h = History::open(&path).unwrap();
        let points = h.chart("c", "g", 60_000, T0 + 1500).unwrap();
        assert_eq!(points, vec![
            LagPoint { at_ms: T0, lag: Some(7), lag_ms: Some(40), committed: Some(200) },
            LagPoint { at_ms: T0 + 1000, lag: None, lag_ms: Some(50), committed: Some(200) },
        ]);
        assert!(h.chart("other", "g", 60_000, T0 + 1500).unwrap().is_empty());
    }

    #[test]
    fn seconds_roll_up_into_minutes_and_old_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(&dir.path().join("h.sqlite")).unwrap();
        for s in 0..120u64 {
            h.record("c", &[group(&[Some(s as i64)])], T0 + s * 1000).unwrap();
        }
        // The first minute is whole: one row with its worst lag.
        let minutes = h.chart("c", "g", 24 * 3_600_000, T0 + 120_000).unwrap();
        assert_eq!(minutes.first(), Some(&LagPoint { at_ms: T0, lag: Some(59), lag_ms: Some(590), committed: Some(100) }));
        // Two hours later the per-second rows of then are gone, the minutes kept.
        let later = T0 + 2 * 3_600_000;
        h.record("c", &[group(&[Some(0)])], later).unwrap();
        let seconds: i64 = h.conn.query_row("SELECT COUNT(*) FROM lag_1s WHERE at_s < ?1", [(T0 / 1000 + 3600) as i64], |r| r.get(0)).unwrap();
        assert_eq!(seconds, 0);
        // The two whole minutes; the current one is not rolled up yet.
        assert_eq!(h.chart("c", "g", 24 * 3_600_000, later).unwrap().len(), 2);
        // Eight days later the minutes are gone too.
        h.record("c", &[group(&[Some(0)])], T0 + 8 * 86_400_000).unwrap();
        let old: i64 = h.conn.query_row("SELECT COUNT(*) FROM lag_1m WHERE at_min < ?1", [(T0 / 60_000 + 10) as i64], |r| r.get(0)).unwrap();
        assert_eq!(old, 0);
    }
}
