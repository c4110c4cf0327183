//! Loading: tell what a binary is, compile it once per content digest, keep
//! the compiled artifact on disk, and link it against the host.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::Module;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::engine::Runtime;
use crate::sandbox::{P1Host, P2Host};

/// What a guest is, as told from its binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// A WASI preview-1 core module exporting `_start`.
    P1Command,
    /// A WASI preview-2 component exporting `wasi:cli/run`.
    P2Command,
    /// A WASI preview-2 component exporting `wasi:http/incoming-handler`.
    Http,
}

impl GuestKind {
    /// True for the two command kinds (run to completion).
    pub fn is_command(self) -> bool {
        !matches!(self, GuestKind::Http)
    }
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestKind::P1Command => "WASI preview-1 command module",
            GuestKind::P2Command => "WASI preview-2 command component (wasi:cli/run)",
            GuestKind::Http => "WASI preview-2 HTTP component (wasi:http/incoming-handler)",
        })
    }
}

/// Why a guest could not be loaded. Each says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The image file could not be read.
    Read {
        /// The path that was asked for.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The bytes are not a WebAssembly binary (nor WAT text).
    NotWasm {
        /// What the first bytes were, for the message.
        found: String,
    },
    /// A WebAssembly binary of a version or layer wasmtime does not run.
    UnsupportedBinary {
        /// The binary's version field.
        version: u16,
        /// The binary's layer field.
        layer: u16,
    },
    /// The binary failed validation or compilation (truncated, corrupt, or
    /// using a feature that is not enabled).
    Invalid(String),
    /// The binary is valid but exports nothing skiff can run.
    NotRunnable {
        /// `core module` or `component`.
        what: &'static str,
        /// What it does export, for the message.
        exports: Vec<String>,
    },
    /// The binary imports something the host does not provide.
    Link(String),
    /// The sandbox could not be set up (a directory to mount is missing).
    Sandbox(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, message } => {
                write!(f, "cannot read image {}: {message}", path.display())
            }
            LoadError::NotWasm { found } => write!(
                f,
                "not a WebAssembly binary: expected the magic bytes \\0asm at the start, found {found}"
            ),
            LoadError::UnsupportedBinary { version, layer } => write!(
                f,
                "unsupported WebAssembly binary (version {version}, layer {layer}): expected a core module (version 1) or a component (version 0xd, layer 1)"
            ),
            LoadError::Invalid(msg) => write!(f, "invalid WebAssembly: {msg}"),
            LoadError::NotRunnable { what, exports } => {
                let expected = if *what == "core module" {
                    "a WASI command exporting `_start`"
                } else {
                    "a component exporting `wasi:cli/run@0.2.x` or `wasi:http/incoming-handler@0.2.x`"
                };
                let exports = if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                };
                write!(f, "this {what} exports {exports}; expected {expected}")
            }
            LoadError::Sandbox(msg) => write!(f, "cannot set up the sandbox: {msg}"),
            LoadError::Link(msg) => write!(
                f,
                "imports something skiff does not provide ({msg}); a guest may import WASI preview-1, or WASI 0.2 (wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem, wasi:sockets, wasi:http)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The SHA-256 of a binary, which names it in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of these bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A loaded guest: compiled, linked and pre-instantiated. Cheap to clone.
#[derive(Clone)]
pub struct Guest {
    pub(crate) inner: Arc<GuestInner>,
}

pub(crate) struct GuestInner {
    pub kind: GuestKind,
    pub digest: Digest,
    pub from_cache: bool,
    pub code: Code,
}

pub(crate) enum Code {
    P1(wasmtime::InstancePre<P1Host>),
    Command(CommandPre<P2Host>),
    Http(ProxyPre<P2Host>),
}

impl Guest {
    /// What the guest is.
    pub fn kind(&self) -> GuestKind {
        self.inner.kind
    }

    /// The SHA-256 of its binary.
    pub fn digest(&self) -> Digest {
        self.inner.digest
    }

    /// True when the compiled code came from the on-disk cache rather than
    /// from the compiler.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }
}

enum Compiled {
    Module(Module),
    Component(Component),
}

impl Runtime {
    /// Reads and loads an image file. See [`Runtime::load`].
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Guest, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.load(&bytes)
    }

    /// Loads a guest from its bytes (a binary, or WAT text): tells its kind,
    /// compiles it (or loads it from the cache), links it and
    /// pre-instantiates it. Compiling can take seconds for a large module:
    /// call this off the async threads (`spawn_blocking`).
    pub fn load(&self, bytes: &[u8]) -> Result<Guest, LoadError> {
        let text;
        let bytes = if looks_like_text(bytes) {
            text = wat::parse_bytes(bytes).map_err(|e| LoadError::Invalid(e.to_string()))?;
            &text[..]
        } else {
            bytes
        };
        let is_component = binary_kind(bytes)?;
        let digest = Digest::of(bytes);
        // Single flight: concurrent loads of the same binary (a burst of
        // tasks of one image) wait for one compilation instead of each
        // running their own.
        let cell = self
            .lock_loaded()
            .entry(digest)
            .or_insert_with(|| Arc::new(std::sync::OnceLock::new()))
            .clone();
        cell.get_or_init(|| {
            let (compiled, from_cache) = self.compile_cached(bytes, digest, is_component)?;
            let (kind, code) = self.link(compiled)?;
            Ok(Guest {
                inner: Arc::new(GuestInner {
                    kind,
                    digest,
                    from_cache,
                    code,
                }),
            })
        })
        .clone()
    }

    fn lock_loaded(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, crate::engine::LoadCell>> {
        self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_path(&self, digest: Digest) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        Some(dir.join(&self.inner.compat).join(format!("{digest}.cwasm")))
    }

    fn compile_cached(
        &self,
        bytes: &[u8],
        digest: Digest,
        is_component: bool,
    ) -> Result<(Compiled, bool), LoadError> {
        let engine = &self.inner.engine;
        let Some(path) = self.cache_path(digest) else {
            return Ok((compile(engine, bytes, is_component)?, false));
        };
        // Read, not mmap (`deserialize_file`): a mapped artifact that
        // someone truncates on disk would take the process down with SIGBUS.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the file was written by `precompile_*` of an engine
            // with the same compatibility hash (it is in the hash's
            // directory) and is named by the digest of its source; the
            // cache directory belongs to this engine's data directory,
            // which is trusted like the binary itself. wasmtime still
            // checks the header and refuses a corrupt or foreign artifact.
            let loaded = unsafe {
                if is_component {
                    Component::deserialize(engine, &artifact).map(Compiled::Component)
                } else {
                    Module::deserialize(engine, &artifact).map(Compiled::Module)
                }
            };
            if let Ok(c) = loaded {
                // Marks it used: whoever bounds the cache directory evicts
                // the least recently used artifacts first.
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                return Ok((c, true));
            }
            // A corrupt or stale artifact: compile again and overwrite it.
        }
        let artifact = guarded(|| {
            if is_component {
                engine.precompile_component(bytes)
            } else {
                engine.precompile_module(bytes)
            }
        })?;
        // A cache that cannot be written is not an error: the next start
        // compiles again.
        let _ = write_atomically(&path, &artifact);
        // SAFETY: `artifact` was just produced by this engine.
        let compiled = unsafe {
            if is_component {
                Component::deserialize(engine, &artifact).map(Compiled::Component)
            } else {
                Module::deserialize(engine, &artifact).map(Compiled::Module)
            }
        }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((compiled, false))
    }

    fn link(&self, compiled: Compiled) -> Result<(GuestKind, Code), LoadError> {
        let engine = &self.inner.engine;
        match compiled {
            Compiled::Module(m) => {
                let has_start = m
                    .exports()
                    .any(|e| e.name() == "_start" && e.ty().func().is_some());
                if !has_start {
                    return Err(LoadError::NotRunnable {
                        what: "core module",
                        exports: m.exports().map(|e| e.name().to_string()).collect(),
                    });
                }
                let pre = self
                    .inner
                    .module_linker
                    .instantiate_pre(&m)
                    .map_err(|e| LoadError::Link(format!("{e:#}")))?;
                Ok((GuestKind::P1Command, Code::P1(pre)))
            }
            Compiled::Component(c) => {
                let ty = c.component_type();
                let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
                let has = |prefix: &str| exports.iter().any(|n| n.starts_with(prefix));
                let kind = if has("wasi:http/incoming-handler@0.2") {
                    GuestKind::Http
                } else if has("wasi:cli/run@0.2") {
                    GuestKind::P2Command
                } else {
                    return Err(LoadError::NotRunnable {
                        what: "component",
                        exports,
                    });
                };
                let pre = self
                    .inner
                    .component_linker
                    .instantiate_pre(&c)
                    .map_err(|e| LoadError::Link(format!("{e:#}")))?;
                let code = match kind {
                    GuestKind::Http => Code::Http(
                        ProxyPre::new(pre).map_err(|e| LoadError::Link(format!("{e:#}")))?,
                    ),
                    _ => Code::Command(
                        CommandPre::new(pre).map_err(|e| LoadError::Link(format!("{e:#}")))?,
                    ),
                };
                Ok((kind, code))
            }
        }
    }
}

