//! Images in OCI registries: resolving a tag to a digest, pulling a wasm
//! artifact (checked against its digests, bounded in size, once per node
//! however many tasks ask at once), keeping it in a content-addressed cache
//! with a size bound, and pushing one.
//!
//! A wasm artifact is an image manifest with one wasm layer: the CNCF
//! layout (config `application/vnd.wasm.config.v0+json`, layer
//! `application/wasm`), or the older layer type
//! `application/vnd.wasm.content.layer.v1+wasm` other tools push.
//!
//! The cache (`DATA_DIR/images`): `layers/HEX` holds a layer's bytes under
//! its SHA-256, `manifests/HEX` the layer a manifest digest names. Its bound
//! covers the compiled code too (`DATA_DIR/cache`): when a pull takes the
//! two past it, the least recently used files go first. A task that runs
//! keeps its compiled code in memory, so eviction never stops one.

mod auth;
pub mod blobs;
mod cache;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

pub use auth::Credentials;
pub use cache::Cache;

/// The layer type of the CNCF wasm artifact layout.
pub const WASM_LAYER: &str = "application/wasm";
/// The layer type older tools push.
pub const WASM_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The config type of the CNCF wasm artifact layout.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// How a node reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP; all others
    /// over HTTPS.
    pub insecure: Vec<String>,
    /// Where credentials come from.
    pub credentials: Credentials,
    /// The largest wasm layer pulled, in bytes.
    pub max_image_bytes: u64,
    /// The cache's directory (`DATA_DIR/images`), the compiled code's
    /// (`DATA_DIR/cache`), and the bound on the two together, in bytes.
    pub cache_dir: PathBuf,
    /// The compiled code's directory, counted in the cache's bound.
    pub compiled_dir: Option<PathBuf>,
    /// The bound on the cache and the compiled code, in bytes.
    pub cache_bytes: u64,
}

/// What went wrong with an image, in the words an operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The reference, as the task definition wrote it (or as resolved).
    pub reference: String,
    /// What failed.
    pub kind: ImageErrorKind,
    /// The registry's or the system's words.
    pub detail: String,
}

/// The kinds of [`ImageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageErrorKind {
    /// No such repository, tag or digest.
    NotFound,
    /// The registry refused the credentials (or asked for some).
    Unauthorized,
    /// Not a wasm artifact.
    NotWasm,
    /// The bytes are not what their digest says.
    DigestMismatch,
    /// The layer is larger than the node's bound.
    TooLarge,
    /// The credentials could not be read.
    Credentials,
    /// The registry could not be reached, or answered otherwise.
    Registry,
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            ImageErrorKind::NotFound => "not found",
            ImageErrorKind::Unauthorized => "unauthorized",
            ImageErrorKind::NotWasm => "not a wasm artifact",
            ImageErrorKind::DigestMismatch => "digest mismatch",
            ImageErrorKind::TooLarge => "too large",
            ImageErrorKind::Credentials => "credentials",
            ImageErrorKind::Registry => "registry error",
        };
        write!(f, "{}: {what}: {}", self.reference, self.detail)
    }
}

impl std::error::Error for ImageError {}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Its manifest's digest (`sha256:...`), as ECS reports `imageDigest`.
    pub digest: String,
    /// The wasm bytes.
    pub bytes: Vec<u8>,
}

/// This node's way to registries. Cheap to share (`Arc`).
pub struct Registry {
    /// One client per set of credentials: a client keeps the credentials
    /// (and tokens) it first used for a registry, so tasks with different
    /// credentials must not share one.
    clients: Mutex<HashMap<String, oci_client::Client>>,
    config: RegistryConfig,
    cache: Cache,
    /// One pull at a time per image: the others wait for it and read the
    /// cache.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pulls: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry client with `config`.
    pub fn new(config: RegistryConfig) -> Registry {
        // HTTPS through rustls with ring, chosen once for the process (a
        // provider installed before is kept).
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let cache = Cache::new(
            config.cache_dir.clone(),
            config.compiled_dir.clone(),
            config.cache_bytes,
        );
        Registry {
            clients: Mutex::new(HashMap::new()),
            config,
            cache,
            inflight: Mutex::new(HashMap::new()),
            pulls: AtomicU64::new(0),
        }
    }

