//! Tasks: RunTask, StopTask, DescribeTasks, ListTasks.
//!
//! RunTask places each task on a worker (reserving its cpu and memory),
//! writes the tasks as PROVISIONING in one transaction, and only then
//! hands them to their workers; the workers' reports move them on.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{
    clusters, page, required_str, str_field, str_list, tags, task_definitions, with_retries, Api,
};
use crate::agent::{ledger, ContainerOverride, TaskSpec};
use crate::model::arn::{self, Scope};
use crate::model::task::{DesiredStatus, StopCode, TaskRecord, TaskStatus};
use crate::model::taskdef::TaskDefinition;
use crate::store::{Condition, Write};

fn overrides(req: &Value, td: &TaskDefinition) -> ApiResult<(Vec<ContainerOverride>, Value)> {
    let raw = req.get("overrides").cloned().unwrap_or(json!({}));
    let mut out = Vec::new();
    let list = raw
        .get("containerOverrides")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, o) in list.iter().enumerate() {
        let at = |f: &str| format!("overrides.containerOverrides[{i}].{f}");
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("{}: required", at("name"))))?;
        if !td.containers.iter().any(|c| c.name == name) {
            return Err(ApiError::invalid(format!(
                "{}: {name:?} is not a container of {}",
                at("name"),
                td.family
            )));
        }
        let command = str_list(o, "command").map_err(|_| {
            ApiError::invalid(format!("{}: must be a list of strings", at("command")))
        })?;
        let mut environment = Vec::new();
        for (j, kv) in o
            .get("environment")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let k = kv
                .get("name")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{}: required",
                        at(&format!("environment[{j}].name"))
                    ))
                })?;
            environment.push((
                k.to_string(),
                kv.get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ));
        }
        out.push(ContainerOverride {
            name: name.to_string(),
            command,
            environment,
        });
    }
    Ok((out, raw))
}

/// RunTask.
pub fn run(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let reference = required_str(req, "taskDefinition")?;
    let (record, _) = task_definitions::resolve(api, reference)?
        .ok_or_else(|| ApiError::invalid(format!("TaskDefinition not found: {reference:?}")))?;
    if record.get("status").and_then(Value::as_str) != Some("ACTIVE") {
        return Err(ApiError::client(format!(
            "TaskDefinition is inactive: {reference:?} was deregistered; register a new revision"
        )));
    }
    let td = TaskDefinition::parse(&record["document"])?;
    let revision = record["revision"].as_u64().unwrap_or(0) as u32;
    let count = match req.get("count") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_i64() {
            Some(n @ 1..=10) => n as usize,
            _ => {
                return Err(ApiError::invalid(format!(
                    "count must be between 1 and 10, got {v}"
                )))
            }
        },
    };
    let started_by = str_field(req, "startedBy")?.map(str::to_string);
    if started_by.as_ref().is_some_and(|s| s.len() > 128) {
        return Err(ApiError::invalid(
            "startedBy must be at most 128 characters",
        ));
    }
    let group = str_field(req, "group")?
        .map(str::to_string)
        .unwrap_or_else(|| format!("family:{}", td.family));
    let launch_type = str_field(req, "launchType")?
        .unwrap_or("FARGATE")
        .to_string();
    if !["FARGATE", "EC2", "EXTERNAL", "MANAGED_INSTANCES"].contains(&launch_type.as_str()) {
        return Err(ApiError::invalid(format!(
            "launchType {launch_type:?} is not one of FARGATE, EC2, EXTERNAL"
        )));
    }
    let (container_overrides, raw_overrides) = overrides(req, &td)?;
    let new_tags = tags::parse(req.get("tags"))?;

    let (cpu, memory) = (td.reserved_cpu(), td.reserved_memory());
    let now = crate::model::now();
    let mut placed: Vec<TaskRecord> = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..count {
        match api.agent.reserve(cpu, memory) {
            Ok(worker) => {
                let mut t =
                    TaskRecord::placed(&td, revision, &cluster, worker, now, &mut super::new_id);
                t.group = group.clone();
                t.started_by = started_by.clone();
                t.launch_type = launch_type.clone();
                t.overrides = raw_overrides.clone();
                placed.push(t);
            }
            Err(no_fit) => failures.push(json!({
                "arn": scope.task_definition(&td.family, revision),
                "reason": no_fit.to_string(),
                "detail": format!(
                    "no worker has {cpu} CPU units and {memory} MiB free (workers: {})",
                    api.agent.worker_count()
                ),
            })),
        }
    }
    let mut writes = Vec::new();
    let mut conditions = Vec::new();
    for t in &placed {
        let k = ledger::key(&t.cluster, &t.id);
        conditions.push(Condition::Absent(k.clone()));
        writes.push(Write::Put(k, ledger::to_bytes(t)));
        writes.extend(crate::agent::logs::stream_writes(t));
        if !new_tags.is_empty() {
            writes.push(tags::write(
                "task",
                &format!("{}/{}", t.cluster, t.id),
                &new_tags,
            ));
        }
    }
    if !writes.is_empty() {
        if let Err(e) = api.store.commit(&conditions, &writes) {
            for t in &placed {
                api.agent.release(t.worker, cpu, memory);
            }
            return Err(e.into());
        }
    }
    for t in &placed {
        api.agent.start_task(TaskSpec {
            id: t.id.clone(),
            cluster: t.cluster.clone(),
            definition: td.clone(),
            revision,
            service: None,
            overrides: container_overrides.clone(),
            worker: t.worker,
            reserved: (cpu, memory),
        });
    }
    let tasks: Vec<Value> = placed.iter().map(|t| t.view(scope)).collect();
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// The cluster and id a task reference names: an id (in the request's
/// cluster) or an ARN (in its own).
fn task_ref(reference: &str, cluster: &str) -> (String, String) {
    match arn::parse(reference) {
        Some(a) if a.kind == "task" => match a.resource.split_once('/') {
            Some((c, id)) => (c.to_string(), id.to_string()),
            None => (cluster.to_string(), a.resource),
        },
        _ => (cluster.to_string(), reference.to_string()),
    }
}

