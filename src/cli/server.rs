//! `skiff server`: the engine. Opens the data directory and its store,
//! binds the API and ingress listeners, and serves until SIGINT or
//! SIGTERM. Every start-up error says what is wrong and what to do, and
//! comes before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use skiff_runtime::{Runtime, RuntimeConfig};

use crate::agent::{ledger, Agent, AgentConfig, Identity};
use crate::api::{self, Api};
use crate::ingress::front::Front;
use crate::ingress::routes::Routes;
use crate::model::hostfs::resolve_roots;
use crate::store::NodeLease;
use crate::store::{EtcdStore, SqliteStore, Store};

/// Run the engine: the ECS API, the store and the ingress.
#[derive(clap::Args)]
pub struct Server {
    /// Where the store (unless --store names another), compiled code and
    /// task logs live.
    #[arg(long, value_name = "DIR", default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// The store: etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE] for etcd
    /// (namespace default: skiff). Default: SQLite in the data directory.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Address of the ECS API (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8800")]
    pub api: SocketAddr,
    /// Address of the HTTP ingress (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub ingress: SocketAddr,
    /// Where other nodes reach this node's ingress (HOST:PORT), to forward
    /// requests for its tasks. Default: the --ingress address, when it is
    /// not 0.0.0.0 or [::].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub advertise_ingress: Option<String>,
    /// Where other nodes reach this node's API (HOST:PORT), to read the
    /// logs of its tasks. Default: the --api address, when it is not
    /// 0.0.0.0 or [::].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub advertise_api: Option<String>,
    /// The account id in ARNs.
    #[arg(long, value_name = "ID", default_value = "000000000000")]
    pub account: String,
    /// The region in ARNs when a request is not signed for one.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    pub region: String,
    /// Worker threads (each runs its tasks' guests). Default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Memory (MiB) the workers may reserve for tasks, shared equally.
    /// Default: the machine's memory.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..))]
    pub memory: Option<u64>,
    /// Services answer on the ingress at SERVICE.CLUSTER.DOMAIN (and
    /// SERVICE.DOMAIN for the default cluster).
    #[arg(long, value_name = "DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// The largest request body the ingress passes to a guest, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::ingress::front::DEFAULT_MAX_BODY)]
    pub max_request_body: u64,
    /// Access keys (JSON: {"keys": [{"access_key_id", "secret_access_key",
    /// "policy"}]}); every API request must then be signed with one
    /// (AWS SigV4, as aws-cli and boto3 sign) and allowed by its policy.
    #[arg(long, value_name = "FILE")]
    pub auth: Option<PathBuf>,
    /// Serve the API on a non-loopback address without --auth: anyone who
    /// can reach it can run code on this machine.
    #[arg(long, conflicts_with = "auth")]
    pub insecure_no_auth: bool,
    /// A directory tasks' images and host volumes may lie under
    /// (repeatable). With --auth, paths outside are refused; default: the
    /// working directory. Without --auth, any path unless this is given.
    #[arg(long, value_name = "DIR")]
    pub host_root: Vec<PathBuf>,
    /// The most connections the API keeps open at once (past that: 429).
    #[arg(long, value_name = "N", default_value_t = api::MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_connections: u32,
    /// An attribute of this node, NAME=VALUE (repeatable), for placement
    /// constraints; `ecs.availability-zone` defaults to `local`.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_attribute)]
    pub attribute: Vec<(String, String)>,
    /// How long this node's registration outlives its last keep-alive
    /// (it keeps it alive a third of this apart): 5s, 10s, ...
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::units::parse_duration)]
    pub node_ttl: std::time::Duration,
    /// How long every scaling policy must ask for fewer tasks before a
    /// service is scaled in (then its ScaleInCooldown applies): 30s, 5m, ...
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub scale_in_window: std::time::Duration,
    /// A hollow node, a test tool: it registers, takes placements and
    /// reports its tasks RUNNING (HEALTHY where checked) and STOPPED as a
    /// node does, but loads no image and runs no guest, so that one
    /// machine can play many nodes on one etcd.
    #[arg(long)]
    pub hollow: bool,
    /// How long stopped tasks stay describable: 30m, 1h, ...
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::units::parse_duration)]
    pub stopped_task_ttl: std::time::Duration,
    #[command(flatten)]
    pub registry: super::push::RegistryArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// HTTPS at the ingress.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Address of the HTTPS ingress (port 0 picks a free one): TLS with
    /// the certificate the client's server name (SNI) asks for, HTTP/2 or
    /// HTTP/1.1 by ALPN. Needs --tls-cert-dir or --acme-directory.
    #[arg(long, value_name = "ADDR")]
    pub ingress_tls: Option<SocketAddr>,
    /// Certificates to serve: NAME.crt (PEM chain, leaf first) with
    /// NAME.key beside it; each serves the DNS names it lists, and is
    /// read again when its files change. default.crt is shown to clients
    /// that send no server name.
    #[arg(long, value_name = "DIR")]
    pub tls_cert_dir: Option<PathBuf>,
    /// An ACME CA's directory URL (Let's Encrypt:
    /// https://acme-v02.api.letsencrypt.org/directory): certificates for
    /// the services' skiff.domains are ordered there, proved by HTTP-01
    /// on the plain ingress (which the CA must reach on port 80), kept in
    /// DATA_DIR/acme and renewed when a third of their life is left.
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// The ACME account's contact address.
    #[arg(long, value_name = "EMAIL", requires = "acme_directory")]
    pub acme_email: Option<String>,
    /// A PEM root certificate to trust for the ACME CA's own HTTPS (a
    /// test CA such as pebble), instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "acme_directory")]
    pub acme_ca_root: Option<PathBuf>,
}

