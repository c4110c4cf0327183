//! The store: desired state (clusters, task definitions, tags) and observed
//! state (tasks) as versioned key/value records.
//!
//! The trait is etcd's shape, which SQLite follows: every write bumps one
//! store-wide revision, records carry their create and modify revisions,
//! writes are transactions guarded by conditions (compare-and-swap), and
//! changes can be watched from any revision the store still remembers
//! ([`Watch`]): a watcher that fell behind, or restarted, resumes where it
//! was; one whose revision was compacted away is told so and relists.
//!
//! Two backends: SQLite, a file in the data directory, the default for one
//! node; and etcd (`--store etcd://HOST:PORT`), whose revisions,
//! transactions and watches these are.
//!
//! A [`Store::commit`] returns only after its write is durable (SQLite
//! excepts a commit of leased keys only: they end with the process).

mod etcd;
#[cfg(test)]
pub(crate) mod hooked;
pub mod records;
mod sqlite;

pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

use std::fmt;

/// A store-wide, monotonically increasing version.
pub type Revision = i64;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, a `/`-separated path such as `clusters/default`.
    pub key: String,
    /// The value (JSON, by convention of the callers).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: Revision,
    /// The revision that last wrote it.
    pub mod_revision: Revision,
}

/// A condition a transaction requires to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last written at this revision.
    At(String, Revision),
}

/// A lease: keys written under it are deleted when it ends (revoked, or
/// not kept alive for its TTL).
pub type LeaseId = i64;

/// The lease a node's records live under, shared by the parts that write
/// them; the node's registration swaps in a new one when the old one lapsed.
pub type NodeLease = std::sync::Arc<std::sync::atomic::AtomicI64>;

/// A write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace.
    Put(String, Vec<u8>),
    /// Create or replace a key that lives as long as the lease.
    PutLeased(String, Vec<u8>, LeaseId),
    /// Remove (a missing key is not an error).
    Delete(String),
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put(k, _) | Write::PutLeased(k, _, _) | Write::Delete(k) => k,
        }
    }
}

/// A change, as published to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The revision of the transaction that made it.
    pub revision: Revision,
    /// The key changed.
    pub key: String,
    /// True if the key was deleted.
    pub deleted: bool,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A transaction's condition did not hold; nothing was written.
    Conflict,
    /// The changes asked for are older than the store remembers (it keeps
    /// those after this revision): list what is there and watch from the
    /// listing's revision.
    Compacted(Revision),
    /// A write named a lease that has ended; nothing was written.
    LeaseEnded(LeaseId),
    /// The store could not be read or written.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("the record changed concurrently; retry"),
            StoreError::Compacted(r) => write!(
                f,
                "the store no longer has the changes asked for (it keeps those after revision {r}); relist"
            ),
            StoreError::LeaseEnded(l) => write!(f, "the lease {l:x} has ended; grant a new one"),
            StoreError::Io(m) => write!(f, "store error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a store could not be opened. Each says what is wrong and what to
/// do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The SQLite file cannot be opened.
    #[error("cannot open the store {}: {message}", path.display())]
    Unopenable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The SQLite file opened, but cannot be used (or is corrupt).
    #[error("the store {} cannot be used ({message}); if it is corrupt, move it (and its -wal and -shm files) aside to start empty, or restore a backup", path.display())]
    Unusable {
        /// The file.
        path: std::path::PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// SQLite's integrity check found damage.
    #[error("the store {} is corrupt ({check}); move it (and its -wal and -shm files) aside to start empty, or restore a backup", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What the check said.
        check: String,
    },
    /// The journal could not be put in WAL mode.
    #[error("the store {} could not switch to WAL mode (got {mode})", path.display())]
    NotWal {
        /// The file.
        path: std::path::PathBuf,
        /// The mode it kept.
        mode: String,
    },
    /// A thread of the store's own could not start.
    #[error("cannot start the {what}: {message}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An `etcd://` URL that is not one.
    #[error("--store {url}: {why}; write etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE], as etcd://127.0.0.1:2379")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// etcd did not answer.
    #[error("cannot reach etcd at {endpoints}: {message}; start etcd there, or pass --store with its client address")]
    Unreachable {
        /// Its endpoints, joined.
        endpoints: String,
        /// Why.
        message: String,
    },
}

/// The durable store of desired and observed state.
///
/// Methods block (a write waits for fsync): call them off the async threads.
pub trait Store: Send + Sync + 'static {
    /// One record.
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// Records whose keys start with `prefix`, in key order, after the key
    /// `after` when given, at most `limit` of them.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Applies `writes` atomically if every condition holds, durably, and
    /// returns the new revision; [`StoreError::Conflict`] otherwise.
    fn commit(&self, conditions: &[Condition], writes: &[Write]) -> Result<Revision, StoreError>;

    /// The current revision.
    fn revision(&self) -> Result<Revision, StoreError>;

    /// The most conditions, and the most writes, one commit may carry;
    /// `None` when there is no such limit.
    fn max_ops(&self) -> Option<usize> {
        None
    }

    /// Grants a lease that ends `ttl` after its last keep-alive.
    fn grant(&self, ttl: std::time::Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease for its TTL; [`StoreError::LeaseEnded`] when it has
    /// ended (its keys are gone).
    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Ends a lease now, deleting its keys (an ended one is not an error).
    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Changes to keys under `prefix` committed after revision `after`
    /// (the revision of a listing, or the last change seen before a
    /// restart), oldest first, then live ones as they are committed.
    fn watch(&self, prefix: &str, after: Revision) -> Watch;
}

