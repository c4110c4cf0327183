//! The routing table: which tasks serve which service, how busy each is,
//! and the choice of one for a request.
//!
//! Tasks register themselves when their HTTP container starts and
//! deregister when they begin to stop, so a stopping task takes no new
//! requests. The table is read on every request and written only when a
//! task comes or goes: each service's endpoints are an immutable list
//! swapped whole under a write lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use skiff_runtime::{HttpHandler, LogSink, ResponseBody};

/// How many more outstanding requests a task on another worker must be
/// spared before a request hops to it. Handing a request to another
/// worker's thread costs a wakeup there and a body streamed across
/// threads; with hello-http on 2 workers, weighing remote tasks by 8
/// served 22.6k requests/s against 16.7k for plain least-outstanding
/// (wrk, 32 connections, alternating runs; 16 was no better than 8).
pub const REMOTE_COST: usize = 8;

/// A service, by cluster and name.
pub type ServiceKey = (String, String);

/// One task's HTTP container, as the ingress sees it.
pub struct Endpoint {
    /// The task id.
    pub task: String,
    /// The worker the task runs on (its requests run there).
    pub worker: usize,
    /// The container's handler (a fresh instance per request).
    pub handler: HttpHandler,
    /// The most requests it takes at once (`skiff.concurrency`).
    pub limit: usize,
    /// The container's log, for lines about failed requests.
    pub logs: Arc<dyn LogSink>,
    /// Its service's metrics, counted on the request path without a lookup.
    pub metrics: Arc<crate::metrics::ServiceMetrics>,
    outstanding: AtomicUsize,
    routable: AtomicBool,
}

impl Endpoint {
    /// An endpoint that takes requests once [`Routes::set_routable`].
    pub fn new(
        task: String,
        worker: usize,
        handler: HttpHandler,
        limit: usize,
        logs: Arc<dyn LogSink>,
        metrics: Arc<crate::metrics::ServiceMetrics>,
    ) -> Endpoint {
        Endpoint {
            task,
            worker,
            handler,
            limit: limit.max(1),
            logs,
            metrics,
            outstanding: AtomicUsize::new(0),
            routable: AtomicBool::new(false),
        }
    }

    /// Sets whether the task takes requests; whether that changed.
    fn set_routable(&self, yes: bool) -> bool {
        self.routable.swap(yes, Ordering::AcqRel) != yes
    }

