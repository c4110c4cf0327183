//! The wasmtime engine: its configuration, the instance allocator (pooling
//! where the address space allows it), the epoch ticker, and the linkers
//! every guest is instantiated against.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::load::{Digest, Guest};
use crate::sandbox::{P1Host, P2Host};

/// The result of loading one binary, shared by everyone who loads it.
pub(crate) type LoadCell = Arc<std::sync::OnceLock<Result<Guest, crate::load::LoadError>>>;

/// What the engine meters. The default, [`Metering::Full`], is what a
/// multi-tenant engine needs; the others exist to measure what metering
/// costs and for trusted, single-tenant use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metering {
    /// Epoch interruption (timeouts, CPU quotas, fair yields) and fuel
    /// counting (fuel budgets, fuel reports). The default.
    #[default]
    Full,
    /// Epoch interruption only: timeouts and CPU quotas hold, fuel is not
    /// counted (reports say 0) and fuel budgets are ignored.
    EpochOnly,
    /// Neither: no timeouts, no CPU quotas, no fuel. A guest that loops
    /// forever holds its worker forever. For benchmarks.
    None,
}

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocation {
    /// Pooling with copy-on-write memory images; falls back to on-demand
    /// when the pool's address space cannot be reserved. The default.
    #[default]
    Auto,
    /// Pooling only: fail if the pool cannot be reserved.
    Pooling,
    /// mmap per instance.
    OnDemand,
}

/// How to build a [`Runtime`]. Defaults: full metering, pooling when
/// possible with room for 1,000 live instances, 10 MiB of each pooled
/// memory kept resident, a 1 ms epoch tick, and no on-disk cache (every
/// process start compiles).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory for compiled artifacts, keyed by content digest and the
    /// engine's compatibility hash. `None`: no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Instance allocation strategy.
    pub allocation: Allocation,
    /// Live component instances (each with its memory) the pool holds at
    /// once; core instances and tables, of which a component has several,
    /// get several slots per instance.
    pub pool_size: u32,
    /// What the engine meters.
    pub metering: Metering,
    /// The epoch tick: the granularity of timeouts and CPU quota checks.
    pub epoch_tick: Duration,
    /// Bytes of each pooled linear memory that are zeroed in place (memset)
    /// when an instance ends, instead of being given back to the kernel
    /// (madvise, whose TLB shootdowns cost more on small machines).
    pub memory_keep_resident: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            allocation: Allocation::Auto,
            pool_size: 1_000,
            metering: Metering::Full,
            epoch_tick: Duration::from_millis(1),
            memory_keep_resident: 10 << 20,
        }
    }
}

/// The engine that loads and runs guests. Cheap to clone; one per process
/// is the intent (it owns one epoch ticker thread).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub engine: wasmtime::Engine,
    pub module_linker: wasmtime::Linker<P1Host>,
    pub component_linker: wasmtime::component::Linker<P2Host>,
    pub cache_dir: Option<PathBuf>,
    /// Hex of the engine's precompile compatibility hash: artifacts
    /// compiled by an engine with another hash are never loaded.
    pub compat: String,
    pub metering: Metering,
    pub pooling: bool,
    pub pool_size: u32,
    /// Loaded guests by digest; a cell is filled once, by the first load.
    pub loaded: Mutex<std::collections::HashMap<Digest, LoadCell>>,
    _ticker: EpochTicker,
}

/// How full the pooling allocator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Component instances alive now.
    pub component_instances: u64,
    /// Linear memories alive now.
    pub memories: usize,
    /// Slots the pool has of each.
    pub capacity: u32,
}

