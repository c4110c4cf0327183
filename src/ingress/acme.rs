//! Certificates issued and renewed through ACME (RFC 8555), for the
//! custom domains services claim.
//!
//! With `--acme-directory URL`, a node orders a certificate for every
//! claimed name (not wildcards: those need DNS-01, which skiff does not
//! answer) that no operator certificate (`--tls-cert-dir`) covers and
//! that has no issued certificate yet, or whose certificate is due:
//! renewed once less than a third of its lifetime is left, as Let's
//! Encrypt advises. Challenges are HTTP-01, answered by the plain
//! ingress at `/.well-known/acme-challenge/TOKEN`. A failed order is
//! tried again after a back-off (30 s, doubling to 1 h).
//!
//! The nodes share the work through the store: one node orders a name at
//! a time (it claims `acme/orders/NAME` for the order's length); its
//! HTTP-01 answers are in the store (`acme/challenges/TOKEN`), so that any
//! node the CA's request reaches answers it; and the certificate it gets
//! is stored (`acme/certs/NAME`), so that every node serves it (each
//! follows that prefix, with or without `--acme-directory`; so does
//! every node answer challenges). A node also keeps a copy of what it was
//! issued in `DATA_DIR/acme/certs/` (`NAME.crt` and `NAME.key`, its
//! owner's only), and at its start stores those the store does not have
//! yet. Each node keeps its own ACME account
//! (`DATA_DIR/acme/account.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::store::{Condition, Record, Store, StoreError, Write};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::domains::Domains;
use super::tls::{Cert, Certificates, Source};
use super::FollowError;

/// The path prefix of HTTP-01 challenges.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

use crate::model::acme::{cert_key, challenge_key, order_key, CertRecord, OrderClaim};
pub use crate::model::acme::{CERTS, CHALLENGES, ORDERS};

/// How many reads of other nodes' challenge answers one node makes at
/// once; a request past that is answered 404 (a flood of made-up tokens
/// cannot turn into a flood of store reads).
const CHALLENGE_READS: usize = 4;

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

/// The HTTP-01 answers this node gives: its own orders' (token to key
/// authorization), and any node's from the store.
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
    store: Option<Arc<dyn Store>>,
    reads: tokio::sync::Semaphore,
}

impl Default for Challenges {
    fn default() -> Self {
        Challenges {
            tokens: Mutex::default(),
            store: None,
            reads: tokio::sync::Semaphore::new(CHALLENGE_READS),
        }
    }
}

impl Challenges {
    /// Answers for this node's orders and, from `store`, every node's.
    pub fn new(store: Arc<dyn Store>) -> Challenges {
        Challenges {
            store: Some(store),
            ..Default::default()
        }
    }

    /// The answer for a request path, when it asks for a pending token.
    pub async fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        if let Some(a) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return Some(a.clone());
        }
        // Another node's order: its answer is in the store.
        let store = self.store.clone()?;
        let shaped = (16..=128).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !shaped {
            return None;
        }
        let _read = self.reads.try_acquire().ok()?;
        let key = challenge_key(token);
        let record = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .ok()?
            .ok()??;
        String::from_utf8(record.value).ok()
    }

    fn set(&self, token: &str, answer: Option<String>) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Some(a) => t.insert(token.to_string(), a),
            None => t.remove(token),
        };
    }
}

