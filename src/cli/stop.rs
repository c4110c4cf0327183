//! `skiff stop TASK`: stops a task.

use serde_json::json;

use super::client::{finish, print_json, CliError, Endpoint};

/// Stop a task.
#[derive(clap::Args)]
pub struct Stop {
    #[command(flatten)]
    ep: Endpoint,
    /// A task id or ARN.
    #[arg(value_name = "TASK")]
    task: String,
    /// Why (shown as its stoppedReason).
    #[arg(long, default_value = "Task stopped by user")]
    reason: String,
}

impl Stop {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let out = self.ep.call(
            "StopTask",
            json!({"cluster": self.ep.cluster(), "task": self.task, "reason": self.reason}),
        )?;
        if self.ep.json {
            print_json(&out);
        } else {
            println!("stopping {}", self.task);
        }
        Ok(0)
    }
}
