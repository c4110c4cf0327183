//! Scale from zero: the first response of a service scaled to zero (its
//! module's code cached) beside a warm response of the same service, in
//! one run.
//!
//! A one-task hello-http service with a scalable target (MinCapacity 0,
//! MaxCapacity 1) and a concurrency policy; the server scales in after
//! one idle second (`--scale-in-window 1s`). Each cycle waits for the
//! service to be at zero tasks, then times a GET through the ingress
//! (held while a task starts: the load report, the scaler's pass, the
//! placement, the start), then a second GET (warm). `CYCLES` (default
//! 20) cycles.
//!
//!   cargo bench --bench scaling

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{quantile, Conn};
use serde_json::json;

/// One GET / for `host` on a new connection: the time to the whole
/// response head, and its status.
fn get(ingress: &str, host: &str) -> (Duration, u16) {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(ingress).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    let d = t0.elapsed();
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (d, status)
}

fn counts(conn: &mut Conn) -> (u64, u64) {
    let s = &conn.call("DescribeServices", &json!({"services": ["zero"]}))["services"][0];
    (
        s["desiredCount"].as_u64().unwrap(),
        s["runningCount"].as_u64().unwrap(),
    )
}

fn report(what: &str, mut d: Vec<Duration>) -> Duration {
    d.sort();
    let (p50, p99) = (quantile(&d, 0.5), quantile(&d, 0.99));
    println!("  {what:<44} p50 {p50:>10.2?}  p99 {p99:>10.2?}");
    p50
}

fn main() {
    let cycles: usize = std::env::var("CYCLES")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let (_server, addr, ingress, _dir) =
        common::server_with_ingress(2, &["--scale-in-window", "1s"]);
    let mut conn = Conn::open(&addr);
    conn.call(
        "RegisterTaskDefinition",
        &json!({"family": "zero", "containerDefinitions": [{
            "name": "web", "image": "guests/dist/hello-http.wasm", "memory": 16}]}),
    );
    conn.call(
        "CreateService",
        &json!({"serviceName": "zero", "taskDefinition": "zero", "desiredCount": 1}),
    );
    let aas = "AnyScaleFrontendService";
    let target = json!({"ServiceNamespace": "ecs", "ResourceId": "service/default/zero",
        "ScalableDimension": "ecs:service:DesiredCount"});
    let mut register = target.clone();
    register["MinCapacity"] = json!(0);
    register["MaxCapacity"] = json!(1);
    conn.call_to(aas, "RegisterScalableTarget", &register);
    let mut policy = target.clone();
    policy["PolicyName"] = json!("concurrency");
    policy["PolicyType"] = json!("TargetTrackingScaling");
    policy["TargetTrackingScalingPolicyConfiguration"] = json!({"TargetValue": 10.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SkiffServiceAverageConcurrentRequests"},
        "ScaleOutCooldown": 0, "ScaleInCooldown": 0});
    conn.call_to(aas, "PutScalingPolicy", &policy);
    let host = "zero.default.localhost";
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..=cycles {
        let t0 = Instant::now();
        while counts(&mut conn) != (0, 0) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never scaled to zero"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (c, status) = get(&ingress, host);
        assert_eq!(status, 200, "the held request was not served");
        let (w, status) = get(&ingress, host);
        assert_eq!(status, 200);
        cold.push(c);
        warm.push(w);
    }
    // The first cycle compiled the module; the rest load it cached.
    cold.remove(0);
    warm.remove(0);
    println!("scale from zero (cached module), over {cycles} cycles:");
    let c = report("first response, from zero tasks", cold);
    let w = report("warm response, the next request", warm);
    println!(
        "  scale from zero costs {:.2?} beyond a warm response at p50 (target, issue #14: under 10 ms)",
        c.saturating_sub(w)
    );
}
