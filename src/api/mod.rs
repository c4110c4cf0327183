//! The ECS API: AWS JSON 1.1 over HTTP, as ECS speaks it.
//!
//! `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Action>`
//! and a JSON body. The region of ARNs is the one the request was signed
//! for (the credential scope of its SigV4 `Authorization` header). With
//! keys (`--auth`), every request must be signed by one ([`crate::auth`])
//! and allowed by its policy ([`access`] says what a call acts on);
//! without, any request is accepted. Each action is a synchronous function
//! of the request that reads and writes the store; it runs off the async
//! threads, and its answer is sent only after its writes are durable.
//!
//! Also here: `GET /metrics` (Prometheus text, of this node or, with
//! `?node=ID`, of another, read through it; without a key only from
//! loopback), `GET /logs/CLUSTER/TASK` (a task's output as text) and the
//! dashboard under `GET /ui/` ([`ui`]).

pub mod access;
pub mod account_settings;
pub mod attributes;
pub mod autoscaling;
pub mod cloudmap;
pub mod clusters;
pub mod connect;
pub mod deployments;
pub mod error;
pub mod instances;
pub mod log_groups;
pub mod logs;
pub mod page;
pub mod peer;
pub mod protection;
pub mod services;
pub mod tags;
pub mod task_definitions;
pub mod tasks;
pub mod ui;

use std::future::Future;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::model::arn::Scope;
use crate::store::{Record, Revision, Store};
use error::{ApiError, ApiResult, Kind};

/// The JSON 1.1 target prefix of ECS.
pub const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113";

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// What every action can reach.
pub struct Api {
    /// The durable store.
    pub store: Arc<dyn Store>,
    /// The account in ARNs.
    pub account: String,
    /// The region when a request carries no credential scope.
    pub default_region: String,
    /// Where container logs are kept.
    pub logs_dir: std::path::PathBuf,
    /// This node's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The access keys requests must be signed with; `None` accepts any
    /// request (only when the API listens on loopback, or the operator
    /// said `--insecure-no-auth`).
    pub keys: Option<crate::auth::Keys>,
    /// Where task definitions may name host files (images, volumes).
    pub host_roots: crate::model::hostfs::HostRoots,
    /// This node's id (a task's logs are read here when it ran here).
    pub node: String,
    /// The nodes' shared secret, for reads between nodes (empty: none).
    pub peer_secret: Vec<u8>,
    /// Module bytes by digest: kept at registration, served to nodes.
    pub blobs: Option<Arc<crate::images::blobs::Blobs>>,
    /// Registries, to resolve the tags of a deployment's images.
    pub registry: Option<Arc<crate::images::Registry>>,
}

/// An action: request JSON in, response JSON out.
pub(crate) type Action = fn(&Api, &Scope, &Value) -> ApiResult;

