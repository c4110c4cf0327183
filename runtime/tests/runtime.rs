//! Loading, outcomes, limits and the sandbox, through the public API.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use skiff_runtime::{
    Allocation, Budget, GuestKind, HttpHandler, Limits, LoadError, Mount, Outcome, RunLimits,
    Runtime, RuntimeConfig, Sandbox, TrapKind,
};

// ---------------------------------------------------------------- loading

#[test]
fn tells_the_three_kinds_apart() {
    assert_eq!(load("echo.wasm").kind(), GuestKind::P1Command);
    assert_eq!(load("spin.wasm").kind(), GuestKind::P2Command);
    assert_eq!(load("hello-http.wasm").kind(), GuestKind::Http);
}

#[test]
fn garbage_is_not_wasm() {
    let e = rt()
        .load(b"#!/bin/sh\necho hi\n")
        .err()
        .expect("garbage must not load");
    assert!(matches!(e, LoadError::NotWasm { .. }), "{e:?}");
    assert!(e.to_string().contains("expected the magic bytes"), "{e}");
    let e = rt().load(b"").err().unwrap();
    assert!(e.to_string().contains("empty file"), "{e}");
}

#[test]
fn truncated_binary_is_invalid() {
    let bytes = std::fs::read(dist("echo.wasm")).unwrap();
    let e = rt()
        .load(&bytes[..bytes.len() / 2])
        .err()
        .expect("truncated must not load");
    assert!(matches!(e, LoadError::Invalid(_)), "{e:?}");
}

#[test]
fn a_module_without_start_is_not_runnable() {
    let e = rt()
        .load(br#"(module (func (export "main")))"#)
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::NotRunnable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("main") && msg.contains("_start"), "{msg}");
}

#[test]
fn a_component_of_the_wrong_world_is_not_runnable() {
    let e = rt().load(b"(component)").err().unwrap();
    assert!(matches!(e, LoadError::NotRunnable { .. }), "{e:?}");
    assert!(e.to_string().contains("wasi:cli/run"), "{e}");
}

#[test]
fn unknown_imports_are_a_link_error() {
    let wat = r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#;
    let e = rt().load(wat.as_bytes()).err().unwrap();
    assert!(matches!(e, LoadError::Link(_)), "{e:?}");
    assert!(e.to_string().contains("launch_missiles"), "{e}");
}

#[test]
fn missing_file_names_the_path() {
    let e = rt().load_file("/nonexistent/app.wasm").err().unwrap();
    assert!(e.to_string().contains("/nonexistent/app.wasm"), "{e}");
}

#[test]
fn compiled_code_is_cached_on_disk_across_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config()).unwrap();
    let g = first.load_file(dist("hello-http.wasm")).unwrap();
    assert!(!g.from_cache());
    drop(first);

    // A second runtime (as after a process restart) loads without compiling.
    let second = Runtime::new(config()).unwrap();
    let g2 = second.load_file(dist("hello-http.wasm")).unwrap();
    assert!(g2.from_cache());
    assert_eq!(g.digest(), g2.digest());

    // A corrupt artifact is recompiled, not trusted.
    let artifact = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    std::fs::write(&artifact, b"garbage").unwrap();
    let third = Runtime::new(config()).unwrap();
    let g3 = third.load_file(dist("hello-http.wasm")).unwrap();
    assert!(!g3.from_cache());
    assert_eq!(g3.kind(), GuestKind::Http);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------- outcomes

