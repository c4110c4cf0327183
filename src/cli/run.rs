//! `skiff run TASKDEF`: runs tasks of a task definition; with `--wait`,
//! waits until they stop, says how each container ended, and exits with
//! the first essential container's exit code.

use std::time::Duration;

use serde_json::{json, Value};

use super::client::{finish, print_json, short, CliError, Endpoint};

/// Run tasks.
#[derive(clap::Args)]
pub struct Run {
    #[command(flatten)]
    ep: Endpoint,
    /// FAMILY, FAMILY:REVISION or an ARN.
    #[arg(value_name = "TASKDEF")]
    taskdef: String,
    /// How many tasks (1-10).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Wait until the tasks stop; exit with the exit code of the first
    /// task's first essential container.
    #[arg(long)]
    wait: bool,
}

impl Run {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let out = self.ep.call(
            "RunTask",
            json!({"cluster": self.ep.cluster(), "taskDefinition": self.taskdef, "count": self.count}),
        )?;
        let arns: Vec<Value> = out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["taskArn"].clone())
            .collect();
        for f in out["failures"].as_array().into_iter().flatten() {
            eprintln!(
                "skiff: a task could not be placed: {} {}",
                f["reason"].as_str().unwrap_or(""),
                f["detail"].as_str().unwrap_or("")
            );
        }
        if arns.is_empty() {
            return Ok(1);
        }
        if !self.wait {
            if self.ep.json {
                print_json(&out);
            } else {
                for a in &arns {
                    println!("{}", short(a.as_str().unwrap_or("")));
                }
            }
            return Ok(0);
        }
        let t0 = std::time::Instant::now();
        let tasks = loop {
            let d = self.ep.call(
                "DescribeTasks",
                json!({"cluster": self.ep.cluster(), "tasks": arns}),
            )?;
            let tasks = d["tasks"].as_array().cloned().unwrap_or_default();
            if tasks.iter().all(|t| t["lastStatus"] == "STOPPED") {
                break tasks;
            }
            if t0.elapsed() > Duration::from_secs(3600) {
                return Err("the tasks did not stop within an hour".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if self.ep.json {
            print_json(&json!({ "tasks": tasks }));
        } else {
            for t in &tasks {
                println!(
                    "{}: {}",
                    short(t["taskArn"].as_str().unwrap_or("")),
                    t["stoppedReason"].as_str().unwrap_or("")
                );
                for c in t["containers"].as_array().into_iter().flatten() {
                    match c["exitCode"].as_i64() {
                        Some(code) => println!(
                            "  {} exited with code {code}",
                            c["name"].as_str().unwrap_or("")
                        ),
                        None => println!(
                            "  {}: {}",
                            c["name"].as_str().unwrap_or(""),
                            c["reason"].as_str().unwrap_or("stopped")
                        ),
                    }
                }
            }
        }
        let code = tasks
            .first()
            .and_then(|t| t["containers"].as_array())
            .and_then(|cs| cs.iter().find_map(|c| c["exitCode"].as_i64()))
            .unwrap_or(1);
        Ok(code.clamp(0, 255) as i32)
    }
}
