//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices (their deployments are in [`super::deployments`]).
//!
//! Each action writes the service's desired state; the scheduler's
//! controller sees the change and starts or stops tasks. Counts of running
//! and pending tasks are observed from the service's tasks when shown.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{clusters, decode, page, tags, task_definitions, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::connect::ServiceConnect;
use crate::model::service::{
    self, CircuitBreaker, Deployment, DeploymentConfig, DeploymentStatus, ServiceDeploymentStatus,
    ServiceRecord, ServiceStatus, Strategy,
};
use crate::model::task::TaskRecord;
use crate::model::taskdef::TaskDefinition;
use crate::scheduler::controller::RandomIds;
use crate::scheduler::reconcile::Ids;
use crate::store::records::claims;
use crate::store::{Condition, Revision, Write};

pub(super) fn not_found(name: &str, cluster: &str) -> ApiError {
    ApiError::new(
        Kind::ServiceNotFound,
        format!("Service not found: {name:?} in cluster {cluster:?}"),
    )
}

/// The cluster and name a service reference names: a name (in the
/// request's cluster) or an ARN (in its own).
pub(super) fn service_ref(reference: &str, cluster: &str) -> (String, String) {
    match arn::parse(reference) {
        Some(a) if a.kind == "service" => match a.resource.split_once('/') {
            Some((c, n)) => (c.to_string(), n.to_string()),
            None => (cluster.to_string(), a.resource),
        },
        _ => (cluster.to_string(), reference.to_string()),
    }
}

pub(super) fn load(
    api: &Api,
    cluster: &str,
    name: &str,
) -> ApiResult<Option<(ServiceRecord, Revision)>> {
    let Some(r) = api.store.get(&service::key(cluster, name))? else {
        return Ok(None);
    };
    let s = serde_json::from_slice(&r.value)
        .map_err(|e| ApiError::new(Kind::Server, format!("service record {name}: {e}")))?;
    Ok(Some((s, r.mod_revision)))
}

