//! The node's image cache: layers by SHA-256, manifests naming their
//! layer, and a size bound shared with the compiled code, kept by evicting
//! the least recently used files.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// See the module.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    compiled: Option<PathBuf>,
    bound: u64,
    evicting: Mutex<()>,
}

fn hex_of(digest: &str) -> Option<&str> {
    crate::model::image::valid_digest(digest).then(|| &digest["sha256:".len()..])
}

/// Marks a file used now (the cache's recency is the files' mtime).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

impl Cache {
    /// A cache in `dir`, whose bound of `bound` bytes also counts the
    /// compiled artifacts under `compiled`.
    pub fn new(dir: PathBuf, compiled: Option<PathBuf>, bound: u64) -> Cache {
        Cache {
            dir,
            compiled,
            bound,
            evicting: Mutex::new(()),
        }
    }

    fn layer_path(&self, hex: &str) -> PathBuf {
        self.dir.join("layers").join(hex)
    }

    fn manifest_path(&self, hex: &str) -> PathBuf {
        self.dir.join("manifests").join(hex)
    }

    /// A layer's bytes, when cached and intact (a damaged copy is removed).
    pub fn layer(&self, digest: &str) -> Option<Vec<u8>> {
        let hex = hex_of(digest)?;
        let path = self.layer_path(hex);
        let bytes = std::fs::read(&path).ok()?;
        if crate::model::sha256_hex(&bytes) != hex {
            tracing::error!(
                "the cached layer {} is damaged; removing it",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    /// The wasm of the manifest `digest`, when cached.
    pub fn image(&self, digest: &str) -> Option<Vec<u8>> {
        let hex = hex_of(digest)?;
        let layer = std::fs::read_to_string(self.manifest_path(hex)).ok()?;
        self.layer(layer.trim())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp.{}", crate::model::new_id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Keeps a layer's bytes (already checked against `digest`).
    pub fn put_layer(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let hex = hex_of(digest).ok_or_else(|| std::io::Error::other("not a sha256 digest"))?;
        self.write(&self.layer_path(hex), bytes)
    }

    /// Records that manifest `digest` has the layer `layer`.
    pub fn put_manifest(&self, digest: &str, layer: &str) -> std::io::Result<()> {
        let hex = hex_of(digest).ok_or_else(|| std::io::Error::other("not a sha256 digest"))?;
        self.write(&self.manifest_path(hex), layer.as_bytes())
    }

    /// The files the bound counts: cached layers and compiled artifacts,
    /// with their size and last use.
    fn files(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.join("layers")];
        dirs.extend(self.compiled.clone());
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(e.path());
                } else if !e.file_name().to_string_lossy().starts_with('.') {
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((e.path(), meta.len(), used));
                }
            }
        }
        out
    }

    /// Bytes the bound counts now.
    pub fn size(&self) -> u64 {
        self.files().iter().map(|(_, n, _)| n).sum()
    }

    /// Removes the least recently used files until the cache and the
    /// compiled code fit the bound; forgets manifests whose layer went.
    /// Returns the bytes removed.
    pub fn evict(&self) -> u64 {
        let _one = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|(_, n, _)| n).sum();
        if total <= self.bound {
            return 0;
        }
        files.sort_by_key(|(_, _, used)| *used);
        let mut removed = 0;
        for (path, n, _) in files {
            if total <= self.bound {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= n;
                removed += n;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) {
            for e in entries.flatten() {
                let layer = std::fs::read_to_string(e.path()).unwrap_or_default();
                let gone = hex_of(layer.trim()).is_none_or(|h| !self.layer_path(h).exists());
                if gone {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> String {
        format!("sha256:{}", crate::model::sha256_hex(b))
    }

    #[test]
    fn least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let compiled = dir.path().join("compiled");
        std::fs::create_dir_all(compiled.join("engine")).unwrap();
        let cache = Cache::new(dir.path().join("images"), Some(compiled.clone()), 2500);
        let (a, b) = (vec![1u8; 1000], vec![2u8; 1000]);
        cache.put_layer(&digest(&a), &a).unwrap();
        cache.put_manifest(&digest(b"m1"), &digest(&a)).unwrap();
        cache.put_layer(&digest(&b), &b).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for (name, age) in [(&a, 2), (&b, 1)] {
            let p = cache.layer_path(hex_of(&digest(name)).unwrap());
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(old - std::time::Duration::from_secs(age))
                .unwrap();
        }
        assert_eq!(cache.evict(), 0, "2000 bytes fit 2500");
        // Compiled code counts too: 1000 more bytes push a out (the oldest).
        std::fs::write(compiled.join("engine/x.cwasm"), vec![0u8; 1000]).unwrap();
        assert_eq!(cache.evict(), 1000);
        assert_eq!(cache.image(&digest(b"m1")), None);
        assert!(!cache
            .manifest_path(hex_of(&digest(b"m1")).unwrap())
            .exists());
        assert_eq!(cache.layer(&digest(&b)), Some(b.clone()));
        assert_eq!(cache.size(), 2000);
        // A damaged layer is not served.
        let p = cache.layer_path(hex_of(&digest(&b)).unwrap());
        std::fs::write(&p, b"other").unwrap();
        assert_eq!(cache.layer(&digest(&b)), None);
        assert!(!p.exists());
    }
}