impl Runtime {
    /// The pool's occupancy; `None` when instances are allocated on demand.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        let m = self.inner.engine.pooling_allocator_metrics()?;
        Some(PoolStats {
            component_instances: m.component_instances(),
            memories: m.memories(),
            capacity: self.inner.pool_size,
        })
    }

    /// Whether an instance may be kept idle for reuse: not when any of
    /// the pool's kinds of slot (component instances, core instances,
    /// memories, tables) is three quarters used, so that kept instances
    /// never take the slots fresh instances of other tasks need. (A
    /// component holds several core instances and tables: those run out
    /// first.)
    pub(crate) fn may_keep_idle(&self) -> bool {
        let Some(m) = self.inner.engine.pooling_allocator_metrics() else {
            return true;
        };
        let n = u64::from(self.inner.pool_size);
        let fuller = |used: u64, slots: u64| used * 4 >= slots * 3;
        !(fuller(m.component_instances(), n)
            || fuller(m.memories() as u64, n)
            || fuller(m.core_instances(), n * u64::from(CORE_INSTANCES_PER_SLOT))
            || fuller(m.tables() as u64, n * u64::from(TABLES_PER_SLOT)))
    }

    /// Builds the engine. Errors name what could not be set up.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Runtime> {
        let (engine, pooling) = match config.allocation {
            Allocation::OnDemand => (build_engine(&config, false)?, false),
            Allocation::Pooling => (build_engine(&config, true)?, true),
            Allocation::Auto => match build_engine(&config, true) {
                Ok(e) => (e, true),
                Err(_) => (build_engine(&config, false)?, false),
            },
        };

        let mut module_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |h: &mut P1Host| &mut h.wasi)?;

        // A Rust guest's std imports wasi:cli (environment, exit, stdio) even
        // in an HTTP component, so HTTP components get the whole command
        // world plus wasi:http.
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)?;

        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };

        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                module_linker,
                component_linker,
                cache_dir: config.cache_dir,
                compat,
                metering: config.metering,
                pool_size: config.pool_size,
                pooling,
                loaded: Mutex::new(Default::default()),
                _ticker: ticker,
            }),
        })
    }

    /// True when instances come from the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// What this engine meters.
    pub fn metering(&self) -> Metering {
        self.inner.metering
    }
}

/// Core instances the pool holds per component instance. A component is
/// several core instances (a Rust `wasi:http` component: its module and
/// two adapter shims, 3) and its own memory; with as many core-instance
/// slots as memories, core instances ran out at a third of `pool_size`.
const CORE_INSTANCES_PER_SLOT: u32 = 8;
/// Tables the pool holds per component instance (a Rust `wasi:http`
/// component has 2).
const TABLES_PER_SLOT: u32 = 4;

fn build_engine(config: &RuntimeConfig, pooling: bool) -> wasmtime::Result<wasmtime::Engine> {
    let mut c = wasmtime::Config::new();
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    c.memory_init_cow(true);
    // No component-model async (WASIp3): every host call of a WASIp2 guest
    // would otherwise create and retire a concurrent "host task" in the
    // store. Off, a hello-world request through the ingress costs about a
    // third less CPU (bench/http.sh: 1.4x to 2.0x `wasmtime serve`).
    c.concurrency_support(false);
    c.epoch_interruption(config.metering != Metering::None);
    c.consume_fuel(config.metering == Metering::Full);
    if pooling {
        let n = config.pool_size;
        let mut p = wasmtime::PoolingAllocationConfig::new();
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_SLOT))
            .total_memories(n)
            .total_tables(n.saturating_mul(TABLES_PER_SLOT))
            .total_stacks(n)
            // Keep a little of each slot resident when it is reused, so that
            // per-request instantiation does not pay madvise and page
            // faults for the first pages every time.
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(1 << 20)
            // Where the kernel can say which pages an instance dirtied
            // (Linux 6.7+), reset only those instead of memsetting the
            // whole kept-resident prefix: a Rust guest's stack alone is
            // 1 MiB, of which a request touches a few pages.
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
    }
    wasmtime::Engine::new(&c)
}

/// One thread per engine that advances the epoch every tick. Dropping it
/// stops the thread.
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine, tick: Duration) -> EpochTicker {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("skiff-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