/// The ECS actions served, by name.
const ECS_ACTIONS: &[(&str, Action)] = &[
    ("CreateCluster", clusters::create),
    ("DescribeClusters", clusters::describe),
    ("ListClusters", clusters::list),
    ("DeleteCluster", clusters::delete),
    ("UpdateCluster", clusters::update),
    ("UpdateClusterSettings", clusters::update),
    (
        "PutClusterCapacityProviders",
        clusters::put_capacity_providers,
    ),
    (
        "DescribeCapacityProviders",
        clusters::describe_capacity_providers,
    ),
    ("CreateCapacityProvider", clusters::custom_capacity_provider),
    ("UpdateCapacityProvider", clusters::custom_capacity_provider),
    ("DeleteCapacityProvider", clusters::custom_capacity_provider),
    ("PutAccountSetting", account_settings::put),
    ("PutAccountSettingDefault", account_settings::put_default),
    ("DeleteAccountSetting", account_settings::delete),
    ("ListAccountSettings", account_settings::list),
    ("RegisterTaskDefinition", task_definitions::register),
    ("DescribeTaskDefinition", task_definitions::describe),
    ("ListTaskDefinitions", task_definitions::list),
    (
        "ListTaskDefinitionFamilies",
        task_definitions::list_families,
    ),
    ("DeregisterTaskDefinition", task_definitions::deregister),
    ("DeleteTaskDefinitions", task_definitions::delete),
    ("RunTask", tasks::run),
    ("StartTask", tasks::start),
    ("StopTask", tasks::stop),
    ("DescribeTasks", tasks::describe),
    ("ListTasks", tasks::list),
    ("UpdateTaskProtection", protection::update),
    ("GetTaskProtection", protection::get),
    ("CreateService", services::create),
    ("UpdateService", services::update),
    ("DeleteService", services::delete),
    ("DescribeServices", services::describe),
    ("ListServices", services::list),
    ("ListServiceDeployments", deployments::list_deployments),
    (
        "DescribeServiceDeployments",
        deployments::describe_deployments,
    ),
    ("StopServiceDeployment", deployments::stop_deployment),
    ("DescribeServiceRevisions", deployments::describe_revisions),
    ("ListContainerInstances", instances::list),
    ("DescribeContainerInstances", instances::describe),
    ("UpdateContainerInstancesState", instances::update_state),
    ("DeregisterContainerInstance", instances::deregister),
    ("PutAttributes", attributes::put),
    ("DeleteAttributes", attributes::delete),
    ("ListAttributes", attributes::list),
    ("TagResource", tags::tag),
    ("UntagResource", tags::untag),
    ("ListTagsForResource", tags::list),
    // New actions go last: the fuzz seeds pick actions by position.
    (
        "ListServicesByNamespace",
        connect::list_services_by_namespace,
    ),
];

/// Every `X-Amz-Target` the API answers: ECS's actions, then CloudWatch
/// Logs'.
pub fn targets() -> impl Iterator<Item = String> {
    let ecs = ECS_ACTIONS.iter().map(|(n, _)| format!("{ECS_TARGET}.{n}"));
    let logs = logs::ACTIONS
        .iter()
        .map(|(n, _)| format!("{}.{n}", logs::LOGS_TARGET));
    let scaling = autoscaling::ACTIONS
        .iter()
        .map(|(n, _)| format!("{}.{n}", autoscaling::TARGET));
    let cloudmap = cloudmap::ACTIONS
        .iter()
        .map(|(n, _)| format!("{}.{n}", cloudmap::TARGET));
    ecs.chain(logs).chain(scaling).chain(cloudmap)
}

fn lookup(table: &[(&str, Action)], name: &str) -> Option<Action> {
    table.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The most connections the API keeps open at once, unless the server is
/// told otherwise; past that a new connection is answered 429
/// (ThrottlingException, which AWS SDKs retry) and closed.
pub const MAX_CONNECTIONS: usize = 1024;

/// How deeply a request body's JSON may nest (ECS's deepest request is 6).
pub const MAX_JSON_DEPTH: usize = 32;

/// The answer to a connection past the limit of `max`.
fn throttled(max: usize) -> Bytes {
    let e = ApiError::new(
        Kind::Throttling,
        format!(
            "the skiff API has {max} connections open, its limit (--api-connections); \
             close idle connections or retry later"
        ),
    );
    let body = e.body().to_string();
    Bytes::from(format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amzn-errortype: {}\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        e.kind.name(),
        body.len()
    ))
}

/// Serves the API on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests (a few seconds at most).
/// At most `connections` are open at once.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let limits = crate::ingress::Limits {
        connections,
        refusal: throttled(connections),
    };
    crate::ingress::accept_loop(listener, shutdown, limits, None, move |req| {
        handle(api.clone(), req)
    })
    .await;
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn error_response(e: &ApiError, request_id: &str) -> Response<Full<Bytes>> {
    let mut resp = json_response(e.kind.status(), &e.body(), request_id);
    if let Ok(v) = hyper::header::HeaderValue::from_str(e.kind.name()) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// The region of the request's credential scope:
/// `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
fn signed_region(parts: &hyper::http::request::Parts) -> Option<String> {
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let region = cred.split('/').nth(2)?;
    (!region.is_empty()).then(|| region.to_string())
}

/// The caller, when the API checks signatures: the key that signed the
/// request, and the region it was signed for.
pub struct Caller<'a> {
    /// The key.
    pub key: &'a crate::auth::Key,
    /// Its credential scope.
    pub credential: crate::auth::sigv4::Credential,
}

