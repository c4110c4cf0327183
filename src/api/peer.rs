//! Reads between nodes: a task's logs live on the node that ran it, and
//! any node's API serves them, asking that node for them.
//!
//! A node answers `GET /_skiff/logs/CLUSTER/TASK` (the task's log files,
//! as JSON: container name to text), `GET /_skiff/blobs/HEX` (a module
//! by its digest, see [`crate::images::blobs`]) and `GET /_skiff/metrics`
//! (its metrics) only to a request that carries
//! [`crate::auth::peer::HEADER`], an HMAC-SHA256 of the path (with its query) and the time
//! under the secret all nodes read from the store (`secrets/peer`, made by
//! the first node that starts), within 5 minutes of the time it names:
//! whoever can read the store is trusted with everything already, and a
//! signature seen on the way is of no use for long.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::Api;
use crate::auth::peer::get;
use crate::logs::{self, TaskFiles};

/// The path prefix of a task's log files, for nodes.
pub const LOGS_PATH: &str = "/_skiff/logs/";

/// A task's log files, wherever its node is: read here when it ran here,
/// asked of its node otherwise. `None` when there are none (or its node
/// cannot be reached, which is logged).
pub fn task_files(api: &Api, cluster: &str, task: &str) -> Option<TaskFiles> {
    task_files_from(api, cluster, task, &logs::Cursor::new()).map(|(files, _)| files)
}

/// Where a task's logs are: here (`None`), or the node (id, API address)
/// to ask.
fn logs_node(api: &Api, cluster: &str, task: &str) -> Option<Option<(String, String)>> {
    let node = api
        .store
        .get(&crate::model::task::key(cluster, task))
        .ok()
        .flatten()
        .and_then(|r| crate::model::task::TaskRecord::decode(&r.value))
        .map(|t| t.node)
        .unwrap_or_default();
    if node.is_empty() || node == api.node || api.peer_secret.is_empty() {
        return Some(None);
    }
    // The instance record outlives the node's lease: a node that is away
    // is asked all the same (it may be back).
    let addr = crate::store::records::instance(api.store.as_ref(), &node)
        .ok()
        .flatten()
        .and_then(|i| i.node.api)?;
    Some(Some((node, addr)))
}

/// GETs a task's logs `path` from its node `(node, addr)`; what cannot
/// be read is logged.
fn ask_logs(
    task: &str,
    (node, addr): (String, String),
    path: &str,
    secret: &[u8],
) -> Option<Vec<u8>> {
    match get(&addr, path, secret) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(
                "cannot read the logs of task {task} from its node {node} at {addr}: {e}"
            );
            None
        }
    }
}

/// The lines of a task's log files past `from`, wherever its node is,
/// and where the next read starts (see [`logs::task_files_from`]).
pub fn task_files_from(
    api: &Api,
    cluster: &str,
    task: &str,
    from: &logs::Cursor,
) -> Option<(TaskFiles, logs::Cursor)> {
    let Some(node) = logs_node(api, cluster, task)? else {
        return logs::task_files_from(&api.logs_dir, cluster, task, from);
    };
    let path = format!(
        "{LOGS_PATH}{cluster}/{task}?from={}",
        logs::cursor_to_string(from)
    );
    let body = ask_logs(task, node, &path, &api.peer_secret)?;
    let read: LogsRead = serde_json::from_slice(&body).ok()?;
    Some((read.files, logs::parse_cursor(&read.next).ok()?))
}

/// The bytes of log each container of a task keeps, wherever its node is
/// (see [`logs::task_sizes`]): its files are not read.
pub fn task_sizes(api: &Api, cluster: &str, task: &str) -> Option<logs::Sizes> {
    let Some(node) = logs_node(api, cluster, task)? else {
        return logs::task_sizes(&api.logs_dir, cluster, task);
    };
    let path = format!("{LOGS_PATH}{cluster}/{task}?sizes=1");
    let body = ask_logs(task, node, &path, &api.peer_secret)?;
    serde_json::from_slice(&body).ok()
}

/// The path of a node's metrics, for nodes.
pub const METRICS_PATH: &str = "/_skiff/metrics";

/// Another node's metrics (Prometheus text), read from it: for a
/// dashboard that sums a service's traffic over the nodes. The error is
/// the status and message to answer with (404 for a node the store does
/// not know, 502 for one that cannot be reached).
pub fn node_metrics(api: &Api, node: &str) -> Result<String, (StatusCode, String)> {
    let addr = crate::store::records::instance(api.store.as_ref(), node)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}")))?
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no container instance {node}; ListContainerInstances names them"),
            )
        })?
        .node
        .api
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("container instance {node} has no API address to read its metrics from"),
            )
        })?;
    match get(&addr, METRICS_PATH, &api.peer_secret) {
        Ok(Some(body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!("container instance {node} at {addr} has no metrics"),
        )),
        Err(e) => Err((
            StatusCode::BAD_GATEWAY,
            format!("cannot read the metrics of container instance {node} at {addr}: {e}"),
        )),
    }
}

/// What a node answers `/_skiff/logs/CLUSTER/TASK?from=CURSOR` with.
#[derive(serde::Serialize, serde::Deserialize)]
struct LogsRead {
    files: TaskFiles,
    next: String,
}

/// The answer to a node's signed GET of `path` (with its query): a task's
/// log lines (`/_skiff/logs/CLUSTER/TASK?from=CURSOR`, as JSON) or a blob
/// (`/_skiff/blobs/HEX`); 404 for what is not here.
pub fn serve(api: &Api, path: &str) -> Response<Full<Bytes>> {
    let found = if path == METRICS_PATH {
        Some((
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics_text(api).into_bytes(),
        ))
    } else if let Some(hex) = path.strip_prefix(crate::images::blobs::BLOBS_PATH) {
        api.blobs
            .as_ref()
            .and_then(|b| b.local(hex))
            .map(|b| ("application/wasm", b))
    } else {
        task_files_json(api, path).map(|j| ("application/json", j.into_bytes()))
    };
    let Some((content_type, body)) = found else {
        return super::text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            String::new(),
        );
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A task's log lines here past the query's `from`, as JSON, for
/// `/_skiff/logs/CLUSTER/TASK?from=CURSOR`; with `?sizes=1`, the bytes
/// each container keeps ([`logs::task_sizes`]).
fn task_files_json(api: &Api, path: &str) -> Option<String> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let rest = path.strip_prefix(LOGS_PATH)?;
    let (cluster, task) = rest.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ok(cluster) || !ok(task) {
        return None;
    }
    if super::query_param(query, "sizes").is_some() {
        return serde_json::to_string(&logs::task_sizes(&api.logs_dir, cluster, task)?).ok();
    }
    let from = super::query_param(query, "from")
        .map(logs::parse_cursor)
        .transpose()
        .ok()?
        .unwrap_or_default();
    let (files, next) = logs::task_files_from(&api.logs_dir, cluster, task, &from)?;
    serde_json::to_string(&LogsRead {
        files,
        next: logs::cursor_to_string(&next),
    })
    .ok()
}
