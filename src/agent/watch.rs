//! The agent's watch: reads the tasks assigned to this node from the store
//! and makes the workers match them, level-triggered.
//!
//! For every task record of this node it sees (each change from a
//! [`Watch`] of `tasks/`, and a full relisting at start, every [`RELIST`],
//! and when the store's history was compacted past the watch):
//!
//! - PROVISIONING with desiredStatus RUNNING, not yet started here: build
//!   its spec from the stored task definition and hand it to its worker;
//! - desiredStatus STOPPED and started here: tell its worker to stop it
//!   (once), with the stop code and reason the record carries;
//! - desiredStatus STOPPED and never started: report it STOPPED at once
//!   (the ledger records it and gives back its reservation);
//! - STOPPED and started here, never told to stop: stop it (the leader
//!   recorded it STOPPED while this node was taken for lost), then forget
//!   it;
//! - STOPPED or gone: forget it.
//!
//! A task is started only from PROVISIONING, so a record that moved on
//! (its worker already reports on it) is never started twice, whatever
//! order changes arrive in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::{Command, Event, TaskEvent, TaskSpec};
use crate::model::definitions::DefinitionRecord;
use crate::model::task::{DesiredStatus, StopCode, TaskRecord, TaskStatus};
use crate::model::taskdef::TaskDefinition;
use crate::store::{Revision, Store, StoreError};

/// How often every task record is read again even without a change.
pub const RELIST: Duration = Duration::from_secs(10);

/// Starts the watch thread; it returns when `stop` is cancelled, dropping
/// the workers' command channels.
pub(super) fn spawn(
    store: Arc<dyn Store>,
    node: String,
    workers: Vec<UnboundedSender<Command>>,
    events: std::sync::mpsc::Sender<TaskEvent>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    crate::threads::spawn("skiff-agent", move || async move {
        let mut w = Watcher {
            store,
            node,
            workers,
            events,
            started: HashSet::new(),
            stopped: HashSet::new(),
            definitions: HashMap::new(),
        };
        w.run(stop).await
    })
}

/// A stored task definition: parsed, and its images' digests.
type Definition = (TaskDefinition, Vec<Option<String>>);

/// The watch's state.
struct Watcher {
    store: Arc<dyn Store>,
    /// This node: only its tasks are looked at.
    node: String,
    workers: Vec<UnboundedSender<Command>>,
    events: std::sync::mpsc::Sender<TaskEvent>,
    /// Tasks handed to a worker here, until their records say STOPPED.
    started: HashSet<String>,
    /// Tasks told to stop (or reported stopped) here.
    stopped: HashSet<String>,
    /// Parsed task definitions (they never change once registered), with
    /// their images' digests.
    definitions: HashMap<(String, u32), Definition>,
}

