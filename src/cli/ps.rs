//! `skiff ps`: the cluster's tasks with their status, health, node and
//! worker,
//! uptime and their service's restarts.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::client::{
    age, finish, node_and_worker, print_json, short, table, tasks, CliError, Endpoint,
};

/// List tasks.
#[derive(clap::Args)]
pub struct Ps {
    #[command(flatten)]
    ep: Endpoint,
    /// Only this service's tasks.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Stopped tasks too.
    #[arg(short, long)]
    all: bool,
}

/// Whether a stopped task failed (and so was a restart of its service).
pub fn failed(t: &Value) -> bool {
    matches!(
        t["stopCode"].as_str(),
        Some("EssentialContainerExited" | "TaskFailedToStart")
    ) || t["stoppedReason"] == "Task failed container health checks"
}

impl Ps {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let all = tasks(&self.ep, self.service.as_deref(), true)?;
        let mut restarts: HashMap<String, usize> = HashMap::new();
        for t in &all {
            if t["lastStatus"] == "STOPPED" && failed(t) {
                *restarts
                    .entry(t["group"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
        let shown: Vec<&Value> = all
            .iter()
            .filter(|t| self.all || t["desiredStatus"] == "RUNNING")
            .collect();
        if self.ep.json {
            print_json(&json!({ "tasks": shown }));
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|t| {
                let group = t["group"].as_str().unwrap_or("").to_string();
                let uptime = if t["lastStatus"] == "RUNNING" {
                    age(t["startedAt"].as_f64())
                } else {
                    "-".into()
                };
                vec![
                    short(t["taskArn"].as_str().unwrap_or("")),
                    group.clone(),
                    short(t["taskDefinitionArn"].as_str().unwrap_or("")),
                    t["lastStatus"].as_str().unwrap_or("").to_string(),
                    t["healthStatus"].as_str().unwrap_or("").to_string(),
                    node_and_worker(t),
                    uptime,
                    if group.starts_with("service:") {
                        restarts.get(&group).copied().unwrap_or(0).to_string()
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        table(
            &[
                "TASK",
                "GROUP",
                "DEFINITION",
                "STATUS",
                "HEALTH",
                "NODE/WORKER",
                "UPTIME",
                "RESTARTS",
            ],
            &rows,
        );
        Ok(0)
    }
}
