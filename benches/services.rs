//! `cargo bench --bench services`: the service scheduler of a real
//! `skiff server` on this machine, through the ECS API.
//!
//! 1. Replacement: a 3-task hello-http service; a task is stopped (StopTask,
//!    which stops it without the scheduler's say, as a crash does) and the
//!    time until a new task of the service is seen RUNNING is measured,
//!    polling every 1 ms. `KILLS` times (default 250); p50, p90, p99, max;
//!    and, from the new task's own timestamps, when the scheduler created
//!    it and when its worker had it RUNNING.
//! 2. Scale-out: CreateService of 100 tasks until the service is stable
//!    (one deployment, 100 RUNNING: what `aws ecs wait services-stable`
//!    checks).
//! 3. Rolling update: a 20-task service with a health check moved to a new
//!    task definition (minimumHealthyPercent 100, maximumPercent 200) until
//!    the new deployment is COMPLETED and the old one is gone.
//! 4. Deploy to first response: RegisterTaskDefinition of a new family
//!    (the module is compiled and cached already, as after a first
//!    deploy) and CreateService of one task, until the ingress answers its
//!    host with a 200 (polled every 0.2 ms, a new connection each time).
//!    `DEPLOYS` times (default 50); p50, p90, p99, max.
//! 5. Its peer: `wasmtime serve` 48.0.8 of the same module (code cached)
//!    from spawn to its first 200, `PEER_STARTS` times (default 20), and
//!    the ratio of the p50s (needs `cargo install wasmtime-cli --version
//!    48.0.8 --locked`; said and skipped without it).
//!
//! ECS itself takes tens of seconds for each of these (a Fargate task takes
//! 30-60 s to start); there is no ECS here to run beside it, so the
//! numbers stand alone.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{get_status, quantile, Conn};
use serde_json::{json, Value};

fn running_tasks(conn: &mut Conn, service: &str) -> Vec<Value> {
    let arns = conn.call("ListTasks", &json!({"serviceName": service}))["taskArns"].clone();
    if arns.as_array().is_none_or(Vec::is_empty) {
        return Vec::new();
    }
    let d = conn.call("DescribeTasks", &json!({"tasks": arns}));
    d["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING" && t["desiredStatus"] == "RUNNING")
        .cloned()
        .collect()
}

fn running(conn: &mut Conn, service: &str) -> Vec<String> {
    running_tasks(conn, service)
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect()
}

fn epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "  {what}: p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?}",
        quantile(&d, 0.5),
        quantile(&d, 0.9),
        quantile(&d, 0.99),
        d[d.len() - 1],
    );
}

fn service(conn: &mut Conn, name: &str) -> Value {
    conn.call("DescribeServices", &json!({"services": [name]}))["services"][0].clone()
}

fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    t0.elapsed()
}

fn stable(conn: &mut Conn, name: &str, n: u64) -> bool {
    let s = service(conn, name);
    s["runningCount"] == n && s["deployments"].as_array().map(Vec::len) == Some(1)
}