/// `NAME=VALUE`, as ECS spells attribute names (letters, digits, `.`,
/// `-`, `_`, `/`, up to 128) and values (up to 128 characters).
fn parse_attribute(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE (say, zone=eu-1)"))?;
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if !name_ok {
        return Err(format!(
            "the attribute name {name:?} must be 1 to 128 letters, digits, '.', '-', '_' or '/'"
        ));
    }
    if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(format!(
            "the value of attribute {name} must be 1 to 128 printable characters"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The address other nodes reach a listener at: the one given with
/// `--advertise-WHAT`, or the bound one unless it is 0.0.0.0 or [::]
/// (then none, which is said when there are other nodes).
fn advertised(
    given: &Option<String>,
    bound: SocketAddr,
    shared: bool,
    what: &str,
    for_what: &str,
) -> Option<String> {
    match given {
        Some(a) => Some(a.clone()),
        None if bound.ip().is_unspecified() => {
            if shared {
                tracing::warn!(
                    "the {what} listens on {bound}: other nodes cannot {for_what} until it is given --advertise-{} HOST:PORT",
                    what.to_ascii_lowercase()
                );
            }
            None
        }
        None => Some(bound.to_string()),
    }
}

/// `HOST:PORT`, a host name or address and a port (1-65535).
fn parse_host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT (say, 10.0.0.5:8080)"))?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
    if !host_ok {
        return Err(format!("{host:?} is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_string()),
        _ => Err(format!("{port:?} is not a port (1 to 65535)")),
    }
}

/// The machine's memory in MiB, from /proc/meminfo.
fn machine_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

/// Raises the soft limit on open files to the hard limit: every connection
/// and task log is a file descriptor, and the usual soft limit (1024) is
/// below the API's and the ingress's connection limits.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The data directory, held exclusively while the server runs.
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    // Holding the file holds the lock (flock is released on close).
    _lock: std::fs::File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(path: &std::path::Path) -> Result<DataDir, StartError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StartError::DataDir(format!("cannot create the data directory {}: {e}; pass --data-dir with a directory you can write", path.display()))
        })?;
        let lock_path = path.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StartError::DataDir(format!("cannot write in the data directory {}: {e}; pass --data-dir with a directory you can write", path.display()))
            })?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StartError::DataDir(format!(
                "another skiff server is using the data directory {}; stop it, or pass another --data-dir",
                path.display()
            )));
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// This node's id: random at the first start, kept in `node-id`.
    pub fn node_id(&self) -> Result<String, StartError> {
        let path = self.path.join("node-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            let id = id.trim();
            if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Ok(id.to_string());
            }
            return Err(StartError::DataDir(format!(
                "{} does not hold a node id (letters, digits and -); delete it to have a new one made",
                path.display()
            )));
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| StartError::DataDir(format!("no randomness for a node id: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, format!("{id}\n"))
            .map_err(|e| StartError::DataDir(format!("cannot write {}: {e}", path.display())))?;
        Ok(id)
    }
}

/// Binds a listener, or says which flag to change.
pub async fn bind(
    addr: SocketAddr,
    what: &str,
    flag: &str,
) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("another program is using it; stop it or pass {flag} with another address (port 0 picks a free one)")
        } else {
            format!("pass {flag} with an address of this machine")
        };
        StartError::Listen(format!("cannot listen on {addr} for the {what}: {e}; {hint}"))
    })
}

