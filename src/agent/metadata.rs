//! A task's own endpoints, as Fargate serves them at `169.254.170.2`:
//! the task metadata endpoint version 4 (`ECS_CONTAINER_METADATA_URI_V4`,
//! and `/task` under it) and the scale-in protection endpoint
//! (`$ECS_AGENT_URI/task-protection/v1/state`, GET and PUT).
//!
//! They are answered in process, from the task's record in the store, to
//! the guest's `wasi:http` requests: no socket is opened and no outbound
//! rule is needed. A container reaches only its own task's endpoints;
//! each URI carries the container's id (`TASKID-INDEX`, its `DockerId`).
//! Docker stats (`/stats`, `/task/stats`) are not served: a wasm task has
//! no Docker container to report on.
//!
//! A guest cannot use them against the node: each container has at most
//! [`MAX_CONCURRENT`] requests served at once (the rest wait their turn,
//! off the blocking threads the API needs), and at most
//! [`WRITES_PER_SECOND`] protection changes (each a store commit) a second
//! on average; past that a PUT is answered 429.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};
use skiff_runtime::{LocalEndpoint, LocalRequest, LocalResponse};

/// The link-local address of a task's own endpoints: Fargate's task
/// metadata address, where ECS's `ECS_CONTAINER_METADATA_URI_V4` and
/// `ECS_AGENT_URI` point.
pub const LOCAL_ENDPOINT_HOST: &str = "169.254.170.2";

use crate::model::arn::Scope;
use crate::model::protection;
use crate::model::task::{DesiredStatus, TaskRecord};
use crate::store::Store;

/// Requests of one container served at once.
pub(crate) const MAX_CONCURRENT: usize = 2;

/// Protection changes one container may make a second, on average...
pub(crate) const WRITES_PER_SECOND: f64 = 5.0;

/// ...and at once, after a quiet while.
const WRITE_BURST: f64 = 10.0;

/// One container's endpoints. Clones share its limits.
#[derive(Clone)]
pub(crate) struct TaskEndpoints {
    store: Arc<dyn Store>,
    scope: Scope,
    cluster: String,
    task: String,
    /// Which container of the task asks.
    index: usize,
    /// Per container: its `awslogs` (group, stream), when it has one.
    logs: Vec<Option<(String, String)>>,
    /// Per container: its `dockerLabels`.
    labels: Vec<BTreeMap<String, String>>,
    /// Turns to be served.
    turns: Arc<tokio::sync::Semaphore>,
    /// Protection changes it may make now, and when that was counted.
    writes: Arc<Mutex<(f64, Instant)>>,
}

