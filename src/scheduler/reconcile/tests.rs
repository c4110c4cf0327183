//! The reconcile step against simulated tasks: no store, no threads.

use super::*;
use crate::model::service::{CircuitBreaker, Deployment, DeploymentConfig, Strategy};

struct Seq(u64);

impl Ids for Seq {
    fn event_id(&mut self) -> String {
        self.0 += 1;
        format!("e{}", self.0)
    }
    fn deployment_id(&mut self) -> String {
        self.0 += 1;
        format!("ecs-svc/{:019}", self.0)
    }
}

/// Service `web` of cluster `default`, running `web:1`.
pub(crate) fn service(desired: u32, config: DeploymentConfig) -> ServiceRecord {
    ServiceRecord {
        name: "web".into(),
        cluster: "default".into(),
        status: ServiceStatus::Active,
        desired_count: desired,
        family: "web".into(),
        revision: 1,
        launch_type: "FARGATE".into(),
        capacity_provider_strategy: Vec::new(),
        config,
        strategy: vec![Strategy::Spread],
        placement_strategy: serde_json::json!([]),
        placement_constraints: serde_json::json!([]),
        distinct_instance: false,
        member_of: vec![],
        health_check_grace_period_seconds: 0,
        created_at: 0.0,
        created_by: None,
        extra: serde_json::json!({}),
        deployments: vec![Deployment::new("ecs-svc/1".into(), "web", 1, config, 0.0)],
        events: vec![],
        steady: false,
        held_by_protection: 0,
        daemon: false,
        deleted_at: None,
        domains: Default::default(),
        https_redirect: false,
        observed: Default::default(),
    }
}

/// A world: the service, its tasks, the clock.
struct World {
    svc: ServiceRecord,
    tasks: Vec<TaskRecord>,
    now: f64,
    ids: Seq,
    checked: bool,
    /// The node new tasks go to, and the nodes DRAINING.
    node: String,
    draining: Vec<String>,
    /// For a DAEMON service: the nodes it runs on.
    eligible: Option<Vec<String>>,
}

impl World {
    fn new(desired: u32, config: DeploymentConfig) -> World {
        World {
            svc: service(desired, config),
            tasks: vec![],
            now: 1.0,
            ids: Seq(100),
            checked: false,
            node: "a".into(),
            draining: vec![],
            eligible: None,
        }
    }

    /// Runs reconcile and applies its plan as the controller would.
    fn step(&mut self) -> Plan {
        let plan = match &self.eligible {
            Some(nodes) => reconcile_daemon(&self.svc, &self.tasks, nodes, self.now, &mut self.ids),
            None => reconcile_draining(
                &self.svc,
                &self.tasks,
                &self.draining,
                self.now,
                &mut self.ids,
            ),
        };
        for s in &plan.start {
            let mut container =
                serde_json::json!({"name": "main", "image": "x.wasm", "memory": 16});
            if self.checked {
                container["healthCheck"] = serde_json::json!({"command": ["CMD", "GET /healthz"]});
            }
            let td = crate::model::taskdef::TaskDefinition::parse(
                &serde_json::json!({"family": s.family, "containerDefinitions": [container]}),
            )
            .unwrap();
            let ids = &mut self.ids;
            let node = s.node.clone().unwrap_or_else(|| self.node.clone());
            let mut t =
                TaskRecord::placed(&td, s.revision, "default", &node, 0, self.now, &mut || {
                    ids.0 += 1;
                    format!("t{}", ids.0)
                });
            t.group = "service:web".into();
            t.started_by = Some(s.deployment.clone());
            self.tasks.push(t);
        }
        for s in &plan.stop {
            let t = self.task(&s.task);
            t.desired_status = DesiredStatus::Stopped;
            t.stop_code
                .get_or_insert(StopCode::ServiceSchedulerInitiated);
            t.stopped_reason.get_or_insert(s.reason.clone());
        }
        self.svc = plan.service.clone();
        plan
    }

