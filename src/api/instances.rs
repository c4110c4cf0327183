//! Container instances: skiff's nodes, as ECS shows EC2 instances of a
//! cluster. ListContainerInstances, DescribeContainerInstances,
//! UpdateContainerInstancesState, DeregisterContainerInstance.
//!
//! Every node serves every cluster, so a node is a container instance of
//! each (its ARN names the cluster asked about); its status is the node's,
//! the same in every cluster. A node whose lease lapsed stays listed, with
//! `agentConnected` false, until it comes back or is deregistered.
//! Deregistering a connected node stops its tasks (with `force`; without
//! it, a node that runs tasks is refused) and takes no more until the node
//! registers again (at its next start); ECS would leave the tasks running
//! unaccounted for, which no one wants.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{clusters, decode, page, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::node::{self, Instance, InstanceStatus};
use crate::model::task::TaskStatus;
use crate::scheduler::capacity::{Fleet, Member};
use crate::store::{Condition, Write};

/// The node id a reference names: an id, or a container-instance ARN.
pub(super) fn node_of(reference: &str) -> String {
    match arn::parse(reference) {
        Some(a) if a.kind == "container-instance" => a
            .resource
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => reference.to_string(),
    }
}

/// Running and pending task counts per node, in a cluster.
fn task_counts(api: &Api, cluster: &str) -> ApiResult<HashMap<String, (u64, u64)>> {
    let mut out: HashMap<String, (u64, u64)> = HashMap::new();
    for r in api
        .store
        .list(&format!("tasks/{cluster}/"), None, usize::MAX)?
    {
        let Some(t) = crate::model::task::TaskRecord::decode(&r.value) else {
            continue;
        };
        let c = out.entry(t.node.clone()).or_default();
        match t.last_status {
            TaskStatus::Running => c.0 += 1,
            s if s < TaskStatus::Running => c.1 += 1,
            _ => {}
        }
    }
    Ok(out)
}

