//! `crash`: a WASI preview-1 command that fails in the way its first
//! argument names: `unreachable`, `oob` (out-of-bounds memory access),
//! `stack-overflow` or `panic`.

/// Recursion whose frames live on the wasm stack (scalars only), so it
/// overflows the engine's stack. (Recursion with arrays in its frames
/// overflows the shadow stack in linear memory instead, which shows up as
/// an out-of-bounds access.)
#[inline(never)]
fn deep(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        std::hint::black_box(deep(std::hint::black_box(n - 1))) + 1
    }
}

fn main() {
    let how = std::env::args().nth(1).unwrap_or_default();
    match how.as_str() {
        "unreachable" => {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
        }
        "oob" => {
            let p = std::hint::black_box(usize::MAX - 7) as *const u64;
            // SAFETY: none; this guest exists to fault on purpose.
            let v = unsafe { std::ptr::read_volatile(p) };
            println!("read {v}");
        }
        "stack-overflow" => {
            println!("{}", deep(u64::MAX));
        }
        "panic" => panic!("crash guest asked to panic"),
        other => {
            eprintln!(
                "crash: unknown mode {other:?}; use unreachable, oob, stack-overflow or panic"
            );
            std::process::exit(2);
        }
    }
}
