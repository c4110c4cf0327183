//! The etcd store: `--store etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]`.
//!
//! etcd already is the shape of [`Store`]: one revision for the whole
//! keyspace, keys that carry their create and modify revisions,
//! transactions that compare modify revisions, and watches that start at
//! any revision it still remembers. Keys live under a namespace (default
//! `skiff/`), so that one etcd can hold several skiff clusters.
//!
//! The client (`etcd-client`, gRPC) is async; [`Store`]'s methods block,
//! so the store owns a small runtime and every call waits for its answer
//! on a channel, which works from any thread, async ones included.

use std::future::Future;
use std::time::Duration;

/// etcd's default `--max-txn-ops`: the most compares, and the most
/// operations, one transaction may carry.
pub const MAX_TXN_OPS: usize = 128;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};

use super::{
    Change, Condition, LeaseId, OpenError, Record, Revision, Store, StoreError, Watch, Write,
};

/// How long one call may take before it is an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a lease keep-alive may take.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a broken watch waits before it connects again.
const WATCH_RETRY: Duration = Duration::from_millis(200);

/// Changes a watch holds for a slow reader before etcd's stream waits.
const WATCH_BUFFER: usize = 1024;

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    client: Client,
    namespace: String,
    endpoints: Vec<String>,
    rt: ClientRuntime,
}

/// The client's runtime. Calls wait for their answers on a channel, so
/// they work from any thread, async ones included (where `block_on` would
/// panic), and it shuts down without blocking when dropped.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn start() -> Result<ClientRuntime, OpenError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("skiff-etcd")
            .enable_all()
            .build()
            .map(|rt| ClientRuntime(Some(rt)))
            .map_err(|e| OpenError::Thread {
                what: "etcd client's thread",
                message: e.to_string(),
            })
    }

    /// Runs `f` on the runtime and waits for it, at most [`CALL_TIMEOUT`].
    fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.call_within(CALL_TIMEOUT, f)
    }

    /// [`ClientRuntime::call`], waiting at most `limit`.
    fn call_within<T, F>(&self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let Some(rt) = &self.0 else {
            return Err(StoreError::Io("the etcd client was stopped".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(tokio::time::timeout(limit, f).await);
        });
        match rx.recv() {
            Ok(Ok(r)) => r.map_err(io),
            Ok(Err(_)) => Err(StoreError::Io(format!(
                "etcd did not answer within {limit:?}"
            ))),
            Err(_) => Err(StoreError::Io("the etcd client was stopped".into())),
        }
    }

    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.0 {
            rt.spawn(f);
        }
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Where an `etcd://` URL points.
#[derive(Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` for each endpoint.
    pub endpoints: Vec<String>,
    /// The prefix of every key skiff writes, ending in `/`.
    pub namespace: String,
}