impl TaskEndpoints {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        scope: Scope,
        cluster: &str,
        task: &str,
        index: usize,
        definition: &crate::model::taskdef::TaskDefinition,
    ) -> TaskEndpoints {
        let cs = &definition.containers;
        TaskEndpoints {
            store,
            scope,
            cluster: cluster.to_string(),
            task: task.to_string(),
            index,
            logs: cs
                .iter()
                .map(|c| {
                    let a = c.awslogs.as_ref()?;
                    Some((a.group.clone(), a.stream(&c.name, task)))
                })
                .collect(),
            labels: cs.iter().map(|c| c.docker_labels.clone()).collect(),
            turns: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
            writes: Arc::new(Mutex::new((WRITE_BURST, Instant::now()))),
        }
    }

    /// Takes one protection change from the budget; whether there was one.
    fn may_write(&self) -> bool {
        let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = *w;
        let tokens =
            (tokens + now.duration_since(at).as_secs_f64() * WRITES_PER_SECOND).min(WRITE_BURST);
        let allowed = tokens >= 1.0;
        *w = (if allowed { tokens - 1.0 } else { tokens }, now.max(at));
        allowed
    }

    /// The container's id in its URIs and its `DockerId`.
    fn id(&self) -> String {
        docker_id(&self.task, self.index)
    }

    /// `ECS_CONTAINER_METADATA_URI_V4` and `ECS_AGENT_URI`, for the
    /// container's environment.
    pub(crate) fn env(&self) -> [(String, String); 2] {
        let id = self.id();
        [
            (
                "ECS_CONTAINER_METADATA_URI_V4".to_string(),
                format!("http://{LOCAL_ENDPOINT_HOST}/v4/{id}"),
            ),
            (
                "ECS_AGENT_URI".to_string(),
                format!("http://{LOCAL_ENDPOINT_HOST}/api/{id}"),
            ),
        ]
    }

    /// The answer to `req`, reading and writing the store (blocking).
    fn serve(&self, req: &LocalRequest) -> LocalResponse {
        let id = self.id();
        let v4 = format!("/v4/{id}");
        let api = format!("/api/{id}");
        let path = req.path.trim_end_matches('/');
        if let Some(rest) = path.strip_prefix(&v4) {
            if req.method != "GET" {
                return text(
                    405,
                    format!("{} {path}: only GET is served here", req.method),
                );
            }
            return match rest {
                "" | "/task" => match self.record() {
                    Ok(Some(t)) if rest.is_empty() => match t.containers.get(self.index) {
                        Some(_) => ok(self.container(&t, self.index)),
                        None => text(404, format!("task {} has no container {}", t.id, self.index)),
                    },
                    Ok(Some(t)) => ok(self.task_view(&t)),
                    Ok(None) => text(404, format!("task {} is no longer known", self.task)),
                    Err(e) => text(500, format!("the task's record could not be read: {e}")),
                },
                "/stats" | "/task/stats" => text(
                    404,
                    format!("{path}: Docker stats are not served by skiff (a wasm task has no Docker container); CloudWatch-style metrics are at the server's /metrics"),
                ),
                _ => text(404, format!("{path}: not a task metadata path; use {v4} or {v4}/task")),
            };
        }
        if path == format!("{api}/task-protection/v1/state") {
            return match req.method.as_str() {
                "GET" => self.protection_state(),
                "PUT" => self.protect(&req.body),
                m => text(405, format!("{m} {path}: use GET or PUT")),
            };
        }
        text(
            404,
            format!(
                "{path}: not an endpoint of this container; it has {v4}, {v4}/task and {api}/task-protection/v1/state"
            ),
        )
    }

    fn record(&self) -> Result<Option<TaskRecord>, crate::store::StoreError> {
        let key = crate::model::task::key(&self.cluster, &self.task);
        Ok(self
            .store
            .get(&key)?
            .and_then(|r| crate::model::task::TaskRecord::decode(&r.value)))
    }

    fn task_arn(&self) -> String {
        self.scope.task(&self.cluster, &self.task)
    }

    /// A container as the endpoint shows it.
    fn container(&self, t: &TaskRecord, i: usize) -> Value {
        let c = &t.containers[i];
        let task_arn = self.task_arn();
        let mut v = json!({
            "DockerId": docker_id(&t.id, i),
            "Name": c.name,
            "DockerName": c.name,
            "Image": c.image,
            "Labels": {
                "com.amazonaws.ecs.cluster": self.scope.cluster(&t.cluster),
                "com.amazonaws.ecs.container-name": c.name,
                "com.amazonaws.ecs.task-arn": task_arn,
                "com.amazonaws.ecs.task-definition-family": t.family,
                "com.amazonaws.ecs.task-definition-version": t.revision.to_string(),
            },
            "DesiredStatus": desired(t),
            "KnownStatus": serde_json::to_value(c.last_status).unwrap_or_default(),
            "Limits": {"CPU": c.cpu},
            "CreatedAt": crate::model::rfc3339(t.created_at),
            "Type": "NORMAL",
            "ContainerARN": self.scope.container(&t.cluster, &t.id, &c.id),
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(m) = c.memory {
            o["Limits"]["Memory"] = json!(m);
        }
        // The container's own labels, then ECS's (which win).
        if let (Some(own), Some(Value::Object(ecs))) = (self.labels.get(i), o.get_mut("Labels")) {
            let mut all: serde_json::Map<String, Value> =
                own.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            all.append(ecs);
            *ecs = all;
        }
        if let Some(d) = &c.image_digest {
            o.insert("ImageID".into(), json!(d));
        }
        if let Some(at) = t.started_at {
            o.insert("StartedAt".into(), json!(crate::model::rfc3339(at)));
        }
        if let Some(at) = t.stopped_at {
            o.insert("FinishedAt".into(), json!(crate::model::rfc3339(at)));
        }
        if let Some(code) = c.exit_code {
            o.insert("ExitCode".into(), json!(code));
        }
        if let Some(h) = c.health_status {
            o.insert("Health".into(), json!({"status": h.as_str()}));
        }
        if let Some(Some((group, stream))) = self.logs.get(i) {
            o.insert("LogDriver".into(), json!("awslogs"));
            o.insert(
                "LogOptions".into(),
                json!({
                    "awslogs-group": group,
                    "awslogs-region": self.scope.region,
                    "awslogs-stream": stream,
                }),
            );
        }
        v
    }

    /// The task as `/task` shows it, with all its containers.
    fn task_view(&self, t: &TaskRecord) -> Value {
        let containers: Vec<Value> = (0..t.containers.len())
            .map(|i| self.container(t, i))
            .collect();
        let mut v = json!({
            "Cluster": self.scope.cluster(&t.cluster),
            "TaskARN": self.task_arn(),
            "Family": t.family,
            "Revision": t.revision.to_string(),
            "DesiredStatus": desired(t),
            "KnownStatus": t.last_status.as_str(),
            "Limits": {"CPU": f64::from(t.cpu) / 1024.0, "Memory": t.memory},
            "AvailabilityZone": t.zone.clone().unwrap_or_else(|| format!("{}a", self.scope.region)),
            "LaunchType": t.launch_type,
            "Containers": containers,
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(s) = &t.service {
            o.insert("ServiceName".into(), json!(s));
        }
        if let Some(at) = t.stopped_at {
            o.insert(
                "ExecutionStoppedAt".into(),
                json!(crate::model::rfc3339(at)),
            );
        }
        v
    }

    /// GET `task-protection/v1/state`.
    fn protection_state(&self) -> LocalResponse {
        match self.record() {
            Ok(Some(t)) => match protection::unreadable(&t) {
                Some(why) => self.failure("TASK_NOT_VALID", why),
                None => ok(self.protection(&t, crate::model::now())),
            },
            Ok(None) => self.failure(
                "MISSING",
                format!(
                    "task {} was not found in cluster {}",
                    self.task, self.cluster
                ),
            ),
            Err(e) => self.error(500, "ServerException", e.to_string()),
        }
    }

    /// PUT `task-protection/v1/state` with `{"ProtectionEnabled": bool,
    /// "ExpiresInMinutes": n}`, as UpdateTaskProtection.
    fn protect(&self, body: &[u8]) -> LocalResponse {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct Put {
            protection_enabled: Option<bool>,
            expires_in_minutes: Option<i64>,
        }
        let put: Put = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                return self.error(
                    400,
                    "InvalidParameterException",
                    format!("the body must be JSON such as {{\"ProtectionEnabled\": true, \"ExpiresInMinutes\": 60}}: {e}"),
                )
            }
        };
        let Some(enabled) = put.protection_enabled else {
            return self.error(
                400,
                "InvalidParameterException",
                "ProtectionEnabled is required: true or false".into(),
            );
        };
        let minutes = put
            .expires_in_minutes
            .unwrap_or(protection::DEFAULT_MINUTES);
        if let Err(why) = protection::check_minutes("ExpiresInMinutes", enabled, minutes) {
            return self.error(400, "InvalidParameterException", why.to_string());
        }
        if !self.may_write() {
            return self.error(
                429,
                "ThrottlingException",
                format!("more than {WRITES_PER_SECOND} protection changes a second from this container; retry later"),
            );
        }
        match crate::store::records::protect(
            self.store.as_ref(),
            &self.cluster,
            &self.task,
            enabled,
            minutes,
        ) {
            Ok(Ok((t, now))) => ok(self.protection(&t, now)),
            Ok(Err((reason, detail))) => self.failure(reason, detail),
            Err(e) => self.error(500, "ServerException", e.to_string()),
        }
    }

    /// `{"protection": {...}}`, with ECS's field names.
    fn protection(&self, t: &TaskRecord, now: f64) -> Value {
        let mut p = json!({"ProtectionEnabled": false, "TaskArn": self.task_arn()});
        if let Some(until) = t.protected_at(now) {
            p["ProtectionEnabled"] = json!(true);
            p["ExpirationDate"] = json!(crate::model::rfc3339(until));
        }
        json!({ "protection": p })
    }

    /// A refusal of the scheduler: 404 for a missing task, else 409.
    fn failure(&self, reason: &str, detail: String) -> LocalResponse {
        let status = if reason == "MISSING" { 404 } else { 409 };
        json_response(
            status,
            json!({"failure": {"Arn": self.task_arn(), "Reason": reason, "Detail": detail}}),
        )
    }

    fn error(&self, status: u16, code: &str, message: String) -> LocalResponse {
        json_response(
            status,
            json!({"error": {"Arn": self.task_arn(), "Code": code, "Message": message}}),
        )
    }
}

impl LocalEndpoint for TaskEndpoints {
    fn host(&self) -> &str {
        LOCAL_ENDPOINT_HOST
    }

    fn answer(&self, req: LocalRequest) -> Pin<Box<dyn Future<Output = LocalResponse> + Send>> {
        let me = self.clone();
        Box::pin(async move {
            // Never closed: a turn always comes.
            let Ok(_turn) = me.turns.clone().acquire_owned().await else {
                return text(503, "the endpoint is shutting down".into());
            };
            // The store blocks (SQLite, or a round trip to etcd).
            tokio::task::spawn_blocking(move || me.serve(&req))
                .await
                .unwrap_or_else(|e| text(500, format!("the endpoint failed: {e}")))
        })
    }
}

/// A container's id in its URIs: its task's id and its index.
fn docker_id(task: &str, index: usize) -> String {
    format!("{task}-{index}")
}

fn desired(t: &TaskRecord) -> &'static str {
    match t.desired_status {
        DesiredStatus::Running => "RUNNING",
        DesiredStatus::Stopped => "STOPPED",
    }
}

