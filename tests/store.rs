//! The store's contract, held by both backends: SQLite in a temporary
//! directory, and a real etcd (Debian's `etcd-server`) on 127.0.0.1.
//! Records, transactions that compare revisions, and watches that start
//! from a revision, survive a restart of the store, and say when history
//! was compacted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use skiff::store::{Condition, EtcdStore, Revision, SqliteStore, Store, StoreError, Watch, Write};

fn put(s: &dyn Store, keys: &[&str]) -> Revision {
    let writes: Vec<Write> = keys
        .iter()
        .map(|k| Write::Put(k.to_string(), format!("v of {k}").into_bytes()))
        .collect();
    s.commit(&[], &writes).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The next `n` changes of `w`, as (revision, key, deleted), each within
/// 20 s.
fn take(w: &mut Watch, n: usize) -> Vec<(Revision, String, bool)> {
    block_on(async {
        let mut out = Vec::new();
        for _ in 0..n {
            let c = tokio::time::timeout(Duration::from_secs(20), w.next())
                .await
                .unwrap_or_else(|_| panic!("no change within 20 s after {out:?}"))
                .unwrap();
            out.push((c.revision, c.key, c.deleted));
        }
        out
    })
}

fn keys(s: &dyn Store, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    s.list(prefix, after, limit)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect()
}

/// Records, listing and transactions.
fn records_and_transactions(s: &dyn Store) {
    let r1 = put(s, &["a/1"]);
    let r2 = put(s, &["a/2", "b/1", "a/3"]);
    assert!(r2 > r1);
    assert_eq!(s.revision().unwrap(), r2);
    let a1 = s.get("a/1").unwrap().unwrap();
    assert_eq!(
        (a1.value.as_slice(), a1.create_revision, a1.mod_revision),
        (&b"v of a/1"[..], r1, r1)
    );
    assert!(s.get("a/").unwrap().is_none());
    assert_eq!(keys(s, "a/", None, 10), ["a/1", "a/2", "a/3"]);
    assert_eq!(keys(s, "a/", Some("a/1"), 10), ["a/2", "a/3"]);
    assert_eq!(keys(s, "a/", Some("a/1"), 1), ["a/2"]);
    assert_eq!(keys(s, "a/", None, 0), Vec::<String>::new());
    assert_eq!(keys(s, "", None, 10), ["a/1", "a/2", "a/3", "b/1"]);
    assert_eq!(keys(s, "a", Some("a/3"), 10), Vec::<String>::new());

    // Conditions guard a transaction; a failed one writes nothing.
    assert_eq!(
        s.commit(
            &[Condition::Absent("a/1".into())],
            &[Write::Put("c".into(), b"x".to_vec())]
        ),
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.commit(
            &[
                Condition::At("a/1".into(), r1),
                Condition::At("a/2".into(), r1)
            ],
            &[Write::Put("c".into(), b"x".to_vec())]
        ),
        Err(StoreError::Conflict)
    );
    assert!(s.get("c").unwrap().is_none());
    assert_eq!(s.revision().unwrap(), r2);
    let r3 = s
        .commit(
            &[
                Condition::At("a/1".into(), r1),
                Condition::At("a/2".into(), r2),
                Condition::Absent("c".into()),
            ],
            &[
                Write::Put("a/1".into(), b"new".to_vec()),
                Write::Delete("a/2".into()),
                Write::Put("c".into(), b"first".to_vec()),
                Write::Put("c".into(), b"last".to_vec()),
                Write::Delete("never-was".into()),
            ],
        )
        .unwrap();
    let a1 = s.get("a/1").unwrap().unwrap();
    assert_eq!(
        (a1.value.as_slice(), a1.create_revision, a1.mod_revision),
        (&b"new"[..], r1, r3)
    );
    assert!(s.get("a/2").unwrap().is_none());
    assert_eq!(s.get("c").unwrap().unwrap().value, b"last");
    // A condition on a deleted key: absent again.
    s.commit(
        &[Condition::Absent("a/2".into())],
        &[Write::Put("a/2".into(), b"again".to_vec())],
    )
    .unwrap();
    assert_eq!(s.get("a/2").unwrap().unwrap().create_revision, r3 + 1);
    // Keys are text: multi-byte ones list in byte order.
    put(s, &["m/é", "m/z", "m/日本"]);
    assert_eq!(keys(s, "m/", None, 10), ["m/z", "m/é", "m/日本"]);
}

/// A watch from a revision: history first, then live changes, only under
/// its prefix, deletes included.
fn watches(s: Arc<dyn Store>) {
    let before = put(s.as_ref(), &["w/a"]);
    let r1 = put(s.as_ref(), &["w/b", "x/ignored", "w/c"]);
    let r2 = s.commit(&[], &[Write::Delete("w/a".into())]).unwrap();
    let mut w = s.watch("w/", before);
    assert_eq!(
        take(&mut w, 3),
        [
            (r1, "w/b".to_string(), false),
            (r1, "w/c".to_string(), false),
            (r2, "w/a".to_string(), true)
        ]
    );
    put(s.as_ref(), &["x/1"]);
    let r3 = put(s.as_ref(), &["w/d"]);
    assert_eq!(take(&mut w, 1), [(r3, "w/d".to_string(), false)]);
    // A second watch of everything, from the start, sees all of it.
    let mut all = s.watch("", before - 1);
    let got = take(&mut all, 7);
    assert_eq!(got[0], (before, "w/a".to_string(), false));
    assert_eq!(got[6], (r3, "w/d".to_string(), false));

    // Many changes to a slow reader arrive in order, none lost (1,200:
    // more than SQLite's live feed holds, so that its reader catches up
    // from history, in the middle of a commit too).
    let start = s.revision().unwrap();
    let mut slow = s.watch("n/", start);
    let mut want = Vec::new();
    for i in 0..400 {
        let ks: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|j| format!("n/{i:04}/{j}"))
            .collect();
        let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
        let r = put(s.as_ref(), &refs);
        want.extend(ks.into_iter().map(|k| (r, k, false)));
    }
    assert_eq!(take(&mut slow, want.len()), want);
}