    fn task(&mut self, id: &str) -> &mut TaskRecord {
        self.tasks.iter_mut().find(|t| t.id == id).unwrap()
    }

    /// Every task moves as far as it goes: started ones run (and pass
    /// their health check), stopping ones stop.
    fn settle(&mut self, healthy: bool) {
        let now = self.now;
        for t in &mut self.tasks {
            if t.desired_status == DesiredStatus::Stopped {
                t.last_status = TaskStatus::Stopped;
                t.stopping_at.get_or_insert(now);
                t.stopped_at.get_or_insert(now);
            } else if t.last_status < TaskStatus::Running {
                t.last_status = TaskStatus::Running;
                t.started_at = Some(now);
                if t.health_checked() && healthy {
                    t.set_health(0, HealthStatus::Healthy);
                }
            }
        }
    }

    fn fail(&mut self, id: &str) {
        let now = self.now;
        let t = self.task(id);
        t.desired_status = DesiredStatus::Stopped;
        t.last_status = TaskStatus::Stopped;
        t.stop_code = Some(StopCode::EssentialContainerExited);
        t.stopping_at = Some(now);
        t.stopped_at = Some(now);
    }

    fn live(&self) -> Vec<&TaskRecord> {
        self.tasks.iter().filter(|t| live(t)).collect()
    }

    fn running(&self, deployment: &str) -> usize {
        self.tasks
            .iter()
            .filter(|t| {
                t.last_status == TaskStatus::Running
                    && t.desired_status == DesiredStatus::Running
                    && t.started_by.as_deref() == Some(deployment)
            })
            .count()
    }

    fn said(&self, part: &str) -> usize {
        self.svc
            .events
            .iter()
            .filter(|e| e.message.contains(part))
            .count()
    }

    /// Steps until nothing changes (bounded), settling tasks in between
    /// and letting time pass until running tasks have proven themselves.
    fn converge(&mut self, healthy: bool) {
        for _ in 0..50 {
            let before = self.svc.clone();
            let plan = self.step();
            if !plan.acts(&before)
                && self.tasks.iter().all(|t| {
                    t.last_status == TaskStatus::Stopped || t.last_status == TaskStatus::Running
                })
            {
                match plan.requeue {
                    Some(wait) if wait <= PROVEN_AFTER && !self.svc.steady => self.now += wait,
                    _ => return,
                }
            }
            self.settle(healthy);
        }
        panic!("did not converge: {:?}", self.svc.events);
    }

    /// A rolling update to revision 2.
    fn deploy(&mut self, revision: u32) -> String {
        let id = self.ids.deployment_id();
        let mut d = Deployment::new(id.clone(), "web", revision, self.svc.config, self.now);
        for old in &mut self.svc.deployments {
            if old.status == DeploymentStatus::Primary {
                old.status = DeploymentStatus::Active;
            }
        }
        d.sources = vec![];
        self.svc.deployments.insert(0, d);
        self.svc.revision = revision;
        id
    }
}

#[test]
fn starts_the_desired_count_and_reaches_a_steady_state_once() {
    let mut w = World::new(3, DeploymentConfig::default());
    let plan = w.step();
    assert_eq!(plan.start.len(), 3);
    // Rerun before anything moved: the started tasks are seen, nothing more.
    assert!(w.step().start.is_empty());
    w.settle(true);
    // Running, but not yet for long: the pass asks to run again when
    // they will have run PROVEN_AFTER.
    let plan = w.step();
    assert_eq!(plan.requeue, Some(PROVEN_AFTER));
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::InProgress);
    assert!(!w.svc.steady);
    w.now += PROVEN_AFTER / 2.0;
    assert_eq!(w.step().requeue, Some(PROVEN_AFTER / 2.0));
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::InProgress);
    w.now += PROVEN_AFTER / 2.0;
    w.step();
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::Completed);
    assert_eq!(
        w.svc.deployments[0].outcome,
        ServiceDeploymentStatus::Successful
    );
    assert_eq!(w.said("has reached a steady state"), 1);
    assert_eq!(w.said("deployment completed"), 1);
    w.step();
    w.step();
    assert_eq!(w.said("has reached a steady state"), 1);
    assert_eq!(
        w.svc.events[0].message,
        "(service web) has reached a steady state."
    );
}

