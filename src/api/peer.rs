//! Reads between nodes: a task's logs live on the node that ran it, and
//! any node's API serves them, asking that node for them.
//!
//! A node answers `GET /_skiff/logs/CLUSTER/TASK` (the task's log files,
//! as JSON: container name to text), `GET /_skiff/blobs/HEX` (a module
//! by its digest, see [`crate::agent::blobs`]) and `GET /_skiff/metrics`
//! (its metrics) only to a request that carries
//! [`HEADER`], an HMAC-SHA256 of the path (with its query) and the time
//! under the secret all nodes read from the store (`secrets/peer`, made by
//! the first node that starts), within 5 minutes of the time it names:
//! whoever can read the store is trusted with everything already, and a
//! signature seen on the way is of no use for long.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use sha2::Sha256;

use super::Api;
use crate::agent::ledger;
use crate::agent::logs::{self, TaskFiles};
use crate::scheduler::capacity;
use crate::store::{Condition, Store, StoreError, Write};

/// The header that proves a request comes from a node.
pub const HEADER: &str = "x-skiff-peer";

/// The path prefix of a task's log files, for nodes.
pub const LOGS_PATH: &str = "/_skiff/logs/";

/// The store key of the nodes' shared secret.
const SECRET_KEY: &str = "secrets/peer";

/// The nodes' shared secret: read, or made if this is the first node.
pub fn secret(store: &dyn Store) -> Result<Vec<u8>, StoreError> {
    loop {
        if let Some(r) = store.get(SECRET_KEY)? {
            return Ok(r.value);
        }
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        match store.commit(
            &[Condition::Absent(SECRET_KEY.into())],
            &[Write::Put(SECRET_KEY.into(), hex.into_bytes())],
        ) {
            Ok(_) | Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How far the time in a node's signature may be from this node's clock:
/// a signature seen once cannot be used again after that.
const SKEW_SECS: u64 = 300;

fn mac(secret: &[u8], path: &str, at: u64) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(b"GET ");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(at.to_string().as_bytes());
    m
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The header value for a GET of `path` (with its query) now: the time
/// in seconds and the HMAC of both, `SECS.HEX`.
pub fn sign(secret: &[u8], path: &str) -> String {
    sign_at(secret, path, now_secs())
}

fn sign_at(secret: &[u8], path: &str, at: u64) -> String {
    let hex: String = mac(secret, path, at)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{at}.{hex}")
}

/// Whether `value` is the header for a GET of `path`, made within
/// [`SKEW_SECS`] of now (compared in constant time).
pub fn verify(secret: &[u8], path: &str, value: &str) -> bool {
    verify_at(secret, path, value, now_secs())
}

fn verify_at(secret: &[u8], path: &str, value: &str, now: u64) -> bool {
    let Some((at, hex)) = value.split_once('.') else {
        return false;
    };
    let Ok(at) = at.parse::<u64>() else {
        return false;
    };
    if secret.is_empty() || hex.len() != 64 || at.abs_diff(now) > SKEW_SECS {
        return false;
    }
    let Some(bytes) = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac(secret, path, at).verify_slice(&bytes).is_ok()
}

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
        .get(&ledger::key(cluster, task))
        .ok()
        .flatten()
        .and_then(|r| ledger::parse(&r))
        .map(|t| t.node)
        .unwrap_or_default();
    if node.is_empty() || node == api.node || api.peer_secret.is_empty() {
        return Some(None);
    }
    // The instance record outlives the node's lease: a node that is away
    // is asked all the same (it may be back).
    let addr = capacity::instance(api.store.as_ref(), &node)
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
    let addr = capacity::instance(api.store.as_ref(), node)
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
    } else if let Some(hex) = path.strip_prefix(crate::agent::blobs::BLOBS_PATH) {
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

/// The most bytes an answer from another node may have (a module, or a
/// task's logs).
const MAX_ANSWER: usize = 256 << 20;

/// How long another node gets to answer, in all.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The client nodes ask each other with: hyper's, keeping connections
/// alive between asks, on a runtime of its own, since its callers are
/// blocking threads (API handlers, image loads).
struct PeerClient {
    rt: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<Bytes>,
    >,
}

fn peer_client() -> Result<&'static PeerClient, String> {
    static CLIENT: OnceLock<Result<PeerClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // One worker drives the connections; each caller's ask runs
            // on the caller's thread.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("skiff-peers")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the peer client's runtime: {e}"))?;
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(Duration::from_secs(2)));
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector);
            Ok(PeerClient { rt, client })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// GET `path` from the node API at `addr` (HOST:PORT), signed with
/// `secret`: `Some(body)` for 200, `None` for 404. Call it from a thread
/// that may block (not from async code).
pub(crate) fn get(addr: &str, path: &str, secret: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .header(HEADER, sign(secret, path))
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("cannot ask for {path}: {e}"))?;
    let peers = peer_client()?;
    let ask = async {
        let resp = peers
            .client
            .request(req)
            .await
            .map_err(|e| crate::cli::client::error_chain(&e))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = peers.rt.block_on(async {
        tokio::time::timeout(ASK_TIMEOUT, ask)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", ASK_TIMEOUT.as_secs())))
    })?;
    match status {
        200 => Ok(Some(body.to_vec())),
        404 => Ok(None),
        other => Err(format!(
            "it answered {other}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_signs_a_path_and_only_for_a_while() {
        let s = b"0123456789abcdef";
        let path = "/_skiff/logs/default/t1?from=web~10";
        let sig = sign(s, path);
        assert!(verify(s, path, &sig));
        assert!(!verify(s, "/_skiff/logs/default/t1?from=web~0", &sig));
        assert!(!verify(s, "/_skiff/logs/default/t2", &sig));
        assert!(!verify(b"another secret!!", path, &sig));
        assert!(!verify(s, path, "zz"));
        assert!(!verify(b"", path, &sig));
        // Its time is signed: changed, it does not verify; old, neither.
        let (at, hex) = sig.split_once('.').unwrap();
        let at: u64 = at.parse().unwrap();
        assert!(!verify(s, path, &format!("{}.{hex}", at + 1)));
        let then = sign_at(s, path, at - 1000);
        assert!(verify_at(s, path, &then, at - 1000 + SKEW_SECS));
        assert!(!verify_at(s, path, &then, at - 1000 + SKEW_SECS + 1));
        assert!(!verify(s, path, &then));
    }
}
