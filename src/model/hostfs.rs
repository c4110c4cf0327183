//! Which host files tasks may name. A task definition names host paths in
//! two places: container `image`s and volumes' `host.sourcePath`. On a
//! server with `--auth`, where API callers are not the machine's owner,
//! both must lie under a host root (`--host-root`, default the server's
//! working directory); without `--auth`, the caller is the machine's
//! owner and any path is theirs to name.
//!
//! A path is checked twice: when the task definition is registered
//! ([`within_lexically`]: `..` resolved without touching the disk, since
//! the file may not exist yet), and when a task starts ([`confine`]:
//! symlinks resolved, so a link planted later does not lead out).

use std::path::{Component, Path, PathBuf};

/// The directories tasks may name host paths under; `None` is anywhere.
pub type HostRoots = Option<std::sync::Arc<[PathBuf]>>;

/// `path` made absolute against the working directory, with `.` and `..`
/// resolved by name.
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Why a host path may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    /// It lies outside every root.
    #[error(
        "{field} {} is outside the directories this server lets tasks use ({}); \
         move it under one, or start the server with --host-root naming its directory",
        path.display(),
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Outside {
        /// The field that names it.
        field: String,
        /// The path, as named.
        path: PathBuf,
        /// The roots.
        roots: Vec<PathBuf>,
    },
    /// It cannot be resolved (it does not exist, or cannot be read).
    #[error("{field} {}: {message}", path.display())]
    Unresolved {
        /// The field that names it.
        field: String,
        /// The path, as named.
        path: PathBuf,
        /// What the file system said.
        message: String,
    },
    /// A `--host-root` that is not a directory.
    #[error("--host-root {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
}

fn refusal(field: &str, path: &Path, roots: &[PathBuf]) -> HostPathError {
    HostPathError::Outside {
        field: field.to_string(),
        path: path.to_path_buf(),
        roots: roots.to_vec(),
    }
}

/// Whether `path` is under a root by name (for registration).
pub fn within_lexically(field: &str, path: &Path, roots: &HostRoots) -> Result<(), HostPathError> {
    let Some(roots) = roots else {
        return Ok(());
    };
    let abs = absolute(path);
    if roots.iter().any(|r| abs.starts_with(r)) {
        Ok(())
    } else {
        Err(refusal(field, path, roots))
    }
}

/// The real path of `path` when it is under a root once symlinks are
/// resolved (for a task's start); `path` itself when anywhere goes.
pub fn confine(field: &str, path: &Path, roots: &HostRoots) -> Result<PathBuf, HostPathError> {
    let Some(roots) = roots else {
        return Ok(path.to_path_buf());
    };
    let real = std::fs::canonicalize(path).map_err(|e| HostPathError::Unresolved {
        field: field.to_string(),
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if roots.iter().any(|r| real.starts_with(r)) {
        Ok(real)
    } else {
        Err(refusal(field, path, roots))
    }
}

/// The roots as given on the command line, resolved; the error names the
/// one that is not a directory.
pub fn resolve_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>, HostPathError> {
    roots
        .iter()
        .map(|r| {
            std::fs::canonicalize(r)
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| HostPathError::NotADirectory(r.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_their_roots_by_name_and_by_link() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(root_path.join("app.wasm"), b"x").unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root_path.join("link")).unwrap();
        let roots: HostRoots = Some(vec![root_path.clone()].into());

        assert!(within_lexically("image", &root_path.join("app.wasm"), &roots).is_ok());
        assert!(within_lexically("image", &root_path.join("later.wasm"), &roots).is_ok());
        let e = within_lexically("image", &root_path.join("../x/../../etc/passwd"), &roots)
            .unwrap_err();
        assert!(matches!(&e, HostPathError::Outside { field, .. } if field == "image"));
        let e = e.to_string();
        assert!(
            e.contains("outside the directories") && e.contains("--host-root"),
            "{e}"
        );

        assert_eq!(
            confine("image", &root_path.join("app.wasm"), &roots).unwrap(),
            root_path.join("app.wasm")
        );
        // By name it is inside; by its link it is not.
        assert!(within_lexically("image", &root_path.join("link"), &roots).is_ok());
        assert!(matches!(
            confine("image", &root_path.join("link"), &roots),
            Err(HostPathError::Outside { .. })
        ));
        assert!(confine("image", Path::new("/etc/passwd"), &None).is_ok());
        assert_eq!(
            resolve_roots(&[PathBuf::from("/nonexistent/root")]),
            Err(HostPathError::NotADirectory("/nonexistent/root".into()))
        );
    }
}