/// The tasks of a service, from its index.
pub fn tasks_of(api: &Api, cluster: &str, name: &str) -> ApiResult<Vec<TaskRecord>> {
    let mut out = Vec::new();
    for r in api
        .store
        .list(&service::tasks_prefix(cluster, name), None, usize::MAX)?
    {
        let Some(id) = r.key.rsplit('/').next() else {
            continue;
        };
        if let Some(t) = api.store.get(&crate::model::task::key(cluster, id))? {
            if let Some(t) = crate::model::task::TaskRecord::decode(&t.value) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The fields of the service calls. What is stored as given
/// (`placementStrategy`, [`KEPT`]) is also kept as the client's JSON.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceRequest {
    service_name: Option<String>,
    service: Option<String>,
    services: Option<Vec<String>>,
    task_definition: Option<String>,
    desired_count: Option<i64>,
    launch_type: Option<String>,
    scheduling_strategy: Option<String>,
    deployment_configuration: Option<DeploymentConfiguration>,
    placement_strategy: Option<Vec<PlacementStrategy>>,
    placement_constraints: Option<Vec<PlacementConstraint>>,
    health_check_grace_period_seconds: Option<i64>,
    force_new_deployment: Option<bool>,
    force: Option<bool>,
    tags: Option<Value>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    load_balancers: Vec<Value>,
    #[serde(default)]
    service_registries: Vec<Value>,
    deployment_controller: Option<DeploymentController>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeploymentConfiguration {
    minimum_healthy_percent: Option<i64>,
    maximum_percent: Option<i64>,
    deployment_circuit_breaker: Option<CircuitBreakerRequest>,
    strategy: Option<String>,
    alarms: Option<Alarms>,
}

#[derive(Deserialize)]
struct CircuitBreakerRequest {
    enable: Option<bool>,
    rollback: Option<bool>,
}

#[derive(Deserialize)]
struct Alarms {
    enable: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct PlacementStrategy {
    #[serde(rename = "type")]
    kind: Option<String>,
    field: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PlacementConstraint {
    #[serde(rename = "type")]
    kind: Option<String>,
    expression: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentController {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl ServiceRequest {
    /// The service the call names (`service`, a name or an ARN), in the
    /// request's cluster unless its ARN names another.
    fn service(&self, cluster: &str) -> ApiResult<(String, String)> {
        let reference = self
            .service
            .as_deref()
            .ok_or_else(|| ApiError::client("service is required"))?;
        Ok(service_ref(reference, cluster))
    }
}

/// `value` of `field`, checked to lie in `lo..=hi`.
fn int(field: &str, value: Option<i64>, lo: i64, hi: i64) -> ApiResult<Option<u32>> {
    match value {
        None => Ok(None),
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(ApiError::invalid(format!(
            "{field} must be an integer from {lo} to {hi}, got {n}"
        ))),
    }
}

/// `deploymentConfiguration` over `base`.
fn deployment_config(
    dc: Option<&DeploymentConfiguration>,
    base: DeploymentConfig,
) -> ApiResult<DeploymentConfig> {
    let Some(dc) = dc else {
        return Ok(base);
    };
    let f = "deploymentConfiguration";
    let mut c = base;
    if let Some(n) = int(
        &format!("{f}.minimumHealthyPercent"),
        dc.minimum_healthy_percent,
        0,
        100,
    )? {
        c.minimum_healthy_percent = n;
    }
    if let Some(n) = int(
        &format!("{f}.maximumPercent"),
        dc.maximum_percent,
        100,
        1000,
    )? {
        c.maximum_percent = n;
    }
    if let Some(cb) = &dc.deployment_circuit_breaker {
        let flag = |v: Option<bool>, k: &str| {
            v.ok_or_else(|| {
                ApiError::invalid(format!(
                    "{f}.deploymentCircuitBreaker.{k} is required: true or false"
                ))
            })
        };
        c.circuit_breaker = Some(CircuitBreaker {
            enable: flag(cb.enable, "enable")?,
            rollback: flag(cb.rollback, "rollback")?,
        });
    }
    if let Some(s) = dc.strategy.as_deref() {
        if s != "ROLLING" {
            return Err(ApiError::new(
                Kind::UnsupportedFeature,
                format!("{f}.strategy {s:?} is not supported: skiff rolls deployments (ROLLING)"),
            ));
        }
    }
    if dc.alarms.as_ref().and_then(|a| a.enable).unwrap_or(false) {
        return Err(ApiError::new(
            Kind::UnsupportedFeature,
            format!("{f}.alarms: skiff has no CloudWatch alarms; use deploymentCircuitBreaker"),
        ));
    }
    Ok(c)
}

/// A service's `placementStrategy`, validated, beside the client's JSON
/// of it.
fn placement(r: &ServiceRequest, req: &Value) -> ApiResult<Option<(Vec<Strategy>, Value)>> {
    let Some(items) = &r.placement_strategy else {
        return Ok(None);
    };
    Ok(Some((strategies(items)?, req["placementStrategy"].clone())))
}

/// `placementStrategy` (of a service or RunTask), validated.
pub(super) fn strategies(items: &[PlacementStrategy]) -> ApiResult<Vec<Strategy>> {
    if items.len() > 5 {
        return Err(ApiError::invalid(
            "placementStrategy can have at most 5 strategies",
        ));
    }
    let mut out = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let at = format!("placementStrategy[{i}]");
        let kind = s.kind.as_deref().unwrap_or("");
        let field = s.field.as_deref().map(str::to_ascii_lowercase);
        out.push(match (kind, field.as_deref()) {
            ("spread", None | Some("instanceid" | "host")) => Strategy::Spread,
            ("spread", Some(f)) if f.starts_with("attribute:") && f.len() > 10 => {
                // Attribute names keep their case.
                let raw = s.field.as_deref().unwrap_or_default();
                Strategy::SpreadAttribute(raw["attribute:".len()..].to_string())
            }
            ("spread", Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "{at}.field must be instanceId, host or attribute:NAME for spread"
                )))
            }
            ("binpack", Some("cpu")) => Strategy::BinpackCpu,
            ("binpack", Some("memory")) => Strategy::BinpackMemory,
            ("binpack", _) => {
                return Err(ApiError::invalid(format!(
                    "{at}.field must be cpu or memory for binpack"
                )))
            }
            ("random", _) => Strategy::Random,
            _ => {
                return Err(ApiError::invalid(format!(
                    "{at}.type must be spread, binpack or random, got {kind:?}"
                )))
            }
        });
    }
    Ok(out)
}

/// `placementConstraints` as placement reads them.
#[derive(Debug, Clone, Default)]
pub(super) struct Constraints {
    /// `distinctInstance` is among them.
    pub distinct_instance: bool,
    /// The `memberOf` expressions (each parses).
    pub member_of: Vec<String>,
}

/// `placementConstraints` (of a service or RunTask), validated.
pub(super) fn constraints(items: &[PlacementConstraint]) -> ApiResult<Constraints> {
    if items.len() > 10 {
        return Err(ApiError::invalid(
            "placementConstraints can have at most 10 constraints",
        ));
    }
    let mut distinct = false;
    let mut member_of = Vec::new();
    for (i, c) in items.iter().enumerate() {
        match c.kind.as_deref() {
            Some("distinctInstance") => distinct = true,
            Some("memberOf") => {
                let e = c.expression.as_deref().unwrap_or_default();
                crate::scheduler::expr::parse(e).map_err(|why| {
                    ApiError::invalid(format!(
                        "placementConstraints[{i}].expression {e:?}: {why}"
                    ))
                })?;
                member_of.push(e.to_string());
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "placementConstraints[{i}].type must be distinctInstance or memberOf, got {other:?}"
                )))
            }
        }
    }
    Ok(Constraints {
        distinct_instance: distinct,
        member_of,
    })
}

