//! Module bytes between nodes, by their SHA-256 digest.
//!
//! A task definition names its images by path, on the machine of the node
//! that registers it. That node keeps a copy of each image that exists
//! there under its digest (`DATA_DIR/blobs/HEX`), records the digest in
//! the task definition, and says in the store that it holds it
//! (`blobs/HEX/NODE`). A node that starts a task whose image path does
//! not exist on its machine asks a node that holds the digest for the
//! bytes (`GET /_skiff/blobs/HEX`, signed as nodes sign), checks them
//! against the digest, keeps them and says it holds them too. A path that
//! does exist is loaded as it is, as on one node (a module rebuilt at its
//! path is what new tasks run, as an image tag would be).
//!
//! A blob no task definition names any more (its revisions deleted for
//! good, see DeleteTaskDefinitions) is removed, with the store's word that
//! this node holds it, by [`Blobs::sweep`]: [`follow`] runs it when the
//! node starts and whenever task definitions are removed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::definitions::DefinitionRecord;
use crate::model::image::valid_hex;
use crate::store::{Store, StoreError, Write};

/// The path prefix nodes fetch blobs under.
pub const BLOBS_PATH: &str = "/_skiff/blobs/";

/// The store key that says `node` holds blob `hex`.
pub fn holder_key(hex: &str, node: &str) -> String {
    format!("blobs/{hex}/{node}")
}

use crate::model::sha256_hex as digest;

/// Why a blob could not be kept, swept or fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The store could not be read or written.
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        source: crate::store::records::ReadError,
    },
    /// A file of the blobs directory (or the image) could not be read or
    /// written.
    #[error("{what}: {message}")]
    File {
        /// What was being done, naming the file.
        what: String,
        /// What the file system said.
        message: String,
    },
    /// Not a SHA-256 digest.
    #[error("{0:?} is not a SHA-256 digest")]
    NotADigest(String),
    /// No node could give the blob: why not, from the last one asked.
    #[error("{0}")]
    Unavailable(String),
}

fn file_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
    let what = what.into();
    move |e| BlobError::File {
        what,
        message: e.to_string(),
    }
}

fn store_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> BlobError {
    let what = what.into();
    move |e| BlobError::Store {
        what,
        source: e.into(),
    }
}

/// A file's identity for the digest cache: its length and mtime.
type Stamp = (u64, std::time::SystemTime);

/// How old a half-written blob file is before a sweep removes it.
const STALE_PART: Duration = Duration::from_secs(3600);

/// How long a sweep waits after a task definition is removed, so that
/// removals in one go are swept once.
const SETTLE: Duration = Duration::from_secs(1);

/// Sweeps `blobs` now, then whenever task definitions are removed for
/// good (their marks under `deleting/` go), on a thread of its own until
/// `stop`.
pub fn follow(
    blobs: Arc<Blobs>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let prefix = crate::model::definitions::DELETING;
    crate::threads::spawn("skiff-blobs", move || async move {
        let sweep = |blobs: &Blobs| match blobs.sweep() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} blobs no task definition names"),
            Err(e) => tracing::warn!("cannot sweep this node's blobs: {e}"),
        };
        let mut from = store.revision().unwrap_or(0);
        sweep(&blobs);
        let mut watch = store.watch(prefix, from);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                change = watch.next() => match change {
                    Ok(c) if c.deleted => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(SETTLE) => {}
                        }
                        // The removals that came meanwhile are in this sweep.
                        while let Ok(Ok(_)) =
                            tokio::time::timeout(Duration::ZERO, watch.next()).await
                        {}
                        sweep(&blobs);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !matches!(e, StoreError::Compacted(_)) {
                            tracing::warn!("the watch of removed task definitions failed: {e}");
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(SETTLE) => {}
                            }
                        }
                        from = store.revision().unwrap_or(from);
                        sweep(&blobs);
                        watch = store.watch(prefix, from);
                    }
                },
            }
        }
    })
}

