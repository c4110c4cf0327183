//! The controller's view of the services' tasks: a service's index and
//! task records are read once, then kept from the store's change feed,
//! so that a pass rereads only the tasks that changed since the last one
//! (a pass over a service of 10,000 tasks used to read all 10,000).
//!
//! The view may be behind the store (the feed is), never ahead of it: a
//! plan made from it is fenced as before (the service record's revision
//! guards the starts, each stopped task's revision its stop), and a
//! conflict forgets the service, so that the next attempt reads it anew.

use std::collections::{BTreeSet, HashMap};

use crate::model::service;
use crate::model::task::{self, TaskRecord};
use crate::store::{Revision, Store, StoreError};

/// One task of a service the view holds.
struct Held {
    /// Its service's key.
    service: String,
    /// Its record and the revision it was read at; `None` once a change
    /// made it stale (the next pass reads it again).
    record: Option<(TaskRecord, Revision)>,
}

/// The tasks of the services read so far.
#[derive(Default)]
pub struct TaskView {
    /// Each service read (its key) and its tasks' keys.
    services: HashMap<String, BTreeSet<String>>,
    /// Each task of those services, by its key.
    tasks: HashMap<String, Held>,
}

impl TaskView {
    /// A change in the store. Returns the service whose task it is, when
    /// the view holds that service and the change is news to it (not a
    /// write the view already holds, such as the controller's own).
    pub fn changed(&mut self, key: &str, revision: Revision, deleted: bool) -> Option<String> {
        if key.starts_with(task::PREFIX) {
            let held = self.tasks.get_mut(key)?;
            if deleted {
                let svc = held.service.clone();
                self.remove(key);
                return Some(svc);
            }
            if held.record.as_ref().is_some_and(|(_, r)| *r >= revision) {
                return None;
            }
            held.record = None;
            return Some(held.service.clone());
        }
        // An index entry: a task joined or left a service.
        let (cluster, name, id) = index_entry(key)?;
        let svc = service::key(cluster, name);
        let keys = self.services.get_mut(&svc)?;
        let task_key = task::key(cluster, id);
        if deleted {
            self.remove(&task_key);
            return None;
        }
        if !keys.insert(task_key.clone()) {
            return None;
        }
        self.tasks.insert(
            task_key,
            Held {
                service: svc.clone(),
                record: None,
            },
        );
        Some(svc)
    }

    /// The tasks of the service at `svc` (of `cluster`, named `name`),
    /// with their revisions: read from its index the first time, then
    /// only those that changed.
    pub fn tasks_of(
        &mut self,
        store: &dyn Store,
        svc: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Vec<(TaskRecord, Revision)>, StoreError> {
        if !self.services.contains_key(svc) {
            let index = store.list(&service::tasks_prefix(cluster, name), None, usize::MAX)?;
            let mut keys = BTreeSet::new();
            for r in index {
                let Some(id) = r.key.rsplit('/').next() else {
                    continue;
                };
                let k = task::key(cluster, id);
                self.tasks.insert(
                    k.clone(),
                    Held {
                        service: svc.to_string(),
                        record: None,
                    },
                );
                keys.insert(k);
            }
            self.services.insert(svc.to_string(), keys);
        }
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for k in &self.services[svc] {
            let Some(held) = self.tasks.get_mut(k) else {
                continue;
            };
            if held.record.is_none() {
                held.record = store
                    .get(k)?
                    .and_then(|r| TaskRecord::decode(&r.value).map(|t| (t, r.mod_revision)));
                if held.record.is_none() {
                    gone.push(k.clone());
                }
            }
            if let Some(r) = &held.record {
                out.push(r.clone());
            }
        }
        for k in gone {
            self.remove(&k);
        }
        Ok(out)
    }

    /// A task the controller committed at `revision`, for the service at
    /// `svc`.
    pub fn placed(&mut self, svc: &str, t: &TaskRecord, revision: Revision) {
        let k = task::key(&t.cluster, &t.id);
        if let Some(keys) = self.services.get_mut(svc) {
            keys.insert(k.clone());
            self.tasks.insert(
                k,
                Held {
                    service: svc.to_string(),
                    record: Some((t.clone(), revision)),
                },
            );
        }
    }

    /// Forgets the service at `svc`: its next pass reads it anew.
    pub fn forget(&mut self, svc: &str) {
        for k in self.services.remove(svc).unwrap_or_default() {
            self.tasks.remove(&k);
        }
    }

    /// Forgets everything (the feed lost changes, or this node just took
    /// the lead and another wrote meanwhile).
    pub fn clear(&mut self) {
        self.services.clear();
        self.tasks.clear();
    }

    /// How many tasks the view holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn remove(&mut self, task_key: &str) {
        if let Some(held) = self.tasks.remove(task_key) {
            if let Some(keys) = self.services.get_mut(&held.service) {
                keys.remove(task_key);
            }
        }
    }
}

/// The cluster, service name and task id of a service index key.
fn index_entry(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(service::TASKS_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (cluster, name, id) = (parts.next()?, parts.next()?, parts.next()?);
    (!id.is_empty() && !id.contains('/')).then_some((cluster, name, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Write};

    #[test]
    fn the_view_follows_tasks_joining_changing_and_leaving_a_service() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let svc = service::key("default", "web");
        let put = |id: &str, version: u64| {
            let mut t = crate::model::task::tests::task();
            t.id = id.to_string();
            t.version = version;
            store
                .commit(
                    &[],
                    &[
                        Write::Put(task::key("default", id), t.encode()),
                        Write::Put(service::task_index_key("default", "web", id), vec![]),
                    ],
                )
                .unwrap()
        };
        put("a", 1);
        let mut view = TaskView::default();
        let read = |view: &mut TaskView| {
            let mut ids: Vec<(String, u64)> = view
                .tasks_of(&store, &svc, "default", "web")
                .unwrap()
                .into_iter()
                .map(|(t, _)| (t.id, t.version))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(read(&mut view), [("a".to_string(), 1)]);

        // Another leader places b: its index entry wakes the service.
        let rev = put("b", 1);
        let b = service::task_index_key("default", "web", "b");
        assert_eq!(view.changed(&b, rev, false), Some(svc.clone()));
        // a changes; a change the view already holds is no news.
        let rev = put("a", 2);
        assert_eq!(
            view.changed(&task::key("default", "a"), rev, false),
            Some(svc.clone())
        );
        assert_eq!(read(&mut view), [("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(view.changed(&task::key("default", "a"), rev, false), None);

        // a is reaped: gone from the view without a read.
        let rev = store
            .commit(&[], &[Write::Delete(task::key("default", "a"))])
            .unwrap();
        assert_eq!(
            view.changed(&task::key("default", "a"), rev, true),
            Some(svc.clone())
        );
        assert_eq!(view.len(), 1);
        // A task of a service the view never read is not its business.
        assert_eq!(
            view.changed(&task::key("default", "z"), rev + 1, false),
            None
        );
    }
}
