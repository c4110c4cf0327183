//! Service auto scaling, in Application Auto Scaling's words: a scalable
//! target (a service's desired count between MinCapacity and MaxCapacity),
//! target-tracking scaling policies, and the scaling activities they
//! cause; and the load each node reports for the scaler to track.
//!
//! Stored as `scaling/targets/CLUSTER/SERVICE`,
//! `scaling/policies/CLUSTER/SERVICE/NAME`,
//! `scaling/activities/CLUSTER/SERVICE/SEQ` and `load/NODE` (under the
//! node's lease).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only scalable dimension: an ECS service's desired count.
pub const DIMENSION: &str = "ecs:service:DesiredCount";
/// The only service namespace.
pub const NAMESPACE: &str = "ecs";

/// Where scalable targets are stored.
pub const TARGETS: &str = "scaling/targets/";
/// Where scaling policies are stored.
pub const POLICIES: &str = "scaling/policies/";
/// Where scaling activities are stored.
pub const ACTIVITIES: &str = "scaling/activities/";
/// Where nodes report their services' load.
pub const LOAD: &str = "load/";

/// The most scaling activities kept per scalable target.
pub const MAX_ACTIVITIES: usize = 100;

/// The store key of a service's scalable target.
pub fn target_key(cluster: &str, service: &str) -> String {
    format!("{TARGETS}{cluster}/{service}")
}

/// The store prefix of a service's policies.
pub fn policies_prefix(cluster: &str, service: &str) -> String {
    format!("{POLICIES}{cluster}/{service}/")
}

/// The store prefix of a service's scaling activities.
pub fn activities_prefix(cluster: &str, service: &str) -> String {
    format!("{ACTIVITIES}{cluster}/{service}/")
}

/// `service/CLUSTER/SERVICE`, the ResourceId of a service's desired count.
pub fn resource_id(cluster: &str, service: &str) -> String {
    format!("service/{cluster}/{service}")
}

/// A ResourceId that names no ECS service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ResourceId {0:?} is not an ECS service: write service/CLUSTER/SERVICE, such as service/default/web")]
pub struct NotAService(pub String);

/// A PredefinedMetricType skiff does not track.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PredefinedMetricType {0:?} is not one skiff tracks: use ECSServiceAverageCPUUtilization, ECSServiceAverageMemoryUtilization or SkiffServiceAverageConcurrentRequests")]
pub struct UnknownMetric(pub String);

/// Reads a ResourceId: `service/CLUSTER/SERVICE`.
pub fn parse_resource_id(id: &str) -> Result<(String, String), NotAService> {
    let bad = || NotAService(id.to_string());
    let rest = id.strip_prefix("service/").ok_or_else(bad)?;
    let (cluster, service) = rest.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ok(cluster) || !ok(service) {
        return Err(bad());
    }
    Ok((cluster.to_string(), service.to_string()))
}

/// Which scaling a target has suspended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Suspended {
    #[serde(default)]
    #[allow(missing_docs)]
    pub dynamic_scaling_in_suspended: bool,
    #[serde(default)]
    #[allow(missing_docs)]
    pub dynamic_scaling_out_suspended: bool,
    #[serde(default)]
    #[allow(missing_docs)]
    pub scheduled_scaling_suspended: bool,
}

/// A service's scalable target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalableTarget {
    /// The service's cluster.
    pub cluster: String,
    /// The service.
    pub service: String,
    /// The fewest tasks (0 lets the service scale to zero).
    pub min: u32,
    /// The most tasks.
    pub max: u32,
    /// As given (skiff assumes no role).
    pub role_arn: String,
    /// Its id in its ARN.
    pub id: String,
    /// When it was registered.
    pub created_at: f64,
    /// What is suspended.
    pub suspended: Suspended,
    /// When the scaler last scaled it out, and in.
    #[serde(default)]
    pub last_out: Option<f64>,
    #[serde(default)]
    #[allow(missing_docs)]
    pub last_in: Option<f64>,
    /// Sequence number of its next scaling activity.
    #[serde(default)]
    pub next_activity: u64,
}

/// What a target-tracking policy tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// CPU time used over CPU reserved, percent, averaged over the
    /// service's tasks (`ECSServiceAverageCPUUtilization`).
    Cpu,
    /// Linear memory in use over memory reserved, percent
    /// (`ECSServiceAverageMemoryUtilization`).
    Memory,
    /// Requests in flight (and held for a task to start) per task
    /// (`SkiffServiceAverageConcurrentRequests`): the one that can scale
    /// from zero, since requests arrive with no task running.
    Concurrency,
}

