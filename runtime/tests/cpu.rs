//! CPU quotas. These compare times measured in the same test, so they hold
//! on a loaded machine; they run one at a time (a lock) so that they do not
//! compete with each other for the cores.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use skiff_runtime::{Outcome, Report, RunLimits};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Iterations of the spin guest that take roughly 100-300 ms at full speed
/// (measured by the first call, then reused).
fn work() -> String {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let n = *N.get_or_init(|| {
        // Calibrate: find an iteration count that runs ~150 ms unthrottled.
        let mut n: u64 = 10_000_000;
        loop {
            let t = spin(n, None).wall;
            if t >= Duration::from_millis(150) || n > 20_000_000_000 {
                return n;
            }
            let scale = (150.0 / t.as_millis().max(1) as f64).clamp(1.5, 10.0);
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
    let (sb, _) = sandbox(&["spin", n]);
    let r = rt()
        .run(
            &load("spin.wasm"),
            &budget(64, cpu),
            &sb,
            RunLimits::default(),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Exit(0));
    r
}

#[test]
fn quarter_cpu_takes_about_four_times_as_long() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    // A quota is a cap, not a guarantee: when something else on the
    // machine takes the cores, the unthrottled run slows down and the
    // ratio shrinks. So look for a quiet moment, a few tries at most; a
    // broken throttle fails every try.
    let mut tries = Vec::new();
    for _ in 0..3 {
        let full = block_on(spin_async(&n, Some(1024)));
        let quarter = block_on(spin_async(&n, Some(256)));
        let ratio = quarter.wall.as_secs_f64() / full.wall.as_secs_f64();
        // The throttled run ran a quarter of the time it took, load or not.
        let share = quarter.cpu.as_secs_f64() / quarter.wall.as_secs_f64();
        eprintln!(
            "cpu=1024 {:?}, cpu=256 {:?}: ratio {ratio:.2}, cpu=256 share {share:.2}",
            full.wall, quarter.wall
        );
        assert!(
            (0.18..=0.30).contains(&share),
            "a cpu=256 guest ran {share:.2} of the time (want 0.25)"
        );
        assert!(quarter.throttled > Duration::ZERO);
        assert_eq!(full.throttled, Duration::ZERO);
        if (3.0..=5.0).contains(&ratio) {
            return;
        }
        tries.push(format!("{ratio:.2}"));
    }
    panic!(
        "cpu=256 took {} times as long as cpu=1024 (want 3 to 5)",
        tries.join(", ")
    );
}

#[test]
fn two_half_cpu_guests_share_one_worker_evenly() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    let (a, b) = block_on(async {
        let t0 = Instant::now();
        let (a, b) = tokio::join!(
            async {
                spin_async(&n, Some(512)).await;
                t0.elapsed()
            },
            async {
                spin_async(&n, Some(512)).await;
                t0.elapsed()
            },
        );
        (a, b)
    });
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let spread = hi.as_secs_f64() / lo.as_secs_f64();
    eprintln!("two cpu=512 guests on one thread finished at {a:?} and {b:?}");
    assert!(
        spread <= 1.2,
        "finish times {a:?} and {b:?} differ by more than 20%"
    );
}

#[test]
fn a_throttled_guest_does_not_stall_its_neighbour() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = work();
    let alone = block_on(spin_async(&n, None)).wall;
    // The same work beside a cpu=256 guest spinning for much longer, on the
    // same single-threaded runtime (one worker).
    let beside = block_on(async {
        let long = (n.parse::<u64>().unwrap() * 20).to_string();
        let neighbour = spin_async(&long, Some(256));
        tokio::pin!(neighbour);
        let t0 = Instant::now();
        tokio::select! {
            _ = spin_async(&n, None) => t0.elapsed(),
            _ = &mut neighbour => panic!("the throttled neighbour finished first"),
        }
    });
    let ratio = beside.as_secs_f64() / alone.as_secs_f64();
    eprintln!("alone {alone:?}, beside a cpu=256 guest {beside:?}: ratio {ratio:.2}");
    // The neighbour may take a quarter of the thread: about 1.33x.
    assert!(
        ratio < 1.7,
        "a cpu=256 neighbour slowed the guest down {ratio:.2}x"
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
    // The task is charged for the run, plus the last poll's moments after
    // the report was written.
    let extra = task.cpu_used().saturating_sub(r.cpu);
    assert!(
        task.cpu_used() >= r.cpu && extra < Duration::from_millis(20),
        "{:?} vs {:?}",
        task.cpu_used(),
        r.cpu
    );
    assert_eq!(task.throttled(), r.throttled);
}