#[test]
fn a_stopped_task_is_replaced_at_once() {
    let mut w = World::new(2, DeploymentConfig::default());
    w.converge(true);
    let victim = w.live()[0].id.clone();
    w.fail(&victim);
    let plan = w.step();
    assert_eq!(plan.start.len(), 1);
    assert_eq!(plan.start[0].deployment, "ecs-svc/1");
    assert_eq!(w.svc.deployments[0].failed_tasks, 1);
    w.converge(true);
    assert_eq!(w.running("ecs-svc/1"), 2);
}

#[test]
fn scaling_in_stops_pending_tasks_first_then_the_newest() {
    let mut w = World::new(2, DeploymentConfig::default());
    w.converge(true);
    w.now = 2.0;
    w.svc.desired_count = 4;
    w.step();
    // One of the two new tasks runs, the other is still pending.
    let new: Vec<String> = w.tasks[2..].iter().map(|t| t.id.clone()).collect();
    w.task(&new[0]).last_status = TaskStatus::Running;
    w.task(&new[0]).started_at = Some(2.0);
    w.svc.desired_count = 2;
    let plan = w.step();
    let stopped: Vec<&str> = plan.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, [new[1].as_str(), new[0].as_str()]);
    assert!(plan.start.is_empty());
    assert!(w.said("has stopped 2 running tasks") == 1);
}

#[test]
fn scaling_in_passes_over_protected_tasks_until_their_protection_ends() {
    let mut w = World::new(3, DeploymentConfig::default());
    w.converge(true);
    w.now = 10.0;
    // The two newest (the ones scale-in would pick) are protected, one
    // for longer than the other.
    let ids: Vec<String> = w.live().iter().map(|t| t.id.clone()).collect();
    w.task(&ids[1]).protected_until = Some(100.0);
    w.task(&ids[2]).protected_until = Some(50.0);
    w.svc.desired_count = 1;
    let plan = w.step();
    let stopped: Vec<&str> = plan.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, [ids[0].as_str()], "only the unprotected task");
    assert_eq!(
        plan.requeue,
        Some(40.0),
        "again when the first protection ends"
    );
    assert_eq!(w.said("was unable to stop 1 task"), 1);
    w.settle(true);
    // Nothing more while both are protected, and no second event.
    w.now = 20.0;
    assert!(w.step().stop.is_empty());
    assert_eq!(w.said("was unable to stop"), 1);
    assert!(!w.svc.steady);
    // Once one protection has ended, that task goes.
    w.now = 50.0;
    let plan = w.step();
    let stopped: Vec<&str> = plan.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, [ids[2].as_str()]);
    assert_eq!(w.svc.held_by_protection, 0);
    w.converge(true);
    assert_eq!(w.live().len(), 1);
    assert_eq!(w.live()[0].id, ids[1], "the protected task still runs");
    assert!(w.svc.steady);
}

#[test]
fn a_deployment_waits_for_protected_old_tasks_but_not_failing_ones() {
    let mut w = World::new(2, DeploymentConfig::default());
    w.checked = true;
    w.converge(true);
    let old: Vec<String> = w.live().iter().map(|t| t.id.clone()).collect();
    w.task(&old[0]).protected_until = Some(100.0);
    w.task(&old[1]).protected_until = Some(100.0);
    w.now = 10.0;
    let new = w.deploy(2);
    // One protected old task fails its health checks: it is replaced
    // all the same.
    w.task(&old[1]).set_health(0, HealthStatus::Unhealthy);
    w.converge(true);
    assert_eq!(w.running(&new), 2);
    let live: Vec<&str> = w.live().iter().map(|t| t.id.as_str()).collect();
    assert!(live.contains(&old[0].as_str()), "the protected task waits");
    assert!(!live.contains(&old[1].as_str()), "the failing one does not");
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::InProgress);
    assert_eq!(w.said("was unable to stop 1 task"), 1);
    // Protection removed (UpdateTaskProtection with protectionEnabled
    // false): the deployment completes.
    w.task(&old[0]).protected_until = None;
    w.converge(true);
    assert_eq!(w.running("ecs-svc/1"), 0);
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::Completed);
}

