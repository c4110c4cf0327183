//! skiff: AWS ECS on Fargate, with WebAssembly in place of Linux containers,
//! in one binary.
//!
//! # Layout
//!
//! - [`cli`]: one module per subcommand; each is a clap struct with
//!   `execute()`. Today: `exec` (run one container here and now).
//! - [`ingress`]: the HTTP front: HTTP/1.1 and h2c connections, each
//!   request handed to a guest's handler, failures answered 5xx.
//! - [`units`]: parsing of the units users type (`500ms`, `2s`, `64` MiB).
//!
//! Running guests under limits is the `skiff-runtime` crate's job; this
//! crate only uses its public API. The API, store, scheduler, agent and
//! ingress of `../shared/DESIGN.md` arrive with their issues.

pub mod cli;
pub mod ingress;
pub mod units;