impl Metric {
    /// The PredefinedMetricType names skiff tracks.
    pub const NAMES: [(&'static str, Metric); 5] = [
        ("ECSServiceAverageCPUUtilization", Metric::Cpu),
        ("ECSServiceAverageCPUUtilizationHighResolution", Metric::Cpu),
        ("ECSServiceAverageMemoryUtilization", Metric::Memory),
        (
            "ECSServiceAverageMemoryUtilizationHighResolution",
            Metric::Memory,
        ),
        ("SkiffServiceAverageConcurrentRequests", Metric::Concurrency),
    ];

    /// Reads a PredefinedMetricType.
    pub fn parse(name: &str) -> Result<Metric, UnknownMetric> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| UnknownMetric(name.to_string()))
    }
}

/// A target-tracking scaling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Its name, unique per target.
    pub name: String,
    /// The service's cluster.
    pub cluster: String,
    /// The service.
    pub service: String,
    /// Its id in its ARN.
    pub id: String,
    /// What it tracks.
    pub metric: Metric,
    /// The value of the metric it keeps the service at.
    pub target_value: f64,
    /// Seconds after a scale-out before the next one.
    pub scale_out_cooldown: u32,
    /// Seconds after a scale-in before the next one.
    pub scale_in_cooldown: u32,
    /// It never scales in.
    pub disable_scale_in: bool,
    /// `TargetTrackingScalingPolicyConfiguration` as given, shown back.
    pub configuration: Value,
    /// When it was put.
    pub created_at: f64,
}

/// A scaling activity: one change of a service's desired count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Its id.
    pub id: String,
    /// The service's cluster.
    pub cluster: String,
    /// The service.
    pub service: String,
    /// What was done: "Setting desired count to N."
    pub description: String,
    /// Why, in words.
    pub cause: String,
    /// When it started and ended.
    pub start: f64,
    #[allow(missing_docs)]
    pub end: f64,
    /// Successful or Failed.
    pub status: String,
    /// Details of the status.
    pub message: String,
}

/// One service's load on one node, as its node reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceLoad {
    /// Its tasks taking requests on the node.
    pub tasks: u32,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests held for a task to start (scale from zero).
    pub waiting: u64,
    /// CPU time its tasks' HTTP containers have used, in nanoseconds
    /// (a counter over the tasks now running).
    pub cpu_ns: u64,
    /// CPU units its tasks reserve (1024 per task without a cpu).
    pub cpu_units: u64,
    /// Linear memory in use now, bytes.
    pub memory: u64,
    /// Memory its tasks may use, bytes.
    pub memory_limit: u64,
}

/// A node's report: its services' load (by `CLUSTER/SERVICE`) at a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// When it was measured (seconds since the epoch).
    pub at: f64,
    /// By `CLUSTER/SERVICE`.
    pub services: BTreeMap<String, ServiceLoad>,
}

/// The desired count one policy asks for, given the service's measured
/// load; `None` when it has nothing to go on (no task reports CPU or
/// memory).
///
/// Target tracking: the count that brings the metric to the target
/// value, `ceil(tasks * metric / target)` for utilization, and
/// `ceil(concurrent requests / target)` for concurrency.
pub fn wanted(
    metric: Metric,
    target: f64,
    tasks: u32,
    value: Option<f64>,
    concurrent: u64,
) -> Option<u32> {
    if target <= 0.0 {
        return None;
    }
    let n = match metric {
        Metric::Concurrency => concurrent as f64 / target,
        Metric::Cpu | Metric::Memory => {
            if tasks == 0 {
                return None;
            }
            tasks as f64 * value? / target
        }
    };
    // A hair under a whole number is that number (float noise).
    Some((n - 1e-9).ceil().max(0.0).min(u32::MAX as f64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_name_a_service() {
        assert_eq!(
            parse_resource_id("service/default/web").unwrap(),
            ("default".into(), "web".into())
        );
        for bad in [
            "web",
            "service/default",
            "service//web",
            "table/x/y",
            "service/a/b/c",
        ] {
            assert_eq!(parse_resource_id(bad), Err(NotAService(bad.to_string())));
            assert!(parse_resource_id(bad)
                .unwrap_err()
                .to_string()
                .contains(bad));
        }
    }

    #[test]
    fn target_tracking_brings_the_metric_to_its_target() {
        // 2 tasks at 90% CPU against 45%: 4 tasks.
        assert_eq!(wanted(Metric::Cpu, 45.0, 2, Some(90.0), 0), Some(4));
        // 3 tasks at 10% against 50%: 1 task.
        assert_eq!(wanted(Metric::Cpu, 50.0, 3, Some(10.0), 0), Some(1));
        // No task, no CPU to measure.
        assert_eq!(wanted(Metric::Cpu, 50.0, 0, None, 0), None);
        // Concurrency scales from zero: 1 held request, target 5 → 1.
        assert_eq!(wanted(Metric::Concurrency, 5.0, 0, None, 1), Some(1));
        assert_eq!(wanted(Metric::Concurrency, 5.0, 3, None, 0), Some(0));
        assert_eq!(wanted(Metric::Concurrency, 2.0, 1, None, 7), Some(4));
        assert_eq!(wanted(Metric::Concurrency, 2.0, 1, None, 6), Some(3));
    }
}
