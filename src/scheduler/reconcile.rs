//! The service scheduler's reconcile step: a service (desired state) and
//! its tasks (observed state) in, what to do out.
//!
//! A pure function: no store, no clock, no randomness of its own, so it is
//! tested without sockets or threads, and it is safe to rerun. Whatever it
//! decides is visible in the store before it runs again (the controller
//! commits the plan's service and task writes in one transaction), so a
//! rerun does not start a task twice.

use crate::model::service::{
    circuit_breaker_threshold, group, DeploymentStatus, RolloutState, ServiceDeploymentStatus,
    ServiceRecord, ServiceStatus,
};
use crate::model::task::{DesiredStatus, HealthStatus, StopCode, TaskRecord, TaskStatus};

/// Failures in a row (within [`THROTTLE_WINDOW`]) before starts are delayed.
pub const THROTTLE_AFTER: usize = 3;

/// Seconds over which failed starts count toward the throttle.
pub const THROTTLE_WINDOW: f64 = 300.0;

/// The longest delay between starts of a throttled service, in seconds.
pub const THROTTLE_MAX: f64 = 60.0;

/// Seconds a task without health checks must have been RUNNING before it
/// counts toward its deployment's completion (and the service's steady
/// state). A task with health checks counts once HEALTHY. Without this, a
/// pass that saw the new tasks RUNNING just before their guests exited
/// would complete the deployment, and a completed deployment never trips
/// the circuit breaker: a revision that exits at start would crash-loop
/// instead of rolling back.
pub const PROVEN_AFTER: f64 = 2.0;

/// A task to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The deployment it belongs to (its `startedBy`).
    pub deployment: String,
    /// Its task definition family.
    pub family: String,
    /// And revision.
    pub revision: u32,
    /// The node it must go to (a DAEMON service's task); anywhere
    /// placement picks when `None`.
    pub node: Option<String>,
}

/// A task to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The task id.
    pub task: String,
    /// Its `stoppedReason`.
    pub reason: String,
}

/// What a reconcile decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The service as it should be stored now (events, deployments, status).
    pub service: ServiceRecord,
    /// Tasks to start.
    pub start: Vec<Start>,
    /// Tasks to stop.
    pub stop: Vec<Stop>,
    /// Run again after this many seconds even if nothing changes.
    pub requeue: Option<f64>,
}

impl Plan {
    /// Whether there is anything to write or do.
    pub fn acts(&self, before: &ServiceRecord) -> bool {
        !self.start.is_empty() || !self.stop.is_empty() || self.service != *before
    }
}

/// Ids and randomness, from the caller.
pub trait Ids {
    /// A unique id for an event.
    fn event_id(&mut self) -> String;
    /// A new deployment id (`ecs-svc/` and digits).
    fn deployment_id(&mut self) -> String;
}

/// Meant to run and not stopped.
pub(super) fn live(t: &TaskRecord) -> bool {
    t.desired_status == DesiredStatus::Running && t.last_status < TaskStatus::Stopped
}

fn healthy(t: &TaskRecord) -> bool {
    live(t)
        && t.last_status == TaskStatus::Running
        && (!t.health_checked() || t.health_status == HealthStatus::Healthy)
}

/// Whether a stopped task counts as a failure of its deployment: it could
/// not start, its essential container exited, or it was stopped for
/// failing its health checks.
pub fn failed(t: &TaskRecord) -> bool {
    t.desired_status == DesiredStatus::Stopped
        && match t.stop_code {
            Some(StopCode::TaskFailedToStart | StopCode::EssentialContainerExited) => true,
            Some(StopCode::ServiceSchedulerInitiated) => t.health_status == HealthStatus::Unhealthy,
            _ => false,
        }
}

/// The stops a reconcile collects, each task once.
#[derive(Default)]
struct Stops(Vec<Stop>);

