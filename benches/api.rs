//! `cargo bench --bench api`: the ECS API of a real `skiff server` on this
//! machine: RegisterTaskDefinition and RunTask per second (8 clients on
//! keep-alive connections), and the latency from RunTask to RUNNING for a
//! guest that is already compiled (polling DescribeTasks every ms).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn call(&mut self, action: &str, body: &Value) -> Value {
        let body = body.to_string();
        write!(
            self.writer,
            "POST / HTTP/1.1\r\nHost: bench\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.{action}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
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

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn parallel(
    addr: &str,
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
                for i in 0..per_client {
                    f(&mut conn, c, i);
                }
            });
        }
    });
    t0.elapsed()
}

/// The server, killed however the bench ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--api",
            "127.0.0.1:0",
            "--ingress",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--data-dir",
        ])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut first = String::new();
    BufReader::new(child.0.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let (clients, per_client) = (8, 250);
    let took = parallel(&addr, clients, per_client, |conn, c, _| {
        conn.call(
            "RegisterTaskDefinition",
            &json!({"family": format!("bench-{c}"), "containerDefinitions": [
                {"name": "main", "image": "guests/dist/echo.wasm", "memory": 16}]}),
        );
    });
    let n = clients * per_client;
    println!(
        "RegisterTaskDefinition: {n} calls from {clients} clients in {took:.2?}: {:.0}/s",
        per_second(n, took)
    );

    let mut conn = Conn::open(&addr);
    // Compile both guests once, so what follows measures the engine.
    conn.call(
        "RegisterTaskDefinition",
        &json!({"family": "web", "containerDefinitions": [
        {"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 8}]}),
    );
    for family in ["bench-0", "web"] {
        let t = conn.call("RunTask", &json!({"taskDefinition": family}));
        let arn = t["tasks"][0]["taskArn"].clone();
        conn.call("StopTask", &json!({"task": arn}));
    }

    let (clients, per_client) = (8, 100);
    let took = parallel(&addr, clients, per_client, |conn, _, _| {
        let out = conn.call("RunTask", &json!({"taskDefinition": "bench-0"}));
        assert_eq!(out["tasks"].as_array().map(Vec::len), Some(1), "{out}");
    });
    let n = clients * per_client;
    println!("RunTask (a command that exits at once): {n} calls from {clients} clients in {took:.2?}: {:.0}/s", per_second(n, took));
    // Let the workers finish those tasks before measuring latency.
    let t0 = Instant::now();
    loop {
        let out = conn.call("ListTasks", &json!({"family": "bench-0"}));
        if out["taskArns"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "tasks never stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "  ... and all {n} tasks STOPPED {:.2?} after the last call",
        t0.elapsed()
    );

    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let out = conn.call("RunTask", &json!({"taskDefinition": "web"}));
        let arn = out["tasks"][0]["taskArn"].clone();
        loop {
            let d = conn.call("DescribeTasks", &json!({"tasks": [arn]}));
            if d["tasks"][0]["lastStatus"] == "RUNNING" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "never RUNNING: {d}");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(t0.elapsed());
        conn.call("StopTask", &json!({"task": arn}));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "RunTask to RUNNING (hello-http, compiled): p50 {:.2?}, p90 {:.2?}, max {:.2?} over {} tasks",
        pct(0.5),
        pct(0.9),
        latencies[latencies.len() - 1],
        latencies.len()
    );
}
