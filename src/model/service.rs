//! Services: the stored desired state of a service (its count, task
//! definition, deployment configuration and placement), its deployments and
//! events, and how they are shown through the API.
//!
//! Counts of running and pending tasks are not stored: they are observed
//! from the service's tasks whenever the service is shown, so they are
//! never stale.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::arn::Scope;
use super::provider::StrategyItem;
use super::task::{DesiredStatus, TaskRecord, TaskStatus};

/// The most events a service keeps (newest first), as ECS shows.
pub const MAX_EVENTS: usize = 100;

/// The most finished deployments a service remembers for
/// ListServiceDeployments.
pub const MAX_FINISHED_DEPLOYMENTS: usize = 20;

/// A service's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ServiceStatus {
    Active,
    /// Deleted; its tasks are stopping.
    Draining,
    /// Deleted and without tasks. Its name can be used again.
    Inactive,
}

impl ServiceStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }
}

/// A deployment's place in its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum DeploymentStatus {
    /// The one the service scales to its desired count.
    Primary,
    /// An older one whose tasks are being replaced.
    Active,
    /// Finished: no tasks left.
    Inactive,
}

/// How a deployment's rollout is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

/// A deployment as ListServiceDeployments/DescribeServiceDeployments show
/// it (ECS's "service deployment" status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ServiceDeploymentStatus {
    InProgress,
    Successful,
    Stopped,
    RollbackInProgress,
    RollbackSuccessful,
    RollbackFailed,
}

/// `deploymentConfiguration.deploymentCircuitBreaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    /// Whether failing deployments are stopped.
    pub enable: bool,
    /// Whether a failed deployment rolls back to the last completed one.
    pub rollback: bool,
}

/// `deploymentConfiguration`, with ECS's defaults (100% and 200%).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfig {
    /// Fewest healthy tasks, in percent of the desired count (rounded up).
    pub minimum_healthy_percent: u32,
    /// Most tasks, in percent of the desired count (rounded down).
    pub maximum_percent: u32,
    /// The circuit breaker, when set.
    pub circuit_breaker: Option<CircuitBreaker>,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig {
            minimum_healthy_percent: 100,
            maximum_percent: 200,
            circuit_breaker: None,
        }
    }
}

impl DeploymentConfig {
    /// The fewest healthy tasks a rollout keeps for `desired`.
    pub fn min_healthy(&self, desired: u32) -> u32 {
        (desired * self.minimum_healthy_percent).div_ceil(100)
    }

    /// The most tasks a rollout runs for `desired`.
    pub fn max_total(&self, desired: u32) -> u32 {
        desired * self.maximum_percent / 100
    }

    fn view(&self) -> Value {
        let mut v = json!({
            "maximumPercent": self.maximum_percent,
            "minimumHealthyPercent": self.minimum_healthy_percent,
        });
        if let Some(cb) = self.circuit_breaker {
            v["deploymentCircuitBreaker"] = json!({"enable": cb.enable, "rollback": cb.rollback});
        }
        v
    }
}

/// How tasks are placed on nodes and their workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Evenly over container instances (nodes), by the service's tasks
    /// (`spread` on `instanceId`).
    Spread,
    /// Evenly over the values of a node attribute (`spread` on
    /// `attribute:NAME`).
    SpreadAttribute(String),
    /// On the worker with the least CPU left that fits.
    BinpackCpu,
    /// On the worker with the least memory left that fits.
    BinpackMemory,
    /// Anywhere it fits.
    Random,
}

/// A rolling deployment's rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// Why.
    pub reason: String,
    /// When it began.
    pub started_at: f64,
    /// The deployment restored.
    pub to: String,
}