impl Stops {
    fn add(&mut self, t: &TaskRecord, reason: String) {
        if !self.has(&t.id) {
            self.0.push(Stop {
                task: t.id.clone(),
                reason,
            });
        }
    }

    fn has(&self, id: &str) -> bool {
        self.0.iter().any(|s| s.task == id)
    }
}

/// The tasks a reconcile would have stopped but left running because they
/// are protected from scale-in, and when the first protection it waits on
/// ends (seconds from now).
#[derive(Default)]
struct Protected {
    tasks: Vec<String>,
    wake: Option<f64>,
}

impl Protected {
    fn hold(&mut self, tasks: &[&TaskRecord]) {
        self.tasks.extend(tasks.iter().map(|t| t.id.clone()));
    }

    fn wake_for(&mut self, tasks: &[&TaskRecord], now: f64) {
        for until in tasks.iter().filter_map(|t| t.protected_at(now)) {
            let at = until - now;
            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
    }

    /// Says so in an event when the number held changes to one above 0.
    fn report(&self, s: &mut ServiceRecord, now: f64, ids: &mut dyn Ids) {
        let n = self.tasks.len() as u32;
        if n > 0 && n != s.held_by_protection {
            let list = crate::model::service::named_tasks(self.tasks.iter().map(String::as_str));
            s.event(
                ids.event_id(),
                now,
                format!(
                    "(service {}) was unable to stop {n} task{} for scale-in or deployment: they are protected (UpdateTaskProtection) and keep running until their protection ends or is removed: {list}.",
                    s.name,
                    if n == 1 { "" } else { "s" },
                ),
            );
        }
        s.held_by_protection = n;
    }
}

/// Decides what to do for `svc` given its `tasks` at time `now` (seconds).
pub fn reconcile(svc: &ServiceRecord, tasks: &[TaskRecord], now: f64, ids: &mut dyn Ids) -> Plan {
    reconcile_draining(svc, tasks, &[], now, ids)
}

/// A plan that does nothing yet, and the service's own tasks.
fn begin<'t>(svc: &ServiceRecord, tasks: &'t [TaskRecord]) -> (Plan, Vec<&'t TaskRecord>) {
    let plan = Plan {
        service: svc.clone(),
        start: Vec::new(),
        stop: Vec::new(),
        requeue: None,
    };
    let mine = tasks
        .iter()
        .filter(|t| t.cluster == svc.cluster && t.group == group(&svc.name))
        .collect();
    (plan, mine)
}

/// [`reconcile`], with the nodes (container instances) that are DRAINING:
/// the service's tasks on them are moved away as a deployment moves old
/// tasks: replacements start within maximumPercent, and they stop as
/// long as minimumHealthyPercent holds.
pub fn reconcile_draining(
    svc: &ServiceRecord,
    tasks: &[TaskRecord],
    draining: &[String],
    now: f64,
    ids: &mut dyn Ids,
) -> Plan {
    let (mut plan, mine) = begin(svc, tasks);
    match svc.status {
        ServiceStatus::Inactive => plan,
        ServiceStatus::Draining => {
            drain(&mut plan, &mine, now);
            plan
        }
        ServiceStatus::Active => {
            active(&mut plan, &mine, draining, now, ids);
            plan
        }
    }
}

/// [`reconcile`] for a DAEMON service: one task on each node of
/// `eligible` (the ACTIVE, connected nodes its `memberOf` constraints
/// allow), none elsewhere. Its desired count is the number of those
/// nodes. A failed or unhealthy task is replaced on its node; a node
/// that leaves `eligible` (DRAINING, gone, or no longer matching) has its
/// task stopped, not moved. A deployment replaces each node's task in
/// place: the old one stops (as many at once as minimumHealthyPercent
/// allows; none while protected) and the new one starts once the node
/// runs none.
pub fn reconcile_daemon(
    svc: &ServiceRecord,
    tasks: &[TaskRecord],
    eligible: &[String],
    now: f64,
    ids: &mut dyn Ids,
) -> Plan {
    let (mut plan, mine) = begin(svc, tasks);
    match svc.status {
        ServiceStatus::Inactive => {}
        ServiceStatus::Draining => drain(&mut plan, &mine, now),
        ServiceStatus::Active => daemon(&mut plan, &mine, eligible, now, ids),
    }
    plan
}

