//! TLS at the ingress: the certificates it holds, and the one it shows a
//! client by the name the client asks for (SNI).
//!
//! Certificates come from two places, each a set of `NAME.crt` (the PEM
//! chain, leaf first) and `NAME.key` (its PEM private key) files:
//! `--tls-cert-dir` (the operator's, read again when a file changes), and
//! the ACME certificates skiff issues itself ([`super::acme`], in the data
//! directory). A certificate serves every DNS name in its subject
//! alternative names, wildcards included; an operator's certificate wins
//! over an issued one for the same name. A client that sends no name (one
//! that connects to an IP address) is shown `default.crt` when there is
//! one; otherwise its handshake fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The file stem of the certificate shown to clients that name no host.
pub const DEFAULT_STEM: &str = "default";

/// One certificate and what it is good for.
#[derive(Clone)]
pub struct Cert {
    /// The chain and signing key rustls shows.
    pub key: Arc<CertifiedKey>,
    /// The DNS names it serves (lowercase; `*.` wildcards as written).
    pub names: Vec<String>,
    /// When it stops being valid.
    pub not_after: SystemTime,
    /// When it became valid.
    pub not_before: SystemTime,
    /// Its serial number, in hex (what a renewal changes).
    pub serial: String,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cert")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish()
    }
}

/// A certificate or key file that cannot be used: the file, and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct CertError {
    /// The file (`NAME.crt`, or its `NAME.key`).
    pub file: PathBuf,
    /// What is wrong, and what would be right.
    pub message: String,
}

fn cert_error(file: &Path, message: impl Into<String>) -> CertError {
    CertError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

impl Cert {
    /// Reads a PEM chain and key; the error names the file and says what
    /// is wrong.
    pub fn from_pem(chain: &[u8], key: &[u8], file: &Path) -> Result<Cert, CertError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| cert_error(file, format!("not a PEM certificate chain: {e}")))?;
        let leaf = certs.first().ok_or_else(|| {
            cert_error(
                file,
                "holds no certificate (expected PEM blocks BEGIN CERTIFICATE, leaf first)",
            )
        })?;
        let key_file = file.with_extension("key");
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            cert_error(
                &key_file,
                format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| cert_error(&key_file, format!("the key cannot sign: {e}")))?;
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let (names, not_before, not_after, serial) = {
            let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
                cert_error(file, format!("the first certificate cannot be read: {e}"))
            })?;
            let mut names = Vec::new();
            if let Ok(Some(san)) = x509.subject_alternative_name() {
                for n in &san.value.general_names {
                    if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                        names.push(d.to_ascii_lowercase());
                    }
                }
            }
            let validity = x509.validity();
            (
                names,
                at(validity.not_before.timestamp()),
                at(validity.not_after.timestamp()),
                x509.raw_serial_as_string(),
            )
        };
        let key = CertifiedKey::new(certs, signer);
        key.keys_match().map_err(|e| {
            cert_error(
                &key_file,
                format!(
                    "the key is not the certificate's ({e}); pair each NAME.crt with its own NAME.key"
                ),
            )
        })?;
        Ok(Cert {
            key: Arc::new(key),
            names,
            not_after,
            not_before,
            serial,
        })
    }

    /// Reads `NAME.crt` and `NAME.key`.
    pub fn load(crt: &Path) -> Result<Cert, CertError> {
        let chain = std::fs::read(crt).map_err(|e| cert_error(crt, e.to_string()))?;
        let key_file = crt.with_extension("key");
        let key = std::fs::read(&key_file).map_err(|e| {
            cert_error(
                &key_file,
                format!("{e} (each NAME.crt needs its key in NAME.key)"),
            )
        })?;
        Cert::from_pem(&chain, &key, crt)
    }

    /// Whether it serves `host` (a lowercase name).
    pub fn serves(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_matches(n, host))
    }
}

/// Whether certificate name `pattern` covers `host`: equal, or a `*.`
/// wildcard for exactly one label.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// Where a set of certificates came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `--tls-cert-dir`: the operator's, preferred.
    Operator,
    /// Issued through ACME.
    Acme,
}

/// The certificates the ingress holds, by source and file stem.
#[derive(Default)]
pub struct Certificates {
    sets: RwLock<HashMap<Source, HashMap<String, Cert>>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    /// Replaces the certificates of `source`.
    pub fn set(&self, source: Source, certs: HashMap<String, Cert>) {
        self.sets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, certs);
    }

    /// Adds or replaces one certificate.
    pub fn put(&self, source: Source, stem: &str, cert: Cert) {
        self.sets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(source)
            .or_default()
            .insert(stem.to_string(), cert);
    }

    /// Removes one certificate.
    pub fn remove(&self, source: Source, stem: &str) {
        if let Some(set) = self
            .sets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&source)
        {
            set.remove(stem);
        }
    }

    /// The certificate shown for `host` (lowercase), if any: an
    /// operator's before an issued one, an exact name before a wildcard,
    /// and of those the one valid longest.
    pub fn find(&self, host: &str) -> Option<Cert> {
        let sets = self.sets.read().unwrap_or_else(|p| p.into_inner());
        for source in [Source::Operator, Source::Acme] {
            let Some(set) = sets.get(&source) else {
                continue;
            };
            let best = |exact: bool| {
                set.values()
                    .filter(|c| {
                        c.names
                            .iter()
                            .any(|n| (n == host) == exact && name_matches(n, host))
                    })
                    .max_by_key(|c| c.not_after)
                    .cloned()
            };
            if let Some(c) = best(true).or_else(|| best(false)) {
                return Some(c);
            }
        }
        None
    }

    /// The certificate of `source` kept under file stem `stem`.
    pub fn get(&self, source: Source, stem: &str) -> Option<Cert> {
        let sets = self.sets.read().unwrap_or_else(|p| p.into_inner());
        sets.get(&source).and_then(|s| s.get(stem)).cloned()
    }

    /// Whether a certificate of `source` serves `host`.
    pub fn covers(&self, source: Source, host: &str) -> bool {
        let sets = self.sets.read().unwrap_or_else(|p| p.into_inner());
        sets.get(&source)
            .is_some_and(|s| s.values().any(|c| c.serves(host)))
    }

    /// The certificate for clients that name no host.
    fn default_cert(&self) -> Option<Cert> {
        self.get(Source::Operator, DEFAULT_STEM)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) => self.find(&name.to_ascii_lowercase()),
            None => self.default_cert(),
        }
        .map(|c| c.key)
    }
}