/// A service's `placementConstraints`, validated, beside the client's
/// JSON of them.
fn service_constraints(r: &ServiceRequest, req: &Value) -> ApiResult<Option<(Constraints, Value)>> {
    let Some(items) = &r.placement_constraints else {
        return Ok(None);
    };
    Ok(Some((
        constraints(items)?,
        req["placementConstraints"].clone(),
    )))
}

/// `serviceConnectConfiguration`, when the request has one.
fn connect_given(req: &Value) -> Option<&Value> {
    req.get("serviceConnectConfiguration")
        .filter(|v| !v.is_null())
}

/// What skiff does not have an equivalent for, refused with what to do.
fn refuse_unsupported(r: &ServiceRequest) -> ApiResult<()> {
    if !r.load_balancers.is_empty() {
        return Err(ApiError::new(
            Kind::UnsupportedFeature,
            "loadBalancers: skiff's ingress routes to services itself (Host SERVICE.CLUSTER.DOMAIN, or a container's hostPort); remove loadBalancers",
        ));
    }
    if !r.service_registries.is_empty() {
        return Err(ApiError::new(
            Kind::UnsupportedFeature,
            "serviceRegistries: Cloud Map DNS registration is not supported; call services by name with serviceConnectConfiguration (Service Connect), or through the ingress",
        ));
    }
    if let Some(t) = r
        .deployment_controller
        .as_ref()
        .and_then(|c| c.kind.as_deref())
    {
        if t != "ECS" {
            return Err(ApiError::new(
                Kind::UnsupportedFeature,
                format!("deploymentController.type {t:?} is not supported: skiff deploys with ECS rolling updates (ECS)"),
            ));
        }
    }
    if let Some(s) = r.scheduling_strategy.as_deref() {
        if s != "REPLICA" && s != "DAEMON" {
            return Err(ApiError::invalid(format!(
                "schedulingStrategy must be REPLICA or DAEMON, got {s:?}"
            )));
        }
    }
    Ok(())
}

/// Settings kept as given and shown back.
const KEPT: [&str; 5] = [
    "networkConfiguration",
    "propagateTags",
    "enableECSManagedTags",
    "enableExecuteCommand",
    "availabilityZoneRebalancing",
];

fn keep_extra(req: &Value, extra: &mut Value) {
    if !extra.is_object() {
        *extra = json!({});
    }
    for k in KEPT {
        if let Some(v) = req.get(k).filter(|v| !v.is_null()) {
            extra[k] = v.clone();
        }
    }
}