fn daemon(plan: &mut Plan, mine: &[&TaskRecord], eligible: &[String], now: f64, ids: &mut dyn Ids) {
    let name = plan.service.name.clone();
    let desired = eligible.len() as u32;
    plan.service.desired_count = desired;
    let cfg = plan.service.config;
    let grace = plan.service.health_check_grace_period_seconds as f64;
    let Some((pi, blocked_until)) = primary_failures(plan, mine, now, ids) else {
        return;
    };
    let pid = plan.service.deployments[pi].id.clone();
    let known = plan.service.live_deployments();
    let of = |t: &TaskRecord, id: &str| t.started_by.as_deref() == Some(id);
    let in_grace = |t: &TaskRecord| t.started_at.unwrap_or(t.created_at) + grace > now;
    let unhealthy = |t: &TaskRecord| t.health_status == HealthStatus::Unhealthy && !in_grace(t);
    let live_tasks: Vec<&TaskRecord> = mine.iter().copied().filter(|t| live(t)).collect();
    let mut stops = Stops::default();
    let mut held = Protected::default();
    for t in &live_tasks {
        if !known.iter().any(|k| of(t, k)) {
            stops.add(
                t,
                format!("Task is not part of a deployment of service {name}"),
            );
        } else if !eligible.contains(&t.node) {
            stops.add(
                t,
                format!(
                    "Task stopped because container instance {} no longer takes tasks of service {name} (DRAINING, gone, or its attributes no longer match)",
                    t.node
                ),
            );
        }
    }
    // Per node: at most one task of the primary, healthy.
    let mut primary_good = 0;
    let mut primary_healthy = 0;
    for node in eligible {
        let mut primary: Vec<&TaskRecord> = live_tasks
            .iter()
            .copied()
            .filter(|t| &t.node == node && of(t, &pid) && !stops.has(&t.id))
            .collect();
        primary.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        for t in primary.iter().skip(1) {
            stops.add(
                t,
                format!("Scaling activity initiated by (deployment {pid})"),
            );
        }
        if let Some(t) = primary.first() {
            if unhealthy(t) {
                failed_checks(&mut plan.service, &mut stops, t, now, ids);
            } else {
                primary_good += 1;
                primary_healthy += u32::from(healthy(t));
            }
        }
    }
    let old: Vec<&TaskRecord> = live_tasks
        .iter()
        .copied()
        .filter(|t| !of(t, &pid))
        .collect();
    let floor = cfg.min_healthy(desired);
    stop_old(
        plan,
        &mut stops,
        &mut held,
        &live_tasks,
        old,
        floor,
        &unhealthy,
        &|_| false,
        now,
        ids,
    );
    daemon_starts(plan, pi, mine, eligible, blocked_until, now);
    wake_after_grace(plan, live_tasks.iter().copied(), grace, now);
    plan.stop = stops.0;
    let others = live_tasks
        .iter()
        .any(|t| !of(t, &pid) || !eligible.contains(&t.node));
    let settled = primary_good == desired && primary_healthy == desired && !others;
    conclude(plan, pi, &live_tasks, settled, now, ids);
}