/// One deployment: a task definition rolled out to a count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `ecs-svc/` and 19 digits, as ECS makes them.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: DeploymentStatus,
    /// Its task definition family.
    pub family: String,
    /// And revision.
    pub revision: u32,
    /// When it was made.
    pub created_at: f64,
    /// When it last changed.
    pub updated_at: f64,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: RolloutState,
    /// In words.
    pub rollout_state_reason: String,
    /// Its tasks that failed (stopped before they ran healthy).
    pub failed_tasks: u32,
    /// Whether its start throttle has been reported since it engaged.
    pub throttled: bool,
    /// Its state as a service deployment.
    pub outcome: ServiceDeploymentStatus,
    /// Why it ended, when it did.
    pub outcome_reason: Option<String>,
    /// When it finished.
    pub finished_at: Option<f64>,
    /// Its rollback, when it failed and rolled back.
    pub rollback: Option<Rollback>,
    /// The deployment this one restores, when it is a rollback.
    pub restores: Option<String>,
    /// The deployments that were live when it started (its sources).
    pub sources: Vec<String>,
    /// The deployment configuration it rolls out with.
    pub config: DeploymentConfig,
    /// Per container (by name): the manifest digest its registry image's
    /// tag named when the deployment was made. Every task of the
    /// deployment runs that digest, wherever the tag moves later.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_digests: BTreeMap<String, String>,
    /// Its `serviceConnectConfiguration`, when Service Connect is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_connect: Option<super::connect::ServiceConnect>,
    /// Its tasks running and pending, as the scheduler last saw them.
    #[serde(default)]
    pub observed: Counts,
}

impl Deployment {
    /// A new deployment, in progress.
    pub fn new(
        id: String,
        family: &str,
        revision: u32,
        config: DeploymentConfig,
        now: f64,
    ) -> Self {
        Deployment {
            id,
            status: DeploymentStatus::Primary,
            family: family.to_string(),
            revision,
            created_at: now,
            updated_at: now,
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: "ECS deployment in progress.".into(),
            failed_tasks: 0,
            throttled: false,
            outcome: ServiceDeploymentStatus::InProgress,
            outcome_reason: None,
            finished_at: None,
            rollback: None,
            restores: None,
            sources: Vec::new(),
            config,
            image_digests: BTreeMap::new(),
            service_connect: None,
            observed: Counts::default(),
        }
    }

    /// The digits of the id (ECS puts them in service deployment and
    /// service revision ARNs).
    pub fn number(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or(&self.id)
    }

    /// Whether it has reached an end as a service deployment.
    pub fn finished(&self) -> bool {
        !matches!(
            self.outcome,
            ServiceDeploymentStatus::InProgress | ServiceDeploymentStatus::RollbackInProgress
        )
    }
}

/// A service event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// Unique.
    pub id: String,
    /// When.
    pub created_at: f64,
    /// ECS's words.
    pub message: String,
}

/// A service, as stored at `services/CLUSTER/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ServiceRecord {
    pub name: String,
    pub cluster: String,
    pub status: ServiceStatus,
    pub desired_count: u32,
    /// The task definition of the primary deployment.
    pub family: String,
    pub revision: u32,
    pub launch_type: String,
    /// The capacity provider strategy its tasks are spread over (then no
    /// launch type is shown); empty for a service with a launch type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_provider_strategy: Vec<StrategyItem>,
    pub config: DeploymentConfig,
    /// Strategies in order (the first decides; later ones break ties).
    pub strategy: Vec<Strategy>,
    /// `placementStrategy` as given, shown back.
    pub placement_strategy: Value,
    /// `placementConstraints` as given, shown back.
    pub placement_constraints: Value,
    /// One task per container instance (node) at most.
    pub distinct_instance: bool,
    /// `memberOf` expressions (each parsed when stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    pub health_check_grace_period_seconds: u32,
    pub created_at: f64,
    /// The principal that created it (`arn:aws:iam::ACCOUNT:user/NAME`);
    /// `None` in records from before it was kept (shown as the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Settings ECS has and skiff keeps and shows, as given.
    pub extra: Value,
    /// Newest first; live deployments before finished ones.
    pub deployments: Vec<Deployment>,
    /// Newest first, at most [`MAX_EVENTS`].
    pub events: Vec<ServiceEvent>,
    /// Whether the last reconcile found it in a steady state.
    pub steady: bool,
    /// schedulingStrategy DAEMON: one task on each ACTIVE node its
    /// constraints allow, its desired count following the nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub daemon: bool,
    /// Tasks the last reconcile would have stopped (to scale in or for a
    /// deployment) but left running because they are protected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_by_protection: u32,
    /// When DeleteService was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<f64>,
    /// The custom domains it claims (its task definition's
    /// `skiff.domains`; none once it is deleted).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub domains: BTreeSet<String>,
    /// Plain HTTP for its domains is redirected to HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Its tasks running and pending (of every deployment), as the
    /// scheduler last saw them: what DescribeServices shows, as ECS's
    /// counts, without reading the tasks.
    #[serde(default)]
    pub observed: Counts,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where services are stored: `services/CLUSTER/NAME`.