    /// Layers fetched from registries since start (cache hits and
    /// deduplicated pulls are not counted).
    pub fn pulls(&self) -> u64 {
        self.pulls.load(Ordering::Relaxed)
    }

    /// The node's cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The client for `auth` (made on first use).
    fn client(&self, auth: &RegistryAuth) -> oci_client::Client {
        let key = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => {
                crate::model::sha256_hex(format!("basic\0{u}\0{p}").as_bytes())
            }
            RegistryAuth::Bearer(t) => crate::model::sha256_hex(format!("bearer\0{t}").as_bytes()),
        };
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| {
                oci_client::Client::new(ClientConfig {
                    protocol: ClientProtocol::HttpsExcept(self.config.insecure.clone()),
                    connect_timeout: Some(Duration::from_secs(5)),
                    read_timeout: Some(Duration::from_secs(30)),
                    user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                })
            })
            .clone()
    }

    fn err(&self, reference: &Reference, e: OciDistributionError) -> ImageError {
        classify(reference.whole(), e, &self.config.insecure)
    }

    /// The digest a reference names now: its own digest when it has one,
    /// else what the registry says its tag points to.
    pub async fn resolve(
        &self,
        reference: &Reference,
        credentials: Option<&str>,
    ) -> Result<String, ImageError> {
        if let Some(d) = reference.digest() {
            return Ok(d.to_string());
        }
        let auth = self.auth(reference, credentials).await?;
        self.client(&auth)
            .fetch_manifest_digest(reference, &auth)
            .await
            .map_err(|e| self.err(reference, e))
    }

    /// Pulls the wasm of `reference` (at `digest` when given: the digest a
    /// deployment resolved its tag to), from the cache when it is there.
    pub async fn pull(
        &self,
        reference: &Reference,
        digest: Option<&str>,
        credentials: Option<&str>,
    ) -> Result<Pulled, ImageError> {
        let target = match digest.or(reference.digest()) {
            Some(d) => Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                d.to_string(),
            ),
            None => reference.clone(),
        };
        if let Some(p) = self.cached(&target) {
            return Ok(p);
        }
        let key = target.whole();
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _one = gate.lock().await;
            self.pull_now(reference, &target, credentials).await
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&gate) == 2 {
            inflight.remove(&key);
        }
        result
    }

    /// The image a digest reference names, when the cache has it.
    fn cached(&self, target: &Reference) -> Option<Pulled> {
        let d = target.digest()?;
        let bytes = self.cache.image(d)?;
        Some(Pulled {
            digest: d.to_string(),
            bytes,
        })
    }

    async fn pull_now(
        &self,
        reference: &Reference,
        target: &Reference,
        credentials: Option<&str>,
    ) -> Result<Pulled, ImageError> {
        // Another task's pull may have filled the cache while this one
        // waited.
        if let Some(p) = self.cached(target) {
            return Ok(p);
        }
        let whole = target.whole();
        let fail = |kind, detail: String| ImageError {
            reference: whole.clone(),
            kind,
            detail,
        };
        let auth = self.auth(reference, credentials).await?;
        let client = self.client(&auth);
        let (raw, digest) = client
            .pull_manifest_raw(target, &auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.err(target, e))?;
        let manifest: OciManifest = serde_json::from_slice(&raw).map_err(|e| {
            fail(
                ImageErrorKind::NotWasm,
                format!("its manifest cannot be read: {e}"),
            )
        })?;
        let OciManifest::Image(manifest) = manifest else {
            return Err(fail(
                ImageErrorKind::NotWasm,
                "it is an image index (several platforms); a wasm artifact is one manifest with one wasm layer".into(),
            ));
        };
        let layer = wasm_layer(&manifest).map_err(|d| fail(ImageErrorKind::NotWasm, d))?;
        let max = self.config.max_image_bytes;
        if layer.size < 0 || layer.size as u64 > max {
            return Err(fail(
                ImageErrorKind::TooLarge,
                format!(
                    "its wasm layer is {} bytes; this node pulls at most {max} (--max-image-mib)",
                    layer.size
                ),
            ));
        }
        let bytes = match self.cache.layer(&layer.digest) {
            Some(b) => b,
            None => {
                let mut out = Bounded {
                    buf: Vec::with_capacity(layer.size as usize),
                    max: max as usize,
                };
                client
                    .pull_blob(target, &layer, &mut out)
                    .await
                    .map_err(|e| match e {
                        OciDistributionError::IoError(io)
                            if io.kind() == std::io::ErrorKind::FileTooLarge =>
                        {
                            fail(
                                ImageErrorKind::TooLarge,
                                format!(
                                    "the registry sent more than {max} bytes (--max-image-mib)"
                                ),
                            )
                        }
                        e => self.err(target, e),
                    })?;
                self.pulls.fetch_add(1, Ordering::Relaxed);
                self.cache
                    .put_layer(&layer.digest, &out.buf)
                    .map_err(|e| fail(ImageErrorKind::Registry, format!("caching it: {e}")))?;
                out.buf
            }
        };
        self.cache
            .put_manifest(&digest, &layer.digest)
            .map_err(|e| fail(ImageErrorKind::Registry, format!("caching it: {e}")))?;
        self.cache.evict();
        Ok(Pulled { digest, bytes })
    }

    /// The credentials for `reference` (see [`Credentials::for_registry`]),
    /// found off the async threads: a credential helper may take a while.
    async fn auth(
        &self,
        reference: &Reference,
        parameter: Option<&str>,
    ) -> Result<RegistryAuth, ImageError> {
        let credentials = self.config.credentials.clone();
        let (r, p) = (reference.clone(), parameter.map(str::to_string));
        tokio::task::spawn_blocking(move || credentials.for_registry(&r, p.as_deref()))
            .await
            .unwrap_or_else(|e| {
                Err(ImageError {
                    reference: reference.whole(),
                    kind: ImageErrorKind::Credentials,
                    detail: format!("looking up the credentials failed: {e}"),
                })
            })
    }

    /// Pushes `wasm` to `reference` as a CNCF wasm artifact; returns the
    /// manifest's digest. `config` is the artifact's config document.
    pub async fn push(
        &self,
        reference: &Reference,
        wasm: Vec<u8>,
        config: serde_json::Value,
    ) -> Result<String, ImageError> {
        let auth = self.auth(reference, None).await?;
        let client = self.client(&auth);
        let layer = ImageLayer::new(wasm, WASM_LAYER.to_string(), None);
        let config = Config::new(
            serde_json::to_vec(&config).unwrap_or_default(),
            WASM_CONFIG.to_string(),
            None,
        );
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.artifact_type = Some(WASM_CONFIG.to_string());
        client
            .push(reference, &[layer], config, &auth, Some(manifest))
            .await
            .map_err(|e| self.err(reference, e))?;
        // The digest of what the registry stored, in its own words.
        client
            .fetch_manifest_digest(reference, &auth)
            .await
            .map_err(|e| self.err(reference, e))
    }
}

