//! `skiff up` as a newcomer runs it: the bundled example answers on the URL
//! it prints; a second `up` on the same data directory rolls the service
//! to a new revision; a bad app is refused with the file named.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Up {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Up {
    fn start(data: &std::path::Path, app: Option<&str>) -> Up {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("up");
        if let Some(a) = app {
            cmd.arg(a);
        }
        let mut child = cmd
            .args([
                "--api",
                "127.0.0.1:0",
                "--ingress",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = common::lines(child.stdout.take().unwrap());
        let err = common::lines(child.stderr.take().unwrap());
        Up { child, out, err }
    }

    /// The URL from "NAME is up: URL".
    fn url(&self) -> String {
        let line = self
            .out
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "no URL; stderr: {:?}",
                    self.err.try_iter().collect::<Vec<_>>()
                )
            });
        assert!(line.contains(" is up: http://"), "{line}");
        line.split(" is up: ").nth(1).unwrap().to_string()
    }

    /// SIGTERM, then the exit code (minus the signal number when a signal
    /// ended it) and everything it wrote to stderr.
    fn stop(mut self) -> (i32, Vec<String>) {
        use std::os::unix::process::ExitStatusExt;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let code = status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0));
        (code, self.err.iter().collect())
    }
}

/// GET `url` (http://HOST:PORT/PATH) from 127.0.0.1 with its Host.
fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_once('/').unwrap();
    let port = hostport.rsplit(':').next().unwrap();
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn up_serves_the_example_and_a_second_up_rolls_it() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), None);
    let url = up.url();
    assert!(url.starts_with("http://hello.localhost:"), "{url}");
    let (status, body) = get(&url);
    assert_eq!(status, 200);
    assert!(body.contains("hello from skiff (ahoy)"), "{body}");
    let (code, err) = up.stop();
    assert_eq!(code, 0, "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains("created service hello running hello:1")),
        "{err:?}"
    );

    let again = Up::start(data.path(), Some("examples/hello"));
    let url = again.url();
    assert_eq!(get(&url).0, 200);
    let (code, err) = again.stop();
    assert_eq!(code, 0, "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains("rolling service hello to hello:2")),
        "{err:?}"
    );
}

#[test]
fn a_bad_app_is_refused_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let td = dir.path().join("taskdef.json");
    std::fs::write(
        &td,
        r#"{"family": "x", "containerDefinitions": [{"name": "a", "image": "a.wasm"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("up")
        .arg(dir.path())
        .args([
            "--api",
            "127.0.0.1:0",
            "--ingress",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the task definition was refused"), "{err}");
    assert!(err.contains("memory"), "{err}");

    std::fs::write(&td, "{not json").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("up")
        .arg(dir.path())
        .args(["--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taskdef.json is not valid JSON"), "{err}");
}