/// The manifest digests a new deployment of `td` pins its registry images
/// to: what their tags name now.
pub(crate) fn pin_images(api: &Api, td: &TaskDefinition) -> BTreeMap<String, String> {
    api.registry
        .as_ref()
        .map(|r| crate::images::resolve_definition(r, td))
        .unwrap_or_default()
}

/// Resolves an ACTIVE task definition: (family, revision, document).
pub(super) fn definition(api: &Api, reference: &str) -> ApiResult<(String, u32, TaskDefinition)> {
    // Validated when registered; parsed again so a service never refers
    // to a document that cannot run.
    let (record, td) = task_definitions::active(api, reference)?;
    Ok((record.family, record.revision, td))
}

/// CreateService.
pub fn create(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ServiceRequest = decode(req)?;
    let name = r
        .service_name
        .clone()
        .ok_or_else(|| ApiError::client("serviceName is required"))?;
    crate::model::check_name("serviceName", "service", &name)?;
    refuse_unsupported(&r)?;
    let reference = r.task_definition.as_deref().ok_or_else(|| {
        ApiError::invalid("taskDefinition is required (family, family:revision or ARN)")
    })?;
    let (family, revision, td) = definition(api, reference)?;
    let service_connect = match connect_given(req) {
        Some(v) => super::connect::config_for(api, &cluster, v, &td)?,
        None => None,
    };
    let (daemon, desired) = scheduling(&r)?;
    let launch_type = launch_type(r.launch_type.clone())?;
    let given_strategy = req.get("capacityProviderStrategy");
    if daemon && given_strategy.is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "capacityProviderStrategy cannot be used with schedulingStrategy DAEMON: each container instance gets one task",
        ));
    }
    let capacity_provider_strategy = if daemon {
        Vec::new()
    } else {
        clusters::strategy_for(api, &cluster, r.launch_type.is_some(), given_strategy)?
    };
    // A daemon replaces each node's task in place, all at once unless
    // minimumHealthyPercent says (as ECS's defaults for daemons).
    let base = if daemon {
        DeploymentConfig {
            minimum_healthy_percent: 0,
            maximum_percent: 100,
            circuit_breaker: None,
        }
    } else {
        DeploymentConfig::default()
    };
    let config = deployment_config(r.deployment_configuration.as_ref(), base)?;
    let (strategy, placement_strategy) = placement(&r, req)?.unwrap_or((vec![], json!([])));
    let (
        Constraints {
            distinct_instance,
            member_of,
        },
        placement_constraints,
    ) = service_constraints(&r, req)?.unwrap_or_else(|| (Constraints::default(), json!([])));
    let grace = int(
        "healthCheckGracePeriodSeconds",
        r.health_check_grace_period_seconds,
        0,
        i32::MAX as i64,
    )?
    .unwrap_or(0);
    let new_tags = tags::parse(r.tags.as_ref())?;
    let mut extra = json!({});
    keep_extra(req, &mut extra);
    let now = crate::model::now();
    let mut ids = RandomIds;
    let mut deployment = Deployment::new(ids.deployment_id(), &family, revision, config, now);
    deployment.image_digests = pin_images(api, &td);
    deployment.service_connect = service_connect;
    let svc = ServiceRecord {
        name: name.clone(),
        cluster: cluster.clone(),
        status: ServiceStatus::Active,
        desired_count: desired,
        family,
        revision,
        launch_type,
        capacity_provider_strategy,
        config,
        strategy,
        placement_strategy,
        placement_constraints,
        distinct_instance,
        member_of,
        health_check_grace_period_seconds: grace,
        created_at: now,
        created_by: Some(scope.principal()),
        extra,
        deployments: vec![deployment],
        events: Vec::new(),
        steady: false,
        held_by_protection: 0,
        daemon,
        deleted_at: None,
        domains: td.domains(),
        https_redirect: td.https_redirect(),
        observed: Default::default(),
    };
    store_new(api, &svc, &new_tags)?;
    let mut v = svc.view(scope);
    if !new_tags.is_empty() {
        v["tags"] = tags::to_json(&new_tags);
    }
    Ok(json!({ "service": v }))
}

