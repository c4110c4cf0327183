//! `skiff logs TASK|SERVICE [-f] [--since D]`: a task's container logs, or
//! a service's (every task's, merged by time and prefixed by task).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::client::{finish, short, tasks, CliError, Endpoint};

/// Print a task's or a service's logs.
#[derive(clap::Args)]
pub struct Logs {
    #[command(flatten)]
    ep: Endpoint,
    /// A task id or ARN, or a service name.
    #[arg(value_name = "TASK|SERVICE")]
    target: String,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only lines newer than this: 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    since: Option<Duration>,
}

impl Logs {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn task_ids(&self) -> Result<(Vec<String>, bool), CliError> {
        let svc = self.ep.call(
            "DescribeServices",
            json!({"cluster": self.ep.cluster(), "services": [self.target]}),
        )?;
        if svc["services"].as_array().is_some_and(|s| !s.is_empty()) {
            let ids = tasks(&self.ep, Some(&self.target), true)?
                .iter()
                .map(|t| short(t["taskArn"].as_str().unwrap_or("")))
                .collect();
            return Ok((ids, true));
        }
        let out = self.ep.call(
            "DescribeTasks",
            json!({"cluster": self.ep.cluster(), "tasks": [self.target]}),
        )?;
        match out["tasks"].as_array().and_then(|t| t.first()) {
            Some(t) => Ok((vec![short(t["taskArn"].as_str().unwrap_or(""))], false)),
            None => Err(format!(
                "no task or service {:?} in cluster {}",
                self.target, self.ep.cluster
            )),
        }
    }

    fn run(&self) -> Result<i32, CliError> {
        let since_ms = self
            .since
            .map(|d| ((crate::model::now() - d.as_secs_f64()) * 1000.0) as u64)
            .unwrap_or(0);
        // Lines already printed, per task.
        let mut printed: HashMap<String, usize> = HashMap::new();
        loop {
            let (ids, is_service) = self.task_ids()?;
            let mut lines: Vec<(u64, String)> = Vec::new();
            for id in &ids {
                let all = self.ep.task_logs(id)?;
                let done = printed.entry(id.clone()).or_default();
                for (ms, l) in all.iter().skip(*done) {
                    if *ms >= since_ms {
                        let line = if is_service {
                            format!("{} {l}", &id[..id.len().min(12)])
                        } else {
                            l.clone()
                        };
                        lines.push((*ms, line));
                    }
                }
                *done = all.len();
            }
            lines.sort_by_key(|(ms, _)| *ms);
            for (_, l) in lines {
                println!("{l}");
            }
            if !self.follow {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
