//! One task on its worker: load the images, start the containers in
//! `dependsOn` order, watch them, stop the task when an essential
//! container stops or a stop is asked for, and report every step.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use skiff_runtime::{
    human_bytes, human_duration, Budget, Guest, HttpHandler, Limits, LogStream, Mount, Outcome,
    Report, RunLimits, Sandbox,
};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::{Event, TaskEvent, TaskSpec, WorkerContext};
use crate::ingress::routes::Endpoint;
use crate::model::image::ImageSource;
use crate::model::task::{HealthStatus, StopCode};
use crate::model::taskdef::{ContainerDefinition, DependencyCondition, HealthCheck};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Exited(Option<i32>),
    NeverStarted,
}

enum Done {
    Exited(usize, Report),
}

/// What a run or request used, as the metrics count it.
fn usage(r: &skiff_runtime::Report) -> crate::metrics::Usage {
    crate::metrics::Usage {
        fuel_consumed: r.fuel_consumed,
        throttled: r.throttled,
        peak_memory_bytes: r.peak_memory_bytes,
        instantiation: r.instantiation,
    }
}

/// A container's outcome as ECS shows it: an exit code, or a reason in
/// words a user can act on.
pub fn describe_outcome(
    c: &ContainerDefinition,
    outcome: &Outcome,
) -> (Option<i32>, Option<String>) {
    let name = &c.name;
    match outcome {
        Outcome::Exit(code) => (Some(*code), None),
        Outcome::MemoryLimit { limit_bytes } => (
            None,
            Some(format!(
                "OutOfMemoryError: container {name} exceeded its {} limit; raise its memory",
                human_bytes(*limit_bytes)
            )),
        ),
        Outcome::OutOfFuel { budget } => (
            None,
            Some(format!(
                "OutOfFuel: container {name} used its whole fuel budget of {budget} (skiff.max-fuel); raise it or do less work per run"
            )),
        ),
        Outcome::Timeout { limit } => (
            None,
            Some(format!(
                "Timeout: container {name} ran longer than its timeout of {} (skiff.timeout)",
                human_duration(*limit)
            )),
        ),
        Outcome::Trap { kind, .. } => (None, Some(format!("Trap: container {name} trapped: {kind}"))),
        Outcome::LoadError(e) => (
            None,
            Some(format!("CannotPullContainerError: container {name}, image {}: {e}", c.image)),
        ),
    }
}

/// The per-container limits: a container's own `memory` and `cpu` when it
/// sets them; otherwise an equal share of what the task-level amounts
/// leave after the containers that do; otherwise the worker's memory and
/// no CPU quota.
fn budgets(spec: &TaskSpec, worker_memory: u64) -> Vec<Budget> {
    let cs = &spec.definition.containers;
    let unset_mem = cs.iter().filter(|c| c.memory.is_none()).count().max(1) as u64;
    let set_mem: u64 = cs.iter().filter_map(|c| c.memory).sum();
    let unset_cpu = cs.iter().filter(|c| c.cpu == 0).count().max(1) as u32;
    let set_cpu: u32 = cs.iter().map(|c| c.cpu).sum();
    cs.iter()
        .map(|c| {
            let memory = c.memory.unwrap_or_else(|| match spec.definition.memory {
                Some(t) => t.saturating_sub(set_mem) / unset_mem,
                None => worker_memory,
            });
            let cpu = if c.cpu > 0 {
                Some(c.cpu)
            } else {
                spec.definition
                    .cpu
                    .map(|t| (t.saturating_sub(set_cpu) / unset_cpu).max(1))
            };
            Budget::new(Limits {
                memory_bytes: memory.max(1) << 20,
                cpu_units: cpu,
            })
        })
        .collect()
}

struct Task {
    ctx: WorkerContext,
    spec: TaskSpec,
}

impl Task {
    fn report(&self, event: Event) {
        // The ledger outlives the workers; a send fails only at shutdown.
        let _ = self.ctx.events.send(TaskEvent {
            cluster: self.spec.cluster.clone(),
            id: self.spec.id.clone(),
            event,
            at: crate::model::now(),
        });
    }

