//! CPU quotas, asserted on CPU time so that they hold on a loaded machine.
//!
//! A quota is defined against wall-clock periods: each [`CPU_PERIOD`] a
//! cpu=256 guest may run a quarter of it. What a busy machine changes is
//! how much of the rest of the period the guest's thread gets a core; the
//! kernel reports that as the thread's run-queue wait
//! (`/proc/thread-self/schedstat`). Each period the guest runs
//! min(quota, time it was not waiting), which is at least a quarter of the
//! time it was not waiting and at most the quota: two bounds that hold
//! however loaded the machine is, and fail for a throttle that lets too
//! much or too little through. The tests run one at a time (a lock) so that
//! they do not compete with each other for the cores.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skiff_runtime::{Budget, Outcome, Report, RunLimits, CPU_PERIOD};

/// This thread's CPU time and time spent runnable but waiting for a core.
#[derive(Debug, Clone, Copy)]
struct Sched {
    cpu: Duration,
    waited: Duration,
    at: Instant,
}

fn sched() -> Sched {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (the kernel's per-thread scheduler statistics)");
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    Sched {
        cpu: Duration::from_nanos(f.next().unwrap()),
        waited: Duration::from_nanos(f.next().unwrap()),
        at: Instant::now(),
    }
}

impl Sched {
    /// Wall time, CPU time and run-queue wait since `self`.
    fn since(self) -> (Duration, Duration, Duration) {
        let now = sched();
        (
            now.at - self.at,
            now.cpu - self.cpu,
            now.waited - self.waited,
        )
    }
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Iterations of the spin guest that take about 150 ms of CPU time
/// (measured by the first call on the thread's own CPU clock, so that a
/// loaded machine does not shrink the work, then reused).
fn work() -> String {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let n = *N.get_or_init(|| {
        let mut n: u64 = 10_000_000;
        loop {
            let before = sched();
            spin(n, None);
            let (_, cpu, _) = before.since();
            if cpu >= Duration::from_millis(150) || n > 20_000_000_000 {
                return n;
            }
            let scale = (150.0 / cpu.as_millis().max(1) as f64).clamp(1.5, 10.0);
            n = (n as f64 * scale) as u64;
        }
    });
    n.to_string()
}

fn spin(n: u64, cpu: Option<u32>) -> Report {
    let (sb, _) = sandbox(&["spin", &n.to_string()]);
    run(
        &load("spin.wasm"),
        &budget(64, cpu),
        &sb,
        RunLimits::default(),
    )
}

async fn spin_async(n: &str, cpu: Option<u32>) -> Report {
    spin_in(n, &budget(64, cpu)).await
}

async fn spin_in(n: &str, task: &Budget) -> Report {
    let (sb, _) = sandbox(&["spin", n]);
    let r = rt()
        .run(&load("spin.wasm"), task, &sb, RunLimits::default())
        .await;
    assert_eq!(r.outcome, Outcome::Exit(0));
    r
}

#[test]
fn a_quarter_cpu_guest_runs_a_quarter_of_the_time_it_could() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    let before = sched();
    let quarter = block_on(spin_async(&n, Some(256)));
    let (wall, _, waited) = before.since();
    let could = wall.saturating_sub(waited);
    eprintln!(
        "cpu=256: {:?} of CPU in {wall:?} ({waited:?} waiting for a core), throttled {:?}",
        quarter.cpu, quarter.throttled
    );
    // At most the quota, plus the one period banked at the start.
    let cap = wall.mul_f64(0.25) + CPU_PERIOD;
    assert!(
        quarter.cpu <= cap,
        "a cpu=256 guest ran {:?} in {wall:?}: more than a quarter ({cap:?})",
        quarter.cpu
    );
    // At least a quarter of the time its thread had a core (less a margin
    // for the millisecond granularity of the checks).
    let floor = could.mul_f64(0.25 * 0.85).saturating_sub(CPU_PERIOD);
    assert!(
        quarter.cpu >= floor,
        "a cpu=256 guest ran {:?} of the {could:?} it could have: less than a quarter ({floor:?})",
        quarter.cpu
    );
    // Where its thread had a core most of the time, the quota must have
    // bound in some period (starved of cores, it never reaches it).
    if could > wall / 2 {
        assert!(
            quarter.throttled > Duration::ZERO,
            "a cpu=256 guest that could run {could:?} of {wall:?} was never throttled"
        );
    }
    // A full core's quota never throttles a single-threaded guest.
    let full = block_on(spin_async(&n, Some(1024)));
    assert_eq!(full.throttled, Duration::ZERO);
}

#[test]
fn two_half_cpu_guests_share_one_worker_evenly() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    let (a, b) = (budget(64, Some(512)), budget(64, Some(512)));
    // When the first of the two finishes, both have been charged for the
    // CPU time they ran on the one thread they share: about the same.
    let (at_a, at_b) = block_on(async {
        let (at_a, at_b) = tokio::join!(
            async {
                spin_in(&n, &a).await;
                (a.cpu_used(), b.cpu_used())
            },
            async {
                spin_in(&n, &b).await;
                (b.cpu_used(), a.cpu_used())
            },
        );
        (at_a, at_b)
    });
    let (first, other) = if at_a.0 <= at_b.0 { at_a } else { at_b };
    let share = other.as_secs_f64() / first.as_secs_f64();
    eprintln!("when the first cpu=512 guest finished ({first:?} of CPU), the other had {other:?}");
    assert!(
        (0.8..=1.25).contains(&share),
        "two cpu=512 guests on one thread got {first:?} and {other:?} of CPU"
    );
}

