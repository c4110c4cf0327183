//! The command line: one module per subcommand.

pub mod exec;

/// skiff's subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run one container here and now, like `docker run`.
    Exec(exec::Exec),
}

impl Command {
    /// Runs the subcommand and returns the process exit code.
    pub fn execute(self) -> i32 {
        match self {
            Command::Exec(c) => c.execute(),
        }
    }
}