    /// The task's Service Connect links, when its service has a
    /// namespace with names in it (read once, as the task starts).
    async fn links(&self) -> Option<Arc<dyn skiff_runtime::ServiceLinks>> {
        let service = self.spec.service.clone()?;
        let (store, cluster) = (self.ctx.store.clone(), self.spec.cluster.clone());
        let read = tokio::task::spawn_blocking(move || {
            super::connect::names_for(store.as_ref(), &cluster, &service)
        })
        .await;
        match read {
            Ok(Ok(names)) => names.map(|names| {
                Arc::new(super::connect::Links::new(
                    names,
                    self.ctx.routes.clone(),
                    self.spec.worker,
                )) as Arc<dyn skiff_runtime::ServiceLinks>
            }),
            Ok(Err(e)) => {
                tracing::warn!(
                    task = %self.spec.id,
                    "cannot read the task's Service Connect names, so it starts without them: {e}"
                );
                None
            }
            Err(_) => None,
        }
    }

    fn sandbox(
        &self,
        i: usize,
        links: Option<Arc<dyn skiff_runtime::ServiceLinks>>,
    ) -> std::io::Result<Sandbox> {
        let c = &self.spec.definition.containers[i];
        let ov = self.spec.overrides.iter().find(|o| o.name == c.name);
        let mut args = vec![c.name.clone()];
        args.extend(c.entry_point.iter().cloned());
        match ov.and_then(|o| o.command.as_ref()) {
            Some(cmd) => args.extend(cmd.iter().cloned()),
            None => args.extend(c.command.iter().cloned()),
        }
        let spec = &self.spec;
        let id = &self.ctx.identity;
        let mut env = vec![
            ("SKIFF_CLUSTER".to_string(), spec.cluster.clone()),
            (
                "SKIFF_TASK_ARN".to_string(),
                format!(
                    "arn:aws:ecs:{}:{}:task/{}/{}",
                    id.region, id.account, spec.cluster, spec.id
                ),
            ),
            ("SKIFF_TASK_ID".to_string(), spec.id.clone()),
            (
                "SKIFF_TASK_FAMILY".to_string(),
                spec.definition.family.clone(),
            ),
            ("SKIFF_TASK_REVISION".to_string(), spec.revision.to_string()),
            ("SKIFF_CONTAINER_NAME".to_string(), c.name.clone()),
            ("AWS_REGION".to_string(), id.region.clone()),
        ];
        if let Some(service) = &spec.service {
            env.push(("SKIFF_SERVICE".to_string(), service.clone()));
        }
        let local = super::metadata::TaskEndpoints::new(
            self.ctx.store.clone(),
            crate::model::arn::Scope::new(&id.region, &id.account),
            &spec.cluster,
            &spec.id,
            i,
            &spec.definition,
        );
        env.extend(local.env());
        for (k, v) in &c.environment {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        for (k, v) in ov.map(|o| o.environment.as_slice()).unwrap_or_default() {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let mut mounts = Vec::new();
        for m in &c.mount_points {
            let host = match self
                .spec
                .definition
                .volumes
                .get(&m.source_volume)
                .cloned()
                .flatten()
            {
                Some(p) => crate::model::hostfs::confine(
                    "volume host.sourcePath",
                    Path::new(&p),
                    &self.ctx.host_roots,
                )
                .map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string())
                })?,
                // A volume without a host path is scratch space of the task.
                None => {
                    let dir = self
                        .ctx
                        .logs_dir
                        .join("..")
                        .join("volumes")
                        .join(&self.spec.id)
                        .join(&m.source_volume);
                    std::fs::create_dir_all(&dir)?;
                    dir
                }
            };
            mounts.push(Mount {
                host,
                guest: m.container_path.clone(),
                writable: !m.read_only,
            });
        }
        let logs = super::logs::sink(
            &self.ctx.logs_dir,
            &self.spec.cluster,
            &self.spec.id,
            &c.name,
        )?;
        Ok(Sandbox {
            args,
            env,
            mounts,
            logs,
            outbound: outbound_policy(&c.extensions.allowed_outbound_hosts),
            local: Some(Arc::new(local)),
            links,
        })
    }
}

/// The runtime's outbound policy for a container's rules: nothing goes out
/// when there are none.
pub fn outbound_policy(
    rules: &crate::model::outbound::OutboundRules,
) -> Arc<dyn skiff_runtime::OutboundPolicy> {
    if rules.0.is_empty() {
        return Arc::new(skiff_runtime::DenyAll);
    }
    let rules = rules.clone();
    Arc::new(move |scheme: &str, host: &str, port: u16| rules.allows(scheme, host, port))
}

