//! How nodes prove to each other that a request comes from a node.
//!
//! A node answers the reads of other nodes (a task's logs, a module by its
//! digest, its metrics: `GET /_skiff/...`) only to a request that carries
//! [`HEADER`], an HMAC-SHA256 of the path (with its query) and the time
//! under the secret all nodes read from the store (`secrets/peer`, made by
//! the first node that starts), within 5 minutes of the time it names:
//! whoever can read the store is trusted with everything already, and a
//! signature seen on the way is of no use for long. [`get`] is the client
//! side.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{Condition, Store, StoreError, Write};

/// The header that proves a request comes from a node.
pub const HEADER: &str = "x-skiff-peer";

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

/// Why another node could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The client's own runtime could not start.
    #[error("cannot start the peer client's runtime: {0}")]
    Runtime(String),
    /// The request could not be made (a bad address or path).
    #[error("cannot ask for {path}: {message}")]
    Request {
        /// What was asked for.
        path: String,
        /// Why not.
        message: String,
    },
    /// The node could not be reached (the causes, in one line).
    #[error("{0}")]
    Unreachable(String),
    /// Its answer was cut off, or larger than an answer may be.
    #[error("reading its answer: {0}")]
    Body(String),
    /// It did not answer in time (seconds).
    #[error("no answer within {0}s")]
    Timeout(u64),
    /// It answered, but neither 200 nor 404.
    #[error("it answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its body, as text.
        body: String,
    },
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

fn peer_client() -> Result<&'static PeerClient, AskError> {
    static CLIENT: OnceLock<Result<PeerClient, AskError>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // One worker drives the connections; each caller's ask runs
            // on the caller's thread.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("skiff-peers")
                .enable_all()
                .build()
                .map_err(|e| AskError::Runtime(e.to_string()))?;
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
pub fn get(addr: &str, path: &str, secret: &[u8]) -> Result<Option<Vec<u8>>, AskError> {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .header(HEADER, sign(secret, path))
        .body(http_body_util::Empty::new())
        .map_err(|e| AskError::Request {
            path: path.to_string(),
            message: e.to_string(),
        })?;
    let peers = peer_client()?;
    let ask = async {
        let resp = peers
            .client
            .request(req)
            .await
            .map_err(|e| AskError::Unreachable(crate::logging::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AskError::Body(e.to_string()))?
            .to_bytes();
        Ok::<_, AskError>((status, body))
    };
    let (status, body) = peers.rt.block_on(async {
        tokio::time::timeout(ASK_TIMEOUT, ask)
            .await
            .unwrap_or(Err(AskError::Timeout(ASK_TIMEOUT.as_secs())))
    })?;
    match status {
        200 => Ok(Some(body.to_vec())),
        404 => Ok(None),
        other => Err(AskError::Status {
            status: other,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        }),
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