/// A TLS acceptor that shows `certs` and speaks HTTP/2 or HTTP/1.1 as the
/// client's ALPN asks.
pub fn acceptor(certs: Arc<Certificates>) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The `NAME.crt` files of a directory, with their modification times
/// (and their keys'), to tell when to read them again.
type Listing = Vec<(PathBuf, Option<SystemTime>, Option<SystemTime>)>;

fn listing(dir: &Path) -> std::io::Result<Listing> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let key = path.with_extension("key");
        files.push((path.clone(), mtime(&path), mtime(&key)));
    }
    files.sort();
    Ok(files)
}

/// Reads every `NAME.crt` + `NAME.key` pair of `dir`. Pairs that cannot be
/// read are left out, each with its error.
pub fn read_dir(dir: &Path) -> std::io::Result<(HashMap<String, Cert>, Vec<CertError>)> {
    let mut certs = HashMap::new();
    let mut errors = Vec::new();
    for (path, _, _) in listing(dir)? {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        match Cert::load(&path) {
            Ok(c) => {
                certs.insert(stem.to_string(), c);
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((certs, errors))
}

/// How often `--tls-cert-dir` is looked at for changed files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Loads the operator's certificates from `dir` now (an unreadable
/// directory is an error; an unreadable pair is logged and left out),
/// then reads them again whenever a file changes, until `stop`.
pub fn watch_dir(
    dir: PathBuf,
    certs: Arc<Certificates>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<std::thread::JoinHandle<()>, super::FollowError> {
    let unreadable = |dir: &Path, source| super::FollowError::Dir {
        doing: "--tls-cert-dir",
        path: dir.to_path_buf(),
        source,
    };
    let load = move |dir: &Path| -> Result<(), super::FollowError> {
        let (set, errors) = read_dir(dir).map_err(|e| unreadable(dir, e))?;
        for e in errors {
            tracing::error!("certificate left out: {e}");
        }
        tracing::info!(
            "{} certificate(s) from {}: {}",
            set.len(),
            dir.display(),
            set.values()
                .flat_map(|c| c.names.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        certs.set(Source::Operator, set);
        Ok(())
    };
    load(&dir)?;
    let mut seen = listing(&dir).map_err(|e| unreadable(&dir, e))?;
    crate::threads::spawn("skiff-tls-certs", move || async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            match listing(&dir) {
                Ok(now) if now != seen => {
                    seen = now;
                    if let Err(e) = load(&dir) {
                        tracing::error!("{e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!("--tls-cert-dir {}: {e}", dir.display()),
            }
        }
    })
    .map_err(|source| super::FollowError::Thread {
        what: "certificate watch".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(name_matches("a.example.com", "a.example.com"));
        assert!(!name_matches("a.example.com", "b.example.com"));
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_directory_serves_each_name_by_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ak) = self_signed(&["a.example.com"]);
        let (w, wk) = self_signed(&["*.example.com"]);
        std::fs::write(dir.path().join("a.crt"), a).unwrap();
        std::fs::write(dir.path().join("a.key"), ak).unwrap();
        std::fs::write(dir.path().join("w.crt"), w).unwrap();
        std::fs::write(dir.path().join("w.key"), &wk).unwrap();
        // A certificate with another's key is refused by name.
        let (b, _) = self_signed(&["b.example.com"]);
        std::fs::write(dir.path().join("b.crt"), b).unwrap();
        std::fs::write(dir.path().join("b.key"), &wk).unwrap();
        let (set, errors) = read_dir(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, dir.path().join("b.key"));
        assert!(
            errors[0].message.contains("not the certificate's"),
            "{}",
            errors[0]
        );
        let certs = Certificates::default();
        certs.set(Source::Operator, set);
        assert_eq!(
            certs.find("a.example.com").unwrap().names,
            ["a.example.com"]
        );
        assert_eq!(
            certs.find("c.example.com").unwrap().names,
            ["*.example.com"]
        );
        assert!(certs.find("example.com").is_none());
        // An operator's certificate wins over an issued one.
        let (i, ik) = self_signed(&["c.example.com"]);
        let issued = Cert::from_pem(i.as_bytes(), ik.as_bytes(), Path::new("c.crt")).unwrap();
        certs.put(Source::Acme, "c", issued);
        assert_eq!(
            certs.find("c.example.com").unwrap().names,
            ["*.example.com"]
        );
    }
}
