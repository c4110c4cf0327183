//! The records layer: typed reads of stored records, and the
//! read-modify-writes that more than one part of the engine makes.
//!
//! Every record's type, key scheme and encoding is in [`crate::model`]
//! (pure data: `model::task`, `model::node`, `model::service`, ...); this
//! module reads and writes them through a [`Store`], so that the API, the
//! scheduler, the agent and the ingress share one way to do each, and
//! none of them reaches into another for a record's format.

use serde::de::DeserializeOwned;

use std::collections::BTreeSet;

use super::{Condition, Revision, Store, StoreError, Write};
use crate::model::connect::Member;
use crate::model::domain;
use crate::model::logs::{self, StreamRecord};
use crate::model::node::{self, instance_key, reservations_key, Instance, Reservations};
use crate::model::protection::{self, Refusal};
use crate::model::service::ServiceRecord;
use crate::model::task::{self, TaskRecord};

/// Why a typed read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record is not of the type its key says (a bug, or a store
    /// written by something else).
    #[error("stored record {key} is unreadable: {message}")]
    Unreadable {
        /// Its key.
        key: String,
        /// What the decoder said.
        message: String,
    },
}

/// The record at `key` as a `T`, with the revision it was read at.
pub fn read<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision)>, ReadError> {
    match store.get(key)? {
        None => Ok(None),
        Some(r) => Ok(Some((decode(&r.key, &r.value)?, r.mod_revision))),
    }
}

/// Every record under `prefix` as a `T`, in key order, with its key and
/// revision.
pub fn read_all<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(String, T, Revision)>, ReadError> {
    store
        .list(prefix, None, usize::MAX)?
        .into_iter()
        .map(|r| {
            let v = decode(&r.key, &r.value)?;
            Ok((r.key, v, r.mod_revision))
        })
        .collect()
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|e| ReadError::Unreadable {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A task, with the revision it was read at; `None` when there is none
/// (or it does not read as a task).
pub fn task(
    store: &dyn Store,
    cluster: &str,
    id: &str,
) -> Result<Option<(TaskRecord, i64)>, StoreError> {
    Ok(store
        .get(&task::key(cluster, id))?
        .and_then(|r| TaskRecord::decode(&r.value).map(|t| (t, r.mod_revision))))
}

/// Every stored task under `prefix` ([`task::PREFIX`] for all of them,
/// [`task::cluster_prefix`] for one cluster's), with its revision; records
/// that do not read as tasks are skipped.
pub fn tasks(store: &dyn Store, prefix: &str) -> Result<Vec<(TaskRecord, i64)>, StoreError> {
    Ok(store
        .list(prefix, None, usize::MAX)?
        .into_iter()
        .filter_map(|r| TaskRecord::decode(&r.value).map(|t| (t, r.mod_revision)))
        .collect())
}

/// A node's container-instance record, if the store has one (and it reads).
pub fn instance(store: &dyn Store, node: &str) -> Result<Option<Instance>, StoreError> {
    Ok(store
        .get(&instance_key(node))?
        .and_then(|r| Instance::decode(&r.value)))
}

/// The condition and write that give back the reservations of `stopped`
/// tasks (each just recorded STOPPED: worker, CPU units, MiB), for the
/// ledger's transaction.
pub fn release_reservations(
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
        Write::Put(k, node::encode(&res)),
    )))
}

/// Protects task `id` of `cluster` for `minutes` from now (checked by
/// [`crate::model::protection::check_minutes`]), or removes its protection. The record is written
/// guarded by its revision, so that a worker's report in between is kept.
/// The task as written and when, or why it cannot be protected.
pub fn protect(
    store: &dyn Store,
    cluster: &str,
    id: &str,
    enabled: bool,
    minutes: i64,
) -> Result<Result<(TaskRecord, f64), Refusal>, StoreError> {
    let k = task::key(cluster, id);
    with_retries(|| {
        let Some((mut t, rev)) = task(store, cluster, id)? else {
            return Ok(Ok(Err((
                "MISSING",
                format!("task {id} was not found in cluster {cluster}"),
            ))));
        };
        if let Some(why) = protection::not_protectable(&t) {
            return Ok(Ok(Err(("TASK_NOT_VALID", why))));
        }
        let now = crate::model::now();
        t.protected_until = enabled.then_some(now + minutes as f64 * 60.0);
        t.version += 1;
        Ok(store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k.clone(), t.encode())],
            )
            .map(|_| Ok((t, now))))
    })
}

