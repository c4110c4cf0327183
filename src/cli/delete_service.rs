//! `skiff delete-service NAME`: deletes a service (scaled to 0 first with
//! `--force`).

use serde_json::json;

use super::client::{finish, service_done, CliError, Endpoint};

/// Delete a service.
#[derive(clap::Args)]
pub struct DeleteService {
    #[command(flatten)]
    ep: Endpoint,
    /// The service's name.
    name: String,
    /// Delete it even while it runs tasks (they are stopped).
    #[arg(long)]
    force: bool,
    /// Wait until it is INACTIVE.
    #[arg(long)]
    wait: bool,
}

impl DeleteService {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let out = self.ep.call(
            "DeleteService",
            json!({"cluster": self.ep.cluster(), "service": self.name, "force": self.force}),
        )?;
        service_done(
            &self.ep,
            &out,
            &self.name,
            self.wait,
            true,
            &format!("deleted service {}", self.name),
        )
    }
}