/// Leases: a key under one lives while it is kept alive, and goes (a
/// watched delete) when it is not, or at once when it is revoked.
fn leases(s: Arc<dyn Store>) {
    let ttl = Duration::from_secs(3);
    let l = s.grant(ttl).unwrap();
    let from = s.revision().unwrap();
    let mut w = s.watch("lease/", from);
    let r = s
        .commit(
            &[],
            &[
                Write::PutLeased("lease/a".into(), b"x".to_vec(), l),
                Write::Put("lease/b".into(), b"y".to_vec()),
            ],
        )
        .unwrap();
    assert_eq!(
        take(&mut w, 2),
        [
            (r, "lease/a".to_string(), false),
            (r, "lease/b".to_string(), false)
        ]
    );
    // Kept alive for longer than its TTL: still there.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < ttl + Duration::from_secs(1) {
        s.keep_alive(l).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(s.get("lease/a").unwrap().is_some());
    // Left alone, it ends: its key is deleted, and the watch says so.
    let (_, key, deleted) = take(&mut w, 1).remove(0);
    assert_eq!((key.as_str(), deleted), ("lease/a", true));
    assert!(s.get("lease/a").unwrap().is_none());
    assert!(s.get("lease/b").unwrap().is_some());
    assert_eq!(s.keep_alive(l), Err(StoreError::LeaseEnded(l)));
    assert_eq!(
        s.commit(&[], &[Write::PutLeased("lease/c".into(), b"z".to_vec(), l)]),
        Err(StoreError::LeaseEnded(l))
    );
    assert!(s.get("lease/c").unwrap().is_none());
    // Revoked: its keys go at once; revoking again is no error.
    let l2 = s.grant(Duration::from_secs(60)).unwrap();
    s.commit(
        &[],
        &[Write::PutLeased("lease/d".into(), b"z".to_vec(), l2)],
    )
    .unwrap();
    s.revoke(l2).unwrap();
    assert!(s.get("lease/d").unwrap().is_none());
    s.revoke(l2).unwrap();
}

#[test]
fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    records_and_transactions(s.as_ref());
    watches(s.clone());
    leases(s.clone());
    let l = s.grant(Duration::from_secs(60)).unwrap();
    s.commit(&[], &[Write::PutLeased("held".into(), b"x".to_vec(), l)])
        .unwrap();
    let seen = s.revision().unwrap();
    drop(s);
    // Reopened: the records and the history are still there; the leases
    // ended with the process that held them.
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    assert!(s.get("held").unwrap().is_none());
    assert!(s.get("lease/b").unwrap().is_some());
    let r = put(s.as_ref(), &["w/after"]);
    let mut w = s.watch("w/", seen + 1);
    assert_eq!(take(&mut w, 1), [(r, "w/after".to_string(), false)]);
}

#[test]
fn etcd_keeps_the_contract() {
    let mut etcd = common::Etcd::start();
    let s: Arc<dyn Store> = Arc::new(EtcdStore::open(&etcd.url("one")).unwrap());
    // Another namespace on the same etcd sees none of it.
    let other: Arc<dyn Store> = Arc::new(EtcdStore::open(&etcd.url("two")).unwrap());
    put(other.as_ref(), &["a/other"]);
    records_and_transactions(s.as_ref());
    watches(s.clone());
    leases(s.clone());
    assert_eq!(keys(other.as_ref(), "", None, 100), ["a/other"]);

    // A watch goes on across a restart of etcd, losing nothing.
    let from = s.revision().unwrap();
    let mut w = s.watch("r/", from);
    let r = put(s.as_ref(), &["r/1"]);
    assert_eq!(take(&mut w, 1), [(r, "r/1".to_string(), false)]);
    etcd.restart();
    let r = loop {
        // The client reconnects on its own; the first calls may fail.
        match s.commit(&[], &[Write::Put("r/2".into(), b"x".to_vec())]) {
            Ok(r) => break r,
            Err(StoreError::Io(_)) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(take(&mut w, 1), [(r, "r/2".to_string(), false)]);
    // A store opened anew watches from where the old one was.
    let s2: Arc<dyn Store> = Arc::new(EtcdStore::open(&etcd.url("one")).unwrap());
    let mut w2 = s2.watch("r/", from);
    assert_eq!(take(&mut w2, 2).len(), 2);

    // Compacted history is said, with the revision it starts after.
    let now = put(s.as_ref(), &["r/3"]);
    etcd.ctl(&["compact", &now.to_string()]);
    let mut old = s.watch("r/", from);
    match block_on(async {
        tokio::time::timeout(Duration::from_secs(20), old.next())
            .await
            .unwrap()
    }) {
        Err(StoreError::Compacted(r)) => assert_eq!(r, now - 1),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[test]
fn etcd_that_is_not_there_is_named() {
    let port = common::free_port();
    let e = EtcdStore::open(&format!("etcd://127.0.0.1:{port}"))
        .err()
        .unwrap();
    assert!(matches!(e, skiff::store::OpenError::Unreachable { .. }));
    let e = e.to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("start etcd"),
        "{e}"
    );
}
