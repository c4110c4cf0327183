//! The scaler: target tracking for services with a scalable target,
//! run by the leader every [`EVERY`].
//!
//! Each pass reads every scalable target, its policies, its service and
//! the load the nodes report (`load/NODE`), and sets the service's desired
//! count as Application Auto Scaling would:
//!
//! - into `[MinCapacity, MaxCapacity]` when it is outside;
//! - out at once to the most any policy asks for, unless a scale-out
//!   happened within that policy's ScaleOutCooldown (from zero, always at
//!   once: a request is waiting);
//! - in only when every policy that may scale in asks for fewer over the
//!   whole scale-in window (`--scale-in-window`), not within a
//!   ScaleInCooldown of the last scale-in or a ScaleOutCooldown of the
//!   last scale-out, and never while a deployment is rolling (as ECS
//!   suspends scale-in during deployments).
//!
//! Each change is one transaction (fenced by the leadership, guarded by
//! the service's and the target's revisions) that also records a scaling
//! activity.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::model::scaling::{
    self, Activity, Metric, NodeLoad, ScalableTarget, ScalingPolicy, ServiceLoad,
};
use crate::model::service::{self, DeploymentStatus, ServiceRecord, ServiceStatus};
use crate::store::{Condition, Store, StoreError, Write};

/// How often the scaler looks.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a node's load report counts (it reports every second).
const FRESH: f64 = 5.0;

/// The default scale-in window.
pub const DEFAULT_SCALE_IN_WINDOW: Duration = Duration::from_secs(60);

/// CPU used by a service's tasks, as measured between two reports.
#[derive(Clone, Copy)]
struct CpuSample {
    at: f64,
    cpu_ns: u64,
}

/// The scaler's memory between passes: CPU counters last seen per node
/// and service, and each policy's recent wishes.
pub struct Scaler {
    store: Arc<dyn Store>,
    window: f64,
    cpu: HashMap<(String, String), CpuSample>,
    /// Per policy key: (time, the count it asked for).
    wishes: HashMap<String, VecDeque<(f64, Option<u32>)>>,
}

/// A service's load summed over the nodes.
#[derive(Default, Debug)]
struct Measured {
    tasks: u32,
    concurrent: u64,
    /// CPU utilization, percent of what the tasks reserve.
    cpu: Option<f64>,
    /// Memory utilization, percent.
    memory: Option<f64>,
}

impl Scaler {
    /// A scaler over `store` that scales in only after `window` of lower
    /// demand.
    pub fn new(store: Arc<dyn Store>, window: Duration) -> Scaler {
        Scaler {
            store,
            window: window.as_secs_f64(),
            cpu: HashMap::new(),
            wishes: HashMap::new(),
        }
    }