/// A DAEMON service (minimumHealthyPercent 0, maximumPercent 100, as
/// ECS has them for daemons) on nodes a, b and c.
fn daemon_on_three() -> World {
    let mut w = World::new(
        0,
        DeploymentConfig {
            minimum_healthy_percent: 0,
            maximum_percent: 100,
            circuit_breaker: None,
        },
    );
    w.svc.daemon = true;
    w.eligible = Some(vec!["a".into(), "b".into(), "c".into()]);
    w.converge(true);
    w
}

fn nodes_of(w: &World, deployment: &str) -> Vec<String> {
    let mut n: Vec<String> = w
        .live()
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(deployment))
        .map(|t| t.node.clone())
        .collect();
    n.sort();
    n
}

#[test]
fn a_daemon_runs_one_task_on_each_node_and_follows_the_nodes() {
    let mut w = daemon_on_three();
    assert_eq!(nodes_of(&w, "ecs-svc/1"), ["a", "b", "c"]);
    assert_eq!(w.svc.desired_count, 3);
    assert!(w.svc.steady);
    // A failed task is replaced on its own node.
    let on_b = w.live().iter().find(|t| t.node == "b").unwrap().id.clone();
    w.fail(&on_b);
    let plan = w.step();
    assert_eq!(plan.start.len(), 1);
    assert_eq!(plan.start[0].node.as_deref(), Some("b"));
    w.converge(true);
    // A node leaves (drained): its task stops and is not moved; a node
    // joins: it gets one.
    w.eligible = Some(vec!["a".into(), "c".into(), "d".into()]);
    w.converge(true);
    assert_eq!(nodes_of(&w, "ecs-svc/1"), ["a", "c", "d"]);
    assert_eq!(w.svc.desired_count, 3);
    assert!(w.tasks.iter().any(|t| t.node == "b"
        && t.stopped_reason
            .as_deref()
            .is_some_and(|r| r.contains("container instance b no longer takes tasks"))));
    // A second task on a node (a race) is stopped.
    let extra = {
        let mut t = w
            .live()
            .iter()
            .find(|t| t.node == "a")
            .copied()
            .unwrap()
            .clone();
        t.id = "extra".into();
        t.created_at = w.now + 1.0;
        t
    };
    w.tasks.push(extra);
    let plan = w.step();
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].task, "extra");
}

#[test]
fn a_daemon_deployment_replaces_each_nodes_task_in_place() {
    let mut w = daemon_on_three();
    w.svc.config.minimum_healthy_percent = 50;
    let new = w.deploy(2);
    for _ in 0..20 {
        let plan = w.step();
        // At most one task per node, and at least half healthy.
        for node in ["a", "b", "c"] {
            let here = w
                .tasks
                .iter()
                .filter(|t| t.node == node && t.last_status < TaskStatus::Stopped)
                .count();
            assert!(here <= 1, "node {node} runs {here} tasks");
        }
        let healthy = w.tasks.iter().filter(|t| healthy(t)).count();
        assert!(healthy >= 2, "at least 50% of 3 healthy: {healthy}");
        if !plan.acts(&w.svc) && w.running(&new) == 3 {
            break;
        }
        w.settle(true);
    }
    w.converge(true);
    assert_eq!(nodes_of(&w, &new), ["a", "b", "c"]);
    assert_eq!(w.running("ecs-svc/1"), 0);
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::Completed);
}