pub const PREFIX: &str = "services/";

/// The store key of a service.
pub fn key(cluster: &str, name: &str) -> String {
    format!("services/{cluster}/{name}")
}

/// The prefix of every service's task index.
pub const TASKS_PREFIX: &str = "servicetasks/";

/// The prefix of a cluster's services.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("services/{cluster}/")
}

/// The prefix under which a service's task index lives.
pub fn tasks_prefix(cluster: &str, name: &str) -> String {
    format!("{TASKS_PREFIX}{cluster}/{name}/")
}

/// The index key that ties a task to its service.
pub fn task_index_key(cluster: &str, name: &str, task: &str) -> String {
    format!("{}{task}", tasks_prefix(cluster, name))
}

/// The group ECS gives a service's tasks.
pub fn group(name: &str) -> String {
    format!("service:{name}")
}

/// What is observed of one deployment's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Tasks in RUNNING.
    pub running: u32,
    /// Tasks meant to run that are not RUNNING yet.
    pub pending: u32,
}

/// Counts of `tasks` started by `deployment` (every task when `None`).
pub fn counts<'a>(
    tasks: impl IntoIterator<Item = &'a TaskRecord>,
    deployment: Option<&str>,
) -> Counts {
    let mut c = Counts::default();
    for t in tasks
        .into_iter()
        .filter(|t| deployment.is_none_or(|d| t.started_by.as_deref() == Some(d)))
    {
        c.add(t);
    }
    c
}

impl Counts {
    /// Counts `t`, if it is running or pending.
    fn add(&mut self, t: &TaskRecord) {
        if t.last_status == TaskStatus::Running {
            self.running += 1;
        } else if t.desired_status == DesiredStatus::Running && t.last_status < TaskStatus::Running
        {
            self.pending += 1;
        }
    }
}

/// The longest event message kept, in bytes (longer ones are cut, at a
/// character boundary, with `...`).
pub const MAX_EVENT_MESSAGE: usize = 1024;

/// How many tasks an event names before it says "and N more".
pub const EVENT_TASKS_NAMED: usize = 10;

/// `(task a) (task b) ... and N more`: the tasks an event is about, the
/// first [`EVENT_TASKS_NAMED`] by name, as ECS bounds its messages.
pub fn named_tasks<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = ids.len();
    let mut out: Vec<String> = ids
        .take(EVENT_TASKS_NAMED)
        .map(|id| format!("(task {id})"))
        .collect();
    if n > EVENT_TASKS_NAMED {
        out.push(format!("and {} more", n - EVENT_TASKS_NAMED));
    }
    out.join(" ")
}

impl ServiceRecord {
    /// Its Service Connect configuration: the primary deployment's.
    pub fn service_connect(&self) -> Option<&super::connect::ServiceConnect> {
        self.primary().and_then(|d| d.service_connect.as_ref())
    }

