//! Application Auto Scaling's API for ECS services (JSON 1.1, target
//! prefix `AnyScaleFrontendService`, signing name
//! `application-autoscaling`): scalable targets, target-tracking policies
//! and scaling activities. The scaler that acts on them runs in the
//! scheduler ([`crate::scheduler::autoscale`]).
//!
//! Only ServiceNamespace `ecs` and ScalableDimension
//! `ecs:service:DesiredCount` exist here; anything else is a
//! ValidationException naming what would be right.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, page, with_retries, Api};
use crate::model::arn::Scope;
use crate::model::scaling::{
    self, Activity, Metric, ScalableTarget, ScalingPolicy, Suspended, DIMENSION, NAMESPACE,
};
use crate::model::service::{self, ServiceRecord, ServiceStatus};
use crate::store::{Condition, Write};

/// The JSON 1.1 target prefix of Application Auto Scaling.
pub const TARGET: &str = "AnyScaleFrontendService";

/// The actions served, by name.
pub(crate) const ACTIONS: &[(&str, super::Action)] = &[
    ("RegisterScalableTarget", register_target),
    ("DescribeScalableTargets", describe_targets),
    ("DeregisterScalableTarget", deregister_target),
    ("PutScalingPolicy", put_policy),
    ("DescribeScalingPolicies", describe_policies),
    ("DeleteScalingPolicy", delete_policy),
    ("DescribeScalingActivities", describe_activities),
];

/// The largest page.
const MAX_RESULTS: usize = 50;

/// The default cooldowns of an ECS service's target tracking (seconds).
const DEFAULT_COOLDOWN: u32 = 300;

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::Validation, message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::ObjectNotFound, message)
}