#[test]
fn a_throttled_guest_does_not_stall_its_neighbour() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    // The work beside a cpu=256 guest spinning for much longer, on the
    // same single-threaded runtime (one worker).
    let neighbour_budget = budget(64, Some(256));
    let (alone, wall, cpu, waited) = block_on(async {
        let long = (n.parse::<u64>().unwrap() * 20).to_string();
        let neighbour = spin_in(&long, &neighbour_budget);
        tokio::pin!(neighbour);
        let before = sched();
        let r = tokio::select! {
            r = spin_async(&n, None) => r,
            _ = &mut neighbour => panic!("the throttled neighbour finished first"),
        };
        let (wall, cpu, waited) = before.since();
        (r, wall, cpu, waited)
    });
    let neighbour = neighbour_budget.cpu_used();
    let idle = wall.saturating_sub(cpu + waited);
    assert_eq!(alone.outcome, Outcome::Exit(0));
    eprintln!(
        "beside a cpu=256 guest: {wall:?}, thread CPU {cpu:?} (the neighbour {neighbour:?}), waiting for a core {waited:?}, idle {idle:?}"
    );
    // The thread never sat idle while the guest could run: a throttled
    // neighbour is suspended, not slept on.
    assert!(
        idle < wall / 10 + CPU_PERIOD,
        "the worker thread was idle {idle:?} of {wall:?} while a guest could run"
    );
    // And the neighbour took no more than its quarter.
    assert!(
        neighbour <= wall.mul_f64(0.25) + CPU_PERIOD * 2,
        "the cpu=256 neighbour ran {neighbour:?} in {wall:?}"
    );
}

#[test]
fn quota_charges_cpu_time_to_the_task() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    let task = budget(64, Some(512));
    let (sb, _) = sandbox(&["spin", &n]);
    let r = run(&load("spin.wasm"), &task, &sb, RunLimits::default());
    assert_eq!(r.outcome, Outcome::Exit(0));
    assert!(r.cpu > Duration::from_millis(50), "{:?}", r.cpu);
    // The task is charged for the run, plus the rest of the last poll
    // after the report was written (the instance's teardown, much of it
    // in the kernel, which a loaded machine makes slower): never less
    // than the run, and far from twice it.
    let extra = task.cpu_used().saturating_sub(r.cpu);
    assert!(
        task.cpu_used() >= r.cpu && extra < r.cpu / 2,
        "the task was charged {:?} for a run of {:?}",
        task.cpu_used(),
        r.cpu
    );
    assert_eq!(task.throttled(), r.throttled);
}