fn main() {
    let kills: usize = std::env::var("KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(250);
    let (_server, addr, ingress, _dir) = common::server_with_ingress(2, &[]);
    let mut conn = Conn::open(&addr);
    let web = |family: &str, greeting: &str| {
        json!({"family": family, "containerDefinitions": [{
            "name": "web", "image": "guests/dist/hello-http.wasm", "memory": 8,
            "environment": [{"name": "GREETING", "value": greeting}],
            "healthCheck": {"command": ["CMD", "GET /healthz"], "interval": 5},
        }]})
    };
    conn.call("RegisterTaskDefinition", &web("web", "v1"));
    conn.call("RegisterTaskDefinition", &web("web", "v2"));

    // 1. Replacement after a task stops.
    conn.call(
        "CreateService",
        &json!({"serviceName": "phoenix", "taskDefinition": "web:1", "desiredCount": 3}),
    );
    until("phoenix to be stable", Duration::from_secs(60), || {
        stable(&mut conn, "phoenix", 3)
    });
    let (mut seen, mut created, mut started) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..kills {
        let before: HashSet<String> = running(&mut conn, "phoenix").into_iter().collect();
        let victim = before.iter().nth(i % before.len()).unwrap().clone();
        let (t0, e0) = (Instant::now(), epoch());
        conn.call("StopTask", &json!({"task": victim, "reason": "bench"}));
        let new = loop {
            let now = running_tasks(&mut conn, "phoenix");
            if let Some(t) = now
                .into_iter()
                .find(|t| !before.contains(t["taskArn"].as_str().unwrap()))
            {
                break t;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no replacement");
            std::thread::sleep(Duration::from_millis(1));
        };
        seen.push(t0.elapsed());
        let since = |f: &str| Duration::from_secs_f64((new[f].as_f64().unwrap() - e0).max(0.0));
        created.push(since("createdAt"));
        started.push(since("startedAt"));
        // The next kill starts from a full service.
        until("phoenix to be back at 3", Duration::from_secs(30), || {
            running(&mut conn, "phoenix").len() == 3
        });
    }
    println!(
        "replacement: StopTask of one of 3 tasks -> a new task RUNNING, over {kills} kills (target: p99 well under 50 ms)"
    );
    report(
        "replacement created by the scheduler (its createdAt)",
        created,
    );
    report("replacement RUNNING on its worker (its startedAt)", started);
    report(
        "replacement seen RUNNING by a client polling the API every ms",
        seen,
    );

    // 2. A 100-task service from CreateService to stable.
    let t0 = Instant::now();
    conn.call(
        "CreateService",
        &json!({"serviceName": "hundred", "taskDefinition": "web:1", "desiredCount": 100}),
    );
    until("hundred to be stable", Duration::from_secs(120), || {
        stable(&mut conn, "hundred", 100)
    });
    println!(
        "scale-out: CreateService of 100 tasks -> stable (100 RUNNING, one deployment) in {:.2?}",
        t0.elapsed()
    );

    // 3. A rolling update of 20 tasks.
    conn.call(
        "CreateService",
        &json!({"serviceName": "rolling", "taskDefinition": "web:1", "desiredCount": 20}),
    );
    until("rolling to be stable", Duration::from_secs(60), || {
        stable(&mut conn, "rolling", 20)
    });
    let t0 = Instant::now();
    conn.call(
        "UpdateService",
        &json!({"service": "rolling", "taskDefinition": "web:2"}),
    );
    until("the rollout to complete", Duration::from_secs(120), || {
        let s = service(&mut conn, "rolling");
        let d = s["deployments"].as_array().unwrap();
        d.len() == 1
            && d[0]["rolloutState"] == "COMPLETED"
            && d[0]["taskDefinition"].as_str().unwrap().ends_with("web:2")
    });
    println!(
        "rolling update: 20 tasks (health-checked) from UpdateService to COMPLETED in {:.2?}",
        t0.elapsed()
    );

    // 4. Deploy to the first 200.
    let deploys: usize = std::env::var("DEPLOYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let (mut api_calls, mut first) = (Vec::new(), Vec::new());
    for i in 0..deploys {
        let family = format!("deploy{i}");
        let t0 = Instant::now();
        let mut td = web(&family, &format!("d{i}"));
        // Without a health check: the first request may go as soon as the
        // task runs (with one, the first check passing comes first).
        td["containerDefinitions"][0]
            .as_object_mut()
            .unwrap()
            .remove("healthCheck");
        conn.call("RegisterTaskDefinition", &td);
        conn.call(
            "CreateService",
            &json!({"serviceName": family, "taskDefinition": family, "desiredCount": 1}),
        );
        api_calls.push(t0.elapsed());
        let host = format!("{family}.default.localhost");
        while get_status(&ingress, &host) != Some(200) {
            assert!(t0.elapsed() < Duration::from_secs(30), "no 200 from {host}");
            std::thread::sleep(Duration::from_micros(200));
        }
        first.push(t0.elapsed());
    }
    println!(
        "deploy: RegisterTaskDefinition + CreateService of 1 task -> first 200 through the ingress, over {deploys} deploys (target: p50 under 10 ms)"
    );
    report("the two API calls answered", api_calls);
    first.sort();
    let skiff_p50 = quantile(&first, 0.5);
    report("the first 200", first);

    // 5. The peer: deploying with `wasmtime serve` is starting it; from
    // spawn to its first 200, compiled code cached (-C cache=y; the first
    // start compiles and is not counted).
    let wasmtime = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cargo/bin/wasmtime"))
        .filter(|p| p.exists());
    let version = wasmtime.as_ref().and_then(|w| {
        let out = std::process::Command::new(w)
            .arg("--version")
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    match (wasmtime, version) {
        (Some(w), Some(v)) if v.contains("48.0.8") => {
            let starts: usize = std::env::var("PEER_STARTS")
                .ok()
                .and_then(|k| k.parse().ok())
                .unwrap_or(20);
            let guest = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/dist/hello-http.wasm");
            let mut peer = Vec::new();
            for i in 0..=starts {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let addr = format!("127.0.0.1:{port}");
                let t0 = Instant::now();
                let child = std::process::Command::new(&w)
                    .args(["serve", "-Scli", "-C", "cache=y", "--addr", &addr, guest])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let _child = common::Killed(child);
                while get_status(&addr, "localhost") != Some(200) {
                    assert!(t0.elapsed() < Duration::from_secs(60), "wasmtime serve never answered");
                    std::thread::sleep(Duration::from_micros(200));
                }
                if i > 0 {
                    peer.push(t0.elapsed());
                }
            }
            peer.sort();
            let peer_p50 = quantile(&peer, 0.5);
            println!("peer: `{v} serve` from spawn to its first 200 (cached code), over {starts} starts");
            report("the first 200", peer);
            println!(
                "deploy to first 200, skiff / wasmtime serve: {:.2}x the time at p50 (below 1 is faster)",
                skiff_p50.as_secs_f64() / peer_p50.as_secs_f64()
            );
        }
        _ => println!(
            "peer not measured: wasmtime-cli 48.0.8 is not in ~/.cargo/bin (cargo install wasmtime-cli --version 48.0.8 --locked)"
        ),
    }
}