fn load(api: &Api, cluster: &str, id: &str) -> ApiResult<Option<(TaskRecord, i64)>> {
    let Some(r) = api.store.get(&ledger::key(cluster, id))? else {
        return Ok(None);
    };
    Ok(ledger::parse(&r).map(|t| (t, r.mod_revision)))
}

/// StopTask.
pub fn stop(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let (cluster, id) = task_ref(required_str(req, "task")?, &cluster);
    let reason = str_field(req, "reason")?
        .unwrap_or("Task stopped by user")
        .to_string();
    if reason.len() > 255 {
        return Err(ApiError::invalid("reason must be at most 255 characters"));
    }
    let task = with_retries(|| {
        let Some((mut t, rev)) = load(api, &cluster, &id)? else {
            return Err(ApiError::invalid(format!(
                "The referenced task was not found: {id:?} in cluster {cluster:?}"
            )));
        };
        if t.desired_status == DesiredStatus::Stopped {
            return Ok(Ok(t));
        }
        t.desired_status = DesiredStatus::Stopped;
        t.stop_code.get_or_insert(StopCode::UserInitiated);
        t.stopped_reason.get_or_insert_with(|| reason.clone());
        t.version += 1;
        let k = ledger::key(&cluster, &id);
        Ok(api
            .store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k, ledger::to_bytes(&t))],
            )
            .map(|_| t))
    })?;
    if task.last_status != TaskStatus::Stopped {
        api.agent
            .stop_task(task.worker, &task.id, StopCode::UserInitiated, &reason);
    }
    Ok(json!({ "task": task.view(scope) }))
}

/// DescribeTasks: unknown tasks are `failures` with reason MISSING.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let refs = str_list(req, "tasks")?.ok_or_else(|| ApiError::client("tasks is required"))?;
    if refs.len() > 100 {
        return Err(ApiError::invalid("tasks can name at most 100 tasks"));
    }
    let with_tags = str_list(req, "include")?
        .unwrap_or_default()
        .iter()
        .any(|i| i == "TAGS");
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

/// ListTasks: ARNs of the cluster's tasks with the desired status asked for
/// (RUNNING unless said), filtered by family, startedBy, launch type or
/// service, paginated.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let desired = match str_field(req, "desiredStatus")?.unwrap_or("RUNNING") {
        "RUNNING" => DesiredStatus::Running,
        "STOPPED" => DesiredStatus::Stopped,
        "PENDING" => DesiredStatus::Running,
        other => {
            return Err(ApiError::invalid(format!(
                "desiredStatus must be RUNNING, PENDING or STOPPED, got {other:?}"
            )))
        }
    };
    let family = str_field(req, "family")?;
    let started_by = str_field(req, "startedBy")?;
    let launch_type = str_field(req, "launchType")?;
    let service = str_field(req, "serviceName")?;
    let group = service.map(crate::model::service::group);
    // A service's tasks are listed from its index, not by scanning the
    // cluster's tasks.
    let records = match service {
        Some(name) => super::services::tasks_of(api, &cluster, name)?,
        None => api
            .store
            .list(&format!("tasks/{cluster}/"), None, usize::MAX)?
            .iter()
            .filter_map(ledger::parse)
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
