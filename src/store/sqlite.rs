//! The SQLite store: one file in the data directory, WAL journal,
//! `synchronous=FULL` so that a committed transaction survives `kill -9`
//! and power loss. A transaction that only writes keys under leases
//! (a node's capacity and load reports, the leader's claim) is not fsynced
//! on its own: every lease ends when the store is opened again, and those
//! keys with it, so power loss could take nothing that would have been
//! kept; the next durable commit syncs it too, in order, and `kill -9`
//! loses nothing written (the page cache outlives the process). Every commit also records which keys it changed (the
//! `changes` table), so that a watch can resume from a revision; the last
//! [`HISTORY`] revisions are kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::{
    Change, Condition, History, LeaseId, OpenError, Record, Revision, Store, StoreError, Watch,
    Write,
};

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    shared: Arc<Shared>,
    path: PathBuf,
}

/// Ends leases not kept alive in time, until the store is dropped.
fn expire_leases(shared: std::sync::Weak<Shared>) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = std::time::Instant::now();
        let ended: Vec<LeaseId> = shared
            .lease_table()
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if !ended.is_empty() {
            shared.lease_table().retain(|id, _| !ended.contains(id));
            if let Err(e) = shared.end_leases(|l| ended.contains(&l)) {
                tracing::error!("cannot delete the keys of ended leases: {e}");
            }
        }
    }
}

/// What the store and its watches share.
struct Shared {
    // One connection for reads and writes: SQLite serialises writers
    // anyway, a mutex keeps revision assignment and publication in commit
    // order, and one warm page cache beat separate read connections (whose
    // caches every commit invalidates): RunTask 476/s against 398/s.
    conn: Mutex<Connection>,
    changes: broadcast::Sender<Change>,
    /// Live leases: their TTL and when they end unless kept alive.
    leases: Mutex<std::collections::HashMap<LeaseId, (std::time::Duration, std::time::Instant)>>,
    next_lease: std::sync::atomic::AtomicI64,
    /// The connection is at synchronous=NORMAL (for a leased-only commit);
    /// read and written under the connection's lock.
    relaxed: std::sync::atomic::AtomicBool,
}

/// How many revisions of change history are kept for watches.
pub const HISTORY: i64 = 10_000;

/// Every how many revisions old history is dropped.
const COMPACT_EVERY: i64 = 256;