/// What an UpdateService may not change on a DAEMON service: its count
/// (the nodes decide it), its placement strategy and its capacity
/// providers (each container instance gets one task).
fn daemon_keeps(
    s: &ServiceRecord,
    desired: Option<u32>,
    placement_strategy: Option<&[crate::model::service::Strategy]>,
    capacity_providers: Option<&[crate::model::provider::StrategyItem]>,
) -> ApiResult<()> {
    if desired.is_some_and(|d| d != s.desired_count) {
        return Err(ApiError::invalid(format!(
            "desiredCount cannot be set for DAEMON service {:?}: it runs one task on each container instance ({} now)",
            s.name, s.desired_count
        )));
    }
    if placement_strategy.is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::invalid(
            "placementStrategy cannot be used with schedulingStrategy DAEMON: each container instance gets one task",
        ));
    }
    if capacity_providers.is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::invalid(
            "capacityProviderStrategy cannot be used with schedulingStrategy DAEMON: each container instance gets one task",
        ));
    }
    Ok(())
}

/// The Service Connect configuration of the next deployment of service
/// `(cluster, name)`, when an UpdateService sets one or changes the task
/// definition to `target` (checked against it): `None` when it does
/// neither.
fn next_connect(
    api: &Api,
    (cluster, name): (&str, &str),
    req: &Value,
    target: Option<&(String, u32, TaskDefinition)>,
) -> ApiResult<Option<Option<ServiceConnect>>> {
    let given = connect_given(req);
    if let (Some(v), Some((_, _, td))) = (given, target) {
        return Ok(Some(super::connect::config_for(api, cluster, v, td)?));
    }
    if given.is_none() && target.is_none() {
        return Ok(None);
    }
    let Some((s, _)) = load(api, cluster, name)? else {
        return Ok(None);
    };
    let current = s.service_connect().map(ServiceConnect::view);
    Ok(match (given.or(current.as_ref()), target) {
        (Some(v), Some((_, _, td))) => Some(super::connect::config_for(api, cluster, v, td)?),
        (Some(v), None) if given.is_some() => {
            let (_, _, td) = definition(api, &format!("{}:{}", s.family, s.revision))?;
            Some(super::connect::config_for(api, cluster, v, &td)?)
        }
        _ => None,
    })
}

/// Starts a deployment of `(family, revision)` on `s`: the PRIMARY one
/// before becomes ACTIVE, unfinished ones are STOPPED (a newer one
/// replaced them), and the service answers on the new definition's
/// domains (`td`, when it is the one this call named).
fn deploy(
    s: &mut ServiceRecord,
    (family, revision): (String, u32),
    connect: Option<ServiceConnect>,
    digests: Option<BTreeMap<String, String>>,
    td: Option<&TaskDefinition>,
    now: f64,
) {
    let mut d = Deployment::new(RandomIds.deployment_id(), &family, revision, s.config, now);
    d.service_connect = connect;
    if let Some(digests) = digests {
        d.image_digests = digests;
    }
    d.sources = s.live_deployments();
    for old in &mut s.deployments {
        if old.status == DeploymentStatus::Primary {
            old.status = DeploymentStatus::Active;
            old.updated_at = now;
        }
        if old.status != DeploymentStatus::Inactive
            && old.outcome == ServiceDeploymentStatus::InProgress
        {
            old.outcome = ServiceDeploymentStatus::Stopped;
            old.outcome_reason = Some("a newer deployment replaced it".into());
            old.finished_at = Some(now);
        }
    }
    s.deployments.insert(0, d);
    if let Some(td) = td {
        s.domains = td.domains();
        s.https_redirect = td.https_redirect();
    }
    s.family = family;
    s.revision = revision;
    s.steady = false;
}

/// A CreateService's scheduling: DAEMON (one task per container
/// instance; no desiredCount or placementStrategy of its own) or REPLICA
/// with its desiredCount; whether a daemon, and the count.
fn scheduling(r: &ServiceRequest) -> ApiResult<(bool, u32)> {
    if r.scheduling_strategy.as_deref() != Some("DAEMON") {
        let desired = int("desiredCount", r.desired_count, 0, 10_000)?.ok_or_else(|| {
            ApiError::invalid("desiredCount is required for a REPLICA service (0 to 10000)")
        })?;
        return Ok((false, desired));
    }
    // The nodes decide; the scheduler sets it.
    if r.desired_count.is_some_and(|n| n != 0) {
        return Err(ApiError::invalid(
            "desiredCount cannot be set for a DAEMON service: it runs one task on each container instance",
        ));
    }
    if r.placement_strategy.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::invalid(
            "placementStrategy cannot be used with schedulingStrategy DAEMON: each container instance gets one task",
        ));
    }
    Ok((true, 0))
}