fn compile(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    is_component: bool,
) -> Result<Compiled, LoadError> {
    if is_component {
        guarded(|| Component::new(engine, bytes)).map(Compiled::Component)
    } else {
        guarded(|| Module::new(engine, bytes)).map(Compiled::Module)
    }
}

/// Runs the compiler, turning its errors (and, should one ever happen, a
/// panic on hostile input) into a load error.
fn guarded<T>(f: impl FnOnce() -> wasmtime::Result<T>) -> Result<T, LoadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LoadError::Invalid(format!("{e:#}"))),
        Err(_) => Err(LoadError::Invalid(
            "the compiler failed on this input".into(),
        )),
    }
}

/// WAT text starts (after whitespace and comments) with `(`.
fn looks_like_text(bytes: &[u8]) -> bool {
    let trimmed = bytes.iter().position(|b| !b.is_ascii_whitespace());
    matches!(trimmed.map(|i| bytes[i]), Some(b'(') | Some(b';'))
}

/// Reads the 8-byte preamble: `true` for a component, `false` for a core
/// module; an error says what the bytes are instead.
pub fn binary_kind(bytes: &[u8]) -> Result<bool, LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let head = &bytes[..bytes.len().min(8)];
        let found = if head.is_empty() {
            "an empty file".to_string()
        } else {
            format!(
                "{} ({})",
                head.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if bytes.len() < 8 {
                    "too short"
                } else {
                    "wrong magic"
                }
            )
        };
        return Err(LoadError::NotWasm { found });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (version, layer) {
        (1, 0) => Ok(false),
        (0xd, 1) => Ok(true),
        _ => Err(LoadError::UnsupportedBinary { version, layer }),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_tells_modules_from_components() {
        assert_eq!(binary_kind(b"\0asm\x01\0\0\0"), Ok(false));
        assert_eq!(binary_kind(b"\0asm\x0d\0\x01\0"), Ok(true));
        assert!(matches!(
            binary_kind(b"\0asm\x02\0\0\0"),
            Err(LoadError::UnsupportedBinary { version: 2, .. })
        ));
        assert!(matches!(
            binary_kind(b"MZ\x90\0"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(binary_kind(b""), Err(LoadError::NotWasm { .. })));
    }

    #[test]
    fn text_is_recognised() {
        assert!(looks_like_text(b"  (module)"));
        assert!(looks_like_text(b";; comment\n(module)"));
        assert!(!looks_like_text(b"\0asm"));
    }
}