/// Four running tasks (minimumHealthyPercent 50, maximumPercent 150), and
/// a rolling update to revision 2 just begun: the world and its new
/// deployment.
fn rolling_from_4_within_50_and_150_percent() -> (World, String) {
    let config = DeploymentConfig {
        minimum_healthy_percent: 50,
        maximum_percent: 150,
        circuit_breaker: None,
    };
    let mut w = World::new(4, config);
    w.converge(true);
    let new = w.deploy(2);
    (w, new)
}

#[test]
fn tasks_on_a_draining_node_are_replaced_before_they_stop() {
    let mut w = World::new(4, DeploymentConfig::default());
    w.converge(true);
    w.draining = vec!["a".into()];
    w.node = "b".into();
    for _ in 0..20 {
        let plan = w.step();
        let on_b = w
            .tasks
            .iter()
            .filter(|t| healthy(t) && t.node == "b")
            .count();
        let healthy = w.tasks.iter().filter(|t| healthy(t)).count();
        assert!(w.live().len() <= 8, "at most 200% of 4 tasks");
        assert!(healthy >= 4, "at least 100% of 4 healthy: {healthy}");
        if !plan.acts(&w.svc) && on_b == 4 {
            break;
        }
        w.settle(true);
    }
    w.converge(true);
    let live: Vec<&str> = w.live().iter().map(|t| t.node.as_str()).collect();
    assert_eq!(live, ["b"; 4]);
    let moved = w
        .tasks
        .iter()
        .filter(|t| {
            t.stopped_reason
                .as_deref()
                .is_some_and(|r| r.contains("container instance a, which is DRAINING"))
        })
        .count();
    assert_eq!(moved, 4);
}

#[test]
fn a_rolling_update_stays_within_minimum_healthy_and_maximum_percent() {
    let (mut w, new) = rolling_from_4_within_50_and_150_percent();
    for _ in 0..20 {
        let plan = w.step();
        let live = w.live().len();
        let healthy = w.tasks.iter().filter(|t| healthy(t)).count();
        assert!(live <= 6, "at most 150% of 4 tasks: {live}");
        assert!(healthy >= 2, "at least 50% of 4 healthy: {healthy}");
        if !plan.acts(&w.svc) && w.running(&new) == 4 {
            break;
        }
        w.settle(true);
    }
    w.converge(true);
    assert_eq!(w.running(&new), 4);
    assert_eq!(w.running("ecs-svc/1"), 0);
    let d: Vec<DeploymentStatus> = w.svc.deployments.iter().map(|d| d.status).collect();
    assert_eq!(d, [DeploymentStatus::Primary, DeploymentStatus::Inactive]);
    assert_eq!(w.svc.deployments[0].rollout_state, RolloutState::Completed);
}

#[test]
fn an_unhealthy_task_is_replaced_first_when_maximum_percent_allows() {
    let mut w = World::new(2, DeploymentConfig::default());
    w.checked = true;
    w.converge(true);
    let sick = w.live()[0].id.clone();
    w.task(&sick).set_health(0, HealthStatus::Unhealthy);
    let plan = w.step();
    assert_eq!(plan.start.len(), 1, "the replacement starts first");
    assert!(plan.stop.is_empty(), "the unhealthy task stays until then");
    w.settle(true);
    let plan = w.step();
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].task, sick);
    assert_eq!(w.said("failed container health checks"), 1);

    // Without room, it is stopped first.
    let mut w = World::new(
        2,
        DeploymentConfig {
            minimum_healthy_percent: 50,
            maximum_percent: 100,
            circuit_breaker: None,
        },
    );
    w.checked = true;
    w.converge(true);
    let sick = w.live()[1].id.clone();
    w.task(&sick).set_health(0, HealthStatus::Unhealthy);
    let plan = w.step();
    assert!(plan.start.is_empty());
    assert_eq!(plan.stop.len(), 1);
    w.settle(true);
    assert_eq!(w.step().start.len(), 1);
}

