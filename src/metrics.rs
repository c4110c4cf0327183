//! Metrics in Prometheus's text format, served at `GET /metrics` on the API
//! listener.
//!
//! Counters that move on every request (requests by status, latency, fuel,
//! throttled time, instantiation time) are atomics in a per-service record
//! that the ingress and the workers hold on to; rare events (task starts
//! and stops) go through a map under a lock. What the store knows (tasks
//! by status, services' counts) is read when scraped.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::model::service::{counts, ServiceRecord};
use crate::model::task::{StopCode, TaskRecord};
use crate::store::Store;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of durations.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// What one service's tasks did.
pub struct ServiceMetrics {
    /// Requests answered, by HTTP status (100-599).
    requests: Vec<AtomicU64>,
    /// Time to the response's head.
    pub latency: Histogram,
    /// Time to instantiate each request's (or run's) instance.
    pub instantiation: Histogram,
    fuel: AtomicU64,
    throttled_ns: AtomicU64,
    peak_memory: AtomicU64,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        ServiceMetrics {
            requests: (0..500).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
            instantiation: Histogram::default(),
            fuel: AtomicU64::new(0),
            throttled_ns: AtomicU64::new(0),
            peak_memory: AtomicU64::new(0),
        }
    }
}

impl ServiceMetrics {
    /// Counts a request answered with `status` after `latency`.
    pub fn request(&self, status: u16, latency: Duration) {
        if let Some(c) = self.requests.get((status as usize).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(latency);
    }

    /// Adds what one run or request of a guest used.
    pub fn report(&self, r: &Usage) {
        self.fuel.fetch_add(r.fuel_consumed, Ordering::Relaxed);
        self.throttled_ns.fetch_add(
            r.throttled.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.peak_memory
            .fetch_max(r.peak_memory_bytes, Ordering::Relaxed);
        if !r.instantiation.is_zero() {
            self.instantiation.observe(r.instantiation);
        }
    }
}

/// What one run or request of a guest used (the runtime's report, as the
/// metrics count it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Fuel burned.
    pub fuel_consumed: u64,
    /// Time suspended by the task's CPU quota.
    pub throttled: Duration,
    /// The most linear memory it held.
    pub peak_memory_bytes: u64,
    /// Time to instantiate it (zero when an instance was reused).
    pub instantiation: Duration,
}

/// The pooling allocator's occupancy, as the metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolGauge {
    /// Component instances alive.
    pub component_instances: u64,
    /// Linear memories alive.
    pub memories: u64,
    /// Slots of each kind the pool has.
    pub capacity: u64,
}

/// Reads the pool's occupancy now (`None` without a pool).
pub type PoolReader = Box<dyn Fn() -> Option<PoolGauge> + Send + Sync>;

/// This node's metrics.
#[derive(Default)]
pub struct Metrics {
    services: RwLock<HashMap<(String, String), Arc<ServiceMetrics>>>,
    events: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Where the pool's occupancy is read from: set by whoever made the
    /// runtime (the metrics know no wasm runtime).
    pool: std::sync::OnceLock<PoolReader>,
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The record of a service (`service` is empty for tasks run alone).
    pub fn service(&self, cluster: &str, service: &str) -> Arc<ServiceMetrics> {
        let key = (cluster.to_string(), service.to_string());
        if let Some(m) = self
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return m.clone();
        }
        self.services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    fn count(&self, metric: &'static str, labels: String) {
        *self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((metric, labels))
            .or_default() += 1;
    }

    /// A task reached RUNNING.
    pub fn task_started(&self, cluster: &str, service: Option<&str>) {
        self.count(
            "skiff_task_starts_total",
            format!(
                "cluster=\"{}\",service=\"{}\"",
                esc(cluster),
                esc(service.unwrap_or(""))
            ),
        );
    }

    /// A task stopped; a service's task that failed counts as a restart.
    pub fn task_stopped(&self, cluster: &str, service: Option<&str>, code: StopCode, failed: bool) {
        let code = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.count(
            "skiff_task_stops_total",
            format!("cluster=\"{}\",stop_code=\"{}\"", esc(cluster), esc(&code)),
        );
        if let (Some(s), true) = (service, failed) {
            self.count(
                "skiff_service_restarts_total",
                format!("cluster=\"{}\",service=\"{}\"", esc(cluster), esc(s)),
            );
        }
    }