/// Changes to keys under a prefix from a revision on, in commit order,
/// none lost and none twice; [`StoreError::Compacted`] when some are no
/// longer known (relist, and watch anew from the listing's revision).
pub struct Watch(Feed);

enum Feed {
    /// History read from the store, then what this process commits.
    Local(Follow),
    /// What a backend's own task passes on (etcd's watch stream).
    Channel(tokio::sync::mpsc::Receiver<Result<Change, StoreError>>),
}

impl Watch {
    /// The next change. Reads of history may block (call it from a thread
    /// of its own, as the agent and the scheduler do).
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        match &mut self.0 {
            Feed::Local(f) => f.next().await,
            Feed::Channel(rx) => match rx.recv().await {
                Some(c) => c,
                None => Err(StoreError::Io("the store's watch ended".into())),
            },
        }
    }

    /// The next change if one is at hand, without waiting for one.
    pub async fn ready(&mut self) -> Option<Result<Change, StoreError>> {
        tokio::time::timeout(std::time::Duration::ZERO, self.next())
            .await
            .ok()
    }

    /// A watch fed by a channel.
    pub(crate) fn channel(rx: tokio::sync::mpsc::Receiver<Result<Change, StoreError>>) -> Watch {
        Watch(Feed::Channel(rx))
    }

    /// A watch over a store whose commits all go through this process.
    pub(crate) fn local(
        history: std::sync::Arc<dyn History>,
        prefix: &str,
        after: Revision,
    ) -> Watch {
        Watch(Feed::Local(Follow::new(history, prefix, after)))
    }
}

/// A store's change history and this process's live commits (SQLite's).
pub(crate) trait History: Send + Sync + 'static {
    /// Changes committed from now on, as they happen (a receiver that
    /// falls behind loses the oldest: [`Follow`] then catches up from
    /// [`History::changes_since`]).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change>;

    /// Changes to keys under `prefix` committed after revision `after`,
    /// oldest first (a commit's in its order of writes), in whole
    /// revisions: about `limit`, more when the last revision has more;
    /// [`StoreError::Compacted`] when the store no longer remembers all
    /// of them.
    fn changes_since(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;
}

/// History first, then live changes; a live feed that fell behind is
/// caught up from history. (One commit's writes share a revision; the keys
/// of the current one already given out are remembered, so that a catch-up
/// in the middle of a commit repeats none.)
struct Follow {
    store: std::sync::Arc<dyn History>,
    prefix: String,
    last: Revision,
    /// Keys of revision `last` given out; `None` when all of it was
    /// (at the start, `after` is behind the watcher).
    given: Option<std::collections::HashSet<String>>,
    live: tokio::sync::broadcast::Receiver<Change>,
    backlog: std::collections::VecDeque<Change>,
    catching_up: bool,
}

/// How many changes one read of history brings.
const CATCH_UP_BATCH: usize = 1024;

impl Follow {
    fn new(store: std::sync::Arc<dyn History>, prefix: &str, after: Revision) -> Follow {
        // Subscribed before history is read, so no change falls between.
        let live = store.subscribe();
        Follow {
            store,
            prefix: prefix.to_string(),
            last: after,
            given: None,
            live,
            backlog: Default::default(),
            catching_up: true,
        }
    }

    /// Whether `c` is new to this watcher (and notes it given out).
    fn accept(&mut self, c: &Change) -> bool {
        if c.revision < self.last || !c.key.starts_with(&self.prefix) {
            return false;
        }
        if c.revision == self.last {
            return match &mut self.given {
                None => false,
                Some(keys) => keys.insert(c.key.clone()),
            };
        }
        self.last = c.revision;
        self.given = Some([c.key.clone()].into());
        true
    }

    async fn next(&mut self) -> Result<Change, StoreError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(c) = self.backlog.pop_front() {
                let new = self.accept(&c);
                if self.backlog.is_empty() {
                    // History comes in whole revisions: the last one read
                    // is all given out now.
                    self.given = None;
                }
                if new {
                    return Ok(c);
                }
                continue;
            }
            if self.catching_up {
                // From the current revision again when part of it may be
                // missing; `accept` drops what was given out.
                let from = match self.given {
                    Some(_) => self.last - 1,
                    None => self.last,
                };
                let batch = self
                    .store
                    .changes_since(&self.prefix, from, CATCH_UP_BATCH)?;
                if batch.iter().all(|c| c.revision <= self.last) {
                    // Nothing after what was given out: live from here.
                    self.catching_up = false;
                }
                self.backlog.extend(batch);
                continue;
            }
            match self.live.recv().await {
                Ok(c) => {
                    if self.accept(&c) {
                        return Ok(c);
                    }
                }
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => {
                    return Err(StoreError::Io("the store was closed".into()))
                }
            }
        }
    }
}
