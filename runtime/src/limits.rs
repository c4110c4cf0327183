//! Limits: a task's shared memory budget and CPU quota, and the per-run
//! fuel budget and timeout.
//!
//! A *task* (a group of guests that share limits, as a container's cgroup
//! does) owns one [`Budget`]. Every store created for that task holds a
//! [`StoreLimiter`] that reserves linear memory from the budget and a
//! [`RunMeter`] that charges the thread CPU time its guest code runs to the
//! task's CPU quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Limits shared by all guests of one task. The defaults deny nothing
/// but protect the host: no CPU quota and a 1 GiB memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hard cap on the linear memory (plus table storage) held by all live
    /// instances of the task together, in bytes. Default: 1 GiB.
    pub memory_bytes: u64,
    /// CPU units, 1024 = one whole core. Below 1024 the task may run
    /// `cpu_units / 1024` of every [`CPU_PERIOD`] and is suspended for the
    /// rest; `None` (the default) or 1024 and above mean no quota, since a
    /// task runs on one worker thread and cannot use more than one core.
    pub cpu_units: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            cpu_units: None,
        }
    }
}

/// Limits on a single run of a command or a single HTTP request. The
/// defaults are unlimited fuel and no timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Absolute fuel budget; the run stops with `OutOfFuel` when spent.
    pub fuel: Option<u64>,
    /// Wall-clock timeout; the run stops with `Timeout` when it expires.
    pub timeout: Option<Duration>,
}

/// The CPU quota period, as a CFS period: a task with `cpu_units` below 1024
/// may run `cpu_units / 1024` of each period.
pub const CPU_PERIOD: Duration = Duration::from_millis(20);

/// The live accounting of one task: memory in use and CPU time used.
/// Cheap to clone (an `Arc`); every run of the task shares it.
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    limits: Limits,
    memory_used: AtomicU64,
    memory_peak: AtomicU64,
    cpu_used_ns: AtomicU64,
    throttled_ns: AtomicU64,
    cpu: Option<Mutex<Quota>>,
}

impl Budget {
    /// A fresh budget for a task with these limits.
    pub fn new(limits: Limits) -> Budget {
        let cpu = limits
            .cpu_units
            .filter(|&u| u < 1024)
            .map(|u| Mutex::new(Quota::new(u, CPU_PERIOD, Instant::now())));
        Budget {
            inner: Arc::new(BudgetInner {
                limits,
                memory_used: AtomicU64::new(0),
                memory_peak: AtomicU64::new(0),
                cpu_used_ns: AtomicU64::new(0),
                throttled_ns: AtomicU64::new(0),
                cpu,
            }),
        }
    }

    /// The limits this budget enforces.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Linear memory held right now by all live instances of the task.
    pub fn memory_used(&self) -> u64 {
        self.inner.memory_used.load(Ordering::Relaxed)
    }

    /// The most memory the task's instances have held at once.
    pub fn memory_peak(&self) -> u64 {
        self.inner.memory_peak.load(Ordering::Relaxed)
    }

    /// Thread CPU time the task's guest code has run (with a quota only).
    pub fn cpu_used(&self) -> Duration {
        Duration::from_nanos(self.inner.cpu_used_ns.load(Ordering::Relaxed))
    }

    /// Total time the task's runs have spent suspended by its CPU quota.
    pub fn throttled(&self) -> Duration {
        Duration::from_nanos(self.inner.throttled_ns.load(Ordering::Relaxed))
    }

