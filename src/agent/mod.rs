//! The agent: this node's worker threads and the tasks they run.
//!
//! Each worker is an OS thread with its own single-threaded tokio runtime;
//! every task placed on a worker runs all its guest code there. The agent
//! reserves a task's cpu and memory on a worker when it is placed and
//! releases them when it stops. Workers report what happens to their tasks
//! as [`Event`]s; the [`ledger`] writes them to the store (observed state).

pub mod hostfs;
pub mod ledger;
pub mod logs;
mod task;

pub use task::{image_path, outbound_policy};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use skiff_runtime::Runtime;
use tokio::sync::mpsc;

use crate::model::task::{HealthStatus, StopCode};
use crate::model::taskdef::TaskDefinition;
use crate::scheduler::placement::{self, NoFit, WorkerLoad};

/// What a worker needs to run a task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The task id.
    pub id: String,
    /// Its cluster.
    pub cluster: String,
    /// The task definition it runs.
    pub definition: TaskDefinition,
    /// Its revision.
    pub revision: u32,
    /// The service it belongs to, if any (its HTTP container is then
    /// routed by the ingress).
    pub service: Option<String>,
    /// Per container (by name): `command` and extra `environment` from
    /// RunTask's `containerOverrides`.
    pub overrides: Vec<ContainerOverride>,
    /// The worker it was placed on.
    pub worker: usize,
    /// CPU units and MiB reserved for it.
    pub reserved: (u32, u64),
}

/// RunTask's `containerOverrides` entry, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOverride {
    /// The container it applies to.
    pub name: String,
    /// Replaces the container's `command` when set.
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the container's `environment`.
    pub environment: Vec<(String, String)>,
}

/// What happened to a task, reported by its worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The worker has the task and is loading its images.
    Pending,
    /// Its images are loaded; containers are about to start.
    Activating,
    /// Its first container started.
    Running,
    /// Container `index` started.
    ContainerRunning(usize),
    /// Container `index` stopped.
    ContainerStopped {
        /// Which container.
        index: usize,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// Why, in words, when it did not simply exit.
        reason: Option<String>,
    },
    /// Container `index`'s health changed.
    ContainerHealth {
        /// Which container.
        index: usize,
        /// Its health now.
        status: HealthStatus,
    },
    /// The task is about to stop its containers (takes no new work).
    Deactivating,
    /// The task is stopping.
    Stopping {
        /// Why.
        code: StopCode,
        /// In words.
        reason: String,
    },
    /// Its containers have stopped; its resources are being released.
    Deprovisioning,
    /// The task has stopped; its resources are released.
    Stopped {
        /// Why.
        code: StopCode,
        /// In words.
        reason: String,
    },
}

/// An event of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The task's cluster.
    pub cluster: String,
    /// The task's id.
    pub id: String,
    /// What happened.
    pub event: Event,
    /// When (seconds since the epoch).
    pub at: f64,
}

enum Command {
    Start(Box<TaskSpec>),
    Stop {
        id: String,
        code: StopCode,
        reason: String,
    },
}

struct Worker {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// This node's workers.
pub struct Agent {
    workers: Mutex<Vec<Worker>>,
    loads: Arc<Mutex<Vec<WorkerLoad>>>,
    runtimes: Vec<tokio::runtime::Handle>,
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Worker threads.
    pub workers: usize,
    /// MiB the workers may reserve for tasks, shared equally.
    pub memory_mib: u64,
    /// Where container logs go.
    pub logs_dir: PathBuf,
    /// Who the tasks are (for their environment).
    pub identity: Identity,
    /// Where tasks' images and host volumes may be.
    pub host_roots: hostfs::HostRoots,
}

/// Who the tasks of this node are, for the environment guests see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The region of task ARNs.
    pub region: String,
    /// The account of task ARNs.
    pub account: String,
}

/// Where a worker's tasks get what they need.
#[derive(Clone)]
pub(crate) struct WorkerContext {
    pub runtime: Runtime,
    pub events: std::sync::mpsc::Sender<TaskEvent>,
    pub loads: Arc<Mutex<Vec<WorkerLoad>>>,
    pub logs_dir: PathBuf,
    pub routes: Arc<crate::ingress::routes::Routes>,
    pub identity: Identity,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub host_roots: hostfs::HostRoots,
}

