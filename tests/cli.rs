//! The client commands as a user runs them, against a real server: what a
//! trapped task left (run --wait, ps, describe, logs), a service's life
//! (create, services, ps, scale, delete), `--json` parsed, and errors as
//! one line with a non-zero exit.

mod common;

use std::process::{Child, Command, Output};

use serde_json::Value;

struct Server {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let (child, api, _) = common::start_server(data.path(), &[]);
        Server {
            child,
            endpoint: format!("http://{api}"),
            _data: data,
        }
    }

    fn skiff(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("SKIFF_ENDPOINT", &self.endpoint)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_trapped_task_is_explained_by_run_ps_describe_and_logs() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let td = dir.path().join("crash.json");
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/dist/crash.wasm");
    std::fs::write(
        &td,
        format!(r#"{{"family": "crash", "containerDefinitions": [{{"name": "main", "image": "{image}", "memory": 16, "command": ["unreachable"]}}]}}"#),
    )
    .unwrap();
    let out = s.skiff(&["register", td.to_str().unwrap()]);
    assert_eq!(
        text(&out.stdout),
        "registered crash:1\n",
        "{}",
        text(&out.stderr)
    );

    let run = s.skiff(&["run", "crash", "--wait"]);
    assert_eq!(run.status.code(), Some(1));
    let said = text(&run.stdout);
    assert!(
        said.contains("Essential container in task exited"),
        "{said}"
    );
    assert!(
        said.contains("main: Trap: container main trapped: unreachable"),
        "{said}"
    );

    let ps = s.skiff(&["ps", "--all", "--json"]);
    let v: Value = serde_json::from_slice(&ps.stdout).unwrap();
    let task = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["group"] == "family:crash")
        .expect("the task is listed");
    assert_eq!(task["lastStatus"], "STOPPED");
    let id = task["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();

    let table = text(&s.skiff(&["ps", "-a"]).stdout);
    assert!(table.starts_with("TASK"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED")),
        "{table}"
    );

    let d = text(&s.skiff(&["describe", id]).stdout);
    assert!(
        d.contains("stopped") && d.contains("EssentialContainerExited"),
        "{d}"
    );
    assert!(d.contains("trapped: unreachable"), "{d}");

    let logs = text(&s.skiff(&["logs", id]).stdout);
    assert!(
        logs.contains("main stderr [skiff] container main trapped: unreachable"),
        "{logs}"
    );
}

#[test]
fn a_service_through_its_life_and_errors_in_one_line() {
    let s = Server::start();
    let out = s.skiff(&["register", "examples/hello/taskdef.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.skiff(&["create-service", "hello", "hello", "--count", "2", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let services = text(&s.skiff(&["services"]).stdout);
    let row = services
        .lines()
        .find(|l| l.starts_with("hello"))
        .expect("a row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["hello", "ACTIVE", "2", "2", "0", "hello:1"],
        "{services}"
    );

    let ps: Value =
        serde_json::from_slice(&s.skiff(&["ps", "--service", "hello", "--json"]).stdout).unwrap();
    let tasks = ps["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["lastStatus"] == "RUNNING"));

    let d = text(&s.skiff(&["describe", "hello"]).stdout);
    assert!(d.contains("has reached a steady state"), "{d}");

    let out = s.skiff(&["scale", "hello", "1", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.skiff(&["services", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["runningCount"], 1);

    // Errors are the API's words, in one line, with exit 1.
    let out = s.skiff(&["delete-service", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("skiff: InvalidParameterException: The service cannot be stopped"),
        "{err}"
    );
    let out = s.skiff(&["delete-service", "hello", "--force", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = s.skiff(&["describe", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "skiff: no task or service \"nothing-here\" in cluster default\n"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["ps", "--endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot reach the skiff API at http://127.0.0.1:9"));
}
