//! Task scale-in protection: UpdateTaskProtection and GetTaskProtection.
//!
//! A protected task of a service is passed over when the service scales
//! in (a lower desired count, by hand or by autoscaling) and waited for by
//! a deployment, until its protection ends or is removed. It is still
//! stopped when it fails its health checks, when its node drains, by
//! StopTask and by DeleteService. The protection is a time on the task's
//! record (`protectedUntil`); the scheduler reads it when it reconciles.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::tasks::{load, task_ref};
use super::{clusters, decode, with_retries, Api};
use crate::agent::ledger;
use crate::model::arn::Scope;
use crate::model::task::{DesiredStatus, TaskRecord, TaskStatus};
use crate::store::{Condition, Write};

/// How long a task is protected unless the call says (2 hours, as ECS).
pub const DEFAULT_MINUTES: i64 = 120;

/// The longest protection one call gives (48 hours, as ECS).
pub const MAX_MINUTES: i64 = 2880;

/// UpdateTaskProtection's fields (`cluster` is read by
/// [`clusters::active`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRequest {
    tasks: Option<Vec<String>>,
    protection_enabled: Option<bool>,
    expires_in_minutes: Option<i64>,
}

/// GetTaskProtection's fields.
#[derive(Deserialize)]
struct GetRequest {
    tasks: Option<Vec<String>>,
}

/// Whether a service started the task (only those have protection).
fn of_service(t: &TaskRecord) -> bool {
    t.service.is_some() || t.group.starts_with("service:")
}

/// Why a task's protection cannot be read, when it is not a service's
/// (a TASK_NOT_VALID failure's detail).
pub(crate) fn unreadable(t: &TaskRecord) -> Option<String> {
    (!of_service(t)).then(|| {
        format!(
            "task {} was not started by a service; only a service's tasks have scale-in protection",
            t.id
        )
    })
}

/// Why a task cannot be protected, as a failure entry's `detail`; `None`
/// when it can.
fn not_protectable(t: &TaskRecord) -> Option<String> {
    if !of_service(t) {
        return Some(format!(
            "task {} was not started by a service (its group is {}): scale-in protection is only for the tasks of a service",
            t.id, t.group
        ));
    }
    if t.desired_status == DesiredStatus::Stopped || t.last_status == TaskStatus::Stopped {
        return Some(format!(
            "task {} is stopping or stopped; only a running task can be protected",
            t.id
        ));
    }
    None
}

/// A task's protection, as `protectedTasks` shows it.
fn shown(scope: &Scope, t: &TaskRecord, now: f64) -> Value {
    let mut v = json!({
        "taskArn": scope.task(&t.cluster, &t.id),
        "protectionEnabled": false,
    });
    if let Some(until) = t.protected_at(now) {
        v["protectionEnabled"] = json!(true);
        v["expirationDate"] = json!(until);
    }
    v
}

fn failure(scope: &Scope, cluster: &str, id: &str, reason: &str, detail: String) -> Value {
    json!({"arn": scope.task(cluster, id), "reason": reason, "detail": detail})
}

/// Why the expiry (the request's `field`) is out of range, when it is
/// (only protection being turned on reads it).
pub(crate) fn check_minutes(field: &str, enabled: bool, minutes: i64) -> Result<(), String> {
    if enabled && !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(format!(
            "{field} must be from 1 to {MAX_MINUTES} (48 hours), got {minutes}"
        ));
    }
    Ok(())
}

