//! `cargo bench --bench api`: the ECS API of a real `skiff server` on this
//! machine: RegisterTaskDefinition and RunTask per second (8 clients on
//! keep-alive connections), and the latency from RunTask to RUNNING for a
//! guest that is already compiled (polling DescribeTasks every ms); and
//! what checking SigV4 signatures and a policy costs: ListClusters per
//! second against a server with `--auth`, signed, and one without (each
//! client signs its request once and sends it again: the server checks
//! every copy in full, and the client's signing is left out). The store
//! part runs twice, on SQLite and on a real etcd started here, and prints
//! their ratios.

mod common;

use std::time::{Duration, Instant};

use common::{parallel, parallel_signed, per_second, Conn};
use serde_json::json;

const KEY: (&str, &str) = (
    "AKIASKIFFBENCH000001",
    "bench-secret-key-0123456789abcdefghijk",
);

/// ListClusters per second, signed and not, in alternating rounds.
fn auth_cost() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [{"access_key_id": KEY.0, "secret_access_key": KEY.1, "policy": {
            "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}}]})
        .to_string(),
    )
    .unwrap();
    let (_open, open_addr, _d1) = common::server(2);
    let (_authed, authed_addr, _d2) = common::server_with(2, &["--auth", keys.to_str().unwrap()]);
    let (clients, per_client, rounds) = (8, 500, 3);
    let (mut open, mut signed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = parallel(&open_addr, clients, per_client, |c, _, _| {
            c.call("ListClusters", &json!({}));
        });
        open.push(per_second(clients * per_client, t));
        let t = parallel_signed(&authed_addr, Some(KEY), clients, per_client, |c, _, _| {
            c.call("ListClusters", &json!({}));
        });
        signed.push(per_second(clients * per_client, t));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, s) = (median(&mut open), median(&mut signed));
    println!(
        "ListClusters, 8 clients, median of {rounds} alternating rounds: without auth {o:.0}/s, \
         signed and checked against a policy {s:.0}/s (ratio {:.2})",
        s / o
    );
}

/// What one store gives: calls per second and RunTask-to-RUNNING.
struct Numbers {
    register: f64,
    run: f64,
    running_p50: Duration,
}

/// The API's numbers on a server with `extra` arguments (the store).
fn measure(label: &str, extra: &[&str]) -> Numbers {
    println!("-- {label}");
    let (_server, addr, _dir) = common::server_with(2, extra);

    let (clients, per_client) = (8, 250);
    let took = parallel(&addr, clients, per_client, |conn, c, _| {
        conn.call(
            "RegisterTaskDefinition",
            &json!({"family": format!("bench-{c}"), "containerDefinitions": [
                {"name": "main", "image": "guests/dist/echo.wasm", "memory": 16}]}),
        );
    });
    let n = clients * per_client;
    let register = per_second(n, took);
    println!(
        "RegisterTaskDefinition: {n} calls from {clients} clients in {took:.2?}: {register:.0}/s"
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
    let run = per_second(n, took);
    println!("RunTask (a command that exits at once): {n} calls from {clients} clients in {took:.2?}: {run:.0}/s");
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
    Numbers {
        register,
        run,
        running_p50: pct(0.5),
    }
}

fn main() {
    auth_cost();
    let sqlite = measure("store: SQLite (the default)", &[]);
    // etcd as Debian packages it, on this machine, in the same run.
    let etcd = common::etcd::Etcd::start();
    let url = etcd.url("bench");
    let on_etcd = measure("store: etcd (--store etcd://...)", &["--store", &url]);
    println!(
        "etcd / SQLite: RegisterTaskDefinition {:.2}x, RunTask {:.2}x, RunTask to RUNNING p50 {:.2}x",
        on_etcd.register / sqlite.register,
        on_etcd.run / sqlite.run,
        on_etcd.running_p50.as_secs_f64() / sqlite.running_p50.as_secs_f64()
    );
}
