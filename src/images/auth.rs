//! Registry credentials: a container's `repositoryCredentials` (a secret
//! file the server was given), else the server's docker `config.json`,
//! else none.

use std::path::PathBuf;

use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::{ImageError, ImageErrorKind};

/// Where a node finds registry credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `--registry-secrets DIR`: `repositoryCredentials.credentialsParameter`
    /// names a file here holding `{"username": ..., "password": ...}` (the
    /// shape of the Secrets Manager secret ECS reads).
    pub secrets_dir: Option<PathBuf>,
    /// A docker `config.json`: `auths` as `docker login` writes them, or
    /// credential helpers (`credHelpers`, `credsStore`).
    pub docker_config: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Secret {
    username: Option<String>,
    password: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    /// Registry host to credential helper (`docker-credential-NAME`).
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    /// The helper for registries `credHelpers` does not name.
    creds_store: Option<String>,
}

/// What a credential helper's `get` prints.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the credential helper `docker-credential-NAME` (found on PATH)
/// for the credentials of `server`, as docker does: `get`, the server on
/// its stdin, `{"Username", "Secret"}` on its stdout. A helper that knows
/// none says so ("credentials not found"): anonymous.
fn ask_helper(name: &str, server: &str) -> Result<RegistryAuth, String> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "the credential helper name {name:?} must be letters, digits, '-', '_' or '.'"
        ));
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("the credential helper {program} cannot run (is it on PATH?): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{server}");
    }
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the credential helper {program} did not answer within {HELPER_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("the credential helper {program}: {e}")),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        if out.contains("credentials not found") || err.contains("credentials not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(format!(
            "the credential helper {program} failed ({status}) for {server}: {}",
            format!("{} {}", out.trim(), err.trim()).trim()
        ));
    }
    let a: HelperAnswer = serde_json::from_str(&out).map_err(|e| {
        format!("the credential helper {program} answered what is not {{\"Username\", \"Secret\"}}: {e}")
    })?;
    if a.username == "<token>" {
        return Err(format!(
            "the credential helper {program} gave an identity token for {server}, which skiff does not exchange; log in with a username and password"
        ));
    }
    Ok(RegistryAuth::Basic(a.username, a.secret))
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// The docker config the server reads by default: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`.
    pub fn default_docker_config() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// The credentials for `reference`: from the secret `parameter` names
    /// when set (an error when it cannot be read), else from the docker
    /// config (its credential helper for the registry, else its `auths`),
    /// else anonymous. May run a credential helper: call it off the async
    /// threads.
    pub fn for_registry(
        &self,
        reference: &Reference,
        parameter: Option<&str>,
    ) -> Result<RegistryAuth, ImageError> {
        let fail = |detail: String| ImageError {
            reference: reference.whole(),
            kind: ImageErrorKind::Credentials,
            detail,
        };
        if let Some(p) = parameter {
            // A Secrets Manager ARN ends in `:secret:NAME`.
            let name = p.rsplit_once(":secret:").map_or(p, |(_, n)| n);
            if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\\')
            {
                return Err(fail(format!(
                    "repositoryCredentials.credentialsParameter {p:?} must name a file in the server's --registry-secrets directory"
                )));
            }
            let Some(dir) = &self.secrets_dir else {
                return Err(fail(format!(
                    "repositoryCredentials names the secret {name:?}, but the server was started without --registry-secrets DIR"
                )));
            };
            let path = dir.join(name);
            let text = std::fs::read(&path)
                .map_err(|e| fail(format!("the secret {} cannot be read: {e}", path.display())))?;
            let s: Secret = serde_json::from_slice(&text).map_err(|e| {
                fail(format!(
                    "the secret {} is not {{\"username\": ..., \"password\": ...}}: {e}",
                    path.display()
                ))
            })?;
            return match (s.username, s.password) {
                (Some(u), Some(p)) => Ok(RegistryAuth::Basic(u, p)),
                _ => Err(fail(format!(
                    "the secret {} needs both username and password",
                    path.display()
                ))),
            };
        }
        let Some(path) = &self.docker_config else {
            return Ok(RegistryAuth::Anonymous);
        };
        let Ok(text) = std::fs::read(path) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| {
            fail(format!(
                "the docker config {} cannot be read: {e}",
                path.display()
            ))
        })?;
        let registry = reference.resolve_registry();
        let names = |k: &str| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            host == registry || host == reference.registry()
        };
        // A helper first, as docker looks: the registry's own, else the
        // store for all.
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| names(k))
            .map(|(k, h)| (k.as_str(), h))
            .or(config.creds_store.as_ref().map(|h| (registry, h)));
        if let Some((server, name)) = helper {
            return ask_helper(name, server)
                .map_err(|e| fail(format!("{e} (the docker config {})", path.display())));
        }
        let entry = config.auths.iter().find(|(k, _)| names(k));
        let Some((_, a)) = entry else {
            return Ok(RegistryAuth::Anonymous);
        };
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
        }
        if let Some(encoded) = &a.auth {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                });
            return match decoded {
                Some((u, p)) => Ok(RegistryAuth::Basic(u, p)),
                None => Err(fail(format!(
                    "the docker config {}: auths.{registry}.auth is not base64 of USER:PASSWORD",
                    path.display()
                ))),
            };
        }
        Ok(RegistryAuth::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let r: Reference = "127.0.0.1:5000/app:v1".parse().unwrap();
        std::fs::write(
            dir.path().join("reg"),
            r#"{"username": "u", "password": "p"}"#,
        )
        .unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"auths": {"127.0.0.1:5000": {"auth": "ZDpx"}}}"#,
        )
        .unwrap();
        let c = Credentials {
            secrets_dir: Some(dir.path().to_path_buf()),
            docker_config: Some(docker),
        };
        let basic = |u: &str, p: &str| RegistryAuth::Basic(u.into(), p.into());
        assert_eq!(c.for_registry(&r, Some("reg")).unwrap(), basic("u", "p"));
        assert_eq!(
            c.for_registry(&r, Some("arn:aws:secretsmanager:us-east-1:1:secret:reg"))
                .unwrap(),
            basic("u", "p")
        );
        assert_eq!(c.for_registry(&r, None).unwrap(), basic("d", "q"));
        let other: Reference = "ghcr.io/a/b:v1".parse().unwrap();
        assert_eq!(
            c.for_registry(&other, None).unwrap(),
            RegistryAuth::Anonymous
        );
        let e = c.for_registry(&r, Some("../etc/passwd")).unwrap_err();
        assert_eq!(e.kind, ImageErrorKind::Credentials);
        let e = c.for_registry(&r, Some("missing")).unwrap_err();
        assert!(e.detail.contains("cannot be read"), "{e}");
    }
}
