//! The store: desired state (clusters, task definitions, tags) and observed
//! state (tasks) as versioned key/value records.
//!
//! The trait is shaped for etcd as a second backend: every write bumps one
//! store-wide revision, records carry their create and modify revisions,
//! writes are transactions guarded by conditions (compare-and-swap), and
//! changes are published to subscribers (watches). Only SQLite is built.
//!
//! A [`Store::commit`] returns only after its write is durable.

mod sqlite;

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

/// A write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace.
    Put(String, Vec<u8>),
    /// Remove (a missing key is not an error).
    Delete(String),
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
    /// The store could not be read or written.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("the record changed concurrently; retry"),
            StoreError::Io(m) => write!(f, "store error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

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

    /// Changes committed from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change>;
}
