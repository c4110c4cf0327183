//! What every node's ingress keeps a copy of, current by a watch: the
//! custom domains services claim (`domains/NAME`, written by the API with
//! the service that claims them), and which services scale to zero.
//!
//! A lookup tries the host itself, then the wildcard one label up
//! (`api.example.com`, then `*.example.com`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::domain::{self, Claim};
use crate::store::{Record, Revision, Store, StoreError};

/// The claimed names and their services.
#[derive(Default)]
pub struct Domains {
    names: RwLock<HashMap<String, Claim>>,
}

impl Domains {
    /// The claim a Host header (or a TLS server name) falls under.
    pub fn lookup(&self, host: &str) -> Option<Claim> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        // Most requests come where no name is claimed: no allocation then.
        if names.is_empty() {
            return None;
        }
        let (exact, wildcard) = domain::lookup_names(host)?;
        names
            .get(&exact)
            .or_else(|| wildcard.and_then(|w| names.get(&w)))
            .cloned()
    }

    /// Every claimed name, sorted (the names a node asks an ACME CA to
    /// certify).
    pub fn names(&self) -> Vec<String> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = names.keys().cloned().collect();
        v.sort();
        v
    }

    fn set(&self, all: HashMap<String, Claim>) {
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = all;
    }
}

/// A table kept as a copy of the records under a store prefix.
pub trait Mirror: Send + Sync + 'static {
    /// The prefix copied.
    fn prefix(&self) -> &'static str;
    /// Replaces the table with `records` (every record under the prefix).
    fn reset(&self, records: &[Record]);
    /// One key changed: its record now, or `None` when it was deleted.
    fn apply(&self, key: &str, record: Option<&Record>);
}

impl Mirror for Domains {
    fn prefix(&self) -> &'static str {
        domain::PREFIX
    }

    fn reset(&self, records: &[Record]) {
        self.set(
            records
                .iter()
                .filter_map(|r| {
                    let name = r.key.strip_prefix(domain::PREFIX)?.to_string();
                    Some((name, serde_json::from_slice(&r.value).ok()?))
                })
                .collect(),
        );
    }

    fn apply(&self, key: &str, record: Option<&Record>) {
        let Some(name) = key.strip_prefix(domain::PREFIX) else {
            return;
        };
        let claim = record.and_then(|r| serde_json::from_slice(&r.value).ok());
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        match claim {
            Some(c) => names.insert(name.to_string(), c),
            None => names.remove(name),
        };
    }
}

/// Services that scale to zero (a scalable target with MinCapacity 0):
/// a request for one with no task is held while a task starts.
#[derive(Default)]
pub struct ScaleToZero {
    services: RwLock<std::collections::HashSet<(String, String)>>,
}

impl ScaleToZero {
    /// Whether `service` scales to zero.
    pub fn holds(&self, service: &(String, String)) -> bool {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(service)
    }

    fn parse(r: &Record) -> Option<(String, String)> {
        let t: crate::model::scaling::ScalableTarget = serde_json::from_slice(&r.value).ok()?;
        (t.min == 0).then_some((t.cluster, t.service))
    }

    fn service_of(key: &str) -> Option<(String, String)> {
        let (c, s) = key
            .strip_prefix(crate::model::scaling::TARGETS)?
            .split_once('/')?;
        Some((c.to_string(), s.to_string()))
    }
}

impl Mirror for ScaleToZero {
    fn prefix(&self) -> &'static str {
        crate::model::scaling::TARGETS
    }

    fn reset(&self, records: &[Record]) {
        *self.services.write().unwrap_or_else(|p| p.into_inner()) =
            records.iter().filter_map(Self::parse).collect();
    }

    fn apply(&self, key: &str, record: Option<&Record>) {
        let Some(service) = Self::service_of(key) else {
            return;
        };
        let mut set = self.services.write().unwrap_or_else(|p| p.into_inner());
        match record.and_then(Self::parse) {
            Some(s) => set.insert(s),
            None => set.remove(&service),
        };
    }
}

fn relist(store: &dyn Store, table: &dyn Mirror) -> Result<Revision, StoreError> {
    let revision = store.revision()?;
    table.reset(&store.list(table.prefix(), None, usize::MAX)?);
    Ok(revision)
}

/// Reads `table`'s records now (so that the ingress knows them before it
/// takes a request), then follows them on a thread of its own until
/// `stop`.
pub fn follow<T: Mirror>(
    store: Arc<dyn Store>,
    table: Arc<T>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, super::FollowError> {
    let prefix = table.prefix();
    let from = relist(store.as_ref(), table.as_ref())
        .map_err(|source| super::FollowError::Read { prefix, source })?;
    crate::threads::spawn("skiff-mirror", move || async move {
        let mut watch = store.watch(prefix, from);
        loop {
            let failed = tokio::select! {
                _ = stop.cancelled() => return,
                change = watch.next() => match change {
                    Ok(c) => match store.get(&c.key) {
                        Ok(r) => {
                            table.apply(&c.key, r.as_ref());
                            None
                        }
                        Err(e) => Some(e),
                    },
                    Err(e) => Some(e),
                },
            };
            let Some(e) = failed else { continue };
            if !matches!(e, StoreError::Compacted(_)) {
                tracing::error!("the ingress's watch of {prefix} failed: {e}; relisting in 1s");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            match relist(store.as_ref(), table.as_ref()) {
                Ok(from) => watch = store.watch(prefix, from),
                Err(e) => tracing::error!("cannot read {prefix}: {e}"),
            }
        }
    })
    .map_err(|source| super::FollowError::Thread {
        what: format!("watch of {prefix}"),
        source,
    })
}