/// Verifies the request's signature for `service` when the API has keys;
/// `Ok(None)` when it has none (it then accepts anything).
fn authenticate<'a>(
    api: &'a Api,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    service: &str,
) -> ApiResult<Option<Caller<'a>>> {
    let Some(keys) = &api.keys else {
        return Ok(None);
    };
    let mut headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    // HTTP/2 carries the host as the :authority.
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    if !parts.headers.contains_key(hyper::header::HOST) {
        if let Some(a) = &authority {
            headers.push(("host", a));
        }
    }
    let req = crate::auth::sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    let (key, credential) = keys.authenticate(&req, service)?;
    Ok(Some(Caller { key, credential }))
}

/// Refuses the call unless the caller's policy allows `action` on every
/// one of `resources`.
fn authorize(
    api: &Api,
    caller: Option<&Caller>,
    action: &str,
    resources: &[String],
) -> ApiResult<()> {
    match caller {
        None => Ok(()),
        Some(c) => c
            .key
            .authorize(&api.account, action, resources)
            .map_err(|e| ApiError::new(Kind::AccessDenied, e.to_string())),
    }
}

/// `GET /logs/CLUSTER/TASK`: a task's container logs as text, one line
/// each: `CONTAINER STREAM LINE` (`MS CONTAINER STREAM LINE` with
/// `timestamps=1`). The `x-skiff-log-cursor` header of the answer, given
/// back as `from=`, reads only the lines written since.
fn logs(api: &Api, path: &str, query: &str) -> Response<Full<Bytes>> {
    let param = |name: &str| query_param(query, name);
    let timestamps = param("timestamps") == Some("1");
    let from = match param("from").map(crate::logs::parse_cursor) {
        None => Default::default(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            )
        }
    };
    let (cluster, task) = logs_path(path);
    match (valid_id(cluster) && valid_id(task))
        .then(|| peer::task_files_from(api, cluster, task, &from))
        .flatten()
    {
        Some((files, next)) => {
            let mut r = text_response(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                crate::logs::format(&files, timestamps),
            );
            if let Ok(v) =
                hyper::header::HeaderValue::from_str(&crate::logs::cursor_to_string(&next))
            {
                r.headers_mut().insert("x-skiff-log-cursor", v);
            }
            r
        }
        None => text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no logs for task {task:?} in cluster {cluster:?}\n"),
        ),
    }
}

fn logs_path(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches("/logs/").splitn(2, '/');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How much of a body over the limit is read and dropped before the 413
/// is sent, so that a client still sending can read the answer (a server
/// that closes mid-upload makes the client see a reset instead).
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads the body, up to [`MAX_BODY`] bytes.
async fn read_body(mut body: Incoming) -> ApiResult<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::client("the request body was cut off"))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::new(
            Kind::RequestTooLarge,
            format!("the request body is larger than {MAX_BODY} bytes, the API's limit"),
        ));
    }
    Ok(buf.freeze())
}

type Reply = Response<Full<Bytes>>;

/// Runs `f` on a blocking thread (it reads the store); an empty answer if
/// it panicked (a bug, logged where it happened).
async fn blocking(f: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// One HTTP request to the API's listener: an action (`POST /`), a read
/// between nodes (`GET /_skiff/...`), a task's logs (`GET /logs/...`),
/// the metrics, or the dashboard.
async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Reply {
    let request_id = new_id();
    let peer = req.extensions().get::<crate::ingress::Peer>().map(|p| p.0);
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e, &request_id),
    };
    let get = parts.method == hyper::Method::GET;
    let path = parts.uri.path().to_string();
    if get && path.starts_with("/_skiff/") {
        return from_node(api, parts, request_id).await;
    }
    if get && path.starts_with("/logs/") {
        return blocking(move || task_logs(&api, &parts, &body, &request_id)).await;
    }
    if get && path == "/metrics" {
        return blocking(move || metrics(&api, &parts, &body, peer, &request_id)).await;
    }
    if get && ui::owns(&path) {
        return ui::serve(&path, &parts.headers);
    }
    if get && path == "/" && ui::wants_dashboard(&parts.headers) {
        return ui::redirect(ui::PREFIX);
    }
    if parts.method != hyper::Method::POST || path != "/" {
        let e = ApiError::new(
            Kind::UnsupportedFeature,
            format!(
                "{} {} is not an API call: send POST / with an X-Amz-Target header",
                parts.method, path
            ),
        );
        let mut resp = error_response(&e, &request_id);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    action(api, parts, body, request_id).await
}