impl Server {
    /// Runs the server; returns the process exit code.
    pub fn execute(self) -> i32 {
        crate::logging::init();
        super::run_async(self.run())
    }

    async fn run(self) -> Result<(), String> {
        let stop = StopSignal::listen();
        let engine = self.start().await.map_err(|e| e.to_string())?;
        stop.wait().await;
        engine.stop().await;
        Ok(())
    }

    /// What the workers are given: their number and memory, where logs
    /// go, who they run as, and the node's image and blob stores.
    fn agent_config(
        &self,
        kept: &Kept,
        host_roots: &HostRoots,
        blobs: &Arc<crate::images::blobs::Blobs>,
        registry: &Arc<crate::images::Registry>,
    ) -> AgentConfig {
        AgentConfig {
            workers: self
                .workers
                .map(|w| w as usize)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            memory_mib: self.memory.unwrap_or_else(machine_memory_mib),
            logs_dir: kept.logs_dir.clone(),
            identity: Identity {
                region: self.region.clone(),
                account: self.account.clone(),
            },
            host_roots: host_roots.clone(),
            node: kept.node.clone(),
            blobs: Some(blobs.clone()),
            registry: Some(registry.clone()),
            hollow: self.hollow,
        }
    }

    /// Starts the engine: everything listens and runs when this returns.
    /// The node's parts are made in order, each by a step of its own:
    /// who may call (keys, host roots), the store and what it keeps of
    /// this node, the listeners, the workers with their registration and
    /// ledger, the API and the scheduler, HTTPS, and the ingress's front.
    pub async fn start(self) -> Result<Engine, StartError> {
        let (keys, host_roots) = self.access()?;
        raise_open_files_limit();
        let data = DataDir::open(&self.data_dir)?;
        let store = self.open_store(&data)?;
        let kept = Kept::read(store.as_ref(), &data, self.stopped_task_ttl)?;
        let listeners = self.listen().await?;
        let registry = Arc::new(
            self.registry
                .registry(data.path.join("images"), Some(data.path.join("cache"))),
        );
        let blobs = Arc::new(crate::images::blobs::Blobs::new(
            data.path.join("blobs"),
            store.clone(),
            kept.node.clone(),
            kept.peer_secret.clone(),
        ));
        let agent_config = self.agent_config(&kept, &host_roots, &blobs, &registry);
        let workers = self.start_workers(&store, &data, &kept, &listeners.addrs, agent_config)?;
        let api = Arc::new(Api {
            store: store.clone(),
            account: self.account.clone(),
            default_region: self.region.clone(),
            logs_dir: kept.logs_dir.clone(),
            metrics: workers.metrics.clone(),
            keys,
            host_roots: host_roots.clone(),
            node: kept.node.clone(),
            peer_secret: kept.peer_secret.clone(),
            blobs: Some(blobs.clone()),
            registry: Some(registry),
        });
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let Listeners {
            api: api_listener,
            ingress,
            addrs,
        } = listeners;
        tracker.spawn(api::serve(
            api_listener,
            api.clone(),
            self.api_connections as usize,
            shutdown.clone().cancelled_owned(),
        ));
        let scheduler_thread = crate::scheduler::controller::spawn(
            store.clone(),
            kept.node.clone(),
            workers.lease.clone(),
            self.scale_in_window,
            shutdown.clone(),
        )
        .map_err(|e| StartError::part("the scheduler", e))?;
        // Blobs no task definition names any more are removed.
        crate::images::blobs::follow(blobs, store.clone(), shutdown.clone())
            .map_err(|e| StartError::part("the sweep of blobs", e))?;
        let parts = Parts {
            store: &store,
            data: &data,
            kept: &kept,
            workers: &workers,
            shutdown: &shutdown,
        };
        let https = self.start_https(&parts)?;
        let front = self.start_front(&parts, https, ingress, &addrs)?;
        spawn_reaper(
            &tracker,
            store.clone(),
            kept.logs_dir.clone(),
            self.stopped_task_ttl,
            shutdown.clone(),
        );
        tracker.close();
        self.say_where(&addrs, &host_roots, &data, &kept, &workers);
        Ok(Engine {
            api,
            api_addr: addrs.api,
            ingress_addr: addrs.ingress,
            ingress_tls_addr: addrs.tls,
            domain: self.domain,
            shutdown,
            tracker,
            front,
            scheduler_thread,
            agent: workers.agent,
            ledger_thread: workers.ledger_thread,
            registration: workers.registration,
            data,
        })
    }

