//! What the client subcommands share: the endpoint option, an ECS API
//! call over plain HTTP/1.1, tables for people and JSON for scripts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

/// Where the API is: `--endpoint`, else `$SKIFF_ENDPOINT`, else the local
/// server's default.
#[derive(clap::Args, Clone, Debug)]
pub struct Endpoint {
    /// The skiff API, such as http://127.0.0.1:8800.
    #[arg(long, env = "SKIFF_ENDPOINT", default_value = "http://127.0.0.1:8800")]
    pub endpoint: String,
    /// The cluster.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An error to show in one line: the API's words, or why it was not
/// reached.
pub type CliError = String;

impl Endpoint {
    fn addr(&self) -> Result<(String, String), CliError> {
        let rest = self.endpoint.strip_prefix("http://").ok_or_else(|| {
            format!(
                "--endpoint {:?} must be an http:// URL, such as http://127.0.0.1:8800",
                self.endpoint
            )
        })?;
        let hostport = rest.split('/').next().unwrap_or(rest).to_string();
        let addr = if hostport.contains(':') {
            hostport.clone()
        } else {
            format!("{hostport}:80")
        };
        Ok((addr, hostport))
    }

    /// Sends one request; signs it (SigV4) when `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` are set, for `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`, else us-east-1).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, String), CliError> {
        let (addr, host) = self.addr()?;
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let mut all: Vec<(&str, &str)> = vec![("host", &host)];
        all.extend_from_slice(headers);
        let signature = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) if !id.is_empty() => {
                let region = std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".to_string());
                let service = if headers
                    .iter()
                    .any(|(_, v)| v.starts_with(crate::api::logs::LOGS_TARGET))
                {
                    "logs"
                } else {
                    "ecs"
                };
                let now = crate::auth::sigv4::now_secs();
                let req = crate::auth::sigv4::Request {
                    method,
                    path: path_only,
                    query,
                    headers: &all,
                    body: body.as_bytes(),
                };
                Some(crate::auth::sigv4::sign(
                    &req, &id, &secret, &region, service, now,
                ))
            }
            _ => None,
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (n, v) in &all {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some((date, authorization)) = signature {
            head.push_str(&format!(
                "x-amz-date: {date}\r\nauthorization: {authorization}\r\n"
            ));
        }
        let mut s = TcpStream::connect(&addr).map_err(|e| {
            format!(
                "cannot reach the skiff API at {}: {e}; start it with `skiff server` (or `skiff up`), or pass --endpoint",
                self.endpoint
            )
        })?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        write!(
            s,
            "{head}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| format!("the API connection failed: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .map_err(|e| format!("the API connection failed: {e}"))?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or("the API answered something that is not HTTP")?;
        let (headers, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }

    /// Calls an ECS action; an API error comes back as `Kind: message`.
    pub fn call(&self, action: &str, body: Value) -> Result<Value, CliError> {
        let target = format!("{}.{action}", crate::api::ECS_TARGET);
        let (status, text) = self.request(
            "POST",
            "/",
            &[
                ("x-amz-target", &target),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            &body.to_string(),
        )?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(v);
        }
        let kind = v["__type"].as_str().unwrap_or("Error");
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        Err(format!(
            "{kind}: {}",
            v["message"].as_str().unwrap_or(text.trim())
        ))
    }

    /// A task's log lines with their times: `(ms, "CONTAINER STREAM LINE")`.
    pub fn task_logs(&self, task: &str) -> Result<Vec<(u64, String)>, CliError> {
        let path = format!("/logs/{}/{task}?timestamps=1", self.cluster);
        let (status, text) = self.request("GET", &path, &[], "")?;
        if status == 404 {
            return Ok(Vec::new());
        }
        if status != 200 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let kind = v["__type"].as_str().unwrap_or("Error");
            return Err(format!(
                "{kind}: {}",
                v["message"].as_str().unwrap_or(text.trim())
            ));
        }
        Ok(text
            .lines()
            .filter_map(|l| {
                let (ms, rest) = l.split_once(' ')?;
                Some((ms.parse().ok()?, rest.to_string()))
            })
            .collect())
    }

    /// The cluster in requests.
    pub fn cluster(&self) -> Value {
        json!(self.cluster)
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Prints rows as a table with a header, columns aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// The last part of an ARN (an id or a name).
pub fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

/// How long ago `epoch_secs` was, in words (`5s`, `3m`, `2h`, `4d`).
pub fn age(epoch_secs: Option<f64>) -> String {
    let Some(t) = epoch_secs else {
        return "-".into();
    };
    let secs = (crate::model::now() - t).max(0.0) as u64;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Every task of the cluster (running, and stopped with `all`), described,
/// optionally only those of one service.
pub fn tasks(ep: &Endpoint, service: Option<&str>, all: bool) -> Result<Vec<Value>, CliError> {
    let mut arns = Vec::new();
    for desired in ["RUNNING", "STOPPED"].iter().take(if all { 2 } else { 1 }) {
        let mut token: Option<String> = None;
        loop {
            let mut req =
                json!({"cluster": ep.cluster(), "desiredStatus": desired, "maxResults": 100});
            if let Some(s) = service {
                req["serviceName"] = json!(s);
            }
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let out = ep.call("ListTasks", req)?;
            for a in out["taskArns"].as_array().into_iter().flatten() {
                arns.push(a.clone());
            }
            match out["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
    }
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let out = ep.call(
            "DescribeTasks",
            json!({"cluster": ep.cluster(), "tasks": chunk}),
        )?;
        tasks.extend(out["tasks"].as_array().cloned().unwrap_or_default());
    }
    tasks.sort_by(|a, b| {
        a["createdAt"]
            .as_f64()
            .partial_cmp(&b["createdAt"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(tasks)
}

/// Prints `v` as JSON (for `--json`).
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs a client command: its error is one line, and exit code 1.
pub fn finish(result: Result<i32, CliError>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff: {e}");
            1
        }
    }
}

/// Ends a service command: waits for the service when asked (until stable,
/// or INACTIVE with `inactive`), then prints the API's answer with
/// `--json`, else `message`.
pub fn service_done(
    ep: &Endpoint,
    out: &Value,
    name: &str,
    wait: bool,
    inactive: bool,
    message: &str,
) -> Result<i32, CliError> {
    if wait {
        wait_service(ep, name, inactive, Duration::from_secs(600))?;
    }
    if ep.json {
        print_json(out);
    } else {
        println!("{message}");
    }
    Ok(0)
}

/// Waits until a service is stable (one deployment, desired = running), or
/// INACTIVE with `inactive`; shows progress on a terminal.
pub fn wait_service(
    ep: &Endpoint,
    name: &str,
    inactive: bool,
    limit: Duration,
) -> Result<(), CliError> {
    use std::io::IsTerminal;
    let t0 = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut shown = false;
    loop {
        let out = ep.call(
            "DescribeServices",
            json!({"cluster": ep.cluster(), "services": [name]}),
        )?;
        let s = &out["services"][0];
        let done = if inactive {
            s["status"] == "INACTIVE"
        } else {
            s["status"] == "ACTIVE"
                && s["runningCount"] == s["desiredCount"]
                && s["deployments"].as_array().map(Vec::len) == Some(1)
        };
        if done {
            if shown {
                eprintln!();
            }
            return Ok(());
        }
        if terminal && t0.elapsed() > Duration::from_millis(500) {
            eprint!(
                "\rskiff: waiting for {name}: {}/{} running, {}   ",
                s["runningCount"],
                s["desiredCount"],
                s["status"].as_str().unwrap_or("?")
            );
            shown = true;
        }
        if t0.elapsed() > limit {
            let last = s["events"][0]["message"].as_str().unwrap_or("no events");
            return Err(format!(
                "{name} did not get there in {}s; its latest event: {last}",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
