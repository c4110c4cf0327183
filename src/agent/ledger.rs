//! The ledger: writes what workers report about their tasks (observed
//! state) to the store.
//!
//! One thread applies events in order. Events that arrive together are
//! applied in one transaction (group commit): one fsync for a burst of
//! task starts instead of one per event. A transaction whose task records
//! changed meanwhile (StopTask writes them too) is re-read and retried.
//! A task recorded STOPPED gives back its reservation on its node
//! ([`crate::store::records::release_reservations`]) in the same
//! transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Event, TaskEvent};
use crate::model::task::{
    key as task_key, record, ContainerStatus, StopCode, TaskRecord, TaskStatus,
};
use crate::store::{Condition, Store, StoreError, Write};

/// The most events applied in one transaction (fewer when the store
/// takes fewer operations in one: each task in it is a guarded write,
/// and the node's reservations one more).
const BATCH: usize = 512;

/// Starts the ledger thread; it ends when every sender is gone and the
/// last events are written.
pub fn spawn(
    store: Arc<dyn Store>,
    node: String,
    events: Receiver<TaskEvent>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("skiff-ledger".into())
        .spawn(move || {
            let most = store
                .max_ops()
                .map_or(BATCH, |m| BATCH.min(m.saturating_sub(1)).max(1));
            while let Ok(first) = events.recv() {
                let mut batch = vec![first];
                while batch.len() < most {
                    match events.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                commit_batch(store.as_ref(), &node, &batch);
            }
        })
}

/// How long the ledger retries a batch the store cannot take (etcd out of
/// reach, say) before it drops it, saying so.
const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Commits a batch of reports. A conflict (a placement or StopTask wrote a
/// record of the batch meanwhile) is retried from what is stored at once,
/// until it commits; a store error (etcd restarting or out of reach) is
/// retried with backoff for [`GIVE_UP_AFTER`]: dropping a report would
/// leave a task, and its reservation, stuck. Returns whether it committed.
fn commit_batch(store: &dyn Store, node: &str, batch: &[TaskEvent]) -> bool {
    let t0 = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(20);
    for attempt in 0u32.. {
        match apply(store, node, batch) {
            Ok(()) => return true,
            Err(StoreError::Conflict) => {
                if attempt >= 16 {
                    std::thread::yield_now();
                }
            }
            Err(e) if t0.elapsed() < GIVE_UP_AFTER => {
                tracing::warn!(
                    "could not record {} task events yet ({e}); retrying in {backoff:?}",
                    batch.len()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(
                    "dropped {} task events after {:?} of store errors: {e}",
                    batch.len(),
                    t0.elapsed()
                );
                return false;
            }
        }
    }
    false
}

fn apply(store: &dyn Store, node: &str, batch: &[TaskEvent]) -> Result<(), StoreError> {
    // Each task as read (with whether it was already STOPPED), then with
    // the batch's events applied.
    let mut tasks: BTreeMap<String, (TaskRecord, i64, bool)> = BTreeMap::new();
    for e in batch {
        let k = task_key(&e.cluster, &e.id);
        if !tasks.contains_key(&k) {
            let Some(r) = store.get(&k)? else { continue };
            let Some(t) = TaskRecord::decode(&r.value) else {
                continue;
            };
            let was_stopped = t.last_status == TaskStatus::Stopped;
            tasks.insert(k.clone(), (t, r.mod_revision, was_stopped));
        }
        if let Some((t, _, _)) = tasks.get_mut(&k) {
            record(t, &e.event, e.at);
        }
    }
    if tasks.is_empty() {
        return Ok(());
    }
    let mut conditions: Vec<Condition> = tasks
        .iter()
        .map(|(k, (_, rev, _))| Condition::At(k.clone(), *rev))
        .collect();
    let mut writes: Vec<Write> = tasks
        .iter()
        .map(|(k, (t, _, _))| Write::Put(k.clone(), t.encode()))
        .collect();
    let stopped: Vec<(usize, u32, u64)> = tasks
        .values()
        .filter(|(t, _, was)| !was && t.last_status == TaskStatus::Stopped)
        .map(|(t, _, _)| (t.worker, t.cpu, t.memory))
        .collect();
    if let Some((c, w)) = crate::store::records::release_reservations(store, node, &stopped)? {
        conditions.push(c);
        writes.push(w);
    }
    store.commit(&conditions, &writes).map(|_| ())
}

/// At start-up: tasks the store says were running on this node died with
/// its previous process. Reports them STOPPED, saying so (their
/// reservations are recounted by the scheduler's `capacity::register`, which runs
/// after). Tasks of other nodes are theirs. Returns how many.
pub fn recover(store: &dyn Store, node: &str) -> Result<usize, StoreError> {
    let now = crate::model::now();
    let mut n = 0;
    for r in store.list("tasks/", None, usize::MAX)? {
        let Some(mut t) = TaskRecord::decode(&r.value) else {
            continue;
        };
        // Records from before nodes had ids were all this node's.
        if t.last_status == TaskStatus::Stopped || !(t.node == node || t.node.is_empty()) {
            continue;
        }
        record(
            &mut t,
            &Event::Stopped {
                code: StopCode::TerminationNotice,
                reason: "the skiff server stopped while the task was running".into(),
            },
            now,
        );
        for c in &mut t.containers {
            if c.last_status != ContainerStatus::Stopped {
                c.last_status = ContainerStatus::Stopped;
                c.reason = Some("the skiff server stopped".into());
            }
        }
        match store.commit(
            &[Condition::At(r.key.clone(), r.mod_revision)],
            &[Write::Put(r.key.clone(), t.encode())],
        ) {
            Ok(_) => n += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Forgets tasks stopped more than `ttl_secs` ago: their records, tags
/// and logs; then removes this node's logs of tasks the store no longer
/// has (another node reaped them). Returns how many tasks it forgot.
pub fn reap(store: &dyn Store, logs_dir: &Path, ttl_secs: f64) -> Result<usize, StoreError> {
    let n = reap_records(store, logs_dir, ttl_secs)?;
    prune_logs(store, logs_dir)?;
    Ok(n)
}

/// Removes the log directories of tasks whose records are gone.
fn prune_logs(store: &dyn Store, logs_dir: &Path) -> Result<(), StoreError> {
    let Ok(clusters) = std::fs::read_dir(logs_dir) else {
        return Ok(());
    };
    for c in clusters.flatten() {
        let Ok(tasks) = std::fs::read_dir(c.path()) else {
            continue;
        };
        let cluster = c.file_name().to_string_lossy().into_owned();
        for t in tasks.flatten() {
            let id = t.file_name().to_string_lossy().into_owned();
            if store.get(&task_key(&cluster, &id))?.is_none() {
                crate::logs::remove(logs_dir, &cluster, &id);
            }
        }
    }
    Ok(())
}

fn reap_records(store: &dyn Store, logs_dir: &Path, ttl_secs: f64) -> Result<usize, StoreError> {
    let cutoff = crate::model::now() - ttl_secs;
    let mut n = 0;
    for r in store.list("tasks/", None, usize::MAX)? {
        let Some(t) = TaskRecord::decode(&r.value) else {
            continue;
        };
        if t.last_status != TaskStatus::Stopped || t.stopped_at.is_none_or(|s| s > cutoff) {
            continue;
        }
        let mut writes = vec![
            Write::Delete(r.key.clone()),
            Write::Delete(crate::model::tags::key(
                "task",
                &format!("{}/{}", t.cluster, t.id),
            )),
        ];
        writes.extend(crate::store::records::stream_deletes(&t));
        if let Some(service) = t.group.strip_prefix("service:") {
            writes.push(Write::Delete(crate::model::service::task_index_key(
                &t.cluster, service, &t.id,
            )));
        }
        match store.commit(&[Condition::At(r.key.clone(), r.mod_revision)], &writes) {
            Ok(_) => {
                crate::logs::remove(logs_dir, &t.cluster, &t.id);
                n += 1;
            }
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::tests::task;

    #[test]
    fn reports_wait_out_a_store_that_is_out_of_reach() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        // The next 3 commits fail as an unreachable etcd's would.
        let fail = std::sync::atomic::AtomicUsize::new(3);
        let store = crate::store::hooked::Hooked::new(inner.clone()).before_commit(move |_, _| {
            use std::sync::atomic::Ordering;
            match fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
                Ok(_) => Err(StoreError::Io("etcd: connection refused".into())),
                Err(_) => Ok(()),
            }
        });
        store
            .commit(
                &[],
                &[Write::Put(task_key("default", "t1"), task().encode())],
            )
            .unwrap_err();
        inner
            .commit(
                &[],
                &[Write::Put(task_key("default", "t1"), task().encode())],
            )
            .unwrap();
        let running = TaskEvent {
            cluster: "default".into(),
            id: "t1".into(),
            event: Event::Running,
            at: 5.0,
        };
        // Two failures left: the report is retried until it lands.
        assert!(commit_batch(&store, "n1", &[running]));
        let t = TaskRecord::decode(
            &store
                .get(&task_key("default", "t1"))
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(t.last_status, TaskStatus::Running);
    }

    #[test]
    fn batches_fit_what_the_store_takes_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let mut writes = Vec::new();
        for i in 0..300 {
            let mut t = task();
            t.id = format!("t{i}");
            writes.push(Write::Put(task_key("default", &t.id), t.encode()));
        }
        inner.commit(&[], &writes).unwrap();
        // 300 reports at once, to a store that takes 40 operations in a
        // commit (as etcd takes its --max-txn-ops): none is dropped.
        let store = Arc::new(crate::store::hooked::Hooked::new(inner.clone()).max_ops(40));
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..300 {
            tx.send(TaskEvent {
                cluster: "default".into(),
                id: format!("t{i}"),
                event: Event::Running,
                at: 5.0,
            })
            .unwrap();
        }
        drop(tx);
        spawn(store, "n1".into(), rx).unwrap().join().unwrap();
        let running = crate::store::records::tasks(inner.as_ref(), crate::model::task::PREFIX)
            .unwrap()
            .into_iter()
            .filter(|(t, _)| t.last_status == TaskStatus::Running)
            .count();
        assert_eq!(running, 300);
    }

    #[test]
    fn recovery_stops_what_was_running_and_reaping_forgets_old_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let mut running = task();
        running.last_status = TaskStatus::Running;
        store
            .commit(
                &[],
                &[Write::Put(task_key("default", "t1"), running.encode())],
            )
            .unwrap();
        let mut elsewhere = running.clone();
        elsewhere.node = "n2".into();
        store
            .commit(
                &[],
                &[Write::Put(task_key("default", "t2"), elsewhere.encode())],
            )
            .unwrap();
        assert_eq!(recover(&store, "n1").unwrap(), 1);
        let t2 = TaskRecord::decode(
            &store
                .get(&task_key("default", "t2"))
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(t2.last_status, TaskStatus::Running, "another node's task");
        let t = TaskRecord::decode(
            &store
                .get(&task_key("default", "t1"))
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.stop_code, Some(StopCode::TerminationNotice));
        assert_eq!(t.containers[0].last_status, ContainerStatus::Stopped);
        // Not yet old enough.
        assert_eq!(reap(&store, dir.path(), 3600.0).unwrap(), 0);
        // Logs of a task another node reaped go too; a live task's stay.
        for id in ["t2", "gone"] {
            std::fs::create_dir_all(dir.path().join("logs/default").join(id)).unwrap();
        }
        assert_eq!(
            reap(&store, &dir.path().join("logs"), -1.0).unwrap(),
            1,
            "t2 still runs"
        );
        assert!(dir.path().join("logs/default/t2").exists());
        assert!(!dir.path().join("logs/default/gone").exists());
        assert!(store.get(&task_key("default", "t1")).unwrap().is_none());
    }
}
