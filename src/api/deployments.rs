//! Service deployments and revisions: ListServiceDeployments,
//! DescribeServiceDeployments, StopServiceDeployment and
//! DescribeServiceRevisions.
//!
//! A deployment lives in its service's record (`deployments`); its
//! service revision (the task definition and image digests it runs) is
//! the same record seen from the side of what it runs, and has its
//! deployment's number in its ARN.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::services::{load, modify, not_found, service_ref};
use super::{clusters, decode, page, task_definitions, Api};
use crate::model::arn::{self, Scope};
use crate::model::service::{
    outcome_word, Deployment, DeploymentStatus, RolloutState, ServiceDeploymentStatus,
};
use crate::scheduler::controller::RandomIds;
use crate::scheduler::reconcile::Ids;

/// ListServiceDeployments' fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    service: Option<String>,
    status: Option<Vec<String>>,
    created_at: Option<CreatedAt>,
}

#[derive(Deserialize)]
struct CreatedAt {
    after: Option<f64>,
    before: Option<f64>,
}

/// DescribeServiceDeployments' fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRequest {
    service_deployment_arns: Option<Vec<String>>,
}

/// StopServiceDeployment's fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopRequest {
    service_deployment_arn: Option<String>,
    stop_type: Option<String>,
}

/// DescribeServiceRevisions' fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevisionsRequest {
    service_revision_arns: Option<Vec<String>>,
}

/// The cluster, service and deployment number an ARN of `kind`
/// (`service-deployment` or `service-revision`) names.
fn parts(reference: &str, kind: &str) -> Option<(String, String, String)> {
    let a = arn::parse(reference).filter(|a| a.kind == kind)?;
    let mut it = a.resource.split('/');
    let (c, s, n) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || c.is_empty() || s.is_empty() || n.is_empty() {
        return None;
    }
    Some((c.to_string(), s.to_string(), n.to_string()))
}

fn status_word(s: &str) -> Option<ServiceDeploymentStatus> {
    Some(match s {
        "IN_PROGRESS" => ServiceDeploymentStatus::InProgress,
        "SUCCESSFUL" => ServiceDeploymentStatus::Successful,
        "STOPPED" => ServiceDeploymentStatus::Stopped,
        "ROLLBACK_IN_PROGRESS" => ServiceDeploymentStatus::RollbackInProgress,
        "ROLLBACK_SUCCESSFUL" => ServiceDeploymentStatus::RollbackSuccessful,
        "ROLLBACK_FAILED" => ServiceDeploymentStatus::RollbackFailed,
        "PENDING" | "STOP_REQUESTED" | "ROLLBACK_REQUESTED" => return None,
        _ => return None,
    })
}

