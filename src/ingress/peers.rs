//! Forwarding to other nodes: a request for a service with no task on
//! this node that can take it goes to the ingress of a node that runs one.
//!
//! Which nodes run a service's tasks is read from the store (the service's
//! task index, each task's record and node's record) and kept for
//! [`FRESH`], so that a burst of requests costs one lookup. A forwarded
//! request carries [`FORWARDED`] naming its service: the node that gets
//! it answers from its own tasks or with 503, and never forwards again,
//! so a request crosses at most one hop whatever the nodes believe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use skiff_runtime::{BodyError, ResponseBody};

use super::routes::ServiceKey;
use crate::model::node::{self, Node};
use crate::model::service;
use crate::model::task::{HealthStatus, TaskStatus};
use crate::store::Store;

/// The header a forwarded request carries: `CLUSTER/SERVICE`.
pub const FORWARDED: &str = "x-skiff-forwarded-service";

/// How long a service's remote endpoints are used before they are read
/// again.
pub const FRESH: Duration = Duration::from_secs(1);

/// The request body type the ingress passes on.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BodyError>;

/// A service's remote endpoints, and when they were read.
type Cached = (Instant, Arc<Vec<String>>);

/// The other nodes' ingresses, as this node forwards to them.
pub struct Peers {
    store: Arc<dyn Store>,
    node: String,
    client: Client<HttpConnector, RequestBody>,
    cache: Mutex<HashMap<ServiceKey, Cached>>,
    next: AtomicUsize,
}

impl Peers {
    /// Forwarding for node `node`, reading the store.
    pub fn new(store: Arc<dyn Store>, node: String) -> Peers {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Peers {
            store,
            node,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            cache: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The ingress addresses of other nodes' tasks of `svc` that take
    /// requests (one entry per task), from the cache or the store.
    pub async fn endpoints(&self, svc: &ServiceKey) -> Arc<Vec<String>> {
        if let Some((at, eps)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(svc)
        {
            if at.elapsed() < FRESH {
                return eps.clone();
            }
        }
        let (store, node, key) = (self.store.clone(), self.node.clone(), svc.clone());
        let found = tokio::task::spawn_blocking(move || lookup(store.as_ref(), &node, &key))
            .await
            .unwrap_or_default();
        let found = Arc::new(found);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < FRESH);
        }
        cache.insert(svc.clone(), (Instant::now(), found.clone()));
        found
    }

    /// Sends `req` to one of `endpoints` (in turn), marked as forwarded
    /// for `svc`. A request without a body goes to the next node when one
    /// cannot be connected to (at most three are tried); one with a body
    /// is sent once. The error says why no node answered.
    pub async fn forward(
        &self,
        req: Request<RequestBody>,
        svc: &ServiceKey,
        endpoints: &[String],
    ) -> Result<Response<ResponseBody>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if let Ok(v) = HeaderValue::from_str(&format!("{}/{}", svc.0, svc.1)) {
            parts.headers.insert(FORWARDED, v);
        }
        let bodiless = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
            && !parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
        let tries = if bodiless { endpoints.len().min(3) } else { 1 };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut body = Some(body);
        let mut why = ForwardError::NoNode;
        for i in 0..tries {
            let addr = &endpoints[(start + i) % endpoints.len()];
            let Ok(uri) = format!("http://{addr}{path}").parse::<hyper::Uri>() else {
                why = ForwardError::Address(addr.clone());
                continue;
            };
            let b = body.take().unwrap_or_else(|| {
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync()
            });
            let mut r = Request::from_parts(parts.clone(), b);
            *r.uri_mut() = uri;
            match self.client.request(r).await {
                Ok(resp) => {
                    return Ok(resp.map(|b| {
                        b.map_err(|e| BodyError::InternalError(Some(e.to_string())))
                            .boxed_unsync()
                    }))
                }
                Err(source) => {
                    why = ForwardError::Failed {
                        addr: addr.clone(),
                        source,
                    }
                }
            }
        }
        Err(why)
    }
}

/// Reads the other nodes' ingress addresses for `svc`'s tasks that are
/// RUNNING and not UNHEALTHY.
fn lookup(store: &dyn Store, this: &str, (cluster, name): &ServiceKey) -> Vec<String> {
    let mut out = Vec::new();
    let mut addresses: HashMap<String, Option<String>> = HashMap::new();
    let Ok(index) = store.list(&service::tasks_prefix(cluster, name), None, usize::MAX) else {
        return out;
    };
    for r in index {
        let Some(id) = r.key.rsplit('/').next() else {
            continue;
        };
        let Ok(Some(tr)) = store.get(&crate::model::task::key(cluster, id)) else {
            continue;
        };
        let Some(t) = crate::model::task::TaskRecord::decode(&tr.value) else {
            continue;
        };
        if t.node == this
            || t.last_status != TaskStatus::Running
            || t.desired_status != crate::model::task::DesiredStatus::Running
            || t.health_status == HealthStatus::Unhealthy
        {
            continue;
        }
        let addr = addresses.entry(t.node.clone()).or_insert_with(|| {
            store
                .get(&node::node_key(&t.node))
                .ok()
                .flatten()
                .and_then(|r| serde_json::from_slice::<Node>(&r.value).ok())
                .and_then(|n| n.ingress)
        });
        if let Some(a) = addr {
            out.push(a.clone());
        }
    }
    out
}

/// The service a forwarded request names, if it is one.
pub fn forwarded_service<B>(req: &Request<B>) -> Option<ServiceKey> {
    let v = req.headers().get(FORWARDED)?.to_str().ok()?;
    let (c, s) = v.split_once('/')?;
    Some((c.to_string(), s.to_string()))
}

/// Why no other node answered a forwarded request.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no other node runs a task of the service")]
    NoNode,
    #[error("{0} is not an address to forward to")]
    Address(String),
    #[error("forwarding to the node ingress at {addr} failed: {source}")]
    Failed {
        addr: String,
        source: hyper_util::client::legacy::Error,
    },
}

/// The answer when no node could take a forwarded request.
pub fn unreachable(why: ForwardError) -> Response<ResponseBody> {
    let mut resp = Response::new(skiff_runtime::full_body(format!("{why}\n")));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
