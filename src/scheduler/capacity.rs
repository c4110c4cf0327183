//! A node's capacity, in the store: what its workers have (`nodes/NODE`)
//! and what the tasks placed on them reserve (`nodes/NODE/reservations`).
//!
//! Whoever places a task (RunTask in the API, the service scheduler) reads
//! both, chooses a worker, and writes the task and the new reservations in
//! one transaction guarded by the reservations' revision: two placers
//! racing for the same MiB conflict, and the loser places again from what
//! is stored. The ledger gives a task's reservation back in the
//! transaction that records the task STOPPED. Nothing is reserved in any
//! process's memory, so the placer and the node that runs the task need
//! not be the same process.

use serde::{Deserialize, Serialize};

use super::placement::WorkerLoad;
use crate::agent::ledger;
use crate::model::task::{TaskRecord, TaskStatus};
use crate::store::{Condition, LeaseId, Revision, Store, StoreError, Write};

/// The store key of a node's workers.
pub fn node_key(node: &str) -> String {
    format!("nodes/{node}")
}

/// The store key of what a node's workers have promised.
pub fn reservations_key(node: &str) -> String {
    format!("nodes/{node}/reservations")
}

/// A node, as it registers itself: what each of its workers has, and its
/// attributes. The record lives under the node's lease: when the node
/// stops keeping it alive, the record goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Per worker: CPU units (1024, one thread) and MiB it may hand out.
    pub workers: Vec<(u32, u64)>,
    /// Its attributes (`ecs.availability-zone`, and those given with
    /// `--attribute`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// When it registered (seconds since the epoch).
    #[serde(default)]
    pub registered_at: f64,
}

/// What a node's workers have promised to their tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservations {
    /// Per worker: CPU units and MiB reserved, and how many tasks.
    pub workers: Vec<(u32, u64, usize)>,
}

impl Reservations {
    fn add(&mut self, worker: usize, cpu: u32, memory: u64) {
        if self.workers.len() <= worker {
            self.workers.resize(worker + 1, (0, 0, 0));
        }
        let w = &mut self.workers[worker];
        w.0 += cpu;
        w.1 += memory;
        w.2 += 1;
    }

    fn remove(&mut self, worker: usize, cpu: u32, memory: u64) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.0 = w.0.saturating_sub(cpu);
            w.1 = w.1.saturating_sub(memory);
            w.2 = w.2.saturating_sub(1);
        }
    }
}

/// Whether a task holds its reservation: until it is STOPPED.
fn holds(t: &TaskRecord) -> bool {
    t.last_status < TaskStatus::Stopped
}

