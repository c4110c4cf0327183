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
//! Then the same on hollow nodes (`skiff server --hollow`: nodes that
//! report their tasks as running ones and run no guest), 100 of them on
//! one etcd (1 worker each): time to steady state, DescribeServices'
//! latency, the nodes' mean RSS; then one node is killed, and the time
//! until the service is back at its count with that node's tasks
//! replaced elsewhere is printed against the node TTL (5 s).
//!
//!   SKIFF_SCALE_HOLLOW=100 SKIFF_SCALE_HOLLOW_TASKS=10000,100000 cargo bench --bench scale
//!   SKIFF_SCALE_HOLLOW=0 ...   # no hollow nodes
//!
//! Not here yet (issue #32): ListTasks' latency, the scheduler's pass
//! time and etcd's size and write count.

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

/// What a run measured until the service was steady.
struct Ramp {
    /// From CreateService to steady.
    steady: Duration,
    /// When the running count first reached each thousand.
    marks: Vec<Duration>,
    /// DescribeServices' latencies meanwhile.
    latencies: Vec<Duration>,
}

/// Creates the service `idle` of `n` hello-http tasks through `conn` and
/// polls DescribeServices (every 50 ms) until it is steady: `None` if it
/// is not within `limit`.
fn ramp(conn: &mut Conn, label: &str, n: u64, limit: Duration) -> Option<Ramp> {
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
            println!("{label:6} {n:6} tasks: not steady after {limit:.0?} ({running} RUNNING)");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    latencies.sort();
    Some(Ramp {
        steady: steady?,
        marks,
        latencies,
    })
}

/// One run: N tasks on a fresh node with `store_args`; prints its line.
fn run(store: &str, store_args: &[&str], n: u64, limit: Duration) {
    let mut args = vec!["--memory", "65536"];
    args.extend_from_slice(store_args);
    let (child, api, _dir) = common::server_with(2, &args);
    let pid = child.0.id();
    let mut conn = Conn::open(&api);
    let Some(Ramp {
        steady,
        marks,
        latencies,
    }) = ramp(&mut conn, store, n, limit)
    else {
        return;
    };
    let rss = rss_kib(pid);
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

/// N tasks on `nodes` hollow nodes sharing one etcd; then one node is
/// killed and its tasks' replacement timed. Prints its lines.
fn hollow(nodes: usize, n: u64, limit: Duration) {
    let etcd = common::etcd::Etcd::start();
    let url = etcd.url("hollow");
    let args = [
        "--store",
        url.as_str(),
        "--hollow",
        "--memory",
        "65536",
        "--node-ttl",
        "5s",
    ];
    let mut servers: Vec<_> = (0..nodes).map(|_| common::server_with(1, &args)).collect();
    let mut conn = Conn::open(&servers[0].1);
    let label = format!("{nodes}x hollow");
    let Some(r) = ramp(&mut conn, &label, n, limit) else {
        return;
    };
    let rss: Vec<u64> = servers.iter().map(|(c, _, _)| rss_kib(c.0.id())).collect();
    println!(
        "{label} {n:6} tasks: steady in {:.2} s, {:.0} tasks/s; DescribeServices meanwhile p50 {:.0?} p99 {:.0?}; RSS per node mean {:.0} MiB, max {:.0} MiB",
        r.steady.as_secs_f64(),
        n as f64 / r.steady.as_secs_f64(),
        common::quantile(&r.latencies, 0.5),
        common::quantile(&r.latencies, 0.99),
        rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0,
        rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
    );
    // A node that is not the one asked is lost (killed): its tasks are
    // recorded STOPPED once its lease lapses, and replaced elsewhere.
    let lost = servers.pop().expect("a node to kill");
    let t0 = Instant::now();
    drop(lost);
    let mut dipped = None;
    loop {
        let svc =
            conn.call("DescribeServices", &json!({"services": ["idle"]}))["services"][0].clone();
        let running = svc["runningCount"].as_u64().unwrap_or(0);
        if running < n && dipped.is_none() {
            dipped = Some(t0.elapsed());
        }
        if let (Some(d), true) = (dipped, running == n) {
            println!(
                "{label}: a node killed; its tasks seen lost after {:.2} s and replaced after {:.2} s (node TTL 5 s)",
                d.as_secs_f64(),
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        if t0.elapsed() > limit {
            println!("{label}: a node killed; the service not back at {n} after {limit:.0?} ({running} RUNNING)");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    for store in stores.split(",").filter(|s| !s.is_empty()) {
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
    let nodes: usize = std::env::var("SKIFF_SCALE_HOLLOW")
        .ok()
        .map(|s| s.parse().expect("SKIFF_SCALE_HOLLOW: a number of nodes"))
        .unwrap_or(100);
    if nodes == 0 {
        return;
    }
    let sizes: Vec<u64> = std::env::var("SKIFF_SCALE_HOLLOW_TASKS")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SKIFF_SCALE_HOLLOW_TASKS like 10000,100000")
        })
        .collect();
    for n in sizes {
        hollow(nodes, n, limit);
    }
}
