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
    let first = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server never said where its API is");
        if line.contains("API on") {
            break line;
        }
    };
    let api = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no API address in {first:?}"))
        .to_string();
    (child, api, rx)
}