/// Runs `attempt` until what it commits does not conflict (a concurrent
/// write to the records it read), 16 times at most; after that, the
/// conflict.
pub fn with_retries<T, E: From<StoreError>>(
    mut attempt: impl FnMut() -> Result<Result<T, StoreError>, E>,
) -> Result<T, E> {
    for _ in 0..16 {
        match attempt()? {
            Ok(v) => return Ok(v),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// Why a service cannot claim its domains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Another service holds a name it claims.
    #[error("domain {domain:?} (skiff.domains) is already claimed by service {service:?} in cluster {cluster:?}; remove it there first, or claim another name")]
    Taken {
        /// The name.
        domain: String,
        /// The service that holds it.
        service: String,
        /// That service's cluster.
        cluster: String,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store conditions and writes that move a service's domain claims
/// from `before` to what `svc` claims now: each name it claims must be
/// free or its own (a name another service holds is refused, naming that
/// service); names it no longer claims are released. Guarded by each
/// claim's revision, so two services claiming one name at once cannot
/// both win.
pub fn claims(
    store: &dyn Store,
    before: &BTreeSet<String>,
    svc: &ServiceRecord,
) -> Result<(Vec<Condition>, Vec<Write>), ClaimError> {
    let mut conditions = Vec::new();
    let mut writes = Vec::new();
    let claim = domain::Claim {
        cluster: svc.cluster.clone(),
        service: svc.name.clone(),
        https_redirect: svc.https_redirect,
    };
    let value = serde_json::to_vec(&claim).unwrap_or_default();
    // Each name once (a name in both is one key: etcd refuses a
    // transaction that names a key twice).
    for d in svc.domains.union(before) {
        let k = domain::claim_key(d);
        let held = store.get(&k)?;
        let owner = held
            .as_ref()
            .and_then(|r| serde_json::from_slice::<domain::Claim>(&r.value).ok());
        let ours = owner
            .as_ref()
            .is_some_and(|o| o.cluster == svc.cluster && o.service == svc.name);
        let keep = svc.domains.contains(d);
        match (&held, owner) {
            (Some(_), Some(o)) if keep && !ours => {
                return Err(ClaimError::Taken {
                    domain: d.clone(),
                    service: o.service,
                    cluster: o.cluster,
                })
            }
            (None, _) if keep => {
                conditions.push(Condition::Absent(k.clone()));
                writes.push(Write::Put(k, value.clone()));
            }
            (Some(r), _) if keep => {
                conditions.push(Condition::At(k.clone(), r.mod_revision));
                writes.push(Write::Put(k, value.clone()));
            }
            (Some(r), _) if ours => {
                conditions.push(Condition::At(k.clone(), r.mod_revision));
                writes.push(Write::Delete(k));
            }
            _ => {}
        }
    }
    Ok((conditions, writes))
}

/// The index entries of a new task's `awslogs` streams, written with it.
pub fn stream_writes(t: &TaskRecord) -> Vec<Write> {
    StreamRecord::of_task(t)
        .into_iter()
        .map(|(k, s)| Write::Put(k, s.encode()))
        .collect()
}

/// Removes a task's stream index entries (when it is forgotten).
pub fn stream_deletes(t: &TaskRecord) -> Vec<Write> {
    t.log_streams
        .iter()
        .map(|(g, s)| Write::Delete(logs::stream_key(g, s)))
        .collect()
}

/// Every ACTIVE service with a Service Connect configuration, of every
/// cluster (records that do not parse are left out).
pub fn connect_members(store: &dyn Store) -> Result<Vec<Member>, StoreError> {
    Ok(store
        .list(crate::model::service::PREFIX, None, usize::MAX)?
        .iter()
        .filter_map(|r| Member::from_record(&r.value))
        .collect())
}