/// Stops old deployments' tasks (and those on DRAINING nodes, which
/// `leaving` tells) as a rollout does: what is not healthy at once,
/// healthy ones as long as `floor` of the `live` tasks stay healthy. A
/// protected task waits, unless it failed its health checks (protection
/// is from scale-in, not from failure) or its node is draining. Then
/// says what the pass stops and what it waits for, and runs again when
/// the first protection ends.
#[allow(clippy::too_many_arguments)]
fn stop_old(
    plan: &mut Plan,
    stops: &mut Stops,
    held: &mut Protected,
    live: &[&TaskRecord],
    mut old: Vec<&TaskRecord>,
    floor: u32,
    unhealthy: &dyn Fn(&TaskRecord) -> bool,
    leaving: &dyn Fn(&TaskRecord) -> bool,
    now: f64,
    ids: &mut dyn Ids,
) {
    let healthy_now = live
        .iter()
        .filter(|t| healthy(t) && !stops.has(&t.id))
        .count() as u32;
    let mut budget = healthy_now.saturating_sub(floor);
    old.sort_by(|a, b| {
        healthy(a)
            .cmp(&healthy(b))
            .then(a.created_at.total_cmp(&b.created_at))
    });
    for t in old {
        if stops.has(&t.id) || (healthy(t) && budget == 0) {
            continue;
        }
        if !leaving(t) && !unhealthy(t) && t.protected_at(now).is_some() {
            held.hold(&[t]);
            held.wake_for(&[t], now);
            continue;
        }
        if healthy(t) {
            budget -= 1;
        }
        let reason = if leaving(t) {
            format!(
                "Task moved away from container instance {}, which is DRAINING",
                t.node
            )
        } else {
            format!(
                "Scaling activity initiated by (deployment {})",
                t.started_by.as_deref().unwrap_or("")
            )
        };
        stops.add(t, reason);
    }
    stop_event(&mut plan.service, &stops.0, now, ids);
    held.report(&mut plan.service, now, ids);
    if let Some(at) = held.wake {
        plan.requeue = Some(plan.requeue.map_or(at, |r: f64| r.min(at)));
    }
}

/// Stops a task that failed its health checks, and says so.
fn failed_checks(
    s: &mut ServiceRecord,
    stops: &mut Stops,
    t: &TaskRecord,
    now: f64,
    ids: &mut dyn Ids,
) {
    let message = format!(
        "(service {}) (task {}) failed container health checks.",
        s.name, t.id
    );
    s.event(ids.event_id(), now, message);
    stops.add(t, "Task failed container health checks".into());
}

fn stop_event(s: &mut ServiceRecord, stops: &[Stop], now: f64, ids: &mut dyn Ids) {
    if stops.is_empty() {
        return;
    }
    let list = crate::model::service::named_tasks(stops.iter().map(|st| st.task.as_str()));
    let n = stops.len();
    s.event(
        ids.event_id(),
        now,
        format!(
            "(service {}) has stopped {n} running task{}: {list}.",
            s.name,
            if n == 1 { "" } else { "s" },
        ),
    );
}

/// A DAEMON service's starts: one on each eligible node that runs
/// nothing of the service any more (a task told to stop keeps its node's
/// room until it has stopped); none while the primary is throttled.
fn daemon_starts(
    plan: &mut Plan,
    primary: usize,
    mine: &[&TaskRecord],
    eligible: &[String],
    blocked_until: Option<f64>,
    now: f64,
) {
    let p = &plan.service.deployments[primary];
    for node in eligible {
        let occupied = mine
            .iter()
            .any(|t| &t.node == node && t.last_status < TaskStatus::Stopped);
        if occupied {
            continue;
        }
        if let Some(until) = blocked_until {
            plan.requeue = Some(until - now);
            break;
        }
        plan.start.push(Start {
            deployment: p.id.clone(),
            family: p.family.clone(),
            revision: p.revision,
            node: Some(node.clone()),
        });
    }
}

/// The pass runs again when the grace period of an unhealthy task ends
/// (until then its health checks do not count).
fn wake_after_grace<'a>(
    plan: &mut Plan,
    tasks: impl Iterator<Item = &'a TaskRecord>,
    grace: f64,
    now: f64,
) {
    for t in tasks {
        let ends = t.started_at.unwrap_or(t.created_at) + grace;
        if t.health_status == HealthStatus::Unhealthy && ends > now {
            let at = ends - now;
            plan.requeue = Some(plan.requeue.map_or(at, |r: f64| r.min(at)));
        }
    }
}

