//! `skiff push FILE REF`: push a wasm module or component to an OCI
//! registry as a CNCF wasm artifact; and the registry options the server,
//! `exec` and `push` share.

use std::path::PathBuf;

use crate::images::{Credentials, Registry, RegistryConfig};

/// How this process reaches registries.
#[derive(clap::Args, Clone, Debug)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) spoken to over plain HTTP instead of HTTPS
    /// (repeatable). Only for registries on a trusted network.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// A docker config.json with registry logins (`auths`, as `docker
    /// login` writes it). Default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// A directory of registry secrets: a container's
    /// repositoryCredentials.credentialsParameter names a file here holding
    /// {"username": ..., "password": ...}.
    #[arg(long, value_name = "DIR")]
    pub registry_secrets: Option<PathBuf>,
    /// The largest wasm layer pulled from a registry, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_mib: u64,
    /// The bound on pulled images and compiled code kept on disk together,
    /// in MiB (least recently used go first).
    #[arg(long, value_name = "MIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..))]
    pub image_cache_mib: u64,
}

impl RegistryArgs {
    /// A registry client keeping its cache in `cache_dir`, counting the
    /// compiled code in `compiled_dir` in its bound.
    pub fn registry(&self, cache_dir: PathBuf, compiled_dir: Option<PathBuf>) -> Registry {
        Registry::new(RegistryConfig {
            insecure: self.insecure_registry.clone(),
            credentials: Credentials {
                secrets_dir: self.registry_secrets.clone(),
                docker_config: self
                    .docker_config
                    .clone()
                    .or_else(Credentials::default_docker_config),
            },
            max_image_bytes: self.max_image_mib << 20,
            cache_dir,
            compiled_dir,
            cache_bytes: self.image_cache_mib << 20,
        })
    }
}

/// Push a wasm file to a registry.
#[derive(clap::Args)]
pub struct Push {
    /// The .wasm file: a WASI module or component.
    pub file: PathBuf,
    /// Where to: REGISTRY/REPOSITORY:TAG.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl Push {
    /// Pushes; prints the reference with its digest. Returns the exit code.
    pub fn execute(self) -> i32 {
        super::run_async(self.run())
    }

    async fn run(self) -> Result<(), String> {
        let reference = match crate::model::image::ImageSource::parse(&self.reference).map_err(|e| e.to_string())? {
            crate::model::image::ImageSource::Oci(r) => r,
            crate::model::image::ImageSource::File(_) => {
                return Err(format!(
                    "{:?} is not a registry reference: write REGISTRY/REPOSITORY:TAG (say, 127.0.0.1:5000/hello:v1)",
                    self.reference
                ))
            }
        };
        if reference.digest().is_some() {
            return Err(format!(
                "push to a tag, not a digest: {} (the digest is the registry's to say)",
                self.reference
            ));
        }
        let wasm =
            std::fs::read(&self.file).map_err(|e| format!("{}: {e}", self.file.display()))?;
        let config = crate::images::artifact_config(&wasm)
            .map_err(|e| format!("{}: {e}", self.file.display()))?;
        let scratch = std::env::temp_dir().join("skiff-push");
        let registry = self.registry.registry(scratch, None);
        let digest = registry
            .push(&reference, wasm, config)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{}/{}@{digest}",
            reference.registry(),
            reference.repository()
        );
        Ok(())
    }
}
