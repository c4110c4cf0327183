//! `spin`: a WASI preview-2 command component that burns CPU.
//! `spin N` runs N iterations of a xorshift loop (default 100,000,000) and
//! prints the result, so the work cannot be optimised away.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(100_000_000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    println!("spun {n} iterations: {x}");
}