/// ListServiceDeployments: newest first, filtered by status and creation time.
pub fn list_deployments(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ListRequest = decode(req)?;
    let reference = r
        .service
        .as_deref()
        .ok_or_else(|| ApiError::client("service is required"))?;
    let (cluster, name) = service_ref(reference, &cluster);
    let max = page::max_results(req, 20)?;
    let after = page::after(req)?;
    let Some((s, _)) = load(api, &cluster, &name)? else {
        return Err(not_found(&name, &cluster));
    };
    let statuses = r.status;
    if let Some(bad) = statuses.iter().flatten().find(|w| {
        !matches!(
            w.as_str(),
            "PENDING"
                | "SUCCESSFUL"
                | "STOPPED"
                | "STOP_REQUESTED"
                | "IN_PROGRESS"
                | "ROLLBACK_REQUESTED"
                | "ROLLBACK_IN_PROGRESS"
                | "ROLLBACK_SUCCESSFUL"
                | "ROLLBACK_FAILED"
        )
    }) {
        return Err(ApiError::invalid(format!(
            "status {bad:?} is not a service deployment status"
        )));
    }
    let wanted: Option<Vec<ServiceDeploymentStatus>> =
        statuses.map(|l| l.iter().filter_map(|w| status_word(w)).collect());
    let created_after = r.created_at.as_ref().and_then(|c| c.after);
    let created_before = r.created_at.as_ref().and_then(|c| c.before);
    let mut ds: Vec<&Deployment> = s
        .deployments
        .iter()
        .filter(|d| wanted.as_ref().is_none_or(|w| w.contains(&d.outcome)))
        .filter(|d| created_after.is_none_or(|a| d.created_at >= a))
        .filter(|d| created_before.is_none_or(|b| d.created_at <= b))
        .collect();
    ds.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    let (ds, next) = page::page(
        ds,
        |d| format!("{:020.6}-{}", 1e12 - d.created_at, d.id),
        after.as_deref(),
        max,
    );
    let briefs: Vec<Value> = ds.iter().map(|d| s.deployment_brief(scope, d)).collect();
    let mut out = json!({ "serviceDeployments": briefs });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

/// DescribeServiceDeployments: by ARN; unknown ones are `failures`.
pub fn describe_deployments(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: DescribeRequest = decode(req)?;
    let arns = r
        .service_deployment_arns
        .ok_or_else(|| ApiError::invalid("serviceDeploymentArns is required"))?;
    if arns.is_empty() || arns.len() > 20 {
        return Err(ApiError::invalid(
            "serviceDeploymentArns must name 1 to 20 service deployments",
        ));
    }
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for a in arns {
        let Some((cluster, name, number)) = parts(&a, "service-deployment") else {
            failures.push(json!({"arn": a, "reason": "MISSING", "detail": "not a service deployment ARN (arn:aws:ecs:REGION:ACCOUNT:service-deployment/CLUSTER/SERVICE/ID)"}));
            continue;
        };
        let Some((s, _)) = load(api, &cluster, &name)? else {
            failures.push(json!({"arn": a, "reason": "MISSING"}));
            continue;
        };
        match s.deployments.iter().find(|d| d.number() == number) {
            Some(d) => {
                found.push(s.deployment_view(scope, d));
            }
            None => failures.push(json!({"arn": a, "reason": "MISSING"})),
        }
    }
    Ok(json!({ "serviceDeployments": found, "failures": failures }))
}

/// StopServiceDeployment: stops a deployment in progress by rolling it
/// back (stopType ROLLBACK, the only one ECS takes): the last deployment
/// that completed comes back as a new deployment, with its task
/// definition and image digests, whether or not the service's circuit
/// breaker would roll back.
pub fn stop_deployment(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: StopRequest = decode(req)?;
    let reference = r.service_deployment_arn.ok_or_else(|| {
        ApiError::invalid("serviceDeploymentArn is required: the ARN ListServiceDeployments gives")
    })?;
    match r.stop_type.as_deref() {
        None | Some("ROLLBACK") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "stopType must be ROLLBACK (the only stop type), got {other:?}"
            )))
        }
    }
    let (cluster, name, number) = parts(&reference, "service-deployment").ok_or_else(|| {
        ApiError::invalid(format!(
            "serviceDeploymentArn {reference:?} is not a service deployment ARN (arn:aws:ecs:REGION:ACCOUNT:service-deployment/CLUSTER/SERVICE/ID)"
        ))
    })?;
    let missing = || {
        ApiError::new(
            Kind::ServiceDeploymentNotFound,
            format!("Service deployment not found: {reference:?}"),
        )
    };
    if load(api, &cluster, &name)?.is_none() {
        return Err(missing());
    }
    let reason = "Service deployment stopped by StopServiceDeployment (ROLLBACK).";
    modify(api, scope, &cluster, &name, |s| {
        let index = s
            .deployments
            .iter()
            .position(|d| d.number() == number)
            .ok_or_else(missing)?;
        let d = &s.deployments[index];
        if d.status != DeploymentStatus::Primary || d.finished() {
            return Err(ApiError::new(
                Kind::Conflict,
                format!(
                    "service deployment {number} of service {name} is {}; only the deployment in progress can be stopped",
                    outcome_word(d.outcome)
                ),
            ));
        }
        let now = crate::model::now();
        let rolled = s
            .roll_back(
                index,
                reason,
                RandomIds.deployment_id(),
                RandomIds.event_id(),
                now,
            )
            .map(|to| (to.family.clone(), to.revision));
        let Some((family, revision)) = rolled else {
            return Err(ApiError::new(
                Kind::Conflict,
                format!(
                    "no earlier deployment of service {name} completed, so there is nothing to roll back to; update the service to the task definition that should run instead"
                ),
            ));
        };
        let stopped = &mut s.deployments[index + 1];
        stopped.rollout_state = RolloutState::Failed;
        stopped.rollout_state_reason = reason.to_string();
        // The domains go back with the task definition.
        if let Some((record, _)) = task_definitions::resolve(api, &format!("{family}:{revision}"))?
        {
            if let Ok(td) = record.definition() {
                s.domains = td.domains();
                s.https_redirect = td.https_redirect();
            }
        }
        Ok(true)
    })?;
    Ok(json!({ "serviceDeploymentArn": scope.service_deployment(&cluster, &name, &number) }))
}

