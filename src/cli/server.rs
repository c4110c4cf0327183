//! `skiff server`: the engine. Opens the data directory and its store,
//! binds the API and ingress listeners, and serves until SIGINT or
//! SIGTERM. Every start-up error says what is wrong and what to do, and
//! comes before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::{self, Api};
use crate::store::{SqliteStore, Store};

/// Run the engine: the ECS API, the store and the ingress.
#[derive(clap::Args)]
pub struct Server {
    /// Where the store and compiled code live.
    #[arg(long, value_name = "DIR", default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// Address of the ECS API (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8800")]
    pub api: SocketAddr,
    /// Address of the HTTP ingress (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub ingress: SocketAddr,
    /// The account id in ARNs.
    #[arg(long, value_name = "ID", default_value = "000000000000")]
    pub account: String,
    /// The region in ARNs when a request is not signed for one.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    pub region: String,
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
    pub fn open(path: &std::path::Path) -> Result<DataDir, String> {
        std::fs::create_dir_all(path).map_err(|e| {
            format!("cannot create the data directory {}: {e}; pass --data-dir with a directory you can write", path.display())
        })?;
        let lock_path = path.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                format!("cannot write in the data directory {}: {e}; pass --data-dir with a directory you can write", path.display())
            })?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(format!(
                "another skiff server is using the data directory {}; stop it, or pass another --data-dir",
                path.display()
            ));
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

/// Binds a listener, or says which flag to change.
pub async fn bind(
    addr: SocketAddr,
    what: &str,
    flag: &str,
) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("another program is using it; stop it or pass {flag} with another address (port 0 picks a free one)")
        } else {
            format!("pass {flag} with an address of this machine")
        };
        format!("cannot listen on {addr} for the {what}: {e}; {hint}")
    })
}

impl Server {
    /// Runs the server; returns the process exit code.
    pub fn execute(self) -> i32 {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("skiff: cannot start the async runtime: {e}");
                return 1;
            }
        };
        match rt.block_on(self.run()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("skiff: {e}");
                1
            }
        }
    }

    async fn run(self) -> Result<(), String> {
        let data = DataDir::open(&self.data_dir)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path.join("store.db"))?);
        crate::api::clusters::ensure_default(store.as_ref())?;
        let api_listener = bind(self.api, "API", "--api").await?;
        let ingress_listener = bind(self.ingress, "ingress", "--ingress").await?;
        let api_addr = api_listener.local_addr().map_err(|e| e.to_string())?;
        let ingress_addr = ingress_listener.local_addr().map_err(|e| e.to_string())?;

        let api = Arc::new(Api {
            store,
            account: self.account,
            default_region: self.region,
        });
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        tracker.spawn(api::serve(
            api_listener,
            api,
            shutdown.clone().cancelled_owned(),
        ));
        tracker.spawn(crate::ingress::serve_unrouted(
            ingress_listener,
            shutdown.clone().cancelled_owned(),
        ));
        tracker.close();
        eprintln!("skiff: API on http://{api_addr}/ (AWS JSON 1.1, like ECS)");
        eprintln!("skiff: ingress on http://{ingress_addr}/");
        eprintln!("skiff: data in {}", data.path.display());

        wait_for_signal().await;
        eprintln!("skiff: shutting down");
        shutdown.cancel();
        tracker.wait().await;
        drop(data);
        Ok(())
    }
}

/// Resolves at SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
