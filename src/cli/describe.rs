//! `skiff describe TASK|SERVICE`: one task or service in words: its status,
//! why it stopped, its containers' exit codes, its deployments and events.

use serde_json::{json, Value};

use super::client::{age, finish, node_and_worker, print_json, short, CliError, Endpoint};

/// Describe a task or a service.
#[derive(clap::Args)]
pub struct Describe {
    #[command(flatten)]
    ep: Endpoint,
    /// A task id or ARN, or a service name or ARN.
    #[arg(value_name = "TASK|SERVICE")]
    target: String,
}

impl Describe {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let c = self.ep.cluster();
        let svc = self.ep.call(
            "DescribeServices",
            json!({"cluster": c, "services": [self.target]}),
        )?;
        if let Some(s) = svc["services"].as_array().and_then(|s| s.first()) {
            if self.ep.json {
                print_json(s);
            } else {
                service(s);
            }
            return Ok(0);
        }
        let out = self.ep.call(
            "DescribeTasks",
            json!({"cluster": c, "tasks": [self.target]}),
        )?;
        let Some(t) = out["tasks"].as_array().and_then(|t| t.first()) else {
            return Err(format!(
                "no task or service {:?} in cluster {}",
                self.target, self.ep.cluster
            ));
        };
        if self.ep.json {
            print_json(t);
        } else {
            task(t);
        }
        Ok(0)
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn service(v: &Value) {
    println!("service {} ({})", s(&v["serviceName"]), s(&v["status"]));
    println!("  definition  {}", short(s(&v["taskDefinition"])));
    println!(
        "  tasks       {} running, {} pending, {} desired",
        v["runningCount"], v["pendingCount"], v["desiredCount"]
    );
    println!("  created     {} ago", age(v["createdAt"].as_f64()));
    println!("deployments:");
    for d in v["deployments"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {} running {}/{}, {} failed: {}",
            s(&d["id"]),
            s(&d["status"]),
            short(s(&d["taskDefinition"])),
            d["runningCount"],
            d["desiredCount"],
            d["failedTasks"],
            s(&d["rolloutStateReason"])
        );
    }
    println!("events (newest first):");
    for e in v["events"].as_array().into_iter().flatten().take(10) {
        println!(
            "  {} ago  {}",
            age(e["createdAt"].as_f64()),
            s(&e["message"])
        );
    }
}

fn task(v: &Value) {
    println!(
        "task {} ({}, wants {})",
        short(s(&v["taskArn"])),
        s(&v["lastStatus"]),
        s(&v["desiredStatus"])
    );
    println!("  definition  {}", short(s(&v["taskDefinitionArn"])));
    println!("  group       {}", s(&v["group"]));
    println!("  node/worker {}", node_and_worker(v));
    println!("  health      {}", s(&v["healthStatus"]));
    println!("  created     {} ago", age(v["createdAt"].as_f64()));
    if v["stopCode"].is_string() {
        println!(
            "  stopped     {} ago: {} ({})",
            age(v["stoppedAt"].as_f64().or(v["stoppingAt"].as_f64())),
            s(&v["stoppedReason"]),
            s(&v["stopCode"])
        );
    }
    println!("containers:");
    for c in v["containers"].as_array().into_iter().flatten() {
        let how = match (c["exitCode"].as_i64(), c["reason"].as_str()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(r)) => r.to_string(),
            (None, None) => String::new(),
        };
        println!(
            "  {:<12} {:<8} health {:<9} {how}",
            s(&c["name"]),
            s(&c["lastStatus"]),
            s(&c["healthStatus"])
        );
    }
}