fn resources(cpu: u64, memory: u64) -> Value {
    json!([
        {"name": "CPU", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": memory},
        {"name": "PORTS", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": []},
        {"name": "PORTS_UDP", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": []},
    ])
}

/// A node as DescribeContainerInstances shows it.
fn view(scope: &Scope, cluster: &str, m: &Member, counts: (u64, u64)) -> Value {
    let cpu: u64 = m.loads.iter().map(|l| l.cpu_capacity as u64).sum();
    let memory: u64 = m.loads.iter().map(|l| l.memory_capacity).sum();
    let cpu_used: u64 = m.loads.iter().map(|l| l.cpu_reserved as u64).sum();
    let memory_used: u64 = m.loads.iter().map(|l| l.memory_reserved).sum();
    let mut attributes: Vec<Value> = m
        .attributes
        .iter()
        .map(|(k, v)| super::attributes::shown(k, v))
        .collect();
    attributes.push(json!({"name": "skiff.workers", "value": m.loads.len().to_string()}));
    json!({
        "containerInstanceArn": scope.container_instance(cluster, &m.id),
        "ec2InstanceId": m.id,
        "version": m.version,
        "versionInfo": {"agentVersion": env!("CARGO_PKG_VERSION"), "agentHash": "", "dockerVersion": ""},
        "registeredResources": resources(cpu, memory),
        "remainingResources": resources(cpu.saturating_sub(cpu_used), memory.saturating_sub(memory_used)),
        "status": m.status.as_str(),
        "agentConnected": m.connected,
        "runningTasksCount": counts.0,
        "pendingTasksCount": counts.1,
        "attributes": attributes,
        "registeredAt": m.node.registered_at,
        "tags": [],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    filter: Option<String>,
    status: Option<String>,
}

/// ListContainerInstances: the nodes, by `status` (default: all but
/// INACTIVE) and `filter` (a cluster query language expression).
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ListRequest = decode(req)?;
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let status = match r.status.as_deref() {
        None => None,
        Some("ACTIVE") => Some(InstanceStatus::Active),
        Some("DRAINING") => Some(InstanceStatus::Draining),
        Some("INACTIVE") => Some(InstanceStatus::Inactive),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "status must be ACTIVE, DRAINING or INACTIVE, got {other:?}"
            )))
        }
    };
    let filter = match r.filter.as_deref() {
        Some(f) => Some(
            crate::scheduler::expr::parse(f)
                .map_err(|why| ApiError::invalid(format!("filter {f:?}: {why}")))?,
        ),
        None => None,
    };
    let fleet = Fleet::read(api.store.as_ref())?;
    let ids: Vec<String> = fleet
        .members
        .iter()
        .filter(|m| match status {
            Some(s) => m.status == s,
            None => m.status != InstanceStatus::Inactive,
        })
        .filter(|m| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(&m.id, &m.attributes))
        })
        .map(|m| m.id.clone())
        .collect();
    let (ids, next) = page::page(ids, |i| i.clone(), after.as_deref(), max);
    let arns: Vec<String> = ids
        .iter()
        .map(|i| scope.container_instance(&cluster, i))
        .collect();
    let mut out = json!({ "containerInstanceArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Named {
    #[serde(default)]
    container_instances: Vec<String>,
    status: Option<String>,
}

/// The references named, checked: 1 to 100.
fn named(r: &Named) -> ApiResult<&[String]> {
    if r.container_instances.is_empty() || r.container_instances.len() > 100 {
        return Err(ApiError::invalid(
            "containerInstances must name 1 to 100 container instances (ids or ARNs)",
        ));
    }
    Ok(&r.container_instances)
}

/// The nodes named, as shown, and failures (MISSING) for the others.
fn describe_named(
    api: &Api,
    scope: &Scope,
    cluster: &str,
    refs: &[String],
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let fleet = Fleet::read(api.store.as_ref())?;
    let counts = task_counts(api, cluster)?;
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for r in refs {
        let id = node_of(r);
        match fleet.index(&id) {
            Some(i) => {
                let m = &fleet.members[i];
                found.push(view(
                    scope,
                    cluster,
                    m,
                    counts.get(&m.id).copied().unwrap_or_default(),
                ))
            }
            None => failures.push(json!({
                "arn": scope.container_instance(cluster, &id),
                "reason": "MISSING",
            })),
        }
    }
    Ok((found, failures))
}

/// DescribeContainerInstances.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: Named = decode(req)?;
    let (found, failures) = describe_named(api, scope, &cluster, named(&r)?)?;
    Ok(json!({ "containerInstances": found, "failures": failures }))
}

/// Sets the status of a node's instance record. Returns false if there
/// is none.
fn set_status(api: &Api, id: &str, status: InstanceStatus) -> ApiResult<bool> {
    update_instance(api, id, |i| {
        if i.status == status {
            return Ok(false);
        }
        i.status = status;
        Ok(true)
    })
}

/// Reads a node's instance record, lets `change` edit it (it says
/// whether anything is to be written), and writes it back with its
/// version bumped, guarded by its revision (retried on a conflict).
/// Returns false if there is no record.
fn update_instance(
    api: &Api,
    id: &str,
    change: impl Fn(&mut Instance) -> ApiResult<bool>,
) -> ApiResult<bool> {
    let k = node::instance_key(id);
    with_retries(|| {
        let Some(r) = api.store.get(&k)? else {
            return Ok(Ok(false));
        };
        let mut i: Instance = serde_json::from_slice(&r.value).map_err(|e| {
            ApiError::new(
                super::error::Kind::Server,
                format!("the record of container instance {id} is unreadable: {e}"),
            )
        })?;
        if !change(&mut i)? {
            return Ok(Ok(true));
        }
        i.version += 1;
        Ok(api
            .store
            .commit(
                &[Condition::At(k.clone(), r.mod_revision)],
                &[Write::Put(k.clone(), node::encode(&i))],
            )
            .map(|_| true))
    })
}