/// DescribeServiceRevisions: up to 20 revisions by ARN; unknown ones are
/// `failures` with reason MISSING.
pub fn describe_revisions(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: RevisionsRequest = decode(req)?;
    let arns = r
        .service_revision_arns
        .ok_or_else(|| ApiError::invalid("serviceRevisionArns is required"))?;
    if arns.is_empty() || arns.len() > 20 {
        return Err(ApiError::invalid(format!(
            "serviceRevisionArns must name 1 to 20 service revisions, got {}",
            arns.len()
        )));
    }
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for a in arns {
        let Some((cluster, name, number)) = parts(&a, "service-revision") else {
            failures.push(json!({"arn": a, "reason": "MISSING", "detail": "not a service revision ARN (arn:aws:ecs:REGION:ACCOUNT:service-revision/CLUSTER/SERVICE/ID)"}));
            continue;
        };
        let deployment = load(api, &cluster, &name)?.and_then(|(s, _)| {
            let d = s.deployments.iter().find(|d| d.number() == number)?.clone();
            Some((s, d))
        });
        match deployment {
            Some((s, d)) => found.push(revision_view(
                api,
                scope,
                &s.launch_type,
                &cluster,
                &name,
                &d,
            )?),
            None => failures.push(json!({"arn": a, "reason": "MISSING"})),
        }
    }
    Ok(json!({ "serviceRevisions": found, "failures": failures }))
}

/// A service revision: what deployment `d` runs.
fn revision_view(
    api: &Api,
    scope: &Scope,
    launch_type: &str,
    cluster: &str,
    name: &str,
    d: &Deployment,
) -> ApiResult<Value> {
    // The images of its task definition (while that is stored), with the
    // digests the deployment pinned.
    let images: Vec<Value> =
        task_definitions::resolve(api, &format!("{}:{}", d.family, d.revision))?
            .map(|(record, _)| {
                record.document["containerDefinitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let container = c["name"].as_str().unwrap_or_default();
                        let mut v = json!({"containerName": container, "image": c["image"]});
                        if let Some(digest) = d.image_digests.get(container) {
                            v["imageDigest"] = json!(digest);
                        }
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
    Ok(json!({
        "serviceRevisionArn": scope.service_revision(cluster, name, d.number()),
        "serviceArn": scope.service(cluster, name),
        "clusterArn": scope.cluster(cluster),
        "taskDefinition": scope.task_definition(&d.family, d.revision),
        "launchType": launch_type,
        "containerImages": images,
        "guardDutyEnabled": false,
        "createdAt": d.created_at,
    }))
}