/// A request's `launchType` (FARGATE when none is given), checked.
pub(super) fn launch_type(given: Option<String>) -> ApiResult<String> {
    let launch_type = given.unwrap_or_else(|| "FARGATE".to_string());
    if !["FARGATE", "EC2", "EXTERNAL", "MANAGED_INSTANCES"].contains(&launch_type.as_str()) {
        return Err(ApiError::invalid(format!(
            "launchType {launch_type:?} is not one of FARGATE, EC2, EXTERNAL"
        )));
    }
    Ok(launch_type)
}

/// Stores a new service (or one of a deleted service's name again), with
/// its tags, its domain claims and its Service Connect names, in one
/// transaction. Retried on a conflict: a service of the same name created
/// at once is then found, and a name another service took at once refused.
fn store_new(api: &Api, svc: &ServiceRecord, new_tags: &[(String, String)]) -> ApiResult<()> {
    let (cluster, name) = (&svc.cluster, &svc.name);
    let k = service::key(cluster, name);
    let value = serde_json::to_vec(svc).unwrap_or_default();
    with_retries(|| {
        let (mut conditions, mut writes) = match svc.service_connect() {
            Some(sc) => {
                let (c, w) = super::connect::claim(api, sc, (cluster, name))?;
                (vec![c], vec![w])
            }
            None => Default::default(),
        };
        conditions.push(match load(api, cluster, name)? {
            None => Condition::Absent(k.clone()),
            Some((old, rev)) if old.status == ServiceStatus::Inactive => Condition::At(k.clone(), rev),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "Creation of service was not idempotent: service {name:?} already exists in cluster {cluster:?}; update it with UpdateService or delete it first"
                )))
            }
        });
        let (c, w) = claims(api.store.as_ref(), &BTreeSet::new(), svc)?;
        conditions.extend(c);
        writes.extend(w);
        writes.push(Write::Put(k.clone(), value.clone()));
        writes.push(tags::write("service", &format!("{cluster}/{name}"), new_tags));
        Ok(api.store.commit(&conditions, &writes))
    })
    .map(|_| ())
}

/// Reads a service, lets `change` edit it (it returns whether anything is
/// to be written), writes it back guarded by its revision (retrying on a
/// conflict), and shows the result.
pub(super) fn modify(
    api: &Api,
    scope: &Scope,
    cluster: &str,
    name: &str,
    change: impl Fn(&mut ServiceRecord) -> ApiResult<bool>,
) -> ApiResult {
    let svc = with_retries(|| {
        let Some((mut s, rev)) = load(api, cluster, name)? else {
            return Err(not_found(name, cluster));
        };
        let before = s.domains.clone();
        let redirect = s.https_redirect;
        let connect = s.service_connect().cloned();
        if !change(&mut s)? {
            return Ok(Ok(s));
        }
        let (mut conditions, mut writes) = if before != s.domains || redirect != s.https_redirect {
            claims(api.store.as_ref(), &before, &s)?
        } else {
            Default::default()
        };
        // A new Service Connect configuration takes its names in this
        // commit (see `connect::claim`).
        if let Some(sc) = s
            .service_connect()
            .filter(|sc| Some(*sc) != connect.as_ref())
        {
            let (c, w) = super::connect::claim(api, sc, (cluster, name))?;
            conditions.push(c);
            writes.push(w);
        }
        let k = service::key(cluster, name);
        conditions.push(Condition::At(k.clone(), rev));
        writes.push(Write::Put(k, serde_json::to_vec(&s).unwrap_or_default()));
        Ok(api.store.commit(&conditions, &writes).map(|_| s))
    })?;
    Ok(json!({ "service": svc.view(scope) }))
}

/// A task definition (family, revision) and its images' digests by
/// image.
type Pinned = ((String, u32), BTreeMap<String, String>);

