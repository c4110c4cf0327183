//! `skiff server --store etcd://...` against a real etcd (Debian's
//! `etcd-server`) on 127.0.0.1: a service lives in etcd across a `kill -9`
//! of its server and a restart of etcd; three nodes share one namespace,
//! and a lost node's tasks are replaced on the others.

mod common;

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
fn a_service_on_etcd_outlives_a_kill_of_its_server() {
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

    // The same node comes back at once, finds its service in etcd, and
    // replaces the tasks the kill took.
    // (The service's counts are the scheduler's last look, as ECS's are:
    // what the kill did shows in the tasks first.)
    let (mut server, api, _log) = common::start_server(data.path(), &args);
    let killed = before["taskArns"].as_array().unwrap().clone();
    common::wait_until(
        &api,
        "ListTasks",
        json!({"desiredStatus": "RUNNING"}),
        Duration::from_secs(60),
        |out| {
            let arns = out["taskArns"].as_array().unwrap();
            arns.len() == 2 && arns.iter().all(|t| !killed.contains(t))
        },
    );
    let svc = running(&api, "web", 2);
    assert_eq!(svc["services"][0]["desiredCount"], 2);
    let old = common::call(&api, "DescribeTasks", json!({"tasks": before["taskArns"]})).1;
    for t in old["tasks"].as_array().unwrap() {
        assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    }
    // SIGTERM: a clean stop takes the node's record (and its lead) away
    // at once.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert_eq!(server.wait().unwrap().code(), Some(0));
    for key in [node_key.as_str(), "e2e/leader"] {
        let left = etcd.ctl(&["get", key]);
        assert!(left.trim().is_empty(), "{key} outlived its server: {left}");
    }
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

/// A skiff node of a test: its process, API, ingress and log.
struct Node {
    child: std::process::Child,
    api: String,
    ingress: String,
    log: std::sync::mpsc::Receiver<String>,
    data: tempfile::TempDir,
    args: Vec<String>,
}

impl Node {
    fn start(data: tempfile::TempDir, args: Vec<String>) -> Node {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, api, log) = common::start_server(data.path(), &a);
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .expect("the server says where its ingress is");
        let ingress = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no ingress address in {line:?}"))
            .to_string();
        Node {
            child,
            api,
            ingress,
            log,
            data,
            args,
        }
    }

    fn id(&self) -> String {
        std::fs::read_to_string(self.data.path().join("node-id"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// The status of GET / for the service `web` on its ingress.
    fn get_web(&self) -> u16 {
        self.get("web", "")
    }

    /// The status of GET / for `service` on its ingress, with `headers`
    /// (each ending in CRLF).
    fn get(&self, service: &str, headers: &str) -> u16 {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(&self.ingress) else {
            return 0;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {service}.localhost\r\n{headers}Connection: close\r\n\r\n"
        );
        let _ = c.write_all(req.as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for a log line containing `part`.
    fn said(&self, part: &str) -> String {
        let t0 = std::time::Instant::now();
        loop {
            let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
            match self.log.recv_timeout(left) {
                Ok(l) if l.contains(part) => return l,
                Ok(_) => {}
                Err(e) => panic!("the node never said {part:?} ({e})"),
            }
        }
    }
}

impl Drop for Node {
    /// A test that fails leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RUNNING tasks of `web` per container instance id, as `api` says.
fn placement(api: &str) -> std::collections::BTreeMap<String, usize> {
    let list = common::call(
        api,
        "ListTasks",
        json!({"serviceName": "web", "desiredStatus": "RUNNING"}),
    )
    .1;
    let mut out = std::collections::BTreeMap::new();
    if list["taskArns"].as_array().is_none_or(|a| a.is_empty()) {
        return out;
    }
    let tasks = common::call(api, "DescribeTasks", json!({"tasks": list["taskArns"]})).1;
    for t in tasks["tasks"].as_array().unwrap() {
        if t["lastStatus"] == "RUNNING" {
            let node = t["containerInstanceArn"].as_str().unwrap();
            let id = node.rsplit('/').next().unwrap().to_string();
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

/// Waits until `web` has 6 RUNNING tasks, none on `not_on`; returns
/// their placement.
fn six_running(api: &str, not_on: &[&str]) -> std::collections::BTreeMap<String, usize> {
    let t0 = std::time::Instant::now();
    loop {
        let p = placement(api);
        if p.values().sum::<usize>() == 6 && not_on.iter().all(|n| !p.contains_key(*n)) {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "web never ran 6 tasks away from {not_on:?}: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_share_a_store_and_replace_a_lost_node() {
    let etcd = common::Etcd::start();
    let url = etcd.url("three");
    let nodes: Vec<Node> = ["zone-a", "zone-b", "zone-c"]
        .iter()
        .map(|zone| {
            let args: Vec<String> = [
                "--store",
                &url,
                "--workers",
                "1",
                "--memory",
                "512",
                "--node-ttl",
                "2s",
                "--attribute",
                &format!("ecs.availability-zone={zone}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Node::start(tempfile::tempdir().unwrap(), args)
        })
        .collect();
    let mut nodes = nodes;
    let ids: Vec<String> = nodes.iter().map(Node::id).collect();

    // Every node is a container instance, seen alike from each.
    for n in &nodes {
        let list = common::wait_until(
            &n.api,
            "ListContainerInstances",
            json!({}),
            Duration::from_secs(30),
            |o| {
                o["containerInstanceArns"]
                    .as_array()
                    .is_some_and(|a| a.len() == 3)
            },
        );
        let arns = list["containerInstanceArns"].as_array().unwrap();
        for id in &ids {
            assert!(
                arns.iter()
                    .any(|a| a.as_str().unwrap().ends_with(id.as_str())),
                "{list}"
            );
        }
    }
    let (status, out) = common::call(
        &nodes[0].api,
        "ListContainerInstances",
        json!({"filter": "attribute:ecs.availability-zone == zone-b"}),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["containerInstanceArns"].as_array().unwrap().len(),
        1,
        "{out}"
    );
    assert!(out["containerInstanceArns"][0]
        .as_str()
        .unwrap()
        .ends_with(&ids[1]));

    // A service of 6, created on one node, runs two per zone.
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/dist/hello-http.wasm");
    let (status, out) = common::call(
        &nodes[0].api,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [
            {"name": "web", "image": image, "memory": 32}]}),
    );
    assert_eq!(status, 200, "{out}");
    let (status, out) = common::call(
        &nodes[1].api,
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 6,
               "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
    );
    assert_eq!(status, 200, "{out}");
    let p = six_running(&nodes[2].api, &[]);
    assert_eq!(p.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{p:?}");
    let described = common::call(
        &nodes[2].api,
        "DescribeContainerInstances",
        json!({"containerInstances": ids}),
    )
    .1;
    for ci in described["containerInstances"].as_array().unwrap() {
        assert_eq!(ci["runningTasksCount"], 2, "{ci}");
        assert_eq!(ci["agentConnected"], true, "{ci}");
        assert_eq!(ci["status"], "ACTIVE", "{ci}");
    }

    // A service with one task, on the zone-a node only: every node's
    // ingress answers for it, the other two by forwarding once.
    let (status, out) = common::call(
        &nodes[2].api,
        "CreateService",
        json!({"serviceName": "one", "taskDefinition": "web", "desiredCount": 1,
               "placementConstraints": [{"type": "memberOf",
                   "expression": "attribute:ecs.availability-zone == zone-a"}]}),
    );
    assert_eq!(status, 200, "{out}");
    running(&nodes[1].api, "one", 1);
    for n in &nodes {
        common::wait_until(
            &n.api,
            "ListClusters",
            json!({}),
            Duration::from_secs(30),
            |_| n.get("one", "") == 200,
        );
    }
    // A request already forwarded is not forwarded again.
    assert_eq!(
        nodes[1].get("one", "x-skiff-forwarded-service: default/one\r\n"),
        404
    );
    assert_eq!(
        nodes[0].get("one", "x-skiff-forwarded-service: default/one\r\n"),
        200
    );
    let (status, out) = common::call(
        &nodes[2].api,
        "UpdateService",
        json!({"service": "one", "desiredCount": 0}),
    );
    assert_eq!(status, 200, "{out}");

    // kill -9 of a node that does not lead: its tasks are recorded
    // STOPPED and replaced on the other two.
    let leader = || {
        etcd.ctl(&["get", "three/leader", "--print-value-only"])
            .trim()
            .to_string()
    };
    let first_leader = leader();
    let victim = ids.iter().position(|i| *i != first_leader).unwrap();
    nodes[victim].child.kill().unwrap();
    nodes[victim].child.wait().unwrap();
    let survivor = (victim + 1) % 3;
    let p = six_running(&nodes[survivor].api, &[&ids[victim]]);
    assert_eq!(p.len(), 2, "{p:?}");
    let stopped = common::call(
        &nodes[survivor].api,
        "ListTasks",
        json!({"serviceName": "web", "desiredStatus": "STOPPED"}),
    )
    .1;
    let stopped = common::call(
        &nodes[survivor].api,
        "DescribeTasks",
        json!({"tasks": stopped["taskArns"]}),
    )
    .1;
    let lost: Vec<&serde_json::Value> = stopped["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["stoppedReason"]
                .as_str()
                .unwrap_or("")
                .contains("was lost")
        })
        .collect();
    assert_eq!(lost.len(), 2, "{stopped}");
    assert_eq!(lost[0]["stopCode"], "TerminationNotice");
    let ci = common::call(
        &nodes[survivor].api,
        "DescribeContainerInstances",
        json!({"containerInstances": [ids[victim]]}),
    )
    .1;
    assert_eq!(ci["containerInstances"][0]["agentConnected"], false, "{ci}");

    // It comes back (same data directory: same node), rejoins, and runs
    // nothing twice: the service stays at 6, none on it.
    let data = std::mem::replace(&mut nodes[victim].data, tempfile::tempdir().unwrap());
    let args = nodes[victim].args.clone();
    nodes[victim] = Node::start(data, args);
    common::wait_until(
        &nodes[victim].api,
        "DescribeContainerInstances",
        json!({"containerInstances": [ids[victim]]}),
        Duration::from_secs(30),
        |o| o["containerInstances"][0]["agentConnected"] == true,
    );
    let p = six_running(&nodes[victim].api, &[&ids[victim]]);
    assert_eq!(p.values().sum::<usize>(), 6);

    // The leader frozen (SIGSTOP): its lease lapses, another node leads
    // and replaces its tasks. Thawed, it finds it leads no more, writes
    // nothing, and stops the tasks the store no longer gives it.
    let l = ids.iter().position(|i| *i == leader()).unwrap();
    let on_leader = placement(&nodes[l].api).get(&ids[l]).copied().unwrap_or(0);
    assert!(on_leader > 0, "the leader runs some of web");
    assert_eq!(
        nodes[l].get("web", "x-skiff-forwarded-service: default/web\r\n"),
        200
    );
    nodes[l].signal(libc::SIGSTOP);
    let other = (l + 1) % 3;
    let t0 = std::time::Instant::now();
    while leader() == ids[l] || leader().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no new leader");
        std::thread::sleep(Duration::from_millis(100));
    }
    six_running(&nodes[other].api, &[&ids[l]]);
    nodes[l].signal(libc::SIGCONT);
    nodes[l].said("no longer leads the scheduler");
    // Asked as a forwarded request, it answers from its own tasks only.
    let t0 = std::time::Instant::now();
    while nodes[l].get("web", "x-skiff-forwarded-service: default/web\r\n") == 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the thawed node still serves web"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(leader(), ids[l]);
    // Through any node's ingress, web still answers.
    assert_eq!(nodes[l].get_web(), 200);
    let p = six_running(&nodes[l].api, &[&ids[l]]);
    assert_eq!(p.values().sum::<usize>(), 6, "no duplicates: {p:?}");
    for n in &mut nodes {
        n.signal(libc::SIGTERM);
        n.child.wait().unwrap();
    }
}

#[test]
fn a_node_cut_off_from_etcd_past_its_ttl_stops_its_tasks() {
    let mut etcd = common::Etcd::start();
    let url = etcd.url("cut");
    let args: Vec<String> = ["--store", &url, "--workers", "1", "--node-ttl", "2s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let node = Node::start(tempfile::tempdir().unwrap(), args);
    web_service(&node.api, 1);
    let local = "x-skiff-forwarded-service: default/web\r\n";
    assert_eq!(node.get("web", local), 200);
    // etcd gone: once no keep-alive got through for longer than the TTL,
    // the node takes its lease for lapsed and stops its task (the other
    // nodes' leader would replace it).
    etcd.kill();
    node.said("lost its lease");
    let t0 = std::time::Instant::now();
    while node.get("web", local) == 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the task still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // etcd back: the node registers again and the service runs again.
    etcd.restart();
    let t0 = std::time::Instant::now();
    while node.get("web", local) != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "web never ran again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running(&node.api, "web", 1);
    node.signal(libc::SIGTERM);
    let mut node = node;
    assert_eq!(node.child.wait().unwrap().code(), Some(0));
}
