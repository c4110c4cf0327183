//! Leadership: one scheduler among the nodes sharing a store.
//!
//! The leader holds the key [`LEADER_KEY`] (its node id, see
//! [`crate::model::leader`]) under its node's
//! lease, so that when the node stops keeping the lease alive (killed,
//! frozen, cut off) the key goes and another node takes it. Every write
//! the scheduler makes carries [`Leadership::fence`], a condition on the
//! key's revision as the leader wrote it: once another node has taken the
//! key, a deposed leader's transaction fails whatever it was about to do.

use std::sync::atomic::Ordering;

use crate::store::{Condition, LeaseId, Revision, Store, StoreError, Write};

use crate::model::leader;
pub use crate::model::leader::KEY as LEADER_KEY;

pub use crate::store::NodeLease;

/// This node's side of the election.
pub struct Leadership {
    node: String,
    lease: NodeLease,
    /// The revision of the leader key this node wrote, while it leads.
    held: Option<Revision>,
}

impl Leadership {
    /// Not leading yet.
    pub fn new(node: String, lease: NodeLease) -> Leadership {
        Leadership {
            node,
            lease,
            held: None,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node believes it leads (a fenced write that fails
    /// says otherwise; see [`Leadership::check`]).
    pub fn leading(&self) -> bool {
        self.held.is_some()
    }

    /// The revision of this node's own write of the key, if it leads.
    pub fn revision(&self) -> Option<Revision> {
        self.held
    }

    /// Takes the lead if no node holds it, or holds it as this node from
    /// before (a restart, or a lease that lapsed and was granted again).
    /// Returns whether this node leads.
    pub fn campaign(&mut self, store: &dyn Store) -> Result<bool, StoreError> {
        if self.held.is_some() {
            return Ok(true);
        }
        let lease: LeaseId = self.lease.load(Ordering::SeqCst);
        let condition = match store.get(LEADER_KEY)? {
            None => Condition::Absent(LEADER_KEY.into()),
            Some(r) if leader::held_by(&r.value, &self.node) => {
                Condition::At(LEADER_KEY.into(), r.mod_revision)
            }
            Some(_) => return Ok(false),
        };
        let put = Write::PutLeased(LEADER_KEY.into(), leader::encode(&self.node), lease);
        match store.commit(&[condition], &[put]) {
            Ok(rev) => {
                self.held = Some(rev);
                tracing::info!("this node ({}) now leads the scheduler", self.node);
                Ok(true)
            }
            Err(StoreError::Conflict) => Ok(false),
            Err(StoreError::LeaseEnded(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The condition every scheduler write carries while this node leads.
    pub fn fence(&self) -> Option<Condition> {
        self.held.map(|rev| Condition::At(LEADER_KEY.into(), rev))
    }

    /// After a write conflicted or the key changed: whether this node
    /// still leads (the key still as it wrote it). If not, it steps down.
    pub fn check(&mut self, store: &dyn Store) -> Result<bool, StoreError> {
        let Some(rev) = self.held else {
            return Ok(false);
        };
        let still = store
            .get(LEADER_KEY)?
            .is_some_and(|r| r.mod_revision == rev && leader::held_by(&r.value, &self.node));
        if !still {
            self.held = None;
            tracing::warn!(
                "this node ({}) no longer leads the scheduler (its lease lapsed, or another node took the lead)",
                self.node
            );
        }
        Ok(still)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_leader_and_a_deposed_one_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let ttl = std::time::Duration::from_secs(600);
        let la: NodeLease = Arc::new(s.grant(ttl).unwrap().into());
        let lb: NodeLease = Arc::new(s.grant(ttl).unwrap().into());
        let mut a = Leadership::new("a".into(), la.clone());
        let mut b = Leadership::new("b".into(), lb);
        assert!(a.campaign(&s).unwrap());
        assert!(!b.campaign(&s).unwrap(), "a leads");
        let fenced = |l: &Leadership| {
            s.commit(
                &[l.fence().unwrap()],
                &[Write::Put("x".into(), b"1".to_vec())],
            )
        };
        fenced(&a).unwrap();
        // a's lease lapses (frozen past its TTL): b takes the lead, and
        // a's next write fails.
        s.revoke(la.load(Ordering::SeqCst)).unwrap();
        assert!(b.campaign(&s).unwrap());
        assert!(a.leading(), "a does not know yet");
        assert_eq!(fenced(&a), Err(StoreError::Conflict));
        assert!(!a.check(&s).unwrap());
        assert!(!a.leading());
        fenced(&b).unwrap();
        // a with a new lease does not take it back while b leads.
        la.store(s.grant(ttl).unwrap(), Ordering::SeqCst);
        assert!(!a.campaign(&s).unwrap());
        // The same node restarting takes its own key over at once.
        let mut b2 = Leadership::new("b".into(), Arc::new(s.grant(ttl).unwrap().into()));
        assert!(b2.campaign(&s).unwrap());
        assert!(!b.check(&s).unwrap(), "b's old life is deposed");
    }
}