/// ObjectNotFoundException for a service without a scalable target.
fn no_target(cluster: &str, service: &str, hint: &str) -> ApiError {
    not_found(format!(
        "No scalable target registered for service namespace: ecs, resource ID: {}, scalable dimension: {DIMENSION}{hint}",
        scaling::resource_id(cluster, service)
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Request {
    service_namespace: Option<String>,
    resource_id: Option<String>,
    resource_ids: Option<Vec<String>>,
    scalable_dimension: Option<String>,
    min_capacity: Option<i64>,
    max_capacity: Option<i64>,
    #[serde(rename = "RoleARN")]
    role_arn: Option<String>,
    suspended_state: Option<Suspended>,
    policy_name: Option<String>,
    policy_names: Option<Vec<String>>,
    policy_type: Option<String>,
    target_tracking_scaling_policy_configuration: Option<Value>,
    step_scaling_policy_configuration: Option<Value>,
    predictive_scaling_policy_configuration: Option<Value>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

impl Request {
    fn namespace(&self) -> ApiResult<()> {
        match self.service_namespace.as_deref() {
            Some(NAMESPACE) => Ok(()),
            Some(other) => Err(validation(format!(
                "ServiceNamespace {other:?} is not served here: skiff scales ECS services (ServiceNamespace ecs)"
            ))),
            None => Err(validation("ServiceNamespace is required (ecs)")),
        }
    }

    fn dimension(&self, required: bool) -> ApiResult<()> {
        match self.scalable_dimension.as_deref() {
            Some(DIMENSION) => Ok(()),
            None if !required => Ok(()),
            Some(other) => Err(validation(format!(
                "ScalableDimension {other:?} is not one of an ECS service: use {DIMENSION}"
            ))),
            None => Err(validation(format!(
                "ScalableDimension is required ({DIMENSION})"
            ))),
        }
    }

    /// Namespace, dimension and ResourceId of a call on one target.
    fn one(&self) -> ApiResult<(String, String)> {
        self.namespace()?;
        let id = self
            .resource_id
            .as_deref()
            .ok_or_else(|| validation("ResourceId is required (service/CLUSTER/SERVICE)"))?;
        let ids = scaling::parse_resource_id(id).map_err(|e| validation(e.to_string()))?;
        self.dimension(true)?;
        Ok(ids)
    }

    /// The store prefix a Describe call reads: `all`, or `of` the
    /// service its ResourceId names.
    fn prefix(&self, all: &str, of: fn(&str, &str) -> String) -> ApiResult<String> {
        match &self.resource_id {
            Some(id) => {
                let (c, s) =
                    scaling::parse_resource_id(id).map_err(|e| validation(e.to_string()))?;
                Ok(of(&c, &s))
            }
            None => Ok(all.to_string()),
        }
    }

    fn page_size(&self) -> ApiResult<usize> {
        match self.max_results {
            None => Ok(MAX_RESULTS),
            Some(n) if (1..=MAX_RESULTS as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(validation(format!(
                "MaxResults must be between 1 and {MAX_RESULTS}, got {n}"
            ))),
        }
    }

    fn after(&self) -> ApiResult<Option<String>> {
        match &self.next_token {
            None => Ok(None),
            Some(t) => page::after(&json!({ "nextToken": t })).map_err(|_| {
                ApiError::new(
                    Kind::InvalidNextToken,
                    "NextToken is not a token this server gave out; start again without it",
                )
            }),
        }
    }
}

fn target_arn(scope: &Scope, id: &str) -> String {
    format!(
        "arn:aws:application-autoscaling:{}:{}:scalable-target/{id}",
        scope.region, scope.account
    )
}

fn policy_arn(scope: &Scope, p: &ScalingPolicy) -> String {
    format!(
        "arn:aws:autoscaling:{}:{}:scalingPolicy:{}:resource/ecs/{}:policyName/{}",
        scope.region,
        scope.account,
        p.id,
        scaling::resource_id(&p.cluster, &p.service),
        p.name
    )
}

fn target_view(scope: &Scope, t: &ScalableTarget) -> Value {
    json!({
        "ServiceNamespace": NAMESPACE,
        "ResourceId": scaling::resource_id(&t.cluster, &t.service),
        "ScalableDimension": DIMENSION,
        "MinCapacity": t.min,
        "MaxCapacity": t.max,
        "RoleARN": t.role_arn,
        "CreationTime": t.created_at,
        "SuspendedState": t.suspended,
        "ScalableTargetARN": target_arn(scope, &t.id),
    })
}

fn policy_view(scope: &Scope, p: &ScalingPolicy) -> Value {
    json!({
        "PolicyARN": policy_arn(scope, p),
        "PolicyName": p.name,
        "ServiceNamespace": NAMESPACE,
        "ResourceId": scaling::resource_id(&p.cluster, &p.service),
        "ScalableDimension": DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": p.configuration,
        "Alarms": [],
        "CreationTime": p.created_at,
    })
}

fn activity_view(a: &Activity) -> Value {
    json!({
        "ActivityId": a.id,
        "ServiceNamespace": NAMESPACE,
        "ResourceId": scaling::resource_id(&a.cluster, &a.service),
        "ScalableDimension": DIMENSION,
        "Description": a.description,
        "Cause": a.cause,
        "StartTime": a.start,
        "EndTime": a.end,
        "StatusCode": a.status,
        "StatusMessage": a.message,
    })
}

/// A page of `field`, with the token of the next when there is one.
fn paged(field: &str, items: impl Iterator<Item = Value>, next: Option<String>) -> Value {
    let mut out = json!({ field: items.collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    out
}

fn read<T: serde::de::DeserializeOwned>(
    api: &Api,
    key: &str,
) -> ApiResult<Option<(T, crate::store::Revision)>> {
    match api.store.get(key)? {
        None => Ok(None),
        Some(r) => serde_json::from_slice(&r.value)
            .map(|v| Some((v, r.mod_revision)))
            .map_err(|e| {
                ApiError::new(
                    Kind::Server,
                    format!("stored record {key} is unreadable: {e}"),
                )
            }),
    }
}

fn capacity(field: &str, v: Option<i64>) -> ApiResult<Option<u32>> {
    match v {
        None => Ok(None),
        Some(n) if (0..=10_000).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(validation(format!(
            "{field} must be between 0 and 10000 (an ECS service's desired count), got {n}"
        ))),
    }
}

/// RegisterScalableTarget: creates a service's target (MinCapacity and
/// MaxCapacity required) or updates the fields given.
pub fn register_target(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let (cluster, name) = r.one()?;
    let min = capacity("MinCapacity", r.min_capacity)?;
    let max = capacity("MaxCapacity", r.max_capacity)?;
    let svc: Option<(ServiceRecord, _)> = read(api, &service::key(&cluster, &name))?;
    let Some((svc, _)) = svc.filter(|(s, _)| s.status == ServiceStatus::Active) else {
        return Err(validation(format!(
            "ECS service doesn't exist: service {name:?} in cluster {cluster:?} (create it first, or check the ResourceId service/CLUSTER/SERVICE)"
        )));
    };
    if svc.daemon {
        return Err(validation(format!(
            "service {name:?} is a DAEMON service: it runs one task per container instance, which scaling cannot change"
        )));
    }
    let key = scaling::target_key(&cluster, &name);
    let target = with_retries(|| {
        let existing: Option<(ScalableTarget, _)> = read(api, &key)?;
        let (mut t, condition) = match existing {
            Some((t, rev)) => (t, Condition::At(key.clone(), rev)),
            None => {
                if min.is_none() || max.is_none() {
                    return Err(validation(
                        "MinCapacity and MaxCapacity are required when registering a new scalable target",
                    ));
                }
                (
                    ScalableTarget {
                        cluster: cluster.clone(),
                        service: name.clone(),
                        min: 0,
                        max: 0,
                        role_arn: String::new(),
                        id: super::new_id(),
                        created_at: crate::model::now(),
                        suspended: Suspended::default(),
                        last_out: None,
                        last_in: None,
                        next_activity: 0,
                    },
                    Condition::Absent(key.clone()),
                )
            }
        };
        if let Some(m) = min {
            t.min = m;
        }
        if let Some(m) = max {
            t.max = m;
        }
        if t.min > t.max {
            return Err(validation(format!(
                "MinCapacity ({}) must not be greater than MaxCapacity ({})",
                t.min, t.max
            )));
        }
        if let Some(s) = r.suspended_state {
            t.suspended = s;
        }
        t.role_arn = r.role_arn.clone().unwrap_or_else(|| {
            if t.role_arn.is_empty() {
                format!(
                    "arn:aws:iam::{}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
                    scope.account
                )
            } else {
                t.role_arn.clone()
            }
        });
        Ok(api
            .store
            .commit(
                &[condition],
                &[Write::Put(
                    key.clone(),
                    serde_json::to_vec(&t).unwrap_or_default(),
                )],
            )
            .map(|_| t))
    })?;
    Ok(json!({ "ScalableTargetARN": target_arn(scope, &target.id) }))
}

/// DescribeScalableTargets.
pub fn describe_targets(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    r.namespace()?;
    r.dimension(false)?;
    let wanted: Option<Vec<String>> = r.resource_ids.clone().filter(|ids| !ids.is_empty());
    let mut targets: Vec<ScalableTarget> = api
        .store
        .list(scaling::TARGETS, None, usize::MAX)?
        .iter()
        .filter_map(|rec| serde_json::from_slice(&rec.value).ok())
        .collect();
    if let Some(ids) = &wanted {
        targets.retain(|t: &ScalableTarget| {
            ids.contains(&scaling::resource_id(&t.cluster, &t.service))
        });
    }
    let key = |t: &ScalableTarget| scaling::resource_id(&t.cluster, &t.service);
    let (items, next) = page::page(targets, key, r.after()?.as_deref(), r.page_size()?);
    Ok(paged(
        "ScalableTargets",
        items.iter().map(|t| target_view(scope, t)),
        next,
    ))
}

/// DeregisterScalableTarget: the target and its policies go; the
/// service keeps its desired count.
pub fn deregister_target(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let (cluster, name) = r.one()?;
    let key = scaling::target_key(&cluster, &name);
    with_retries(|| {
        let Some(rec) = api.store.get(&key)? else {
            return Err(no_target(&cluster, &name, ""));
        };
        let mut writes = vec![Write::Delete(key.clone())];
        for p in api
            .store
            .list(&scaling::policies_prefix(&cluster, &name), None, usize::MAX)?
        {
            writes.push(Write::Delete(p.key));
        }
        Ok(api
            .store
            .commit(&[Condition::At(key.clone(), rec.mod_revision)], &writes))
    })?;
    Ok(json!({}))
}

fn cooldown(config: &Value, field: &str) -> ApiResult<u32> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(DEFAULT_COOLDOWN),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= 86_400 * 365)
            .map(|n| n as u32)
            .ok_or_else(|| {
                validation(format!(
                    "TargetTrackingScalingPolicyConfiguration.{field} must be a whole number of seconds, got {v}"
                ))
            }),
    }
}

/// The policy PutScalingPolicy asks for, checked field by field; its id
/// and creation time are left for the store's copy to give
/// (`id` empty).
fn asked_policy(r: &Request, cluster: &str, service: &str) -> ApiResult<ScalingPolicy> {
    let policy_name = r
        .policy_name
        .clone()
        .filter(|n| {
            !n.is_empty() && n.len() <= 256 && !n.contains('/') && !n.chars().any(char::is_control)
        })
        .ok_or_else(|| validation("PolicyName is required: 1 to 256 characters, no '/'"))?;
    match r.policy_type.as_deref() {
        None | Some("TargetTrackingScaling") => {}
        Some(other) => {
            return Err(validation(format!(
                "PolicyType {other:?} is not supported by skiff: use TargetTrackingScaling"
            )))
        }
    }
    if r.step_scaling_policy_configuration.is_some()
        || r.predictive_scaling_policy_configuration.is_some()
    {
        return Err(validation(
            "StepScalingPolicyConfiguration and PredictiveScalingPolicyConfiguration are not supported by skiff: give TargetTrackingScalingPolicyConfiguration",
        ));
    }
    let config = r
        .target_tracking_scaling_policy_configuration
        .clone()
        .filter(Value::is_object)
        .ok_or_else(|| {
            validation("TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy")
        })?;
    let target_value = config
        .get("TargetValue")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            validation("TargetTrackingScalingPolicyConfiguration.TargetValue is required: a number above 0")
        })?;
    if config
        .get("CustomizedMetricSpecification")
        .is_some_and(|v| !v.is_null())
    {
        return Err(validation(
            "CustomizedMetricSpecification is not supported by skiff: give PredefinedMetricSpecification",
        ));
    }
    let metric_name = config
        .pointer("/PredefinedMetricSpecification/PredefinedMetricType")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            validation("TargetTrackingScalingPolicyConfiguration.PredefinedMetricSpecification.PredefinedMetricType is required")
        })?;
    let metric = Metric::parse(metric_name).map_err(|e| validation(e.to_string()))?;
    let scale_out_cooldown = cooldown(&config, "ScaleOutCooldown")?;
    let scale_in_cooldown = cooldown(&config, "ScaleInCooldown")?;
    let disable_scale_in = match config.get("DisableScaleIn") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(validation(format!(
                "TargetTrackingScalingPolicyConfiguration.DisableScaleIn must be true or false, got {v}"
            )))
        }
    };
    Ok(ScalingPolicy {
        name: policy_name,
        cluster: cluster.to_string(),
        service: service.to_string(),
        id: String::new(),
        metric,
        target_value,
        scale_out_cooldown,
        scale_in_cooldown,
        disable_scale_in,
        configuration: config,
        created_at: 0.0,
    })
}

