//! The load this node reports for the scaler: every [`EVERY`] (and at once
//! when a request is held for a service with no task), its services'
//! routable tasks, requests in flight and held, and CPU and memory used
//! and reserved, written to `load/NODE` under the node's lease. Nothing is
//! written while nothing runs and nothing changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::routes::{Routes, ServiceKey};
use crate::model::scaling::{NodeLoad, LOAD};
use crate::store::NodeLease;
use crate::store::{Store, Write};

/// How often the load is reported while anything runs.
pub const EVERY: Duration = Duration::from_secs(1);

/// Requests held for a task to start, by service; and a nudge to report
/// at once.
#[derive(Default)]
pub struct Waiting {
    held: Mutex<BTreeMap<ServiceKey, Arc<AtomicU64>>>,
    nudge: Notify,
}

impl Waiting {
    /// Counts a held request of `service` until the guard drops, and has
    /// the load reported now.
    pub fn hold(&self, service: &ServiceKey) -> Held {
        let n = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service.clone())
            .or_default()
            .clone();
        n.fetch_add(1, Ordering::AcqRel);
        self.nudge.notify_one();
        Held(n)
    }

    /// Requests held now, per service.
    pub fn count(&self, service: &ServiceKey) -> u64 {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((c, s), n)| (format!("{c}/{s}"), n.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A held request; it stops counting when dropped.
pub struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// This node's load now.
pub fn measure(routes: &Routes, waiting: &Waiting) -> NodeLoad {
    let mut services = routes.load();
    for (k, n) in waiting.snapshot() {
        services.entry(k).or_default().waiting = n;
    }
    NodeLoad {
        at: crate::model::now(),
        services,
    }
}

/// Reports the load of `node` on a thread of its own until `stop`.
pub fn spawn(
    store: Arc<dyn Store>,
    node: String,
    lease: NodeLease,
    routes: Arc<Routes>,
    waiting: Arc<Waiting>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    crate::threads::spawn("skiff-load", move || async move {
        let key = format!("{LOAD}{node}");
        let mut last: Option<BTreeMap<String, crate::model::scaling::ServiceLoad>> = None;
        loop {
            let now = measure(&routes, &waiting);
            // Idle and unchanged: nothing to say.
            if !(now.services.is_empty() && last.as_ref().is_some_and(|l| l.is_empty())) {
                let value = serde_json::to_vec(&now).unwrap_or_default();
                let lease = lease.load(Ordering::Acquire);
                match store.commit(&[], &[Write::PutLeased(key.clone(), value, lease)]) {
                    Ok(_) => last = Some(now.services),
                    Err(e) => tracing::debug!("cannot report this node's load: {e}"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
                _ = waiting.nudge.notified() => {}
            }
        }
    })
}
