//! `skiff register FILE`: registers a task definition (relative `image`
//! paths are relative to the file).

use std::path::PathBuf;

use super::client::{finish, print_json, CliError, Endpoint};

/// Register a task definition from a JSON file.
#[derive(clap::Args)]
pub struct Register {
    #[command(flatten)]
    ep: Endpoint,
    /// The task definition (ECS JSON).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl Register {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let app = super::up::App::load(&self.file).map_err(|e| e.to_string())?;
        let out = self.ep.call("RegisterTaskDefinition", app.taskdef)?;
        if self.ep.json {
            print_json(&out);
        } else {
            let td = &out["taskDefinition"];
            println!(
                "registered {}:{}",
                td["family"].as_str().unwrap_or(""),
                td["revision"]
            );
        }
        Ok(0)
    }
}