/// Registers this node (`record`, under `lease`), and sets its
/// reservations to what the stored tasks hold (so that a restart, or a
/// crash between a task's stop and its release, leaves nothing promised
/// twice).
pub fn register(
    store: &dyn Store,
    node: &str,
    record: &Node,
    lease: LeaseId,
) -> Result<(), StoreError> {
    loop {
        let mut held = Reservations::default();
        for r in store.list("tasks/", None, usize::MAX)? {
            if let Some(t) = ledger::parse(&r) {
                if holds(&t) {
                    held.add(t.worker, t.cpu, t.memory);
                }
            }
        }
        let rk = reservations_key(node);
        let cond = match store.get(&rk)? {
            Some(r) => Condition::At(rk.clone(), r.mod_revision),
            None => Condition::Absent(rk.clone()),
        };
        let mut writes = vec![
            Write::PutLeased(node_key(node), to_vec(record), lease),
            Write::Put(rk, to_vec(&held)),
        ];
        // Stores from before nodes had ids knew one node, `local`.
        if node != "local" && store.get(&node_key("local"))?.is_some() {
            writes.push(Write::Delete(node_key("local")));
            writes.push(Write::Delete(reservations_key("local")));
        }
        match store.commit(&[cond], &writes) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A node's workers and reservations as read, to place tasks on and to
/// write back with them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    node: String,
    /// Each worker's capacity and what is reserved on it, for placement.
    pub loads: Vec<WorkerLoad>,
    reservations: Reservations,
    revision: Option<Revision>,
}

/// Reads a node's capacity. A node that has not registered has no
/// workers (every placement on it fails).
pub fn read(store: &dyn Store, node: &str) -> Result<Snapshot, StoreError> {
    let workers: Vec<(u32, u64)> = match store.get(&node_key(node))? {
        Some(r) => serde_json::from_slice::<Node>(&r.value)
            .map(|n| n.workers)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let (reservations, revision) = match store.get(&reservations_key(node))? {
        Some(r) => (
            serde_json::from_slice(&r.value).unwrap_or_default(),
            Some(r.mod_revision),
        ),
        None => (Reservations::default(), None),
    };
    let reservations: Reservations = reservations;
    let loads = workers
        .iter()
        .enumerate()
        .map(|(i, &(cpu, memory))| {
            let (cpu_reserved, memory_reserved, tasks) =
                reservations.workers.get(i).copied().unwrap_or_default();
            WorkerLoad {
                cpu_capacity: cpu,
                memory_capacity: memory,
                cpu_reserved,
                memory_reserved,
                tasks,
            }
        })
        .collect();
    Ok(Snapshot {
        node: node.to_string(),
        loads,
        reservations,
        revision,
    })
}

impl Snapshot {
    /// Reserves `cpu` and `memory` on `worker` (placement chose it from
    /// [`Snapshot::loads`]).
    pub fn reserve(&mut self, worker: usize, cpu: u32, memory: u64) {
        self.reservations.add(worker, cpu, memory);
        if let Some(l) = self.loads.get_mut(worker) {
            l.cpu_reserved += cpu;
            l.memory_reserved += memory;
            l.tasks += 1;
        }
    }

    /// The condition and write that commit the reservations made, to go
    /// in the same transaction as the tasks placed.
    pub fn commit_parts(&self) -> (Condition, Write) {
        let k = reservations_key(&self.node);
        let cond = match self.revision {
            Some(rev) => Condition::At(k.clone(), rev),
            None => Condition::Absent(k.clone()),
        };
        (cond, Write::Put(k, to_vec(&self.reservations)))
    }
}

/// The condition and write that give back the reservations of `stopped`
/// tasks (each just recorded STOPPED), for the ledger's transaction.
pub fn release_parts(
    store: &dyn Store,
    node: &str,
    stopped: &[(usize, u32, u64)],
) -> Result<Option<(Condition, Write)>, StoreError> {
    if stopped.is_empty() {
        return Ok(None);
    }
    let k = reservations_key(node);
    let Some(r) = store.get(&k)? else {
        return Ok(None);
    };
    let mut res: Reservations = serde_json::from_slice(&r.value).unwrap_or_default();
    for &(worker, cpu, memory) in stopped {
        res.remove(worker, cpu, memory);
    }
    Ok(Some((
        Condition::At(k.clone(), r.mod_revision),
        Write::Put(k, to_vec(&res)),
    )))
}

/// How many workers the nodes have, together.
pub fn worker_count(store: &dyn Store) -> Result<usize, StoreError> {
    Ok(store
        .list("nodes/", None, usize::MAX)?
        .iter()
        .filter(|r| !r.key.ends_with("/reservations"))
        .filter_map(|r| serde_json::from_slice::<Node>(&r.value).ok())
        .map(|n| n.workers.len())
        .sum())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node record with these workers.
    pub fn node(workers: &[(u32, u64)]) -> Node {
        Node {
            workers: workers.to_vec(),
            attributes: Default::default(),
            registered_at: 0.0,
        }
    }

    /// A lease for a test's node.
    pub fn lease(s: &dyn Store) -> LeaseId {
        s.grant(std::time::Duration::from_secs(600)).unwrap()
    }

    fn store() -> (tempfile::TempDir, crate::store::SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn two_placers_racing_for_a_worker_conflict() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let mut a = read(&s, "n1").unwrap();
        let mut b = read(&s, "n1").unwrap();
        a.reserve(0, 0, 60);
        b.reserve(0, 0, 60);
        let (ca, wa) = a.commit_parts();
        s.commit(&[ca], &[wa]).unwrap();
        let (cb, wb) = b.commit_parts();
        assert_eq!(s.commit(&[cb], &[wb]), Err(StoreError::Conflict));
        // Read again: the worker has 40 MiB left.
        let again = read(&s, "n1").unwrap();
        assert_eq!(again.loads[0].memory_reserved, 60);
        assert_eq!(again.loads[0].tasks, 1);
    }

    #[test]
    fn release_gives_back_and_register_recounts_from_the_tasks() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100), (1024, 100)]), lease(&s)).unwrap();
        let mut snap = read(&s, "n1").unwrap();
        snap.reserve(1, 256, 30);
        let (c, w) = snap.commit_parts();
        s.commit(&[c], &[w]).unwrap();
        let (c, w) = release_parts(&s, "n1", &[(1, 256, 30)]).unwrap().unwrap();
        s.commit(&[c], &[w]).unwrap();
        assert_eq!(read(&s, "n1").unwrap().loads[1].memory_reserved, 0);
        // A reservation with no task behind it is gone after register.
        let mut snap = read(&s, "n1").unwrap();
        snap.reserve(0, 0, 50);
        let (c, w) = snap.commit_parts();
        s.commit(&[c], &[w]).unwrap();
        register(&s, "n1", &node(&[(1024, 100), (1024, 100)]), lease(&s)).unwrap();
        assert_eq!(read(&s, "n1").unwrap().loads[0].memory_reserved, 0);
        assert_eq!(worker_count(&s).unwrap(), 2);
    }
}
