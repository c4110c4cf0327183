use clap::Parser;

// Every request builds and drops a store, a WASI context and an instance's
// host state: many small allocations on each worker thread at once, which
// mimalloc's per-thread heaps serve with less contention than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// skiff: ECS-compatible serverless engine for WebAssembly.
#[derive(Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: skiff::cli::Command,
}

fn main() {
    // Errors on wasmtime's request path capture a std backtrace whenever
    // RUST_BACKTRACE is set, which cost 30-40% of an HTTP request here;
    // skiff never shows those backtraces. RUST_LIB_BACKTRACE=0 turns off
    // that capture but keeps panic backtraces; a user's own setting wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: main has not started any other thread yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    std::process::exit(cli.command.execute());
}
