//! `skiff scale NAME COUNT`: sets a service's desired count.

use serde_json::json;

use super::client::{finish, service_done, CliError, Endpoint};

/// Scale a service.
#[derive(clap::Args)]
pub struct Scale {
    #[command(flatten)]
    ep: Endpoint,
    /// The service's name.
    name: String,
    /// How many tasks to keep running.
    count: u32,
    /// Wait until the service is stable.
    #[arg(long)]
    wait: bool,
}

impl Scale {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let out = self.ep.call(
            "UpdateService",
            json!({"cluster": self.ep.cluster(), "service": self.name, "desiredCount": self.count}),
        )?;
        service_done(
            &self.ep,
            &out,
            &self.name,
            self.wait,
            false,
            &format!("scaled {} to {}", self.name, self.count),
        )
    }
}