    /// One pass over every scalable target; `fence` is the leadership's
    /// condition on every write.
    pub fn pass(&mut self, fence: &Condition) -> Result<(), StoreError> {
        let targets = self.store.list(scaling::TARGETS, None, usize::MAX)?;
        if targets.is_empty() {
            self.wishes.clear();
            return Ok(());
        }
        let now = crate::model::now();
        let loads: Vec<(String, NodeLoad)> = self
            .store
            .list(scaling::LOAD, None, usize::MAX)?
            .into_iter()
            .filter_map(|r| {
                let node = r.key.strip_prefix(scaling::LOAD)?.to_string();
                let load: NodeLoad = serde_json::from_slice(&r.value).ok()?;
                (now - load.at < FRESH).then_some((node, load))
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for rec in targets {
            let Ok(t) = serde_json::from_slice::<ScalableTarget>(&rec.value) else {
                continue;
            };
            let measured = self.measure(&t, &loads);
            let policies: Vec<ScalingPolicy> = self
                .store
                .list(
                    &scaling::policies_prefix(&t.cluster, &t.service),
                    None,
                    usize::MAX,
                )?
                .iter()
                .filter_map(|r| serde_json::from_slice(&r.value).ok())
                .collect();
            for p in &policies {
                seen.insert(policy_key(p));
            }
            // The service, read once for the decision and the write (which
            // its revision guards).
            let Some(srec) = self.store.get(&service::key(&t.cluster, &t.service))? else {
                continue;
            };
            let Ok(svc) = serde_json::from_slice::<ServiceRecord>(&srec.value) else {
                continue;
            };
            if let Some(change) = self.decide(&t, &svc, &policies, &measured, now) {
                let revisions = (srec.mod_revision, rec.mod_revision);
                match self.scale(&t, svc, revisions, change, now, fence) {
                    Ok(()) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.wishes.retain(|k, _| seen.contains(k));
        Ok(())
    }

    fn measure(&mut self, t: &ScalableTarget, loads: &[(String, NodeLoad)]) -> Measured {
        let key = format!("{}/{}", t.cluster, t.service);
        let mut m = Measured::default();
        let (mut cpu_used, mut cpu_reserved, mut cpu_known) = (0f64, 0f64, false);
        let (mut mem, mut mem_limit) = (0u64, 0u64);
        for (node, load) in loads {
            let Some(l): Option<&ServiceLoad> = load.services.get(&key) else {
                continue;
            };
            m.tasks += l.tasks;
            m.concurrent += l.in_flight + l.waiting;
            mem += l.memory;
            mem_limit += l.memory_limit;
            let sample = CpuSample {
                at: load.at,
                cpu_ns: l.cpu_ns,
            };
            if let Some(prev) = self.cpu.insert((node.clone(), key.clone()), sample) {
                let dt = sample.at - prev.at;
                if dt > 0.0 {
                    // A replaced task's counter starts again: no negative use.
                    let used = sample.cpu_ns.saturating_sub(prev.cpu_ns) as f64 / 1e9;
                    cpu_used += used / dt;
                    cpu_reserved += l.cpu_units as f64 / 1024.0;
                    cpu_known = true;
                }
            }
        }
        if cpu_known && cpu_reserved > 0.0 {
            m.cpu = Some(100.0 * cpu_used / cpu_reserved);
        }
        if mem_limit > 0 {
            m.memory = Some(100.0 * mem as f64 / mem_limit as f64);
        }
        m
    }

    /// The desired count to set now, and why; `None` to leave it.
    fn decide(
        &mut self,
        t: &ScalableTarget,
        svc: &ServiceRecord,
        policies: &[ScalingPolicy],
        m: &Measured,
        now: f64,
    ) -> Option<(u32, String)> {
        if svc.status != ServiceStatus::Active {
            return None;
        }
        let current = svc.desired_count;
        if current < t.min {
            return Some((
                t.min,
                format!("the desired count {current} is below MinCapacity {}", t.min),
            ));
        }
        if current > t.max {
            return Some((
                t.max,
                format!("the desired count {current} is above MaxCapacity {}", t.max),
            ));
        }
        // Each policy's wish now, remembered for the scale-in window.
        let mut out: Option<(u32, &ScalingPolicy, String)> = None;
        for p in policies {
            let value = match p.metric {
                Metric::Cpu => m.cpu,
                Metric::Memory => m.memory,
                Metric::Concurrency => None,
            };
            let wish = scaling::wanted(p.metric, p.target_value, m.tasks, value, m.concurrent);
            let history = self.wishes.entry(policy_key(p)).or_default();
            history.push_back((now, wish));
            while history
                .front()
                .is_some_and(|(at, _)| now - at > self.window)
            {
                history.pop_front();
            }
            if let Some(w) = wish.filter(|w| *w > current) {
                if out.as_ref().is_none_or(|(best, _, _)| w > *best) {
                    out = Some((w, p, describe(p, m)));
                }
            }
        }
        if let Some((w, p, why)) = out {
            let cooled = current == 0
                || t.last_out
                    .is_none_or(|at| now - at >= p.scale_out_cooldown as f64);
            if !t.suspended.dynamic_scaling_out_suspended && cooled {
                return Some((w.min(t.max), format!("policy {}: {why}", p.name)));
            }
            return None;
        }
        // Scale in: every policy that may, over the whole window.
        if t.suspended.dynamic_scaling_in_suspended || rolling(svc) {
            return None;
        }
        let mut want: Option<u32> = None;
        let mut because = Vec::new();
        for p in policies.iter().filter(|p| !p.disable_scale_in) {
            let history = &self.wishes[&policy_key(p)];
            let full = history
                .front()
                .is_some_and(|(at, _)| now - at >= self.window - EVERY.as_secs_f64());
            let most = history
                .iter()
                .map(|(_, w)| *w)
                .try_fold(0u32, |acc, w| w.map(|w| acc.max(w)));
            match (full, most) {
                (true, Some(w)) => {
                    want = Some(want.map_or(w, |x| x.max(w)));
                    because.push(format!("policy {}: {}", p.name, describe(p, m)));
                }
                _ => return None,
            }
            let since_in = t.last_in.map_or(f64::INFINITY, |at| now - at);
            let since_out = t.last_out.map_or(f64::INFINITY, |at| now - at);
            if since_in < p.scale_in_cooldown as f64 || since_out < p.scale_out_cooldown as f64 {
                return None;
            }
        }
        want.map(|w| w.max(t.min))
            .filter(|w| *w < current)
            .map(|w| (w, because.join("; ")))
    }

    fn scale(
        &mut self,
        t: &ScalableTarget,
        mut svc: ServiceRecord,
        (service_revision, target_revision): (crate::store::Revision, crate::store::Revision),
        (desired, cause): (u32, String),
        now: f64,
        fence: &Condition,
    ) -> Result<(), StoreError> {
        let skey = service::key(&t.cluster, &t.service);
        let from = svc.desired_count;
        if from == desired {
            return Ok(());
        }
        svc.desired_count = desired;
        svc.steady = false;
        if let Some(p) = svc
            .deployments
            .iter_mut()
            .find(|d| d.status == DeploymentStatus::Primary)
        {
            p.updated_at = now;
        }
        let mut target = t.clone();
        if desired > from {
            target.last_out = Some(now);
        } else {
            target.last_in = Some(now);
        }
        let seq = target.next_activity;
        target.next_activity += 1;
        let activity = Activity {
            id: crate::model::new_id(),
            cluster: t.cluster.clone(),
            service: t.service.clone(),
            description: format!("Setting desired count to {desired}."),
            cause: format!(
                "{cause}, so the desired count was changed from {from} to {desired}"
            ),
            start: now,
            end: now,
            status: "Successful".into(),
            message: format!("Successfully set desired count to {desired}. Change successfully fulfilled by ecs."),
        };
        let prefix = scaling::activities_prefix(&t.cluster, &t.service);
        let mut writes = vec![
            Write::Put(skey.clone(), serde_json::to_vec(&svc).unwrap_or_default()),
            Write::Put(
                scaling::target_key(&t.cluster, &t.service),
                serde_json::to_vec(&target).unwrap_or_default(),
            ),
            Write::Put(
                format!("{prefix}{seq:020}"),
                serde_json::to_vec(&activity).unwrap_or_default(),
            ),
        ];
        if seq >= scaling::MAX_ACTIVITIES as u64 {
            writes.push(Write::Delete(format!(
                "{prefix}{:020}",
                seq - scaling::MAX_ACTIVITIES as u64
            )));
        }
        self.store.commit(
            &[
                fence.clone(),
                Condition::At(skey, service_revision),
                Condition::At(scaling::target_key(&t.cluster, &t.service), target_revision),
            ],
            &writes,
        )?;
        tracing::info!(
            "service {} in cluster {} scaled from {from} to {desired} tasks: {}",
            t.service,
            t.cluster,
            activity.cause
        );
        Ok(())
    }
}

fn policy_key(p: &ScalingPolicy) -> String {
    format!("{}/{}/{}", p.cluster, p.service, p.name)
}

/// Whether a deployment of the service is rolling (scale-in waits): an
/// older deployment still has tasks to give up.
fn rolling(svc: &ServiceRecord) -> bool {
    svc.deployments
        .iter()
        .filter(|d| d.status != DeploymentStatus::Inactive)
        .count()
        > 1
}

/// The metric a policy tracks, measured, against its target, in words.
fn describe(p: &ScalingPolicy, m: &Measured) -> String {
    match p.metric {
        Metric::Concurrency => format!(
            "{} requests in flight or held over {} tasks against a target of {} per task",
            m.concurrent, m.tasks, p.target_value
        ),
        Metric::Cpu => format!(
            "CPU utilization {:.1}% over {} tasks against a target of {}%",
            m.cpu.unwrap_or(0.0),
            m.tasks,
            p.target_value
        ),
        Metric::Memory => format!(
            "memory utilization {:.1}% over {} tasks against a target of {}%",
            m.memory.unwrap_or(0.0),
            m.tasks,
            p.target_value
        ),
    }
}