    /// An ACME certificate order ended: `issued` or `failed`.
    pub fn acme_order(&self, result: &str) {
        self.count(
            "skiff_acme_orders_total",
            format!("result=\"{}\"", esc(result)),
        );
    }

    /// The ACME manager compared the claimed domains with the
    /// certificates it holds, and ordered what was missing or due.
    pub fn acme_check(&self, directory: &str) {
        self.count(
            "skiff_acme_checks_total",
            format!("directory=\"{}\"", esc(directory)),
        );
    }

    /// Shows the pool's occupancy, read by `reader` at each rendering
    /// (once; a later call changes nothing).
    pub fn set_pool(&self, reader: PoolReader) {
        let _ = self.pool.set(reader);
    }

    /// The text exposition: everything above plus what the store and the
    /// pool say now.
    pub fn render(&self, store: &dyn Store) -> String {
        let mut out = String::new();
        render_store(&mut out, store);
        self.render_events(&mut out);
        self.render_services(&mut out);
        self.render_pool(&mut out);
        out
    }

    /// The counters of events (task starts and stops, restarts, ACME).
    fn render_events(&self, out: &mut String) {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help) in [
            ("skiff_task_starts_total", "Tasks that reached RUNNING."),
            (
                "skiff_task_stops_total",
                "Tasks that stopped, by stop code.",
            ),
            (
                "skiff_service_restarts_total",
                "Tasks of a service that failed (and were replaced).",
            ),
            (
                "skiff_acme_orders_total",
                "Certificates ordered from the ACME CA, by result (issued, failed).",
            ),
            (
                "skiff_acme_checks_total",
                "Times the claimed domains were compared with the certificates held (each pass orders what is missing or due).",
            ),
        ] {
            head(out, name, "counter", help);
            for ((n, labels), v) in &events {
                if *n == name {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
    }

    /// What each service's requests and guests did, counted on the hot
    /// path.
    fn render_services(&self, out: &mut String) {
        let services = self
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut keys: Vec<&(String, String)> = services.keys().collect();
        keys.sort();
        let labels =
            |k: &(String, String)| format!("cluster=\"{}\",service=\"{}\"", esc(&k.0), esc(&k.1));
        head(
            out,
            "skiff_http_requests_total",
            "counter",
            "Requests the ingress answered, by status code.",
        );
        for k in &keys {
            for (i, c) in services[*k].requests.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "skiff_http_requests_total{{{},code=\"{}\"}} {n}",
                        labels(k),
                        i + 100
                    );
                }
            }
        }
        head(
            out,
            "skiff_http_request_duration_seconds",
            "histogram",
            "Time from a request to its response's head.",
        );
        for k in &keys {
            services[*k]
                .latency
                .render(out, "skiff_http_request_duration_seconds", &labels(k));
        }
        head(
            out,
            "skiff_instantiation_seconds",
            "histogram",
            "Time to instantiate a guest for a request or run.",
        );
        for k in &keys {
            services[*k]
                .instantiation
                .render(out, "skiff_instantiation_seconds", &labels(k));
        }
        head(
            out,
            "skiff_guest_fuel_consumed_total",
            "counter",
            "Fuel guests burned (about one unit per wasm instruction).",
        );
        for k in &keys {
            let _ = writeln!(
                out,
                "skiff_guest_fuel_consumed_total{{{}}} {}",
                labels(k),
                services[*k].fuel.load(Ordering::Relaxed)
            );
        }
        head(
            out,
            "skiff_guest_throttled_seconds_total",
            "counter",
            "Time guests were suspended by their task's CPU quota.",
        );
        for k in &keys {
            let _ = writeln!(
                out,
                "skiff_guest_throttled_seconds_total{{{}}} {}",
                labels(k),
                services[*k].throttled_ns.load(Ordering::Relaxed) as f64 / 1e9
            );
        }
        head(
            out,
            "skiff_guest_peak_memory_bytes",
            "gauge",
            "The most linear memory one run or request held.",
        );
        for k in &keys {
            let _ = writeln!(
                out,
                "skiff_guest_peak_memory_bytes{{{}}} {}",
                labels(k),
                services[*k].peak_memory.load(Ordering::Relaxed)
            );
        }
    }

    /// The pooling allocator's occupancy, when a pool reader is set.
    fn render_pool(&self, out: &mut String) {
        if let Some(p) = self.pool.get().and_then(|read| read()) {
            head(
                out,
                "skiff_pool_instances",
                "gauge",
                "Component instances alive in the pooling allocator.",
            );
            let _ = writeln!(out, "skiff_pool_instances {}", p.component_instances);
            head(
                out,
                "skiff_pool_memories",
                "gauge",
                "Linear memories alive in the pooling allocator.",
            );
            let _ = writeln!(out, "skiff_pool_memories {}", p.memories);
            head(
                out,
                "skiff_pool_capacity",
                "gauge",
                "Slots of each kind the pool has.",
            );
            let _ = writeln!(out, "skiff_pool_capacity {}", p.capacity);
        }
    }
}

