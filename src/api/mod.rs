//! The ECS API: AWS JSON 1.1 over HTTP, as ECS speaks it.
//!
//! `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Action>`
//! and a JSON body. The region of ARNs is the one the request was signed
//! for (the credential scope of its SigV4 `Authorization` header); any
//! signature is accepted for now. Each action is a synchronous function of
//! the request that reads and writes the store; it runs off the async
//! threads, and its answer is sent only after its writes are durable.

pub mod clusters;
pub mod error;
pub mod logs;
pub mod page;
pub mod services;
pub mod tags;
pub mod task_definitions;
pub mod tasks;

use std::future::Future;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
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
    /// This node's workers.
    pub agent: Arc<crate::agent::Agent>,
    /// Where container logs are kept.
    pub logs_dir: std::path::PathBuf,
    /// This node's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The wasm runtime (for its pool's occupancy).
    pub runtime: Option<skiff_runtime::Runtime>,
}

/// An action: request JSON in, response JSON out.
pub(crate) type Action = fn(&Api, &Scope, &Value) -> ApiResult;

fn action(name: &str) -> Option<Action> {
    Some(match name {
        "CreateCluster" => clusters::create,
        "DescribeClusters" => clusters::describe,
        "ListClusters" => clusters::list,
        "DeleteCluster" => clusters::delete,
        "UpdateCluster" | "UpdateClusterSettings" => clusters::update,
        "RegisterTaskDefinition" => task_definitions::register,
        "DescribeTaskDefinition" => task_definitions::describe,
        "ListTaskDefinitions" => task_definitions::list,
        "ListTaskDefinitionFamilies" => task_definitions::list_families,
        "DeregisterTaskDefinition" => task_definitions::deregister,
        "RunTask" => tasks::run,
        "StopTask" => tasks::stop,
        "DescribeTasks" => tasks::describe,
        "ListTasks" => tasks::list,
        "CreateService" => services::create,
        "UpdateService" => services::update,
        "DeleteService" => services::delete,
        "DescribeServices" => services::describe,
        "ListServices" => services::list,
        "ListServiceDeployments" => services::list_deployments,
        "DescribeServiceDeployments" => services::describe_deployments,
        "TagResource" => tags::tag,
        "UntagResource" => tags::untag,
        "ListTagsForResource" => tags::list,
        _ => return None,
    })
}

/// Serves the API on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests (a few seconds at most).
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: impl Future<Output = ()>) {
    crate::ingress::accept_loop(listener, shutdown, move |req| handle(api.clone(), req)).await;
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

/// The region of the request's credential scope:
/// `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
fn signed_region(req: &Request<Incoming>) -> Option<String> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let region = cred.split('/').nth(2)?;
    (!region.is_empty()).then(|| region.to_string())
}

/// `GET /logs/CLUSTER/TASK`: a task's container logs as text, one line
/// each: `CONTAINER STREAM LINE`.
fn logs(api: &Api, path: &str, query: &str) -> Response<Full<Bytes>> {
    let timestamps = query.split('&').any(|kv| kv == "timestamps=1");
    let mut parts = path.trim_start_matches("/logs/").splitn(2, '/');
    let (cluster, task) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let (status, body) = match (valid(cluster) && valid(task))
        .then(|| crate::agent::logs::read(&api.logs_dir, cluster, task, timestamps))
        .flatten()
    {
        Some(text) => (StatusCode::OK, text),
        None => (
            StatusCode::NOT_FOUND,
            format!("no logs for task {task:?} in cluster {cluster:?}\n"),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = new_id();
    if req.method() == hyper::Method::GET && req.uri().path().starts_with("/logs/") {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        return tokio::task::spawn_blocking(move || logs(&api, &path, &query))
            .await
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    }
    if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        let text = tokio::task::spawn_blocking(move || {
            api.metrics.render(api.store.as_ref(), api.runtime.as_ref())
        })
        .await
        .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    if req.method() != hyper::Method::POST || req.uri().path() != "/" {
        let e = ApiError::new(
            Kind::UnsupportedFeature,
            format!(
                "{} {} is not an API call: send POST / with an X-Amz-Target header",
                req.method(),
                req.uri().path()
            ),
        );
        let mut resp = error_response(&e, &request_id);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let region = signed_region(&req).unwrap_or_else(|| api.default_region.clone());
    let (service, name) = target.split_once('.').unwrap_or(("", ""));
    let act = match service {
        ECS_TARGET => action(name),
        logs::LOGS_TARGET => logs::action(name),
        _ => {
            let e = ApiError::new(
                Kind::UnsupportedFeature,
                format!(
                    "unknown X-Amz-Target {target:?}: expected {ECS_TARGET}.<Action> or {}.<Action>",
                    logs::LOGS_TARGET
                ),
            );
            return error_response(&e, &request_id);
        }
    };
    let Some(act) = act else {
        let e = ApiError::new(
            Kind::UnsupportedFeature,
            format!("the action {name} is not supported by skiff"),
        );
        return error_response(&e, &request_id);
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::client(format!(
                "the request body is larger than {MAX_BODY} bytes or was cut off"
            ));
            return error_response(&e, &request_id);
        }
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return error_response(
                    &ApiError::client("the request body must be a JSON object"),
                    &request_id,
                )
            }
            Err(e) => {
                return error_response(
                    &ApiError::client(format!("the request body is not valid JSON: {e}")),
                    &request_id,
                )
            }
        }
    };
    let scope = Scope {
        region,
        account: api.account.clone(),
    };
    let result = tokio::task::spawn_blocking(move || act(&api, &scope, &body)).await;
    match result {
        Ok(Ok(v)) => json_response(200, &v, &request_id),
        Ok(Err(e)) => error_response(&e, &request_id),
        Err(_) => error_response(
            &ApiError::new(Kind::Server, "the action failed unexpectedly"),
            &request_id,
        ),
    }
}

/// A random id: 32 hex digits, as ECS task ids.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap_or_default();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub use crate::model::now;

/// A string field of the request, when present.
pub fn str_field<'a>(req: &'a Value, name: &str) -> ApiResult<Option<&'a str>> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::client(format!(
            "{name} must be a string, got {other}"
        ))),
    }
}

/// A required string field.
pub fn required_str<'a>(req: &'a Value, name: &str) -> ApiResult<&'a str> {
    str_field(req, name)?.ok_or_else(|| ApiError::client(format!("{name} is required")))
}

/// A list of strings, when present.
pub fn str_list(req: &Value, name: &str) -> ApiResult<Option<Vec<String>>> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::client(format!("{name} must be a list of strings")))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(ApiError::client(format!(
            "{name} must be a list of strings"
        ))),
    }
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
