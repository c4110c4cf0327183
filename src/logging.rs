//! The server's log: `tracing` events on stderr, one line each, with the
//! span they happened in (`request{id=.. action=RunTask}` for an API call),
//! so that one request's lines can be found among many.
//!
//! `SKIFF_LOG` chooses what is shown, as a `tracing` filter (`debug`,
//! `skiff=debug,info`); the default shows skiff's info and the runtime
//! crates' warnings. API calls are logged at debug (`SKIFF_LOG=debug`
//! prints one line per call with its status and time); failures of the
//! server's own (5xx) at error.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// What is logged when `SKIFF_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,cranelift=warn,wasmtime=warn";

/// Installs the log for this process (once; later calls do nothing).
/// A `SKIFF_LOG` that is not a filter is said and the default used.
pub fn init() {
    let (filter, bad) = match std::env::var("SKIFF_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some((v, e))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init()
        .is_ok();
    if let (true, Some((v, e))) = (installed, bad) {
        tracing::warn!(
            "SKIFF_LOG={v:?} is not a log filter ({e}); using {DEFAULT_FILTER:?}: write a level (debug) or target=level pairs (skiff=debug,info)"
        );
    }
}

/// An error and its causes, in one line (`connection refused` is the
/// cause of hyper's `client error (Connect)`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
