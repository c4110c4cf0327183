//! Nodes and their capacity, in the store: what a live node's workers
//! have (`nodes/NODE`, under the node's lease), what the tasks placed on
//! them reserve (`nodes/NODE/reservations`), and the node as an ECS
//! container instance (`instances/NODE`: its status and what it last
//! registered, kept after the lease lapses).
//!
//! Whoever places a task (RunTask in the API, the service scheduler) reads
//! them all (a [`Fleet`]), chooses a node and worker, and writes the task and the new reservations in
//! one transaction guarded by the reservations' revision: two placers
//! racing for the same MiB conflict, and the loser places again from what
//! is stored. The ledger gives a task's reservation back in the
//! transaction that records the task STOPPED. Nothing is reserved in any
//! process's memory, so the placer and the node that runs the task need
//! not be the same process.

use std::collections::BTreeMap;

use super::expr::Expr;
use super::placement::{self, Host, Request, Unplaceable, WorkerLoad};
use crate::model::service::Strategy;

/// What a task asks of [`Fleet::place`]: the placement request without
/// the counts and randomness the fleet supplies.
#[derive(Debug, Clone, Copy)]
pub struct PlacementAsk<'a> {
    /// Strategies (none: the default).
    pub strategies: &'a [Strategy],
    /// One task of the group per node.
    pub distinct_instance: bool,
    /// `memberOf` expressions.
    pub member_of: &'a [Expr],
    /// CPU units.
    pub cpu: u32,
    /// MiB.
    pub memory: u64,
}
use crate::model::node::{
    encode as to_vec, instance_key, node_key, reservations_key, Instance, InstanceStatus, Node,
    Reservations,
};
use crate::model::task::{TaskRecord, TaskStatus};
use crate::store::{Condition, LeaseId, Revision, Store, StoreError, Write};

/// Whether a task holds its reservation: until it is STOPPED.
fn holds(t: &TaskRecord) -> bool {
    t.last_status < TaskStatus::Stopped
}

