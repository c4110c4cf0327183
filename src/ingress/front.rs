//! The ingress front: every worker thread accepts connections on every
//! ingress listener and answers their requests.
//!
//! A request goes to the service its Host names (or its hostPort's
//! service), to the task [`Routes::pick`] chooses. When that task runs on
//! the worker that accepted the connection, its instance runs right there;
//! otherwise the request is handed to the task's worker. A request no task
//! of this node can take goes to another node that runs the service
//! ([`Peers`]). Nothing queues: a request no task can take now is answered
//! 503 with Retry-After at once.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use skiff_runtime::{full_body, BodyError, LogStream, Outcome, ResponseBody, TrapKind};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::peers::{self, Peers, RequestBody};
use super::routes::{Admitted, Pick, PortOpener, Routes, ServiceCaller, ServiceKey};
use super::{accept_loop, failure_response};

/// The header that carries a request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// The default largest request body (16 MiB).
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;

/// Where the requests of a listener go.
#[derive(Clone, Debug)]
enum Target {
    /// By Host.
    Host,
    /// All to one service (a hostPort listener).
    Service(ServiceKey),
}

/// The workers' shared ingress state.
pub struct Front {
    routes: Arc<Routes>,
    metrics: Arc<crate::metrics::Metrics>,
    workers: Vec<Handle>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Other nodes, for requests no task here can take.
    peers: Option<Arc<Peers>>,
    settings: Settings,
}

/// How a front answers.
#[derive(Clone)]
pub struct Settings {
    /// Where hostPort listeners bind.
    pub ip: IpAddr,
    /// The largest request body passed to a guest.
    pub max_body: u64,
    /// HTTP-01 challenges of ACME orders in flight, answered on plain
    /// listeners.
    pub challenges: Option<Arc<super::acme::Challenges>>,
    /// The HTTPS ingress's port, for `skiff.https-redirect` redirects.
    pub https_port: Option<u16>,
    /// Services that scale to zero: a request for one with no task is
    /// held while one starts.
    pub scale_to_zero: Arc<super::domains::ScaleToZero>,
    /// Requests held, reported as load so that the scaler starts a task.
    pub waiting: Arc<super::load::Waiting>,
}

/// How long a request for a service scaled to zero is held for a task
/// to start before it is answered 503.
pub const HOLD: std::time::Duration = std::time::Duration::from_secs(15);

/// The most requests held at once per service on one node; past that,
/// 503 at once.
pub const MAX_HELD: u64 = 1000;

impl Front {
    /// A front over the workers' runtimes.
    pub fn new(
        routes: Arc<Routes>,
        metrics: Arc<crate::metrics::Metrics>,
        workers: Vec<Handle>,
        shutdown: CancellationToken,
        peers: Option<Arc<Peers>>,
        settings: Settings,
    ) -> Arc<Front> {
        Arc::new(Front {
            routes,
            metrics,
            workers,
            tracker: TaskTracker::new(),
            shutdown,
            peers,
            settings,
        })
    }

    /// Accepts on `listener` (by Host) on every worker.
    pub fn listen(self: &Arc<Self>, listener: std::net::TcpListener) -> std::io::Result<()> {
        self.listen_for(listener, Target::Host, None)
    }

    /// Accepts HTTPS on `listener` (by Host) on every worker.
    pub fn listen_tls(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        tls: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<()> {
        self.listen_for(listener, Target::Host, Some(tls))
    }

    fn listen_for(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        target: Target,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        for (i, w) in self.workers.iter().enumerate() {
            let l = listener.try_clone()?;
            let front = self.clone();
            let target = target.clone();
            let stop = self.shutdown.clone();
            let tls = tls.clone();
            w.spawn(self.tracker.track_future(async move {
                let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                    return;
                };
                let answer_front = front.clone();
                accept_loop(
                    l,
                    stop.cancelled_owned(),
                    super::Limits::default(),
                    tls,
                    move |req| {
                        let front = answer_front.clone();
                        let target = target.clone();
                        async move { front.answer(req, i, &target).await }
                    },
                )
                .await;
            }));
        }
        Ok(())
    }

