//! The scheduler: where tasks go. Today: placement of one task on a
//! worker of this node. Services (keeping a desired count) arrive with
//! their issue, as a reconcile step beside this.

pub mod placement;
