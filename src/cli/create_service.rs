//! `skiff create-service NAME TASKDEF`: creates a service.

use serde_json::json;

use super::client::{finish, service_done, CliError, Endpoint};

/// Create a service.
#[derive(clap::Args)]
pub struct CreateService {
    #[command(flatten)]
    ep: Endpoint,
    /// The service's name.
    name: String,
    /// FAMILY, FAMILY:REVISION or an ARN.
    #[arg(value_name = "TASKDEF")]
    taskdef: String,
    /// How many tasks to keep running.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Wait until the service is stable.
    #[arg(long)]
    wait: bool,
}

impl CreateService {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let out = self.ep.call(
            "CreateService",
            json!({"cluster": self.ep.cluster(), "serviceName": self.name,
                   "taskDefinition": self.taskdef, "desiredCount": self.count}),
        )?;
        service_done(
            &self.ep,
            &out,
            &self.name,
            self.wait,
            false,
            &format!("created service {}", self.name),
        )
    }
}
