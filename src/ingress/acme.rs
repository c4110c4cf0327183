//! Certificates issued and renewed through ACME (RFC 8555), for the
//! custom domains services claim.
//!
//! With `--acme-directory URL`, a node orders a certificate for every
//! claimed name (not wildcards: those need DNS-01, which skiff does not
//! answer) that no operator certificate (`--tls-cert-dir`) covers and
//! that has no issued certificate yet, or whose certificate is due:
//! renewed once less than a third of its lifetime is left, as Let's
//! Encrypt advises. Challenges are HTTP-01, answered by the plain
//! ingress at `/.well-known/acme-challenge/TOKEN`. The account and the
//! certificates live in `DATA_DIR/acme/` (`account.json`, `certs/NAME.crt`
//! and `NAME.key`), so a restart issues nothing it already has. A failed
//! order is tried again after a back-off (30 s, doubling to 1 h).
//!
//! Each node orders for itself: on several nodes the CA's HTTP-01 request
//! must reach the node that ordered (a name's DNS pointing at one node),
//! or the nodes share a `--tls-cert-dir` instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::domains::Domains;
use super::tls::{Cert, Certificates, Source};

/// The path prefix of HTTP-01 challenges.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// How often the claimed names are compared with the certificates held.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The first wait after a failed order, doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The longest one order may take, challenges and issuance included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// How a node reaches its ACME CA.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// The account's contact address, when given.
    pub email: Option<String>,
    /// A PEM root to trust for the CA's own HTTPS (a test CA's), instead
    /// of the system's roots.
    pub ca_root: Option<PathBuf>,
    /// `DATA_DIR/acme`.
    pub dir: PathBuf,
}

/// The HTTP-01 answers this node gives now: token to key authorization.
#[derive(Default)]
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The answer for a request path, when it asks for a pending token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: &str, answer: Option<String>) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Some(a) => t.insert(token.to_string(), a),
            None => t.remove(token),
        };
    }
}

/// Whether a certificate should be renewed now: less than a third of its
/// lifetime is left.
pub fn due(cert: &Cert, now: SystemTime) -> bool {
    let life = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    match cert.not_after.duration_since(now) {
        Ok(left) => left < life / 3,
        Err(_) => true,
    }
}

/// The account, as kept in `account.json`: the directory it belongs to,
/// so that pointing a node at another CA makes a new one.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Loads the certificates issued before (into `certs`), then keeps every
/// claimed name certified, on a thread of its own, until `stop`.
pub fn spawn(
    config: AcmeConfig,
    domains: Arc<Domains>,
    certs: Arc<Certificates>,
    challenges: Arc<Challenges>,
    metrics: Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, String> {
    let cert_dir = config.dir.join("certs");
    std::fs::create_dir_all(&cert_dir)
        .map_err(|e| format!("cannot make {}: {e}", cert_dir.display()))?;
    let (issued, errors) = super::tls::read_dir(&cert_dir)
        .map_err(|e| format!("cannot read {}: {e}", cert_dir.display()))?;
    for e in errors {
        tracing::error!("issued certificate left out (it will be ordered again): {e}");
    }
    certs.set(Source::Acme, issued);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the ACME thread: {e}"))?;
    std::thread::Builder::new()
        .name("skiff-acme".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut m = Manager {
                    config,
                    cert_dir,
                    domains,
                    certs,
                    challenges,
                    metrics,
                    account: None,
                    backoff: HashMap::new(),
                };
                m.run(stop).await
            })
        })
        .map_err(|e| format!("cannot start the ACME thread: {e}"))
}

struct Manager {
    config: AcmeConfig,
    cert_dir: PathBuf,
    domains: Arc<Domains>,
    certs: Arc<Certificates>,
    challenges: Arc<Challenges>,
    metrics: Arc<crate::metrics::Metrics>,
    account: Option<Account>,
    /// Names whose last order failed: when to try again, and the wait
    /// after that.
    backoff: HashMap<String, (Instant, Duration)>,
}