/// This node's blobs.
pub struct Blobs {
    dir: PathBuf,
    store: Arc<dyn Store>,
    node: String,
    secret: Vec<u8>,
    /// Digests of image files already kept, by path and stamp.
    known: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    /// Held by a sweep, and by a registration from keeping its images to
    /// committing (see [`Blobs::hold`]).
    sweeps: Mutex<()>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Blobs {
    /// Blobs kept in `dir`, for node `node`, fetched from the other nodes
    /// with the nodes' `secret`.
    pub fn new(dir: PathBuf, store: Arc<dyn Store>, node: String, secret: Vec<u8>) -> Blobs {
        Blobs {
            dir,
            store,
            node,
            secret,
            known: Mutex::new(HashMap::new()),
            sweeps: Mutex::new(()),
        }
    }

    /// Holds off [`Blobs::sweep`] while a registration keeps its images
    /// here and commits the task definition that names them (so that no
    /// sweep finds a blob named by nothing yet and removes it).
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.sweeps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the blobs held here that no task definition names, and the
    /// store's record that this node holds them; returns how many. Files
    /// a write left half done (a crash) go too, an hour on.
    pub fn sweep(&self) -> Result<usize, BlobError> {
        let _held = self.hold();
        let mut named = HashSet::new();
        // An unreadable revision stops the sweep: whatever it names stays.
        let revisions = crate::store::records::read_all::<DefinitionRecord>(
            self.store.as_ref(),
            crate::model::definitions::PREFIX,
        )
        .map_err(|e| BlobError::Store {
            what: "cannot read the task definitions".into(),
            source: e,
        })?;
        for (_, d, _) in revisions {
            named.extend(d.digests.into_values());
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(file_error(format!("cannot read {}", self.dir.display()))(e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_hex(&name) {
                if named.contains(&name) {
                    continue;
                }
                // The record first: a node told this one holds a blob it
                // no longer has would ask for nothing.
                self.store
                    .commit(&[], &[Write::Delete(holder_key(&name, &self.node))])
                    .map_err(store_error(format!("cannot record blob {name} gone")))?;
                std::fs::remove_file(entry.path()).map_err(file_error(format!(
                    "cannot remove {}",
                    entry.path().display()
                )))?;
                removed += 1;
            } else if name.starts_with('.') {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_PART);
                if stale {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(removed)
    }

    fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    /// Keeps the bytes of the image file at `path` (when it exists):
    /// returns its digest and, unless the store has it already, the write
    /// that records this node holding it, to commit with the task
    /// definition. `Ok(None)`: no such file
    /// here (other nodes must have the path).
    pub fn keep(&self, path: &Path) -> Result<Option<(String, Option<Write>)>, BlobError> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let unreadable = || path.display().to_string();
        let stamp = (
            meta.len(),
            meta.modified().map_err(file_error(unreadable()))?,
        );
        let cached = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, hex)| hex.clone());
        let hex = match cached {
            Some(hex) if self.path(&hex).exists() => hex,
            _ => {
                let bytes = std::fs::read(path).map_err(file_error(unreadable()))?;
                let hex = digest(&bytes);
                self.put(&hex, &bytes)?;
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.to_path_buf(), (stamp, hex.clone()));
                hex
            }
        };
        // Said once: a registration of an image already held here writes
        // nothing more to the store.
        let key = holder_key(&hex, &self.node);
        let held = match self.store.get(&key) {
            Ok(Some(_)) => None,
            _ => Some(Write::Put(key, Vec::new())),
        };
        Ok(Some((hex, held)))
    }

    /// Writes a blob here (through a temporary file, so that a reader
    /// never sees half of one).
    fn put(&self, hex: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(hex);
        if path.exists() {
            return Ok(());
        }
        let what = || format!("cannot keep {}", path.display());
        std::fs::create_dir_all(&self.dir).map_err(file_error(what()))?;
        let tmp = self.dir.join(format!(".{hex}.{}", crate::model::new_id()));
        std::fs::write(&tmp, bytes).map_err(file_error(what()))?;
        std::fs::rename(&tmp, &path).map_err(file_error(what()))
    }

    /// A blob held here, checked against its digest (a damaged copy is
    /// removed and not served).
    pub fn local(&self, hex: &str) -> Option<Vec<u8>> {
        if !valid_hex(hex) {
            return None;
        }
        let path = self.path(hex);
        let bytes = std::fs::read(&path).ok()?;
        if digest(&bytes) != hex {
            tracing::error!("the blob {} is damaged; removing it", path.display());
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// The bytes of blob `hex`: held here, or fetched from a node that
    /// holds it, checked, and then held here too.
    pub fn fetch(&self, hex: &str) -> Result<Vec<u8>, BlobError> {
        if !valid_hex(hex) {
            return Err(BlobError::NotADigest(hex.to_string()));
        }
        if let Some(b) = self.local(hex) {
            return Ok(b);
        }
        let holders = self
            .store
            .list(&format!("blobs/{hex}/"), None, usize::MAX)
            .map_err(store_error("cannot read which nodes hold it"))?;
        let mut why = format!("no node holds the module sha256:{hex}");
        for h in holders {
            let Some(node) = h.key.rsplit('/').next() else {
                continue;
            };
            if node == self.node {
                continue;
            }
            let Some(addr) = crate::store::records::instance(self.store.as_ref(), node)
                .ok()
                .flatten()
                .and_then(|i| i.node.api)
            else {
                continue;
            };
            let path = format!("{BLOBS_PATH}{hex}");
            match crate::auth::peer::get(&addr, &path, &self.secret) {
                Ok(Some(bytes)) if digest(&bytes) == hex => {
                    self.put(hex, &bytes)?;
                    let _ = self
                        .store
                        .commit(&[], &[Write::Put(holder_key(hex, &self.node), Vec::new())]);
                    return Ok(bytes);
                }
                Ok(Some(_)) => {
                    why = format!(
                        "node {node} sent bytes that are not sha256:{hex}; they were refused"
                    )
                }
                Ok(None) => why = format!("node {node} no longer holds sha256:{hex}"),
                Err(e) => why = format!("node {node} at {addr}: {e}"),
            }
        }
        Err(BlobError::Unavailable(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node n1's blobs in `dir`, over a store there.
    fn node_n1(dir: &Path) -> (Arc<dyn Store>, Blobs) {
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.join("s.db")).unwrap());
        let blobs = Blobs::new(dir.join("blobs"), store.clone(), "n1".into(), vec![1]);
        (store, blobs)
    }

    #[test]
    fn kept_blobs_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, blobs) = node_n1(dir.path());
        let image = dir.path().join("m.wasm");
        std::fs::write(&image, b"\0asm\x01\0\0\0").unwrap();
        let (hex, held) = blobs.keep(&image).unwrap().unwrap();
        assert_eq!(hex, digest(b"\0asm\x01\0\0\0"));
        assert_eq!(held, Some(Write::Put(holder_key(&hex, "n1"), Vec::new())));
        assert_eq!(blobs.keep(&dir.path().join("none.wasm")), Ok(None));
        // Gone from its path: still here by digest.
        std::fs::remove_file(&image).unwrap();
        assert_eq!(blobs.fetch(&hex).unwrap(), b"\0asm\x01\0\0\0");
        // A damaged copy is not served, and no other node holds it.
        std::fs::write(dir.path().join("blobs").join(&hex), b"other").unwrap();
        assert_eq!(blobs.local(&hex), None);
        let err = blobs.fetch(&hex).unwrap_err();
        assert!(matches!(&err, BlobError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no node holds"), "{err}");
        assert!(blobs.fetch("../../etc/passwd").is_err());
    }

    #[test]
    fn a_sweep_removes_the_blobs_no_task_definition_names() {
        let dir = tempfile::tempdir().unwrap();
        let (store, blobs) = node_n1(dir.path());
        let mut kept = Vec::new();
        for (name, bytes) in [
            ("a.wasm", &b"\0asm\x01\0\0\0"[..]),
            ("b.wasm", b"\0asm\x01\0\0\0\0"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let (hex, held) = blobs.keep(&path).unwrap().unwrap();
            store.commit(&[], &[held.unwrap()]).unwrap();
            kept.push(hex);
        }
        let (a, b) = (kept[0].clone(), kept[1].clone());
        let td = crate::model::definitions::key("f", 1);
        let named = serde_json::json!({"family": "f", "revision": 1, "digests": {"web": a}});
        store
            .commit(
                &[],
                &[Write::Put(td.clone(), serde_json::to_vec(&named).unwrap())],
            )
            .unwrap();
        // A write a crash left half done, an hour and more ago; and one
        // in progress now.
        let parts = dir.path().join("blobs");
        let old = std::fs::File::create(parts.join(".old.part")).unwrap();
        old.set_modified(std::time::SystemTime::now() - 2 * STALE_PART)
            .unwrap();
        std::fs::write(parts.join(".new.part"), b"x").unwrap();
        let exists = |name: &str| parts.join(name).exists();
        let holds = |hex: &str| store.get(&holder_key(hex, "n1")).unwrap().is_some();

        assert_eq!(blobs.sweep(), Ok(1));
        assert!(exists(&a) && holds(&a), "named by a task definition: kept");
        assert!(!exists(&b) && !holds(&b), "named by none: removed");
        assert!(!exists(".old.part") && exists(".new.part"));
        // Its task definition gone, the other goes too.
        store.commit(&[], &[Write::Delete(td)]).unwrap();
        assert_eq!(blobs.sweep(), Ok(1));
        assert!(!exists(&a) && !holds(&a));
        assert_eq!(blobs.sweep(), Ok(0));
        // Kept again when registered again.
        let (hex, held) = blobs.keep(&dir.path().join("a.wasm")).unwrap().unwrap();
        assert_eq!((hex.as_str(), held.is_some()), (a.as_str(), true));
        assert!(exists(&a));
    }
}
