//! The command line: one module per subcommand.

pub mod exec;
pub mod server;
pub mod up;

/// skiff's subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run one container here and now, like `docker run`.
    Exec(exec::Exec),
    /// Run the engine: the ECS API, the store and the ingress.
    Server(server::Server),
    /// Start the engine and deploy an app on it (default: examples/hello).
    Up(up::Up),
}

impl Command {
    /// Runs the subcommand and returns the process exit code.
    pub fn execute(self) -> i32 {
        match self {
            Command::Exec(c) => c.execute(),
            Command::Server(c) => c.execute(),
            Command::Up(c) => c.execute(),
        }
    }
}

/// Runs `main` on a multi-threaded async runtime; a failure is printed as
/// one line and exits 1.
pub fn run_async(main: impl std::future::Future<Output = Result<(), String>>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(main) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff: {e}");
            1
        }
    }
}