/// `GET /_skiff/...`: another node's read, answered only when signed
/// with the nodes' secret (the signature covers the query: a log read's
/// cursor is part of it).
async fn from_node(api: Arc<Api>, parts: hyper::http::request::Parts, request_id: String) -> Reply {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let signed = parts
        .headers
        .get(crate::auth::peer::HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::auth::peer::verify(&api.peer_secret, &path, v));
    if !signed {
        let e = ApiError::new(
            Kind::AccessDenied,
            "only skiff nodes read this (a request signed with the nodes' secret)",
        );
        return error_response(&e, &request_id);
    }
    blocking(move || peer::serve(&api, &path)).await
}

/// `GET /logs/CLUSTER/TASK`, for a caller allowed `logs:GetLogEvents` on
/// the cluster's tasks.
fn task_logs(
    api: &Api,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    request_id: &str,
) -> Reply {
    let caller = match authenticate(api, parts, body, "ecs") {
        Ok(c) => c,
        Err(e) => return error_response(&e, request_id),
    };
    let scope = Scope {
        region: caller.as_ref().map_or_else(
            || api.default_region.clone(),
            |c| c.credential.region.clone(),
        ),
        account: api.account.clone(),
        user: caller.as_ref().map(|c| c.key.name.clone()),
    };
    let path = parts.uri.path();
    let (cluster, _) = logs_path(path);
    let resource = access::task_logs_resource(&scope, cluster);
    if let Err(e) = authorize(api, caller.as_ref(), "logs:GetLogEvents", &[resource]) {
        return error_response(&e, request_id);
    }
    logs(api, path, parts.uri.query().unwrap_or(""))
}

/// `GET /metrics` (with `?node=ID`, another node's, read through it):
/// unsigned from loopback; otherwise signed by a key allowed
/// `skiff:GetMetrics`.
fn metrics(
    api: &Api,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    peer: Option<std::net::SocketAddr>,
    request_id: &str,
) -> Reply {
    let loopback = peer.is_some_and(|p| p.ip().is_loopback());
    let signed = parts.headers.contains_key(hyper::header::AUTHORIZATION);
    // From loopback, unsigned requests are answered; signed ones are
    // checked like any other.
    if signed || !loopback {
        let caller = match authenticate(api, parts, body, "ecs") {
            Ok(Some(c)) => c,
            Ok(None) => {
                let e = ApiError::new(
                    Kind::AccessDenied,
                    "/metrics is readable without a key only from loopback; \
                     start the server with --auth and sign the request with a key \
                     whose policy allows skiff:GetMetrics",
                );
                return error_response(&e, request_id);
            }
            Err(e) => return error_response(&e, request_id),
        };
        if let Err(e) = authorize(api, Some(&caller), "skiff:GetMetrics", &["*".into()]) {
            return error_response(&e, request_id);
        }
    }
    let query = parts.uri.query().unwrap_or("");
    let text = match query_param(query, "node").filter(|n| *n != api.node) {
        None => metrics_text(api),
        Some(node) => match peer::node_metrics(api, node) {
            Ok(text) => text,
            Err((status, message)) => {
                return text_response(status, "text/plain; charset=utf-8", message)
            }
        },
    };
    text_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}

