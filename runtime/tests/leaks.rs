//! A guest that traps a thousand times leaves nothing behind: no heap, no
//! resident memory, no budget. This test is alone in its binary (cargo
//! runs test binaries one after another), so the process's memory is its
//! own: no sibling test allocates while it measures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use common::*;
use skiff_runtime::{Outcome, RunLimits, TrapKind};

/// The system allocator, counting the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn a_thousand_traps_leave_the_host_healthy() {
    let g = load("crash.wasm");
    let task = budget(64, None);
    let (sb, _) = sandbox(&["crash", "unreachable"]);
    let (heap, rss) = block_on(async {
        let mut after_warmup = (0, 0);
        for i in 0..1000 {
            let r = rt().run(&g, &task, &sb, RunLimits::default()).await;
            assert!(
                matches!(
                    r.outcome,
                    Outcome::Trap {
                        kind: TrapKind::Unreachable,
                        ..
                    }
                ),
                "run {i}: {:?}",
                r.outcome
            );
            drop(r);
            if i == 99 {
                after_warmup = (LIVE.load(Relaxed), rss_bytes());
            }
        }
        (
            LIVE.load(Relaxed) - after_warmup.0,
            rss_bytes() as i64 - after_warmup.1 as i64,
        )
    });
    eprintln!("over 900 trapping runs: heap {heap:+} bytes, RSS {rss:+} bytes");
    // The count is real: the runtime, its compiled code and the pool hold
    // heap memory all along.
    assert!(
        LIVE.load(Relaxed) > 1 << 20,
        "the counting allocator saw no heap"
    );
    // The heap is exact: a few KiB of noise at most, not a byte per run
    // left behind (900 runs of a leaked backtrace would be ~1 MiB).
    assert!(
        heap < 64 << 10,
        "the heap grew by {heap} bytes over 900 trapping runs"
    );
    // Resident memory also counts guest memories and code; the pool keeps
    // its slots, so it settles after the warm-up.
    assert!(
        rss < 16 << 20,
        "RSS grew by {} KiB over 900 trapping runs",
        rss >> 10
    );
    assert_eq!(task.memory_used(), 0);
    // And the host still runs guests normally.
    let (sb, _) = sandbox(&["echo", "--exit", "0"]);
    assert_eq!(
        run(&load("echo.wasm"), &task, &sb, RunLimits::default()).outcome,
        Outcome::Exit(0)
    );
}