fn drain(plan: &mut Plan, mine: &[&TaskRecord], now: f64) {
    let s = &mut plan.service;
    for t in mine.iter().filter(|t| live(t)) {
        plan.stop.push(Stop {
            task: t.id.clone(),
            reason: format!("Service {} was deleted", s.name),
        });
    }
    let stopping = mine.iter().any(|t| t.last_status < TaskStatus::Stopped);
    if !stopping {
        s.status = ServiceStatus::Inactive;
        for d in &mut s.deployments {
            if d.status != DeploymentStatus::Inactive {
                d.status = DeploymentStatus::Inactive;
                d.updated_at = now;
            }
            if !d.finished() {
                d.outcome = ServiceDeploymentStatus::Stopped;
                d.outcome_reason = Some("the service was deleted".into());
                d.finished_at = Some(now);
            }
        }
    }
}

/// The primary deployment's failures: the circuit breaker (which may roll
/// it back: then `None`, and the plan runs again at once), then the
/// throttle. The primary's index and, when throttled, the time before
/// which nothing starts.
fn primary_failures(
    plan: &mut Plan,
    mine: &[&TaskRecord],
    now: f64,
    ids: &mut dyn Ids,
) -> Option<(usize, Option<f64>)> {
    let name = plan.service.name.clone();
    let desired = plan.service.desired_count;
    let cfg = plan.service.config;
    let pi = plan
        .service
        .deployments
        .iter()
        .position(|d| d.status == DeploymentStatus::Primary)?;
    let pid = plan.service.deployments[pi].id.clone();
    let p_failed: Vec<&TaskRecord> = mine
        .iter()
        .copied()
        .filter(|t| t.started_by.as_deref() == Some(pid.as_str()) && failed(t))
        .collect();
    {
        let p = &mut plan.service.deployments[pi];
        let n = p_failed.len() as u32;
        if n > p.failed_tasks {
            p.failed_tasks = n;
            p.updated_at = now;
        }
    }
    let p = &plan.service.deployments[pi];
    if let Some(cb) = cfg.circuit_breaker.filter(|cb| cb.enable) {
        if p.rollout_state == RolloutState::InProgress
            && p.failed_tasks >= circuit_breaker_threshold(desired)
        {
            trip(plan, pi, cb.rollback, now, ids);
            plan.requeue = Some(0.0);
            return None;
        }
    }
    let window = p.created_at.max(now - THROTTLE_WINDOW);
    let recent: Vec<f64> = p_failed
        .iter()
        .filter_map(|t| t.stopping_at.or(t.stopped_at))
        .filter(|&at| at > window)
        .collect();
    let mut blocked_until = None;
    if recent.len() >= THROTTLE_AFTER {
        let delay = 2f64
            .powi((recent.len() - THROTTLE_AFTER) as i32)
            .min(THROTTLE_MAX);
        let last = recent.iter().copied().fold(f64::MIN, f64::max);
        if now < last + delay {
            blocked_until = Some(last + delay);
        }
        if !p.throttled {
            let p = &mut plan.service.deployments[pi];
            p.throttled = true;
            plan.service.event(
                ids.event_id(),
                now,
                format!("(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."),
            );
        }
    } else if p.throttled {
        plan.service.deployments[pi].throttled = false;
    }
    Some((pi, blocked_until))
}

