//! Tasks: the stored record of one placement of a task definition, its
//! lifecycle, and how it is shown through the API.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::arn::Scope;
use super::taskdef::TaskDefinition;

/// ECS's task lifecycle, in order. A task only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    /// Whether a task may move from `self` to `next`: forward only, and
    /// from any state straight to the stopping states.
    pub fn can_become(self, next: TaskStatus) -> bool {
        next > self
    }
}

/// What a task is meant to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

/// Why a task stopped, in ECS's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    TerminationNotice,
}

/// A container's or a task's health, as ECS reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

impl HealthStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

fn yes() -> bool {
    true
}

/// A container's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

/// A container of a task, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The manifest digest of a registry image: set when the task is made
    /// from a deployment that resolved its tags, else by the agent when it
    /// pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    pub last_status: ContainerStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub cpu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,
    /// Whether the task stops when it stops.
    #[serde(default = "yes")]
    pub essential: bool,
    /// Its health, when it has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
}

/// What happened to a task, reported by its worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The worker has the task and is loading its images.
    Pending,
    /// Container `index`'s registry image was pulled at `digest` (a task
    /// made without a digest records the one its tag named).
    ImagePulled {
        /// Which container.
        index: usize,
        /// The manifest digest.
        digest: String,
    },
    /// Its images are loaded; containers are about to start.
    Activating,
    /// Its first container started.
    Running,
    /// Container `index` started.
    ContainerRunning(usize),
    /// Container `index` stopped.
    ContainerStopped {
        /// Which container.
        index: usize,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// Why, in words, when it did not simply exit.
        reason: Option<String>,
    },
    /// Container `index`'s health changed.
    ContainerHealth {
        /// Which container.
        index: usize,
        /// Its health now.
        status: HealthStatus,
    },
    /// The task is about to stop its containers (takes no new work).
    Deactivating,
    /// The task is stopping.
    Stopping {
        /// Why.
        code: StopCode,
        /// In words.
        reason: String,
    },
    /// Its containers have stopped; its resources are being released.
    Deprovisioning,
    /// The task has stopped; its resources are released.
    Stopped {
        /// Why.
        code: StopCode,
        /// In words.
        reason: String,
    },
}

/// Where tasks are stored: `tasks/CLUSTER/ID`.
pub const PREFIX: &str = "tasks/";

/// The store key of a task.
pub fn key(cluster: &str, id: &str) -> String {
    format!("tasks/{cluster}/{id}")
}

/// The prefix of a cluster's tasks.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("tasks/{cluster}/")
}

/// A task, as stored at `tasks/CLUSTER/ID`. ARNs are made when it is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TaskRecord {
    pub id: String,
    pub cluster: String,
    pub family: String,
    pub revision: u32,
    pub group: String,
    /// The service that started it (its HTTP container is then routed
    /// by the ingress); `None` for RunTask's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub launch_type: String,
    /// The capacity provider (`FARGATE`, `FARGATE_SPOT`) its strategy gave
    /// it; `None` for a task started with a launch type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider: Option<String>,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    /// The node (container instance) the task was placed on; empty in
    /// records from before nodes had ids.
    #[serde(default)]
    pub node: String,
    /// The availability zone of its node, when placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The worker of its node it was placed on.
    pub worker: usize,
    pub cpu: u32,
    pub memory: u64,
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerRecord>,
    /// The `overrides` of RunTask, as given.
    pub overrides: Value,
    /// Follows its essential containers' health checks.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// CloudWatch Logs (group, stream) of its containers with `awslogs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_streams: Vec<(String, String)>,
    /// Scale-in protection (UpdateTaskProtection): until this time
    /// (seconds since the epoch) neither a lower desired count nor a
    /// deployment stops the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<f64>,
    /// Bumped at every change, as ECS's `version`.
    pub version: u64,
}

