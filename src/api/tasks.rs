//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks.
//!
//! RunTask places each task on a node's worker (reserving its cpu and
//! memory in the store) through the scheduler's placer, the one placement
//! path there is, and writes the tasks as PROVISIONING, with the
//! reservations, in one transaction; StopTask writes desiredStatus
//! STOPPED. Neither calls the agent: it reads the tasks from the store
//! and starts or stops them, and its workers' reports move them on.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{clusters, decode, page, tags, task_definitions, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::task;
use crate::model::task::{DesiredStatus, StopCode, TaskRecord, TaskStatus};
use crate::model::taskdef::TaskDefinition;
use crate::scheduler::capacity::{Fleet, PlacementAsk};
use crate::scheduler::expr::{Expr, Op, Subject};
use crate::scheduler::placer::Placer;
use crate::store::records::tasks as tasks_of;
use crate::store::{Condition, Write};

/// RunTask's fields that skiff reads (`cluster` is read by
/// [`clusters::active`]; network fields are accepted and have no
/// effect).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunTaskRequest {
    task_definition: Option<String>,
    count: Option<i64>,
    started_by: Option<String>,
    group: Option<String>,
    launch_type: Option<String>,
    #[serde(default)]
    overrides: Value,
    tags: Option<Value>,
    placement_constraints: Option<Vec<super::services::PlacementConstraint>>,
    placement_strategy: Option<Vec<super::services::PlacementStrategy>>,
    /// StartTask's: one task on each.
    container_instances: Option<Vec<String>>,
}

/// RunTask: `count` tasks, placed by the constraints and strategies.
pub fn run(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    launch(api, scope, req, false)
}

/// StartTask: one task on each of the 1 to 10 container instances
/// (nodes) named, on the worker of each that placement picks. A node
/// that is unknown (MISSING), not connected (AGENT), not ACTIVE
/// (reason its status) or without room (RESOURCE:CPU, RESOURCE:MEMORY)
/// is a failure with the container instance's ARN.
pub fn start(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    launch(api, scope, req, true)
}

/// A RunTask or StartTask request, checked: what to place, how many,
/// where, and what the tasks carry.
struct Launch {
    cluster: String,
    /// StartTask's nodes, one task on each.
    targets: Option<Vec<String>>,
    td: TaskDefinition,
    revision: u32,
    count: usize,
    started_by: Option<String>,
    group: String,
    launch_type: String,
    /// The capacity provider strategy (empty: the launch type).
    strategy: Vec<crate::model::provider::StrategyItem>,
    overrides: Value,
    tags: Vec<(String, String)>,
    distinct_instance: bool,
    member_of: Vec<Expr>,
    strategies: Vec<crate::model::service::Strategy>,
    /// The images' digests their tags name now, by container.
    pinned: std::collections::BTreeMap<String, String>,
}