/// `POST /` with an `X-Amz-Target`: the action, signed and allowed when
/// the API has keys, logged at debug (at error when it is the server's
/// fault) with its time.
async fn action(
    api: Arc<Api>,
    parts: hyper::http::request::Parts,
    body: Bytes,
    request_id: String,
) -> Reply {
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let action = target.rsplit('.').next().unwrap_or("").to_string();
    let span = tracing::info_span!("request", id = %request_id, action = %action);
    let in_span = span.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _entered = in_span.enter();
        let service = if target.starts_with(logs::LOGS_TARGET) {
            "logs"
        } else if target.starts_with(autoscaling::TARGET) {
            "application-autoscaling"
        } else {
            "ecs"
        };
        let caller = authenticate(&api, &parts, &body, service)?;
        let region = match &caller {
            Some(c) => c.credential.region.clone(),
            None => signed_region(&parts).unwrap_or_else(|| api.default_region.clone()),
        };
        let scope = Scope {
            region,
            account: api.account.clone(),
            user: caller.as_ref().map(|c| c.key.name.clone()),
        };
        call(&api, &scope, &target, &body, caller.as_ref())
    })
    .await;
    let _entered = span.enter();
    let result = result.unwrap_or_else(|_| {
        // The action panicked (a bug): the client gets a ServerException,
        // the log gets the panic's message above this line.
        Err(ApiError::new(
            Kind::Server,
            "the action failed unexpectedly",
        ))
    });
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(v) => {
            tracing::debug!(status = 200, ms, "answered");
            json_response(200, &v, &request_id)
        }
        Err(e) => {
            let status = e.kind.status();
            if e.kind == Kind::Server {
                tracing::error!(status, ms, error = e.kind.name(), "{}", e.message);
            } else {
                tracing::debug!(status, ms, error = e.kind.name(), "{}", e.message);
            }
            error_response(&e, &request_id)
        }
    }
}

/// Whether `json` nests arrays and objects no deeper than `max`.
pub fn depth_within(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// One API call: `target` is the `X-Amz-Target` header, `body` the request
/// body. `caller` is the signer, checked against its policy (`None` when
/// the API has no keys). Every error is the client's but `ServerException`.
pub fn call(
    api: &Api,
    scope: &Scope,
    target: &str,
    body: &[u8],
    caller: Option<&Caller>,
) -> ApiResult {
    let (service, name) = target.split_once('.').unwrap_or(("", ""));
    let (act, iam) = match service {
        ECS_TARGET => (lookup(ECS_ACTIONS, name), "ecs"),
        logs::LOGS_TARGET => (lookup(logs::ACTIONS, name), "logs"),
        autoscaling::TARGET => (
            lookup(autoscaling::ACTIONS, name),
            "application-autoscaling",
        ),
        cloudmap::TARGET => (lookup(cloudmap::ACTIONS, name), "servicediscovery"),
        _ => {
            return Err(ApiError::new(
                Kind::UnsupportedFeature,
                format!(
                "unknown X-Amz-Target {target:?}: expected {ECS_TARGET}.<Action>, {}.<Action>, {}.<Action> or {}.<Action>",
                logs::LOGS_TARGET,
                autoscaling::TARGET,
                cloudmap::TARGET
            ),
            ))
        }
    };
    let Some(act) = act else {
        return Err(ApiError::new(
            Kind::UnsupportedFeature,
            format!("the action {name} is not supported by skiff"),
        ));
    };
    if !depth_within(body, MAX_JSON_DEPTH) {
        return Err(ApiError::client(format!(
            "the request body nests JSON deeper than {MAX_JSON_DEPTH} levels, the API's limit"
        )));
    }
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err(ApiError::client("the request body must be a JSON object")),
            Err(e) => {
                return Err(ApiError::client(format!(
                    "the request body is not valid JSON: {e}"
                )))
            }
        }
    };
    if caller.is_some() {
        let resources = match iam {
            "ecs" => access::ecs_resources(scope, name, &body),
            "logs" => access::logs_resources(scope, name, &body),
            "servicediscovery" => cloudmap::resources(scope, name, &body),
            // Application Auto Scaling's actions act on no particular
            // resource in IAM (`*`), as in AWS.
            _ => vec!["*".to_string()],
        };
        authorize(api, caller, &format!("{iam}:{name}"), &resources)?;
    }
    act(api, scope, &body)
}