impl Manager {
    async fn run(&mut self, stop: CancellationToken) {
        loop {
            for name in self.wanted() {
                let order = tokio::time::timeout(ORDER_TIMEOUT, self.order(&name));
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = order => r.unwrap_or_else(|_| Err(format!("no certificate within {}s", ORDER_TIMEOUT.as_secs()))),
                };
                match result {
                    Ok(cert) => {
                        tracing::info!(
                            "certificate for {name} issued by {} (serial {}, valid until {})",
                            self.config.directory,
                            cert.serial,
                            httpdate(cert.not_after)
                        );
                        self.metrics.acme_order("issued");
                        self.backoff.remove(&name);
                        self.certs.put(Source::Acme, &name, cert);
                    }
                    Err(why) => {
                        self.metrics.acme_order("failed");
                        let wait = self
                            .backoff
                            .get(&name)
                            .map(|(_, w)| (*w * 2).min(MAX_BACKOFF))
                            .unwrap_or(FIRST_BACKOFF);
                        tracing::error!(
                            "no certificate for {name} from {}: {why}; trying again in {}s",
                            self.config.directory,
                            wait.as_secs()
                        );
                        self.backoff.insert(name, (Instant::now() + wait, wait));
                    }
                }
            }
            self.metrics.acme_check(&self.config.directory);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    /// The claimed names that need a certificate ordered now.
    fn wanted(&self) -> Vec<String> {
        let now = SystemTime::now();
        self.domains
            .names()
            .into_iter()
            .filter(|n| !n.starts_with("*."))
            .filter(|n| {
                self.backoff
                    .get(n)
                    .is_none_or(|(at, _)| Instant::now() >= *at)
            })
            // An operator's certificate is theirs to renew.
            .filter(|n| !self.certs.covers(Source::Operator, n))
            .filter(|n| self.certs.get(Source::Acme, n).is_none_or(|c| due(&c, now)))
            .collect()
    }

    async fn account(&mut self) -> Result<Account, String> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let builder = || match &self.config.ca_root {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| format!("--acme-ca-root {}: {e}", root.display())),
            None => Account::builder().map_err(|e| format!("cannot make an HTTPS client: {e}")),
        };
        let file = self.config.dir.join("account.json");
        let stored = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<StoredAccount>(&b).ok())
            .filter(|s| s.directory == self.config.directory);
        let account = match stored {
            Some(s) => builder()?
                .from_credentials(s.credentials)
                .await
                .map_err(|e| format!("the stored ACME account cannot be used: {e}"))?,
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("cannot create an ACME account: {e}"))?;
                let stored = StoredAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                write_private(
                    &file,
                    &serde_json::to_vec_pretty(&stored).unwrap_or_default(),
                )?;
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// Orders, proves and fetches one name's certificate, and stores it.
    async fn order(&mut self, name: &str) -> Result<Cert, String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("the CA refused the order: {e}"))?;
        let mut tokens = Vec::new();
        let proved = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| format!("cannot read an authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    s => return Err(format!("the authorization is {s:?}")),
                }
                let mut challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or("the CA offers no HTTP-01 challenge")?;
                let token = challenge.token.clone();
                self.challenges.set(
                    &token,
                    Some(challenge.key_authorization().as_str().to_string()),
                );
                tokens.push(token);
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| format!("cannot answer the challenge: {e}"))?;
            }
            Ok::<_, String>(())
        }
        .await;
        let ready = match proved {
            Ok(()) => order
                .poll_ready(&RetryPolicy::default())
                .await
                .map_err(|e| format!("the order did not become ready: {e}")),
            Err(e) => Err(e),
        };
        for t in &tokens {
            self.challenges.set(t, None);
        }
        match ready? {
            OrderStatus::Ready => {}
            s => {
                return Err(format!(
                    "the order is {s:?}: the CA could not fetch http://{name}{CHALLENGE_PATH}TOKEN from this node's plain ingress on port 80 (or the port the CA is set to use)"
                ))
            }
        }
        let key = order
            .finalize()
            .await
            .map_err(|e| format!("cannot finalize the order: {e}"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(|e| format!("no certificate came: {e}"))?;
        let crt = self.cert_dir.join(format!("{name}.crt"));
        let cert = Cert::from_pem(chain.as_bytes(), key.as_bytes(), &crt)?;
        write_private(&crt.with_extension("key"), key.as_bytes())?;
        write_private(&crt, chain.as_bytes())?;
        Ok(cert)
    }
}

/// Writes a file whole (a temporary file renamed over it), readable by
/// its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A time as HTTP dates are written, for log lines.
fn httpdate(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = crate::auth::sigv4::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let c = rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).unwrap();
        let mut cert = Cert::from_pem(
            c.cert.pem().as_bytes(),
            c.signing_key.serialize_pem().as_bytes(),
            Path::new("a.crt"),
        )
        .unwrap();
        let day = Duration::from_secs(86_400);
        cert.not_before = SystemTime::UNIX_EPOCH + 1000 * day;
        cert.not_after = cert.not_before + 90 * day;
        assert!(!due(&cert, cert.not_before + 59 * day));
        assert!(due(&cert, cert.not_before + 61 * day));
        assert!(due(&cert, cert.not_after + day));
    }

    #[test]
    fn challenges_answer_only_their_tokens() {
        let c = Challenges::default();
        c.set("tok", Some("tok.thumb".into()));
        assert_eq!(
            c.answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.answer("/tok"), None);
        c.set("tok", None);
        assert_eq!(c.answer("/.well-known/acme-challenge/tok"), None);
    }
}