fn ok(body: Value) -> LocalResponse {
    json_response(200, body)
}

fn json_response(status: u16, body: Value) -> LocalResponse {
    LocalResponse {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn text(status: u16, body: String) -> LocalResponse {
    LocalResponse {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Write};

    /// A stored task `t1` of `web:3` in cluster `c` (of service `svc`
    /// unless `standalone`), and the endpoints of its container 0.
    fn setup(standalone: bool) -> (tempfile::TempDir, TaskEndpoints) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let td = crate::model::taskdef::TaskDefinition::parse(&json!({
            "family": "web",
            "containerDefinitions": [
                {"name": "web", "image": "x.wasm", "memory": 32, "cpu": 256,
                 "dockerLabels": {"team": "a", "com.amazonaws.ecs.container-name": "mine"},
                 "logConfiguration": {"logDriver": "awslogs", "options": {
                     "awslogs-group": "/ecs/web", "awslogs-stream-prefix": "app"}}},
                {"name": "side", "image": "y.wasm", "memory": 16, "essential": false}]
        }))
        .unwrap();
        let mut n = 0;
        let mut t = TaskRecord::placed(&td, 3, "c", "node1", 0, 1_700_000_000.5, &mut || {
            n += 1;
            format!("id{n}")
        });
        t.id = "t1".into();
        if !standalone {
            t.service = Some("svc".into());
            t.group = "service:svc".into();
        }
        t.started_at = Some(1_700_000_001.0);
        store
            .commit(
                &[],
                &[Write::Put(crate::model::task::key("c", "t1"), t.encode())],
            )
            .unwrap();
        let ep = TaskEndpoints::new(
            store,
            Scope::new("eu-west-1", "123456789012"),
            "c",
            "t1",
            0,
            &td,
        );
        (dir, ep)
    }

    fn ask(ep: &TaskEndpoints, method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = ep.serve(&LocalRequest {
            method: method.into(),
            path: path.into(),
            body: bytes::Bytes::from(body.to_string()),
        });
        let v = serde_json::from_str(&r.body).unwrap_or_else(|_| json!(r.body));
        (r.status, v)
    }

    #[test]
    fn the_uris_name_the_container_and_answer_its_task() {
        let (_d, ep) = setup(false);
        let env = ep.env();
        assert_eq!(
            env[0],
            (
                "ECS_CONTAINER_METADATA_URI_V4".into(),
                "http://169.254.170.2/v4/t1-0".into()
            )
        );
        assert_eq!(
            env[1],
            (
                "ECS_AGENT_URI".into(),
                "http://169.254.170.2/api/t1-0".into()
            )
        );

        let (status, c) = ask(&ep, "GET", "/v4/t1-0", "");
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["Name"], "web");
        assert_eq!(c["DockerId"], "t1-0");
        assert_eq!(
            c["ContainerARN"],
            "arn:aws:ecs:eu-west-1:123456789012:container/c/t1/id1"
        );
        assert_eq!(c["Limits"], json!({"CPU": 256, "Memory": 32}));
        assert_eq!(
            c["Labels"]["com.amazonaws.ecs.task-arn"],
            "arn:aws:ecs:eu-west-1:123456789012:task/c/t1"
        );
        assert_eq!(
            c["Labels"]["com.amazonaws.ecs.task-definition-version"],
            "3"
        );
        assert_eq!(c["CreatedAt"], "2023-11-14T22:13:20.500Z");
        assert_eq!(c["StartedAt"], "2023-11-14T22:13:21Z");
        assert_eq!(c["LogDriver"], "awslogs");
        assert_eq!(c["LogOptions"]["awslogs-stream"], "app/web/t1");
        assert_eq!(c["LogOptions"]["awslogs-region"], "eu-west-1");

        let (status, t) = ask(&ep, "GET", "/v4/t1-0/task", "");
        assert_eq!(status, 200, "{t}");
        assert_eq!(t["TaskARN"], "arn:aws:ecs:eu-west-1:123456789012:task/c/t1");
        assert_eq!(t["Cluster"], "arn:aws:ecs:eu-west-1:123456789012:cluster/c");
        assert_eq!((&t["Family"], &t["Revision"]), (&json!("web"), &json!("3")));
        assert_eq!(t["ServiceName"], "svc");
        assert_eq!(t["LaunchType"], "FARGATE");
        assert_eq!(t["DesiredStatus"], "RUNNING");
        let names: Vec<&str> = t["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "side"]);
        assert!(t["Containers"][1].get("LogDriver").is_none());
    }

    #[test]
    fn other_ids_paths_and_methods_are_refused_by_name() {
        let (_d, ep) = setup(false);
        // Another task's (or container's) id: not this container's.
        for path in [
            "/v4/t2-0",
            "/v4/t1-1/task",
            "/api/t2-0/task-protection/v1/state",
            "/",
        ] {
            let (status, body) = ask(&ep, "GET", path, "");
            assert_eq!(status, 404, "{path}: {body}");
            assert!(
                body.as_str()
                    .unwrap()
                    .contains("not an endpoint of this container"),
                "{body}"
            );
        }
        let (status, body) = ask(&ep, "GET", "/v4/t1-0/task/stats", "");
        assert_eq!(status, 404);
        assert!(
            body.as_str()
                .unwrap()
                .contains("Docker stats are not served"),
            "{body}"
        );
        let (status, _) = ask(&ep, "POST", "/v4/t1-0/task", "");
        assert_eq!(status, 405);
        let (status, _) = ask(&ep, "DELETE", "/api/t1-0/task-protection/v1/state", "");
        assert_eq!(status, 405);
    }

    #[test]
    fn protection_is_set_read_and_refused_as_ecs_does() {
        let (_d, ep) = setup(false);
        let state = "/api/t1-0/task-protection/v1/state";
        let (status, v) = ask(&ep, "GET", state, "");
        assert_eq!(
            (status, &v["protection"]["ProtectionEnabled"]),
            (200, &json!(false))
        );

        let before = crate::model::now();
        let (status, v) = ask(
            &ep,
            "PUT",
            state,
            r#"{"ProtectionEnabled": true, "ExpiresInMinutes": 5}"#,
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["protection"]["ProtectionEnabled"], true);
        assert_eq!(
            v["protection"]["TaskArn"],
            "arn:aws:ecs:eu-west-1:123456789012:task/c/t1"
        );
        // Written to the store, where the scheduler reads it.
        let until = ep.record().unwrap().unwrap().protected_until.unwrap();
        assert!((until - before - 300.0).abs() < 5.0, "{until} {before}");
        assert_eq!(
            v["protection"]["ExpirationDate"],
            crate::model::rfc3339(until)
        );
        let (_, v) = ask(&ep, "GET", state, "");
        assert_eq!(v["protection"]["ProtectionEnabled"], true);

        // Without ExpiresInMinutes: 2 hours, as ECS.
        ask(&ep, "PUT", state, r#"{"ProtectionEnabled": true}"#);
        let until = ep.record().unwrap().unwrap().protected_until.unwrap();
        assert!((until - crate::model::now() - 7200.0).abs() < 5.0);

        for (body, says) in [
            (
                r#"{"ProtectionEnabled": true, "ExpiresInMinutes": 0}"#,
                "ExpiresInMinutes must be from 1 to 2880",
            ),
            (
                r#"{"ExpiresInMinutes": 5}"#,
                "ProtectionEnabled is required",
            ),
            (
                r#"{"ProtectionEnabled": true, "Minutes": 5}"#,
                "unknown field `Minutes`",
            ),
            ("not json", "the body must be JSON"),
        ] {
            let (status, v) = ask(&ep, "PUT", state, body);
            assert_eq!(status, 400, "{body}: {v}");
            assert_eq!(v["error"]["Code"], "InvalidParameterException");
            assert!(
                v["error"]["Message"].as_str().unwrap().contains(says),
                "{body}: {v}"
            );
        }
        // A refused PUT changed nothing.
        assert!(ep
            .record()
            .unwrap()
            .unwrap()
            .protected_at(crate::model::now())
            .is_some());

        let (status, v) = ask(&ep, "PUT", state, r#"{"ProtectionEnabled": false}"#);
        assert_eq!(
            (status, &v["protection"]["ProtectionEnabled"]),
            (200, &json!(false))
        );
        assert_eq!(ep.record().unwrap().unwrap().protected_until, None);
    }

    #[test]
    fn a_container_that_keeps_changing_its_protection_is_throttled() {
        use std::time::Duration;
        let (_d, ep) = setup(false);
        let state = "/api/t1-0/task-protection/v1/state";
        let put = r#"{"ProtectionEnabled": true, "ExpiresInMinutes": 1}"#;
        // Counted from a time still to come, the budget does not refill
        // while the test runs, however slow the disk.
        let future = Instant::now() + Duration::from_secs(3600);
        *ep.writes.lock().unwrap() = (WRITE_BURST, future);
        let statuses: Vec<u16> = (0..WRITE_BURST as usize + 2)
            .map(|_| ask(&ep, "PUT", state, put).0)
            .collect();
        let mut expected = vec![200; WRITE_BURST as usize];
        expected.extend([429, 429]);
        assert_eq!(statuses, expected);
        let (_, v) = ask(&ep, "PUT", state, put);
        assert_eq!(v["error"]["Code"], "ThrottlingException", "{v}");
        // Reads are not throttled; a clone shares the budget.
        assert_eq!(ask(&ep, "GET", state, "").0, 200);
        assert_eq!(ask(&ep.clone(), "PUT", state, put).0, 429);
        // The budget refills at WRITES_PER_SECOND.
        let since = Instant::now() - Duration::from_secs_f64(1.5 / WRITES_PER_SECOND);
        *ep.writes.lock().unwrap() = (0.0, since);
        assert_eq!(ask(&ep, "PUT", state, put).0, 200);
    }

    /// A gate reads wait at, counting how many wait at once.
    struct Gate {
        state: Mutex<(usize, usize, bool)>,
        changed: std::sync::Condvar,
    }

    impl Gate {
        /// (reading now, the most that ever read at once, gate open)
        fn state(&self) -> std::sync::MutexGuard<'_, (usize, usize, bool)> {
            self.state.lock().unwrap()
        }

        /// Waits until the gate is open.
        fn pass(&self) {
            let mut s = self.state();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            self.changed.notify_all();
            while !s.2 {
                s = self.changed.wait(s).unwrap();
            }
            s.0 -= 1;
        }
    }

    #[test]
    fn a_container_has_at_most_two_requests_served_at_once() {
        let (_d, ep) = setup(false);
        let gated = Arc::new(Gate {
            state: Mutex::new((0, 0, false)),
            changed: std::sync::Condvar::new(),
        });
        let gate = gated.clone();
        let store =
            crate::store::hooked::Hooked::new(ep.store.clone()).before_get(move |_| gate.pass());
        let ep = TaskEndpoints {
            store: Arc::new(store),
            ..ep
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let asks: Vec<_> = (0..6)
            .map(|_| {
                rt.spawn(ep.answer(LocalRequest {
                    method: "GET".into(),
                    path: "/v4/t1-0/task".into(),
                    body: bytes::Bytes::new(),
                }))
            })
            .collect();
        // Two reach the store and wait at the gate; the other four wait
        // their turn before it.
        {
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            let mut s = gated.state();
            while s.0 < MAX_CONCURRENT {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "no request reached the store");
                s = gated.changed.wait_timeout(s, left).unwrap().0;
            }
            // Without the bound the other four would be there within a
            // moment: give them one (this wait only ends early on failure).
            let moment = Instant::now() + std::time::Duration::from_millis(300);
            while s.0 <= MAX_CONCURRENT {
                let left = moment.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = gated.changed.wait_timeout(s, left).unwrap().0;
            }
            let crowd = s.0;
            // Open before asserting, so that a failure does not leave the
            // runtime's threads waiting forever.
            s.2 = true;
            gated.changed.notify_all();
            drop(s);
            assert_eq!(
                crowd, MAX_CONCURRENT,
                "more requests reached the store at once"
            );
        }
        for a in asks {
            assert_eq!(rt.block_on(a).unwrap().status, 200);
        }
        assert_eq!(
            gated.state().1,
            MAX_CONCURRENT,
            "more requests were served at once"
        );
    }

    #[test]
    fn a_task_not_of_a_service_cannot_be_protected() {
        let (_d, ep) = setup(true);
        let state = "/api/t1-0/task-protection/v1/state";
        for (method, body) in [("GET", ""), ("PUT", r#"{"ProtectionEnabled": true}"#)] {
            let (status, v) = ask(&ep, method, state, body);
            assert_eq!(status, 409, "{method}: {v}");
            assert_eq!(v["failure"]["Reason"], "TASK_NOT_VALID");
            assert!(
                v["failure"]["Detail"]
                    .as_str()
                    .unwrap()
                    .contains("not started by a service"),
                "{v}"
            );
        }
        assert_eq!(ep.record().unwrap().unwrap().protected_until, None);
    }
}