impl EtcdUrl {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]`.
    pub fn parse(url: &str) -> Result<EtcdUrl, OpenError> {
        let bad = |why: &str| OpenError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("it does not start with etcd://"))?;
        let (hosts, namespace) = match rest.split_once('/') {
            Some((h, ns)) => (h, ns.trim_end_matches('/')),
            None => (rest, ""),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("the endpoint {h:?} has no :PORT")))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("the endpoint {h:?} is not HOST:PORT")));
            }
            endpoints.push(format!("http://{h}"));
        }
        if namespace.chars().any(|c| c.is_control()) {
            return Err(bad("the namespace has control characters"));
        }
        let namespace = if namespace.is_empty() {
            "skiff/".to_string()
        } else {
            format!("{namespace}/")
        };
        Ok(EtcdUrl {
            endpoints,
            namespace,
        })
    }
}

fn io(e: etcd_client::Error) -> StoreError {
    StoreError::Io(format!("etcd: {e}"))
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// range end for a prefix; `prefix` is never empty here, it holds the
/// namespace).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to etcd at `url` (see [`EtcdUrl::parse`]). Errors say what
    /// is wrong and what to do.
    pub fn open(url: &str) -> Result<EtcdStore, OpenError> {
        let target = EtcdUrl::parse(url)?;
        let rt = ClientRuntime::start()?;
        // No per-request timeout (it would cut watch streams; `call`
        // bounds single calls); HTTP/2 pings notice a dead connection.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let endpoints = target.endpoints.clone();
        let probe = target.namespace.clone();
        let client = rt
            .call(async move {
                let client = Client::connect(&endpoints, Some(options)).await?;
                // Connecting is lazy: one read shows etcd answers.
                let mut kv = client.kv_client();
                kv.get(probe, Some(GetOptions::new().with_count_only()))
                    .await?;
                Ok::<_, etcd_client::Error>(client)
            })
            .map_err(|e| OpenError::Unreachable {
                endpoints: target.endpoints.join(", "),
                message: e.to_string(),
            })?;
        Ok(EtcdStore {
            client,
            namespace: target.namespace,
            endpoints: target.endpoints,
            rt,
        })
    }

    /// The namespace keys live under (ends in `/`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The endpoints, as `http://HOST:PORT`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = self.namespace.as_bytes().to_vec();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// A stored key without the namespace.
    fn unkey(namespace: &str, key: &[u8]) -> Result<String, StoreError> {
        key.strip_prefix(namespace.as_bytes())
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::Io(format!(
                    "etcd returned a key outside {namespace} or not UTF-8: {:?}",
                    String::from_utf8_lossy(key)
                ))
            })
    }

    fn record(&self, kv: &etcd_client::KeyValue) -> Result<Record, StoreError> {
        Ok(Record {
            key: Self::unkey(&self.namespace, kv.key())?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }
}

impl Store for EtcdStore {
    /// etcd's `--max-txn-ops` (its default, 128: the server does not say
    /// what it was started with).
    fn max_ops(&self) -> Option<usize> {
        Some(MAX_TXN_OPS)
    }

    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let mut kv = self.client.kv_client();
        let k = self.key(key);
        let resp = self.rt.call(async move { kv.get(k, None).await })?;
        resp.kvs().first().map(|r| self.record(r)).transpose()
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if limit == 0 {
            // etcd reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let p = self.key(prefix);
        let end = range_end(&p);
        let start = match after {
            Some(a) if a >= prefix => {
                let mut k = self.key(a);
                k.push(0);
                k
            }
            _ => p,
        };
        let mut kv = self.client.kv_client();
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(limit.min(i64::MAX as usize) as i64);
        let resp = self
            .rt
            .call(async move { kv.get(start, Some(options)).await })?;
        resp.kvs().iter().map(|r| self.record(r)).collect()
    }

    fn commit(&self, conditions: &[Condition], writes: &[Write]) -> Result<Revision, StoreError> {
        let compares: Vec<Compare> = conditions
            .iter()
            .map(|c| match c {
                Condition::Absent(k) => Compare::version(self.key(k), CompareOp::Equal, 0),
                Condition::At(k, rev) => Compare::mod_revision(self.key(k), CompareOp::Equal, *rev),
            })
            .collect();
        // etcd refuses a transaction that writes one key twice; the last
        // write of a key is the one that counts (as in SQLite).
        let mut last = std::collections::HashMap::new();
        for (i, w) in writes.iter().enumerate() {
            last.insert(w.key(), i);
        }
        let ops: Vec<TxnOp> = writes
            .iter()
            .enumerate()
            .filter(|(i, w)| last.get(w.key()) == Some(i))
            .map(|(_, w)| match w {
                Write::Put(k, v) => TxnOp::put(self.key(k), v.clone(), None),
                Write::PutLeased(k, v, l) => TxnOp::put(
                    self.key(k),
                    v.clone(),
                    Some(PutOptions::new().with_lease(*l)),
                ),
                Write::Delete(k) => TxnOp::delete(self.key(k), None),
            })
            .collect();
        let lease = writes.iter().find_map(|w| match w {
            Write::PutLeased(_, _, l) => Some(*l),
            _ => None,
        });
        let n = ops.len();
        let mut kv = self.client.kv_client();
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self.rt.call(async move { kv.txn(txn).await }).map_err(|e| match e {
            StoreError::Io(m) if m.contains("too many operations") => StoreError::Io(format!(
                "{m}: this commit has {n} writes; start etcd with --max-txn-ops 4096 (its default is {MAX_TXN_OPS})"
            )),
            StoreError::Io(m) if m.contains("lease not found") && lease.is_some() => {
                StoreError::LeaseEnded(lease.unwrap_or_default())
            }
            e => e,
        })?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict);
        }
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Io("etcd answered a transaction without a header".into()))
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        let k = self.key("");
        let resp = self
            .rt
            .call(async move { kv.get(k, Some(GetOptions::new().with_count_only())).await })?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Io("etcd answered a read without a header".into()))
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds.
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let mut client = self.client.clone();
        self.rt
            .call(async move { client.lease_grant(secs, None).await })
            .map(|r| r.id())
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        // Short: a keep-alive that cannot get through soon is tried again
        // at the next beat, and a node cut off learns it within about a
        // TTL (it then stops its tasks), not after the long call timeout.
        let ttl = self
            .rt
            .call_within(KEEP_ALIVE_TIMEOUT, async move {
                let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(answers.message().await?.map(|a| a.ttl()))
            })
            .map_err(|e| match e {
                StoreError::Io(m) if m.contains("lease not found") => StoreError::LeaseEnded(lease),
                e => e,
            })?;
        match ttl {
            Some(t) if t > 0 => Ok(()),
            Some(_) => Err(StoreError::LeaseEnded(lease)),
            None => Err(StoreError::Io(
                "etcd closed a lease keep-alive without answering".into(),
            )),
        }
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        match self
            .rt
            .call(async move { client.lease_revoke(lease).await })
        {
            Ok(_) => Ok(()),
            Err(StoreError::Io(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn watch(&self, prefix: &str, after: Revision) -> Watch {
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let key = self.key(prefix);
        self.rt.spawn(follow(
            self.client.clone(),
            self.namespace.clone(),
            key,
            after,
            tx,
        ));
        Watch::channel(rx)
    }
}

/// Passes on etcd's watch of keys starting with `key` from revision
/// `after + 1`, connecting again where it broke off, until the reader goes
/// away or the revision it needs was compacted.
async fn follow(
    mut client: Client,
    namespace: String,
    key: Vec<u8>,
    after: Revision,
    tx: tokio::sync::mpsc::Sender<Result<Change, StoreError>>,
) {
    let end = range_end(&key);
    // Everything up to `seen` was passed on.
    let mut seen = after;
    loop {
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(seen + 1);
        let stream = tokio::select! {
            _ = tx.closed() => return,
            s = client.watch(key.clone(), Some(options)) => s,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("etcd watch: {e}; connecting again");
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    // etcd keeps the history from the compaction revision.
                    let _ = tx
                        .send(Err(StoreError::Compacted(resp.compact_revision() - 1)))
                        .await;
                    return;
                }
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let change = EtcdStore::unkey(&namespace, kv.key()).map(|key| Change {
                    revision: kv.mod_revision(),
                    key,
                    deleted: ev.event_type() == EventType::Delete,
                });
                if let Ok(c) = &change {
                    seen = seen.max(c.revision);
                }
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_namespace() {
        assert_eq!(
            EtcdUrl::parse("etcd://127.0.0.1:2379").unwrap(),
            EtcdUrl {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                namespace: "skiff/".into()
            }
        );
        assert_eq!(
            EtcdUrl::parse("etcd://a:1,b:2/prod/").unwrap(),
            EtcdUrl {
                endpoints: vec!["http://a:1".into(), "http://b:2".into()],
                namespace: "prod/".into()
            }
        );
        for bad in [
            "http://a:1",
            "etcd://a",
            "etcd://a:x",
            "etcd://:1",
            "etcd://a:1,",
        ] {
            let e = EtcdUrl::parse(bad).unwrap_err();
            assert!(matches!(&e, OpenError::BadUrl { url, .. } if url == bad));
            let e = e.to_string();
            assert!(
                e.contains("--store") && e.contains("etcd://HOST:PORT"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_range_end_bounds_a_prefix() {
        assert_eq!(range_end(b"skiff/tasks/"), b"skiff/tasks0");
        assert_eq!(range_end(b"a\xff"), b"b");
    }
}