/// A failure to protect one task: its reason (`MISSING`, `TASK_NOT_VALID`)
/// and the detail in words.
pub(crate) type Refusal = (&'static str, String);

/// Protects task `id` of `cluster` for `minutes` from now (checked by
/// [`check_minutes`]), or removes its protection. The record is written
/// guarded by its revision, so that a worker's report in between is kept.
/// The task as written and when, or why it cannot be protected.
pub(crate) fn set(
    store: &dyn crate::store::Store,
    cluster: &str,
    id: &str,
    enabled: bool,
    minutes: i64,
) -> ApiResult<Result<(TaskRecord, f64), Refusal>> {
    let k = ledger::key(cluster, id);
    with_retries(|| {
        let Some((mut t, rev)) = store
            .get(&k)?
            .and_then(|r| ledger::parse(&r).map(|t| (t, r.mod_revision)))
        else {
            return Ok(Ok(Err((
                "MISSING",
                format!("task {id} was not found in cluster {cluster}"),
            ))));
        };
        if let Some(why) = not_protectable(&t) {
            return Ok(Ok(Err(("TASK_NOT_VALID", why))));
        }
        let now = crate::model::now();
        t.protected_until = enabled.then_some(now + minutes as f64 * 60.0);
        t.version += 1;
        Ok(store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k.clone(), ledger::to_bytes(&t))],
            )
            .map(|_| Ok((t, now))))
    })
}

/// UpdateTaskProtection: protects up to 10 service tasks for
/// `expiresInMinutes` (1 to 2880, 120 if not given) from now, or removes
/// their protection. Each task's record is written on its own, guarded
/// by its revision (a worker's report in between is kept). Unknown tasks
/// are failures with reason MISSING; tasks not of a service, or stopping,
/// TASK_NOT_VALID.
pub fn update(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: UpdateRequest = decode(req)?;
    let refs = r
        .tasks
        .ok_or_else(|| ApiError::client("tasks is required: the ids or ARNs of 1 to 10 tasks"))?;
    if refs.is_empty() || refs.len() > 10 {
        return Err(ApiError::invalid(format!(
            "tasks must name 1 to 10 tasks, got {}",
            refs.len()
        )));
    }
    let enabled = r
        .protection_enabled
        .ok_or_else(|| ApiError::client("protectionEnabled is required: true or false"))?;
    let minutes = r.expires_in_minutes.unwrap_or(DEFAULT_MINUTES);
    check_minutes("expiresInMinutes", enabled, minutes).map_err(ApiError::invalid)?;
    let (mut protected, mut failures) = (Vec::new(), Vec::new());
    for reference in refs {
        let (c, id) = task_ref(&reference, &cluster);
        let written = set(api.store.as_ref(), &c, &id, enabled, minutes)?;
        match written {
            Ok((t, now)) => protected.push(shown(scope, &t, now)),
            Err((reason, detail)) => failures.push(failure(scope, &c, &id, reason, detail)),
        }
    }
    Ok(json!({ "protectedTasks": protected, "failures": failures }))
}

/// GetTaskProtection: the protection of up to 100 named tasks; without
/// `tasks`, of every task of the cluster's services that is protected
/// now.
pub fn get(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: GetRequest = decode(req)?;
    let now = crate::model::now();
    let Some(refs) = r.tasks else {
        let protected: Vec<Value> = api
            .store
            .list(&format!("tasks/{cluster}/"), None, usize::MAX)?
            .iter()
            .filter_map(ledger::parse)
            .filter(|t| t.protected_at(now).is_some() && of_service(t))
            .map(|t| shown(scope, &t, now))
            .collect();
        return Ok(json!({ "protectedTasks": protected, "failures": [] }));
    };
    if refs.len() > 100 {
        return Err(ApiError::invalid(format!(
            "tasks can name at most 100 tasks, got {}",
            refs.len()
        )));
    }
    let (mut protected, mut failures) = (Vec::new(), Vec::new());
    for reference in refs {
        let (c, id) = task_ref(&reference, &cluster);
        match load(api, &c, &id)? {
            None => failures.push(failure(
                scope,
                &c,
                &id,
                "MISSING",
                format!("task {id} was not found in cluster {c}"),
            )),
            Some((t, _)) => match unreadable(&t) {
                Some(why) => failures.push(failure(scope, &c, &id, "TASK_NOT_VALID", why)),
                None => protected.push(shown(scope, &t, now)),
            },
        }
    }
    Ok(json!({ "protectedTasks": protected, "failures": failures }))
}
