//! The scheduler: where tasks go and how many. `capacity` is what nodes
//! have and have promised, in the store; `placement` answers which
//! node and worker a task goes to (`expr` reads its `memberOf`
//! constraints); `reconcile` compares a service with its tasks
//! and says what to start and stop; `controller` runs reconcile on every
//! change and carries out its plans, from the tasks `view` keeps.

pub mod autoscale;
pub mod backoff;
pub mod capacity;
pub mod controller;
pub mod expr;
pub mod leader;
pub mod placement;
pub mod placer;
pub mod reconcile;
pub mod view;
