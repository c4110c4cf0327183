//! What the integration tests of the binary share: a `skiff server` on
//! free ports, and its stderr lines as they come.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Each line the reader gives, on a channel.
pub fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// One ECS API call (AWS JSON 1.1, unsigned) to the server at `api`
/// (HOST:PORT): the HTTP status and the JSON answer.
pub fn call(api: &str, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.{action}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or("{}");
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

/// Calls `action` until `done` holds for its answer, within `timeout`;
/// returns that answer.
pub fn wait_until(
    api: &str,
    action: &str,
    body: serde_json::Value,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let (_, out) = call(api, action, body.clone());
        if done(&out) {
            return out;
        }
        assert!(
            t0.elapsed() < timeout,
            "{action} never answered as wanted within {timeout:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `skiff server` on free ports with `data` as its data directory
/// (and `extra` arguments); returns it, its API address (HOST:PORT) and its
/// later stderr lines.
pub fn start_server(
    data: &std::path::Path,
    extra: &[&str],
) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--api", "127.0.0.1:0", "--ingress", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stderr.take().unwrap());
    let mut said = Vec::new();
    let first = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the server never said where its API is ({e}): {said:?}"));
        if line.contains("API on") {
            break line;
        }
        said.push(line);
    };
    let api = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no API address in {first:?}"))
        .to_string();
    (child, api, rx)
}

mod etcd;
#[allow(unused_imports)]
pub use etcd::{free_port, Etcd};