    /// Who may call the API (the keys, or none on loopback and with
    /// `--insecure-no-auth`) and which host paths tasks may name.
    fn access(&self) -> Result<(Option<crate::auth::Keys>, HostRoots), StartError> {
        let keys = match &self.auth {
            Some(path) => Some(crate::auth::Keys::load(path)?),
            None if self.api.ip().is_loopback() || self.insecure_no_auth => None,
            None => {
                return Err(StartError::Config(format!(
                    "--api {} is reachable from other machines, and without --auth anyone there could run code here; \
                     pass --auth FILE with access keys, or --api 127.0.0.1:PORT, or --insecure-no-auth if the network is trusted",
                    self.api
                )))
            }
        };
        let host_roots: HostRoots = match (self.host_root.is_empty(), self.auth.is_some()) {
            (false, _) => Some(resolve_roots(&self.host_root)?.into()),
            (true, true) => Some(resolve_roots(&[PathBuf::from(".")])?.into()),
            (true, false) => None,
        };
        Ok((keys, host_roots))
    }

    /// The store: SQLite in the data directory, or etcd with `--store`.
    fn open_store(&self, data: &DataDir) -> Result<Arc<dyn Store>, StartError> {
        Ok(match &self.store {
            None => Arc::new(SqliteStore::open(&data.path.join("store.db"))?),
            Some(url) => {
                let etcd = EtcdStore::open(url)?;
                tracing::info!(
                    "store: etcd at {}, namespace {}",
                    etcd.endpoints().join(", "),
                    etcd.namespace()
                );
                Arc::new(etcd)
            }
        })
    }

    /// Binds the API's and the ingress's listeners (and the HTTPS
    /// ingress's, which needs certificates from somewhere).
    async fn listen(&self) -> Result<Listeners, StartError> {
        let api = bind(self.api, "API", "--api").await?;
        let ingress = bind(self.ingress, "ingress", "--ingress").await?;
        let tls = match self.tls.ingress_tls {
            Some(addr) => {
                if self.tls.tls_cert_dir.is_none() && self.tls.acme_directory.is_none() {
                    return Err(StartError::Config("--ingress-tls needs certificates: give --tls-cert-dir DIR, --acme-directory URL, or both".into()));
                }
                Some(bind(addr, "HTTPS ingress", "--ingress-tls").await?)
            }
            None => None,
        };
        let addr = |l: &tokio::net::TcpListener| {
            l.local_addr()
                .map_err(|e| StartError::part("a listener's address", e))
        };
        let addrs = Addrs {
            api: addr(&api)?,
            ingress: addr(&ingress)?,
            tls: tls.as_ref().map(addr).transpose()?,
        };
        Ok(Listeners {
            api,
            ingress: IngressListeners {
                plain: ingress,
                tls,
            },
            addrs,
        })
    }

    /// This node as it registers: what its workers have, its attributes,
    /// and where other nodes reach it.
    fn node_record(&self, config: &AgentConfig, addrs: &Addrs) -> crate::model::node::Node {
        let mut attributes: std::collections::BTreeMap<String, String> =
            self.attribute.iter().cloned().collect();
        attributes
            .entry("ecs.availability-zone".into())
            .or_insert_with(|| "local".into());
        crate::model::node::Node {
            workers: config.worker_capacity(),
            attributes,
            registered_at: crate::model::now(),
            ingress: advertised(
                &self.advertise_ingress,
                addrs.ingress,
                self.store.is_some(),
                "ingress",
                "forward requests to this node's tasks",
            ),
            api: advertised(
                &self.advertise_api,
                addrs.api,
                self.store.is_some(),
                "API",
                "read the logs of this node's tasks",
            ),
        }
    }