/// Whether a task takes requests, by its containers' health as ECS
/// derives a task's: not if an essential container is UNHEALTHY; and, if
/// essential containers have health checks, only once all are HEALTHY.
fn routable(containers: &[ContainerDefinition], health: &[Option<HealthStatus>]) -> bool {
    let checked: Vec<HealthStatus> = containers
        .iter()
        .zip(health)
        .filter(|(c, _)| c.essential)
        .filter_map(|(_, h)| *h)
        .collect();
    checked.iter().all(|h| *h == HealthStatus::Healthy)
}

impl Task {
    /// Registers container `i` of a service's task with the ingress (the
    /// first HTTP container of the task); host ports it cannot open are
    /// said in the container's log.
    fn route(
        &self,
        i: usize,
        handler: &HttpHandler,
        sandbox: &Sandbox,
        health: &[Option<HealthStatus>],
    ) -> Option<Arc<Endpoint>> {
        let service = self.spec.service.as_ref()?;
        let c = &self.spec.definition.containers[i];
        let ep = Arc::new(Endpoint::new(
            self.spec.id.clone(),
            self.spec.worker,
            handler.clone(),
            c.extensions
                .concurrency
                .unwrap_or(crate::model::taskdef::DEFAULT_CONCURRENCY) as usize,
            sandbox.logs.clone(),
            self.service_metrics(),
        ));
        self.ctx
            .routes
            .set_routable(&ep, routable(&self.spec.definition.containers, health));
        let ports: Vec<u16> = c
            .port_mappings
            .iter()
            .filter_map(|p| p.host_port)
            .filter(|&p| p > 0)
            .collect();
        let key = (self.spec.cluster.clone(), service.clone());
        for problem in self.ctx.routes.register(key, ep.clone(), &ports) {
            sandbox.logs.line(
                LogStream::Stderr,
                std::time::SystemTime::now(),
                &format!("[skiff] {problem}"),
            );
        }
        Some(ep)
    }
}

/// Runs a task until it stops; reports every step (the ledger gives back
/// its reservation when it records it STOPPED).
pub(crate) async fn supervise(
    ctx: WorkerContext,
    spec: TaskSpec,
    mut stop: oneshot::Receiver<(StopCode, String)>,
) {
    let task = Task { ctx, spec };
    task.report(Event::Pending);
    let (code, reason, unhealthy) = run(&task, &mut stop).await;
    task.report(Event::Deprovisioning);
    let failed = unhealthy
        || matches!(
            code,
            StopCode::EssentialContainerExited | StopCode::TaskFailedToStart
        );
    task.ctx.metrics.task_stopped(
        &task.spec.cluster,
        task.spec.service.as_deref(),
        code,
        failed,
    );
    task.report(Event::Stopped { code, reason });
}

impl Task {
    /// The metrics record of the task's service (empty name for a task run
    /// alone).
    fn service_metrics(&self) -> Arc<crate::metrics::ServiceMetrics> {
        self.ctx.metrics.service(
            &self.spec.cluster,
            self.spec.service.as_deref().unwrap_or(""),
        )
    }
}