    /// The primary deployment.
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// Adds an event (newest first, bounded in number and each message
    /// in length).
    pub fn event(&mut self, id: String, now: f64, mut message: String) {
        if message.len() > MAX_EVENT_MESSAGE {
            let mut end = MAX_EVENT_MESSAGE - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        self.events.insert(
            0,
            ServiceEvent {
                id,
                created_at: now,
                message,
            },
        );
        self.events.truncate(MAX_EVENTS);
    }

    /// Whether an event with this message was added in the last `secs`.
    pub fn said_recently(&self, message: &str, now: f64, secs: f64) -> bool {
        self.events
            .iter()
            .take_while(|e| e.created_at >= now - secs)
            .any(|e| e.message == message)
    }

    /// The ids of the deployments that are not INACTIVE (a new
    /// deployment's sources; whose tasks are the service's).
    pub fn live_deployments(&self) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| d.status != DeploymentStatus::Inactive)
            .map(|d| d.id.clone())
            .collect()
    }

    /// Rolls the deployment at `index` back: the last deployment that
    /// completed comes back as a new primary (`id`), with the same task
    /// definition and image digests, and the one at `index` keeps running
    /// its tasks (ROLLBACK_IN_PROGRESS) until the new one has replaced
    /// them. Says so in an event. `None`, and nothing changed, when no
    /// other deployment completed.
    pub fn roll_back(
        &mut self,
        index: usize,
        reason: &str,
        id: String,
        event_id: String,
        now: f64,
    ) -> Option<&Deployment> {
        let from = self.deployments.get(index)?.id.clone();
        let previous = self
            .deployments
            .iter()
            .filter(|d| d.id != from && d.rollout_state == RolloutState::Completed)
            .max_by(|a, b| a.created_at.total_cmp(&b.created_at))?
            .clone();
        let mut r = Deployment::new(id, &previous.family, previous.revision, self.config, now);
        r.restores = Some(from);
        // Back to exactly what ran: the same image digests.
        r.image_digests = previous.image_digests.clone();
        r.service_connect = previous.service_connect.clone();
        r.sources = self.live_deployments();
        for d in &mut self.deployments {
            if d.status == DeploymentStatus::Primary {
                d.status = DeploymentStatus::Active;
                d.updated_at = now;
            }
        }
        let d = &mut self.deployments[index];
        d.status = DeploymentStatus::Active;
        d.outcome = ServiceDeploymentStatus::RollbackInProgress;
        d.outcome_reason = Some(reason.to_string());
        d.updated_at = now;
        d.rollback = Some(Rollback {
            reason: reason.to_string(),
            started_at: now,
            to: previous.id.clone(),
        });
        self.family = previous.family.clone();
        self.revision = previous.revision;
        self.steady = false;
        let message = format!(
            "(service {}) rolling back to deployment {}.",
            self.name, r.id
        );
        self.event(event_id, now, message);
        self.deployments.insert(0, r);
        self.deployments.first()
    }

    /// Drops the oldest finished, inactive deployments beyond the bound.
    pub fn trim_deployments(&mut self) {
        let mut kept = 0;
        self.deployments.retain(|d| {
            if d.status != DeploymentStatus::Inactive {
                return true;
            }
            kept += 1;
            kept <= MAX_FINISHED_DEPLOYMENTS
        });
    }

    /// Records what the scheduler sees of the service's `tasks`: the
    /// counts of each deployment and of them all.
    pub fn observe<'a>(&mut self, tasks: impl IntoIterator<Item = &'a TaskRecord>) {
        let mut total = Counts::default();
        let mut by: BTreeMap<&str, Counts> = BTreeMap::new();
        for t in tasks {
            total.add(t);
            if let Some(d) = &t.started_by {
                by.entry(d).or_default().add(t);
            }
        }
        self.observed = total;
        for d in &mut self.deployments {
            d.observed = by.get(d.id.as_str()).copied().unwrap_or_default();
        }
    }

    /// Adds to the counts [`ServiceRecord::observe`] recorded the tasks
    /// just `placed` (pending, each in its deployment).
    pub fn observe_placed(&mut self, placed: &[TaskRecord]) {
        for t in placed {
            self.observed.add(t);
            if let Some(d) = self
                .deployments
                .iter_mut()
                .find(|d| t.started_by.as_deref() == Some(d.id.as_str()))
            {
                d.observed.add(t);
            }
        }
    }

    /// The service as DescribeServices shows it, with the counts the
    /// scheduler last observed.
    pub fn view(&self, scope: &Scope) -> Value {
        let total = self.observed;
        let deployments: Vec<Value> = self
            .deployments
            .iter()
            .filter(|d| d.status != DeploymentStatus::Inactive)
            .map(|d| self.described_deployment(scope, d))
            .collect();
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|e| json!({"id": e.id, "createdAt": e.created_at, "message": e.message}))
            .collect();
        let mut v = json!({
            "serviceArn": scope.service(&self.cluster, &self.name),
            "serviceName": self.name,
            "clusterArn": scope.cluster(&self.cluster),
            "loadBalancers": [],
            "serviceRegistries": [],
            "status": self.status.as_str(),
            "desiredCount": self.desired_count,
            "runningCount": total.running,
            "pendingCount": total.pending,
            "launchType": self.launch_type,
            "platformVersion": "1.4.0",
            "platformFamily": "wasi",
            "taskDefinition": scope.task_definition(&self.family, self.revision),
            "deploymentConfiguration": self.config.view(),
            "deployments": deployments,
            "events": events,
            "createdAt": self.created_at,
            "placementConstraints": self.placement_constraints,
            "placementStrategy": self.placement_strategy,
            "healthCheckGracePeriodSeconds": self.health_check_grace_period_seconds,
            "schedulingStrategy": if self.daemon { "DAEMON" } else { "REPLICA" },
            "deploymentController": {"type": "ECS"},
            "enableECSManagedTags": false,
            "propagateTags": "NONE",
            "enableExecuteCommand": false,
            "createdBy": self.created_by.clone().unwrap_or_else(|| scope.root()),
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(extra) = self.extra.as_object() {
            for (k, x) in extra {
                o.insert(k.clone(), x.clone());
            }
        }
        self.how_launched(o);
        if let Some(p) = self.primary() {
            o.insert(
                "currentServiceDeployment".into(),
                json!(scope.service_deployment(&self.cluster, &self.name, p.number())),
            );
        }
        o.insert("currentServiceRevisions".into(), self.revisions_view(scope));
        v
    }

    /// One of the service's deployments as DescribeServices shows it.
    fn described_deployment(&self, scope: &Scope, d: &Deployment) -> Value {
        let c = d.observed;
        let desired = match d.status {
            DeploymentStatus::Primary if self.status == ServiceStatus::Active => self.desired_count,
            _ => c.running + c.pending,
        };
        let mut v = json!({
            "id": d.id,
            "status": match d.status {
                DeploymentStatus::Primary => "PRIMARY",
                DeploymentStatus::Active => "ACTIVE",
                DeploymentStatus::Inactive => "INACTIVE",
            },
            "taskDefinition": scope.task_definition(&d.family, d.revision),
            "desiredCount": desired,
            "pendingCount": c.pending,
            "runningCount": c.running,
            "failedTasks": d.failed_tasks,
            "createdAt": d.created_at,
            "updatedAt": d.updated_at,
            "launchType": self.launch_type,
            "platformVersion": "1.4.0",
            "platformFamily": "wasi",
            "rolloutState": rollout_word(d.rollout_state),
            "rolloutStateReason": d.rollout_state_reason,
        });
        if let (Some(o), Some(sc)) = (v.as_object_mut(), &d.service_connect) {
            o.insert("serviceConnectConfiguration".into(), sc.view());
            let resources: Vec<Value> = sc
                .services
                .iter()
                .map(|e| json!({"discoveryName": e.discovery_name}))
                .collect();
            o.insert("serviceConnectResources".into(), json!(resources));
        }
        if let Some(o) = v.as_object_mut() {
            self.how_launched(o);
        }
        v
    }

    /// A service with a capacity provider strategy shows it in place of
    /// its launch type.
    fn how_launched(&self, o: &mut serde_json::Map<String, Value>) {
        if !self.capacity_provider_strategy.is_empty() {
            o.remove("launchType");
            o.insert(
                "capacityProviderStrategy".into(),
                json!(self.capacity_provider_strategy),
            );
        }
    }

    /// `currentServiceRevisions`: what each live deployment runs.
    fn revisions_view(&self, scope: &Scope) -> Value {
        let revisions: Vec<Value> = self
            .deployments
            .iter()
            .filter(|d| d.status != DeploymentStatus::Inactive)
            .map(|d| {
                let c = d.observed;
                json!({
                    "arn": scope.service_revision(&self.cluster, &self.name, d.number()),
                    "requestedTaskCount": if d.status == DeploymentStatus::Primary { self.desired_count } else { 0 },
                    "runningTaskCount": c.running,
                    "pendingTaskCount": c.pending,
                })
            })
            .collect();
        json!(revisions)
    }

    /// A deployment as ListServiceDeployments shows it.
    pub fn deployment_brief(&self, scope: &Scope, d: &Deployment) -> Value {
        let mut v = json!({
            "serviceDeploymentArn": scope.service_deployment(&self.cluster, &self.name, d.number()),
            "serviceArn": scope.service(&self.cluster, &self.name),
            "clusterArn": scope.cluster(&self.cluster),
            "createdAt": d.created_at,
            "startedAt": d.created_at,
            "targetServiceRevisionArn": scope.service_revision(&self.cluster, &self.name, d.number()),
            "status": outcome_word(d.outcome),
        });
        if let Some(f) = d.finished_at {
            v["finishedAt"] = json!(f);
        }
        if let Some(r) = &d.outcome_reason {
            v["statusReason"] = json!(r);
        }
        v
    }

    /// A deployment as DescribeServiceDeployments shows it.
    pub fn deployment_view(&self, scope: &Scope, d: &Deployment) -> Value {
        let summary = |dep: &Deployment, requested: u32| {
            let c = dep.observed;
            json!({
                "arn": scope.service_revision(&self.cluster, &self.name, dep.number()),
                "requestedTaskCount": requested,
                "runningTaskCount": c.running,
                "pendingTaskCount": c.pending,
            })
        };
        let requested = if d.status == DeploymentStatus::Primary {
            self.desired_count
        } else {
            0
        };
        let sources: Vec<Value> = d
            .sources
            .iter()
            .filter_map(|id| self.deployments.iter().find(|x| &x.id == id))
            .map(|s| summary(s, 0))
            .collect();
        let mut v = self.deployment_brief(scope, d);
        let o = v.as_object_mut().expect("an object");
        o.remove("targetServiceRevisionArn");
        o.insert("updatedAt".into(), json!(d.updated_at));
        o.insert("sourceServiceRevisions".into(), json!(sources));
        o.insert("targetServiceRevision".into(), summary(d, requested));
        o.insert("deploymentConfiguration".into(), d.config.view());
        if d.config.circuit_breaker.is_some_and(|cb| cb.enable) {
            o.insert(
                "deploymentCircuitBreaker".into(),
                json!({
                    "status": if d.rollout_state == RolloutState::Failed { "TRIGGERED" } else { "MONITORING" },
                    "failureCount": d.failed_tasks,
                    "threshold": circuit_breaker_threshold(self.desired_count),
                }),
            );
        }
        if let Some(r) = &d.rollback {
            o.insert(
                "rollback".into(),
                json!({
                    "reason": r.reason,
                    "startedAt": r.started_at,
                    "serviceRevisionArn": scope.service_revision(&self.cluster, &self.name, r.to.rsplit('/').next().unwrap_or(&r.to)),
                }),
            );
        }
        if matches!(
            d.outcome,
            ServiceDeploymentStatus::Stopped | ServiceDeploymentStatus::RollbackSuccessful
        ) {
            if let Some(f) = d.finished_at {
                o.insert("stoppedAt".into(), json!(f));
            }
        }
        v
    }
}

/// ECS's failure threshold of the circuit breaker: half the desired
/// count, at least 3 and at most 200.
pub fn circuit_breaker_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

fn rollout_word(r: RolloutState) -> &'static str {
    match r {
        RolloutState::InProgress => "IN_PROGRESS",
        RolloutState::Completed => "COMPLETED",
        RolloutState::Failed => "FAILED",
    }
}

/// The API's word for a service deployment status.
pub fn outcome_word(s: ServiceDeploymentStatus) -> &'static str {
    match s {
        ServiceDeploymentStatus::InProgress => "IN_PROGRESS",
        ServiceDeploymentStatus::Successful => "SUCCESSFUL",
        ServiceDeploymentStatus::Stopped => "STOPPED",
        ServiceDeploymentStatus::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
        ServiceDeploymentStatus::RollbackSuccessful => "ROLLBACK_SUCCESSFUL",
        ServiceDeploymentStatus::RollbackFailed => "ROLLBACK_FAILED",
    }
}
