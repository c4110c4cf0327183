//! `cargo bench --bench nodes`: node loss on three skiff nodes sharing a
//! real etcd started here (Debian's `etcd-server`), each with one worker.
//! A service of 6 tasks spread over the nodes' zones; then, repeatedly,
//! one node is killed with SIGKILL (the leader in turn with the others)
//! and the time until the service has 6 RUNNING tasks again, none on the
//! lost node, is measured (from the kill, through the lease lapsing, the
//! leader recording the lost tasks STOPPED and the replacements starting),
//! beside the node TTL; the node is started again before the next round.
//!
//! `SKIFF_BENCH_TTL` (default `5s`, skiff's default) and
//! `SKIFF_BENCH_KILLS` (default 6) change the TTL and the rounds.

mod common;

use std::time::{Duration, Instant};

use common::Conn;
use serde_json::json;

/// RUNNING tasks of `web` per node id.
fn placement(conn: &mut Conn) -> std::collections::BTreeMap<String, usize> {
    let list = conn.call(
        "ListTasks",
        &json!({"serviceName": "web", "desiredStatus": "RUNNING"}),
    );
    let mut out = std::collections::BTreeMap::new();
    let arns = list["taskArns"].clone();
    if arns.as_array().is_none_or(|a| a.is_empty()) {
        return out;
    }
    let tasks = conn.call("DescribeTasks", &json!({"tasks": arns}));
    for t in tasks["tasks"].as_array().into_iter().flatten() {
        if t["lastStatus"] == "RUNNING" {
            let arn = t["containerInstanceArn"].as_str().unwrap_or_default();
            *out.entry(arn.rsplit('/').next().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    out
}

/// Polls until `web` runs 6 tasks, none on `not_on`.
fn restored(conn: &mut Conn, not_on: &str, limit: Duration) -> Instant {
    let t0 = Instant::now();
    loop {
        let p = placement(conn);
        if p.values().sum::<usize>() == 6 && !p.contains_key(not_on) {
            return Instant::now();
        }
        assert!(t0.elapsed() < limit, "not restored after {limit:?}: {p:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let ttl = std::env::var("SKIFF_BENCH_TTL").unwrap_or_else(|_| "5s".into());
    let kills: usize = std::env::var("SKIFF_BENCH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(6);
    let ttl_secs: f64 = ttl
        .trim_end_matches('s')
        .parse()
        .expect("SKIFF_BENCH_TTL like 5s");
    let etcd = common::etcd::Etcd::start();
    let url = etcd.url("nodes");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = |i: usize| -> Vec<String> {
        [
            "--store".to_string(),
            url.clone(),
            "--node-ttl".into(),
            ttl.clone(),
            "--memory".into(),
            "1024".into(),
            "--attribute".into(),
            format!("ecs.availability-zone=zone-{i}"),
        ]
        .to_vec()
    };
    let start = |i: usize| {
        let a = args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        common::server_in(dirs[i].path(), 1, &a)
    };
    let mut nodes: Vec<(common::Killed, String, String)> = (0..3).map(start).collect();
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| {
            std::fs::read_to_string(d.path().join("node-id"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let mut conn = Conn::open(&nodes[0].1);
    conn.call(
        "RegisterTaskDefinition",
        &json!({"family": "web", "containerDefinitions": [
            {"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 32}]}),
    );
    conn.call(
        "CreateService",
        &json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 6}),
    );
    restored(&mut conn, "", Duration::from_secs(60));
    println!("3 nodes (1 worker each) on etcd, node TTL {ttl}; service of 6 spread over 3 zones");

    let mut times = Vec::new();
    for round in 0..kills {
        let victim = round % 3;
        let leader = etcd
            .ctl(&["get", "nodes/leader", "--print-value-only"])
            .trim()
            .to_string();
        let was_leader = leader == ids[victim];
        let survivor = (victim + 1) % 3;
        let mut conn = Conn::open(&nodes[survivor].1);
        let t0 = Instant::now();
        let _ = nodes[victim].0 .0.kill();
        let _ = nodes[victim].0 .0.wait();
        let t1 = restored(
            &mut conn,
            &ids[victim],
            Duration::from_secs_f64(ttl_secs * 10.0 + 60.0),
        );
        let took = t1 - t0;
        println!(
            "round {round}: killed node {} ({}): 6 RUNNING again after {took:.2?} ({:.2} TTLs)",
            &ids[victim][..8],
            if was_leader {
                "the leader"
            } else {
                "not leading"
            },
            took.as_secs_f64() / ttl_secs
        );
        times.push(took);
        // Back before the next round.
        nodes[victim] = start(victim);
        let mut back = Conn::open(&nodes[victim].1);
        let t0 = Instant::now();
        loop {
            let ci = back.call(
                "DescribeContainerInstances",
                &json!({"containerInstances": [ids[victim]]}),
            );
            if ci["containerInstances"][0]["agentConnected"] == true {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "never rejoined");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    times.sort();
    let q = |p: f64| common::quantile(&times, p);
    println!(
        "node loss to restored, {} kills: p50 {:.2?} ({:.2} TTLs), p99 {:.2?} ({:.2} TTLs), max {:.2?}; target: within 2 TTLs ({:.0?})",
        times.len(),
        q(0.5),
        q(0.5).as_secs_f64() / ttl_secs,
        q(0.99),
        q(0.99).as_secs_f64() / ttl_secs,
        times[times.len() - 1],
        Duration::from_secs_f64(2.0 * ttl_secs)
    );
}
