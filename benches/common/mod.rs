//! What the benches share: a real `skiff server` on free ports and a
//! keep-alive ECS API client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../tests/common/etcd.rs"]
#[allow(dead_code)]
pub mod etcd;
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// An access key id and secret to sign requests with (SigV4).
    pub key: Option<(String, String)>,
    /// The last signed request and its signature headers: the same request
    /// again reuses them (valid for 15 minutes), so that what is measured
    /// is the server's checking, not this client's signing.
    signed: Option<(String, String)>,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            key: None,
            signed: None,
        }
    }

    pub fn call(&mut self, action: &str, body: &Value) -> Value {
        self.call_to("AmazonEC2ContainerServiceV20141113", action, body)
    }

    /// A call to another JSON 1.1 service of the API (`prefix` is its
    /// X-Amz-Target prefix, such as `AnyScaleFrontendService`).
    pub fn call_to(&mut self, prefix: &str, action: &str, body: &Value) -> Value {
        let body = body.to_string();
        let target = format!("{prefix}.{action}");
        let service = match prefix {
            "AnyScaleFrontendService" => "application-autoscaling",
            _ => "ecs",
        };
        let mut head = format!(
            "POST / HTTP/1.1\r\nhost: bench\r\nx-amz-target: {target}\r\ncontent-type: application/x-amz-json-1.1\r\n"
        );
        let request = format!("{target}\n{body}");
        if let Some((_, auth)) = self.signed.as_ref().filter(|(r, _)| *r == request) {
            head.push_str(auth);
        } else if let Some((id, secret)) = &self.key {
            let headers = [
                ("host", "bench"),
                ("x-amz-target", target.as_str()),
                ("content-type", "application/x-amz-json-1.1"),
            ];
            let req = skiff::auth::sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: body.as_bytes(),
            };
            let now = skiff::auth::sigv4::now_secs();
            let (date, authz) =
                skiff::auth::sigv4::sign(&req, id, secret, "us-east-1", service, now);
            let auth = format!("x-amz-date: {date}\r\nauthorization: {authz}\r\n");
            head.push_str(&auth);
            self.signed = Some((request, auth));
        }
        write!(
            self.writer,
            "{head}content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert!(status.contains(" 200 "), "{action}: {status} {v}");
        v
    }
}

pub fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub fn parallel(
    addr: &str,
    clients: usize,
    per_client: usize,
    f: impl Fn(&mut Conn, usize, usize) + Sync,
) -> Duration {
    parallel_signed(addr, None, clients, per_client, f)
}

/// [`parallel`], each client signing with `key` when given.
pub fn parallel_signed(
    addr: &str,
    key: Option<(&str, &str)>,
    clients: usize,
    per_client: usize,
    f: impl Fn(&mut Conn, usize, usize) + Sync,
) -> Duration {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let f = &f;
            s.spawn(move || {
                let mut conn = Conn::open(addr);
                conn.key = key.map(|(a, b)| (a.to_string(), b.to_string()));
                for i in 0..per_client {
                    f(&mut conn, c, i);
                }
            });
        }
    });
    t0.elapsed()
}

/// The server, killed however the bench ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `skiff server` with `workers` workers in a fresh data directory;
/// returns it (killed on drop), its API address and the directory.
pub fn server(workers: usize) -> (Killed, String, tempfile::TempDir) {
    server_with(workers, &[])
}

/// [`server`] with more arguments.
pub fn server_with(workers: usize, extra: &[&str]) -> (Killed, String, tempfile::TempDir) {
    let (child, api, _, dir) = server_with_ingress(workers, extra);
    (child, api, dir)
}

/// [`server_with`], also saying where the ingress listens.
pub fn server_with_ingress(
    workers: usize,
    extra: &[&str],
) -> (Killed, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (child, api, ingress) = server_in(dir.path(), workers, extra);
    (child, api, ingress, dir)
}

/// The skiff binary the benchmarks run: this build's, or another's named
/// by `SKIFF_BIN` (a build of an earlier commit, to compare with).
pub fn skiff_bin() -> std::ffi::OsString {
    std::env::var_os("SKIFF_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_skiff").into())
}

/// [`server_with_ingress`] on the data directory `dir` (which the caller
/// keeps, to start the same node again).
pub fn server_in(
    dir: &std::path::Path,
    workers: usize,
    extra: &[&str],
) -> (Killed, String, String) {
    let child = Command::new(skiff_bin())
        .args([
            "server",
            "--api",
            "127.0.0.1:0",
            "--ingress",
            "127.0.0.1:0",
            "--workers",
        ])
        .arg(workers.to_string())
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("API on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server ended before listening"
        );
    }
    let addr_in = |line: &str| {
        line.split("http://")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let addr = addr_in(&line);
    while !line.contains("ingress on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server ended before its ingress listened"
        );
    }
    let ingress = addr_in(&line);
    // Keep reading, so that the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, addr, ingress)
}

/// The `p` quantile (0 to 1) of sorted durations.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The status of `GET /` for `host` on the ingress, on a new connection.
pub fn get_status(ingress: &str, host: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(ingress).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