/// PutScalingPolicy: creates or replaces a TargetTrackingScaling policy.
pub fn put_policy(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let (cluster, name) = r.one()?;
    let asked = asked_policy(&r, &cluster, &name)?;
    let tkey = scaling::target_key(&cluster, &name);
    let pkey = format!(
        "{}{}",
        scaling::policies_prefix(&cluster, &name),
        asked.name
    );
    let policy = with_retries(|| {
        let Some(t) = api.store.get(&tkey)? else {
            return Err(no_target(
                &cluster,
                &name,
                "; register it with RegisterScalableTarget first",
            ));
        };
        let existing: Option<(ScalingPolicy, _)> = read(api, &pkey)?;
        let (id, created_at, condition) = match existing {
            Some((p, rev)) => (p.id, p.created_at, Condition::At(pkey.clone(), rev)),
            None => (
                super::new_id(),
                crate::model::now(),
                Condition::Absent(pkey.clone()),
            ),
        };
        let p = ScalingPolicy {
            id,
            created_at,
            ..asked.clone()
        };
        Ok(api
            .store
            .commit(
                &[condition, Condition::At(tkey.clone(), t.mod_revision)],
                &[Write::Put(
                    pkey.clone(),
                    serde_json::to_vec(&p).unwrap_or_default(),
                )],
            )
            .map(|_| p))
    })?;
    Ok(json!({ "PolicyARN": policy_arn(scope, &policy), "Alarms": [] }))
}