    /// Waits until every accept loop has ended (after shutdown, once their
    /// connections are done or the drain time is over).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    async fn answer(
        &self,
        mut req: Request<Incoming>,
        local: usize,
        target: &Target,
    ) -> Response<ResponseBody> {
        let id = request_id(&req);
        if let Ok(v) = HeaderValue::from_str(&id) {
            req.headers_mut().insert(REQUEST_ID, v);
        }
        let mut resp = self.route(req, local, target, &id).await;
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        local: usize,
        target: &Target,
        id: &str,
    ) -> Response<ResponseBody> {
        let forwarded = peers::forwarded_service(&req);
        let service = match (target, &forwarded) {
            (_, Some(s)) => s.clone(),
            (Target::Service(s), None) => s.clone(),
            (Target::Host, None) => {
                let host = req
                    .headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    .unwrap_or("")
                    .to_string();
                if req.extensions().get::<super::Secure>().is_none() {
                    if let Some(early) = self.plain_edge(&req, &host).await {
                        return early;
                    }
                }
                match self.routes.service_of_host(&host) {
                    Some(s) => s,
                    None => {
                        return plain(
                            StatusCode::NOT_FOUND,
                            format!(
                                "no service is routed for host {host:?}: ask for SERVICE.CLUSTER.{} (or SERVICE.{} in the default cluster)",
                                self.routes.domain(),
                                self.routes.domain()
                            ),
                        )
                    }
                }
            }
        };
        let max = self.settings.max_body;
        self.to_service(
            service,
            req.map(move |b| limit(b, max)),
            local,
            id,
            forwarded.is_some(),
        )
        .await
    }

    /// Answers a request that a guest sends to a service it is linked to
    /// (Service Connect), as a request to the ingress for that service
    /// is answered, without a connection.
    pub async fn call(
        &self,
        service: ServiceKey,
        mut req: Request<RequestBody>,
        local: usize,
    ) -> Response<ResponseBody> {
        let id = request_id(&req);
        if let Ok(v) = HeaderValue::from_str(&id) {
            req.headers_mut().insert(REQUEST_ID, v);
        }
        let max = self.settings.max_body;
        let req = req.map(move |b| limit(b, max));
        let mut resp = self.to_service(service, req, local, &id, false).await;
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }

    /// Answers a request for `service` (`forwarded` when another node
    /// sent it here, never to be forwarded again).
    async fn to_service(
        &self,
        service: ServiceKey,
        req: Request<RequestBody>,
        local: usize,
        id: &str,
        forwarded: bool,
    ) -> Response<ResponseBody> {
        let (cluster, name) = &service;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.max_body) {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    self.settings.max_body
                ),
            );
        }
        let mut pick = self.routes.pick(&service, local);
        // No task of a service that scales to zero: held while the scaler
        // starts one (or one elsewhere can take it), bounded in count and
        // time.
        if matches!(pick, Pick::NoTask | Pick::Unknown)
            && !forwarded
            && self.settings.scale_to_zero.holds(&service)
        {
            match self.hold(&service, local).await {
                Ok(p) => pick = p,
                Err(resp) => return resp,
            }
        }
        // No task here can take it: another node's may (a forwarded
        // request is never forwarded again).
        if !matches!(pick, Pick::To(_)) && !forwarded {
            if let Some(peers) = &self.peers {
                let endpoints = peers.endpoints(&service).await;
                if !endpoints.is_empty() {
                    let m = self.metrics.service(cluster, name);
                    let started = std::time::Instant::now();
                    let resp = match peers.forward(req, &service, &endpoints).await {
                        Ok(r) => r,
                        Err(why) => peers::unreachable(why),
                    };
                    m.request(resp.status().as_u16(), started.elapsed());
                    return resp;
                }
            }
        }
        if let Pick::Unknown = pick {
            return plain(
                StatusCode::NOT_FOUND,
                format!("no service {name:?} in cluster {cluster:?} has run a task here"),
            );
        }
        // Requests for a known service are counted (not those for any
        // host at all, which would let clients make labels without end).
        let m = match &pick {
            Pick::To(a) => a.endpoint().metrics.clone(),
            _ => self.metrics.service(cluster, name),
        };
        let started = std::time::Instant::now();
        let resp = self.dispatch(pick, req, local, id, &service).await;
        m.request(resp.status().as_u16(), started.elapsed());
        resp
    }

    /// Waits for a task of `service` to take a request (here, or on
    /// another node); the 503 to answer when none does within [`HOLD`].
    async fn hold(
        &self,
        service: &ServiceKey,
        local: usize,
    ) -> Result<Pick, Response<ResponseBody>> {
        let (cluster, name) = service;
        if self.settings.waiting.count(service) >= MAX_HELD {
            return Err(busy(format!(
                "service {name:?} in cluster {cluster:?} is starting from zero and {MAX_HELD} requests already wait for it"
            )));
        }
        let _held = self.settings.waiting.hold(service);
        let deadline = tokio::time::Instant::now() + HOLD;
        let mut peers_at = tokio::time::Instant::now();
        let mut changes = self.routes.changes();
        loop {
            // Seen before the look, so that a change after it wakes the wait.
            changes.borrow_and_update();
            let pick = self.routes.pick(service, local);
            if matches!(pick, Pick::To(_) | Pick::Full { .. }) {
                return Ok(pick);
            }
            let now = tokio::time::Instant::now();
            if now >= peers_at {
                // A task on another node: forwarded by the caller.
                if let Some(peers) = &self.peers {
                    if !peers.endpoints(service).await.is_empty() {
                        return Ok(pick);
                    }
                }
                peers_at = now + std::time::Duration::from_millis(100);
            }
            if now >= deadline {
                return Err(busy(format!(
                    "service {name:?} in cluster {cluster:?} scaled to zero and no task started within {}s",
                    HOLD.as_secs()
                )));
            }
            // Tasks here are waited for; tasks elsewhere are looked for
            // every 100 ms.
            let wake = match self.peers {
                Some(_) => peers_at.min(deadline),
                None => deadline,
            };
            tokio::select! {
                Ok(()) = changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// What a plain-HTTP request gets before routing, if anything: the
    /// answer to an ACME HTTP-01 challenge, or a redirect to HTTPS for a
    /// domain whose service asks for one (`skiff.https-redirect`).
    async fn plain_edge(
        &self,
        req: &Request<Incoming>,
        host: &str,
    ) -> Option<Response<ResponseBody>> {
        let path = req.uri().path();
        let answer = match &self.settings.challenges {
            Some(c) => c.answer(path).await,
            None => None,
        };
        if let Some(answer) = answer {
            let mut resp = Response::new(full_body(answer));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return Some(resp);
        }
        let port = self.settings.https_port?;
        let claim = self.routes.domains().lookup(host)?;
        if !claim.https_redirect {
            return None;
        }
        let (name, _) = crate::model::domain::lookup_names(host)?;
        let authority = if port == 443 {
            name
        } else {
            format!("{name}:{port}")
        };
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("https://{authority}{target}");
        let mut resp = plain(
            StatusCode::PERMANENT_REDIRECT,
            format!("this service is served over HTTPS: {location}"),
        );
        resp.headers_mut().insert(
            hyper::header::LOCATION,
            HeaderValue::from_str(&location).ok()?,
        );
        Some(resp)
    }

    /// Answers a request the routes have picked for.
    async fn dispatch(
        &self,
        pick: Pick,
        req: Request<RequestBody>,
        local: usize,
        id: &str,
        (cluster, name): &ServiceKey,
    ) -> Response<ResponseBody> {
        let admitted = match pick {
            Pick::To(a) => a,
            Pick::Unknown => return plain(StatusCode::NOT_FOUND, format!("no service {name:?}")),
            Pick::NoTask => {
                return busy(format!(
                    "service {name:?} in cluster {cluster:?} has no RUNNING, healthy task"
                ))
            }
            Pick::Full { tasks } => {
                return busy(format!(
                    "all {tasks} tasks of service {name:?} are at their concurrency limit (skiff.concurrency)"
                ))
            }
        };
        let ep = admitted.endpoint().clone();
        let handler = ep.handler.clone();
        let result = if ep.worker == local {
            handler.handle(req).await
        } else {
            match self.workers.get(ep.worker) {
                Some(w) => match w.spawn(async move { handler.handle(req).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(skiff_runtime::Report::bare(Outcome::Trap {
                        kind: TrapKind::Host(format!("the request's task failed: {e}")),
                        backtrace: String::new(),
                    })),
                },
                None => handler.handle(req).await,
            }
        };
        match result {
            Ok(resp) => resp.map(|body| {
                Guarded {
                    body,
                    _admitted: admitted,
                }
                .boxed_unsync()
            }),
            Err(report) => {
                let reason = report.outcome.reason();
                let mut line = format!("[skiff] request {id} to task {} failed: {reason}", ep.task);
                if let Outcome::Trap { backtrace, .. } = &report.outcome {
                    if !backtrace.is_empty() {
                        line.push('\n');
                        line.push_str(backtrace);
                    }
                }
                let now = std::time::SystemTime::now();
                for l in line.lines() {
                    ep.logs.line(LogStream::Stderr, now, l);
                }
                let mut resp = failure_response(&report);
                *resp.body_mut() = full_body(format!("request {id} failed: {reason}\n"));
                resp
            }
        }
    }
}

impl ServiceCaller for Arc<Front> {
    fn call(
        &self,
        service: ServiceKey,
        req: Request<RequestBody>,
        local: usize,
    ) -> Pin<Box<dyn std::future::Future<Output = Response<ResponseBody>> + Send>> {
        let front = self.clone();
        Box::pin(async move { Front::call(&front, service, req, local).await })
    }
}

impl PortOpener for Arc<Front> {
    fn open(&self, port: u16, service: ServiceKey) -> std::io::Result<()> {
        let l = std::net::TcpListener::bind(SocketAddr::new(self.settings.ip, port))?;
        self.listen_for(l, Target::Service(service), None)
    }
}

/// The request's `X-Request-Id` when it has a usable one, or a new one.
fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(crate::model::new_id)
}

fn plain(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut resp = Response::new(full_body(format!("{text}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn busy(text: String) -> Response<ResponseBody> {
    let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A request body cut off past `max` bytes: the guest sees the error
/// `HttpRequestBodySize` when it reads past it; the body's own errors
/// pass through.
fn limit<B>(body: B, max: u64) -> RequestBody
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    http_body_util::Limited::new(body, max as usize)
        .map_err(move |e| match e.downcast::<hyper::Error>() {
            Ok(h) => BodyError::Hyper(*h),
            Err(e) => match e.downcast::<BodyError>() {
                Ok(b) => *b,
                Err(_) => BodyError::HttpRequestBodySize(Some(max)),
            },
        })
        .boxed_unsync()
}

/// A response body that holds its request's admission until it is done.
struct Guarded {
    body: ResponseBody,
    _admitted: Admitted,
}

impl Body for Guarded {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
