//! `skiff services`: the cluster's services and how their deployments go.

use serde_json::{json, Value};

use super::client::{age, finish, print_json, short, table, CliError, Endpoint};

/// List services.
#[derive(clap::Args)]
pub struct Services {
    #[command(flatten)]
    ep: Endpoint,
}

impl Services {
    /// Runs it.
    pub fn execute(self) -> i32 {
        finish(self.run())
    }

    fn run(&self) -> Result<i32, CliError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = json!({"cluster": self.ep.cluster(), "maxResults": 100});
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let out = self.ep.call("ListServices", req)?;
            names.extend(out["serviceArns"].as_array().cloned().unwrap_or_default());
            match out["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        let mut services: Vec<Value> = Vec::new();
        for chunk in names.chunks(10) {
            let out = self.ep.call(
                "DescribeServices",
                json!({"cluster": self.ep.cluster(), "services": chunk}),
            )?;
            services.extend(out["services"].as_array().cloned().unwrap_or_default());
        }
        if self.ep.json {
            print_json(&json!({ "services": services }));
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                vec![
                    s["serviceName"].as_str().unwrap_or("").to_string(),
                    s["status"].as_str().unwrap_or("").to_string(),
                    s["desiredCount"].to_string(),
                    s["runningCount"].to_string(),
                    s["pendingCount"].to_string(),
                    short(s["taskDefinition"].as_str().unwrap_or("")),
                    s["deployments"][0]["rolloutState"]
                        .as_str()
                        .unwrap_or("-")
                        .to_string(),
                    age(s["createdAt"].as_f64()),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "STATUS",
                "DESIRED",
                "RUNNING",
                "PENDING",
                "DEFINITION",
                "ROLLOUT",
                "AGE",
            ],
            &rows,
        );
        Ok(0)
    }
}