impl TaskRecord {
    /// A task of `td` placed on `worker` of `node`, about to be
    /// provisioned: group `family:FAMILY`, launch type FARGATE and no
    /// overrides until the caller says otherwise. Ids come from `new_id`.
    pub fn placed(
        td: &TaskDefinition,
        revision: u32,
        cluster: &str,
        node: &str,
        worker: usize,
        now: f64,
        new_id: &mut dyn FnMut() -> String,
    ) -> TaskRecord {
        let containers = td
            .containers
            .iter()
            .map(|c| ContainerRecord {
                id: new_id(),
                name: c.name.clone(),
                image: c.image.clone(),
                image_digest: None,
                last_status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                cpu: c.cpu,
                memory: c.memory,
                memory_reservation: c.memory_reservation,
                essential: c.essential,
                health_status: c.health_check.as_ref().map(|_| HealthStatus::Unknown),
            })
            .collect();
        TaskRecord {
            id: new_id(),
            cluster: cluster.to_string(),
            family: td.family.clone(),
            revision,
            group: format!("family:{}", td.family),
            service: None,
            started_by: None,
            launch_type: "FARGATE".into(),
            capacity_provider: None,
            last_status: TaskStatus::Provisioning,
            desired_status: DesiredStatus::Running,
            node: node.to_string(),
            zone: None,
            worker,
            cpu: td.reserved_cpu(),
            memory: td.reserved_memory(),
            created_at: now,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            containers,
            overrides: json!({}),
            health_status: HealthStatus::Unknown,
            log_streams: Vec::new(),
            protected_until: None,
            version: 1,
        }
        .with_log_streams(td)
    }

    fn with_log_streams(mut self, td: &TaskDefinition) -> TaskRecord {
        self.log_streams = td
            .containers
            .iter()
            .filter_map(|c| {
                let a = c.awslogs.as_ref()?;
                Some((a.group.clone(), a.stream(&c.name, &self.id)))
            })
            .collect();
        self
    }

    /// Reads a stored task; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<TaskRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The task as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Moves the task forward to `next` (never back); returns whether it moved.
    pub fn advance(&mut self, next: TaskStatus) -> bool {
        if self.last_status.can_become(next) {
            self.last_status = next;
            self.version += 1;
            true
        } else {
            false
        }
    }

    /// When its scale-in protection ends, if it is protected at `now`.
    pub fn protected_at(&self, now: f64) -> Option<f64> {
        self.protected_until.filter(|&until| until > now)
    }

    /// Whether any essential container has a health check (so the task's
    /// health can become HEALTHY).
    pub fn health_checked(&self) -> bool {
        self.containers
            .iter()
            .any(|c| c.essential && c.health_status.is_some())
    }

