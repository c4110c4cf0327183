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

use super::depends::{Dependencies, State, Step};
use super::{Event, TaskEvent, TaskSpec, WorkerContext};
use crate::ingress::routes::Endpoint;
use crate::model::image::ImageSource;
use crate::model::task::{HealthStatus, StopCode};
use crate::model::taskdef::{ContainerDefinition, HealthCheck};

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

    /// A container's mount point: the volume's host path (confined to the
    /// node's allowed roots), or the task's own scratch directory for a
    /// volume without one.
    fn mount(&self, m: &crate::model::taskdef::MountPoint) -> std::io::Result<Mount> {
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
        Ok(Mount {
            host,
            guest: m.container_path.clone(),
            writable: !m.read_only,
        })
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
        let mounts = c
            .mount_points
            .iter()
            .map(|m| self.mount(m))
            .collect::<std::io::Result<Vec<Mount>>>()?;
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
    if task.ctx.hollow {
        return hollow(task, stop).await;
    }
    // Its turn to start (a stop meanwhile ends it unstarted).
    let starting = tokio::select! {
        p = task.ctx.starting.clone().acquire_owned() => p.ok(),
        s = &mut *stop => {
            let (code, reason) = s.unwrap_or((StopCode::TerminationNotice, "the skiff server shut down".into()));
            never_started(task, None, &reason);
            return (code, reason, false);
        }
    };
    let guests = match load_images(task, stop).await {
        Ok(guests) => guests,
        Err(stopped) => return stopped,
    };
    task.report(Event::Activating);
    let mut s = Supervisor::new(task, guests).await;
    drop(starting);
    let (code, reason) = s.supervise(stop).await;
    s.wind_down(code, reason).await
}

/// A hollow node's task: reported as a task that runs is (its
/// containers RUNNING, and HEALTHY where they have a health check), until
/// it is told to stop; no image is loaded and no guest runs.
async fn hollow(
    task: &Task,
    stop: &mut oneshot::Receiver<(StopCode, String)>,
) -> (StopCode, String, bool) {
    task.report(Event::Activating);
    let containers = &task.spec.definition.containers;
    for (i, c) in containers.iter().enumerate() {
        task.report(Event::ContainerRunning(i));
        if c.health_check.is_some() {
            task.report(Event::ContainerHealth {
                index: i,
                status: HealthStatus::Healthy,
            });
        }
    }
    task.report(Event::Running);
    let (code, reason) = (&mut *stop).await.unwrap_or((
        StopCode::TerminationNotice,
        "the skiff server shut down".into(),
    ));
    task.report(Event::Deactivating);
    task.report(Event::Stopping {
        code,
        reason: reason.clone(),
    });
    for i in 0..containers.len() {
        task.report(Event::ContainerStopped {
            index: i,
            exit_code: None,
            reason: Some(format!("stopped: {reason}")),
        });
    }
    (code, reason, false)
}

/// The task stopped before it started: why, and that no essential
/// container was UNHEALTHY.
type NotStarted = (StopCode, String, bool);

/// Loads every container's image (pulled from its registry, read from
/// its file, or fetched by digest from a node that holds it): a task
/// whose images do not load does not start. A stop asked for meanwhile
/// ends it.
async fn load_images(
    task: &Task,
    stop: &mut oneshot::Receiver<(StopCode, String)>,
) -> Result<Vec<Guest>, NotStarted> {
    let containers = &task.spec.definition.containers;
    let mut guests: Vec<Guest> = Vec::with_capacity(containers.len());
    for (i, c) in containers.iter().enumerate() {
        let loaded = tokio::select! {
            r = load_image(task, i) => r,
            s = &mut *stop => {
                let (code, reason) = s.unwrap_or((StopCode::TerminationNotice, "the skiff server shut down".into()));
                never_started(task, None, &reason);
                return Err((code, reason, false));
            }
        };
        match loaded {
            Ok(g) => guests.push(g),
            Err(err) => {
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
                return Err((StopCode::TaskFailedToStart, reason, false));
            }
        }
    }
    Ok(guests)
}

