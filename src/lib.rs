//! skiff: AWS ECS on Fargate, with WebAssembly in place of Linux containers,
//! in one binary.
//!
//! # Layout
//!
//! The modules are layers: each uses only those listed below it, and
//! nothing below [`api`] reaches up into it (`shared/architecture.json`
//! draws them; the "nevers" there hold).
//!
//! - [`cli`]: the composition root; one module per subcommand, each a clap
//!   struct with `execute()`: `exec` (run one container here and now),
//!   `server` (builds a node's parts, in order), `up` (the engine plus an
//!   app).
//! - [`api`]: the ECS API (AWS JSON 1.1), one module per resource; the
//!   top: it writes desired state and never calls an agent.
//! - [`ingress`]: the HTTP front: accept loops on the worker threads,
//!   routing by Host and hostPort to services' tasks, admission, 5xx.
//! - [`agent`]: worker threads running tasks, which a watch of the store
//!   starts and stops (nothing calls the agent); the `dependsOn` state
//!   machine; the ledger that writes what they report to the store.
//! - [`scheduler`]: capacity (what nodes have and have promised); the
//!   placement function and the placer, the one path RunTask, StartTask
//!   and services place through (a plan applier); the service scheduler
//!   (a pure reconcile step, and the controller that runs it on changes,
//!   with a backoff per failing service).
//! - [`images`]: OCI registries (resolve, pull, push, the cache) and module
//!   bytes between nodes.
//! - [`metrics`]: Prometheus text at `GET /metrics`.
//! - [`logs`]: container logs, files on the node that ran the task: their
//!   layout, rotation and reading.
//! - [`auth`]: access keys, SigV4 signatures, IAM policies, and the
//!   nodes' signed reads of each other.
//! - [`store`]: the durable store: SQLite (one node's default) or etcd, with
//!   watches from a revision and leases; `store::records` reads the
//!   records as their types and makes the writes several parts share.
//! - [`model`]: plain data: ECS documents as validated types, ARNs and
//!   names, and every stored record's type, key scheme and encoding.
//! - [`logging`]: the server's log (`tracing`, with a span per API call).
//! - [`threads`]: threads of the engine's own, each with a runtime.
//! - [`units`]: parsing of the units users type (`500ms`, `2s`, `64` MiB).
//!
//! Running guests under limits is the `skiff-runtime` crate's job; this
//! crate only uses its public API.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod images;
pub mod ingress;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod store;
pub mod threads;
pub mod units;
