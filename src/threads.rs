//! Threads of the engine's own that run async code on a runtime of their
//! own (the scheduler, the agent's watch): their blocking store calls
//! never hold up the API's or the workers' runtimes.

use std::future::Future;
use std::thread::JoinHandle;

/// Starts a thread named `name` that runs the future `make` returns on a
/// single-threaded runtime with timers, until it completes.
pub fn spawn<F>(
    name: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> std::io::Result<JoinHandle<()>>
where
    F: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || rt.block_on(make()))
}
