//! Serving HTTP requests with a `wasi:http/incoming-handler` component: a
//! fresh instance per request from the component pre-instantiated at load,
//! or, where the task asks for it ([`HttpHandler::reuse_instances`]), an
//! instance kept from an earlier request of the same task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::WasiHttpView;

use crate::command::{arm, new_store, report, until_deadline};
use crate::engine::{Metering, Runtime};
use crate::limits::{Budget, RunLimits, RunMeter, StoreLimiter};
use crate::load::{Code, Guest, LoadError};
use crate::outcome::{Outcome, Report, TrapKind};
use crate::sandbox::{P2Host, Sandbox};

/// The body of a response from a guest: streamed as the guest writes it.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The error a request or response body can end with (what a guest sees
/// when a request body is cut off or too large).
pub type BodyError = wasmtime_wasi_http::Error;

/// Serves requests with one HTTP guest, under one task's budget. Cheap to
/// clone; every clone shares the budget.
#[derive(Clone)]
pub struct HttpHandler {
    inner: Arc<HandlerInner>,
}

type ReportHook = Box<dyn Fn(&Report) + Send + Sync>;

struct HandlerInner {
    rt: Runtime,
    pre: ProxyPre<P2Host>,
    budget: Budget,
    sandbox: Sandbox,
    limits: RunLimits,
    on_report: Option<ReportHook>,
    in_flight: AtomicUsize,
    /// The most requests one instance serves (1: a fresh instance each).
    reuse: u32,
    /// How long an instance waits idle for its next request.
    idle_timeout: Duration,
    /// Instances that served a request without fault and may serve more.
    idle: Mutex<Idle>,
    /// Instances created so far.
    instantiations: AtomicU64,
}

/// The most instances one handler keeps idle between requests. An idle
/// instance keeps its memory, charged to the task, and a pool slot; past
/// this many, an instance is dropped after its request as without reuse.
pub const MAX_IDLE_INSTANCES: usize = 16;

/// How long a kept instance waits for its next request before it is
/// dropped and its memory given back (unless
/// [`HttpHandler::idle_timeout`] says otherwise).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The instances waiting between requests, oldest first.
#[derive(Default)]
struct Idle {
    warm: Vec<Warm>,
    /// Whether a task is on its way to drop the oldest when it expires.
    sweeping: bool,
}

/// An instance kept for a later request of the same task, with the store
/// it lives in.
/// An instance's store, its instance if it has one yet, and the
/// requests it served.
type Checkout = (wasmtime::Store<P2Host>, Option<Proxy>, u32);

struct Warm {
    store: wasmtime::Store<P2Host>,
    proxy: Proxy,
    /// Requests it has served.
    served: u32,
    /// When it was put back idle.
    since: Instant,
}

impl HandlerInner {
    /// Keeps `warm` for the next request, unless [`MAX_IDLE_INSTANCES`]
    /// already wait; then it is dropped, after the lock is released (a
    /// store's drop resets its memory). The first instance kept starts
    /// the sweep that drops instances idle past the timeout.
    fn keep_idle(self: &Arc<Self>, warm: Warm) {
        let mut warm = Some(warm);
        let mut sweep = false;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.warm.len() < MAX_IDLE_INSTANCES {
                idle.warm.extend(warm.take());
                sweep = !std::mem::replace(&mut idle.sweeping, true);
            }
        }
        drop(warm);
        if sweep {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(sweep_idle(Arc::downgrade(self)))),
                // Outside a runtime no sweep can run: kept instances wait
                // until a request takes them or the handler goes.
                Err(_) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.sweeping = false;
                    }
                }
            }
        }
    }

    /// An instance for a request: an idle one, its meter armed anew, or a
    /// new store for the pre-instantiated component (its instance made
    /// inside the request's task). With how many requests it served.
    fn checkout(self: &Arc<Self>, meter: &Arc<RunMeter>) -> Result<Checkout, LoadError> {
        let h = self;
        let warm = if h.reuse > 1 {
            h.idle.lock().ok().and_then(|mut idle| idle.warm.pop())
        } else {
            None
        };
        match warm {
            Some(w) => {
                let mut store = w.store;
                store.data_mut().limiter.refused = false;
                arm(&h.rt, &mut store, meter, h.limits);
                Ok((store, Some(w.proxy), w.served))
            }
            None => {
                let mut limiter = StoreLimiter::new(h.budget.clone());
                if h.reuse > 1 {
                    let handler = Arc::downgrade(h);
                    limiter.reclaim_with(Box::new(move || {
                        handler.upgrade().is_some_and(|h| h.drop_oldest_idle())
                    }));
                }
                let host = h
                    .sandbox
                    .p2_host(limiter)
                    .map_err(|e| LoadError::Sandbox(format!("{e:#}")))?;
                Ok((new_store(&h.rt, host, meter, h.limits), None, 0))
            }
        }
    }

    /// After a request: its instance is kept for the next one, or dropped.
    fn check_in(
        self: &Arc<Self>,
        store: wasmtime::Store<P2Host>,
        proxy: Option<Proxy>,
        served: u32,
        report: &Report,
    ) {
        let h = self;
        // Kept only when nothing went wrong in it: a trap or a stop at
        // a limit can leave an instance half-way through its work.
        // Nor when kept instances would crowd out fresh ones: the
        // pool's last quarter and the task's last quarter of memory
        // are left for those.
        let keep = proxy.filter(|_| {
            served + 1 < h.reuse
                && report.outcome.is_success()
                && !store.data().limiter.refused
                && h.budget.memory_used().saturating_mul(4)
                    <= h.budget.limits().memory_bytes.saturating_mul(3)
                && h.rt.may_keep_idle()
        });
        match keep {
            Some(proxy) => h.keep_idle(Warm {
                store,
                proxy,
                served: served + 1,
                since: Instant::now(),
            }),
            None => drop(store),
        }
    }

    /// Drops the instance idle longest; whether there was one. Frees its
    /// memory for a request that was refused some.
    fn drop_oldest_idle(&self) -> bool {
        let oldest = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| (!idle.warm.is_empty()).then(|| idle.warm.remove(0)));
        oldest.is_some()
    }
}