/// Runs the task's containers until it stops; returns why, and whether an
/// essential container was UNHEALTHY by then.
async fn run(
    task: &Task,
    stop: &mut oneshot::Receiver<(StopCode, String)>,
) -> (StopCode, String, bool) {
    let containers = &task.spec.definition.containers;
    let metrics = task.service_metrics();
    let n = containers.len();

    // Load every image first: a task whose images do not load does not start.
    let mut guests: Vec<Guest> = Vec::with_capacity(n);
    for (i, c) in containers.iter().enumerate() {
        let rt = task.ctx.runtime.clone();
        let loading = async {
            // A registry image is pulled here (the pull is async); a file
            // is read, or fetched from a node by digest, off the worker.
            let pulled = match ImageSource::parse(&c.image) {
                Ok(ImageSource::Oci(reference)) => {
                    let Some(registry) = task.ctx.registry.clone() else {
                        return Err("this node has no registry client".to_string());
                    };
                    let pinned = task.spec.image_digests.get(i).cloned().flatten();
                    let pulled = registry
                        .pull(
                            &reference,
                            pinned.as_deref(),
                            c.repository_credentials.as_deref(),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if pinned.as_deref() != Some(pulled.digest.as_str()) {
                        task.report(Event::ImagePulled {
                            index: i,
                            digest: pulled.digest,
                        });
                    }
                    Some(pulled.bytes)
                }
                _ => None,
            };
            let path = crate::model::image::image_path(&c.image);
            let roots = task.ctx.host_roots.clone();
            let digest = task.spec.digests.get(i).cloned().flatten();
            let blobs = task.ctx.blobs.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                if let Some(bytes) = pulled {
                    return rt.load(&bytes).map_err(|e| e.to_string());
                }
                // Not on this machine: the bytes registered, from the
                // node that holds them, by digest.
                if let (false, Some(hex), Some(blobs)) = (path.exists(), digest, blobs) {
                    let bytes = blobs.fetch(&hex).map_err(|e| {
                        format!("{} is not on this node, and fetching its module sha256:{hex} failed: {e}", path.display())
                    })?;
                    return rt.load(&bytes).map_err(|e| e.to_string());
                }
                let path = crate::model::hostfs::confine("image", &path, &roots)
                    .map_err(|e| e.to_string())?;
                rt.load_file(&path).map_err(|e| e.to_string())
            })
            .await;
            match loaded {
                Ok(r) => r,
                Err(e) => Err(format!("loading failed: {e}")),
            }
        };
        let loaded = tokio::select! {
            r = loading => r,
            s = &mut *stop => {
                let (code, reason) = s.unwrap_or((StopCode::TerminationNotice, "the skiff server shut down".into()));
                never_started(task, None, &reason);
                return (code, reason, false);
            }
        };
        let err = match loaded {
            Ok(g) => {
                guests.push(g);
                continue;
            }
            Err(e) => e,
        };
        let reason = format!(
            "CannotPullContainerError: container {}, image {}: {err}",
            c.name, c.image
        );
        task.report(Event::ContainerStopped {
            index: i,
            exit_code: None,
            reason: Some(reason.clone()),
        });
        never_started(
            task,
            Some(i),
            "another container's image could not be loaded",
        );
        return (StopCode::TaskFailedToStart, reason, false);
    }

    task.report(Event::Activating);
    let links = task.links().await;
    let worker_memory = task.ctx.worker_memory;
    let budgets = budgets(&task.spec, worker_memory);
    let index_of = |name: &str| containers.iter().position(|c| c.name == name);

    let mut states = vec![State::Waiting; n];
    let mut healthy = vec![false; n];
    let mut handlers: Vec<Option<HttpHandler>> = vec![None; n];
    let mut set: JoinSet<Done> = JoinSet::new();
    // Each container's health, when it has a check; and the task's route.
    let mut health: Vec<Option<HealthStatus>> = containers
        .iter()
        .map(|c| c.health_check.as_ref().map(|_| HealthStatus::Unknown))
        .collect();
    let mut endpoint: Option<Arc<Endpoint>> = None;
    // Each started container's log, for what skiff has to say about it.
    let mut sinks: Vec<Option<Arc<dyn skiff_runtime::LogSink>>> = vec![None; n];
    // Health monitors run until the task stops; they report changes here.
    let mut monitors: JoinSet<()> = JoinSet::new();
    let (health_tx, mut health_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, HealthStatus)>();
    let mut any_started = false;
    let mut stopped: Option<(StopCode, String)> = None;

    while stopped.is_none() {
        // Start every container whose dependencies are met; give up on
        // those whose dependencies can no longer be met.
        let mut progressed = true;
        while progressed && stopped.is_none() {
            progressed = false;
            for i in 0..n {
                if states[i] != State::Waiting {
                    continue;
                }
                match readiness(&containers[i], &states, &healthy, index_of) {
                    Readiness::Blocked => continue,
                    Readiness::Impossible(why) => {
                        states[i] = State::NeverStarted;
                        progressed = true;
                        task.report(Event::ContainerStopped {
                            index: i,
                            exit_code: None,
                            reason: Some(format!("never started: {why}")),
                        });
                        if containers[i].essential {
                            stopped = Some((
                                StopCode::TaskFailedToStart,
                                format!(
                                    "Essential container {} could not start: {why}",
                                    containers[i].name
                                ),
                            ));
                        }
                    }
                    Readiness::Ready => {
                        progressed = true;
                        let sandbox = match task.sandbox(i, links.clone()) {
                            Ok(s) => {
                                sinks[i] = Some(s.logs.clone());
                                s
                            }
                            Err(e) => {
                                states[i] = State::NeverStarted;
                                let why =
                                    format!("cannot set up container {}: {e}", containers[i].name);
                                task.report(Event::ContainerStopped {
                                    index: i,
                                    exit_code: None,
                                    reason: Some(why.clone()),
                                });
                                if containers[i].essential {
                                    stopped = Some((StopCode::TaskFailedToStart, why));
                                }
                                continue;
                            }
                        };
                        let limits = RunLimits {
                            fuel: containers[i].extensions.max_fuel,
                            timeout: containers[i].extensions.timeout,
                        };
                        let guest = guests[i].clone();
                        let budget = budgets[i].clone();
                        let rt = task.ctx.runtime.clone();
                        if guest.kind().is_command() {
                            let (g, b, s) = (guest.clone(), budget.clone(), sandbox.clone());
                            let rt2 = rt.clone();
                            set.spawn(
                                async move { Done::Exited(i, rt2.run(&g, &b, &s, limits).await) },
                            );
                        } else {
                            match HttpHandler::new(
                                &rt,
                                &guest,
                                budget.clone(),
                                sandbox.clone(),
                                limits,
                            ) {
                                Ok(h) => {
                                    let m = metrics.clone();
                                    let h =
                                        h.on_report(move |r| m.report(&usage(r))).reuse_instances(
                                            containers[i].extensions.instance_reuse.unwrap_or(1),
                                        );
                                    if endpoint.is_none() {
                                        endpoint = task.route(i, &h, &sandbox, &health);
                                    }
                                    handlers[i] = Some(h);
                                }
                                Err(e) => {
                                    let r = Report::bare(Outcome::LoadError(e));
                                    set.spawn(async move { Done::Exited(i, r) });
                                }
                            }
                        }
                        states[i] = State::Running;
                        task.report(Event::ContainerRunning(i));
                        if !any_started {
                            any_started = true;
                            task.report(Event::Running);
                            task.ctx
                                .metrics
                                .task_started(&task.spec.cluster, task.spec.service.as_deref());
                        }
                        if let Some(check) = containers[i].health_check.clone() {
                            let handler = handlers[i].clone();
                            let (g, b, mut s) = (guest, budget, sandbox);
                            s.args = vec![containers[i].name.clone()];
                            let tx = health_tx.clone();
                            monitors.spawn(async move {
                                monitor(&rt, &g, &b, s, handler, &check, |status| {
                                    let _ = tx.send((i, status));
                                })
                                .await
                            });
                        }
                    }
                }
            }
        }
        if stopped.is_some() {
            break;
        }
        if !states.iter().any(|s| matches!(s, State::Running)) {
            // Nothing runs and nothing can start (no essential container
            // is left waiting, or it would have been started or refused).
            stopped = Some((
                StopCode::EssentialContainerExited,
                "Essential container in task exited".into(),
            ));
            break;
        }
        tokio::select! {
            s = &mut *stop => {
                stopped = Some(s.unwrap_or((StopCode::TerminationNotice, "the skiff server shut down".into())));
            }
            Some(done) = set.join_next() => match done {
                Ok(Done::Exited(i, report)) => {
                    metrics.report(&usage(&report));
                    // A trap's backtrace goes to the container's log: the
                    // task's record only has room for the reason.
                    if let (Outcome::Trap { kind, backtrace }, Some(sink)) = (&report.outcome, &sinks[i]) {
                        let now = std::time::SystemTime::now();
                        sink.line(LogStream::Stderr, now, &format!("[skiff] container {} trapped: {kind}", containers[i].name));
                        for l in backtrace.lines() {
                            sink.line(LogStream::Stderr, now, l);
                        }
                    }
                    let (exit_code, reason) = describe_outcome(&containers[i], &report.outcome);
                    states[i] = State::Exited(exit_code);
                    task.report(Event::ContainerStopped { index: i, exit_code, reason });
                    if containers[i].essential {
                        stopped = Some((StopCode::EssentialContainerExited, "Essential container in task exited".into()));
                    }
                }
                // Aborted or panicked: the container is reported stopped below.
                Err(_) => {}
            },
            Some((i, status)) = health_rx.recv() => {
                // HEALTHY once is enough for a dependency to start.
                healthy[i] |= status == HealthStatus::Healthy;
                health[i] = Some(status);
                if let Some(ep) = &endpoint {
                    task.ctx.routes.set_routable(ep, routable(containers, &health));
                }
                task.report(Event::ContainerHealth { index: i, status });
            }
        }
    }
    let (code, reason) = stopped.unwrap_or((
        StopCode::EssentialContainerExited,
        "Essential container in task exited".into(),
    ));
    // Take no new requests, then say so.
    if let (Some(service), Some(_)) = (&task.spec.service, &endpoint) {
        task.ctx
            .routes
            .deregister(&(task.spec.cluster.clone(), service.clone()), &task.spec.id);
    }
    drop(endpoint);
    task.report(Event::Deactivating);
    task.report(Event::Stopping {
        code,
        reason: reason.clone(),
    });
    monitors.abort_all();
    while monitors.join_next().await.is_some() {}
    // Drain: an HTTP container takes no new requests now (the task is not
    // RUNNING); let the ones in flight finish, up to its stopTimeout.
    drain(containers, &handlers).await;
    // Stop what still runs. A guest cannot catch a signal, so there is
    // nothing to wait for: its instance is dropped.
    set.abort_all();
    while set.join_next().await.is_some() {}
    drop(handlers);
    for (i, s) in states.iter().enumerate() {
        match s {
            State::Running => task.report(Event::ContainerStopped {
                index: i,
                exit_code: None,
                reason: Some(format!("stopped: {reason}")),
            }),
            State::Waiting => task.report(Event::ContainerStopped {
                index: i,
                exit_code: None,
                reason: Some(format!("never started: {reason}")),
            }),
            _ => {}
        }
    }
    let unhealthy = containers
        .iter()
        .zip(&health)
        .any(|(c, h)| c.essential && *h == Some(HealthStatus::Unhealthy));
    (code, reason, unhealthy)
}

