//! What the client subcommands share: the endpoint option, an ECS API
//! call over HTTP (hyper's client, connections kept alive between calls),
//! tables for people and JSON for scripts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
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
    /// The HTTP client, made at the first call and shared by clones.
    #[arg(skip)]
    pub conn: Connection,
}

/// An error to show in one line: the API's words, or why it was not
/// reached.
pub type CliError = String;

/// How long one API call may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A single-threaded async runtime and a pooled HTTP client on it. The
/// client commands are synchronous; each call blocks on this runtime (so
/// call them off async threads, as `skiff up` does).
#[derive(Clone, Default)]
pub struct Connection(Arc<OnceLock<Result<Http, String>>>);

struct Http {
    rt: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Connection {
    fn http(&self) -> Result<&Http, CliError> {
        self.0
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(10)));
                let client = Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector);
                Ok(Http { rt, client })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Endpoint {
    /// An endpoint for `url` in `cluster`.
    pub fn new(url: impl Into<String>, cluster: impl Into<String>) -> Endpoint {
        Endpoint {
            endpoint: url.into(),
            cluster: cluster.into(),
            json: false,
            conn: Connection::default(),
        }
    }

    /// The `host[:port]` of the endpoint, checked.
    fn authority(&self) -> Result<hyper::http::uri::Authority, CliError> {
        let bad = |why: &str| {
            format!(
                "--endpoint {:?} {why}: write an http:// URL, such as http://127.0.0.1:8800",
                self.endpoint
            )
        };
        let uri: hyper::Uri = self.endpoint.parse().map_err(|_| bad("is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("is not an http:// URL"));
        }
        uri.authority().cloned().ok_or_else(|| bad("has no host"))
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
        let authority = self.authority()?;
        let host = authority.as_str();
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let mut all: Vec<(&str, &str)> = vec![("host", host)];
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
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{host}{path}"));
        for (n, v) in &all {
            req = req.header(*n, *v);
        }
        if let Some((date, authorization)) = &signature {
            req = req
                .header("x-amz-date", date.as_str())
                .header("authorization", authorization.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("cannot make the request {method} {path}: {e}"))?;
        let http = self.conn.http()?;
        let unreachable = |e: &dyn std::fmt::Display| {
            format!(
                "cannot reach the skiff API at {}: {e}; start it with `skiff server` (or `skiff up`), or pass --endpoint",
                self.endpoint
            )
        };
        http.rt.block_on(async {
            let call = async {
                let resp = http.client.request(req).await.map_err(|e| {
                    if e.is_connect() {
                        unreachable(&crate::logging::error_chain(&e))
                    } else {
                        format!(
                            "the API connection failed: {}",
                            crate::logging::error_chain(&e)
                        )
                    }
                })?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("the API connection failed: {e}"))?
                    .to_bytes();
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            };
            tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the skiff API at {} did not answer within {}s",
                        self.endpoint,
                        CALL_TIMEOUT.as_secs()
                    ))
                })
        })
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

/// Where a task runs, as `NODE/WORKER`: the first 8 characters of its
/// node's id (its container instance) and its worker thread.
pub fn node_and_worker(task: &Value) -> String {
    let node = short(task["containerInstanceArn"].as_str().unwrap_or(""));
    let node: String = node.chars().take(8).collect();
    let worker = task["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "skiff.worker")
        .and_then(|a| a["value"].as_str())
        .unwrap_or("?");
    format!("{node}/{worker}")
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

/// Waits until a service is stable (one deployment, completed, desired =
/// running), or INACTIVE with `inactive`; shows progress on a terminal.
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
                && s["deployments"][0]["rolloutState"] == "COMPLETED"
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
