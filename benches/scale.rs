//! `cargo bench --bench scale`: how one node's control plane grows with the
//! tasks it runs. A service of N idle hello-http tasks is created on a
//! fresh `skiff server` (2 workers, `--memory 65536`) and brought to steady
//! state (N RUNNING, one deployment: what `aws ecs wait services-stable`
//! checks), on SQLite and on etcd. Printed for each: the time to steady
//! state, tasks placed per second, the time each 1,000 tasks took (flat
//! when a pass costs what changed, rising when it costs what exists),
//! DescribeServices' latency meanwhile (polled every 50 ms), and the
//! server's RSS at steady state, per task.
//!
//!   cargo bench --bench scale
//!   SKIFF_SCALE_TASKS=1000,10000 SKIFF_SCALE_STORES=sqlite,etcd cargo bench --bench scale
//!   SKIFF_BIN=/path/to/older/skiff cargo bench --bench scale   # another build
//!
//! Not here yet (issue #32): hollow nodes (100 nodes on one etcd, 100,000
//! tasks) and the time to replace a lost one's tasks, ListTasks' latency,
//! the scheduler's pass time and etcd's size and write count.

mod common;

use std::time::{Duration, Instant};

use common::Conn;
use serde_json::json;

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// One run: N tasks on a fresh node with `store_args`; prints its line.
fn run(store: &str, store_args: &[&str], n: u64, limit: Duration) {
    let mut args = vec!["--memory", "65536"];
    args.extend_from_slice(store_args);
    let (child, api, _dir) = common::server_with(2, &args);
    let pid = child.0.id();
    let mut conn = Conn::open(&api);
    conn.call(
        "RegisterTaskDefinition",
        &json!({"family": "idle", "containerDefinitions": [
            {"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 6}]}),
    );
    let t0 = Instant::now();
    conn.call(
        "CreateService",
        &json!({"serviceName": "idle", "taskDefinition": "idle", "desiredCount": n}),
    );
    // When the running count first reached each thousand.
    let mut marks: Vec<Duration> = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let steady = loop {
        let asked = Instant::now();
        let svc =
            conn.call("DescribeServices", &json!({"services": ["idle"]}))["services"][0].clone();
        latencies.push(asked.elapsed());
        let running = svc["runningCount"].as_u64().unwrap_or(0);
        while (marks.len() as u64 + 1) * 1000 <= running {
            marks.push(t0.elapsed());
        }
        let one = svc["deployments"].as_array().is_some_and(|d| d.len() == 1);
        if running == n && one {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            println!("{store:6} {n:6} tasks: not steady after {limit:.0?} ({running} RUNNING)");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(steady) = steady else { return };
    let rss = rss_kib(pid);
    latencies.sort();
    let per_thousand: Vec<String> = marks
        .iter()
        .scan(Duration::ZERO, |last, &m| {
            let d = m - *last;
            *last = m;
            Some(format!("{:.2}", d.as_secs_f64()))
        })
        .collect();
    println!(
        "{store:6} {n:6} tasks: steady in {:.2} s, {:.0} tasks/s; DescribeServices meanwhile p50 {:.0?} p99 {:.0?}; RSS {:.0} MiB, {:.1} KiB a task; s per 1,000: {}",
        steady.as_secs_f64(),
        n as f64 / steady.as_secs_f64(),
        common::quantile(&latencies, 0.5),
        common::quantile(&latencies, 0.99),
        rss as f64 / 1024.0,
        rss as f64 / n as f64,
        per_thousand.join(" "),
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::var("SKIFF_SCALE_TASKS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SKIFF_SCALE_TASKS like 1000,10000"))
        .collect();
    let stores = std::env::var("SKIFF_SCALE_STORES").unwrap_or_else(|_| "sqlite,etcd".into());
    let limit = Duration::from_secs(
        std::env::var("SKIFF_SCALE_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    println!(
        "one node, 2 workers, --memory 65536; a service of idle hello-http tasks (6 MiB each)"
    );
    for store in stores.split(',') {
        for &n in &sizes {
            match store {
                "sqlite" => run("sqlite", &[], n, limit),
                "etcd" => {
                    let etcd = common::etcd::Etcd::start();
                    let url = etcd.url("scale");
                    run("etcd", &["--store", &url], n, limit);
                }
                other => panic!("SKIFF_SCALE_STORES: {other:?} is not sqlite or etcd"),
            }
        }
    }
}
