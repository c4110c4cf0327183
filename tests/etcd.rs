//! `skiff server --store etcd://...` against a real etcd (Debian's
//! `etcd-server`) on 127.0.0.1: a service lives in etcd across a `kill -9`
//! of its server; the namespace belongs to one server at a time.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::json;

fn running(api: &str, service: &str, n: u64) -> serde_json::Value {
    common::wait_until(
        api,
        "DescribeServices",
        json!({"services": [service]}),
        Duration::from_secs(60),
        |out| out["services"][0]["runningCount"] == n && out["services"][0]["pendingCount"] == 0,
    )
}

/// Registers `web` (hello-http) and runs it as the service `web` of `n`
/// tasks; returns when they run.
fn web_service(api: &str, n: u64) {
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/dist/hello-http.wasm");
    let (status, out) = common::call(
        api,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [
            {"name": "web", "image": image, "memory": 32}]}),
    );
    assert_eq!(status, 200, "{out}");
    let (status, out) = common::call(
        api,
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": n}),
    );
    assert_eq!(status, 200, "{out}");
    running(api, "web", n);
}

#[test]
fn a_service_on_etcd_outlives_a_kill_of_its_server_and_the_namespace_has_one_owner() {
    let etcd = common::Etcd::start();
    let url = etcd.url("e2e");
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--store",
        url.as_str(),
        "--workers",
        "1",
        "--attribute",
        "zone=eu-1",
        "--node-ttl",
        "2s",
    ];
    let (mut server, api, _log) = common::start_server(data.path(), &args);
    // The node registered itself, with its attributes, under its lease.
    let node = std::fs::read_to_string(data.path().join("node-id")).unwrap();
    let node_key = format!("e2e/nodes/{}", node.trim());
    let record = etcd.ctl(&["get", &node_key, "--print-value-only"]);
    assert!(
        record.contains(r#""zone":"eu-1""#)
            && record.contains(r#""ecs.availability-zone":"local""#),
        "{record}"
    );
    web_service(&api, 2);
    let before = common::call(&api, "ListTasks", json!({"desiredStatus": "RUNNING"})).1;
    assert_eq!(before["taskArns"].as_array().unwrap().len(), 2, "{before}");
    // What skiff wrote is in etcd, under the namespace.
    let keys = etcd.ctl(&["get", "e2e/", "--prefix", "--keys-only"]);
    assert!(keys.contains("e2e/services/default/web"), "{keys}");

    server.kill().unwrap();
    server.wait().unwrap();
    // Its registration lapses with the lease it no longer keeps alive.
    let t0 = std::time::Instant::now();
    while !etcd.ctl(&["get", &node_key]).trim().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the node's record outlived its lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another server (another data directory, so another node) is refused
    // while the killed one's claim lives, and says what to do.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--api", "127.0.0.1:0", "--ingress", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(other.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another skiff server") && err.contains("etcd://HOST:PORT/NAME"),
        "{err}"
    );

    // The same node comes back at once, finds its service in etcd, and
    // replaces the tasks the kill took.
    let (mut server, api, _log) = common::start_server(data.path(), &args);
    let svc = running(&api, "web", 2);
    assert_eq!(svc["services"][0]["desiredCount"], 2);
    let after = common::call(&api, "ListTasks", json!({"desiredStatus": "RUNNING"})).1;
    let after = after["taskArns"].as_array().unwrap().clone();
    assert_eq!(after.len(), 2);
    for t in before["taskArns"].as_array().unwrap() {
        assert!(!after.contains(t), "{t} was killed, yet runs");
    }
    let old = common::call(&api, "DescribeTasks", json!({"tasks": before["taskArns"]})).1;
    for t in old["tasks"].as_array().unwrap() {
        assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    }
    // SIGTERM: a clean stop gives the claim back at once.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert_eq!(server.wait().unwrap().code(), Some(0));
    let claim = etcd.ctl(&["get", "e2e/claim"]);
    assert!(
        claim.trim().is_empty(),
        "the claim outlived its server: {claim}"
    );
}

#[test]
fn a_server_rides_out_a_restart_of_etcd() {
    let mut etcd = common::Etcd::start();
    let url = etcd.url("restart");
    let data = tempfile::tempdir().unwrap();
    let args = ["--store", url.as_str(), "--workers", "1"];
    let (mut server, api, _log) = common::start_server(data.path(), &args);
    web_service(&api, 1);

    etcd.restart();

    // After it, every part still acts on the store: the watches came
    // back (a stop is carried out, and its replacement placed and
    // started), and the reports reached etcd.
    let first = common::wait_until(
        &api,
        "ListTasks",
        json!({"serviceName": "web"}),
        Duration::from_secs(60),
        |out| out["taskArns"].as_array().is_some_and(|a| a.len() == 1),
    )["taskArns"][0]
        .clone();
    let (status, out) = common::call(&api, "StopTask", json!({"task": first}));
    assert_eq!(status, 200, "{out}");
    common::wait_until(
        &api,
        "DescribeTasks",
        json!({"tasks": [first]}),
        Duration::from_secs(60),
        |out| out["tasks"][0]["lastStatus"] == "STOPPED",
    );
    running(&api, "web", 1);
    let now = common::call(&api, "ListTasks", json!({"serviceName": "web"})).1;
    assert_ne!(now["taskArns"][0], first, "{now}");
    server.kill().unwrap();
    server.wait().unwrap();
}