impl Launch {
    /// Reads and checks the request; `on_instances` for StartTask.
    fn read(api: &Api, req: &Value, on_instances: bool) -> ApiResult<Launch> {
        let cluster = clusters::active(api, req)?;
        let r: RunTaskRequest = decode(req)?;
        let targets: Option<Vec<String>> = if on_instances {
            let refs = r.container_instances.as_deref().unwrap_or_default();
            if refs.is_empty() || refs.len() > 10 {
                return Err(ApiError::invalid(format!(
                    "containerInstances must name 1 to 10 container instances (ids or ARNs; ListContainerInstances names them), got {}",
                    refs.len()
                )));
            }
            Some(refs.iter().map(|c| super::instances::node_of(c)).collect())
        } else {
            None
        };
        let reference = r
            .task_definition
            .as_deref()
            .ok_or_else(|| ApiError::client("taskDefinition is required"))?;
        let (record, td) = task_definitions::active(api, reference)?;
        let count = match r.count {
            _ if on_instances => targets.as_ref().map_or(0, Vec::len),
            None => 1,
            Some(n @ 1..=10) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "count must be between 1 and 10, got {n}"
                )))
            }
        };
        if r.started_by.as_ref().is_some_and(|s| s.len() > 128) {
            return Err(ApiError::invalid(
                "startedBy must be at most 128 characters",
            ));
        }
        let launch_type_given = r.launch_type.is_some();
        let launch_type = super::services::launch_type(r.launch_type)?;
        // StartTask names its container instances and takes no strategy.
        let strategy = if on_instances {
            Vec::new()
        } else {
            clusters::strategy_for(
                api,
                &cluster,
                launch_type_given,
                req.get("capacityProviderStrategy"),
            )?
        };
        // Checked here; the agent reads them again from the stored task.
        crate::model::overrides::container_overrides(&r.overrides, &td)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let constraints = match &r.placement_constraints {
            Some(c) => super::services::constraints(c)?,
            None => Default::default(),
        };
        Ok(Launch {
            targets,
            revision: record.revision,
            count,
            started_by: r.started_by,
            group: r.group.unwrap_or_else(|| format!("family:{}", td.family)),
            launch_type,
            strategy,
            overrides: if r.overrides.is_null() {
                json!({})
            } else {
                r.overrides
            },
            tags: tags::parse(r.tags.as_ref())?,
            distinct_instance: constraints.distinct_instance,
            member_of: constraints
                .member_of
                .iter()
                .filter_map(|e| crate::scheduler::expr::parse(e).ok())
                .collect(),
            strategies: match &r.placement_strategy {
                Some(s) => super::services::strategies(s)?,
                None => Vec::new(),
            },
            // The tasks run what the images' tags name now.
            pinned: super::services::pin_images(api, &td),
            td,
            cluster,
        })
    }

    /// The task placed at `at`, as it is written.
    fn task(
        &self,
        at: crate::scheduler::placer::Placement,
        now: f64,
        providers: &mut std::collections::BTreeMap<String, u32>,
    ) -> TaskRecord {
        let mut t = TaskRecord::placed(
            &self.td,
            self.revision,
            &self.cluster,
            &at.node,
            at.worker,
            now,
            &mut super::new_id,
        );
        t.zone = at.zone;
        t.group = self.group.clone();
        t.started_by = self.started_by.clone();
        t.launch_type = self.launch_type.clone();
        t.capacity_provider = crate::model::provider::pick(&self.strategy, providers);
        t.overrides = self.overrides.clone();
        for c in &mut t.containers {
            c.image_digest = self.pinned.get(&c.name).cloned();
        }
        t
    }
}

