//! The engine as a process: `skiff server` spoken to over its API with a
//! minimal AWS JSON 1.1 client, through a task's lifecycle and a graceful
//! shutdown.

mod common;

use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    api: String,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(data: &std::path::Path) -> Server {
        let (child, api, lines) = common::start_server(data, &["--workers", "2"]);
        Server { child, api, lines }
    }

    fn call(&self, action: &str, body: Value) -> (u16, Value) {
        common::call(&self.api, action, body)
    }

    /// Polls DescribeTasks until every task has `status`, within `timeout`.
    fn wait_for(&self, arns: &[String], status: &str, timeout: Duration) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let (_, out) = self.call("DescribeTasks", json!({"tasks": arns}));
            let tasks = out["tasks"].as_array().cloned().unwrap_or_default();
            if tasks.len() == arns.len() && tasks.iter().all(|t| t["lastStatus"] == status) {
                return tasks;
            }
            assert!(
                t0.elapsed() < timeout,
                "tasks never reached {status}: {out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn register(s: &Server, family: &str, containers: Value) {
    let (status, out) = s.call(
        "RegisterTaskDefinition",
        json!({"family": family, "containerDefinitions": containers}),
    );
    assert_eq!(status, 200, "{out}");
}

fn run(s: &Server, family: &str) -> String {
    let (status, out) = s.call("RunTask", json!({"taskDefinition": family}));
    assert_eq!(status, 200, "{out}");
    out["tasks"][0]["taskArn"].as_str().unwrap().to_string()
}

#[test]
fn lifecycle_of_a_command_and_an_essential_exit_stopping_a_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    register(
        &s,
        "batch",
        json!([
            {"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 16, "essential": false},
            {"name": "job", "image": "guests/dist/echo.wasm", "memory": 16, "command": ["--exit", "5"],
             "dependsOn": [{"containerName": "web", "condition": "START"}]}
        ]),
    );
    let arn = run(&s, "batch");
    let t = &s.wait_for(&[arn], "STOPPED", Duration::from_secs(30))[0];
    assert_eq!(t["stopCode"], "EssentialContainerExited");
    let c = t["containers"].as_array().unwrap();
    assert_eq!(c[1]["exitCode"], 5);
    // The non-essential sidecar was stopped with the task.
    assert_eq!(c[0]["lastStatus"], "STOPPED");
    assert_eq!(
        c[0]["reason"],
        "stopped: Essential container in task exited"
    );
}

#[test]
fn healthy_dependencies_wait_for_the_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    register(
        &s,
        "healthy",
        json!([
            {"name": "db", "image": "guests/dist/hello-http.wasm", "memory": 16, "essential": false,
             "healthCheck": {"command": ["CMD", "GET /healthz"], "interval": 5}},
            {"name": "app", "image": "guests/dist/echo.wasm", "memory": 16,
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]}
        ]),
    );
    let arn = run(&s, "healthy");
    let t = &s.wait_for(&[arn], "STOPPED", Duration::from_secs(30))[0];
    assert_eq!(t["containers"][1]["exitCode"], 0, "{t}");
}

#[test]
fn graceful_shutdown_stops_tasks_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let arn;
    {
        let mut s = Server::start(dir.path());
        register(
            &s,
            "web",
            json!([{"name": "web", "image": "guests/dist/hello-http.wasm", "memory": 16}]),
        );
        arn = run(&s, "web");
        s.wait_for(
            std::slice::from_ref(&arn),
            "RUNNING",
            Duration::from_secs(30),
        );
        // SIGTERM, then wait (bounded) for the process to end.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the server did not stop"
            );
            let _ = s.lines.recv_timeout(Duration::from_millis(50));
        }
    }
    let s = Server::start(dir.path());
    let (_, out) = s.call("DescribeTasks", json!({"tasks": [arn]}));
    let t = &out["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stoppedReason"], "the skiff server shut down", "{t}");
}
