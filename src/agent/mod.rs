//! The agent: this node's worker threads and the tasks they run.
//!
//! Each worker is an OS thread with its own single-threaded tokio runtime;
//! every task placed on a worker runs all its guest code there. The agent
//! reads its work from the store, as a kubelet does: it watches the task
//! records ([`watch`]), starts each one assigned to it that is still
//! PROVISIONING with desiredStatus RUNNING, and stops what it runs once
//! desiredStatus is STOPPED; it relists on start and whenever it may have
//! missed changes. Nothing calls it to start or stop a task: RunTask,
//! StopTask and the scheduler only write the store. Workers report what
//! happens to their tasks as [`Event`]s; the [`ledger`] writes them to the
//! store (observed state), and gives back a stopped task's reservation.

pub(crate) mod connect;
mod depends;
pub mod ledger;
pub mod logs;
mod metadata;
pub(crate) mod task;
mod watch;

pub use crate::model::overrides::{container_overrides, ContainerOverride};
pub use crate::model::task::Event;
pub use task::outbound_policy;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use skiff_runtime::Runtime;
use tokio::sync::mpsc;

use crate::model::task::StopCode;
use crate::model::taskdef::TaskDefinition;
use crate::store::Store;

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
    /// Per container: the SHA-256 (hex) of its image as registered, to
    /// fetch from another node when the path is not on this machine.
    pub digests: Vec<Option<String>>,
    /// Per container: the manifest digest of its registry image, when the
    /// task was made with one (its deployment resolved the tag).
    pub image_digests: Vec<Option<String>>,
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

/// This node's workers, and the watch that gives them their tasks.
pub struct Agent {
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    runtimes: Vec<tokio::runtime::Handle>,
    watch: Mutex<Option<(JoinHandle<()>, tokio_util::sync::CancellationToken)>>,
    /// Tells every worker to stop all its tasks, with the reason.
    fence: tokio::sync::watch::Sender<Option<String>>,
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
    pub host_roots: crate::model::hostfs::HostRoots,
    /// This node's id: the agent runs the tasks placed on it.
    pub node: String,
    /// Module bytes by digest, for images not on this machine.
    pub blobs: Option<Arc<crate::images::blobs::Blobs>>,
    /// Registries, for images named by OCI reference (`None`: such an
    /// image cannot be pulled here).
    pub registry: Option<Arc<crate::images::Registry>>,
    /// A hollow node (`skiff server --hollow`, a test tool): it takes
    /// placements and reports its tasks as a real one does, but runs no
    /// guest.
    pub hollow: bool,
}

impl AgentConfig {
    /// What each worker has: CPU units (one thread) and MiB.
    pub fn worker_capacity(&self) -> Vec<(u32, u64)> {
        let workers = self.workers.max(1);
        vec![(1024, self.memory_mib / workers as u64); workers]
    }
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
    /// MiB the worker may hand out (a task without a memory limit gets
    /// this as its cap).
    pub worker_memory: u64,
    pub logs_dir: PathBuf,
    pub routes: Arc<crate::ingress::routes::Routes>,
    pub identity: Identity,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub host_roots: crate::model::hostfs::HostRoots,
    pub blobs: Option<Arc<crate::images::blobs::Blobs>>,
    pub registry: Option<Arc<crate::images::Registry>>,
    /// The store, for the tasks' own endpoints (task metadata, scale-in
    /// protection).
    pub store: Arc<dyn Store>,
    /// Tasks starting at once on this node (loading their images and
    /// setting up their containers): a node handed thousands of tasks
    /// takes them [`STARTS_PER_WORKER`] a worker at a time, in order,
    /// instead of all at once with a blocking thread and buffers each.
    pub starting: Arc<tokio::sync::Semaphore>,
    /// Tasks are reported, not run (`AgentConfig::hollow`).
    pub hollow: bool,
}

/// How many tasks a worker sets up at once.
pub const STARTS_PER_WORKER: usize = 8;

impl Agent {
    /// Starts the worker threads and the watch that starts and stops
    /// their tasks from the store. Tasks report to `events`; tasks of
    /// services register their HTTP containers in `routes`.
    pub fn start(
        runtime: Runtime,
        config: AgentConfig,
        store: Arc<dyn Store>,
        events: std::sync::mpsc::Sender<TaskEvent>,
        routes: Arc<crate::ingress::routes::Routes>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Agent> {
        let capacity = config.worker_capacity();
        let AgentConfig {
            logs_dir,
            identity,
            host_roots,
            node,
            blobs,
            registry,
            hollow,
            ..
        } = config;
        let ctx = WorkerContext {
            hollow,
            starting: Arc::new(tokio::sync::Semaphore::new(
                STARTS_PER_WORKER * capacity.len().max(1),
            )),
            runtime,
            events: events.clone(),
            worker_memory: capacity[0].1,
            logs_dir,
            routes,
            identity,
            metrics,
            host_roots,
            blobs,
            registry,
            store: store.clone(),
        };
        let (fence, fenced) = tokio::sync::watch::channel(None);
        let mut threads = Vec::with_capacity(capacity.len());
        let mut senders = Vec::with_capacity(capacity.len());
        let mut runtimes = Vec::with_capacity(capacity.len());
        for i in 0..capacity.len() {
            let (tx, rx) = mpsc::unbounded_channel();
            let ctx = ctx.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtimes.push(rt.handle().clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("skiff-worker-{i}"))
                    .spawn({
                        let fenced = fenced.clone();
                        move || worker_main(rt, ctx, rx, fenced)
                    })?,
            );
            senders.push(tx);
        }
        let stop_watching = tokio_util::sync::CancellationToken::new();
        let watch = watch::spawn(store, node, senders, events, stop_watching.clone())?;
        Ok(Agent {
            workers: Mutex::new(threads),
            runtimes,
            watch: Mutex::new(Some((watch, stop_watching))),
            fence,
        })
    }

    /// Stops every task of this node now (TerminationNotice, `reason`):
    /// the node lost its lease while cut off from the store, so the leader
    /// takes its tasks for lost and replaces them elsewhere; they must not
    /// run on beside their replacements. The workers stay, for what the
    /// store gives this node later.
    pub fn fence(&self, reason: String) {
        let _ = self.fence.send(Some(reason));
    }

    /// Each worker's async runtime: work spawned there runs on that
    /// worker's thread (the ingress accepts and answers requests there).
    pub fn runtimes(&self) -> &[tokio::runtime::Handle] {
        &self.runtimes
    }

    /// Stops watching the store, then stops every task (reported as "the
    /// skiff server shut down") and joins the worker threads.
    pub fn shutdown(&self) {
        // The watch holds the workers' command channels; when it is gone
        // they close, which tells each worker to stop its tasks and
        // return.
        let watch = self.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((thread, stop)) = watch {
            stop.cancel();
            let _ = thread.join();
        }
        let threads: Vec<JoinHandle<()>> = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn worker_main(
    rt: tokio::runtime::Runtime,
    ctx: WorkerContext,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut fenced: tokio::sync::watch::Receiver<Option<String>>,
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
                Ok(()) = fenced.changed() => {
                    let reason = fenced.borrow_and_update().clone();
                    if let Some(reason) = reason {
                        for (_, stop) in running.drain() {
                            let _ = stop.send((StopCode::TerminationNotice, reason.clone()));
                        }
                    }
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