#[test]
fn the_grace_period_holds_off_health_replacement() {
    let mut w = World::new(1, DeploymentConfig::default());
    w.checked = true;
    w.svc.health_check_grace_period_seconds = 30;
    w.converge(true);
    let t = w.live()[0].id.clone();
    w.task(&t).set_health(0, HealthStatus::Unhealthy);
    w.now = 10.0;
    let plan = w.step();
    assert!(plan.start.is_empty() && plan.stop.is_empty());
    assert_eq!(plan.requeue, Some(21.0));
    w.now = 31.5;
    assert_eq!(w.step().start.len(), 1);
}

#[test]
fn tasks_that_keep_failing_are_throttled_until_a_new_deployment() {
    let mut w = World::new(1, DeploymentConfig::default());
    let mut starts = 0;
    for i in 0..6 {
        w.now = 10.0 + i as f64 * 0.1;
        if w.step().start.is_empty() {
            break;
        }
        starts += 1;
        w.settle(true);
        let id = w.live()[0].id.clone();
        w.fail(&id);
    }
    // The first start and the replacements of two failures go at once;
    // after the third failure the next start waits.
    assert_eq!(starts, 3);
    let plan = w.step();
    assert!(plan.requeue.is_some_and(|r| r > 0.0 && r <= THROTTLE_MAX));
    assert_eq!(w.said("unable to consistently start tasks"), 1);
    // After the delay, one more start.
    w.now += plan.requeue.unwrap() + 0.01;
    assert_eq!(w.step().start.len(), 1);
    // A new deployment resets the throttle.
    w.settle(true);
    let id = w.live()[0].id.clone();
    w.fail(&id);
    assert!(w.step().start.is_empty());
    w.deploy(2);
    assert_eq!(w.step().start.len(), 1);
}

#[test]
fn the_circuit_breaker_rolls_back_to_the_last_completed_deployment() {
    let config = DeploymentConfig {
        minimum_healthy_percent: 100,
        maximum_percent: 200,
        circuit_breaker: Some(CircuitBreaker {
            enable: true,
            rollback: true,
        }),
    };
    let mut w = World::new(2, config);
    w.converge(true);
    let bad = w.deploy(2);
    // Every task of the new deployment fails as it starts.
    for _ in 0..10 {
        w.now += 100.0;
        let plan = w.step();
        if plan.start.iter().all(|s| s.deployment != bad) && w.svc.primary().unwrap().id != bad {
            break;
        }
        w.settle(true);
        let failing: Vec<String> = w
            .live()
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(bad.as_str()))
            .map(|t| t.id.clone())
            .collect();
        for id in failing {
            w.fail(&id);
        }
    }
    let failed = w.svc.deployments.iter().find(|d| d.id == bad).unwrap();
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert!(failed.failed_tasks >= circuit_breaker_threshold(2));
    assert_eq!(failed.outcome, ServiceDeploymentStatus::RollbackInProgress);
    let primary = w.svc.primary().unwrap().clone();
    assert_eq!(
        (primary.revision, primary.restores.as_deref()),
        (1, Some(bad.as_str()))
    );
    assert_eq!(w.svc.revision, 1);
    assert_eq!(w.said("rolling back to deployment"), 1);
    w.converge(true);
    assert_eq!(w.running(&primary.id), 2);
    let failed = w.svc.deployments.iter().find(|d| d.id == bad).unwrap();
    assert_eq!(failed.outcome, ServiceDeploymentStatus::RollbackSuccessful);
    // The original tasks kept running throughout (minimumHealthyPercent 100).
    assert_eq!(
        w.svc.primary().unwrap().rollout_state,
        RolloutState::Completed
    );
}

