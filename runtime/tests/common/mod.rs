//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use skiff_runtime::{
    Budget, Guest, Limits, LogSink, LogStream, Report, RunLimits, Runtime, RuntimeConfig, Sandbox,
};

/// A built guest from guests/dist/.
pub fn dist(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/dist")
        .join(name)
}

/// One runtime per test binary, as one per process is the intent.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("runtime"))
}

pub fn load(name: &str) -> Guest {
    rt().load_file(dist(name))
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// Collects a guest's output lines.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<(LogStream, String)>>);

impl LogSink for Lines {
    fn line(&self, stream: LogStream, _: SystemTime, line: &str) {
        self.0.lock().unwrap().push((stream, line.to_string()));
    }
}

impl Lines {
    pub fn stdout(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == LogStream::Stdout)
            .map(|(_, l)| l.clone())
            .collect()
    }
    pub fn stderr(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == LogStream::Stderr)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

pub fn sandbox(args: &[&str]) -> (Sandbox, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let sb = Sandbox {
        args: args.iter().map(|s| s.to_string()).collect(),
        logs: lines.clone(),
        ..Sandbox::default()
    };
    (sb, lines)
}

pub fn budget(memory_mib: u64, cpu: Option<u32>) -> Budget {
    Budget::new(Limits {
        memory_bytes: memory_mib << 20,
        cpu_units: cpu,
    })
}

/// A single-threaded tokio runtime, like a skiff worker's.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn run(guest: &Guest, budget: &Budget, sandbox: &Sandbox, limits: RunLimits) -> Report {
    block_on(rt().run(guest, budget, sandbox, limits))
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