/// Reports every container (but `except`) as never started.
fn never_started(task: &Task, except: Option<usize>, why: &str) {
    for i in (0..task.spec.definition.containers.len()).filter(|&i| Some(i) != except) {
        task.report(Event::ContainerStopped {
            index: i,
            exit_code: None,
            reason: Some(format!("never started: {why}")),
        });
    }
}

enum Readiness {
    Ready,
    Blocked,
    Impossible(String),
}

fn readiness(
    c: &ContainerDefinition,
    states: &[State],
    healthy: &[bool],
    index_of: impl Fn(&str) -> Option<usize>,
) -> Readiness {
    for d in &c.depends_on {
        let Some(j) = index_of(&d.container) else {
            return Readiness::Impossible(format!("unknown dependency {}", d.container));
        };
        let name = &d.container;
        let r = match (d.condition, states[j]) {
            (_, State::NeverStarted) => {
                Readiness::Impossible(format!("dependency {name} never started"))
            }
            (DependencyCondition::Start, State::Running | State::Exited(_)) => Readiness::Ready,
            (DependencyCondition::Complete, State::Exited(_)) => Readiness::Ready,
            (DependencyCondition::Success, State::Exited(Some(0))) => Readiness::Ready,
            (DependencyCondition::Success, State::Exited(code)) => {
                Readiness::Impossible(match code {
                    Some(c) => format!("dependency {name} exited with code {c}; SUCCESS needs 0"),
                    None => format!(
                        "dependency {name} stopped without exiting; SUCCESS needs exit code 0"
                    ),
                })
            }
            (DependencyCondition::Healthy, _) if healthy[j] => Readiness::Ready,
            (DependencyCondition::Healthy, State::Exited(_)) => {
                Readiness::Impossible(format!("dependency {name} stopped before it was HEALTHY"))
            }
            _ => Readiness::Blocked,
        };
        if !matches!(r, Readiness::Ready) {
            return r;
        }
    }
    Readiness::Ready
}