#[test]
fn tasks_that_exit_right_after_running_still_trip_the_circuit_breaker() {
    let config = DeploymentConfig {
        minimum_healthy_percent: 50,
        maximum_percent: 200,
        circuit_breaker: Some(CircuitBreaker {
            enable: true,
            rollback: true,
        }),
    };
    let mut w = World::new(2, config);
    w.converge(true);
    let bad = w.deploy(2);
    // Each pass sees the new tasks RUNNING (the old ones are stopped for
    // them, as ECS does), and they exit before they have run
    // PROVEN_AFTER: the deployment must not complete on them.
    for _ in 0..20 {
        w.step();
        if w.svc.primary().unwrap().id != bad {
            break;
        }
        assert_ne!(
            w.svc.deployments[0].rollout_state,
            RolloutState::Completed,
            "completed on tasks that had not proven themselves"
        );
        w.settle(true);
        w.step();
        w.settle(true);
        w.now += PROVEN_AFTER / 4.0;
        let failing: Vec<String> = w
            .live()
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(bad.as_str()))
            .map(|t| t.id.clone())
            .collect();
        for id in failing {
            w.fail(&id);
        }
        // Past the start throttle.
        w.now += THROTTLE_MAX;
    }
    let failed = w.svc.deployments.iter().find(|d| d.id == bad).unwrap();
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert_eq!(failed.outcome, ServiceDeploymentStatus::RollbackInProgress);
    w.converge(true);
    let primary = w.svc.primary().unwrap().clone();
    assert_eq!(primary.revision, 1);
    assert_eq!(w.running(&primary.id), 2);
    assert_eq!(primary.rollout_state, RolloutState::Completed);
}

#[test]
fn a_deleted_service_drains_then_becomes_inactive() {
    let mut w = World::new(2, DeploymentConfig::default());
    w.converge(true);
    w.svc.status = ServiceStatus::Draining;
    w.svc.desired_count = 0;
    let plan = w.step();
    assert_eq!(plan.stop.len(), 2);
    assert_eq!(w.svc.status, ServiceStatus::Draining);
    w.settle(true);
    w.step();
    assert_eq!(w.svc.status, ServiceStatus::Inactive);
    assert!(w
        .svc
        .deployments
        .iter()
        .all(|d| d.status == DeploymentStatus::Inactive));
    assert!(!reconcile(&w.svc, &w.tasks, 9.0, &mut Seq(0)).acts(&w.svc));
}

#[test]
fn an_event_about_many_tasks_names_ten_and_counts_the_rest() {
    let mut w = World::new(4000, DeploymentConfig::default());
    w.converge(true);
    w.svc.desired_count = 0;
    w.step();
    let e = &w.svc.events[0].message;
    assert!(
        e.starts_with("(service web) has stopped 4000 running tasks: (task t"),
        "{e}"
    );
    assert!(e.ends_with(" and 3990 more."), "{e}");
    assert_eq!(e.matches("(task ").count(), 10);
    assert!(e.len() < 400, "{} bytes", e.len());
}

#[test]
fn a_long_event_message_is_cut_at_a_character_boundary() {
    let mut s = service(1, DeploymentConfig::default());
    s.event("e1".into(), 1.0, "\u{e9}".repeat(5000));
    let m = &s.events[0].message;
    assert!(
        m.len() <= crate::model::service::MAX_EVENT_MESSAGE,
        "{}",
        m.len()
    );
    assert!(m.ends_with("..."));
}

#[test]
fn tasks_told_to_stop_hold_their_slot_until_they_leave_running() {
    let (mut w, new) = rolling_from_4_within_50_and_150_percent();
    // What DescribeServices counts: RUNNING tasks (stopping or not) and
    // pending ones.
    let up = |w: &World| {
        let c = crate::model::service::counts(&w.tasks, None);
        c.running + c.pending
    };
    for _ in 0..30 {
        // Reconciled twice before any worker moves: the stops written by
        // the first have not been seen yet.
        w.step();
        let plan = w.step();
        assert!(up(&w) <= 6, "at most 150% of 4 tasks up: {}", up(&w));
        if !plan.acts(&w.svc) && w.running(&new) == 4 {
            break;
        }
        w.settle(true);
    }
    w.converge(true);
    assert_eq!(w.running(&new), 4);
}