/// DescribeScalingPolicies.
pub fn describe_policies(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    r.namespace()?;
    r.dimension(false)?;
    let prefix = r.prefix(scaling::POLICIES, scaling::policies_prefix)?;
    let mut policies: Vec<(String, ScalingPolicy)> = api
        .store
        .list(&prefix, None, usize::MAX)?
        .into_iter()
        .filter_map(|rec| Some((rec.key.clone(), serde_json::from_slice(&rec.value).ok()?)))
        .collect();
    if let Some(names) = r.policy_names.as_ref().filter(|n| !n.is_empty()) {
        policies.retain(|(_, p)| names.contains(&p.name));
    }
    let (items, next) = page::page(
        policies,
        |(k, _)| k.clone(),
        r.after()?.as_deref(),
        r.page_size()?,
    );
    Ok(paged(
        "ScalingPolicies",
        items.iter().map(|(_, p)| policy_view(scope, p)),
        next,
    ))
}

/// DeleteScalingPolicy.
pub fn delete_policy(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let (cluster, name) = r.one()?;
    let policy_name = r
        .policy_name
        .clone()
        .ok_or_else(|| validation("PolicyName is required"))?;
    let pkey = format!("{}{policy_name}", scaling::policies_prefix(&cluster, &name));
    with_retries(|| {
        let Some(rec) = api.store.get(&pkey)? else {
            return Err(not_found(format!(
                "No scaling policy found for service namespace: ecs, resource ID: {}, scalable dimension: {DIMENSION}, policy name: {policy_name}",
                scaling::resource_id(&cluster, &name)
            )));
        };
        Ok(api.store.commit(
            &[Condition::At(pkey.clone(), rec.mod_revision)],
            &[Write::Delete(pkey.clone())],
        ))
    })?;
    Ok(json!({}))
}

/// DescribeScalingActivities: newest first.
pub fn describe_activities(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    r.namespace()?;
    r.dimension(false)?;
    let prefix = r.prefix(scaling::ACTIVITIES, scaling::activities_prefix)?;
    let mut activities: Vec<Activity> = api
        .store
        .list(&prefix, None, usize::MAX)?
        .iter()
        .filter_map(|rec| serde_json::from_slice(&rec.value).ok())
        .collect();
    activities.sort_by(|a, b| b.start.total_cmp(&a.start).then_with(|| b.id.cmp(&a.id)));
    let max = r.page_size()?;
    let start: usize = match r.after()? {
        Some(t) => t.parse().map_err(|_| {
            ApiError::new(
                Kind::InvalidNextToken,
                "NextToken is not a token this server gave out",
            )
        })?,
        None => 0,
    };
    let end = start.saturating_add(max).min(activities.len());
    let next = (end < activities.len()).then(|| page::token(&end.to_string()));
    Ok(paged(
        "ScalingActivities",
        activities
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(activity_view),
        next,
    ))
}