fn launch(api: &Api, scope: &Scope, req: &Value, on_instances: bool) -> ApiResult {
    let l = Launch::read(api, req, on_instances)?;
    let now = crate::model::now();
    // One placement path (the scheduler's placer): placed on the workers'
    // capacity as stored, and committed with the reservations it makes; a
    // concurrent placement that leaves no room for these places them
    // again from what is stored then.
    let (placed, failures) = with_retries(|| place(api, scope, &l, now))?;
    let tasks: Vec<Value> = placed.iter().map(|t| t.view(scope)).collect();
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// Places the launch's tasks and commits them: the tasks placed and the
/// failures (as RunTask shows them), or a conflict to place again from.
#[allow(clippy::type_complexity)]
fn place(
    api: &Api,
    scope: &Scope,
    l: &Launch,
    now: f64,
) -> ApiResult<Result<(Vec<TaskRecord>, Vec<Value>), crate::store::StoreError>> {
    let mut placer = Placer::read(api.store.as_ref())?;
    // What spread counts: the group's tasks per node and worker when a
    // strategy or distinctInstance asks (a listing of the cluster's
    // tasks), otherwise all tasks (from the reservations read).
    if l.distinct_instance || !l.strategies.is_empty() {
        let listed = tasks_of(api.store.as_ref(), &task::cluster_prefix(&l.cluster))?;
        placer.group(
            listed
                .iter()
                .map(|(t, _)| t)
                .filter(|t| t.group == l.group && t.last_status < TaskStatus::Stopped)
                .map(|t| (t.node.as_str(), t.worker)),
        );
    }
    let (cpu, memory) = (l.td.reserved_cpu(), l.td.reserved_memory());
    let mut providers = std::collections::BTreeMap::new();
    let mut placed: Vec<TaskRecord> = Vec::new();
    let mut failures = Vec::new();
    for i in 0..l.count {
        // StartTask: on the node named, which must take tasks.
        let here: Vec<Expr>;
        let member_of = match l.targets.as_ref().map(|t| t[i].as_str()) {
            None => &l.member_of,
            Some(node) => {
                if let Some((reason, detail)) = refused(placer.fleet(), node) {
                    let arn = scope.container_instance(&l.cluster, node);
                    failures.push(json!({"arn": arn, "reason": reason, "detail": detail}));
                    continue;
                }
                here = vec![Expr::Cond(Subject::Instance, Op::Eq(node.to_string()))];
                &here
            }
        };
        let ask = PlacementAsk {
            strategies: &l.strategies,
            distinct_instance: l.distinct_instance,
            member_of,
            cpu,
            memory,
        };
        match placer.place(&ask) {
            Ok(at) => {
                let t = l.task(at, now, &mut providers);
                placer.add_task(&t);
                if !l.tags.is_empty() {
                    let id = format!("{}/{}", t.cluster, t.id);
                    placer.write(tags::write("task", &id, &l.tags));
                }
                placed.push(t);
            }
            Err(why) => failures.push(json!({
                "arn": match l.targets.as_ref() {
                    Some(t) => scope.container_instance(&l.cluster, &t[i]),
                    None => scope.task_definition(&l.td.family, l.revision),
                },
                "reason": why.to_string(),
                "detail": format!(
                    "the task needs {cpu} CPU units and {memory} MiB on one worker; {}",
                    placer.fleet().summary()
                ),
            })),
        }
    }
    if placed.is_empty() {
        return Ok(Ok((placed, failures)));
    }
    Ok(placer
        .commit(api.store.as_ref())
        .map(|_| (placed, failures)))
}

/// Why StartTask cannot start a task on container instance `node`: it
/// is unknown (MISSING), not connected (AGENT) or not ACTIVE (reason its
/// status); the reason and the detail. `None` when it takes tasks.
fn refused(fleet: &Fleet, node: &str) -> Option<(&'static str, String)> {
    match fleet.index(node).map(|h| &fleet.members[h]) {
        None => Some((
            "MISSING",
            format!("container instance {node} was not found; ListContainerInstances names them"),
        )),
        Some(m) if !m.connected => Some((
            "AGENT",
            format!("container instance {node} is not connected: its node is down"),
        )),
        Some(m) if !m.accepts() => Some((
            m.status.as_str(),
            format!(
                "container instance {node} is {} and takes no new tasks",
                m.status.as_str()
            ),
        )),
        Some(_) => None,
    }
}

/// The cluster and id a task reference names: an id (in the request's
/// cluster) or an ARN (in its own).
pub(super) fn task_ref(reference: &str, cluster: &str) -> (String, String) {
    match arn::parse(reference) {
        Some(a) if a.kind == "task" => match a.resource.split_once('/') {
            Some((c, id)) => (c.to_string(), id.to_string()),
            None => (cluster.to_string(), a.resource),
        },
        _ => (cluster.to_string(), reference.to_string()),
    }
}

pub(super) fn load(api: &Api, cluster: &str, id: &str) -> ApiResult<Option<(TaskRecord, i64)>> {
    let Some(r) = api.store.get(&crate::model::task::key(cluster, id))? else {
        return Ok(None);
    };
    Ok(crate::model::task::TaskRecord::decode(&r.value).map(|t| (t, r.mod_revision)))
}

/// StopTask's fields.
#[derive(Deserialize)]
struct StopTaskRequest {
    task: Option<String>,
    reason: Option<String>,
}

/// StopTask.
pub fn stop(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: StopTaskRequest = decode(req)?;
    let reference = r.task.ok_or_else(|| ApiError::client("task is required"))?;
    let (cluster, id) = task_ref(&reference, &cluster);
    let reason = r
        .reason
        .unwrap_or_else(|| "Task stopped by user".to_string());
    if reason.len() > 255 {
        return Err(ApiError::invalid("reason must be at most 255 characters"));
    }
    let task = desire_stopped(api, &cluster, &id, &reason)?.ok_or_else(|| {
        ApiError::invalid(format!(
            "The referenced task was not found: {id:?} in cluster {cluster:?}"
        ))
    })?;
    // The agent that runs it sees desiredStatus STOPPED and stops it.
    Ok(json!({ "task": task.view(scope) }))
}

/// Writes desiredStatus STOPPED (UserInitiated, with `reason`, unless it
/// already has its reason) to a stored task, guarded by its revision and
/// retried from what is stored; the task as written, or `None` if there
/// is none.
pub(super) fn desire_stopped(
    api: &Api,
    cluster: &str,
    id: &str,
    reason: &str,
) -> ApiResult<Option<TaskRecord>> {
    with_retries(|| {
        let Some((mut t, rev)) = load(api, cluster, id)? else {
            return Ok(Ok(None));
        };
        if t.desired_status == DesiredStatus::Stopped {
            return Ok(Ok(Some(t)));
        }
        t.desired_status = DesiredStatus::Stopped;
        t.stop_code.get_or_insert(StopCode::UserInitiated);
        t.stopped_reason.get_or_insert_with(|| reason.to_string());
        t.version += 1;
        let k = crate::model::task::key(cluster, id);
        Ok(api
            .store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k, t.encode())],
            )
            .map(|_| Some(t)))
    })
}