impl Agent {
    /// Starts the worker threads. Tasks report to `events`; tasks of
    /// services register their HTTP containers in `routes`.
    pub fn start(
        runtime: Runtime,
        config: AgentConfig,
        events: std::sync::mpsc::Sender<TaskEvent>,
        routes: Arc<crate::ingress::routes::Routes>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Agent> {
        let AgentConfig {
            workers,
            memory_mib,
            logs_dir,
            identity,
            host_roots,
        } = config;
        let workers = workers.max(1);
        let per_worker = memory_mib / workers as u64;
        let loads = Arc::new(Mutex::new(vec![WorkerLoad::new(1024, per_worker); workers]));
        let ctx = WorkerContext {
            runtime,
            events,
            loads: loads.clone(),
            logs_dir,
            routes,
            identity,
            metrics,
            host_roots,
        };
        let mut handles = Vec::with_capacity(workers);
        let mut runtimes = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            let ctx = ctx.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtimes.push(rt.handle().clone());
            let thread = std::thread::Builder::new()
                .name(format!("skiff-worker-{i}"))
                .spawn(move || worker_main(rt, ctx, rx))?;
            handles.push(Worker {
                commands: tx,
                thread: Some(thread),
            });
        }
        Ok(Agent {
            workers: Mutex::new(handles),
            loads,
            runtimes,
        })
    }

    /// Each worker's async runtime: work spawned there runs on that
    /// worker's thread (the ingress accepts and answers requests there).
    pub fn runtimes(&self) -> &[tokio::runtime::Handle] {
        &self.runtimes
    }

    /// How many workers there are.
    pub fn worker_count(&self) -> usize {
        self.lock_loads().len()
    }

    fn lock_loads(&self) -> std::sync::MutexGuard<'_, Vec<WorkerLoad>> {
        self.loads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `cpu` units and `memory` MiB on a worker (spread), or says
    /// which resource is short.
    pub fn reserve(&self, cpu: u32, memory: u64) -> Result<usize, NoFit> {
        let mut loads = self.lock_loads();
        let i = placement::spread(&loads, cpu, memory)?;
        loads[i].cpu_reserved += cpu;
        loads[i].memory_reserved += memory;
        loads[i].tasks += 1;
        Ok(i)
    }

    /// Reserves a task's `cpu` and `memory` on the worker `choose` picks
    /// from the workers' loads (it sees them as they are, under the lock).
    pub fn reserve_with<E>(
        &self,
        cpu: u32,
        memory: u64,
        choose: impl FnOnce(&[WorkerLoad]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut loads = self.lock_loads();
        let i = choose(&loads)?;
        loads[i].cpu_reserved += cpu;
        loads[i].memory_reserved += memory;
        loads[i].tasks += 1;
        Ok(i)
    }

    /// Gives back a reservation that was not used.
    pub fn release(&self, worker: usize, cpu: u32, memory: u64) {
        release(&self.loads, worker, cpu, memory);
    }

    /// Hands a placed task to its worker.
    pub fn start_task(&self, spec: TaskSpec) {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = workers.get(spec.worker) {
            let _ = w.commands.send(Command::Start(Box::new(spec)));
        }
    }

    /// Asks a task's worker to stop it.
    pub fn stop_task(&self, worker: usize, id: &str, code: StopCode, reason: &str) {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = workers.get(worker) {
            let _ = w.commands.send(Command::Stop {
                id: id.to_string(),
                code,
                reason: reason.to_string(),
            });
        }
    }

    /// Stops every task (reported as "the skiff server shut down") and
    /// joins the worker threads.
    pub fn shutdown(&self) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        // Closing the command channels tells each worker to stop its tasks
        // and return.
        let threads: Vec<JoinHandle<()>> =
            workers.iter_mut().filter_map(|w| w.thread.take()).collect();
        workers.clear();
        drop(workers);
        for t in threads {
            let _ = t.join();
        }
    }
}

pub(crate) fn release(loads: &Mutex<Vec<WorkerLoad>>, worker: usize, cpu: u32, memory: u64) {
    let mut loads = loads.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = loads.get_mut(worker) {
        l.cpu_reserved = l.cpu_reserved.saturating_sub(cpu);
        l.memory_reserved = l.memory_reserved.saturating_sub(memory);
        l.tasks = l.tasks.saturating_sub(1);
    }
}

fn worker_main(
    rt: tokio::runtime::Runtime,
    ctx: WorkerContext,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    rt.block_on(async move {
        let mut running: std::collections::HashMap<
            String,
            tokio::sync::oneshot::Sender<(StopCode, String)>,
        > = Default::default();
        let tracker = tokio_util::task::TaskTracker::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Start(spec)) => {
                        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                        running.insert(spec.id.clone(), stop_tx);
                        let ctx = ctx.clone();
                        let done = done_tx.clone();
                        tracker.spawn(async move {
                            let id = spec.id.clone();
                            task::supervise(ctx, *spec, stop_rx).await;
                            let _ = done.send(id);
                        });
                    }
                    Some(Command::Stop { id, code, reason }) => {
                        if let Some(stop) = running.remove(&id) {
                            let _ = stop.send((code, reason));
                        }
                    }
                    None => break,
                },
                Some(id) = done_rx.recv() => {
                    running.remove(&id);
                }
            }
        }
        for (_, stop) in running.drain() {
            let _ = stop.send((
                StopCode::TerminationNotice,
                "the skiff server shut down".to_string(),
            ));
        }
        tracker.close();
        tracker.wait().await;
    });
}
