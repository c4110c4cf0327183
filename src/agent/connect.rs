//! Service Connect for a task: the names of its service's namespace,
//! each a service, and a guest's plain-HTTP requests to them sent to that
//! service through the ingress's router in process (no socket, no
//! outbound rule).
//!
//! As on ECS, a task knows the names its namespace had when it started:
//! a service that joins the namespace later is reachable from tasks
//! started after it (a new deployment of the caller takes it up).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use skiff_runtime::{LinkResult, ServiceLinks};

use crate::ingress::routes::Routes;
use crate::model::connect::{self, Link, Names};
use crate::store::{Store, StoreError};

/// The names a task of `service` (of `cluster`) may call: `None` when
/// its service has no Service Connect configuration or its namespace has
/// no names. Reads the store: call off the workers.
pub(crate) fn names_for(
    store: &dyn Store,
    cluster: &str,
    service: &str,
) -> Result<Option<Names>, StoreError> {
    let members = crate::store::records::connect_members(store)?;
    let Some(me) = members
        .iter()
        .find(|m| (m.cluster.as_str(), m.name.as_str()) == (cluster, service))
    else {
        return Ok(None);
    };
    let names = connect::links(me.config.namespace_name(), &members);
    Ok((!names.is_empty()).then_some(names))
}

/// A task's links: its namespace's names, answered by the node's router.
pub(crate) struct Links {
    names: Names,
    routes: Arc<Routes>,
    /// The task's worker, where a request it sends is answered when the
    /// service has a task there.
    worker: usize,
}

impl Links {
    /// Links over `names`, sent through `routes` from `worker`.
    pub(crate) fn new(names: Names, routes: Arc<Routes>, worker: usize) -> Links {
        Links {
            names,
            routes,
            worker,
        }
    }

    fn find(&self, host: &str, port: u16) -> Option<&Link> {
        self.names.get(&(host.to_string(), port))
    }
}

impl ServiceLinks for Links {
    fn links(&self, host: &str, port: u16) -> bool {
        self.find(host, port).is_some()
    }

    fn send(
        &self,
        request: hyper::Request<skiff_runtime::ResponseBody>,
    ) -> Pin<Box<dyn std::future::Future<Output = LinkResult> + Send>> {
        let link = request.uri().authority().and_then(|a| {
            let host = a.host().to_ascii_lowercase();
            self.find(&host, a.port_u16().unwrap_or(80)).cloned()
        });
        let Some(link) = link else {
            return Box::pin(async { Err(skiff_runtime::BodyError::HttpRequestDenied) });
        };
        let call = self
            .routes
            .call((link.cluster, link.service), request, self.worker);
        Box::pin(async move {
            match link.per_request_timeout {
                Some(secs) => tokio::time::timeout(Duration::from_secs(secs.into()), call)
                    .await
                    .map_err(|_| skiff_runtime::BodyError::HttpResponseTimeout),
                None => Ok(call.await),
            }
        })
    }
}
