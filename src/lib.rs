//! skiff: AWS ECS on Fargate, with WebAssembly in place of Linux containers,
//! in one binary.
//!
//! # Layout
//!
//! - [`cli`]: one module per subcommand; each is a clap struct with
//!   `execute()`: `exec` (run one container here and now), `server`, `up`
//!   (the engine plus an app).
//! - [`api`]: the ECS API (AWS JSON 1.1), one module per resource.
//! - [`auth`]: access keys, SigV4 signatures and IAM policies.
//! - [`model`]: ECS documents as validated types; ARNs and names.
//! - [`store`]: the durable store: SQLite (one node's default) or etcd, with
//!   watches from a revision and leases.
//! - [`scheduler`]: what nodes have and have promised (capacity, in the
//!   store); placement of tasks on workers; the service scheduler (a pure
//!   reconcile step and the controller that runs it on changes).
//! - [`agent`]: worker threads running tasks, which a watch of the store
//!   starts and stops (nothing calls the agent); the ledger that writes
//!   what they report to the store; container logs.
//! - [`ingress`]: the HTTP front: accept loops on the worker threads,
//!   routing by Host and hostPort to services' tasks, admission, 5xx.
//! - [`metrics`]: Prometheus text at `GET /metrics`.
//! - [`logs`]: container logs, files on the node that ran the task: their
//!   layout, rotation and reading.
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
