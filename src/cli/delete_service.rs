//! `skiff delete-service NAME`: deletes a service (scaled to 0 first with
//! `--force`).

use std::time::Duration;

use serde_json::json;

use super::client::{finish, print_json, wait_service, CliError, Endpoint};

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
        if self.wait {
            wait_service(&self.ep, &self.name, true, Duration::from_secs(600))?;
        }
        if self.ep.json {
            print_json(&out);
        } else {
            println!("deleted service {}", self.name);
        }
        Ok(0)
    }
}
