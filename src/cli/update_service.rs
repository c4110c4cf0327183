//! `skiff update-service NAME`: a new task definition (a rolling
//! deployment), a new count, or a forced new deployment.

use serde_json::json;

use super::client::{finish, service_done, CliError, Endpoint};

/// Update a service.
#[derive(clap::Args)]
pub struct UpdateService {
    #[command(flatten)]
    ep: Endpoint,
    /// The service's name.
    name: String,
    /// Roll to this task definition (FAMILY, FAMILY:REVISION or an ARN).
    #[arg(long, value_name = "TASKDEF")]
    task_definition: Option<String>,
    /// How many tasks to keep running.
    #[arg(long)]
    count: Option<u32>,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    force_new_deployment: bool,
    /// Wait until the service is stable.
    #[arg(long)]
    wait: bool,
}

impl UpdateService {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let mut req = json!({"cluster": self.ep.cluster(), "service": self.name,
                             "forceNewDeployment": self.force_new_deployment});
        if let Some(t) = &self.task_definition {
            req["taskDefinition"] = json!(t);
        }
        if let Some(c) = self.count {
            req["desiredCount"] = json!(c);
        }
        let out = self.ep.call("UpdateService", req)?;
        service_done(
            &self.ep,
            &out,
            &self.name,
            self.wait,
            false,
            &format!("updated service {}", self.name),
        )
    }
}