fn active(plan: &mut Plan, mine: &[&TaskRecord], draining: &[String], now: f64, ids: &mut dyn Ids) {
    let desired = plan.service.desired_count;
    let cfg = plan.service.config;
    let grace = plan.service.health_check_grace_period_seconds as f64;
    let Some((pi, blocked_until)) = primary_failures(plan, mine, now, ids) else {
        return;
    };
    let pid = plan.service.deployments[pi].id.clone();

    let in_grace = |t: &TaskRecord| t.started_at.unwrap_or(t.created_at) + grace > now;
    let unhealthy = |t: &TaskRecord| t.health_status == HealthStatus::Unhealthy && !in_grace(t);
    // A task on a DRAINING node is moved away as an old deployment's is.
    let leaving = |t: &TaskRecord| draining.contains(&t.node);
    let mut stops = Stops::default();
    let Live {
        all: live_tasks,
        primary: primary_live,
        old: old_live,
    } = by_deployment(&plan.service, mine, &pid, &leaving, &mut stops);
    let primary_bad: Vec<&TaskRecord> = primary_live
        .iter()
        .copied()
        .filter(|t| unhealthy(t))
        .collect();
    let primary_good = primary_live.len() - primary_bad.len();
    let primary_healthy = primary_live.iter().filter(|t| healthy(t)).count() as u32;
    // What counts against maximumPercent is, as ECS counts it, every task
    // in the RUNNING or PENDING state: a task told to stop occupies its
    // slot until its worker has moved it on (it may not have seen the
    // stop yet).
    let stopping_but_up = mine
        .iter()
        .filter(|t| !live(t) && t.last_status <= TaskStatus::Running)
        .count();
    let total = (primary_live.len() + old_live.len() + stopping_but_up) as u32;

    // Starts: up to the desired count, within maximumPercent.
    let max_total = cfg.max_total(desired).max(desired.min(1));
    let want = desired.saturating_sub(primary_good as u32);
    let room = max_total.saturating_sub(total);
    let mut start_n = want.min(room);
    if let Some(until) = blocked_until {
        if start_n > 0 {
            start_n = 0;
            plan.requeue = Some(until - now);
        }
    }

    let mut held = Protected::default();
    let healthy_primary: Vec<&TaskRecord> = primary_live
        .iter()
        .copied()
        .filter(|t| !unhealthy(t))
        .collect();
    scale_in(&mut stops, &mut held, healthy_primary, desired, &pid, now);

    stop_unhealthy(
        plan,
        &mut stops,
        mine,
        &primary_bad,
        old_live.iter().copied().filter(|t| unhealthy(t)),
        primary_healthy >= desired,
        start_n < want,
        now,
        ids,
    );

    let floor = cfg.min_healthy(desired);
    stop_old(
        plan,
        &mut stops,
        &mut held,
        &live_tasks,
        old_live.clone(),
        floor,
        &unhealthy,
        &leaving,
        now,
        ids,
    );

    wake_after_grace(
        plan,
        primary_live.iter().chain(old_live.iter()).copied(),
        grace,
        now,
    );

    let p = &plan.service.deployments[pi];
    plan.start.extend((0..start_n).map(|_| Start {
        deployment: pid.clone(),
        family: p.family.clone(),
        revision: p.revision,
        node: None,
    }));
    plan.stop = stops.0;

    let others_live = !old_live.is_empty() || live_tasks.len() > primary_live.len();
    conclude(
        plan,
        pi,
        &live_tasks,
        primary_healthy == desired && primary_live.len() as u32 == desired && !others_live,
        now,
        ids,
    );
}

/// Unhealthy tasks stop: every one of old deployments', and of the
/// primary's all once as many as desired are healthy (`enough`);
/// otherwise they are replaced first when maximumPercent leaves room, and
/// when it does not (`no_room`), stopped one at a time, the oldest first.
#[allow(clippy::too_many_arguments)]
fn stop_unhealthy<'a>(
    plan: &mut Plan,
    stops: &mut Stops,
    mine: &[&TaskRecord],
    primary_bad: &[&'a TaskRecord],
    old_bad: impl Iterator<Item = &'a TaskRecord>,
    enough: bool,
    no_room: bool,
    now: f64,
    ids: &mut dyn Ids,
) {
    let stopping_unhealthy = mine.iter().any(|t| {
        t.desired_status == DesiredStatus::Stopped
            && t.last_status < TaskStatus::Stopped
            && t.health_status == HealthStatus::Unhealthy
    });
    let mut bad: Vec<&TaskRecord> = Vec::new();
    if enough {
        bad.extend(primary_bad.iter().copied());
    } else if no_room && !stopping_unhealthy {
        bad.extend(
            primary_bad
                .iter()
                .copied()
                .min_by(|a, b| a.created_at.total_cmp(&b.created_at)),
        );
    }
    bad.extend(old_bad);
    for t in bad {
        failed_checks(&mut plan.service, stops, t, now, ids);
    }
}