impl Watcher {
    async fn run(&mut self, stop: CancellationToken) {
        let from = self.relist();
        let mut watch = self.store.watch("tasks/", from);
        let mut relist = tokio::time::Instant::now() + RELIST;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(relist) => {
                    self.relist();
                    relist = tokio::time::Instant::now() + RELIST;
                }
                change = watch.next() => match change {
                    Ok(c) => self.sync_key(&c.key),
                    Err(StoreError::Compacted(_)) => {
                        let from = self.relist();
                        watch = self.store.watch("tasks/", from);
                    }
                    Err(e) => {
                        tracing::error!("the agent's watch of the store failed: {e}; relisting in 1s");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        let from = self.relist();
                        watch = self.store.watch("tasks/", from);
                    }
                },
            }
        }
    }

    /// Reads every task record and acts on it; returns the revision to
    /// watch from (read before the listing, so that nothing falls
    /// between; a change seen twice is harmless).
    fn relist(&mut self) -> Revision {
        let revision = match self.store.revision() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("the agent cannot read the store's revision: {e}");
                0
            }
        };
        match self.store.list("tasks/", None, usize::MAX) {
            Ok(records) => {
                let mut seen = HashSet::new();
                for r in &records {
                    if let Some(t) = crate::model::task::TaskRecord::decode(&r.value) {
                        seen.insert(r.key.clone());
                        self.sync(&r.key, &t);
                    }
                }
                // Records gone (reaped) are forgotten.
                self.started.retain(|k| seen.contains(k));
                self.stopped.retain(|k| seen.contains(k));
            }
            Err(e) => tracing::error!("the agent cannot list tasks: {e}"),
        }
        revision
    }

    fn sync_key(&mut self, key: &str) {
        match self.store.get(key) {
            Ok(Some(r)) => {
                if let Some(t) = crate::model::task::TaskRecord::decode(&r.value) {
                    self.sync(key, &t);
                }
            }
            Ok(None) => {
                self.started.remove(key);
                self.stopped.remove(key);
            }
            Err(e) => tracing::error!("the agent cannot read {key}: {e}"),
        }
    }

    fn sync(&mut self, key: &str, t: &TaskRecord) {
        if t.node != self.node {
            return;
        }
        if t.last_status == TaskStatus::Stopped {
            if self.started.remove(key) && !self.stopped.remove(key) {
                // Recorded STOPPED without this node's word: the leader
                // took the node for lost. It must not run on (a stop of a
                // task that already ended is ignored by its worker).
                let id = t.id.clone();
                let code = t.stop_code.unwrap_or(StopCode::TerminationNotice);
                let reason = t.stopped_reason.clone().unwrap_or_default();
                if let Some(w) = self.workers.get(t.worker) {
                    let _ = w.send(Command::Stop { id, code, reason });
                }
            }
            return;
        }
        let started = self.started.contains(key);
        match t.desired_status {
            DesiredStatus::Running if !started && t.last_status == TaskStatus::Provisioning => {
                match self.spec(t) {
                    Ok(spec) => {
                        self.started.insert(key.to_string());
                        self.send(t.worker, Command::Start(Box::new(spec)), t);
                    }
                    Err(why) => {
                        self.stopped.insert(key.to_string());
                        self.report_stopped(t, StopCode::TaskFailedToStart, why);
                    }
                }
            }
            DesiredStatus::Stopped if !self.stopped.contains(key) => {
                self.stopped.insert(key.to_string());
                let code = t.stop_code.unwrap_or(StopCode::UserInitiated);
                let reason = t
                    .stopped_reason
                    .clone()
                    .unwrap_or_else(|| "Task stopped".to_string());
                if started {
                    let id = t.id.clone();
                    self.send(t.worker, Command::Stop { id, code, reason }, t);
                } else if t.last_status == TaskStatus::Provisioning {
                    self.report_stopped(t, code, reason);
                }
            }
            _ => {}
        }
    }

    /// Hands a command to the task's worker; a task placed on a worker
    /// this node does not have is reported STOPPED.
    fn send(&mut self, worker: usize, command: Command, t: &TaskRecord) {
        match self.workers.get(worker) {
            Some(w) => {
                let _ = w.send(command);
            }
            None => {
                let key = crate::model::task::key(&t.cluster, &t.id);
                self.stopped.insert(key);
                self.report_stopped(
                    t,
                    StopCode::TaskFailedToStart,
                    format!(
                        "the task was placed on worker {worker}, and this node has {}",
                        self.workers.len()
                    ),
                );
            }
        }
    }

    fn report_stopped(&self, t: &TaskRecord, code: StopCode, reason: String) {
        let _ = self.events.send(TaskEvent {
            cluster: t.cluster.clone(),
            id: t.id.clone(),
            event: Event::Stopped { code, reason },
            at: crate::model::now(),
        });
    }

    /// What the worker needs to run `t`, from the store.
    fn spec(&mut self, t: &TaskRecord) -> Result<TaskSpec, String> {
        let k = (t.family.clone(), t.revision);
        let (definition, digests) = match self.definitions.get(&k) {
            Some(d) => d.clone(),
            None => {
                let key = crate::model::definitions::key(&t.family, t.revision);
                let (v, _) =
                    crate::store::records::read::<DefinitionRecord>(self.store.as_ref(), &key)
                        .map_err(|e| format!("cannot read the task definition: {e}"))?
                        .ok_or_else(|| {
                            format!(
                                "the task definition {}:{} does not exist",
                                t.family, t.revision
                            )
                        })?;
                let td = v.definition().map_err(|e| e.to_string())?;
                let digests: Vec<Option<String>> = td
                    .containers
                    .iter()
                    .map(|c| v.digests.get(&c.name).cloned())
                    .collect();
                self.definitions.insert(k, (td.clone(), digests.clone()));
                (td, digests)
            }
        };
        let overrides =
            super::container_overrides(&t.overrides, &definition).map_err(|e| e.to_string())?;
        Ok(TaskSpec {
            id: t.id.clone(),
            cluster: t.cluster.clone(),
            definition,
            revision: t.revision,
            service: t.service.clone(),
            overrides,
            worker: t.worker,
            digests,
            image_digests: t
                .containers
                .iter()
                .map(|c| c.image_digest.clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Agent, AgentConfig, Identity};
    use crate::scheduler::capacity;
    use crate::store::{Condition, SqliteStore, Write};
    use std::time::Instant;

    const NODE: &str = "n1";

    /// Node n1's load on worker 0: MiB reserved and tasks.
    fn held(store: &dyn Store) -> (u64, usize) {
        let fleet = capacity::Fleet::read(store).unwrap();
        let l = fleet.members[fleet.index(NODE).unwrap()].loads[0];
        (l.memory_reserved, l.tasks)
    }

    fn hello() -> String {
        format!("{}/guests/dist/hello-http.wasm", env!("CARGO_MANIFEST_DIR"))
    }

    /// A task of the stored definition `web:1`, placed on worker 0 with
    /// its reservation, written straight to the store (no API).
    fn place(store: &dyn Store, id: &str, desired: DesiredStatus) {
        let doc = serde_json::json!({"family": "web", "containerDefinitions": [
            {"name": "web", "image": hello(), "memory": 16}]});
        let td = TaskDefinition::parse(&doc).unwrap();
        let mut t =
            TaskRecord::placed(&td, 1, "default", NODE, 0, crate::model::now(), &mut || {
                id.to_string()
            });
        t.desired_status = desired;
        let mut fleet = capacity::Fleet::read(store).unwrap();
        fleet.reserve(fleet.index(NODE).unwrap(), 0, t.cpu, t.memory);
        let (mut c, mut w) = fleet.commit_parts();
        let k = crate::model::task::key("default", id);
        c.push(Condition::Absent(k.clone()));
        w.push(Write::Put(k, t.encode()));
        store.commit(&c, &w).unwrap();
    }

    fn task(store: &dyn Store, id: &str) -> TaskRecord {
        crate::model::task::TaskRecord::decode(
            &store
                .get(&crate::model::task::key("default", id))
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap()
    }

    /// Waits (30 s at most) until task `id` has `status`.
    fn wait_for(store: &dyn Store, id: &str, status: TaskStatus) -> TaskRecord {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = task(store, id);
            if t.last_status == status {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} is {:?}, not {status:?}, after 30 s: {:?}",
                t.last_status,
                t.stopped_reason
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_agent_runs_and_stops_what_the_store_says() {
        runs_and_stops(hello(), false);
    }

    #[test]
    fn a_hollow_agent_reports_tasks_as_they_would_run_and_runs_none() {
        // An image no real agent could load (it would fail the task).
        runs_and_stops("/nonexistent/never-loaded.wasm".into(), true);
    }

    /// A task found at start, one placed while the agent watches, one
    /// stopped through the store and one stopped before it ran, on an
    /// agent (`hollow` or not) whose task definition runs `image`.
    fn runs_and_stops(image: String, hollow: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let def = serde_json::json!({"family": "web", "revision": 1, "status": "ACTIVE",
            "document": {"family": "web", "containerDefinitions": [
                {"name": "web", "image": image, "memory": 16}]}});
        store
            .commit(
                &[],
                &[Write::Put(
                    crate::model::definitions::key("web", 1),
                    serde_json::to_vec(&def).unwrap(),
                )],
            )
            .unwrap();
        capacity::register(
            store.as_ref(),
            NODE,
            &capacity::tests::node(&[(1024, 256)]),
            capacity::tests::lease(store.as_ref()),
        )
        .unwrap();
        // Already in the store when the agent starts: found by the first
        // listing.
        place(store.as_ref(), "before", DesiredStatus::Running);

        let (tx, rx) = std::sync::mpsc::channel();
        let ledger_thread = crate::agent::ledger::spawn(store.clone(), NODE.into(), rx).unwrap();
        let runtime = skiff_runtime::Runtime::new(skiff_runtime::RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        })
        .unwrap();
        let agent = Agent::start(
            runtime,
            AgentConfig {
                workers: 1,
                memory_mib: 256,
                logs_dir: dir.path().join("logs"),
                identity: Identity {
                    region: "us-east-1".into(),
                    account: "000000000000".into(),
                },
                host_roots: None,
                node: NODE.into(),
                blobs: None,
                registry: None,
                hollow,
            },
            store.clone(),
            tx,
            Arc::new(crate::ingress::routes::Routes::new("localhost")),
            Arc::new(crate::metrics::Metrics::default()),
        )
        .unwrap();
        wait_for(store.as_ref(), "before", TaskStatus::Running);

        // Written while it watches: started from the change.
        place(store.as_ref(), "after", DesiredStatus::Running);
        wait_for(store.as_ref(), "after", TaskStatus::Running);
        assert_eq!(held(store.as_ref()), (32, 2));

        // desiredStatus STOPPED, as StopTask writes it: stopped, with the
        // record's reason, and its reservation given back.
        let k = crate::model::task::key("default", "after");
        let r = store.get(&k).unwrap().unwrap();
        let mut t = crate::model::task::TaskRecord::decode(&r.value).unwrap();
        t.desired_status = DesiredStatus::Stopped;
        t.stop_code = Some(StopCode::UserInitiated);
        t.stopped_reason = Some("stopped by the test".into());
        store
            .commit(
                &[Condition::At(k.clone(), r.mod_revision)],
                &[Write::Put(k, t.encode())],
            )
            .unwrap();
        let stopped = wait_for(store.as_ref(), "after", TaskStatus::Stopped);
        assert_eq!(
            stopped.stopped_reason.as_deref(),
            Some("stopped by the test")
        );
        assert!(stopped.started_at.is_some());
        assert_eq!(held(store.as_ref()), (16, 1));

        // Stopped before it ever ran: reported STOPPED, never started.
        place(store.as_ref(), "never", DesiredStatus::Stopped);
        let never = wait_for(store.as_ref(), "never", TaskStatus::Stopped);
        assert_eq!(never.started_at, None);
        assert_eq!(
            task(store.as_ref(), "before").last_status,
            TaskStatus::Running
        );

        agent.shutdown();
        let before = wait_for(store.as_ref(), "before", TaskStatus::Stopped);
        assert_eq!(
            before.stopped_reason.as_deref(),
            Some("the skiff server shut down")
        );
        drop(agent);
        ledger_thread.join().unwrap();
        assert_eq!(held(store.as_ref()), (0, 0));
    }
}
