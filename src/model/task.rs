//! Tasks: the stored record of one placement of a task definition, its
//! lifecycle, and how it is shown through the API.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::arn::Scope;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub launch_type: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    /// The worker the task was placed on.
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
    /// Bumped at every change, as ECS's `version`.
    pub version: u64,
}

impl TaskRecord {
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
                    o.insert("healthStatus".into(), json!("UNKNOWN"));
                }
                v
            })
            .collect();
        let mut v = json!({
            "taskArn": task_arn,
            "clusterArn": scope.cluster(&self.cluster),
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
            "healthStatus": "UNKNOWN",
            "attachments": [],
            "availabilityZone": format!("{}a", scope.region),
            "platformVersion": "1.4.0",
            "platformFamily": "wasi",
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(s) = &self.started_by {
            o.insert("startedBy".into(), json!(s));
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

#[cfg(test)]
mod tests {
    use super::*;

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