/// A service's live tasks, by deployment.
struct Live<'a> {
    all: Vec<&'a TaskRecord>,
    /// The primary deployment's, but those leaving a DRAINING node.
    primary: Vec<&'a TaskRecord>,
    /// Those of the service's other deployments, and the leaving ones.
    old: Vec<&'a TaskRecord>,
}

/// Sorts a service's live tasks by deployment; a task of no deployment
/// the service knows is stopped.
fn by_deployment<'a>(
    service: &ServiceRecord,
    mine: &[&'a TaskRecord],
    primary: &str,
    leaving: &dyn Fn(&TaskRecord) -> bool,
    stops: &mut Stops,
) -> Live<'a> {
    let known = service.live_deployments();
    let of = |t: &TaskRecord, id: &str| t.started_by.as_deref() == Some(id);
    let live_tasks: Vec<&TaskRecord> = mine.iter().copied().filter(|t| live(t)).collect();
    for t in live_tasks
        .iter()
        .filter(|t| !known.iter().any(|k| of(t, k)))
    {
        stops.add(
            t,
            format!(
                "Task is not part of a deployment of service {}",
                service.name
            ),
        );
    }
    let primary_live: Vec<&TaskRecord> = live_tasks
        .iter()
        .copied()
        .filter(|t| of(t, primary) && !leaving(t))
        .collect();
    let old_live: Vec<&TaskRecord> = live_tasks
        .iter()
        .copied()
        .filter(|t| (!of(t, primary) || leaving(t)) && known.iter().any(|k| of(t, k)))
        .collect();
    Live {
        all: live_tasks,
        primary: primary_live,
        old: old_live,
    }
}

/// Scale in: the primary's `healthy` tasks past `desired` stop, pending
/// ones first, then the newest. Protected tasks are passed over; if too
/// few are left, the rest of the excess waits for protection to end (the
/// pass runs again when the first of it does).
fn scale_in(
    stops: &mut Stops,
    held: &mut Protected,
    mut healthy: Vec<&TaskRecord>,
    desired: u32,
    deployment: &str,
    now: f64,
) {
    if healthy.len() <= desired as usize {
        return;
    }
    healthy.sort_by(|a, b| {
        (a.last_status == TaskStatus::Running)
            .cmp(&(b.last_status == TaskStatus::Running))
            .then(b.created_at.total_cmp(&a.created_at))
    });
    let n = healthy.len() - desired as usize;
    let (protected, free): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
        healthy.iter().partition(|t| t.protected_at(now).is_some());
    for t in free.iter().take(n) {
        stops.add(
            t,
            format!("Scaling activity initiated by (deployment {deployment})"),
        );
    }
    if free.len() < n {
        held.hold(&protected[..n - free.len()]);
        // Whichever protection ends first frees a task to stop.
        held.wake_for(&protected, now);
    }
}

