//! A store for tests: another store, with hooks that run before its reads
//! and its commits (a rival writer landing between a check and its
//! commit, a store out of reach, a gate that holds reads).

use std::sync::Arc;

use super::{Condition, LeaseId, Record, Revision, Store, StoreError, Watch, Write};

type BeforeGet = Box<dyn Fn(&str) + Send + Sync>;
type BeforeCommit = Box<dyn Fn(&[Condition], &[Write]) -> Result<(), StoreError> + Send + Sync>;

/// `inner`, with hooks.
pub(crate) struct Hooked {
    inner: Arc<dyn Store>,
    before_get: BeforeGet,
    before_commit: BeforeCommit,
    max_ops: Option<usize>,
}

impl Hooked {
    /// `inner` with no hooks yet.
    pub(crate) fn new(inner: Arc<dyn Store>) -> Hooked {
        Hooked {
            inner,
            before_get: Box::new(|_| {}),
            before_commit: Box::new(|_, _| Ok(())),
            max_ops: None,
        }
    }

    /// Takes at most `n` conditions and `n` writes in one commit, and
    /// refuses a larger one as etcd does past its `--max-txn-ops`.
    pub(crate) fn max_ops(mut self, n: usize) -> Hooked {
        self.max_ops = Some(n);
        self
    }

    /// Runs `hook` with the key before each `get`.
    pub(crate) fn before_get(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Hooked {
        self.before_get = Box::new(hook);
        self
    }

    /// Runs `hook` before each commit; an error it returns is the
    /// commit's, and nothing is written.
    pub(crate) fn before_commit(
        mut self,
        hook: impl Fn(&[Condition], &[Write]) -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Hooked {
        self.before_commit = Box::new(hook);
        self
    }
}

impl Store for Hooked {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        (self.before_get)(key);
        self.inner.get(key)
    }
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.list(prefix, after, limit)
    }
    fn max_ops(&self) -> Option<usize> {
        self.max_ops.or(self.inner.max_ops())
    }
    fn commit(&self, conditions: &[Condition], writes: &[Write]) -> Result<Revision, StoreError> {
        (self.before_commit)(conditions, writes)?;
        if self
            .max_ops
            .is_some_and(|n| conditions.len() > n || writes.len() > n)
        {
            return Err(StoreError::Io(
                "etcdserver: too many operations in txn request".into(),
            ));
        }
        self.inner.commit(conditions, writes)
    }
    fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision()
    }
    fn grant(&self, ttl: std::time::Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease)
    }
    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke(lease)
    }
    fn watch(&self, prefix: &str, after: Revision) -> Watch {
        self.inner.watch(prefix, after)
    }
}