fn io(e: rusqlite::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`. Errors say what is wrong
    /// and what to do.
    pub fn open(path: &Path) -> Result<SqliteStore, OpenError> {
        let unopenable = |message: String| OpenError::Unopenable {
            path: path.to_path_buf(),
            message,
        };
        let conn = Connection::open(path).map_err(|e| unopenable(e.to_string()))?;
        let corrupt = |e: rusqlite::Error| OpenError::Unusable {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(corrupt)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             PRAGMA foreign_keys=OFF;
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0);
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY,
                 value BLOB NOT NULL,
                 create_rev INTEGER NOT NULL,
                 mod_rev INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS changes (
                 revision INTEGER NOT NULL,
                 seq INTEGER NOT NULL,
                 key TEXT NOT NULL,
                 deleted INTEGER NOT NULL,
                 PRIMARY KEY (revision, seq)
             ) WITHOUT ROWID;
             -- A store made before history was kept remembers nothing
             -- before its current revision.
             INSERT OR IGNORE INTO meta (k, v)
                 SELECT 'compacted', v FROM meta WHERE k = 'revision';",
        )
        .map_err(corrupt)?;
        // The lease a key lives under (stores made before leases lack it).
        let has_lease: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('kv') WHERE name = 'lease'",
                [],
                |r| r.get(0),
            )
            .map_err(corrupt)?;
        if !has_lease {
            conn.execute_batch("ALTER TABLE kv ADD COLUMN lease INTEGER")
                .map_err(corrupt)?;
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                check,
            });
        }
        let (changes, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            changes,
            leases: Default::default(),
            next_lease: std::sync::atomic::AtomicI64::new(1),
            relaxed: std::sync::atomic::AtomicBool::new(false),
        });
        // Only one process opens the store (the data directory's lock), so
        // every lease of an earlier one has ended with it.
        shared
            .end_leases(|_| true)
            .map_err(|e| unopenable(e.to_string()))?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("skiff-leases".into())
            .spawn(move || expire_leases(weak))
            .map_err(|e| OpenError::Thread {
                what: "store's lease thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            shared,
            path: path.to_path_buf(),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.shared.lock()
    }

    /// Changes committed from now on (see [`History::subscribe`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.subscribe()
    }

    /// Changes after a revision (see [`History::changes_since`]).
    pub fn changes_since(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.shared.changes_since(prefix, after, limit)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_table(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<LeaseId, (std::time::Duration, std::time::Instant)>,
    > {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the keys of the leases `ended` picks, in one commit.
    fn end_leases(&self, ended: impl Fn(LeaseId) -> bool) -> Result<(), StoreError> {
        let keys: Vec<(String, LeaseId)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached("SELECT key, lease FROM kv WHERE lease IS NOT NULL")
                .map_err(io)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(io)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(io)?
        };
        let deletes: Vec<Write> = keys
            .into_iter()
            .filter(|(_, l)| ended(*l))
            .map(|(k, _)| Write::Delete(k))
            .collect();
        if deletes.is_empty() {
            return Ok(());
        }
        self.commit(&[], &deletes).map(|_| ())
    }

    fn commit(&self, conditions: &[Condition], writes: &[Write]) -> Result<Revision, StoreError> {
        let mut conn = self.lock();
        {
            let leases = self.lease_table();
            for w in writes {
                if let Write::PutLeased(_, _, l) = w {
                    if !leases.contains_key(l) {
                        return Err(StoreError::LeaseEnded(*l));
                    }
                }
            }
        }
        let ephemeral =
            !writes.is_empty() && writes.iter().all(|w| matches!(w, Write::PutLeased(..)));
        // The connection's mode is changed only under its lock, and set
        // before the transaction that needs it: a durable commit never
        // runs relaxed.
        if self.relaxed.load(Ordering::Relaxed) != ephemeral {
            let pragma = if ephemeral {
                "PRAGMA synchronous=NORMAL"
            } else {
                "PRAGMA synchronous=FULL"
            };
            conn.execute_batch(pragma).map_err(io)?;
            self.relaxed.store(ephemeral, Ordering::Relaxed);
        }
        let revision = Self::apply(&mut conn, conditions, writes)?;
        // Published under the lock, so subscribers see commit order.
        for w in writes {
            // No subscriber is fine.
            let _ = self.changes.send(Change {
                revision,
                key: w.key().to_string(),
                deleted: matches!(w, Write::Delete(_)),
            });
        }
        drop(conn);
        Ok(revision)
    }

    /// Checks `conditions` and applies `writes` in one transaction.
    fn apply(
        conn: &mut Connection,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<Revision, StoreError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(io)?;
        for c in conditions {
            let (key, want) = match c {
                Condition::Absent(k) => (k, None),
                Condition::At(k, rev) => (k, Some(*rev)),
            };
            let have: Option<i64> = tx
                .query_row("SELECT mod_rev FROM kv WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(io)?;
            if have != want {
                return Err(StoreError::Conflict);
            }
        }
        let revision: i64 = tx
            .query_row(
                "UPDATE meta SET v = v + 1 WHERE k = 'revision' RETURNING v",
                [],
                |r| r.get(0),
            )
            .map_err(io)?;
        for (seq, w) in writes.iter().enumerate() {
            let deleted = matches!(w, Write::Delete(_));
            tx.execute(
                "INSERT INTO changes (revision, seq, key, deleted) VALUES (?1, ?2, ?3, ?4)",
                params![revision, seq as i64, w.key(), deleted],
            )
            .map_err(io)?;
            let (k, v, lease) = match w {
                Write::Put(k, v) => (k, v, None),
                Write::PutLeased(k, v, l) => (k, v, Some(*l)),
                Write::Delete(k) => {
                    tx.execute("DELETE FROM kv WHERE key = ?1", params![k])
                        .map_err(io)?;
                    continue;
                }
            };
            tx.execute(
                "INSERT INTO kv (key, value, create_rev, mod_rev, lease) VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev,
                     lease = excluded.lease",
                params![k, v, revision, lease],
            )
            .map_err(io)?;
        }
        if revision % COMPACT_EVERY == 0 && revision > HISTORY {
            let keep_after = revision - HISTORY;
            tx.execute(
                "DELETE FROM changes WHERE revision <= ?1",
                params![keep_after],
            )
            .map_err(io)?;
            tx.execute(
                "UPDATE meta SET v = ?1 WHERE k = 'compacted'",
                params![keep_after],
            )
            .map_err(io)?;
        }
        tx.commit().map_err(io)?;
        Ok(revision)
    }
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

/// The smallest string greater than every string starting with `prefix`
/// (for a range scan), or `None` when there is none.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.lock()
            .query_row(
                "SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1",
                params![key],
                record,
            )
            .optional()
            .map_err(io)
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let conn = self.lock();
        let start = match after {
            Some(a) if a >= prefix => a.to_string(),
            _ => String::new(),
        };
        // Two statements, not one with `(?3 IS NULL OR key < ?3)`: with
        // the OR, SQLite's plan bounds the scan below only, and a list
        // of `services/` read on through every key after it (the tasks).
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = match prefix_end(prefix) {
            Some(end) => conn
                .prepare_cached(
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key >= ?1 AND key > ?2 AND key < ?3
                     ORDER BY key LIMIT ?4",
                )
                .map_err(io)?
                .query_map(params![prefix, start, end, limit], record)
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>(),
            None => conn
                .prepare_cached(
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key >= ?1 AND key > ?2
                     ORDER BY key LIMIT ?3",
                )
                .map_err(io)?
                .query_map(params![prefix, start, limit], record)
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>(),
        };
        rows.map_err(io)
    }

    fn commit(&self, conditions: &[Condition], writes: &[Write]) -> Result<Revision, StoreError> {
        self.shared.commit(conditions, writes)
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        self.lock()
            .query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))
            .map_err(io)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Watch {
        Watch::local(self.shared.clone(), prefix, after)
    }

    // Leases live in this process's memory: it is the only one that opens
    // the store, and all of them end with it.
    fn grant(&self, ttl: std::time::Duration) -> Result<LeaseId, StoreError> {
        let id = self
            .shared
            .next_lease
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shared
            .lease_table()
            .insert(id, (ttl, std::time::Instant::now() + ttl));
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.shared.lease_table().get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = std::time::Instant::now() + *ttl;
                Ok(())
            }
            None => Err(StoreError::LeaseEnded(lease)),
        }
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.shared.lease_table().remove(&lease);
        self.shared.end_leases(|l| l == lease)
    }
}

impl History for Shared {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn changes_since(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let conn = self.lock();
        let compacted: i64 = conn
            .query_row("SELECT v FROM meta WHERE k = 'compacted'", [], |r| r.get(0))
            .map_err(io)?;
        if after < compacted {
            return Err(StoreError::Compacted(compacted));
        }
        let end = prefix_end(prefix);
        // The revision of the limit-th change: the batch ends with it, whole.
        let last: Option<i64> = conn
            .query_row(
                "SELECT revision FROM changes
                 WHERE revision > ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3)
                 ORDER BY revision, seq LIMIT 1 OFFSET ?4",
                params![after, prefix, end, limit.max(1) as i64 - 1],
                |r| r.get(0),
            )
            .optional()
            .map_err(io)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT revision, key, deleted FROM changes
                 WHERE revision > ?1 AND revision <= ?4
                   AND key >= ?2 AND (?3 IS NULL OR key < ?3)
                 ORDER BY revision, seq",
            )
            .map_err(io)?;
        let rows = stmt
            .query_map(params![after, prefix, end, last.unwrap_or(i64::MAX)], |r| {
                Ok(Change {
                    revision: r.get(0)?,
                    key: r.get(1)?,
                    deleted: r.get(2)?,
                })
            })
            .map_err(io)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_store_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        assert!(matches!(e, OpenError::Unusable { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("move it") && e.contains("store.db"), "{e}");
    }

    #[test]
    fn only_a_commit_of_leased_keys_alone_skips_the_fsync_and_keys_under_leases_end_at_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mode = |s: &SqliteStore| -> i64 {
            s.shared
                .lock()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let s = SqliteStore::open(&path).unwrap();
        let lease = s.grant(std::time::Duration::from_secs(60)).unwrap();
        let leased = |k: &str| Write::PutLeased(k.into(), b"v".to_vec(), lease);
        s.commit(&[], &[leased("load/a")]).unwrap();
        assert_eq!(mode(&s), NORMAL);
        // A leased key beside a durable one: the whole commit is durable.
        s.commit(
            &[],
            &[
                leased("load/b"),
                Write::Put("clusters/a".into(), b"v".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(mode(&s), FULL);
        s.commit(&[], &[leased("load/c")]).unwrap();
        s.commit(&[], &[Write::Delete("load/c".into())]).unwrap();
        assert_eq!(mode(&s), FULL, "a delete is durable");
        s.commit(&[], &[leased("load/d")]).unwrap();
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let keys: Vec<String> = s
            .list("", None, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["clusters/a"]);
        assert_eq!(mode(&s), FULL);
    }

    #[test]
    fn prefix_end_bounds_a_scan() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end(""), None);
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    fn put(s: &dyn Store, keys: &[&str]) -> Revision {
        let writes: Vec<Write> = keys
            .iter()
            .map(|k| Write::Put(k.to_string(), b"v".to_vec()))
            .collect();
        s.commit(&[], &writes).unwrap()
    }

    #[test]
    fn history_comes_in_whole_revisions_and_compaction_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let keys: Vec<String> = (0..10).map(|i| format!("t/{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let big = put(&s, &refs);
        put(&s, &["t/after"]);
        // A limit of 3 still gives all ten of the first revision.
        let got = s.changes_since("t/", 0, 3).unwrap();
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|c| c.revision == big));
        // Past HISTORY revisions, the oldest are forgotten, and a watcher
        // from before them is told to relist.
        for i in 0..(HISTORY + COMPACT_EVERY) {
            put(&s, &[&format!("n/{}", i % 7)]);
        }
        match s.changes_since("t/", 0, 10) {
            Err(StoreError::Compacted(r)) => assert!(r > big),
            other => panic!("expected Compacted, got {other:?}"),
        }
        let now = s.revision().unwrap();
        assert_eq!(s.changes_since("n/", now - 1, 10).unwrap().len(), 1);
    }
}