/// Drops each idle instance of a handler when it has waited the handler's
/// idle timeout, sleeping until the oldest expires; ends when none is left
/// idle (the next kept instance starts another) or the handler is gone.
async fn sweep_idle(handler: Weak<HandlerInner>) {
    // Cancelled with its runtime, it says so, so that a later kept
    // instance starts a new sweep.
    let mut sweeping = Sweeping(Some(handler.clone()));
    loop {
        let next = {
            let Some(h) = handler.upgrade() else { return };
            let now = Instant::now();
            let (expired, next) = {
                let Ok(mut idle) = h.idle.lock() else { return };
                let n = idle
                    .warm
                    .partition_point(|w| now.duration_since(w.since) >= h.idle_timeout);
                let expired: Vec<Warm> = idle.warm.drain(..n).collect();
                let next = idle.warm.first().map(|w| w.since + h.idle_timeout);
                idle.sweeping = next.is_some();
                (expired, next)
            };
            drop(expired);
            match next {
                Some(at) => at,
                None => {
                    sweeping.0 = None;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Clears a handler's `sweeping` when its sweep ends before it could.
struct Sweeping(Option<Weak<HandlerInner>>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(h) = self.0.take().and_then(|h| h.upgrade()) {
            if let Ok(mut idle) = h.idle.lock() {
                idle.sweeping = false;
            }
        }
    }
}

/// Counts a request as in flight until dropped (when its instance is done).
struct InFlight(Arc<HandlerInner>);

impl InFlight {
    fn enter(inner: &Arc<HandlerInner>) -> InFlight {
        inner.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpHandler {
    /// A handler for `guest`, which must be an HTTP component. `limits`
    /// bound each request (its fuel and its timeout, which covers
    /// streaming the response body too).
    pub fn new(
        rt: &Runtime,
        guest: &Guest,
        budget: Budget,
        sandbox: Sandbox,
        limits: RunLimits,
    ) -> Result<HttpHandler, LoadError> {
        let Code::Http(pre) = &guest.inner.code else {
            return Err(LoadError::NotRunnable {
                what: "command",
                exports: vec![match guest.kind() {
                    crate::GuestKind::P1Command => "_start".into(),
                    _ => "wasi:cli/run".into(),
                }],
            });
        };
        Ok(HttpHandler {
            inner: Arc::new(HandlerInner {
                rt: rt.clone(),
                pre: pre.clone(),
                budget,
                sandbox,
                limits,
                on_report: None,
                in_flight: AtomicUsize::new(0),
                reuse: 1,
                idle_timeout: IDLE_TIMEOUT,
                idle: Mutex::default(),
                instantiations: AtomicU64::new(0),
            }),
        })
    }

    /// Lets one instance serve up to `max_requests` requests, one after
    /// another, instead of a fresh instance for each (`1`, the default).
    /// What a request leaves in the instance's memory (globals, caches)
    /// is there for the next requests of the same task, never of another
    /// task. An instance that traps, times out, runs out of fuel or is
    /// refused memory is dropped, never reused; so is one that has served
    /// `max_requests`. At most [`MAX_IDLE_INSTANCES`] wait between
    /// requests, each for up to [`IDLE_TIMEOUT`]; none is kept while the
    /// instance pool is more than three quarters full or the task's
    /// instances hold more than three quarters of its memory, and a
    /// request refused memory first drops idle instances, oldest first.
    /// Must be called before the handler is cloned.
    pub fn reuse_instances(mut self, max_requests: u32) -> HttpHandler {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.reuse = max_requests.max(1);
        }
        self
    }

    /// How long a kept instance waits for its next request before it is
    /// dropped ([`IDLE_TIMEOUT`] unless set). Must be called before the
    /// handler is cloned.
    pub fn idle_timeout(mut self, timeout: Duration) -> HttpHandler {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.idle_timeout = timeout;
        }
        self
    }

    /// Instances created so far (one per request without reuse).
    pub fn instantiations(&self) -> u64 {
        self.inner.instantiations.load(Ordering::Relaxed)
    }

    /// Instances kept idle for the next requests now.
    pub fn idle_instances(&self) -> usize {
        self.inner.idle.lock().map(|i| i.warm.len()).unwrap_or(0)
    }

    /// Calls `hook` with the report of every request once its instance is
    /// done (after the response body has been streamed).
    pub fn on_report(mut self, hook: impl Fn(&Report) + Send + Sync + 'static) -> HttpHandler {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.on_report = Some(Box::new(hook));
        }
        self
    }

    /// Requests being handled now: from the call of [`HttpHandler::handle`]
    /// until the instance is done (its response body streamed).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The task budget the handler's instances share.
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Handles one request in a fresh instance. `Ok` is the guest's
    /// response, whose body streams while the instance keeps running; `Err`
    /// is the report of a request that produced no response (a trap, a
    /// timeout, a limit), for the caller to answer with 5xx.
    ///
    /// Must be called within a tokio runtime: the instance runs in a task
    /// spawned on it.
    pub async fn handle<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<ResponseBody>, Report>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let h = &self.inner;
        let in_flight = InFlight::enter(h);
        let timeout = h
            .limits
            .timeout
            .filter(|_| h.rt.inner.metering != Metering::None);
        let meter = RunMeter::new(h.budget.clone(), timeout);
        let (mut store, proxy, served) = h
            .checkout(&meter)
            .map_err(|e| Report::bare(Outcome::LoadError(e)))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared: wasmtime::Result<_> = (|| {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, req)?;
            let out = http.new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let mut r = report(
                    &h.rt,
                    &mut store,
                    &meter,
                    &h.budget,
                    h.limits,
                    Ok(Outcome::Exit(0)),
                );
                r.outcome = Outcome::Trap {
                    kind: TrapKind::Host(format!("bad request: {e:#}")),
                    backtrace: String::new(),
                };
                return Err(r);
            }
        };

        let this = self.clone();
        let task_meter = meter.clone();
        let task = tokio::spawn(meter.metered(async move {
            let _in_flight = in_flight;
            let h = &this.inner;
            let result = until_deadline(&task_meter, async {
                let proxy = match proxy {
                    Some(p) => p,
                    None => {
                        let p = h.pre.instantiate_async(&mut store).await?;
                        task_meter.instantiated();
                        h.instantiations.fetch_add(1, Ordering::Relaxed);
                        p
                    }
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await?;
                Ok(proxy)
            })
            .await;
            let (result, proxy) = match result {
                Ok(p) => (Ok(Outcome::Exit(0)), Some(p)),
                Err(e) => (Err(e), None),
            };
            let r = report(&h.rt, &mut store, &task_meter, &h.budget, h.limits, result);
            h.check_in(store, proxy, served, &r);
            if let Some(hook) = &h.on_report {
                hook(&r);
            }
            r
        }));

        match rx.await {
            Ok(Ok(resp)) => Ok(resp),
            // The guest answered with an error code instead of a response.
            Ok(Err(code)) => {
                Err(without_response(task, format!("the guest answered with error {code:?}")).await)
            }
            // The instance ended without setting a response.
            Err(_) => Err(without_response(
                task,
                "the guest returned without setting a response".into(),
            )
            .await),
        }
    }
}

/// The report of a request whose instance gave no response: `why`, unless
/// the instance's own report says worse.
async fn without_response(task: tokio::task::JoinHandle<Report>, why: String) -> Report {
    let mut r = match task.await {
        Ok(r) => r,
        Err(e) => panicked(e),
    };
    if r.outcome.is_success() {
        r.outcome = Outcome::Trap {
            kind: TrapKind::Host(why),
            backtrace: String::new(),
        };
    }
    r
}

fn panicked(e: tokio::task::JoinError) -> Report {
    Report::bare(Outcome::Trap {
        kind: TrapKind::Host(format!("the request's task failed: {e}")),
        backtrace: String::new(),
    })
}

/// A complete response body (for answers the host writes itself).
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> ResponseBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
