//! `skiff scale NAME COUNT`: sets a service's desired count.

use std::time::Duration;

use serde_json::json;

use super::client::{finish, print_json, wait_service, CliError, Endpoint};

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
        if self.wait {
            wait_service(&self.ep, &self.name, false, Duration::from_secs(600))?;
        }
        if self.ep.json {
            print_json(&out);
        } else {
            println!("scaled {} to {}", self.name, self.count);
        }
        Ok(0)
    }
}