/// Loads container `i`'s image. A registry image is pulled here (the pull
/// is async, and a digest pulled for a tag is reported); a file is read,
/// or fetched from a node by digest, off the worker.
async fn load_image(task: &Task, i: usize) -> Result<Guest, String> {
    let c = &task.spec.definition.containers[i];
    let rt = task.ctx.runtime.clone();
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
        // Not on this machine: the bytes registered, from the node that
        // holds them, by digest.
        if let (false, Some(hex), Some(blobs)) = (path.exists(), digest, blobs) {
            let bytes = blobs.fetch(&hex).map_err(|e| {
                format!(
                    "{} is not on this node, and fetching its module sha256:{hex} failed: {e}",
                    path.display()
                )
            })?;
            return rt.load(&bytes).map_err(|e| e.to_string());
        }
        let path =
            crate::model::hostfs::confine("image", &path, &roots).map_err(|e| e.to_string())?;
        rt.load_file(&path).map_err(|e| e.to_string())
    })
    .await;
    match loaded {
        Ok(r) => r,
        Err(e) => Err(format!("loading failed: {e}")),
    }
}

/// A started task's containers as they run: the `dependsOn` state machine,
/// the command runs and HTTP handlers, their health and their logs, and
/// the task's route.
struct Supervisor<'t> {
    task: &'t Task,
    containers: &'t [ContainerDefinition],
    guests: Vec<Guest>,
    budgets: Vec<Budget>,
    links: Option<Arc<dyn skiff_runtime::ServiceLinks>>,
    metrics: Arc<crate::metrics::ServiceMetrics>,
    deps: Dependencies,
    handlers: Vec<Option<HttpHandler>>,
    /// Command runs (and HTTP containers that failed to load), until they end.
    runs: JoinSet<Done>,
    /// Each container's health, when it has a check.
    health: Vec<Option<HealthStatus>>,
    /// The task's route, once its HTTP container serves.
    endpoint: Option<Arc<Endpoint>>,
    /// Each started container's log, for what skiff has to say about it.
    sinks: Vec<Option<Arc<dyn skiff_runtime::LogSink>>>,
    /// Health monitors: they run until the task stops and report changes.
    monitors: JoinSet<()>,
    health_tx: tokio::sync::mpsc::UnboundedSender<(usize, HealthStatus)>,
    health_rx: tokio::sync::mpsc::UnboundedReceiver<(usize, HealthStatus)>,
    any_started: bool,
}

