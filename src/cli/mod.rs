//! The command line: one module per subcommand.

pub mod client;
pub mod create_service;
pub mod delete_service;
pub mod describe;
pub mod exec;
pub mod logs;
pub mod ps;
pub mod push;
pub mod register;
pub mod run;
pub mod scale;
pub mod server;
pub mod services;
pub mod stop;
pub mod up;
pub mod update_service;

/// skiff's subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run one container here and now, like `docker run`.
    Exec(exec::Exec),
    /// Run the engine: the ECS API, the store and the ingress.
    Server(server::Server),
    /// Start the engine and deploy an app on it (default: examples/hello).
    Up(up::Up),
    /// List tasks: status, health, worker, uptime, restarts.
    Ps(ps::Ps),
    /// List services and their deployments.
    Services(services::Services),
    /// Show a task or a service in words: why it stopped, exit codes, events.
    Describe(describe::Describe),
    /// Print a task's or a service's logs.
    Logs(logs::Logs),
    /// Push a wasm file to an OCI registry (as a CNCF wasm artifact).
    Push(push::Push),
    /// Register a task definition from a JSON file.
    Register(register::Register),
    /// Run tasks of a task definition.
    Run(run::Run),
    /// Stop a task.
    Stop(stop::Stop),
    /// Create a service.
    CreateService(create_service::CreateService),
    /// Update a service: a new task definition, count or deployment.
    UpdateService(update_service::UpdateService),
    /// Set a service's desired count.
    Scale(scale::Scale),
    /// Delete a service.
    DeleteService(delete_service::DeleteService),
}

impl Command {
    /// Runs the subcommand and returns the process exit code.
    pub fn execute(self) -> i32 {
        match self {
            Command::Exec(c) => c.execute(),
            Command::Server(c) => c.execute(),
            Command::Up(c) => c.execute(),
            Command::Ps(c) => c.execute(),
            Command::Services(c) => c.execute(),
            Command::Describe(c) => c.execute(),
            Command::Logs(c) => c.execute(),
            Command::Push(c) => c.execute(),
            Command::Register(c) => c.execute(),
            Command::Run(c) => c.execute(),
            Command::Stop(c) => c.execute(),
            Command::CreateService(c) => c.execute(),
            Command::UpdateService(c) => c.execute(),
            Command::Scale(c) => c.execute(),
            Command::DeleteService(c) => c.execute(),
        }
    }
}

/// Runs `main` on a multi-threaded async runtime; a failure is printed as
/// one line and exits 1.
pub fn run_async<E: std::fmt::Display>(
    main: impl std::future::Future<Output = Result<(), E>>,
) -> i32 {
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