    /// The wasm engine and the workers, this node's registration under a
    /// lease it keeps alive, and the ledger that records what the workers
    /// report.
    fn start_workers(
        &self,
        store: &Arc<dyn Store>,
        data: &DataDir,
        kept: &Kept,
        addrs: &Addrs,
        config: AgentConfig,
    ) -> Result<Workers, StartError> {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data.path.join("cache")),
            ..RuntimeConfig::default()
        })
        .map_err(|e| StartError::Part {
            what: "the wasm engine",
            message: format!("{e:#}"),
        })?;
        let record = self.node_record(&config, addrs);
        // With other nodes (etcd), a node whose lease lapsed stops its
        // tasks: the leader replaces them elsewhere. One node alone (SQLite)
        // has no one to hand them to.
        let fenced_agent: Arc<std::sync::OnceLock<Arc<Agent>>> = Default::default();
        let lost: Option<Box<dyn Fn(String) + Send>> = self.store.is_some().then(|| {
            let cell = fenced_agent.clone();
            Box::new(move |reason: String| {
                tracing::warn!("this node lost its lease: stopping its tasks ({reason})");
                if let Some(agent) = cell.get() {
                    agent.fence(reason);
                }
            }) as Box<dyn Fn(String) + Send>
        });
        let (registration, lease) = Registration::start(
            store.clone(),
            kept.node.clone(),
            record,
            self.node_ttl,
            lost,
        )
        .map_err(|e| StartError::part("this node's registration", e))?;
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let ledger_thread = ledger::spawn(store.clone(), kept.node.clone(), events_rx)
            .map_err(|e| StartError::part("the ledger", e))?;
        let routes = Arc::new(Routes::new(&self.domain));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let pool = runtime.clone();
        metrics.set_pool(Box::new(move || {
            pool.pool_stats().map(|p| crate::metrics::PoolGauge {
                component_instances: p.component_instances,
                memories: p.memories as u64,
                capacity: u64::from(p.capacity),
            })
        }));
        let (workers, memory) = (config.workers, config.memory_mib);
        let agent = Arc::new(
            Agent::start(
                runtime,
                config,
                store.clone(),
                events_tx,
                routes.clone(),
                metrics.clone(),
            )
            .map_err(|e| StartError::part("the workers", e))?,
        );
        let _ = fenced_agent.set(agent.clone());
        Ok(Workers {
            agent,
            routes,
            metrics,
            registration,
            lease,
            ledger_thread,
            count: workers,
            memory,
        })
    }

    /// HTTPS: the domains services claim, the certificates for them (from
    /// `--tls-cert-dir`, and issued by ACME to any node), the orders of
    /// this node when it has `--acme-directory`.
    fn start_https(&self, parts: &Parts<'_>) -> Result<Https, StartError> {
        use crate::ingress::{acme, domains, tls};
        let (store, data, kept, workers, shutdown) = (
            parts.store,
            parts.data,
            parts.kept,
            parts.workers,
            parts.shutdown,
        );
        domains::follow(
            store.clone(),
            workers.routes.domains().clone(),
            shutdown.clone(),
        )
        .map_err(StartError::Ingress)?;
        let certs = Arc::new(tls::Certificates::default());
        if let Some(dir) = &self.tls.tls_cert_dir {
            tls::watch_dir(dir.clone(), certs.clone(), shutdown.clone())
                .map_err(StartError::Ingress)?;
        }
        // Every node serves the certificates any node was issued, and
        // answers the HTTP-01 challenges of any node's orders; nodes with
        // --acme-directory order.
        acme::follow_issued(store.clone(), certs.clone(), shutdown.clone())
            .map_err(StartError::Ingress)?;
        let challenges = Arc::new(acme::Challenges::new(store.clone()));
        if let Some(directory) = &self.tls.acme_directory {
            acme::spawn(
                acme::AcmeConfig {
                    directory: directory.clone(),
                    email: self.tls.acme_email.clone(),
                    ca_root: self.tls.acme_ca_root.clone(),
                    dir: data.path.join("acme"),
                },
                acme::Shared {
                    store: store.clone(),
                    node: kept.node.clone(),
                    lease: workers.lease.clone(),
                    domains: workers.routes.domains().clone(),
                    certs: certs.clone(),
                    challenges: challenges.clone(),
                    metrics: workers.metrics.clone(),
                },
                shutdown.clone(),
            )
            .map_err(StartError::Ingress)?;
        }
        Ok(Https { certs, challenges })
    }

    /// The ingress's front: the workers accept and answer its requests
    /// themselves; it holds requests for services scaled to zero, forwards
    /// to other nodes, and reports this node's load.
    fn start_front(
        &self,
        parts: &Parts<'_>,
        https: Https,
        listeners: IngressListeners,
        addrs: &Addrs,
    ) -> Result<Arc<Front>, StartError> {
        let (store, kept, workers, shutdown) =
            (parts.store, parts.kept, parts.workers, parts.shutdown);
        let scale_to_zero = Arc::new(crate::ingress::domains::ScaleToZero::default());
        crate::ingress::domains::follow(store.clone(), scale_to_zero.clone(), shutdown.clone())
            .map_err(StartError::Ingress)?;
        let waiting = Arc::new(crate::ingress::load::Waiting::default());
        crate::ingress::load::spawn(
            store.clone(),
            kept.node.clone(),
            workers.lease.clone(),
            workers.routes.clone(),
            waiting.clone(),
            shutdown.clone(),
        )
        .map_err(|e| StartError::part("the load reports", e))?;
        let front = Front::new(
            workers.routes.clone(),
            workers.metrics.clone(),
            workers.agent.runtimes().to_vec(),
            shutdown.clone(),
            Some(Arc::new(crate::ingress::peers::Peers::new(
                store.clone(),
                kept.node.clone(),
            ))),
            crate::ingress::front::Settings {
                ip: addrs.ingress.ip(),
                max_body: self.max_request_body,
                challenges: Some(https.challenges),
                https_port: addrs.tls.map(|a| a.port()),
                scale_to_zero,
                waiting,
            },
        );
        workers.routes.set_opener(Box::new(front.clone()));
        workers.routes.set_caller(Box::new(front.clone()));
        let unusable = |what: &'static str| move |e: std::io::Error| StartError::part(what, e);
        if let Some(l) = listeners.tls {
            let l = l
                .into_std()
                .map_err(unusable("the HTTPS ingress listener"))?;
            front
                .listen_tls(l, crate::ingress::tls::acceptor(https.certs))
                .map_err(unusable("the HTTPS ingress listener"))?;
        }
        let l = listeners
            .plain
            .into_std()
            .map_err(unusable("the ingress listener"))?;
        front.listen(l).map_err(unusable("the ingress listener"))?;
        Ok(front)
    }

    /// Says where everything is, once it all runs.
    fn say_where(
        &self,
        addrs: &Addrs,
        host_roots: &HostRoots,
        data: &DataDir,
        kept: &Kept,
        workers: &Workers,
    ) {
        let auth = match (&self.auth, self.insecure_no_auth) {
            (Some(path), _) => format!("requests signed with a key from {}", path.display()),
            (None, true) => "WITHOUT authentication (--insecure-no-auth)".to_string(),
            (None, false) => "without authentication (loopback only)".to_string(),
        };
        tracing::info!(
            "API on http://{}/ (AWS JSON 1.1, like ECS), {auth}",
            addrs.api
        );
        if let Some(a) = addrs.tls {
            tracing::info!(
                "HTTPS ingress on https://{a}/ (services answer on their skiff.domains, and at https://SERVICE.CLUSTER.{}:{}/ with a certificate for them)",
                self.domain,
                a.port()
            );
        }
        tracing::info!(
            "ingress on http://{}/ (services answer at http://SERVICE.CLUSTER.{}:{}/)",
            addrs.ingress,
            self.domain,
            addrs.ingress.port()
        );
        tracing::info!(
            "{} workers sharing {} MiB; data in {}",
            workers.count,
            workers.memory,
            data.path.display()
        );
        if let Some(roots) = host_roots {
            let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            tracing::info!(
                "tasks' images and host volumes must be under {}",
                list.join(", ")
            );
        }
        if kept.recovered > 0 {
            tracing::info!(
                "{} tasks were running when the server last stopped; they are reported STOPPED",
                kept.recovered
            );
        }
    }
}

