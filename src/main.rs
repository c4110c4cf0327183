use clap::Parser;

/// skiff: ECS-compatible serverless engine for WebAssembly.
#[derive(Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: skiff::cli::Command,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(cli.command.execute());
}