    /// Sets container `index`'s health and derives the task's, as ECS
    /// does: UNHEALTHY if any essential container is; HEALTHY if every
    /// essential container with a health check is; UNKNOWN otherwise.
    pub fn set_health(&mut self, index: usize, status: HealthStatus) {
        if let Some(c) = self.containers.get_mut(index) {
            c.health_status = Some(status);
        }
        let checked: Vec<HealthStatus> = self
            .containers
            .iter()
            .filter(|c| c.essential)
            .filter_map(|c| c.health_status)
            .collect();
        self.health_status = if checked.contains(&HealthStatus::Unhealthy) {
            HealthStatus::Unhealthy
        } else if !checked.is_empty() && checked.iter().all(|h| *h == HealthStatus::Healthy) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        };
    }

    /// The task as DescribeTasks shows it.
    pub fn view(&self, scope: &Scope) -> Value {
        let task_arn = scope.task(&self.cluster, &self.id);
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.remove("id");
                    o.insert(
                        "containerArn".into(),
                        json!(scope.container(&self.cluster, &self.id, &c.id)),
                    );
                    o.insert("taskArn".into(), json!(task_arn));
                    o.insert("cpu".into(), json!(c.cpu.to_string()));
                    if let Some(m) = c.memory {
                        o.insert("memory".into(), json!(m.to_string()));
                    }
                    if let Some(m) = c.memory_reservation {
                        o.insert("memoryReservation".into(), json!(m.to_string()));
                    }
                    o.insert("networkBindings".into(), json!([]));
                    o.remove("essential");
                    o.insert(
                        "healthStatus".into(),
                        json!(c.health_status.unwrap_or_default().as_str()),
                    );
                }
                v
            })
            .collect();
        let mut v = json!({
            "taskArn": task_arn,
            "clusterArn": scope.cluster(&self.cluster),
            "containerInstanceArn": scope.container_instance(&self.cluster, &self.node),
            "taskDefinitionArn": scope.task_definition(&self.family, self.revision),
            "group": self.group,
            "launchType": self.launch_type,
            "lastStatus": self.last_status.as_str(),
            "desiredStatus": match self.desired_status { DesiredStatus::Running => "RUNNING", DesiredStatus::Stopped => "STOPPED" },
            "cpu": self.cpu.to_string(),
            "memory": self.memory.to_string(),
            "createdAt": self.created_at,
            "containers": containers,
            "overrides": self.overrides,
            "version": self.version,
            "healthStatus": self.health_status.as_str(),
            "attachments": [],
            "availabilityZone": self.zone.clone().unwrap_or_else(|| format!("{}a", scope.region)),
            // Which of its node's worker threads runs it.
            "attributes": [{"name": "skiff.worker", "value": self.worker.to_string()}],
            "platformVersion": "1.4.0",
            "platformFamily": "wasi",
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(s) = &self.started_by {
            o.insert("startedBy".into(), json!(s));
        }
        if let Some(p) = &self.capacity_provider {
            o.insert("capacityProviderName".into(), json!(p));
        }
        for (k, t) in [
            ("startedAt", self.started_at),
            ("stoppingAt", self.stopping_at),
            ("stoppedAt", self.stopped_at),
        ] {
            if let Some(t) = t {
                o.insert(k.into(), json!(t));
            }
        }
        if let Some(t) = self.stopped_at {
            o.insert("executionStoppedAt".into(), json!(t));
        }
        if let Some(c) = self.stop_code {
            o.insert(
                "stopCode".into(),
                serde_json::to_value(c).unwrap_or_default(),
            );
        }
        if let Some(r) = &self.stopped_reason {
            o.insert("stoppedReason".into(), json!(r));
        }
        v
    }
}

/// Applies one event to a task record.
pub fn record(t: &mut TaskRecord, event: &Event, at: f64) {
    t.version += 1;
    match event {
        Event::Pending => {
            t.advance(TaskStatus::Pending);
        }
        Event::ImagePulled { index, digest } => {
            if let Some(c) = t.containers.get_mut(*index) {
                c.image_digest = Some(digest.clone());
            }
        }
        Event::Activating => {
            t.advance(TaskStatus::Activating);
        }
        Event::Deactivating => {
            t.advance(TaskStatus::Deactivating);
        }
        Event::Deprovisioning => {
            t.advance(TaskStatus::Deprovisioning);
        }
        Event::Running => {
            if t.advance(TaskStatus::Running) {
                t.started_at.get_or_insert(at);
            }
        }
        Event::ContainerRunning(i) => {
            if let Some(c) = t.containers.get_mut(*i) {
                if c.last_status == ContainerStatus::Pending {
                    c.last_status = ContainerStatus::Running;
                }
            }
        }
        Event::ContainerStopped {
            index,
            exit_code,
            reason,
        } => {
            if let Some(c) = t.containers.get_mut(*index) {
                if c.last_status != ContainerStatus::Stopped {
                    c.last_status = ContainerStatus::Stopped;
                    c.exit_code = *exit_code;
                    c.reason = reason.clone();
                }
            }
        }
        Event::ContainerHealth { index, status } => {
            if t.last_status < TaskStatus::Stopped {
                t.set_health(*index, *status);
            }
        }
        Event::Stopping { code, reason } => {
            t.advance(TaskStatus::Stopping);
            stopping(t, *code, reason, at);
        }
        Event::Stopped { code, reason } => {
            stopping(t, *code, reason, at);
            if t.advance(TaskStatus::Stopped) {
                t.stopped_at = Some(at);
            }
        }
    }
}

