//! Running a command guest to completion, and the store set-up that runs
//! and requests share.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Metering, Runtime};
use crate::limits::{Budget, RunLimits, RunMeter, StoreLimiter, TimedOut};
use crate::load::{Code, Guest, LoadError};
use crate::outcome::{classify, Hit, Outcome, Report};
use crate::sandbox::Sandbox;

/// Store data that holds a [`StoreLimiter`].
pub(crate) trait HasLimiter: Send + 'static {
    fn limiter(&mut self) -> &mut StoreLimiter;
}

impl HasLimiter for crate::sandbox::P1Host {
    fn limiter(&mut self) -> &mut StoreLimiter {
        &mut self.limiter
    }
}

impl HasLimiter for crate::sandbox::P2Host {
    fn limiter(&mut self) -> &mut StoreLimiter {
        &mut self.limiter
    }
}

/// A store with the run's limits in place: the memory limiter, the fuel
/// budget and the epoch callback (timeout, CPU quota, fair yields).
pub(crate) fn new_store<T: HasLimiter>(
    rt: &Runtime,
    data: T,
    meter: &Arc<RunMeter>,
    limits: RunLimits,
) -> wasmtime::Store<T> {
    let mut store = wasmtime::Store::new(&rt.inner.engine, data);
    store.limiter(|h| h.limiter());
    arm(rt, &mut store, meter, limits);
    store
}

/// Sets a store's fuel to the run's budget and installs the run's epoch
/// callback: for a new store, and for a kept instance's store before each
/// request it serves.
pub(crate) fn arm<T: HasLimiter>(
    rt: &Runtime,
    store: &mut wasmtime::Store<T>,
    meter: &Arc<RunMeter>,
    limits: RunLimits,
) {
    if rt.inner.metering == Metering::Full {
        // Cannot fail: fuel is enabled in this engine's config.
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    }
    if rt.inner.metering != Metering::None {
        meter.install(store);
    }
}

/// The report of a finished (or abandoned) run.
pub(crate) fn report<T: HasLimiter>(
    rt: &Runtime,
    store: &mut wasmtime::Store<T>,
    meter: &RunMeter,
    budget: &Budget,
    limits: RunLimits,
    result: wasmtime::Result<Outcome>,
) -> Report {
    let fuel_budget = limits.fuel.unwrap_or(u64::MAX);
    let fuel_consumed = match rt.inner.metering {
        Metering::Full => fuel_budget.saturating_sub(store.get_fuel().unwrap_or(fuel_budget)),
        _ => 0,
    };
    let limiter = store.data_mut().limiter();
    let hit = Hit {
        memory_limited: limiter.refused,
        memory_limit: budget.limits().memory_bytes,
        fuel_budget,
        timeout: limits.timeout,
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => classify(&e, hit),
    };
    Report {
        outcome,
        fuel_consumed,
        peak_memory_bytes: limiter.peak(),
        wall: meter.started().elapsed(),
        cpu: meter.cpu(),
        throttled: meter.throttled(),
        instantiation: meter.instantiation(),
    }
}

/// Awaits `fut`, giving up at the run's deadline. The epoch callback stops
/// guest code at the deadline; this also stops a guest that is waiting in
/// a host call (a sleep, a read) when the deadline passes.
pub(crate) async fn until_deadline<F, T>(meter: &RunMeter, fut: F) -> wasmtime::Result<T>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    match meter.deadline() {
        // A little grace so that guest code is stopped by the epoch check,
        // which keeps the store consistent, whenever it is running.
        Some(d) => tokio::time::timeout_at((d + crate::limits::DEADLINE_GRACE).into(), fut)
            .await
            .unwrap_or_else(|_| Err(wasmtime::Error::new(TimedOut))),
        None => fut.await,
    }
}

impl Runtime {
    /// Runs a command guest to completion under the task's budget and this
    /// run's limits, and reports how it ended and what it cost. Never
    /// fails: every failure is an [`Outcome`].
    ///
    /// Must be called within a tokio runtime (for timers). Everything the
    /// guest does runs inside this future's polls, on the calling thread.
    pub async fn run(
        &self,
        guest: &Guest,
        budget: &Budget,
        sandbox: &Sandbox,
        limits: RunLimits,
    ) -> Report {
        let timeout = limits
            .timeout
            .filter(|_| self.inner.metering != Metering::None);
        let meter = RunMeter::new(budget.clone(), timeout);
        let limiter = StoreLimiter::new(budget.clone());
        let run = async {
            match &guest.inner.code {
                Code::P1(pre) => {
                    let host = match sandbox.p1_host(limiter) {
                        Ok(h) => h,
                        Err(e) => return sandbox_failed(e, &meter),
                    };
                    let mut store = new_store(self, host, &meter, limits);
                    let result = until_deadline(&meter, async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        meter.instantiated();
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await?;
                        Ok(Outcome::Exit(0))
                    })
                    .await;
                    report(self, &mut store, &meter, budget, limits, result)
                }
                Code::Command(pre) => {
                    let host = match sandbox.p2_host(limiter) {
                        Ok(h) => h,
                        Err(e) => return sandbox_failed(e, &meter),
                    };
                    let mut store = new_store(self, host, &meter, limits);
                    let result = until_deadline(&meter, async {
                        let command = pre.instantiate_async(&mut store).await?;
                        meter.instantiated();
                        match command.wasi_cli_run().call_run(&mut store).await? {
                            Ok(()) => Ok(Outcome::Exit(0)),
                            Err(()) => Ok(Outcome::Exit(1)),
                        }
                    })
                    .await;
                    report(self, &mut store, &meter, budget, limits, result)
                }
                Code::Http(_) => Report::bare(Outcome::LoadError(LoadError::NotRunnable {
                    what: "HTTP component",
                    exports: vec!["wasi:http/incoming-handler".into()],
                })),
            }
        };
        meter.metered(run).await
    }
}

fn sandbox_failed(e: wasmtime::Error, meter: &RunMeter) -> Report {
    let mut r = Report::bare(Outcome::LoadError(LoadError::Sandbox(format!("{e:#}"))));
    r.wall = Instant::now().saturating_duration_since(meter.started());
    r
}