/// The stored certificate of `name` (its store key under [`CERTS`]), read.
fn stored_cert(r: &Record) -> Option<(String, Cert)> {
    let name = r.key.strip_prefix(CERTS)?.to_string();
    let parsed = CertRecord::decode(&r.value)
        .map_err(|e| format!("{}: {e}", r.key))
        .and_then(|c| {
            Cert::from_pem(c.chain.as_bytes(), c.key.as_bytes(), Path::new(&r.key))
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(cert) => Some((name, cert)),
        Err(e) => {
            tracing::error!("a stored certificate is left out (it will be ordered again): {e}");
            None
        }
    }
}

/// The certificates any node was issued, copied from the store into the
/// ingress's (see [`super::domains::follow`]).
struct Issued(Arc<Certificates>);

impl super::domains::Mirror for Issued {
    fn prefix(&self) -> &'static str {
        CERTS
    }

    fn reset(&self, records: &[Record]) {
        self.0.set(
            Source::Acme,
            records.iter().filter_map(stored_cert).collect(),
        );
    }

    fn apply(&self, key: &str, record: Option<&Record>) {
        match record {
            Some(r) => {
                if let Some((name, cert)) = stored_cert(r) {
                    self.0.put(Source::Acme, &name, cert);
                }
            }
            None => {
                if let Some(name) = key.strip_prefix(CERTS) {
                    self.0.remove(Source::Acme, name);
                }
            }
        }
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

/// Loads the certificates any node was issued into `certs` now, then
/// follows them in the store until `stop` (every node does, with or
/// without `--acme-directory`).
pub fn follow_issued(
    store: Arc<dyn Store>,
    certs: Arc<Certificates>,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, FollowError> {
    super::domains::follow(store, Arc::new(Issued(certs)), stop)
}

/// What an ACME manager works with.
pub struct Shared {
    /// Where the nodes share orders, answers and certificates.
    pub store: Arc<dyn Store>,
    /// This node's id (in its claims of names).
    pub node: String,
    /// This node's lease: its claims end with it, so that the names a
    /// node was ordering are free as soon as the node is gone.
    pub lease: crate::store::NodeLease,
    /// The names services claim.
    pub domains: Arc<Domains>,
    /// The ingress's certificates.
    pub certs: Arc<Certificates>,
    /// This node's HTTP-01 answers.
    pub challenges: Arc<Challenges>,
    /// Orders and checks are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Stores the certificates this node was issued before that the store has
/// not got (every node's come through [`follow_issued`]), then keeps
/// every claimed name certified, on a thread of its own, until `stop`.
pub fn spawn(
    config: AcmeConfig,
    shared: Shared,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, FollowError> {
    let cert_dir = config.dir.join("certs");
    let dir = |doing, source| FollowError::Dir {
        doing,
        path: cert_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&cert_dir).map_err(|e| dir("cannot make", e))?;
    let (issued, errors) = super::tls::read_dir(&cert_dir).map_err(|e| dir("cannot read", e))?;
    for e in errors {
        tracing::error!("issued certificate left out (it will be ordered again): {e}");
    }
    for name in issued.keys() {
        let crt = cert_dir.join(format!("{name}.crt"));
        let (Ok(chain), Ok(key)) = (
            std::fs::read_to_string(&crt),
            std::fs::read_to_string(crt.with_extension("key")),
        ) else {
            continue;
        };
        let value = CertRecord { chain, key }.encode();
        let k = cert_key(name);
        match shared
            .store
            .commit(&[Condition::Absent(k.clone())], &[Write::Put(k, value)])
        {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(source) => {
                return Err(FollowError::Store {
                    name: name.clone(),
                    source,
                })
            }
        }
    }
    let thread = |source| FollowError::Thread {
        what: "ACME thread".into(),
        source,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(thread)?;
    std::thread::Builder::new()
        .name("skiff-acme".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut m = Manager {
                    config,
                    cert_dir,
                    shared,
                    account: None,
                    backoff: HashMap::new(),
                };
                m.run(stop).await
            })
        })
        .map_err(thread)
}

struct Manager {
    config: AcmeConfig,
    cert_dir: PathBuf,
    shared: Shared,
    account: Option<Account>,
    /// Names whose last order failed: when to try again, and the wait
    /// after that.
    backoff: HashMap<String, (Instant, Duration)>,
}

impl Manager {
    async fn run(&mut self, stop: CancellationToken) {
        loop {
            for name in self.wanted() {
                // Another node orders it: its certificate comes through
                // the store.
                match self.claim(&name) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!("cannot claim {name} to order its certificate: {e}");
                        continue;
                    }
                }
                let order = tokio::time::timeout(ORDER_TIMEOUT, self.order(&name));
                let result = tokio::select! {
                    _ = stop.cancelled() => {
                        self.release(&name);
                        return;
                    }
                    r = order => r.unwrap_or_else(|_| Err(format!("no certificate within {}s", ORDER_TIMEOUT.as_secs()))),
                };
                self.release(&name);
                match result {
                    Ok(cert) => {
                        tracing::info!(
                            "certificate for {name} issued by {} (serial {}, valid until {})",
                            self.config.directory,
                            cert.serial,
                            httpdate(cert.not_after)
                        );
                        self.shared.metrics.acme_order("issued");
                        self.backoff.remove(&name);
                        self.shared.certs.put(Source::Acme, &name, cert);
                    }
                    Err(why) => {
                        self.shared.metrics.acme_order("failed");
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
            self.shared.metrics.acme_check(&self.config.directory);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    /// The claimed names that need a certificate ordered now.
    fn wanted(&self) -> Vec<String> {
        let now = SystemTime::now();
        self.shared
            .domains
            .names()
            .into_iter()
            .filter(|n| !n.starts_with("*."))
            .filter(|n| {
                self.backoff
                    .get(n)
                    .is_none_or(|(at, _)| Instant::now() >= *at)
            })
            // An operator's certificate is theirs to renew.
            .filter(|n| !self.shared.certs.covers(Source::Operator, n))
            .filter(|n| {
                self.shared
                    .certs
                    .get(Source::Acme, n)
                    .is_none_or(|c| due(&c, now))
            })
            .collect()
    }

    /// Claims `name` for this node's order: false while another node's
    /// claim holds. A claim is kept under the node's lease, so it ends
    /// with the node; and it lapses after twice an order's longest time,
    /// so that a node stuck in an order holds nothing for long.
    fn claim(&self, name: &str) -> Result<bool, String> {
        let store = &self.shared.store;
        let key = order_key(name);
        let now = crate::model::now();
        let condition = match store.get(&key).map_err(|e| e.to_string())? {
            None => Condition::Absent(key.clone()),
            Some(r) => {
                if OrderClaim::decode(&r.value).holds(now) {
                    return Ok(false);
                }
                Condition::At(key.clone(), r.mod_revision)
            }
        };
        let until = now + 2.0 * ORDER_TIMEOUT.as_secs_f64();
        let claim = OrderClaim {
            node: self.shared.node.clone(),
            until,
        };
        let lease = self.shared.lease.load(std::sync::atomic::Ordering::SeqCst);
        match store.commit(
            &[condition],
            &[Write::PutLeased(key, claim.encode(), lease)],
        ) {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Gives up this node's claim of `name`.
    fn release(&self, name: &str) {
        if let Err(e) = self
            .shared
            .store
            .commit(&[], &[Write::Delete(order_key(name))])
        {
            tracing::warn!("cannot release the claim of {name} (it lapses by itself): {e}");
        }
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
                let answer = challenge.key_authorization().as_str().to_string();
                // In the store first: the CA may ask any node.
                self.shared
                    .store
                    .commit(
                        &[],
                        &[Write::Put(
                            challenge_key(&token),
                            answer.clone().into_bytes(),
                        )],
                    )
                    .map_err(|e| format!("cannot store the challenge's answer: {e}"))?;
                self.shared.challenges.set(&token, Some(answer));
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
            self.shared.challenges.set(t, None);
        }
        let answered: Vec<Write> = tokens
            .iter()
            .map(|t| Write::Delete(challenge_key(t)))
            .collect();
        if let Err(e) = self.shared.store.commit(&[], &answered) {
            tracing::warn!("cannot remove the answers of a finished order: {e}");
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
        let cert =
            Cert::from_pem(chain.as_bytes(), key.as_bytes(), &crt).map_err(|e| e.to_string())?;
        // For every node; then this node's own copy.
        let stored = CertRecord {
            chain: chain.clone(),
            key: key.to_string(),
        };
        self.shared
            .store
            .commit(&[], &[Write::Put(cert_key(name), stored.encode())])
            .map_err(|e| format!("cannot store the certificate: {e}"))?;
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
    let (y, m, d) = crate::model::civil_from_days((secs / 86_400) as i64);
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
    fn challenges_answer_their_tokens_and_other_nodes_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let c = Challenges::new(store.clone());
        let answer = |path: &str| rt.block_on(c.answer(path));
        c.set("tok", Some("tok.thumb".into()));
        assert_eq!(
            answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(answer("/tok"), None);
        c.set("tok", None);
        assert_eq!(answer("/.well-known/acme-challenge/tok"), None);
        // Another node's order.
        let token = "aB3-_aB3-_aB3-_aB3-_aB3-_";
        assert_eq!(answer(&format!("{CHALLENGE_PATH}{token}")), None);
        store
            .commit(
                &[],
                &[Write::Put(challenge_key(token), b"theirs.thumb".to_vec())],
            )
            .unwrap();
        assert_eq!(
            answer(&format!("{CHALLENGE_PATH}{token}")).as_deref(),
            Some("theirs.thumb")
        );
        // What is not shaped as a token is never looked up.
        assert_eq!(answer(&format!("{CHALLENGE_PATH}../../x")), None);
    }

    #[test]
    fn a_claim_ends_with_its_nodes_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let manager = |node: &str| {
            let lease = store.grant(Duration::from_secs(600)).unwrap();
            Manager {
                config: AcmeConfig {
                    directory: "https://ca.invalid/dir".into(),
                    email: None,
                    ca_root: None,
                    dir: dir.path().join(node),
                },
                cert_dir: dir.path().join(node),
                shared: Shared {
                    store: store.clone(),
                    node: node.into(),
                    lease: Arc::new(lease.into()),
                    domains: Default::default(),
                    certs: Default::default(),
                    challenges: Arc::new(Challenges::new(store.clone())),
                    metrics: Default::default(),
                },
                account: None,
                backoff: HashMap::new(),
            }
        };
        let (a, b) = (manager("a"), manager("b"));
        assert!(a.claim("www.example.com").unwrap());
        assert!(!b.claim("www.example.com").unwrap(), "a's claim holds");
        assert!(b.claim("api.example.com").unwrap(), "other names are free");
        // Node a goes: its claim goes with its lease, long before the
        // claim's own time runs out.
        store
            .revoke(a.shared.lease.load(std::sync::atomic::Ordering::SeqCst))
            .unwrap();
        assert!(b.claim("www.example.com").unwrap());
    }
}
