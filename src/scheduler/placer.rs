//! The one way tasks are placed, by RunTask, StartTask and the service
//! scheduler alike: read the fleet (a snapshot of every node's workers
//! and reservations), choose a worker for each task ([`placement::place`],
//! a pure function), then commit the tasks, the reservations they make
//! and whatever else the placer writes in one transaction.
//!
//! The commit is a plan applier, as Nomad's is: each node's reservations
//! are guarded by the revision they were read at, and when another placer
//! (or the ledger, giving back a stopped task's reservation) wrote them
//! first, the applier does not place again from scratch. It re-reads the
//! reservations of the nodes this plan touches and checks that its
//! placements still fit on top of what is stored now; if they do, it
//! commits again with those; if one does not, or a record the placer
//! guarded (a service, the leader's fence) changed, the plan is stale and
//! the caller places again from what is stored ([`StoreError::Conflict`]).
//! So two placers never over-commit a worker, and placers racing for
//! different room do not redo each other's work.

use super::capacity::{Fleet, PlacementAsk};
use super::placement::Unplaceable;
use crate::model::task::{self, TaskRecord};
use crate::store::{Condition, Revision, Store, StoreError, Write};

/// How many times the applier re-verifies and commits again when only
/// the reservations changed under it, before it calls the plan stale.
const MAX_REVERIFY: usize = 64;

/// Where a task was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node (container instance).
    pub node: String,
    /// Its worker.
    pub worker: usize,
    /// The node's availability zone, if it has one.
    pub zone: Option<String>,
}

/// A plan being made: the fleet as read, the group's tasks on each
/// worker (what spread counts), and the conditions and writes to commit
/// with the reservations.
#[derive(Debug)]
pub struct Placer {
    fleet: Fleet,
    group_tasks: Vec<Vec<usize>>,
    conditions: Vec<Condition>,
    writes: Vec<Write>,
}

impl Placer {
    /// Reads the fleet. Until [`Placer::group`] names the group's tasks,
    /// spread counts every task on each worker.
    pub fn read(store: &dyn Store) -> Result<Placer, StoreError> {
        let fleet = Fleet::read(store)?;
        let group_tasks = fleet
            .members
            .iter()
            .map(|m| m.loads.iter().map(|l| l.tasks).collect())
            .collect();
        Ok(Placer {
            fleet,
            group_tasks,
            conditions: Vec::new(),
            writes: Vec::new(),
        })
    }