/// The default `stopTimeout`: how long a stopping HTTP container may
/// finish the requests it has.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until no HTTP container has a request in flight, each for at most
/// its `stopTimeout`.
async fn drain(containers: &[ContainerDefinition], handlers: &[Option<HttpHandler>]) {
    let start = tokio::time::Instant::now();
    for (c, h) in containers.iter().zip(handlers) {
        let Some(h) = h else { continue };
        let limit = c
            .stop_timeout
            .map_or(STOP_TIMEOUT, |s| Duration::from_secs(s as u64));
        let mut poll = Duration::from_millis(1);
        while h.in_flight() > 0 && start.elapsed() < limit {
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(50));
        }
    }
}

/// Runs one health check. `["CMD", "GET /path"]` asks an HTTP container
/// for the path (2xx passes); `["CMD", args...]` runs a fresh instance of
/// a command container's image with those arguments (exit 0 passes).
async fn check_once(
    rt: &skiff_runtime::Runtime,
    guest: &Guest,
    budget: &Budget,
    sandbox: &mut Sandbox,
    handler: Option<&HttpHandler>,
    args: &[String],
    timeout: Duration,
) -> bool {
    let joined = args.join(" ");
    match (handler, joined.strip_prefix("GET ")) {
        (Some(h), Some(path)) => {
            let req = hyper::Request::builder()
                .uri(format!("http://localhost{}", path.trim()))
                .body(http_body_util::Empty::<bytes::Bytes>::new());
            match req {
                Ok(req) => matches!(
                    tokio::time::timeout(timeout, h.handle(req)).await,
                    Ok(Ok(resp)) if resp.status().is_success()
                ),
                Err(_) => false,
            }
        }
        (None, _) => {
            sandbox.args.truncate(1);
            sandbox.args.extend(args.iter().cloned());
            let limits = RunLimits {
                fuel: None,
                timeout: Some(timeout),
            };
            rt.run(guest, budget, sandbox, limits).await.outcome == Outcome::Exit(0)
        }
        _ => false,
    }
}

