//! `skiff exec`, as a user runs it: the real binary, real guests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn dist(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guests/dist")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn skiff() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
    // Keep compiled code out of the user's cache.
    c.env(
        "SKIFF_CACHE_DIR",
        std::env::temp_dir().join("skiff-test-cache"),
    );
    c
}

fn exec(args: &[&str]) -> Output {
    skiff().arg("exec").args(args).output().expect("run skiff")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn passes_output_and_exit_code_through() {
    let echo = dist("echo.wasm");
    let out = exec(&["--env", "NAME=ferris", &echo, "--", "hi", "--exit", "7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("argv[0]=echo\n"), "{stdout}");
    assert!(stdout.contains("argv[1]=hi\n"), "{stdout}");
    assert!(stdout.contains("env NAME=ferris\n"), "{stdout}");
}

#[test]
fn json_is_the_last_line() {
    let out = exec(&["--json", &dist("echo.wasm"), "--", "--exit", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).expect(last);
    assert_eq!(v["outcome"], "exit");
    assert_eq!(v["exit_code"], 2);
    assert!(v["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(v["wall_ms"].is_u64());
    assert!(v["reason"].as_str().unwrap().contains("code 2"));
}

#[test]
fn each_limit_has_its_outcome_words_and_exit_code() {
    let spin = dist("spin.wasm");
    let hog = dist("hog.wasm");
    let crash = dist("crash.wasm");
    let cases: [(&[&str], &str, i32, &str); 4] = [
        (
            &["--timeout", "200ms", &spin, "--", "100000000000"],
            "timeout",
            124,
            "timed out after 200ms",
        ),
        (
            &["--fuel", "1000000", &spin, "--", "100000000000"],
            "out_of_fuel",
            152,
            "1000000",
        ),
        (&["--memory", "16", &hog], "memory_limit", 137, "16 MiB"),
        (
            &[&crash, "--", "oob"],
            "trap",
            134,
            "out-of-bounds memory access",
        ),
    ];
    for (args, outcome, code, words) in cases {
        // In words, on stderr.
        let out = exec(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        // As JSON.
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = exec(&with_json);
        let stdout = text(&out.stdout);
        let v: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).expect(&stdout);
        assert_eq!(v["outcome"], outcome, "{args:?}");
        assert_eq!(v["exit_code"], serde_json::Value::Null);
        assert_eq!(out.status.code(), Some(code));
    }
}

#[test]
fn cpu_limit_is_accepted_and_run_completes() {
    let out = exec(&[
        "--cpu",
        "512",
        "--json",
        &dist("spin.wasm"),
        "--",
        "1000000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_bad_image_says_what_was_expected() {
    let dir = std::env::temp_dir().join(format!("skiff-exec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-wasm.wasm");
    std::fs::write(&bad, "this is text").unwrap();
    let out = exec(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not-wasm.wasm") && stderr.contains("\\0asm"),
        "{stderr}"
    );

    let out = exec(&["/nonexistent/app.wasm"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("cannot read image /nonexistent/app.wasm"));
}

#[test]
fn bad_flags_are_refused_with_the_fix() {
    let out = exec(&["--timeout", "5", &dist("echo.wasm")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("500ms"), "{}", text(&out.stderr));
    let out = exec(&["--env", "NOEQUALS", &dist("echo.wasm")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("K=V"), "{}", text(&out.stderr));
}

#[test]
fn mounted_directories_are_read_only_by_default() {
    let dir = std::env::temp_dir().join(format!("skiff-exec-mount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), "from host").unwrap();
    let ro = format!("{}:/data", dir.display());
    let out = exec(&[
        "--dir",
        &ro,
        &dist("echo.wasm"),
        "--",
        "--cat",
        "/data/in.txt",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("from host"));
    let out = exec(&[
        "--dir",
        &ro,
        &dist("echo.wasm"),
        "--",
        "--write",
        "/data/out.txt",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let rw = format!("{}:/data:rw", dir.display());
    let out = exec(&[
        "--dir",
        &rw,
        &dist("echo.wasm"),
        "--",
        "--write",
        "/data/out.txt",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "written"
    );
}

/// A served HTTP guest, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn serves_an_http_guest() {
    let mut child = skiff()
        .args([
            "exec",
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            "300ms",
            "--env",
            "GREETING=ahoy",
            "--instance-reuse",
            "1000",
        ])
        .arg(dist("hello-http.wasm"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let served = Served(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("skiff announced nothing");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let resp = http_get(&addr, "/");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\r\n\r\n") && resp.contains("hello from skiff (ahoy)\n"),
        "{resp}"
    );

    // Past the timeout: 504, and the server goes on serving.
    let resp = http_get(&addr, "/spin?n=100000000000");
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert!(resp.contains("timed out after 300ms"), "{resp}");
    let resp = http_get(&addr, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // --instance-reuse: the instance that answered /healthz answers the
    // next requests too (the one that timed out was dropped). `skiff exec`
    // runs on one thread, so an instance is back before the next request.
    let counts: Vec<u64> = (0..5)
        .map(|_| {
            let resp = http_get(&addr, "/counter");
            let n = resp
                .rsplit("request ")
                .next()
                .and_then(|r| r.split(' ').next());
            n.and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{resp}"))
        })
        .collect();
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    drop(served);
}

#[test]
fn instance_reuse_must_be_at_least_one() {
    let out = skiff()
        .args(["exec", "--instance-reuse", "0"])
        .arg(dist("hello-http.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--instance-reuse"), "{err}");
}

#[test]
fn exit_codes_that_do_not_fit_a_status_stay_failures() {
    let dir = std::env::temp_dir().join(format!("skiff-exec-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wat = dir.join("exit256.wat");
    std::fs::write(
        &wat,
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 256))))"#,
    )
    .unwrap();
    // WASI allows exit codes below 126; anything else is the guest's error.
    let out = exec(&["--json", wat.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["outcome"], "trap");
    assert_eq!(
        v["reason"],
        "trapped: host error: exit with invalid exit status outside of [0..126)"
    );
}

#[test]
fn falls_back_to_on_demand_memory_when_the_pool_cannot_be_reserved() {
    // A 64 GiB address-space limit leaves no room for the pool's
    // reservation (a slot of several GiB per instance), but plenty for
    // one instance allocated on demand.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 67108864 && exec '{}' exec --no-cache '{}' -- --exit 5",
            env!("CARGO_BIN_EXE_skiff"),
            dist("echo.wasm")
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
}