/// Resolves the tags of `td`'s registry images now, at most
/// [`RESOLVE_TIMEOUT`] in all: container name to manifest digest. An image
/// that cannot be resolved is left out (and logged): its tasks pull by tag
/// and stop with the registry's words when that fails too. Blocks: call it
/// off the async threads.
pub fn resolve_definition(
    registry: &Registry,
    td: &crate::model::taskdef::TaskDefinition,
) -> std::collections::BTreeMap<String, String> {
    if !td
        .containers
        .iter()
        .any(|c| crate::model::image::is_reference(&c.image))
    {
        return Default::default();
    }
    let work = async {
        let mut out = std::collections::BTreeMap::new();
        for c in &td.containers {
            let Ok(crate::model::image::ImageSource::Oci(r)) =
                crate::model::image::ImageSource::parse(&c.image)
            else {
                continue;
            };
            match registry
                .resolve(&r, c.repository_credentials.as_deref())
                .await
            {
                Ok(d) => {
                    out.insert(c.name.clone(), d);
                }
                Err(e) => tracing::warn!("container {}: {e}", c.name),
            }
        }
        out
    };
    let bounded = async {
        tokio::time::timeout(RESOLVE_TIMEOUT, work)
            .await
            .unwrap_or_default()
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(bounded),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(bounded))
            .unwrap_or_default(),
    }
}

