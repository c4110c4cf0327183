//! `hog`: a WASI preview-1 command that allocates memory until refused.
//!
//! `hog` (default) allocates 1 MiB chunks and touches them until the
//! allocator fails, which aborts the program as any Rust program would.
//! `hog --graceful` uses `try_reserve` instead, prints how many MiB it got,
//! and exits 0. `hog --mib N` stops after N MiB and exits 0.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let graceful = args.iter().any(|a| a == "--graceful");
    let cap: Option<usize> = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        if Some(chunks.len()) == cap {
            println!("allocated {} MiB", chunks.len());
            return;
        }
        let mut chunk = Vec::new();
        if graceful {
            if chunk.try_reserve_exact(1 << 20).is_err() {
                println!("refused after {} MiB", chunks.len());
                return;
            }
        } else {
            chunk.reserve_exact(1 << 20);
        }
        chunk.resize(1 << 20, 0xAB);
        chunks.push(chunk);
    }
}