    /// Reserves `bytes` more memory, or refuses if that would pass the limit.
    fn reserve(&self, bytes: u64) -> bool {
        let limit = self.inner.limits.memory_bytes;
        let used = &self.inner.memory_used;
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(bytes).filter(|&n| n <= limit) else {
                return false;
            };
            match used.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.inner.memory_peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn release(&self, bytes: u64) {
        self.inner.memory_used.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn has_quota(&self) -> bool {
        self.inner.cpu.is_some()
    }

    /// Charges CPU time to the task. Returns, when the quota is spent, the
    /// instant at which the task may run again.
    fn charge(&self, ns: u64, now: Instant) -> Option<Instant> {
        self.inner.cpu_used_ns.fetch_add(ns, Ordering::Relaxed);
        let quota = self.inner.cpu.as_ref()?;
        // The lock is uncontended: a task's runs all poll on one worker
        // thread. It is a mutex only because wasmtime wants `Sync` callbacks.
        let mut q = quota.lock().unwrap_or_else(|p| p.into_inner());
        q.charge(ns, now)
    }

    fn add_throttled(&self, d: Duration) {
        self.inner
            .throttled_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// CFS-style bandwidth accounting: each period refills `quota` of run time
/// (never more than one period's worth banked); running past it leaves a
/// debt that later periods pay back before the task runs again. Overshoot
/// between two checks therefore costs the task later instead of being
/// forgiven, which keeps long-run shares exact even with coarse checks.
#[derive(Debug)]
struct Quota {
    quota_ns: i64,
    period: Duration,
    period_start: Instant,
    remaining_ns: i64,
}

impl Quota {
    fn new(cpu_units: u32, period: Duration, now: Instant) -> Quota {
        let quota_ns = (period.as_nanos() as i64 * cpu_units.max(1) as i64) / 1024;
        Quota {
            quota_ns,
            period,
            period_start: now,
            remaining_ns: quota_ns,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_start);
        let periods = (elapsed.as_nanos() / self.period.as_nanos()) as i64;
        if periods > 0 {
            self.period_start += self.period * periods as u32;
            self.remaining_ns = self
                .remaining_ns
                .saturating_add(self.quota_ns.saturating_mul(periods))
                .min(self.quota_ns);
        }
    }

    fn charge(&mut self, ns: u64, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.remaining_ns = self.remaining_ns.saturating_sub(ns as i64);
        if self.remaining_ns > 0 {
            return None;
        }
        // Periods needed until the balance is positive again.
        let debt = -self.remaining_ns;
        let periods = debt / self.quota_ns + 1;
        Some(self.period_start + self.period * periods as u32)
    }
}

/// How long past a run's deadline the host waits for the epoch check to
/// stop guest code before it abandons the run's future.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// Marks an error as "the run's wall-clock timeout expired".
#[derive(Debug)]
pub(crate) struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wall-clock timeout expired")
    }
}

impl std::error::Error for TimedOut {}

/// The per-store memory limiter: reserves from the task's budget, and
/// releases what it holds when the store is dropped.
pub(crate) struct StoreLimiter {
    budget: Budget,
    held: u64,
    peak: u64,
    /// Set when a growth was refused: a trap that follows is reported as
    /// `MemoryLimit`.
    pub refused: bool,
    /// Frees some of the task's memory held elsewhere (an idle instance)
    /// when a growth does not fit; says whether it freed any.
    reclaim: Option<Box<dyn FnMut() -> bool + Send>>,
}

/// Table elements one table may hold. Tables live in host memory (a pointer
/// or two per element); this bounds them without charging the budget.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Instances, memories and tables one store may create.
const MAX_INSTANCES: usize = 1_000;

impl StoreLimiter {
    pub fn new(budget: Budget) -> StoreLimiter {
        StoreLimiter {
            budget,
            held: 0,
            peak: 0,
            refused: false,
            reclaim: None,
        }
    }

    /// Calls `reclaim` when a growth does not fit the budget, and tries
    /// again after each call that freed something.
    pub fn reclaim_with(&mut self, reclaim: Box<dyn FnMut() -> bool + Send>) {
        self.reclaim = Some(reclaim);
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }
}

impl Drop for StoreLimiter {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let delta = desired.saturating_sub(current) as u64;
        while !self.budget.reserve(delta) {
            if !self.reclaim.as_mut().is_some_and(|r| r()) {
                self.refused = true;
                return Ok(false);
            }
        }
        self.held += delta;
        self.peak = self.peak.max(self.held);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

/// Thread CPU time of the calling thread, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Meters one run: charges the thread CPU time spent inside polls of the
/// run's future to the task's budget, and decides at each epoch tick
/// whether the run must yield, be throttled, or stop on its timeout.
pub(crate) struct RunMeter {
    budget: Budget,
    metered: bool,
    /// Thread CPU time at which the current poll began (or at which it was
    /// last charged mid-poll by an epoch check).
    poll_start_ns: AtomicU64,
    started: Instant,
    deadline: Option<Instant>,
    throttled_ns: AtomicU64,
    cpu_ns: AtomicU64,
    instantiated_ns: AtomicU64,
}

/// How long a guest may run before it yields to the other guests on its
/// worker, even when it has quota left.
const YIELD_EVERY: Duration = Duration::from_millis(10);

impl RunMeter {
    pub fn new(budget: Budget, timeout: Option<Duration>) -> Arc<RunMeter> {
        let started = Instant::now();
        Arc::new(RunMeter {
            metered: budget.has_quota(),
            budget,
            poll_start_ns: AtomicU64::new(0),
            started,
            deadline: timeout.map(|t| started + t),
            throttled_ns: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            instantiated_ns: AtomicU64::new(0),
        })
    }

    /// Records that the instance is ready (its instantiation time).
    pub fn instantiated(&self) {
        let ns = self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.instantiated_ns.store(ns.max(1), Ordering::Relaxed);
    }

    /// How long instantiation took, once it happened.
    pub fn instantiation(&self) -> Duration {
        Duration::from_nanos(self.instantiated_ns.load(Ordering::Relaxed))
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    pub fn throttled(&self) -> Duration {
        Duration::from_nanos(self.throttled_ns.load(Ordering::Relaxed))
    }

    fn begin_poll(&self) {
        if self.metered {
            self.poll_start_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        }
    }

    /// Charges the CPU time since the poll began (or was last charged).
    fn charge_now(&self) -> Option<Instant> {
        if !self.metered {
            return None;
        }
        let now_ns = thread_cpu_ns();
        let start = self.poll_start_ns.swap(now_ns, Ordering::Relaxed);
        let spent = now_ns.saturating_sub(start);
        self.cpu_ns.fetch_add(spent, Ordering::Relaxed);
        self.budget.charge(spent, Instant::now())
    }

    /// Installs the epoch callback on a store: stop on the timeout, suspend
    /// when the task's quota is spent, yield every [`YIELD_EVERY`] otherwise.
    pub fn install<T: 'static>(self: &Arc<Self>, store: &mut wasmtime::Store<T>) {
        let meter = self.clone();
        let mut last_yield = Instant::now();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_cx| {
            let now = Instant::now();
            if meter.deadline.is_some_and(|d| now >= d) {
                return Err(wasmtime::Error::new(TimedOut));
            }
            if let Some(until) = meter.charge_now() {
                let until = match meter.deadline {
                    Some(d) => until.min(d),
                    None => until,
                };
                let pause = until.saturating_duration_since(now);
                meter
                    .throttled_ns
                    .fetch_add(pause.as_nanos() as u64, Ordering::Relaxed);
                meter.budget.add_throttled(pause);
                last_yield = until;
                let sleep = tokio::time::sleep_until(until.into());
                return Ok(wasmtime::UpdateDeadline::YieldCustom(1, Box::pin(sleep)));
            }
            if now.duration_since(last_yield) >= YIELD_EVERY {
                last_yield = now;
                return Ok(wasmtime::UpdateDeadline::Yield(1));
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
    }

    /// Wraps a future so the CPU time of each of its polls is charged.
    pub fn metered<F: Future>(self: &Arc<Self>, fut: F) -> Metered<F> {
        Metered {
            inner: Box::pin(fut),
            meter: self.clone(),
        }
    }
}

/// A future whose polls are charged to a [`RunMeter`].
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<RunMeter>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.meter.begin_poll();
        let out = self.inner.as_mut().poll(cx);
        // A quota overrun found here is paid back at the next epoch check.
        let _ = self.meter.charge_now();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_is_shared_and_released() {
        let b = Budget::new(Limits {
            memory_bytes: 100,
            cpu_units: None,
        });
        let mut a = StoreLimiter::new(b.clone());
        let mut c = StoreLimiter::new(b.clone());
        use wasmtime::ResourceLimiter;
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert!(!c.memory_growing(0, 60, None).unwrap());
        assert!(c.refused);
        assert!(c.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.memory_used(), 100);
        drop(a);
        assert_eq!(b.memory_used(), 40);
        assert_eq!(b.memory_peak(), 100);
    }

    #[test]
    fn quota_throttles_and_pays_back_debt() {
        let t0 = Instant::now();
        let period = Duration::from_millis(20);
        // 256 units: 5ms of every 20ms.
        let mut q = Quota::new(256, period, t0);
        assert_eq!(q.charge(4_000_000, t0), None);
        // Overshoot by 8ms: the refill at t0+20ms brings the balance to
        // -3ms, the one at t0+40ms to +2ms, so it may run again at t0+40ms.
        let until = q.charge(9_000_000, t0 + Duration::from_millis(1));
        assert_eq!(until, Some(t0 + period * 2));
        // Refill never banks more than one period's quota.
        let mut q = Quota::new(512, period, t0);
        assert_eq!(q.charge(0, t0 + Duration::from_secs(10)), None);
        assert_eq!(q.remaining_ns, 10_000_000);
    }
}