/// Which host paths tasks may name (`None`: any).
type HostRoots = crate::model::hostfs::HostRoots;

/// Why the engine did not start: which part, and why, in words a user
/// can act on.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Flags that do not go together.
    #[error("{0}")]
    Config(String),
    /// The data directory cannot be used.
    #[error("{0}")]
    DataDir(String),
    /// The keys file.
    #[error(transparent)]
    Keys(#[from] crate::auth::KeysError),
    /// A `--host-root`.
    #[error(transparent)]
    HostRoots(#[from] crate::model::hostfs::HostPathError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// The store cannot be read or written.
    #[error("the store: {0}")]
    StoreAccess(#[from] crate::store::StoreError),
    /// A listener cannot be bound.
    #[error("{0}")]
    Listen(String),
    /// A part of the ingress (certificates, ACME, domains) cannot start.
    #[error(transparent)]
    Ingress(#[from] crate::ingress::FollowError),
    /// A part of the engine cannot start.
    #[error("cannot start {what}: {message}")]
    Part {
        /// Which part.
        what: &'static str,
        /// Why.
        message: String,
    },
}

impl StartError {
    fn part(what: &'static str, e: impl std::fmt::Display) -> StartError {
        StartError::Part {
            what,
            message: e.to_string(),
        }
    }
}

/// What the store and the data directory keep of this node, read (and
/// tidied) at start: its id, the tasks that were running when it last
/// stopped (recorded STOPPED), the nodes' secret, and the logs of tasks
/// long stopped (removed).
struct Kept {
    node: String,
    recovered: usize,
    peer_secret: Vec<u8>,
    logs_dir: PathBuf,
}

impl Kept {
    fn read(
        store: &dyn Store,
        data: &DataDir,
        stopped_task_ttl: std::time::Duration,
    ) -> Result<Kept, StartError> {
        crate::api::clusters::ensure_default(store)?;
        let node = data.node_id()?;
        crate::scheduler::capacity::forget_legacy_node(store)?;
        let recovered = ledger::recover(store, &node)?;
        let peer_secret = crate::auth::peer::secret(store)?;
        let logs_dir = data.path.join("logs");
        ledger::reap(store, &logs_dir, stopped_task_ttl.as_secs_f64())?;
        Ok(Kept {
            node,
            recovered,
            peer_secret,
            logs_dir,
        })
    }
}

/// The listeners, bound, and their addresses.
struct Listeners {
    api: tokio::net::TcpListener,
    ingress: IngressListeners,
    addrs: Addrs,
}

/// The ingress's listeners: plain HTTP, and HTTPS when asked for.
struct IngressListeners {
    plain: tokio::net::TcpListener,
    tls: Option<tokio::net::TcpListener>,
}

/// What the later steps of [`Server::start`] share.
struct Parts<'a> {
    store: &'a Arc<dyn Store>,
    data: &'a DataDir,
    kept: &'a Kept,
    workers: &'a Workers,
    shutdown: &'a tokio_util::sync::CancellationToken,
}

/// Where the API, the ingress and the HTTPS ingress listen.
struct Addrs {
    api: SocketAddr,
    ingress: SocketAddr,
    tls: Option<SocketAddr>,
}

/// The workers and what runs beside them.
struct Workers {
    agent: Arc<Agent>,
    routes: Arc<Routes>,
    metrics: Arc<crate::metrics::Metrics>,
    registration: Registration,
    lease: NodeLease,
    ledger_thread: std::thread::JoinHandle<()>,
    count: usize,
    memory: u64,
}

/// The HTTPS ingress's certificates and the ACME challenges it answers.
struct Https {
    certs: Arc<crate::ingress::tls::Certificates>,
    challenges: Arc<crate::ingress::acme::Challenges>,
}

/// Forgets tasks stopped longer than `ttl`, every minute until `stop`.
fn spawn_reaper(
    tracker: &tokio_util::task::TaskTracker,
    store: Arc<dyn Store>,
    logs_dir: PathBuf,
    ttl: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let ttl = ttl.as_secs_f64();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                _ = stop.cancelled() => break,
            }
            let (s, dir) = (store.clone(), logs_dir.clone());
            let _ = tokio::task::spawn_blocking(move || ledger::reap(s.as_ref(), &dir, ttl)).await;
        }
    });
}