/// UpdateContainerInstancesState: ACTIVE or DRAINING. A DRAINING node
/// takes no new tasks, and the scheduler moves its service tasks to other
/// nodes within each service's deployment limits; RunTask's tasks run on.
pub fn update_state(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: Named = decode(req)?;
    let refs = named(&r)?;
    let status = match r.status.as_deref() {
        Some("ACTIVE") => InstanceStatus::Active,
        Some("DRAINING") => InstanceStatus::Draining,
        other => {
            return Err(ApiError::invalid(format!(
                "status must be ACTIVE or DRAINING, got {}",
                other.map_or("nothing".to_string(), |s| format!("{s:?}"))
            )))
        }
    };
    let fleet = Fleet::read(api.store.as_ref())?;
    let mut changed = Vec::new();
    let mut failures = Vec::new();
    for r in refs {
        let id = node_of(r);
        let inactive = fleet
            .index(&id)
            .is_some_and(|i| fleet.members[i].status == InstanceStatus::Inactive);
        if inactive {
            failures.push(json!({
                "arn": scope.container_instance(&cluster, &id),
                "reason": "INACTIVE",
                "detail": "the container instance was deregistered; it is ACTIVE again when its node restarts",
            }));
        } else if set_status(api, &id, status)? {
            changed.push(id);
        } else {
            failures.push(json!({
                "arn": scope.container_instance(&cluster, &id),
                "reason": "MISSING",
            }));
        }
    }
    let (found, _) = describe_named(api, scope, &cluster, &changed)?;
    Ok(json!({ "containerInstances": found, "failures": failures }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Deregister {
    container_instance: Option<String>,
    force: Option<bool>,
}

/// DeregisterContainerInstance. A node that is gone (its lease lapsed)
/// is forgotten; a connected one becomes INACTIVE: it takes no tasks
/// until it registers again, and its tasks are stopped (`force`; without
/// it a node with tasks is refused).
pub fn deregister(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: Deregister = decode(req)?;
    let reference = r
        .container_instance
        .as_deref()
        .ok_or_else(|| ApiError::invalid("containerInstance is required (an id or ARN)"))?;
    let id = node_of(reference);
    let fleet = Fleet::read(api.store.as_ref())?;
    let Some(i) = fleet.index(&id) else {
        return Err(ApiError::invalid(format!(
            "container instance {id:?} does not exist; ListContainerInstances lists them"
        )));
    };
    let member = fleet.members[i].clone();
    // Its tasks that are not stopped, in every cluster.
    let mut live = Vec::new();
    for rec in api.store.list("tasks/", None, usize::MAX)? {
        if let Some(t) = crate::model::task::TaskRecord::decode(&rec.value) {
            if t.node == id && t.last_status < TaskStatus::Stopped {
                live.push(t);
            }
        }
    }
    if !live.is_empty() && !r.force.unwrap_or(false) {
        return Err(ApiError::invalid(format!(
            "container instance {id} has {} tasks that are not stopped; set it DRAINING and wait for them to move, stop them, or pass force to stop them",
            live.len()
        )));
    }
    // INACTIVE before its tasks stop: the scheduler, seeing them stop,
    // must not place their replacements on it.
    let mut shown = member.clone();
    if member.connected {
        set_status(api, &id, InstanceStatus::Inactive)?;
    }
    let reason = format!("its container instance {id} was deregistered");
    for t in &live {
        super::tasks::desire_stopped(api, &t.cluster, &t.id, &reason)?;
    }
    let counts = task_counts(api, &cluster)?;
    if member.connected {
        shown.status = InstanceStatus::Inactive;
    } else {
        api.store.commit(
            &[],
            &[
                Write::Delete(node::instance_key(&id)),
                Write::Delete(node::reservations_key(&id)),
            ],
        )?;
        shown.status = InstanceStatus::Inactive;
    }
    Ok(json!({
        "containerInstance": view(scope, &cluster, &shown, counts.get(&id).copied().unwrap_or_default())
    }))
}