fn stopping(t: &mut TaskRecord, code: StopCode, reason: &str, at: f64) {
    t.desired_status = DesiredStatus::Stopped;
    t.stopping_at.get_or_insert(at);
    // The first reason stands: StopTask writes its own before the worker
    // reports back.
    if t.stop_code.is_none() {
        t.stop_code = Some(code);
        t.stopped_reason = Some(reason.to_string());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PROVISIONING task of one container, on node n1.
    pub(crate) fn task() -> TaskRecord {
        TaskRecord {
            id: "t1".into(),
            cluster: "default".into(),
            family: "f".into(),
            revision: 1,
            group: "family:f".into(),
            service: None,
            started_by: None,
            launch_type: "FARGATE".into(),
            capacity_provider: None,
            last_status: TaskStatus::Provisioning,
            desired_status: DesiredStatus::Running,
            node: "n1".into(),
            zone: None,
            worker: 0,
            cpu: 0,
            memory: 16,
            created_at: 1.0,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            containers: vec![ContainerRecord {
                id: "c1".into(),
                name: "main".into(),
                image: "x.wasm".into(),
                image_digest: None,
                last_status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                cpu: 0,
                memory: Some(16),
                memory_reservation: None,
                essential: true,
                health_status: None,
            }],
            overrides: serde_json::json!({}),
            health_status: Default::default(),
            log_streams: Vec::new(),
            protected_until: None,
            version: 1,
        }
    }

    #[test]
    fn a_command_task_runs_its_whole_lifecycle() {
        let mut t = task();
        record(&mut t, &Event::Pending, 2.0);
        assert_eq!(t.last_status, TaskStatus::Pending);
        record(&mut t, &Event::Activating, 2.5);
        assert_eq!(t.last_status, TaskStatus::Activating);
        record(&mut t, &Event::ContainerRunning(0), 3.0);
        record(&mut t, &Event::Running, 3.0);
        assert_eq!(
            (t.last_status, t.started_at),
            (TaskStatus::Running, Some(3.0))
        );
        assert_eq!(t.containers[0].last_status, ContainerStatus::Running);
        let exited = Event::ContainerStopped {
            index: 0,
            exit_code: Some(3),
            reason: None,
        };
        record(&mut t, &exited, 4.0);
        record(&mut t, &Event::Deactivating, 4.0);
        assert_eq!(t.last_status, TaskStatus::Deactivating);
        let stopping = Event::Stopping {
            code: StopCode::EssentialContainerExited,
            reason: "Essential container in task exited".into(),
        };
        record(&mut t, &stopping, 4.0);
        record(&mut t, &Event::Deprovisioning, 4.5);
        assert_eq!(t.last_status, TaskStatus::Deprovisioning);
        record(
            &mut t,
            &Event::Stopped {
                code: StopCode::EssentialContainerExited,
                reason: "Essential container in task exited".into(),
            },
            5.0,
        );
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.desired_status, DesiredStatus::Stopped);
        assert_eq!((t.stopping_at, t.stopped_at), (Some(4.0), Some(5.0)));
        assert_eq!(t.containers[0].exit_code, Some(3));
        assert_eq!(t.stop_code, Some(StopCode::EssentialContainerExited));
    }

    #[test]
    fn the_first_stop_reason_stands_and_status_never_goes_back() {
        let mut t = task();
        t.stop_code = Some(StopCode::UserInitiated);
        t.stopped_reason = Some("bye".into());
        record(
            &mut t,
            &Event::Stopped {
                code: StopCode::EssentialContainerExited,
                reason: "other".into(),
            },
            5.0,
        );
        assert_eq!(t.stop_code, Some(StopCode::UserInitiated));
        assert_eq!(t.stopped_reason.as_deref(), Some("bye"));
        // A late report cannot bring a stopped task back.
        record(&mut t, &Event::Running, 6.0);
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.started_at, None);
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(TaskStatus::Provisioning.can_become(TaskStatus::Running));
        assert!(TaskStatus::Running.can_become(TaskStatus::Stopped));
        assert!(!TaskStatus::Stopped.can_become(TaskStatus::Running));
        assert!(!TaskStatus::Running.can_become(TaskStatus::Running));
        assert_eq!(
            serde_json::to_value(TaskStatus::Deprovisioning).unwrap(),
            "DEPROVISIONING"
        );
        assert_eq!(
            serde_json::to_value(StopCode::EssentialContainerExited).unwrap(),
            "EssentialContainerExited"
        );
    }
}