/// DescribeTasks' fields.
#[derive(Deserialize)]
struct DescribeTasksRequest {
    tasks: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
}

/// DescribeTasks: unknown tasks are `failures` with reason MISSING.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: DescribeTasksRequest = decode(req)?;
    let refs = r
        .tasks
        .ok_or_else(|| ApiError::client("tasks is required"))?;
    if refs.len() > 100 {
        return Err(ApiError::invalid("tasks can name at most 100 tasks"));
    }
    let with_tags = r.include.iter().any(|i| i == "TAGS");
    let (mut tasks, mut failures) = (Vec::new(), Vec::new());
    for r in refs {
        let (c, id) = task_ref(&r, &cluster);
        match load(api, &c, &id)? {
            Some((t, _)) => {
                let mut v = t.view(scope);
                if with_tags {
                    v["tags"] = tags::to_json(&tags::read(
                        api.store.as_ref(),
                        "task",
                        &format!("{c}/{id}"),
                    )?);
                }
                tasks.push(v);
            }
            None => failures.push(json!({"arn": scope.task(&c, &id), "reason": "MISSING"})),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// ListTasks' fields (`maxResults` and `nextToken` are read by [`page`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasksRequest {
    desired_status: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    launch_type: Option<String>,
    service_name: Option<String>,
}

/// ListTasks: ARNs of the cluster's tasks with the desired status asked for
/// (RUNNING unless said), filtered by family, startedBy, launch type or
/// service, paginated.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let r: ListTasksRequest = decode(req)?;
    let desired = match r.desired_status.as_deref().unwrap_or("RUNNING") {
        "RUNNING" => DesiredStatus::Running,
        "STOPPED" => DesiredStatus::Stopped,
        "PENDING" => DesiredStatus::Running,
        other => {
            return Err(ApiError::invalid(format!(
                "desiredStatus must be RUNNING, PENDING or STOPPED, got {other:?}"
            )))
        }
    };
    let family = r.family.as_deref();
    let started_by = r.started_by.as_deref();
    let launch_type = r.launch_type.as_deref();
    let service = r.service_name.as_deref();
    let group = service.map(crate::model::service::group);
    // A service's tasks are listed from its index, not by scanning the
    // cluster's tasks.
    let records = match service {
        Some(name) => super::services::tasks_of(api, &cluster, name)?,
        None => api
            .store
            .list(&format!("tasks/{cluster}/"), None, usize::MAX)?
            .iter()
            .filter_map(|r| TaskRecord::decode(&r.value))
            .collect(),
    };
    let mut ids = Vec::new();
    for t in records {
        let keep = t.desired_status == desired
            && family.is_none_or(|f| f == t.family)
            && started_by.is_none_or(|s| Some(s) == t.started_by.as_deref())
            && launch_type.is_none_or(|l| l == t.launch_type)
            && group.as_ref().is_none_or(|g| *g == t.group);
        if keep {
            ids.push(t.id);
        }
    }
    ids.sort();
    let (ids, next) = page::page(ids, |i| i.clone(), after.as_deref(), max);
    let arns: Vec<String> = ids.iter().map(|id| scope.task(&cluster, id)).collect();
    let mut out = json!({ "taskArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}
