//! `cargo bench --bench registry`: deploy to first 200 from a registry
//! reference, beside deploy from a file, on one `skiff server` and a real
//! registry (Debian's `docker-registry`, started here on 127.0.0.1).
//!
//! Each deploy is RegisterTaskDefinition of a new family and CreateService
//! of one task, until the ingress answers the service's host with a 200
//! (polled every 0.2 ms, a new connection each time):
//!
//! - file: the image is guests/dist/hello-http.wasm (compiled and cached
//!   already, as after a first deploy);
//! - registry, warm: the same reference every time (its layer and compiled
//!   code cached: the tag is resolved, nothing is pulled);
//! - registry, cold: a new image every time (the module with a different
//!   custom section, pushed beforehand): resolved, pulled and compiled.
//!
//! `DEPLOYS` deploys of each warm kind (default 30), `COLD` cold ones
//! (default 8); p50, p90, p99 and max, and the ratios to file.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get_status, quantile, Conn};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A wasm custom section (changes the bytes, not what runs).
fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                return;
            }
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0u8];
    leb(body.len(), &mut out);
    out.extend(body);
    out
}

fn deploy(conn: &mut Conn, ingress: &str, family: &str, image: &str) -> Duration {
    let t0 = Instant::now();
    conn.call(
        "RegisterTaskDefinition",
        &json!({"family": family, "containerDefinitions": [
            {"name": "web", "image": image, "memory": 64}]}),
    );
    conn.call(
        "CreateService",
        &json!({"serviceName": family, "taskDefinition": family, "desiredCount": 1}),
    );
    let host = format!("{family}.default.localhost");
    while get_status(ingress, &host) != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no 200 from {host} ({image})"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t0.elapsed();
    conn.call("DeleteService", &json!({"service": family, "force": true}));
    took
}

fn stats(mut d: Vec<Duration>) -> [Duration; 4] {
    d.sort();
    [
        quantile(&d, 0.5),
        quantile(&d, 0.9),
        quantile(&d, 0.99),
        *d.last().unwrap(),
    ]
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (deploys, cold) = (env("DEPLOYS", 30), env("COLD", 8));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n  secret: bench\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is missing: apt-get install docker-registry");
    let _registry = common::Killed(registry);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/dist/hello-http.wasm"
    ))
    .unwrap();
    let push = |bytes: &[u8], reference: &str| {
        let file = dir.path().join("push.wasm");
        std::fs::write(&file, bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("push")
            .arg(&file)
            .arg(reference)
            .args(["--insecure-registry", &host])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    push(&hello, &format!("{host}/hello:warm"));
    for i in 0..cold {
        let mut v = hello.clone();
        v.extend(custom_section("bench", format!("cold{i}").as_bytes()));
        push(&v, &format!("{host}/hello:cold{i}"));
    }

    let (_server, api, ingress) = common::server_in(
        &dir.path().join("skiff"),
        2,
        &["--insecure-registry", &host],
    );
    let mut conn = Conn::open(&api);
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/dist/hello-http.wasm");
    // First deploys of each warm kind compile and pull: not counted.
    deploy(&mut conn, &ingress, "warmup-file", file);
    deploy(
        &mut conn,
        &ingress,
        "warmup-registry",
        &format!("{host}/hello:warm"),
    );
    let (mut from_file, mut warm, mut cold_times) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..deploys {
        from_file.push(deploy(&mut conn, &ingress, &format!("file{i}"), file));
        warm.push(deploy(
            &mut conn,
            &ingress,
            &format!("warm{i}"),
            &format!("{host}/hello:warm"),
        ));
    }
    for i in 0..cold {
        cold_times.push(deploy(
            &mut conn,
            &ingress,
            &format!("cold{i}"),
            &format!("{host}/hello:cold{i}"),
        ));
    }
    println!(
        "deploy to first 200 (RegisterTaskDefinition + CreateService of 1 task), hello-http ({} KiB), {deploys} warm deploys of each kind, {cold} cold",
        hello.len() / 1024
    );
    let file_stats = stats(from_file);
    for (what, s) in [
        ("file (compiled code cached)", file_stats),
        ("registry, warm (layer and code cached)", stats(warm)),
        ("registry, cold (resolve, pull, compile)", stats(cold_times)),
    ] {
        println!(
            "  {what:42} p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  p50 {:.2}x file",
            s[0],
            s[1],
            s[2],
            s[3],
            s[0].as_secs_f64() / file_stats[0].as_secs_f64()
        );
    }
}