/// A running engine, as [`Server::start`] leaves it.
pub struct Engine {
    /// The API's actions, to call in process.
    pub api: Arc<Api>,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the ingress listens.
    pub ingress_addr: SocketAddr,
    /// Where the HTTPS ingress listens, when it does.
    pub ingress_tls_addr: Option<SocketAddr>,
    /// The domain services answer under.
    pub domain: String,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    front: Arc<Front>,
    scheduler_thread: std::thread::JoinHandle<()>,
    agent: Arc<Agent>,
    ledger_thread: std::thread::JoinHandle<()>,
    registration: Registration,
    data: DataDir,
}

/// This node's registration (`nodes/ID`, under a lease), kept alive by a
/// thread of its own, and registered again if the lease ended (the store
/// out of reach for longer than the TTL).
struct Registration {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Registration {
    /// Registers the node and keeps it registered. `lost` is called
    /// (once per lapse) when the lease has surely lapsed: no keep-alive
    /// got through for longer than the TTL, or the store says it ended.
    fn start(
        store: Arc<dyn Store>,
        node: String,
        record: crate::model::node::Node,
        ttl: std::time::Duration,
        lost: Option<Box<dyn Fn(String) + Send>>,
    ) -> Result<(Registration, NodeLease), crate::store::StoreError> {
        use crate::scheduler::capacity;
        use crate::store::StoreError;
        use std::sync::atomic::Ordering;
        let register = move |store: &dyn Store| -> Result<_, StoreError> {
            let lease = store.grant(ttl)?;
            capacity::register(store, &node, &record, lease)?;
            Ok(lease)
        };
        let mut lease = register(store.as_ref())?;
        let shared: NodeLease = Arc::new(lease.into());
        let current = shared.clone();
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("skiff-node".into())
            .spawn(move || {
                let mut kept = std::time::Instant::now();
                let mut fenced = false;
                let lapsed = |why: &str, fenced: &mut bool| {
                    if let (Some(lost), false) = (&lost, *fenced) {
                        *fenced = true;
                        lost(format!(
                            "Task stopped because its node lost its lease ({why}); it is replaced on another node"
                        ));
                    }
                };
                loop {
                match stopped.recv_timeout(ttl / 3) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => {
                        // Stopping: the node is gone at once, not a TTL later.
                        let _ = store.revoke(lease);
                        return;
                    }
                }
                match store.keep_alive(lease) {
                    Ok(()) => {
                        kept = std::time::Instant::now();
                        fenced = false;
                    }
                    Err(StoreError::LeaseEnded(_)) => {
                        lapsed("the store let it lapse", &mut fenced);
                        tracing::warn!("this node's registration lapsed; registering again");
                        match register(store.as_ref()) {
                            Ok(l) => {
                                lease = l;
                                current.store(l, Ordering::SeqCst);
                            }
                            Err(e) => tracing::error!("cannot register this node again: {e}"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cannot keep this node's registration alive: {e}");
                        if kept.elapsed() > ttl {
                            lapsed(
                                &format!("the store was out of reach for {:.0?}", kept.elapsed()),
                                &mut fenced,
                            );
                        }
                    }
                }
                }
            })
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok((Registration { stop, thread }, shared))
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

impl Engine {
    /// Stops it: listeners close and their connections finish (a few
    /// seconds at most), the scheduler stops, then every task (reported as
    /// "the skiff server shut down"), then the ledger writes the last
    /// reports.
    pub async fn stop(self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.tracker.wait().await;
        self.front.wait().await;
        // The scheduler stops first, so that the tasks the shutdown stops
        // are not replaced.
        let scheduler = self.scheduler_thread;
        let _ = tokio::task::spawn_blocking(move || scheduler.join()).await;
        let stopping = self.agent.clone();
        let _ = tokio::task::spawn_blocking(move || stopping.shutdown()).await;
        drop(self.agent);
        drop(self.api);
        let ledger = self.ledger_thread;
        let _ = tokio::task::spawn_blocking(move || ledger.join()).await;
        let registration = self.registration;
        let _ = tokio::task::spawn_blocking(move || registration.stop()).await;
        drop(self.data);
    }
}

/// SIGINT and SIGTERM, listened for from creation: a signal that arrives
/// after this is made (say, right after the engine prints its address)
/// stops the engine cleanly instead of killing the process.
pub struct StopSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    /// Starts listening. Call before anything that announces readiness.
    pub fn listen() -> StopSignal {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves at the first SIGINT or SIGTERM since `listen`.
    pub async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}