/// A container's health as ECS derives it from its checks: HEALTHY after a
/// pass; UNHEALTHY after `retries` failures in a row, where failures in the
/// start period do not count. The first check runs at once, then one every
/// `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthTracker {
    status: HealthStatus,
    failures: u32,
    retries: u32,
}

impl HealthTracker {
    pub(crate) fn new(retries: u32) -> Self {
        HealthTracker {
            status: HealthStatus::Unknown,
            failures: 0,
            retries: retries.max(1),
        }
    }

    /// Records a check; returns the new status when it changed.
    pub(crate) fn record(&mut self, passed: bool, in_start_period: bool) -> Option<HealthStatus> {
        let next = if passed {
            self.failures = 0;
            HealthStatus::Healthy
        } else if in_start_period {
            self.status
        } else {
            self.failures += 1;
            if self.failures >= self.retries {
                HealthStatus::Unhealthy
            } else {
                self.status
            }
        };
        (next != self.status).then(|| {
            self.status = next;
            next
        })
    }
}

/// Checks a container's health for as long as it runs, calling `report`
/// whenever its health changes.
async fn monitor(
    rt: &skiff_runtime::Runtime,
    guest: &Guest,
    budget: &Budget,
    mut sandbox: Sandbox,
    handler: Option<HttpHandler>,
    check: &HealthCheck,
    report: impl Fn(HealthStatus),
) {
    let args: Vec<String> = check.command.iter().skip(1).cloned().collect();
    let timeout = Duration::from_secs(check.timeout as u64);
    let interval = Duration::from_secs(check.interval as u64);
    let start_period = Duration::from_secs(check.start_period as u64);
    let started = tokio::time::Instant::now();
    let mut tracker = HealthTracker::new(check.retries);
    loop {
        let at = tokio::time::Instant::now();
        let passed = check_once(
            rt,
            guest,
            budget,
            &mut sandbox,
            handler.as_ref(),
            &args,
            timeout,
        )
        .await;
        if let Some(status) = tracker.record(passed, started.elapsed() < start_period) {
            report(status);
        }
        tokio::time::sleep_until(at + interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_ecs_rules() {
        let mut h = HealthTracker::new(2);
        // Failures in the start period do not count.
        assert_eq!(h.record(false, true), None);
        assert_eq!(h.record(false, true), None);
        // A pass, even in the start period, is HEALTHY.
        assert_eq!(h.record(true, true), Some(HealthStatus::Healthy));
        // One failure is not enough with retries = 2.
        assert_eq!(h.record(false, false), None);
        assert_eq!(h.record(false, false), Some(HealthStatus::Unhealthy));
        assert_eq!(h.record(false, false), None);
        assert_eq!(h.record(true, false), Some(HealthStatus::Healthy));
        // A pass resets the count.
        assert_eq!(h.record(false, false), None);
        assert_eq!(h.record(true, false), None);
        assert_eq!(h.record(false, false), None);
        let mut fresh = HealthTracker::new(1);
        assert_eq!(fresh.record(false, false), Some(HealthStatus::Unhealthy));
    }
}
