//! The custom domains every node's ingress answers on: a copy of the
//! store's domain claims (`domains/NAME`, written by the API with the
//! service that claims them), kept current by a watch.
//!
//! A lookup tries the host itself, then the wildcard one label up
//! (`api.example.com`, then `*.example.com`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::domain::{self, Claim};
use crate::store::{Revision, Store, StoreError};

/// The claimed names and their services.
#[derive(Default)]
pub struct Domains {
    names: RwLock<HashMap<String, Claim>>,
}

impl Domains {
    /// The claim a Host header (or a TLS server name) falls under.
    pub fn lookup(&self, host: &str) -> Option<Claim> {
        let (exact, wildcard) = domain::lookup_names(host)?;
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
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

    fn put(&self, name: String, claim: Option<Claim>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        match claim {
            Some(c) => names.insert(name, c),
            None => names.remove(&name),
        };
    }

    /// Reads every claim; returns the revision to watch from.
    fn relist(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let revision = store.revision()?;
        let records = store.list(domain::PREFIX, None, usize::MAX)?;
        self.set(
            records
                .iter()
                .filter_map(|r| {
                    let name = r.key.strip_prefix(domain::PREFIX)?.to_string();
                    Some((name, serde_json::from_slice(&r.value).ok()?))
                })
                .collect(),
        );
        Ok(revision)
    }

    fn sync_key(&self, store: &dyn Store, key: &str) -> Result<(), StoreError> {
        let Some(name) = key.strip_prefix(domain::PREFIX) else {
            return Ok(());
        };
        let claim = store
            .get(key)?
            .and_then(|r| serde_json::from_slice(&r.value).ok());
        self.put(name.to_string(), claim);
        Ok(())
    }
}

/// Reads the claims now (so that the ingress knows them before it takes
/// a request), then follows them on a thread of its own until `stop`.
pub fn follow(
    store: Arc<dyn Store>,
    domains: Arc<Domains>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let from = domains
        .relist(store.as_ref())
        .map_err(|e| format!("cannot read the domain claims: {e}"))?;
    crate::threads::spawn("skiff-domains", move || async move {
        let mut watch = store.watch(domain::PREFIX, from);
        loop {
            let failed = tokio::select! {
                _ = stop.cancelled() => return,
                change = watch.next() => match change {
                    Ok(c) => domains.sync_key(store.as_ref(), &c.key).err(),
                    Err(e) => Some(e),
                },
            };
            let Some(e) = failed else { continue };
            if !matches!(e, StoreError::Compacted(_)) {
                tracing::error!(
                    "the ingress's watch of domain claims failed: {e}; relisting in 1s"
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            match domains.relist(store.as_ref()) {
                Ok(from) => watch = store.watch(domain::PREFIX, from),
                Err(e) => tracing::error!("cannot read the domain claims: {e}"),
            }
        }
    })
    .map_err(|e| format!("cannot start the domain watch: {e}"))
}