/// `# HELP` and `# TYPE` of a metric.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// What the store says now: tasks by cluster and status, services'
/// desired and running counts.
fn render_store(out: &mut String, store: &dyn Store) {
    let mut by_status: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut tasks: HashMap<String, Vec<TaskRecord>> = HashMap::new();
    for r in store.list("tasks/", None, usize::MAX).unwrap_or_default() {
        if let Some(t) = crate::model::task::TaskRecord::decode(&r.value) {
            *by_status
                .entry((t.cluster.clone(), t.last_status.as_str()))
                .or_default() += 1;
            if let Some(s) = t.group.strip_prefix("service:") {
                tasks
                    .entry(format!("{}/{s}", t.cluster))
                    .or_default()
                    .push(t);
            }
        }
    }
    head(
        out,
        "skiff_tasks",
        "gauge",
        "Tasks by cluster and last status.",
    );
    for ((c, s), n) in &by_status {
        let _ = writeln!(
            out,
            "skiff_tasks{{cluster=\"{}\",status=\"{s}\"}} {n}",
            esc(c)
        );
    }
    let services: Vec<ServiceRecord> = store
        .list("services/", None, usize::MAX)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.value).ok())
        .collect();
    head(
        out,
        "skiff_service_desired_tasks",
        "gauge",
        "A service's desiredCount.",
    );
    for s in &services {
        let _ = writeln!(
            out,
            "skiff_service_desired_tasks{{cluster=\"{}\",service=\"{}\"}} {}",
            esc(&s.cluster),
            esc(&s.name),
            s.desired_count
        );
    }
    head(
        out,
        "skiff_service_running_tasks",
        "gauge",
        "A service's tasks in RUNNING.",
    );
    for s in &services {
        let running = tasks
            .get(&format!("{}/{}", s.cluster, s.name))
            .map_or(0, |t| counts(t, None).running);
        let _ = writeln!(
            out,
            "skiff_service_running_tasks{{cluster=\"{}\",service=\"{}\"}} {running}",
            esc(&s.cluster),
            esc(&s.name)
        );
    }
}

/// The registry client's counters: layers pulled from registries, and the
/// bytes its cache bound counts (pulled images and compiled code).
pub fn render_registry(out: &mut String, registry: &crate::images::Registry) {
    let _ = writeln!(
        out,
        "# HELP skiff_image_pulls_total Image layers fetched from registries (cache hits and waits on another pull excluded).\n# TYPE skiff_image_pulls_total counter\nskiff_image_pulls_total {}",
        registry.pulls()
    );
    let _ = writeln!(
        out,
        "# HELP skiff_image_cache_bytes Bytes of pulled images and compiled code on disk, kept under --image-cache-mib.\n# TYPE skiff_image_cache_bytes gauge\nskiff_image_cache_bytes {}",
        registry.cache().size()
    );
}