#[test]
fn exit_code_args_and_env_pass_through() {
    let (mut sb, lines) = sandbox(&["echo", "hello", "--exit", "3"]);
    sb.env = vec![("COLOUR".into(), "teal".into())];
    let r = run(
        &load("echo.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(r.outcome, Outcome::Exit(3));
    let out = lines.stdout();
    assert!(out.contains(&"argv[0]=echo".to_string()), "{out:?}");
    assert!(out.contains(&"argv[1]=hello".to_string()), "{out:?}");
    assert!(out.contains(&"env COLOUR=teal".to_string()), "{out:?}");
    // Only the declared environment: nothing of the host's leaks in.
    assert_eq!(
        out.iter().filter(|l| l.starts_with("env ")).count(),
        1,
        "{out:?}"
    );
    assert!(r.fuel_consumed > 0);
    assert!(r.peak_memory_bytes > 0);
}

#[test]
fn stderr_is_captured_separately() {
    let (sb, lines) = sandbox(&["echo", "--stderr", "oops"]);
    let r = run(
        &load("echo.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(r.outcome, Outcome::Exit(0));
    assert_eq!(lines.stderr(), vec!["oops".to_string()]);
}

#[test]
fn preview2_command_runs_to_completion() {
    let (sb, lines) = sandbox(&["spin", "1000"]);
    let r = run(
        &load("spin.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(r.outcome, Outcome::Exit(0));
    assert!(
        lines.stdout()[0].starts_with("spun 1000 iterations"),
        "{:?}",
        lines.stdout()
    );
}

#[test]
fn fuel_budget_stops_a_run() {
    let (sb, _) = sandbox(&["spin", "1000000000"]);
    let limits = RunLimits {
        fuel: Some(5_000_000),
        timeout: None,
    };
    let r = run(&load("spin.wasm"), &budget(64, None), &sb, limits);
    assert_eq!(r.outcome, Outcome::OutOfFuel { budget: 5_000_000 });
    assert!(
        r.fuel_consumed >= 4_900_000 && r.fuel_consumed <= 5_000_000,
        "{}",
        r.fuel_consumed
    );
}

#[test]
fn fuel_is_deterministic() {
    let (sb, _) = sandbox(&["spin", "100000"]);
    let a = run(
        &load("spin.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    let b = run(
        &load("spin.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(a.fuel_consumed, b.fuel_consumed);
    assert!(a.fuel_consumed > 100_000);
}

#[test]
fn timeout_stops_an_infinite_loop() {
    let wat = r#"(module (func (export "_start") (loop br 0)))"#;
    let g = rt().load(wat.as_bytes()).unwrap();
    let limits = RunLimits {
        fuel: None,
        timeout: Some(Duration::from_millis(200)),
    };
    let r = run(&g, &budget(64, None), &Sandbox::default(), limits);
    assert_eq!(
        r.outcome,
        Outcome::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    assert!(
        r.wall >= Duration::from_millis(200) && r.wall < Duration::from_secs(5),
        "{:?}",
        r.wall
    );
}

#[test]
fn each_trap_kind_is_typed_with_a_backtrace() {
    let cases = [
        ("unreachable", TrapKind::Unreachable),
        ("oob", TrapKind::MemoryOutOfBounds),
        ("stack-overflow", TrapKind::StackOverflow),
        ("panic", TrapKind::Unreachable),
    ];
    for (how, want) in cases {
        let (sb, lines) = sandbox(&["crash", how]);
        let r = run(
            &load("crash.wasm"),
            &budget(64, None),
            &sb,
            RunLimits::default(),
        );
        match &r.outcome {
            Outcome::Trap { kind, backtrace } => {
                assert_eq!(kind, &want, "crash {how}");
                assert!(!backtrace.is_empty(), "crash {how}: no backtrace");
            }
            other => panic!("crash {how}: expected a trap, got {other:?}"),
        }
        if how == "panic" {
            let err = lines.stderr().join("\n");
            assert!(err.contains("crash guest asked to panic"), "{err}");
        }
    }
}

#[test]
fn integer_division_by_zero_is_typed() {
    let wat = r#"(module (func (export "_start") (drop (i32.div_s (i32.const 1) (i32.const 0)))))"#;
    let g = rt().load(wat.as_bytes()).unwrap();
    let r = run(
        &g,
        &budget(64, None),
        &Sandbox::default(),
        RunLimits::default(),
    );
    assert!(
        matches!(
            r.outcome,
            Outcome::Trap {
                kind: TrapKind::IntegerDivisionByZero,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
}

// ---------------------------------------------------------------- memory

#[test]
fn memory_hog_hits_its_limit() {
    let (sb, _) = sandbox(&["hog"]);
    let r = run(
        &load("hog.wasm"),
        &budget(32, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(
        r.outcome,
        Outcome::MemoryLimit {
            limit_bytes: 32 << 20
        }
    );
    assert!(r.peak_memory_bytes <= 32 << 20, "{}", r.peak_memory_bytes);
    assert!(r.peak_memory_bytes >= 16 << 20, "{}", r.peak_memory_bytes);
}

#[test]
fn memory_grow_past_the_limit_fails_and_the_guest_can_cope() {
    let (sb, lines) = sandbox(&["hog", "--graceful"]);
    let r = run(
        &load("hog.wasm"),
        &budget(32, None),
        &sb,
        RunLimits::default(),
    );
    assert_eq!(r.outcome, Outcome::Exit(0));
    let out = lines.stdout().join("\n");
    let mib: u64 = out
        .trim_start_matches("refused after ")
        .trim_end_matches(" MiB")
        .parse()
        .expect(&out);
    assert!((16..32).contains(&mib), "{out}");
}

#[test]
fn initial_memory_above_the_limit_does_not_start() {
    // 100 pages = 6.25 MiB of initial memory, under a 4 MiB limit.
    let wat = r#"(module (memory 100) (func (export "_start")))"#;
    let g = rt().load(wat.as_bytes()).unwrap();
    let r = run(
        &g,
        &budget(4, None),
        &Sandbox::default(),
        RunLimits::default(),
    );
    assert_eq!(
        r.outcome,
        Outcome::MemoryLimit {
            limit_bytes: 4 << 20
        }
    );
}

#[test]
fn the_memory_limit_is_shared_by_a_tasks_live_instances() {
    // Holds 320 pages (20 MiB) while it loops until its timeout.
    let holder = rt()
        .load(br#"(module (memory 320) (func (export "_start") (loop br 0)))"#)
        .unwrap();
    let task = budget(32, None);
    let sb = Sandbox::default();
    block_on(async {
        let long = RunLimits {
            fuel: None,
            timeout: Some(Duration::from_secs(10)),
        };
        let first = rt().run(&holder, &task, &sb, long);
        let second = async {
            // Wait (bounded) until the first instance holds its memory.
            let t0 = std::time::Instant::now();
            while task.memory_used() < 20 << 20 {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "first instance never started"
                );
                tokio::task::yield_now().await;
            }
            let short = RunLimits {
                fuel: None,
                timeout: Some(Duration::from_millis(100)),
            };
            rt().run(&holder, &task, &sb, short).await
        };
        tokio::pin!(first);
        let second = tokio::select! {
            r = second => r,
            _ = &mut first => panic!("the first run ended before the second was tried"),
        };
        assert_eq!(
            second.outcome,
            Outcome::MemoryLimit {
                limit_bytes: 32 << 20
            }
        );
    });
    // Everything is released when the instances are gone.
    assert_eq!(task.memory_used(), 0);
    assert!(task.memory_peak() >= 20 << 20);
}

#[test]
fn mounts_are_read_only_unless_writable_and_nothing_else_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.txt"), "hi from the host").unwrap();
    let mount = |writable| Mount {
        host: dir.path().to_path_buf(),
        guest: "/data".into(),
        writable,
    };
    let echo = load("echo.wasm");
    let task = budget(64, None);

    let (mut sb, lines) = sandbox(&["echo", "--cat", "/data/greeting.txt"]);
    sb.mounts = vec![mount(false)];
    assert_eq!(
        run(&echo, &task, &sb, RunLimits::default()).outcome,
        Outcome::Exit(0)
    );
    assert!(
        lines.stdout().iter().any(|l| l == "hi from the host"),
        "{:?}",
        lines.stdout()
    );

    let (mut sb, _) = sandbox(&["echo", "--write", "/data/new.txt"]);
    sb.mounts = vec![mount(false)];
    assert_eq!(
        run(&echo, &task, &sb, RunLimits::default()).outcome,
        Outcome::Exit(4)
    );
    assert!(!dir.path().join("new.txt").exists());

    let (mut sb, _) = sandbox(&["echo", "--write", "/data/new.txt"]);
    sb.mounts = vec![mount(true)];
    assert_eq!(
        run(&echo, &task, &sb, RunLimits::default()).outcome,
        Outcome::Exit(0)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written"
    );

    for escape in [
        "/etc/passwd",
        "/data/../../../../etc/passwd",
        "../etc/passwd",
    ] {
        let (mut sb, _) = sandbox(&["echo", "--cat", escape]);
        sb.mounts = vec![mount(true)];
        assert_eq!(
            run(&echo, &task, &sb, RunLimits::default()).outcome,
            Outcome::Exit(3),
            "{escape} was readable"
        );
    }
}

#[test]
fn symlinks_cannot_lead_out_of_a_mount() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside.txt"), "inside").unwrap();
    let outside_name = outside.path().file_name().unwrap().to_str().unwrap();
    // Links an attacker left in the volume on the host side.
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), dir.path().join("abs")).unwrap();
    std::os::unix::fs::symlink(
        format!("../{outside_name}/secret.txt"),
        dir.path().join("rel"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dir")).unwrap();
    std::os::unix::fs::symlink("inside.txt", dir.path().join("ok")).unwrap();
    let echo = load("echo.wasm");
    let task = budget(64, None);
    let run_in = |args: &[&str]| {
        let (mut sb, lines) = sandbox(args);
        sb.mounts = vec![Mount {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            writable: true,
        }];
        let outcome = run(&echo, &task, &sb, RunLimits::default()).outcome;
        let leaked = lines.stdout().iter().any(|l| l.contains("host secret"));
        assert!(!leaked, "{args:?} read the secret");
        (outcome, lines)
    };

    // A link that stays inside is followed.
    let (outcome, lines) = run_in(&["echo", "--cat", "/data/ok"]);
    assert_eq!(outcome, Outcome::Exit(0));
    assert!(lines.stdout().iter().any(|l| l == "inside"));

    for path in ["/data/abs", "/data/rel", "/data/dir/secret.txt"] {
        assert_eq!(
            run_in(&["echo", "--cat", path]).0,
            Outcome::Exit(3),
            "{path}"
        );
    }
    for path in ["/data/abs", "/data/dir/new.txt"] {
        assert_eq!(
            run_in(&["echo", "--write", path]).0,
            Outcome::Exit(4),
            "{path}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "host secret"
    );
    assert!(!outside.path().join("new.txt").exists());

    // Links the guest makes itself may exist, but lead nowhere outside.
    for target in [
        "/etc/passwd",
        "../../../../../etc/passwd",
        &format!("../{outside_name}/secret.txt"),
    ] {
        let (outcome, lines) = run_in(&[
            "echo",
            "--symlink",
            target,
            "made",
            "--cat",
            "/data/made",
            "--rm",
            "/data/made",
        ]);
        assert_ne!(outcome, Outcome::Exit(0), "{target}: {:?}", lines.stderr());
        let _ = std::fs::remove_file(dir.path().join("made"));
    }
}

#[test]
fn a_read_only_mount_cannot_be_changed_in_any_way() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside.txt"), "inside").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let echo = load("echo.wasm");
    let task = budget(64, None);
    for args in [
        &["--write", "/data/inside.txt"][..],
        &["--write", "/data/sub/new.txt"],
        &["--rm", "/data/inside.txt"],
        &["--mkdir", "/data/newdir"],
        &["--rename", "/data/inside.txt", "/data/moved.txt"],
        &["--symlink", "inside.txt", "link"],
    ] {
        let mut argv = vec!["echo"];
        argv.extend_from_slice(args);
        let (mut sb, lines) = sandbox(&argv);
        sb.mounts = vec![Mount {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            writable: false,
        }];
        assert_eq!(
            run(&echo, &task, &sb, RunLimits::default()).outcome,
            Outcome::Exit(4),
            "{args:?} changed a read-only mount: {:?}",
            lines.stdout()
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["inside.txt", "sub"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("inside.txt")).unwrap(),
        "inside"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
        0
    );
}

#[test]
fn a_missing_mount_is_a_load_error_naming_the_directory() {
    let (mut sb, _) = sandbox(&["echo"]);
    sb.mounts = vec![Mount {
        host: "/nonexistent/dir".into(),
        guest: "/data".into(),
        writable: false,
    }];
    let r = run(
        &load("echo.wasm"),
        &budget(64, None),
        &sb,
        RunLimits::default(),
    );
    match r.outcome {
        Outcome::LoadError(e) => assert!(e.to_string().contains("/nonexistent/dir"), "{e}"),
        other => panic!("expected a load error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- http

fn get(path: &str) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

async fn body_text(resp: hyper::Response<skiff_runtime::ResponseBody>) -> String {
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn handler(rt: &Runtime, limits: RunLimits) -> HttpHandler {
    let guest = rt.load_file(dist("hello-http.wasm")).unwrap();
    let sandbox = Sandbox {
        env: vec![("GREETING".into(), "ahoy".into())],
        ..Sandbox::default()
    };
    HttpHandler::new(rt, &guest, budget(64, None), sandbox, limits).unwrap()
}

/// A handler of hello-http in `sandbox`, with the default limits.
fn hello_in(guest: &skiff_runtime::Guest, sandbox: Sandbox) -> HttpHandler {
    HttpHandler::new(rt(), guest, budget(64, None), sandbox, RunLimits::default()).unwrap()
}

/// A request for hello-http to fetch `url` with `method` and `body`.
fn fetch_request(
    method: &str,
    url: &str,
    body: impl Into<bytes::Bytes>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("http://localhost/fetch?url={url}"))
        .body(http_body_util::Full::new(body.into()))
        .unwrap()
}

#[test]
fn http_guest_answers_with_its_env() {
    let h = handler(rt(), RunLimits::default());
    block_on(async {
        for _ in 0..3 {
            let resp = h.handle(get("/")).await.expect("response");
            assert_eq!(resp.status(), 200);
            assert_eq!(body_text(resp).await, "hello from skiff (ahoy)\n");
        }
    });
    assert_eq!(
        h.budget().memory_used(),
        0,
        "instances must release their memory"
    );
}

/// A listener on 127.0.0.1 that answers every request "listener" and
/// counts the connections that reached it.
fn recording_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nlistener\n",
            );
        }
    });
    (port, hits)
}

#[test]
fn outbound_http_reaches_only_allowed_hosts() {
    let (port, hits) = recording_listener();
    let guest = rt().load_file(dist("hello-http.wasm")).unwrap();
    // The policy here allows one (scheme, host, port) or none; the rules
    // that users write are the engine's (`model::outbound`), tested there
    // and through task definitions.
    let fetch = |allowed: Option<(&str, &str, u16)>| {
        let outbound: std::sync::Arc<dyn skiff_runtime::OutboundPolicy> = match allowed {
            None => std::sync::Arc::new(skiff_runtime::DenyAll),
            Some((s, h, p)) => {
                let (s, h) = (s.to_string(), h.to_string());
                std::sync::Arc::new(move |scheme: &str, host: &str, port: u16| {
                    scheme == s && host == h && port == p
                })
            }
        };
        let sandbox = Sandbox {
            outbound,
            ..Sandbox::default()
        };
        let h = hello_in(&guest, sandbox);
        block_on(async {
            let resp = h
                .handle(get(&format!("/fetch?url=http://127.0.0.1:{port}/x")))
                .await
                .expect("response");
            (resp.status().as_u16(), body_text(resp).await)
        })
    };
    use std::sync::atomic::Ordering::SeqCst;
    // Nothing allowed, and near misses of the listener: another port,
    // another scheme, another name for the host.
    for near in [
        None,
        Some(("http", "127.0.0.1", 1)),
        Some(("https", "127.0.0.1", port)),
        Some(("http", "localhost", port)),
    ] {
        let (status, body) = fetch(near);
        assert_eq!(status, 502, "{near:?}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{body}");
        assert_eq!(hits.load(SeqCst), 0, "{near:?} let a request out");
    }
    let (status, body) = fetch(Some(("http", "127.0.0.1", port)));
    assert_eq!((status, body.as_str()), (200, "fetched 200: listener\n"));
    assert_eq!(hits.load(SeqCst), 1);
}

/// Answers every local request with what it was asked.
struct EchoLocal;

/// The address the test's local endpoint answers at.
const LOCAL_HOST: &str = "169.254.170.2";

impl skiff_runtime::LocalEndpoint for EchoLocal {
    fn host(&self) -> &str {
        LOCAL_HOST
    }

    fn answer(
        &self,
        req: skiff_runtime::LocalRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = skiff_runtime::LocalResponse> + Send>>
    {
        Box::pin(async move {
            skiff_runtime::LocalResponse {
                status: 201,
                content_type: "text/plain",
                body: format!("{} {} {}", req.method, req.path, req.body.len()),
            }
        })
    }
}

#[test]
fn requests_to_the_local_endpoint_address_are_answered_in_process() {
    let guest = rt().load_file(dist("hello-http.wasm")).unwrap();
    let ask = |local: bool, method: &str, url: &str, body: Vec<u8>| {
        let sandbox = Sandbox {
            // Nothing may go out: the local endpoints need no rule.
            local: local.then(|| Arc::new(EchoLocal) as Arc<dyn skiff_runtime::LocalEndpoint>),
            ..Sandbox::default()
        };
        let h = hello_in(&guest, sandbox);
        let req = fetch_request(method, url, body);
        block_on(async {
            let resp = h.handle(req).await.expect("response");
            (resp.status().as_u16(), body_text(resp).await)
        })
    };
    let base = format!("http://{LOCAL_HOST}");
    assert_eq!(
        ask(true, "GET", &format!("{base}/v4/x/task?q=1"), vec![]),
        (200, "fetched 201: GET /v4/x/task 0".to_string())
    );
    assert_eq!(
        ask(
            true,
            "PUT",
            &format!("{base}:80/api/x/state"),
            vec![b'{'; 1000]
        ),
        (200, "fetched 201: PUT /api/x/state 1000".to_string())
    );
    // A body over the bound is refused before the endpoint sees it.
    let big = vec![b'x'; skiff_runtime::MAX_LOCAL_BODY + 1];
    let (status, body) = ask(true, "PUT", &format!("{base}/api/x/state"), big);
    assert_eq!(status, 200);
    assert!(body.starts_with("fetched 413: "), "{body}");
    // Another port, HTTPS, or no endpoint: an outbound host like any other.
    for (local, url) in [
        (true, format!("{base}:8080/v4/x")),
        (true, format!("https://{LOCAL_HOST}/v4/x")),
        (false, format!("{base}/v4/x")),
    ] {
        let (status, body) = ask(local, "GET", &url, vec![]);
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
}

/// Links one name, `backend:8080`, and answers its requests with what
/// it was asked, the body echoed back.
struct EchoLink;

impl skiff_runtime::ServiceLinks for EchoLink {
    fn links(&self, host: &str, port: u16) -> bool {
        (host, port) == ("backend", 8080)
    }

    fn send(
        &self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = skiff_runtime::LinkResult> + Send>>
    {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let text = format!(
                "{} {} {}",
                parts.method,
                parts.uri,
                String::from_utf8_lossy(&body)
            );
            Ok(hyper::Response::builder()
                .status(202)
                .body(skiff_runtime::full_body(text))
                .unwrap())
        })
    }
}

#[test]
fn linked_services_are_answered_in_process_and_others_are_not() {
    let guest = rt().load_file(dist("hello-http.wasm")).unwrap();
    let sandbox = Sandbox {
        // Nothing may go out: a linked service needs no rule.
        links: Some(Arc::new(EchoLink)),
        ..Sandbox::default()
    };
    let h = hello_in(&guest, sandbox);
    let ask = |method: &str, url: &str, body: &'static str| {
        let req = fetch_request(method, url, body);
        block_on(async {
            let resp = h.handle(req).await.expect("response");
            (resp.status().as_u16(), body_text(resp).await)
        })
    };
    assert_eq!(
        ask("POST", "http://backend:8080/orders?x=1", "one order"),
        (
            200,
            "fetched 202: POST http://backend:8080/orders?x=1 one order".to_string()
        )
    );
    assert_eq!(
        ask("GET", "http://BACKEND:8080/", ""),
        (200, "fetched 202: GET http://BACKEND:8080/ ".to_string())
    );
    // Another port, HTTPS, or another name: an outbound host like any other.
    for url in [
        "http://backend/",
        "http://backend:8081/",
        "https://backend:8080/",
        "http://frontend:8080/",
    ] {
        let (status, body) = ask("GET", url, "");
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
}

#[test]
fn http_works_with_on_demand_allocation_too() {
    let rt = Runtime::new(RuntimeConfig {
        allocation: Allocation::OnDemand,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert!(!rt.is_pooling());
    let h = handler(&rt, RunLimits::default());
    block_on(async {
        let resp = h.handle(get("/healthz")).await.expect("response");
        assert_eq!(body_text(resp).await, "ok\n");
    });
}

#[test]
fn http_request_limits_fail_the_request_not_the_handler() {
    let limits = RunLimits {
        fuel: Some(50_000_000),
        timeout: Some(Duration::from_millis(300)),
    };
    let h = handler(rt(), limits);
    block_on(async {
        // Too much work for the fuel budget.
        let r = h
            .handle(get("/spin?n=100000000000"))
            .await
            .expect_err("must fail");
        assert_eq!(r.outcome, Outcome::OutOfFuel { budget: 50_000_000 });
        // The handler still serves.
        let resp = h.handle(get("/")).await.expect("response after a failure");
        assert_eq!(resp.status(), 200);
    });
    let h = handler(
        rt(),
        RunLimits {
            fuel: None,
            timeout: Some(Duration::from_millis(200)),
        },
    );
    block_on(async {
        let r = h
            .handle(get("/spin?n=100000000000"))
            .await
            .expect_err("must time out");
        assert_eq!(
            r.outcome,
            Outcome::Timeout {
                limit: Duration::from_millis(200)
            }
        );
        let resp = h.handle(get("/")).await.expect("response after a timeout");
        assert_eq!(resp.status(), 200);
    });
}

/// Waits (bounded) until the handler's last instance is done with its
/// request, so that a reused instance is back among the idle ones.
async fn settled(h: &HttpHandler) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "an instance is still busy after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// GET `path` and the body, after the previous request's instance is done.
async fn counter(h: &HttpHandler) -> String {
    settled(h).await;
    let resp = h.handle(get("/counter")).await.expect("response");
    assert_eq!(resp.status(), 200);
    body_text(resp).await
}

#[test]
fn without_reuse_every_request_gets_a_fresh_instance() {
    let h = handler(rt(), RunLimits::default());
    block_on(async {
        for _ in 0..4 {
            assert_eq!(counter(&h).await, "request 1 of this instance\n");
        }
        settled(&h).await;
    });
    assert_eq!(h.instantiations(), 4);
    assert_eq!(h.idle_instances(), 0);
}

#[test]
fn a_reused_instance_keeps_its_state_for_up_to_n_requests() {
    let h = handler(rt(), RunLimits::default()).reuse_instances(3);
    let bodies: Vec<String> = block_on(async {
        let mut bodies = Vec::new();
        for _ in 0..7 {
            bodies.push(counter(&h).await);
        }
        settled(&h).await;
        bodies
    });
    let numbers: Vec<&str> = bodies
        .iter()
        .map(|b| b.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3", "1", "2", "3", "1"]);
    assert_eq!(h.instantiations(), 3);
    // The last instance waits for more; its memory stays charged to the
    // task until the handler goes.
    assert_eq!(h.idle_instances(), 1);
    assert!(h.budget().memory_used() > 0);
    let budget = h.budget().clone();
    drop(h);
    assert_eq!(
        budget.memory_used(),
        0,
        "a dropped handler frees its idle instances"
    );
}

#[test]
fn an_instance_that_fails_is_never_reused() {
    let limits = RunLimits {
        fuel: Some(50_000_000),
        timeout: Some(Duration::from_millis(300)),
    };
    let h = handler(rt(), limits).reuse_instances(1000);
    block_on(async {
        assert_eq!(counter(&h).await, "request 1 of this instance\n");
        assert_eq!(counter(&h).await, "request 2 of this instance\n");
        // A trap: the next request starts over in a fresh instance.
        settled(&h).await;
        let r = h.handle(get("/trap")).await.expect_err("must trap");
        assert!(matches!(r.outcome, Outcome::Trap { .. }), "{:?}", r.outcome);
        assert_eq!(counter(&h).await, "request 1 of this instance\n");
        // Out of fuel: the same.
        assert_eq!(counter(&h).await, "request 2 of this instance\n");
        settled(&h).await;
        let r = h
            .handle(get("/spin?n=100000000000"))
            .await
            .expect_err("must run out of fuel");
        assert_eq!(r.outcome, Outcome::OutOfFuel { budget: 50_000_000 });
        assert_eq!(counter(&h).await, "request 1 of this instance\n");
        settled(&h).await;
    });
    assert_eq!(h.instantiations(), 3);
}

#[test]
fn a_reused_instance_gets_a_whole_fuel_budget_for_each_request() {
    // Each request spins for about 60% of the budget: with the budget
    // carried over from one request to the next, the second would fail.
    let spin = "/spin?n=1000000";
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reports.clone();
    let probe = handler(rt(), RunLimits::default())
        .on_report(move |r| seen.lock().unwrap().push(r.fuel_consumed));
    block_on(async {
        let resp = probe.handle(get(spin)).await.expect("response");
        body_text(resp).await;
        settled(&probe).await;
    });
    let fuel = reports.lock().unwrap()[0];
    assert!(fuel > 0);
    let budget = fuel * 10 / 6;
    let h = handler(
        rt(),
        RunLimits {
            fuel: Some(budget),
            timeout: None,
        },
    )
    .reuse_instances(10);
    block_on(async {
        for i in 0..5 {
            settled(&h).await;
            let resp = h
                .handle(get(spin))
                .await
                .unwrap_or_else(|r| panic!("request {i} failed: {:?}", r.outcome));
            assert_eq!(resp.status(), 200);
            body_text(resp).await;
        }
        settled(&h).await;
    });
    assert_eq!(h.instantiations(), 1);
}

/// A runtime whose pool holds `n` instances.
fn pool_of(n: u32) -> Runtime {
    Runtime::new(RuntimeConfig {
        allocation: Allocation::Pooling,
        pool_size: n,
        ..Default::default()
    })
    .unwrap()
}

/// `n` requests at once that each sleep 50 ms in the guest (so that all
/// are alive together), and waits until their instances are done.
async fn concurrent_sleeps(h: &HttpHandler, n: usize) {
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..n {
        let h = h.clone();
        all.spawn(async move {
            let resp = h
                .handle(get("/sleep?ms=50"))
                .await
                .unwrap_or_else(|r| panic!("{:?}", r.outcome));
            body_text(resp).await
        });
    }
    while let Some(body) = all.join_next().await {
        assert_eq!(body.unwrap(), "slept 50 ms\n");
    }
    settled(h).await;
}

#[test]
fn instances_are_not_kept_idle_when_the_pool_is_nearly_full() {
    // In a pool of 4, 3 live instances are three quarters of it: the first
    // of them to finish is dropped rather than kept; then 2 are alive and
    // the other two are kept.
    let rt = pool_of(4);
    let h = handler(&rt, RunLimits::default()).reuse_instances(100);
    block_on(concurrent_sleeps(&h, 3));
    assert_eq!(h.instantiations(), 3);
    assert_eq!(h.idle_instances(), 2);
}

#[test]
fn a_pool_of_n_holds_n_live_http_instances() {
    // hello-http is 3 core instances and 2 tables besides its memory: a
    // pool with only as many core-instance slots as memories held a third.
    let rt = pool_of(4);
    let h = handler(&rt, RunLimits::default());
    block_on(concurrent_sleeps(&h, 4));
    assert_eq!(h.instantiations(), 4);
}

#[test]
fn at_most_max_idle_instances_wait_between_requests() {
    let h = handler(rt(), RunLimits::default()).reuse_instances(100);
    let n = skiff_runtime::MAX_IDLE_INSTANCES + 4;
    block_on(concurrent_sleeps(&h, n));
    assert_eq!(h.instantiations(), n as u64);
    assert_eq!(h.idle_instances(), skiff_runtime::MAX_IDLE_INSTANCES);
}

/// hello-http with a task memory limit of `mib` MiB, reusing instances.
fn reusing_handler(mib: u64) -> HttpHandler {
    let guest = rt().load_file(dist("hello-http.wasm")).unwrap();
    HttpHandler::new(
        rt(),
        &guest,
        budget(mib, None),
        Sandbox::default(),
        RunLimits::default(),
    )
    .unwrap()
    .reuse_instances(1000)
}

/// The memory one idle hello-http instance holds.
fn instance_bytes() -> u64 {
    let h = reusing_handler(64);
    block_on(async {
        counter(&h).await;
        settled(&h).await;
    });
    assert_eq!(h.idle_instances(), 1);
    h.budget().memory_used()
}

#[test]
fn idle_instances_are_dropped_after_the_idle_timeout() {
    let timeout = Duration::from_millis(300);
    let h = handler(rt(), RunLimits::default())
        .reuse_instances(100)
        .idle_timeout(timeout);
    /// Waits (bounded) until no instance is idle; how long that took.
    async fn swept(h: &HttpHandler) -> Duration {
        let start = std::time::Instant::now();
        while h.idle_instances() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "an idle instance is still kept after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    }
    block_on(async {
        for round in 0..2 {
            // A fresh instance each round: the last one was dropped.
            assert_eq!(counter(&h).await, "request 1 of this instance\n");
            let kept = std::time::Instant::now();
            settled(&h).await;
            assert_eq!(h.idle_instances(), 1);
            swept(&h).await;
            assert!(
                kept.elapsed() >= timeout,
                "round {round}: dropped after {:?}, before the idle timeout",
                kept.elapsed()
            );
            assert_eq!(h.budget().memory_used(), 0, "its memory is given back");
        }
    });
    assert_eq!(h.instantiations(), 2);
}

#[test]
fn idle_instances_leave_a_quarter_of_the_task_memory_for_fresh_ones() {
    let one = instance_bytes();
    // 7 instances alive at once fit in 8 MiB; kept ones may hold 6 MiB.
    let limit = 8u64 << 20;
    let n = 7;
    assert!(
        n * one <= limit && n * one * 4 > limit * 3,
        "{one} bytes an instance"
    );
    let h = reusing_handler(8);
    block_on(concurrent_sleeps(&h, n as usize));
    assert_eq!(h.instantiations(), n);
    let kept = (limit * 3 / 4 / one).min(n);
    assert_eq!(h.idle_instances() as u64, kept);
    assert_eq!(h.budget().memory_used(), kept * one);
}

#[test]
fn a_request_refused_memory_first_drops_idle_instances() {
    let one = instance_bytes();
    let h = reusing_handler(64);
    block_on(async {
        concurrent_sleeps(&h, 8).await;
        assert_eq!(h.idle_instances(), 8);
        // 58 MiB more does not fit beside the other 7 idle instances
        // (64 MiB in all), but does once some are dropped.
        assert!(one + (58 << 20) + 7 * one > 64 << 20);
        let resp = h
            .handle(get("/alloc?mib=58"))
            .await
            .unwrap_or_else(|r| panic!("refused: {:?}", r.outcome));
        assert_eq!(body_text(resp).await, "allocated 58 MiB\n");
        settled(&h).await;
    });
    // It ran in a kept instance, which then held too much to keep again.
    assert_eq!(h.instantiations(), 8);
    let idle = h.idle_instances() as u64;
    assert!(idle < 7, "{idle} instances still idle");
    assert_eq!(h.budget().memory_used(), idle * one);
}

#[test]
fn a_command_is_not_an_http_handler() {
    let g = load("echo.wasm");
    let e = HttpHandler::new(
        rt(),
        &g,
        Budget::new(Limits::default()),
        Sandbox::default(),
        RunLimits::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, LoadError::NotRunnable { .. }));
}

#[test]
fn an_http_component_is_not_a_command() {
    let r = run(
        &load("hello-http.wasm"),
        &budget(64, None),
        &Sandbox::default(),
        RunLimits::default(),
    );
    assert!(
        matches!(r.outcome, Outcome::LoadError(LoadError::NotRunnable { .. })),
        "{:?}",
        r.outcome
    );
}

#[test]
fn concurrent_loads_of_one_binary_compile_it_once() {
    // A fresh runtime with a disk cache: exactly one of the loads compiles;
    // the rest wait for it and share its result.
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let bytes = std::fs::read(dist("spin.wasm")).unwrap();
    let guests: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| rt.load(&bytes).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        guests.iter().all(|g| !g.from_cache()),
        "every load shares the one compilation"
    );
    let artifacts = walk(dir.path()).len();
    assert_eq!(artifacts, 1);
}