/// The images' digests a new deployment of UpdateService pins: those of
/// the `target` definition's, or, when the update redeploys the same
/// definition (`redeploys`), of the service's own. With the definition
/// they are for.
fn pins(
    api: &Api,
    (cluster, name): (&str, &str),
    target: Option<&(String, u32, TaskDefinition)>,
    redeploys: bool,
) -> ApiResult<Option<Pinned>> {
    Ok(match target {
        Some((f, rev, td)) => Some(((f.clone(), *rev), pin_images(api, td))),
        None if redeploys => match load(api, cluster, name)? {
            Some((s, _)) => definition(api, &format!("{}:{}", s.family, s.revision))
                .ok()
                .map(|(f, rev, td)| ((f, rev), pin_images(api, &td))),
            None => None,
        },
        None => None,
    })
}

/// A new placement strategy and constraints, as given (with the raw
/// documents DescribeServices shows back).
fn place(
    s: &mut ServiceRecord,
    placement: Option<(Vec<Strategy>, Value)>,
    constraints: Option<(Constraints, Value)>,
) {
    if let Some((strategy, raw)) = placement {
        s.strategy = strategy;
        s.placement_strategy = raw;
    }
    if let Some((c, raw)) = constraints {
        s.distinct_instance = c.distinct_instance;
        s.member_of = c.member_of;
        s.placement_constraints = raw;
    }
}

/// UpdateService.
pub fn update(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ServiceRequest = decode(req)?;
    let (cluster, name) = r.service(&cluster)?;
    refuse_unsupported(&r)?;
    let desired = int("desiredCount", r.desired_count, 0, 10_000)?;
    let target = match r.task_definition.as_deref() {
        Some(t) => Some(definition(api, t)?),
        None => None,
    };
    // A new strategy ([] for the cluster's default) starts a deployment,
    // so that the tasks are spread over the providers as it says.
    let new_strategy = match req.get("capacityProviderStrategy").filter(|v| !v.is_null()) {
        Some(v) => Some(clusters::strategy_for(api, &cluster, false, Some(v))?),
        None => None,
    };
    let force = r.force_new_deployment.unwrap_or(false);
    // A new deployment pins its images' tags (a forced one again, which is
    // how a moved tag is taken up), resolved before the service is read
    // and written.
    let pinned = pins(
        api,
        (&cluster, &name),
        target.as_ref(),
        force || new_strategy.is_some(),
    )?;
    let connect = next_connect(api, (&cluster, &name), req, target.as_ref())?;
    let sets_connect = connect_given(req).is_some();
    let target_td = target.clone();
    let target = target.map(|(f, rev, _)| (f, rev));
    let placement = placement(&r, req)?;
    let constraints = service_constraints(&r, req)?;
    let grace = int(
        "healthCheckGracePeriodSeconds",
        r.health_check_grace_period_seconds,
        0,
        i32::MAX as i64,
    )?;
    modify(api, scope, &cluster, &name, |s| {
        if s.status != ServiceStatus::Active {
            return Err(ApiError::new(
                Kind::ServiceNotActive,
                format!("Service was not ACTIVE: {name:?} is {}", s.status.as_str()),
            ));
        }
        let now = crate::model::now();
        if s.daemon {
            let strategy = placement.as_ref().map(|(p, _)| p.as_slice());
            daemon_keeps(s, desired, strategy, new_strategy.as_deref())?;
        }
        s.config = deployment_config(r.deployment_configuration.as_ref(), s.config)?;
        if let Some(d) = desired.filter(|_| !s.daemon) {
            s.desired_count = d;
        }
        place(s, placement.clone(), constraints.clone());
        if let Some(g) = grace {
            s.health_check_grace_period_seconds = g;
        }
        keep_extra(req, &mut s.extra);
        let changes_strategy = new_strategy
            .as_ref()
            .is_some_and(|n| *n != s.capacity_provider_strategy);
        if let Some(n) = new_strategy.clone() {
            s.capacity_provider_strategy = n;
        }
        let changes_definition = target
            .as_ref()
            .is_some_and(|(f, r)| (f.as_str(), *r) != (s.family.as_str(), s.revision));
        let current_connect = s.service_connect().cloned();
        let next_connect = match &connect {
            Some(c) => c.clone(),
            None => current_connect.clone(),
        };
        let changes_connect = sets_connect && next_connect != current_connect;
        if changes_definition || force || changes_strategy || changes_connect {
            let (family, revision) = target.clone().unwrap_or((s.family.clone(), s.revision));
            let digests = pinned
                .as_ref()
                .filter(|(at, _)| at.0 == family && at.1 == revision)
                .map(|(_, digests)| digests.clone());
            let td = target_td
                .as_ref()
                .filter(|(f, r, _)| *f == family && *r == revision)
                .map(|(_, _, td)| td);
            deploy(s, (family, revision), next_connect, digests, td, now);
        } else if desired.is_some() {
            if let Some(p) = s
                .deployments
                .iter_mut()
                .find(|d| d.status == DeploymentStatus::Primary)
            {
                p.updated_at = now;
            }
            s.steady = false;
        }
        Ok(true)
    })
}