/// Ends what a pass found ended: old deployments whose tasks are gone
/// become INACTIVE, and the primary completes once `settled` (it alone
/// runs what is desired, healthy), its tasks have proven themselves (see
/// [`PROVEN_AFTER`]; until then the pass runs again when the last one
/// will have) and the plan does nothing more.
fn conclude(
    plan: &mut Plan,
    pi: usize,
    live_tasks: &[&TaskRecord],
    settled: bool,
    now: f64,
    ids: &mut dyn Ids,
) {
    let name = plan.service.name.clone();
    let pid = plan.service.deployments[pi].id.clone();
    let alive_ids: Vec<&str> = live_tasks
        .iter()
        .filter_map(|t| t.started_by.as_deref())
        .collect();
    for d in plan.service.deployments.iter_mut() {
        if d.status == DeploymentStatus::Active && !alive_ids.contains(&d.id.as_str()) {
            d.status = DeploymentStatus::Inactive;
            d.updated_at = now;
            if d.outcome == ServiceDeploymentStatus::InProgress {
                d.outcome = ServiceDeploymentStatus::Stopped;
                d.outcome_reason = Some("a newer deployment replaced it".into());
                d.finished_at = Some(now);
            }
        }
    }
    let mut steady = settled && plan.start.is_empty() && plan.stop.is_empty();
    if steady {
        let unproven = live_tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(pid.as_str()) && !t.health_checked())
            .filter_map(|t| {
                let at = t.started_at.unwrap_or(t.created_at) + PROVEN_AFTER;
                (at > now).then_some(at - now)
            })
            .fold(None, |last: Option<f64>, wait| {
                Some(last.map_or(wait, |l| l.max(wait)))
            });
        if let Some(wait) = unproven {
            steady = false;
            plan.requeue = Some(plan.requeue.map_or(wait, |r: f64| r.min(wait)));
        }
    }
    if steady {
        let p = &mut plan.service.deployments[pi];
        if p.rollout_state == RolloutState::InProgress {
            p.rollout_state = RolloutState::Completed;
            p.rollout_state_reason = format!("ECS deployment {pid} completed.");
            p.outcome = ServiceDeploymentStatus::Successful;
            p.finished_at = Some(now);
            p.updated_at = now;
            let restores = p.restores.clone();
            if let Some(f) = restores {
                if let Some(failed) = plan.service.deployments.iter_mut().find(|d| d.id == f) {
                    failed.outcome = ServiceDeploymentStatus::RollbackSuccessful;
                    failed.finished_at = Some(now);
                }
            }
            plan.service.event(
                ids.event_id(),
                now,
                format!("(service {name}) (deployment {pid}) deployment completed."),
            );
        }
        if !plan.service.steady {
            plan.service.event(
                ids.event_id(),
                now,
                format!("(service {name}) has reached a steady state."),
            );
        }
    }
    plan.service.steady = steady;
    plan.service.trim_deployments();
}

/// The circuit breaker trips: the primary failed. With rollback, the last
/// completed deployment comes back as a new primary.
fn trip(plan: &mut Plan, pi: usize, rollback: bool, now: f64, ids: &mut dyn Ids) {
    let s = &mut plan.service;
    let name = s.name.clone();
    let pid = s.deployments[pi].id.clone();
    let reason = "ECS deployment circuit breaker: tasks failed to start.".to_string();
    s.event(
        ids.event_id(),
        now,
        format!("(service {name}) (deployment {pid}) deployment failed: tasks failed to start."),
    );
    let p = &mut s.deployments[pi];
    p.rollout_state = RolloutState::Failed;
    p.rollout_state_reason = reason.clone();
    p.updated_at = now;
    let rolled = rollback
        && s.roll_back(pi, &reason, ids.deployment_id(), ids.event_id(), now)
            .is_some();
    if !rolled {
        let p = &mut s.deployments[pi];
        p.outcome = if rollback {
            ServiceDeploymentStatus::RollbackFailed
        } else {
            ServiceDeploymentStatus::Stopped
        };
        p.outcome_reason = Some(if rollback {
            format!(
                "{reason} No earlier deployment completed, so there is nothing to roll back to."
            )
        } else {
            reason
        });
        p.finished_at = Some(now);
    }
}

#[cfg(test)]
pub(crate) mod tests;