pub use crate::model::{new_id, now};

/// Decodes a request into its typed shape. Fields the type does not name
/// are ignored (clients send more than skiff reads); a field of the wrong
/// type is a `ClientException` naming it by its path
/// (`overrides.containerOverrides[0].command[1]: invalid type: ...`).
pub fn decode<T: serde::de::DeserializeOwned>(req: &Value) -> ApiResult<T> {
    decode_at(req, "")
}

/// [`decode`] for a part of a request found at `at` (`overrides`), whose
/// errors name fields from the request's root.
pub fn decode_at<T: serde::de::DeserializeOwned>(part: &Value, at: &str) -> ApiResult<T> {
    crate::model::decode_at(part, at).map_err(|e| match e.field.is_empty() {
        true => ApiError::client(e.message),
        false => ApiError::client(e.to_string()),
    })
}

/// This node's metrics, in Prometheus' text format.
pub(crate) fn metrics_text(api: &Api) -> String {
    let mut text = api.metrics.render(api.store.as_ref());
    if let Some(r) = &api.registry {
        crate::metrics::render_registry(&mut text, r);
    }
    text
}

/// The value of `name` in a URL query (`a=1&b=2`), as given.
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Reads a JSON record.
pub fn get_json(store: &dyn Store, key: &str) -> ApiResult<Option<(Value, Revision)>> {
    match store.get(key)? {
        None => Ok(None),
        Some(r) => Ok(Some((parse_record(&r)?, r.mod_revision))),
    }
}

/// Parses a stored record's JSON.
pub fn parse_record(r: &Record) -> ApiResult<Value> {
    serde_json::from_slice(&r.value).map_err(|e| {
        ApiError::new(
            Kind::Server,
            format!("stored record {} is unreadable: {e}", r.key),
        )
    })
}

/// Serialises a value for the store.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Runs `attempt` until it commits without a conflict (a concurrent write
/// to the same records), a few times at most.
pub fn with_retries<T>(
    mut attempt: impl FnMut() -> ApiResult<Result<T, crate::store::StoreError>>,
) -> ApiResult<T> {
    for _ in 0..16 {
        match attempt()? {
            Ok(v) => return Ok(v),
            Err(crate::store::StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        Kind::Server,
        "too many concurrent writes to the same records; retry",
    ))
}

#[cfg(test)]
mod tests {
    /// The `api` fuzz target picks an action by its seed's first byte, by
    /// position in [`super::targets`]: each seed in `fuzz/seeds/api` must
    /// pick the action it is named for (`ACTION-*`, `logs-ACTION-*`,
    /// `cloudmap-ACTION-*`), or
    /// the fuzzer starts from bodies sent to the wrong actions.
    #[test]
    fn fuzz_seeds_pick_the_action_they_are_named_for() {
        let targets: Vec<String> = super::targets().collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/api");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/api") {
            let path = entry.expect("a seed").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (prefix, stem) = if let Some(rest) = name.strip_prefix("logs-") {
                (super::logs::LOGS_TARGET, rest)
            } else if let Some(rest) = name.strip_prefix("cloudmap-") {
                (super::cloudmap::TARGET, rest)
            } else {
                (super::ECS_TARGET, name.as_str())
            };
            let action = stem.rsplit_once('-').map_or(stem, |(a, _)| a);
            let wanted = format!("{prefix}.{action}");
            let at = targets
                .iter()
                .position(|t| *t == wanted)
                .unwrap_or_else(|| panic!("seed {name}: no action {wanted}"));
            let bytes = std::fs::read(&path).unwrap();
            // The fuzz target's targets are these and one unknown action.
            let picked = bytes[0] as usize % (targets.len() + 1);
            assert_eq!(
                picked,
                at,
                "seed {name} picks {:?}, not {wanted}: its first byte must be {at}",
                targets.get(picked)
            );
            seen += 1;
        }
        assert!(seen >= 30, "only {seen} seeds in {}", dir.display());
    }
}