/// DeleteService: refused while the service is scaled above 0 unless
/// `force`; the service is DRAINING while its tasks stop, then INACTIVE.
pub fn delete(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ServiceRequest = decode(req)?;
    let (cluster, name) = r.service(&cluster)?;
    let force = r.force.unwrap_or(false);
    modify(api, scope, &cluster, &name, |s| {
        match s.status {
            ServiceStatus::Inactive => {
                return Err(ApiError::new(
                    Kind::ServiceNotActive,
                    format!("Service was not ACTIVE: {name:?} was already deleted"),
                ))
            }
            ServiceStatus::Draining => return Ok(false),
            ServiceStatus::Active => {}
        }
        if s.desired_count > 0 && !force && !s.daemon {
            return Err(ApiError::invalid(format!(
                "The service cannot be stopped while it is scaled above 0: set desiredCount of {name:?} to 0 with UpdateService first, or delete with force"
            )));
        }
        s.status = ServiceStatus::Draining;
        s.desired_count = 0;
        s.domains.clear();
        s.https_redirect = false;
        s.deleted_at = Some(crate::model::now());
        Ok(true)
    })
}

/// DescribeServices: unknown services are `failures` with reason MISSING.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ServiceRequest = decode(req)?;
    let refs = r
        .services
        .ok_or_else(|| ApiError::client("services is required"))?;
    if refs.is_empty() || refs.len() > 10 {
        return Err(ApiError::invalid("services must name 1 to 10 services"));
    }
    let with_tags = r.include.iter().any(|i| i == "TAGS");
    let (mut services, mut failures) = (Vec::new(), Vec::new());
    for r in refs {
        let (c, n) = service_ref(&r, &cluster);
        match load(api, &c, &n)? {
            Some((s, _)) => {
                let mut v = s.view(scope);
                if with_tags {
                    v["tags"] = tags::to_json(&tags::read(
                        api.store.as_ref(),
                        "service",
                        &format!("{c}/{n}"),
                    )?);
                }
                services.push(v);
            }
            None => failures.push(json!({"arn": scope.service(&c, &n), "reason": "MISSING"})),
        }
    }
    Ok(json!({ "services": services, "failures": failures }))
}

/// ListServices: the cluster's services that are not INACTIVE.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let max = page::max_results(req, 10)?;
    let after = page::after(req)?;
    let r: ServiceRequest = decode(req)?;
    let launch_type = r.launch_type.as_deref();
    let strategy = r.scheduling_strategy.as_deref();
    let mut names = Vec::new();
    for r in api
        .store
        .list(&format!("services/{cluster}/"), None, usize::MAX)?
    {
        let Ok(s) = serde_json::from_slice::<ServiceRecord>(&r.value) else {
            continue;
        };
        if s.status != ServiceStatus::Inactive
            && launch_type.is_none_or(|l| l == s.launch_type)
            && strategy.is_none_or(|st| st == "REPLICA")
        {
            names.push(s.name);
        }
    }
    let (names, next) = page::page(names, |n| n.clone(), after.as_deref(), max);
    let arns: Vec<String> = names.iter().map(|n| scope.service(&cluster, n)).collect();
    let mut out = json!({ "serviceArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}
