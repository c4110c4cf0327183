//! A data directory written by an earlier build, opened by this one:
//! `tests/fixtures/datadir-19ffb6b` is what `skiff server` at commit
//! 19ffb6b (before records were typed) stored, made by
//! `tests/fixtures/make-datadir.sh`. Everything in it reads as it was, its
//! service comes back to its count and answers, and the tasks it stopped
//! long ago are forgotten as this build's own would be.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A GET through the ingress at `addr` for `host`: status and body.
fn get(addr: &str, host: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    (
        status,
        resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

/// One CloudWatch Logs call.
fn logs_call(api: &str, action: &str, body: Value) -> Value {
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Logs_20140328.{action}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or("{}")).unwrap()
}

#[test]
fn a_data_dir_of_the_build_before_typed_records_serves_its_services() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-19ffb6b");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let (mut server, api, lines) = common::start_server(dir.path(), &["--workers", "1"]);
    let ingress = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the server never said where its ingress is");
        if let Some(rest) = line.split("ingress on http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let call = |action: &str, body: Value| {
        let (status, out) = common::call(&api, action, body.clone());
        assert_eq!(status, 200, "{action} {body}: {out}");
        out
    };

    // The service comes back to its count, and its tasks answer.
    let out = common::wait_until(
        &api,
        "DescribeServices",
        json!({"services": ["hello"]}),
        Duration::from_secs(60),
        |v| v["services"][0]["runningCount"] == 2,
    );
    let svc = &out["services"][0];
    assert_eq!(svc["status"], "ACTIVE");
    assert_eq!(svc["desiredCount"], 2);
    assert!(svc["taskDefinition"].as_str().unwrap().ends_with("hello:2"));
    let t0 = std::time::Instant::now();
    loop {
        let (status, body) = get(&ingress, "hello.default.localhost");
        if status == 200 {
            assert!(body.contains("from the old store"), "{body}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tags = call(
        "ListTagsForResource",
        json!({"resourceArn": svc["serviceArn"]}),
    );
    assert_eq!(tags["tags"], json!([{"key": "tier", "value": "web"}]));

    // Clusters: their settings, capacity providers and tags.
    let out = call(
        "DescribeClusters",
        json!({"clusters": ["shop"], "include": ["TAGS"]}),
    );
    let shop = &out["clusters"][0];
    assert_eq!(shop["status"], "ACTIVE");
    assert_eq!(
        shop["capacityProviders"],
        json!(["FARGATE", "FARGATE_SPOT"])
    );
    assert_eq!(
        shop["defaultCapacityProviderStrategy"][0]["capacityProvider"],
        "FARGATE"
    );
    assert_eq!(shop["settings"][0]["value"], "enabled");
    assert_eq!(shop["tags"], json!([{"key": "team", "value": "cart"}]));

    // Task definitions: each revision's status and document, the family's
    // count, tags.
    let one = call(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "hello:1", "include": ["TAGS"]}),
    );
    assert_eq!(one["taskDefinition"]["status"], "INACTIVE");
    assert!(one["taskDefinition"]["deregisteredAt"].is_number());
    assert_eq!(one["tags"], json!([{"key": "rev", "value": "one"}]));
    let latest = call("DescribeTaskDefinition", json!({"taskDefinition": "hello"}));
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    assert_eq!(
        latest["taskDefinition"]["containerDefinitions"][0]["environment"][0]["value"],
        "from the old store"
    );
    // `gone:1` was deleted, and with nothing using it, deleted for good:
    // its family counts it and is no longer listed.
    let (status, gone) = common::call(
        &api,
        "DescribeTaskDefinition",
        json!({"taskDefinition": "gone:1"}),
    );
    assert_eq!(status, 400, "{gone}");
    let families = call("ListTaskDefinitionFamilies", json!({"status": "ALL"}));
    assert_eq!(families["families"], json!(["hello", "job"]));
    let inactive = call("ListTaskDefinitions", json!({"status": "INACTIVE"}));
    assert_eq!(inactive["taskDefinitionArns"].as_array().unwrap().len(), 1);

    // The tasks the old build ran (the job, and the service's tasks it
    // stopped when it shut down) stopped longer ago than
    // --stopped-task-ttl (1h): they are forgotten at start, as tasks
    // this build recorded would be, with their tags, their log streams'
    // index and their log files. The log group's record stays.
    let stopped = call("ListTasks", json!({"desiredStatus": "STOPPED"}));
    assert_eq!(stopped["taskArns"], json!([]), "{stopped}");
    let old_logs = std::fs::read_dir(fixture.join("logs/default")).unwrap();
    for entry in old_logs {
        let id = entry.unwrap().file_name();
        assert!(
            !dir.path().join("logs/default").join(&id).exists(),
            "the logs of {id:?} were kept"
        );
    }
    let streams = logs_call(
        &api,
        "DescribeLogStreams",
        json!({"logGroupName": "/ecs/jobs"}),
    );
    assert_eq!(streams["logStreams"], json!([]), "{streams}");
    let groups = logs_call(
        &api,
        "DescribeLogGroups",
        json!({"logGroupNamePrefix": "/ecs/"}),
    );
    assert_eq!(groups["logGroups"][0]["logGroupName"], "/ecs/jobs");
    assert_eq!(groups["logGroups"][0]["retentionInDays"], 7);

    // The node, with the attribute put on it.
    let listed = call("ListContainerInstances", json!({}));
    let described = call(
        "DescribeContainerInstances",
        json!({"containerInstances": listed["containerInstanceArns"]}),
    );
    let attributes = described["containerInstances"][0]["attributes"]
        .as_array()
        .unwrap();
    assert!(
        attributes
            .iter()
            .any(|a| a["name"] == "tier" && a["value"] == "gold"),
        "{attributes:?}"
    );

    // And the new build writes where the old one left off.
    let next = call(
        "RegisterTaskDefinition",
        json!({"family": "hello", "containerDefinitions": [{"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 64}]}),
    );
    assert_eq!(next["taskDefinition"]["revision"], 3);
    server.kill().unwrap();
    server.wait().unwrap();
}