    /// Requests admitted and not yet answered in full.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    fn try_admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut n = self.outstanding.load(Ordering::Acquire);
        loop {
            if n >= self.limit {
                return None;
            }
            match self.outstanding.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Admitted(self.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// A request admitted to an endpoint; it counts as outstanding until
/// dropped (the ingress drops it when the response body is done).
pub struct Admitted(Arc<Endpoint>);

impl Admitted {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request gets.
pub enum Pick {
    /// No such service has ever had a task here.
    Unknown,
    /// The service has no RUNNING, healthy task.
    NoTask,
    /// Every task is at its concurrency limit.
    Full {
        /// How many tasks.
        tasks: usize,
    },
    /// This task takes it.
    To(Admitted),
}

/// Opens a listener for a container's `hostPort`.
pub trait PortOpener: Send + Sync {
    /// Listens on `port` for `service`; says why not when it cannot.
    fn open(&self, port: u16, service: ServiceKey) -> std::io::Result<()>;
}

/// Answers a guest's request for a service as the ingress would (the
/// front); what a task's Service Connect links call.
pub trait ServiceCaller: Send + Sync {
    /// The answer to `req` for `service`, from a guest on worker `local`.
    fn call(
        &self,
        service: ServiceKey,
        req: hyper::Request<super::peers::RequestBody>,
        local: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<ResponseBody>> + Send>>;
}

#[derive(Default)]
struct Table {
    services: HashMap<ServiceKey, Arc<[Arc<Endpoint>]>>,
    ports: HashMap<u16, ServiceKey>,
}

/// The routing table of this node.
pub struct Routes {
    domain: String,
    /// Custom domains services claim, from the store.
    domains: Arc<super::domains::Domains>,
    table: RwLock<Table>,
    opener: OnceLock<Box<dyn PortOpener>>,
    caller: OnceLock<Box<dyn ServiceCaller>>,
    /// Sent to when a task may now take requests it could not (or no
    /// longer can): what requests held for a task wait on.
    changed: tokio::sync::watch::Sender<()>,
}

impl Routes {
    /// A table for hosts under `domain` (such as `localhost`).
    pub fn new(domain: &str) -> Routes {
        Routes {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            domains: Default::default(),
            table: RwLock::new(Table::default()),
            opener: OnceLock::new(),
            caller: OnceLock::new(),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    /// The domain hosts are under.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The custom domains services claim (kept current by
    /// [`super::domains::follow`]).
    pub fn domains(&self) -> &Arc<super::domains::Domains> {
        &self.domains
    }

    /// Told of every change to which tasks take requests (a task
    /// registered, removed, or RUNNING and healthy or no longer so).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Whether the task of `ep` is RUNNING and healthy enough to take
    /// requests.
    pub fn set_routable(&self, ep: &Endpoint, yes: bool) {
        if ep.set_routable(yes) {
            self.changed.send_replace(());
        }
    }

    /// Sets what opens hostPort listeners (once).
    pub fn set_opener(&self, opener: Box<dyn PortOpener>) {
        let _ = self.opener.set(opener);
    }

    /// Sets what answers guests' requests for services (once).
    pub fn set_caller(&self, caller: Box<dyn ServiceCaller>) {
        let _ = self.caller.set(caller);
    }

    /// The answer to a guest's request for `service` (503 before the
    /// front has started).
    pub fn call(
        &self,
        service: ServiceKey,
        req: hyper::Request<super::peers::RequestBody>,
        local: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<ResponseBody>> + Send>>
    {
        match self.caller.get() {
            Some(c) => c.call(service, req, local),
            None => Box::pin(async {
                let mut resp = hyper::Response::new(skiff_runtime::full_body(
                    "the ingress has not started yet; retry\n",
                ));
                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                resp
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The service a Host header names: a custom domain a service claims,
    /// else `SERVICE.CLUSTER.DOMAIN`, or `SERVICE.DOMAIN` for the default
    /// cluster. The port is ignored.
    pub fn service_of_host(&self, host: &str) -> Option<ServiceKey> {
        if let Some(c) = self.domains.lookup(host) {
            return Some((c.cluster, c.service));
        }
        let host = host.trim().to_ascii_lowercase();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => host,
        };
        let host = host.trim_end_matches('.');
        let rest = host.strip_suffix(&self.domain)?.strip_suffix('.')?;
        let (service, cluster) = match rest.split_once('.') {
            Some((s, c)) => (s, c),
            None => (rest, "default"),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (ok(service) && ok(cluster)).then(|| (cluster.to_string(), service.to_string()))
    }

    /// Adds a task's endpoint to its service and opens its host ports.
    /// Returns what could not be done, in words.
    pub fn register(
        &self,
        service: ServiceKey,
        ep: Arc<Endpoint>,
        host_ports: &[u16],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut to_open = Vec::new();
        {
            let mut t = self.write();
            let list = t
                .services
                .entry(service.clone())
                .or_insert_with(|| Arc::from(vec![]));
            let mut v: Vec<Arc<Endpoint>> =
                list.iter().filter(|e| e.task != ep.task).cloned().collect();
            v.push(ep);
            *list = Arc::from(v);
            self.changed.send_replace(());
            for &p in host_ports {
                match t.ports.get(&p) {
                    Some(owner) if *owner == service => {}
                    Some((c, s)) => problems.push(format!(
                        "hostPort {p} is already the port of service {s} in cluster {c}; it is not opened for this service"
                    )),
                    None => {
                        t.ports.insert(p, service.clone());
                        to_open.push(p);
                    }
                }
            }
        }
        for p in to_open {
            let opened = match self.opener.get() {
                Some(o) => o.open(p, service.clone()).map_err(|e| e.to_string()),
                None => Err("no ingress is listening".to_string()),
            };
            if let Err(e) = opened {
                self.write().ports.remove(&p);
                problems.push(format!("cannot listen on hostPort {p}: {e}"));
            }
        }
        problems
    }

    /// Removes a task's endpoint: it takes no new requests.
    pub fn deregister(&self, service: &ServiceKey, task: &str) {
        let mut t = self.write();
        if let Some(list) = t.services.get_mut(service) {
            let v: Vec<Arc<Endpoint>> = list.iter().filter(|e| e.task != task).cloned().collect();
            *list = Arc::from(v);
            self.changed.send_replace(());
        }
    }

    /// Each service's load on this node: its routable tasks, requests in
    /// flight, and what its HTTP containers use and reserve.
    pub fn load(&self) -> std::collections::BTreeMap<String, crate::model::scaling::ServiceLoad> {
        let mut out = std::collections::BTreeMap::new();
        for ((cluster, service), list) in self.read().services.iter() {
            let mut l = crate::model::scaling::ServiceLoad::default();
            let mut tasks = std::collections::HashSet::new();
            for e in list.iter() {
                if !e.routable.load(Ordering::Acquire) {
                    continue;
                }
                let budget = e.handler.budget();
                let limits = budget.limits();
                if tasks.insert(e.task.as_str()) {
                    l.cpu_units += limits.cpu_units.unwrap_or(1024) as u64;
                }
                l.in_flight += e.outstanding() as u64;
                l.cpu_ns += budget.cpu_used().as_nanos() as u64;
                l.memory += budget.memory_used();
                l.memory_limit += limits.memory_bytes;
            }
            l.tasks = tasks.len() as u32;
            if l.tasks > 0 {
                out.insert(format!("{cluster}/{service}"), l);
            }
        }
        out
    }

    /// The service a host port was opened for.
    pub fn service_of_port(&self, port: u16) -> Option<ServiceKey> {
        self.read().ports.get(&port).cloned()
    }

    /// Chooses a task for a request that arrived on worker `local`: among
    /// the routable tasks below their limit, the one with the fewest
    /// outstanding requests, where tasks on other workers count
    /// [`REMOTE_COST`] more (and `local` wins ties).
    pub fn pick(&self, service: &ServiceKey, local: usize) -> Pick {
        let Some(list) = self.read().services.get(service).cloned() else {
            return Pick::Unknown;
        };
        let routable: Vec<&Arc<Endpoint>> = list
            .iter()
            .filter(|e| e.routable.load(Ordering::Acquire))
            .collect();
        if routable.is_empty() {
            return Pick::NoTask;
        }
        // A few tries: another request may take the last slot between the
        // choice and the admission.
        for _ in 0..routable.len() + 2 {
            let best = routable
                .iter()
                .filter(|e| e.outstanding() < e.limit)
                .min_by_key(|e| {
                    let remote = e.worker != local;
                    (
                        e.outstanding() + if remote { REMOTE_COST } else { 0 },
                        remote,
                    )
                });
            let Some(best) = best else { break };
            if let Some(a) = best.try_admit() {
                return Pick::To(a);
            }
        }
        Pick::Full {
            tasks: routable.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> HttpHandler {
        let rt = skiff_runtime::Runtime::new(skiff_runtime::RuntimeConfig {
            allocation: skiff_runtime::Allocation::OnDemand,
            ..Default::default()
        })
        .unwrap();
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/guests/dist/hello-http.wasm"
        ))
        .unwrap();
        let guest = rt.load(&wasm).unwrap();
        HttpHandler::new(
            &rt,
            &guest,
            skiff_runtime::Budget::new(skiff_runtime::Limits {
                memory_bytes: 64 << 20,
                cpu_units: None,
            }),
            skiff_runtime::Sandbox::default(),
            skiff_runtime::RunLimits::default(),
        )
        .unwrap()
    }

    fn ep(task: &str, worker: usize, limit: usize, h: &HttpHandler) -> Arc<Endpoint> {
        let e = Arc::new(Endpoint::new(
            task.into(),
            worker,
            h.clone(),
            limit,
            Arc::new(skiff_runtime::DiscardLogs),
            Default::default(),
        ));
        e.set_routable(true);
        e
    }

    #[test]
    fn hosts_name_a_service_and_a_cluster() {
        let r = Routes::new("localhost");
        let k = |c: &str, s: &str| Some((c.to_string(), s.to_string()));
        assert_eq!(
            r.service_of_host("web.prod.localhost:8080"),
            k("prod", "web")
        );
        assert_eq!(r.service_of_host("Web.localhost"), k("default", "web"));
        assert_eq!(r.service_of_host("web.prod.localhost."), k("prod", "web"));
        assert_eq!(r.service_of_host("localhost"), None);
        assert_eq!(r.service_of_host("web.example.com"), None);
        assert_eq!(r.service_of_host("a.b.c.localhost"), None);
        let r = Routes::new("apps.example.com");
        assert_eq!(
            r.service_of_host("api.edge.apps.example.com"),
            k("edge", "api")
        );
    }

    #[test]
    fn least_outstanding_first_local_on_ties_and_full_at_the_limit() {
        let h = handler();
        let r = Routes::new("localhost");
        let svc = ("default".to_string(), "web".to_string());
        assert!(matches!(r.pick(&svc, 0), Pick::Unknown));
        let (a, b) = (ep("a", 0, 2, &h), ep("b", 1, 2, &h));
        assert!(r.register(svc.clone(), a.clone(), &[]).is_empty());
        r.register(svc.clone(), b.clone(), &[]);
        let pick = |local| match r.pick(&svc, local) {
            Pick::To(a) => a,
            _ => panic!("no task taken"),
        };
        let first = pick(1);
        assert_eq!(first.endpoint().task, "b", "local wins");
        let second = pick(1);
        assert_eq!(
            second.endpoint().task,
            "b",
            "and stays local while not much busier"
        );
        let third = pick(1);
        assert_eq!(
            third.endpoint().task,
            "a",
            "a full local task sends it across"
        );
        let fourth = pick(0);
        assert_eq!(fourth.endpoint().task, "a");
        assert!(matches!(r.pick(&svc, 0), Pick::Full { tasks: 2 }));
        drop(third);
        assert!(matches!(r.pick(&svc, 0), Pick::To(_)));
        drop((first, second, fourth));
        // A local task far busier than a remote one sends requests across.
        let (c, d) = (ep("c", 0, 100, &h), ep("d", 1, 100, &h));
        let other = ("default".to_string(), "api".to_string());
        r.register(other.clone(), c.clone(), &[]);
        r.register(other.clone(), d.clone(), &[]);
        let held: Vec<Admitted> = (0..=REMOTE_COST)
            .map(|_| match r.pick(&other, 0) {
                Pick::To(a) => a,
                _ => panic!(),
            })
            .collect();
        assert!(held.iter().all(|a| a.endpoint().task == "c"));
        let Pick::To(across) = r.pick(&other, 0) else {
            panic!()
        };
        assert_eq!(across.endpoint().task, "d");
        assert_eq!((a.outstanding(), b.outstanding()), (0, 0));
        // Unhealthy and stopping tasks take nothing.
        r.set_routable(&b, false);
        r.deregister(&svc, "a");
        assert!(matches!(r.pick(&svc, 0), Pick::NoTask));
    }

    #[test]
    fn every_change_to_which_tasks_take_requests_is_told() {
        let h = handler();
        let r = Routes::new("localhost");
        let svc = ("default".to_string(), "web".to_string());
        let mut changes = r.changes();
        let mut told = || {
            let yes = changes.has_changed().unwrap();
            changes.borrow_and_update();
            yes
        };
        assert!(!told());
        let a = ep("a", 0, 2, &h);
        r.register(svc.clone(), a.clone(), &[]);
        assert!(told(), "registered");
        r.set_routable(&a, false);
        assert!(told(), "unhealthy");
        r.set_routable(&a, false);
        assert!(!told(), "no change");
        r.set_routable(&a, true);
        assert!(told(), "healthy");
        r.deregister(&svc, "a");
        assert!(told(), "removed");
    }
}
