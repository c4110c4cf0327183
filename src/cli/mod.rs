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
