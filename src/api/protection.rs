//! Task scale-in protection: UpdateTaskProtection and GetTaskProtection.
//!
//! What protection means and which tasks may have it:
//! [`crate::model::protection`].

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::tasks::{load, task_ref};
use super::{clusters, decode, Api};
use crate::model::arn::Scope;
use crate::model::protection::{check_minutes, of_service, unreadable, DEFAULT_MINUTES};
use crate::model::task::TaskRecord;
use crate::store::records::protect;

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
    check_minutes("expiresInMinutes", enabled, minutes)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let (mut protected, mut failures) = (Vec::new(), Vec::new());
    for reference in refs {
        let (c, id) = task_ref(&reference, &cluster);
        let written = protect(api.store.as_ref(), &c, &id, enabled, minutes)?;
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
            .filter_map(|r| TaskRecord::decode(&r.value))
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