/// How long a deployment waits for its tags to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one wasm layer of a manifest, or why it is not a wasm artifact.
fn wasm_layer(manifest: &OciImageManifest) -> Result<OciDescriptor, String> {
    let types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    match manifest.layers.as_slice() {
        [l] if l.media_type == WASM_LAYER || l.media_type == WASM_LAYER_V1 => Ok(l.clone()),
        _ => Err(format!(
            "a wasm artifact has one layer of type {WASM_LAYER} (or {WASM_LAYER_V1}); this one has config {} and layers {types:?} (push a module with `skiff push FILE REF`)",
            manifest.config.media_type
        )),
    }
}

/// The registry's failure, in an operator's words.
fn classify(reference: String, e: OciDistributionError, insecure: &[String]) -> ImageError {
    use ImageErrorKind::*;
    let (kind, detail) = match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => (
            Unauthorized,
            "the registry refused the credentials (give credentials: repositoryCredentials, or a login in the docker config.json)".to_string(),
        ),
        OciDistributionError::ImageManifestNotFoundError(m) => (NotFound, m.clone()),
        OciDistributionError::RegistryError { envelope, .. } => {
            let first = envelope.errors.first();
            let words = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let kind = match first.map(|e| &e.code) {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::BlobUnknown,
                ) => NotFound,
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => Unauthorized,
                Some(OciErrorCode::DigestInvalid) => DigestMismatch,
                _ => Registry,
            };
            (kind, format!("the registry says {words}"))
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let kind = match code {
                404 => NotFound,
                401 | 403 => Unauthorized,
                _ => Registry,
            };
            // Registries put their words in an OCI error envelope.
            let words = serde_json::from_str::<oci_client::errors::OciEnvelope>(message)
                .map(|env| {
                    env.errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|_| message.trim().chars().take(200).collect());
            let mut detail = format!("the registry answered {code}: {words}");
            if kind == Unauthorized {
                detail.push_str(" (give credentials: repositoryCredentials, or a login in the docker config.json)");
            }
            (kind, detail)
        }
        OciDistributionError::DigestError(d) => (DigestMismatch, d.to_string()),
        OciDistributionError::IncompatibleLayerMediaTypeError(t) => {
            (NotWasm, format!("a layer of type {t}"))
        }
        OciDistributionError::RequestError(r) => {
            let registry = reference.split('/').next().unwrap_or_default().to_string();
            let mut words = format!("cannot reach the registry: {}", crate::logging::error_chain(r));
            if !insecure.contains(&registry) {
                words.push_str(&format!(
                    " (if {registry} serves plain HTTP, pass --insecure-registry {registry})"
                ));
            }
            (Registry, words)
        }
        other => (Registry, other.to_string()),
    };
    ImageError {
        reference,
        kind,
        detail,
    }
}

/// A writer that refuses to grow past `max` bytes.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.max {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "the layer is larger than the bound",
            )));
        }
        self.buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Why bytes cannot be pushed as a wasm artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Not a WebAssembly module or component.
    #[error("{0}")]
    NotWasm(skiff_runtime::LoadError),
    /// A component whose sections do not parse.
    #[error("it is not a valid component: {0}")]
    BadComponent(String),
}