impl<'t> Supervisor<'t> {
    async fn new(task: &'t Task, guests: Vec<Guest>) -> Supervisor<'t> {
        let containers = &task.spec.definition.containers[..];
        let n = containers.len();
        let (health_tx, health_rx) = tokio::sync::mpsc::unbounded_channel();
        Supervisor {
            task,
            containers,
            guests,
            budgets: budgets(&task.spec, task.ctx.worker_memory),
            links: task.links().await,
            metrics: task.service_metrics(),
            deps: Dependencies::new(containers),
            handlers: vec![None; n],
            runs: JoinSet::new(),
            health: containers
                .iter()
                .map(|c| c.health_check.as_ref().map(|_| HealthStatus::Unknown))
                .collect(),
            endpoint: None,
            sinks: vec![None; n],
            monitors: JoinSet::new(),
            health_tx,
            health_rx,
            any_started: false,
        }
    }

    /// Starts containers as their dependencies allow and follows them
    /// until the task is to stop: a stop asked for, an essential
    /// container that exited or could not start, or nothing left running.
    async fn supervise(
        &mut self,
        stop: &mut oneshot::Receiver<(StopCode, String)>,
    ) -> (StopCode, String) {
        loop {
            if let Some(stopped) = self.start_due() {
                return stopped;
            }
            if !self.deps.any_running() {
                // Nothing runs and nothing can start (no essential container
                // is left waiting, or it would have been started or refused).
                return (
                    StopCode::EssentialContainerExited,
                    "Essential container in task exited".into(),
                );
            }
            tokio::select! {
                s = &mut *stop => {
                    return s.unwrap_or((StopCode::TerminationNotice, "the skiff server shut down".into()));
                }
                Some(done) = self.runs.join_next() => {
                    // Aborted or panicked: the container is reported stopped
                    // when the task winds down.
                    if let Ok(Done::Exited(i, report)) = done {
                        if let Some(stopped) = self.exited(i, report) {
                            return stopped;
                        }
                    }
                }
                Some((i, status)) = self.health_rx.recv() => self.health_changed(i, status),
            }
        }
    }

    /// Starts every container whose dependencies are met, and gives up on
    /// those whose dependencies can no longer be; why the task stops, when
    /// an essential one cannot start.
    fn start_due(&mut self) -> Option<(StopCode, String)> {
        while let Some(step) = self.deps.next() {
            let (i, why) = match step {
                Step::Refuse(i, why) => {
                    let reason = format!("never started: {why}");
                    let why = format!(
                        "Essential container {} could not start: {why}",
                        self.containers[i].name
                    );
                    self.task.report(Event::ContainerStopped {
                        index: i,
                        exit_code: None,
                        reason: Some(reason),
                    });
                    (i, why)
                }
                Step::Start(i) => match self.start(i) {
                    Ok(()) => continue,
                    Err(why) => {
                        self.deps.failed_to_start(i);
                        self.task.report(Event::ContainerStopped {
                            index: i,
                            exit_code: None,
                            reason: Some(why.clone()),
                        });
                        (i, why)
                    }
                },
            };
            if self.containers[i].essential {
                return Some((StopCode::TaskFailedToStart, why));
            }
        }
        None
    }

    /// Starts container `i`: a command runs to completion; an HTTP
    /// component serves (the task's route, for a service's task); a health
    /// check starts watching it. The error says why it cannot be set up.
    fn start(&mut self, i: usize) -> Result<(), String> {
        let c = &self.containers[i];
        let sandbox = self
            .task
            .sandbox(i, self.links.clone())
            .map_err(|e| format!("cannot set up container {}: {e}", c.name))?;
        self.sinks[i] = Some(sandbox.logs.clone());
        let limits = RunLimits {
            fuel: c.extensions.max_fuel,
            timeout: c.extensions.timeout,
        };
        let (guest, budget) = (self.guests[i].clone(), self.budgets[i].clone());
        let rt = self.task.ctx.runtime.clone();
        if guest.kind().is_command() {
            let (g, b, s, rt) = (guest.clone(), budget.clone(), sandbox.clone(), rt.clone());
            self.runs
                .spawn(async move { Done::Exited(i, rt.run(&g, &b, &s, limits).await) });
        } else {
            match HttpHandler::new(&rt, &guest, budget.clone(), sandbox.clone(), limits) {
                Ok(h) => {
                    let m = self.metrics.clone();
                    let h = h
                        .on_report(move |r| m.report(&usage(r)))
                        .reuse_instances(c.extensions.instance_reuse.unwrap_or(1));
                    if self.endpoint.is_none() {
                        self.endpoint = self.task.route(i, &h, &sandbox, &self.health);
                    }
                    self.handlers[i] = Some(h);
                }
                Err(e) => {
                    let r = Report::bare(Outcome::LoadError(e));
                    self.runs.spawn(async move { Done::Exited(i, r) });
                }
            }
        }
        self.task.report(Event::ContainerRunning(i));
        if !self.any_started {
            self.any_started = true;
            self.task.report(Event::Running);
            self.task
                .ctx
                .metrics
                .task_started(&self.task.spec.cluster, self.task.spec.service.as_deref());
        }
        if let Some(check) = c.health_check.clone() {
            let handler = self.handlers[i].clone();
            let (g, b, mut s) = (guest, budget, sandbox);
            s.args = vec![c.name.clone()];
            let tx = self.health_tx.clone();
            self.monitors.spawn(async move {
                monitor(&rt, &g, &b, s, handler, &check, |status| {
                    let _ = tx.send((i, status));
                })
                .await
            });
        }
        Ok(())
    }

    /// Container `i` exited: its outcome is reported (a trap's backtrace
    /// to its log, where there is room for it); why the task stops, when
    /// it was essential.
    fn exited(&mut self, i: usize, report: Report) -> Option<(StopCode, String)> {
        let c = &self.containers[i];
        self.metrics.report(&usage(&report));
        if let (Outcome::Trap { kind, backtrace }, Some(sink)) = (&report.outcome, &self.sinks[i]) {
            let now = std::time::SystemTime::now();
            sink.line(
                LogStream::Stderr,
                now,
                &format!("[skiff] container {} trapped: {kind}", c.name),
            );
            for l in backtrace.lines() {
                sink.line(LogStream::Stderr, now, l);
            }
        }
        let (exit_code, reason) = describe_outcome(c, &report.outcome);
        self.deps.exited(i, exit_code);
        self.task.report(Event::ContainerStopped {
            index: i,
            exit_code,
            reason,
        });
        c.essential.then(|| {
            (
                StopCode::EssentialContainerExited,
                "Essential container in task exited".into(),
            )
        })
    }

    /// Container `i`'s health changed: HEALTHY once is enough for a
    /// dependency to start; the task takes requests only while its
    /// essential containers are not UNHEALTHY.
    fn health_changed(&mut self, i: usize, status: HealthStatus) {
        if status == HealthStatus::Healthy {
            self.deps.healthy(i);
        }
        self.health[i] = Some(status);
        if let Some(ep) = &self.endpoint {
            self.task
                .ctx
                .routes
                .set_routable(ep, routable(self.containers, &self.health));
        }
        self.task
            .report(Event::ContainerHealth { index: i, status });
    }

    /// Stops the task: it takes no new requests, those in flight finish
    /// (up to each container's stopTimeout), then what still runs is
    /// dropped and reported. Returns why, and whether an essential
    /// container was UNHEALTHY.
    async fn wind_down(mut self, code: StopCode, reason: String) -> (StopCode, String, bool) {
        let task = self.task;
        if let (Some(service), Some(_)) = (&task.spec.service, &self.endpoint) {
            task.ctx
                .routes
                .deregister(&(task.spec.cluster.clone(), service.clone()), &task.spec.id);
        }
        self.endpoint = None;
        task.report(Event::Deactivating);
        task.report(Event::Stopping {
            code,
            reason: reason.clone(),
        });
        self.monitors.abort_all();
        while self.monitors.join_next().await.is_some() {}
        // An HTTP container takes no new requests now (the task is not
        // RUNNING); the ones in flight finish, up to its stopTimeout.
        drain(self.containers, &self.handlers).await;
        // A guest cannot catch a signal, so there is nothing to wait for:
        // its instance is dropped.
        self.runs.abort_all();
        while self.runs.join_next().await.is_some() {}
        self.handlers.clear();
        for (i, s) in self.deps.states().iter().enumerate() {
            let reason = match s {
                State::Running => format!("stopped: {reason}"),
                State::Waiting => format!("never started: {reason}"),
                _ => continue,
            };
            task.report(Event::ContainerStopped {
                index: i,
                exit_code: None,
                reason: Some(reason),
            });
        }
        let unhealthy = self
            .containers
            .iter()
            .zip(&self.health)
            .any(|(c, h)| c.essential && *h == Some(HealthStatus::Unhealthy));
        (code, reason, unhealthy)
    }
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
