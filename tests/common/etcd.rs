//! A real etcd (Debian's `etcd-server`) for tests and benchmarks: on free
//! ports of 127.0.0.1, with its own data directory. (Included by
//! `tests/common` and, by path, by `benches/`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real etcd (Debian's `etcd-server`) on free ports of 127.0.0.1 with its
/// own data directory, killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    /// `127.0.0.1:PORT` of its client listener.
    pub addr: String,
    peer: String,
    /// Its data directory (kept across [`Etcd::restart`]).
    pub dir: tempfile::TempDir,
}

/// A port nobody listens on now (etcd needs concrete ports to advertise).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it serves clients.
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            dir: tempfile::tempdir().unwrap(),
        };
        e.spawn();
        e
    }

    /// `etcd://ADDR/NAMESPACE`, for `--store`.
    pub fn url(&self, namespace: &str) -> String {
        format!("etcd://{}/{namespace}", self.addr)
    }

    fn spawn(&mut self) {
        let peer = format!("http://{}", self.peer);
        let client = format!("http://{}", self.addr);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--max-txn-ops", "4096"])
            .env_remove("ETCD_UNSUPPORTED_ARCH")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot start etcd ({e}): the etcd tests need Debian's etcd-server package (apt-get install etcd-server; .ci/run installs it)"
            ),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        // Read its log to the end, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if l.contains("ready to serve client requests") {
                        break;
                    }
                    said.push(l);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("etcd did not become ready within 60 s: {said:?}")
                }
            }
        }
        self.child = Some(child);
    }

    /// Kills etcd (-9) and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills etcd (-9) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `etcdctl` against it; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{}", self.addr))
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client package) must be installed");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