/// Registers this node (`record`, under `lease`) and its container
/// instance (ACTIVE again after a deregistration; DRAINING stays), and
/// sets its reservations to what the stored tasks on it hold (so that a
/// restart, or a crash between a task's stop and its release, leaves
/// nothing promised twice).
pub fn register(
    store: &dyn Store,
    node: &str,
    record: &Node,
    lease: LeaseId,
) -> Result<(), StoreError> {
    loop {
        let mut held = Reservations::default();
        for r in store.list("tasks/", None, usize::MAX)? {
            if let Some(t) = crate::model::task::TaskRecord::decode(&r.value) {
                if t.node == node && holds(&t) {
                    held.add(t.worker, t.cpu, t.memory);
                }
            }
        }
        let rk = reservations_key(node);
        let ik = instance_key(node);
        let (instance, instance_cond) = match store.get(&ik)? {
            Some(r) => (
                serde_json::from_slice::<Instance>(&r.value).ok(),
                Condition::At(ik.clone(), r.mod_revision),
            ),
            None => (None, Condition::Absent(ik.clone())),
        };
        let instance = Instance {
            status: match instance.as_ref().map(|i| i.status) {
                Some(InstanceStatus::Draining) => InstanceStatus::Draining,
                _ => InstanceStatus::Active,
            },
            node: record.clone(),
            version: instance.as_ref().map_or(1, |i| i.version + 1),
            custom: instance.map(|i| i.custom).unwrap_or_default(),
        };
        let cond = match store.get(&rk)? {
            Some(r) => Condition::At(rk.clone(), r.mod_revision),
            None => Condition::Absent(rk.clone()),
        };
        let writes = vec![
            Write::PutLeased(node_key(node), to_vec(record), lease),
            Write::Put(rk, to_vec(&held)),
            Write::Put(ik, to_vec(&instance)),
        ];
        match store.commit(&[cond, instance_cond], &writes) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Stores from before nodes had ids knew one node, `local`: its records
/// go (once, at start-up).
pub fn forget_legacy_node(store: &dyn Store) -> Result<(), StoreError> {
    if store.get(&reservations_key("local"))?.is_some() {
        store.commit(
            &[],
            &[
                Write::Delete(node_key("local")),
                Write::Delete(reservations_key("local")),
            ],
        )?;
    }
    Ok(())
}

/// A node as the fleet holds it: its instance record, whether its lease
/// is alive, its workers' loads and its reservations as read.
#[derive(Debug, Clone)]
pub struct Member {
    /// The node id.
    pub id: String,
    /// What it registered.
    pub node: Node,
    /// Its container instance's status.
    pub status: InstanceStatus,
    /// The attributes set through the API.
    pub custom: BTreeMap<String, String>,
    /// Its attributes for placement: the node's own and the API's (which
    /// win where both name one).
    pub attributes: BTreeMap<String, String>,
    /// Its instance record's version.
    pub version: u64,
    /// Whether its lease is alive (`agentConnected`).
    pub connected: bool,
    /// Each worker's capacity and what is reserved on it.
    pub loads: Vec<WorkerLoad>,
    reservations: Reservations,
    revision: Option<Revision>,
    /// What this fleet's placements reserved on it (on top of what was
    /// read).
    added: Reservations,
    touched: bool,
}

impl Member {
    /// Whether new tasks may go to it.
    pub fn accepts(&self) -> bool {
        self.connected && self.status == InstanceStatus::Active
    }
}

/// Every node the store knows, to place tasks on and to write back the
/// reservations made with the tasks placed. Sorted by node id.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// The nodes.
    pub members: Vec<Member>,
}

impl Fleet {
    /// Reads the nodes: their instance records, which of them are
    /// connected, and their reservations.
    pub fn read(store: &dyn Store) -> Result<Fleet, StoreError> {
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        let blank = |id: &str| Member {
            id: id.to_string(),
            node: Node {
                workers: Vec::new(),
                attributes: BTreeMap::new(),
                registered_at: 0.0,
                ingress: None,
                api: None,
            },
            status: InstanceStatus::Active,
            custom: BTreeMap::new(),
            attributes: BTreeMap::new(),
            version: 0,
            connected: false,
            loads: Vec::new(),
            reservations: Reservations::default(),
            revision: None,
            added: Reservations::default(),
            touched: false,
        };
        for r in store.list("instances/", None, usize::MAX)? {
            let id = &r.key["instances/".len()..];
            if let Ok(i) = serde_json::from_slice::<Instance>(&r.value) {
                let m = members.entry(id.to_string()).or_insert_with(|| blank(id));
                m.node = i.node;
                m.status = i.status;
                m.version = i.version;
                m.custom = i.custom;
            }
        }
        for r in store.list("nodes/", None, usize::MAX)? {
            let rest = &r.key["nodes/".len()..];
            match rest.split_once('/') {
                None => {
                    if let Ok(n) = serde_json::from_slice::<Node>(&r.value) {
                        let m = members
                            .entry(rest.to_string())
                            .or_insert_with(|| blank(rest));
                        m.node = n;
                        m.connected = true;
                    }
                }
                Some((id, "reservations")) => {
                    let m = members.entry(id.to_string()).or_insert_with(|| blank(id));
                    m.reservations = serde_json::from_slice(&r.value).unwrap_or_default();
                    m.revision = Some(r.mod_revision);
                }
                Some(_) => {}
            }
        }
        let mut members: Vec<Member> = members.into_values().collect();
        for m in &mut members {
            m.attributes = m.node.attributes.clone();
            m.attributes
                .extend(m.custom.iter().map(|(k, v)| (k.clone(), v.clone())));
            m.loads = m
                .node
                .workers
                .iter()
                .enumerate()
                .map(|(i, &(cpu, memory))| {
                    let (cpu_reserved, memory_reserved, tasks) =
                        m.reservations.workers.get(i).copied().unwrap_or_default();
                    WorkerLoad {
                        cpu_capacity: cpu,
                        memory_capacity: memory,
                        cpu_reserved,
                        memory_reserved,
                        tasks,
                    }
                })
                .collect();
        }
        Ok(Fleet { members })
    }

    /// The nodes as placement sees them.
    pub fn hosts(&self) -> Vec<Host<'_>> {
        self.members
            .iter()
            .map(|m| Host {
                id: &m.id,
                attributes: &m.attributes,
                workers: &m.loads,
                accepts: m.accepts(),
            })
            .collect()
    }

    /// The index of node `id`.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// How many workers the connected nodes have.
    pub fn workers(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.connected)
            .map(|m| m.loads.len())
            .sum()
    }

    /// Reserves `cpu` and `memory` on worker `worker` of node `member`
    /// (placement chose them).
    pub fn reserve(&mut self, member: usize, worker: usize, cpu: u32, memory: u64) {
        let m = &mut self.members[member];
        m.reservations.add(worker, cpu, memory);
        m.added.add(worker, cpu, memory);
        m.touched = true;
        if let Some(l) = m.loads.get_mut(worker) {
            l.cpu_reserved += cpu;
            l.memory_reserved += memory;
            l.tasks += 1;
        }
    }

    /// Places a task (placement chooses among the nodes), reserves its
    /// `req.cpu` and `req.memory` there, and counts it in the group's
    /// `group_tasks`: the node's id, the worker, and the node's zone.
    pub fn place(
        &mut self,
        req: &PlacementAsk<'_>,
        group_tasks: &mut [Vec<usize>],
    ) -> Result<(String, usize, Option<String>), Unplaceable> {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let (h, worker) = placement::place(
            &self.hosts(),
            &Request {
                strategies: req.strategies,
                distinct_instance: req.distinct_instance,
                member_of: req.member_of,
                group_tasks,
                cpu: req.cpu,
                memory: req.memory,
                seed: u64::from_le_bytes(seed),
            },
        )?;
        self.reserve(h, worker, req.cpu, req.memory);
        if let Some(n) = group_tasks.get_mut(h).and_then(|g| g.get_mut(worker)) {
            *n += 1;
        }
        let m = &self.members[h];
        let zone = m.attributes.get("ecs.availability-zone").cloned();
        Ok((m.id.clone(), worker, zone))
    }

    /// Per node, per worker: zero (to count a group's tasks in).
    pub fn no_tasks(&self) -> Vec<Vec<usize>> {
        self.members
            .iter()
            .map(|m| vec![0; m.loads.len()])
            .collect()
    }

    /// A summary for messages: how many nodes there are and take tasks.
    pub fn summary(&self) -> String {
        format!(
            "container instances: {}, of which {} take tasks",
            self.members.len(),
            self.members.iter().filter(|m| m.accepts()).count()
        )
    }

    /// How many nodes have reservations made by this fleet's placements.
    pub fn touched(&self) -> usize {
        self.members.iter().filter(|m| m.touched).count()
    }

    /// After a commit conflicted: re-reads the reservations of the nodes
    /// placed on, and whether this fleet's placements still fit on top of
    /// what is stored now (each worker within what its node has). If
    /// they do, the reservations to commit become those, guarded by their
    /// new revision; if not, nothing changes and the placements must be
    /// made again.
    pub fn reverify(&mut self, store: &dyn Store) -> Result<bool, StoreError> {
        let mut fresh = Vec::new();
        for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.touched) {
            let stored = store.get(&reservations_key(&m.id))?;
            let revision = stored.as_ref().map(|r| r.mod_revision);
            if revision == m.revision {
                continue;
            }
            let mut now: Reservations = stored
                .and_then(|r| serde_json::from_slice(&r.value).ok())
                .unwrap_or_default();
            for (w, &(cpu, memory, tasks)) in m.added.workers.iter().enumerate() {
                if tasks == 0 {
                    continue;
                }
                now.add_many(w, cpu, memory, tasks);
                let (cap_cpu, cap_memory) = m.node.workers.get(w).copied().unwrap_or((0, 0));
                let (held_cpu, held_memory, _) = now.workers[w];
                if held_cpu > cap_cpu || held_memory > cap_memory {
                    return Ok(false);
                }
            }
            fresh.push((i, now, revision));
        }
        for (i, now, revision) in fresh {
            let m = &mut self.members[i];
            for (l, &(cpu, memory, tasks)) in m.loads.iter_mut().zip(&now.workers) {
                (l.cpu_reserved, l.memory_reserved, l.tasks) = (cpu, memory, tasks);
            }
            m.reservations = now;
            m.revision = revision;
        }
        Ok(true)
    }

    /// The reservations made so far were committed at `revision`: they
    /// are what is stored now, and the placements that follow reserve on
    /// top of them (guarded by that revision).
    pub fn committed(&mut self, revision: Revision) {
        for m in self.members.iter_mut().filter(|m| m.touched) {
            m.revision = Some(revision);
            m.added = Reservations::default();
            m.touched = false;
        }
    }

    /// The conditions and writes that commit the reservations made, to go
    /// in the same transaction as the tasks placed: each node's
    /// reservations guarded by the revision they were read at.
    pub fn commit_parts(&self) -> (Vec<Condition>, Vec<Write>) {
        let mut conditions = Vec::new();
        let mut writes = Vec::new();
        for m in self.members.iter().filter(|m| m.touched) {
            let k = reservations_key(&m.id);
            conditions.push(match m.revision {
                Some(rev) => Condition::At(k.clone(), rev),
                None => Condition::Absent(k.clone()),
            });
            writes.push(Write::Put(k, to_vec(&m.reservations)));
        }
        (conditions, writes)
    }
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
            ingress: None,
            api: None,
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

    /// Reserves on node `id`'s worker and commits the reservation alone.
    fn reserve(s: &dyn Store, fleet: &mut Fleet, id: &str, worker: usize, cpu: u32, mem: u64) {
        let i = fleet.index(id).unwrap();
        fleet.reserve(i, worker, cpu, mem);
        let (c, w) = fleet.commit_parts();
        s.commit(&c, &w).unwrap();
    }

    #[test]
    fn two_placers_racing_for_a_worker_conflict() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        register(&s, "n2", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let mut a = Fleet::read(&s).unwrap();
        let mut b = Fleet::read(&s).unwrap();
        a.reserve(0, 0, 0, 60);
        b.reserve(0, 0, 0, 60);
        let (ca, wa) = a.commit_parts();
        assert_eq!(ca.len(), 1, "only the node reserved on is written");
        s.commit(&ca, &wa).unwrap();
        let (cb, wb) = b.commit_parts();
        assert_eq!(s.commit(&cb, &wb), Err(StoreError::Conflict));
        // Read again: the worker has 40 MiB left.
        let again = Fleet::read(&s).unwrap();
        assert_eq!(again.members[0].loads[0].memory_reserved, 60);
        assert_eq!(again.members[0].loads[0].tasks, 1);
        assert_eq!(again.members[1].loads[0].tasks, 0);
    }

    #[test]
    fn release_gives_back_and_register_recounts_from_the_tasks() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100), (1024, 100)]), lease(&s)).unwrap();
        let mut fleet = Fleet::read(&s).unwrap();
        reserve(&s, &mut fleet, "n1", 1, 256, 30);
        let (c, w) = crate::store::records::release_reservations(&s, "n1", &[(1, 256, 30)])
            .unwrap()
            .unwrap();
        s.commit(&[c], &[w]).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        assert_eq!(fleet.members[0].loads[1].memory_reserved, 0);
        // A reservation with no task behind it is gone after register.
        let mut fleet = Fleet::read(&s).unwrap();
        reserve(&s, &mut fleet, "n1", 0, 0, 50);
        register(&s, "n1", &node(&[(1024, 100), (1024, 100)]), lease(&s)).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        assert_eq!(fleet.members[0].loads[0].memory_reserved, 0);
        assert_eq!(fleet.workers(), 2);
    }

    #[test]
    fn a_lost_node_stays_an_instance_and_draining_survives_a_restart() {
        let (_d, s) = store();
        let l = lease(&s);
        register(&s, "n1", &node(&[(1024, 100)]), l).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        assert!(fleet.members[0].accepts());
        // DRAINING, as UpdateContainerInstancesState writes it.
        let r = s.get(&instance_key("n1")).unwrap().unwrap();
        let mut i: Instance = serde_json::from_slice(&r.value).unwrap();
        i.status = InstanceStatus::Draining;
        s.commit(&[], &[Write::Put(instance_key("n1"), to_vec(&i))])
            .unwrap();
        assert!(!Fleet::read(&s).unwrap().members[0].accepts());
        // The lease ends: still listed, not connected.
        s.revoke(l).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        assert_eq!(fleet.members.len(), 1);
        assert!(!fleet.members[0].connected);
        assert_eq!(fleet.members[0].loads.len(), 1);
        // Registered again: connected, and still DRAINING.
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        assert!(fleet.members[0].connected);
        assert_eq!(fleet.members[0].status, InstanceStatus::Draining);
    }

    #[test]
    fn attributes_put_through_the_api_outlive_a_restart_and_win_over_the_nodes() {
        let (_d, s) = store();
        let mut n = node(&[(1024, 100)]);
        n.attributes.insert("tier".into(), "silver".into());
        n.attributes.insert("zone".into(), "a".into());
        register(&s, "n1", &n, lease(&s)).unwrap();
        // As PutAttributes writes them.
        let r = s.get(&instance_key("n1")).unwrap().unwrap();
        let mut i: Instance = serde_json::from_slice(&r.value).unwrap();
        i.custom.insert("tier".into(), "gold".into());
        i.custom.insert("gpu".into(), String::new());
        s.commit(&[], &[Write::Put(instance_key("n1"), to_vec(&i))])
            .unwrap();
        register(&s, "n1", &n, lease(&s)).unwrap();
        let fleet = Fleet::read(&s).unwrap();
        let m = &fleet.members[0];
        let got: Vec<(&str, &str)> = m
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, [("gpu", ""), ("tier", "gold"), ("zone", "a")]);
        assert_eq!(fleet.hosts()[0].attributes["tier"], "gold");
    }
}