    /// Counts only the group's live tasks (node and worker of each) in
    /// what spread and `distinctInstance` see.
    pub fn group<'a>(&mut self, tasks: impl IntoIterator<Item = (&'a str, usize)>) {
        self.group_tasks = self.fleet.no_tasks();
        for (node, worker) in tasks {
            if let Some(n) = self
                .fleet
                .index(node)
                .and_then(|h| self.group_tasks[h].get_mut(worker))
            {
                *n += 1;
            }
        }
    }

    /// The fleet as read, with the reservations placed so far.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Places one task: the worker placement chooses, its cpu and memory
    /// reserved there (in this plan) and the task counted in the group.
    pub fn place(&mut self, ask: &PlacementAsk<'_>) -> Result<Placement, Unplaceable> {
        let (node, worker, zone) = self.fleet.place(ask, &mut self.group_tasks)?;
        Ok(Placement { node, worker, zone })
    }

    /// Writes a placed task (it must not exist yet) and the index entries
    /// of its log streams.
    pub fn add_task(&mut self, t: &TaskRecord) {
        let k = task::key(&t.cluster, &t.id);
        self.conditions.push(Condition::Absent(k.clone()));
        self.writes.push(Write::Put(k, t.encode()));
        self.writes.extend(crate::store::records::stream_writes(t));
    }

    /// Commits only if `condition` holds.
    pub fn guard(&mut self, condition: Condition) {
        self.conditions.push(condition);
    }

    /// Commits `write` with the plan.
    pub fn write(&mut self, write: Write) {
        self.writes.push(write);
    }

    /// How many operations the commit carries so far: the more of its
    /// conditions and its writes (the reservations of each node placed on
    /// included), which is what a store's limit on one commit counts.
    pub fn ops(&self) -> usize {
        let touched = self.fleet.touched();
        (self.writes.len() + touched).max(self.conditions.len() + touched)
    }

    /// Commits the plan (see the module's doc). [`StoreError::Conflict`]
    /// means the plan is stale: place again from what is stored.
    pub fn commit(&mut self, store: &dyn Store) -> Result<Revision, StoreError> {
        for _ in 0..MAX_REVERIFY {
            let (mut conditions, mut writes) = self.fleet.commit_parts();
            conditions.extend(self.conditions.iter().cloned());
            writes.extend(self.writes.iter().cloned());
            match store.commit(&conditions, &writes) {
                Err(StoreError::Conflict) => {
                    if !self.guards_hold(store)? || !self.fleet.reverify(store)? {
                        return Err(StoreError::Conflict);
                    }
                }
                done => return done,
            }
        }
        Err(StoreError::Conflict)
    }

    /// The plan so far was committed at `revision`: what follows goes in
    /// another commit, reserving on top of it, with guards and writes of
    /// its own.
    pub fn committed(&mut self, revision: Revision) {
        self.fleet.committed(revision);
        self.conditions.clear();
        self.writes.clear();
    }

    /// Whether every condition the placer added still holds.
    fn guards_hold(&self, store: &dyn Store) -> Result<bool, StoreError> {
        for c in &self.conditions {
            let holds = match c {
                Condition::Absent(k) => store.get(k)?.is_none(),
                Condition::At(k, rev) => store.get(k)?.is_some_and(|r| r.mod_revision == *rev),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::capacity::{register, tests::lease, tests::node};

    fn store() -> (tempfile::TempDir, crate::store::SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    fn ask(memory: u64) -> PlacementAsk<'static> {
        PlacementAsk {
            strategies: &[],
            distinct_instance: false,
            member_of: &[],
            cpu: 0,
            memory,
        }
    }

    fn reserved(s: &dyn Store) -> u64 {
        Fleet::read(s).unwrap().members[0].loads[0].memory_reserved
    }

    /// A task placed by `p`, committed with it.
    fn task_on(p: &mut Placer, id: &str, at: &Placement) {
        let mut t = crate::model::task::tests::task();
        t.id = id.into();
        t.node = at.node.clone();
        t.worker = at.worker;
        p.add_task(&t);
    }

    #[test]
    fn placers_racing_for_room_there_is_both_commit_without_placing_again() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let (mut a, mut b) = (Placer::read(&s).unwrap(), Placer::read(&s).unwrap());
        let at_a = a.place(&ask(40)).unwrap();
        let at_b = b.place(&ask(40)).unwrap();
        task_on(&mut a, "a", &at_a);
        task_on(&mut b, "b", &at_b);
        a.commit(&s).unwrap();
        // b read the reservations before a's commit: its own commit
        // conflicts, it finds 40 MiB still free, and commits on top.
        b.commit(&s).unwrap();
        assert_eq!(reserved(&s), 80);
        assert!(s.get(&task::key("default", "b")).unwrap().is_some());
    }

    #[test]
    fn a_placement_that_no_longer_fits_is_stale_and_nothing_is_written() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let (mut a, mut b) = (Placer::read(&s).unwrap(), Placer::read(&s).unwrap());
        let at_a = a.place(&ask(60)).unwrap();
        let at_b = b.place(&ask(60)).unwrap();
        task_on(&mut a, "a", &at_a);
        task_on(&mut b, "b", &at_b);
        a.commit(&s).unwrap();
        assert_eq!(b.commit(&s), Err(StoreError::Conflict));
        assert_eq!(reserved(&s), 60, "b reserved nothing");
        assert!(s.get(&task::key("default", "b")).unwrap().is_none());
        // Placed again from what is stored: no room on the only worker.
        let mut again = Placer::read(&s).unwrap();
        assert!(matches!(
            again.place(&ask(60)),
            Err(Unplaceable::Resources(_))
        ));
    }

    #[test]
    fn a_guarded_record_that_changed_makes_the_plan_stale() {
        let (_d, s) = store();
        register(&s, "n1", &node(&[(1024, 100)]), lease(&s)).unwrap();
        let rev = s
            .commit(
                &[],
                &[Write::Put("services/default/web".into(), b"{}".to_vec())],
            )
            .unwrap();
        let mut p = Placer::read(&s).unwrap();
        p.guard(Condition::At("services/default/web".into(), rev));
        let at = p.place(&ask(10)).unwrap();
        task_on(&mut p, "a", &at);
        s.commit(
            &[],
            &[Write::Put("services/default/web".into(), b"{}".to_vec())],
        )
        .unwrap();
        assert_eq!(p.commit(&s), Err(StoreError::Conflict));
        assert_eq!(reserved(&s), 0);
    }
}
