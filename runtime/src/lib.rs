//! Runs one WebAssembly guest under limits. Knows nothing of ECS.
//!
//! A guest is a WASI preview-1 command module, a preview-2 command
//! component (`wasi:cli/run`) or a preview-2 HTTP component
//! (`wasi:http/incoming-handler`); the runtime tells which from the binary.
//! Guests run under a *task* [`Budget`] (a memory cap over all its live
//! instances together and a CPU quota, as a container's cgroup) and per-run
//! [`RunLimits`] (a fuel budget and a wall-clock timeout), in a [`Sandbox`]
//! that grants nothing it is not told to.
//!
//! # The recipe
//!
//! 1. Build one [`Runtime`] per process with a [`RuntimeConfig`] (give it a
//!    `cache_dir` so compiled code survives restarts).
//! 2. [`Runtime::load`] (or [`Runtime::load_file`]) the image: it is compiled
//!    once per content digest, linked and pre-instantiated. A bad image is a
//!    [`LoadError`] that says what was expected.
//! 3. Make a [`Budget`] from [`Limits`] for each task; every run and request
//!    of the task shares it.
//! 4. A command: `runtime.run(&guest, &budget, &sandbox, run_limits).await`
//!    runs it to completion and returns a [`Report`]: the typed [`Outcome`]
//!    plus the fuel, peak memory and time it took.
//! 5. An HTTP guest: build an [`HttpHandler`] and call
//!    [`HttpHandler::handle`] for each request: a fresh instance each time.
//!
//! ```no_run
//! use skiff_runtime::{Budget, Limits, Outcome, RunLimits, Runtime, RuntimeConfig, Sandbox};
//! # async fn demo() -> wasmtime::Result<()> {
//! let rt = Runtime::new(RuntimeConfig::default())?;
//! let guest = rt.load_file("guests/dist/echo.wasm")?;
//! let budget = Budget::new(Limits { memory_bytes: 64 << 20, cpu_units: Some(256) });
//! let sandbox = Sandbox { args: vec!["echo".into(), "--exit".into(), "3".into()], ..Sandbox::default() };
//! let report = rt.run(&guest, &budget, &sandbox, RunLimits::default()).await;
//! assert_eq!(report.outcome, Outcome::Exit(3));
//! # Ok(()) }
//! ```
//!
//! Guest code runs inside the polls of the future that runs it, on the
//! calling thread: a worker thread with a single-threaded tokio runtime
//! owns its tasks' guests. CPU quotas charge the thread CPU time of those
//! polls; an epoch ticker (one thread per [`Runtime`]) checks quotas and
//! timeouts every millisecond.
#![deny(missing_docs)]

mod command;
mod engine;
mod http;
mod limits;
mod load;
mod outcome;
mod sandbox;

pub use engine::{Allocation, Metering, PoolStats, Runtime, RuntimeConfig};
pub use http::{full_body, BodyError, HttpHandler, ResponseBody, IDLE_TIMEOUT, MAX_IDLE_INSTANCES};
pub use limits::{Budget, Limits, RunLimits, CPU_PERIOD};
pub use load::{binary_kind, Digest, Guest, GuestKind, LoadError};
pub use outcome::{human_bytes, human_duration, Outcome, Report, TrapKind};
pub use sandbox::{
    DenyAll, DiscardLogs, LinkResult, LocalEndpoint, LocalRequest, LocalResponse, LogSink,
    LogStream, Mount, OutboundPolicy, Sandbox, ServiceLinks, MAX_LINE, MAX_LOCAL_BODY,
};