/// The config document of a wasm artifact for `wasm` (CNCF layout): its
/// OS (`wasip1` for a module, `wasip2` for a component) and, for a
/// component, the interfaces of its world.
pub fn artifact_config(wasm: &[u8]) -> Result<serde_json::Value, ArtifactError> {
    let is_component = skiff_runtime::binary_kind(wasm).map_err(ArtifactError::NotWasm)?;
    let digest = format!("sha256:{}", crate::model::sha256_hex(wasm));
    let created = rfc3339(std::time::SystemTime::now());
    if !is_component {
        return Ok(serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [digest],
        }));
    }
    let (imports, exports) = world(wasm)?;
    Ok(serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest],
        "component": {"imports": imports, "exports": exports, "target": null},
    }))
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-01T19:50:10Z`).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::model::rfc3339(secs as f64)
}

/// A component's imported and exported interface names.
fn world(wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), ArtifactError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        use wasmparser::Payload::*;
        match payload.map_err(|e| ArtifactError::BadComponent(e.to_string()))? {
            ModuleSection { .. } | ComponentSection { .. } => depth += 1,
            End(_) => depth = depth.saturating_sub(1),
            ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    let i = i.map_err(|e| ArtifactError::BadComponent(e.to_string()))?;
                    imports.push(i.name.name.to_string());
                }
            }
            ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    let e = e.map_err(|e| ArtifactError::BadComponent(e.to_string()))?;
                    exports.push(e.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_failures_are_named() {
        let e = classify(
            "r.io/a:v1".into(),
            OciDistributionError::ServerError {
                code: 404,
                url: "u".into(),
                message: "no".into(),
            },
            &[],
        );
        assert_eq!(e.kind, ImageErrorKind::NotFound);
        assert!(e.to_string().starts_with("r.io/a:v1: not found"), "{e}");
        let e = classify(
            "r.io/a:v1".into(),
            OciDistributionError::UnauthorizedError { url: "u".into() },
            &[],
        );
        assert_eq!(e.kind, ImageErrorKind::Unauthorized);
    }

    #[test]
    fn only_one_wasm_layer_is_an_artifact() {
        let layer = |t: &str| OciDescriptor {
            media_type: t.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 8,
            ..Default::default()
        };
        let mut m = OciImageManifest {
            layers: vec![layer(WASM_LAYER)],
            ..Default::default()
        };
        assert!(wasm_layer(&m).is_ok());
        m.layers = vec![layer(WASM_LAYER_V1)];
        assert!(wasm_layer(&m).is_ok());
        m.layers = vec![layer("application/vnd.oci.image.layer.v1.tar+gzip")];
        let e = wasm_layer(&m).unwrap_err();
        assert!(e.contains("tar+gzip"), "{e}");
        m.layers = vec![layer(WASM_LAYER), layer(WASM_LAYER)];
        assert!(wasm_layer(&m).is_err());
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(1_796_154_610)), "2026-12-01T19:50:10Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn artifact_config_says_module_or_component() {
        let module = wat::parse_str("(module)").unwrap();
        let c = artifact_config(&module).unwrap();
        assert_eq!(c["os"], "wasip1");
        assert_eq!(c["architecture"], "wasm");
        let component = wat::parse_str(
            r#"(component (import "wasi:cli/environment@0.2.0" (instance)) (core module $m) (export "x" (core module $m)))"#,
        )
        .unwrap();
        let c = artifact_config(&component).unwrap();
        assert_eq!(c["os"], "wasip2");
        assert_eq!(c["component"]["imports"][0], "wasi:cli/environment@0.2.0");
        assert_eq!(c["component"]["exports"][0], "x");
        assert!(matches!(
            artifact_config(b"nope"),
            Err(ArtifactError::NotWasm(_))
        ));
    }
}
