//! Typed outcomes of a run or a request, and how errors from wasmtime map
//! onto them (by type, never by message text).

use std::fmt;
use std::time::Duration;

use crate::limits::TimedOut;
use crate::load::LoadError;

/// How a run (a command) or a request (an HTTP handler) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest exited with this code (0 is success). A `wasi:cli/run`
    /// that returns `Err` is exit code 1.
    Exit(i32),
    /// The guest burned its whole fuel budget.
    OutOfFuel {
        /// The budget that was exhausted.
        budget: u64,
    },
    /// The guest asked for more linear memory than its limit allows, and
    /// could not go on without it (or could not even start).
    MemoryLimit {
        /// The limit, in bytes, shared by all live instances of the task.
        limit_bytes: u64,
    },
    /// The guest ran past its wall-clock timeout.
    Timeout {
        /// The timeout that expired.
        limit: Duration,
    },
    /// The guest trapped.
    Trap {
        /// What kind of trap.
        kind: TrapKind,
        /// The wasm backtrace, one frame a line (may be empty).
        backtrace: String,
    },
    /// The guest could not be loaded or linked.
    LoadError(LoadError),
}

/// The kind of a trap, named as wasm names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapKind {
    /// `unreachable` executed (also how a Rust panic or abort ends).
    Unreachable,
    /// A load or store outside linear memory.
    MemoryOutOfBounds,
    /// The wasm stack was exhausted.
    StackOverflow,
    /// Integer division by zero.
    IntegerDivisionByZero,
    /// Integer overflow (for example `i32::MIN / -1`).
    IntegerOverflow,
    /// A float could not be converted to an integer.
    BadConversionToInteger,
    /// An indirect call through a null or out-of-bounds table entry, or
    /// with the wrong signature.
    BadIndirectCall,
    /// Any other trap wasmtime raises, by its own name.
    Other(String),
    /// A host function returned an error to the guest that ended it.
    Host(String),
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrapKind::Unreachable => {
                f.write_str("unreachable instruction executed (a panic or abort in the guest)")
            }
            TrapKind::MemoryOutOfBounds => f.write_str("out-of-bounds memory access"),
            TrapKind::StackOverflow => f.write_str("stack overflow"),
            TrapKind::IntegerDivisionByZero => f.write_str("integer division by zero"),
            TrapKind::IntegerOverflow => f.write_str("integer overflow"),
            TrapKind::BadConversionToInteger => f.write_str("invalid conversion to integer"),
            TrapKind::BadIndirectCall => f.write_str("bad indirect call"),
            TrapKind::Other(s) => write!(f, "{s}"),
            TrapKind::Host(s) => write!(f, "host error: {s}"),
        }
    }
}

impl TrapKind {
    /// A short, stable, machine-readable name (`unreachable`, `stack_overflow`, …).
    pub fn code(&self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable",
            TrapKind::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::IntegerDivisionByZero => "integer_division_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversionToInteger => "bad_conversion_to_integer",
            TrapKind::BadIndirectCall => "bad_indirect_call",
            TrapKind::Other(_) => "other",
            TrapKind::Host(_) => "host",
        }
    }
}

impl Outcome {
    /// The outcome's stable name: `exit`, `out_of_fuel`, `memory_limit`,
    /// `timeout`, `trap` or `load_error`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Exit(_) => "exit",
            Outcome::OutOfFuel { .. } => "out_of_fuel",
            Outcome::MemoryLimit { .. } => "memory_limit",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Trap { .. } => "trap",
            Outcome::LoadError(_) => "load_error",
        }
    }

    /// The exit code, for `Exit` only.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Exit(c) => Some(*c),
            _ => None,
        }
    }

    /// True for `Exit(0)`.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exit(0))
    }

    /// What happened, in words a user can act on (one line).
    pub fn reason(&self) -> String {
        match self {
            Outcome::Exit(0) => "exited with code 0".to_string(),
            Outcome::Exit(c) => format!("exited with code {c}"),
            Outcome::OutOfFuel { budget } => format!(
                "ran out of fuel: used its whole budget of {budget} units; raise the fuel budget or do less work per run"
            ),
            Outcome::MemoryLimit { limit_bytes } => format!(
                "hit its memory limit of {}: linear memory could not grow past it; raise the memory limit or use less memory",
                human_bytes(*limit_bytes)
            ),
            Outcome::Timeout { limit } => format!(
                "timed out after {}: stopped by the wall-clock timeout; raise the timeout or do less work per run",
                human_duration(*limit)
            ),
            Outcome::Trap { kind, .. } => format!("trapped: {kind}"),
            Outcome::LoadError(e) => format!("could not load: {e}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// An outcome with what the run cost.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Fuel units burned (roughly, wasm instructions executed).
    pub fuel_consumed: u64,
    /// The most linear memory this run's instances held at once, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock time from start to end.
    pub wall: Duration,
    /// Thread CPU time the guest code ran (measured only when the task has a
    /// CPU quota; zero otherwise).
    pub cpu: Duration,
    /// Time the run spent suspended by its task's CPU quota.
    pub throttled: Duration,
    /// Time from the start of the run until its instance was ready (zero
    /// when it never was).
    pub instantiation: Duration,
}

impl Report {
    /// A report of a run that never got to run guest code (nothing
    /// consumed, no time taken).
    pub fn bare(outcome: Outcome) -> Report {
        Report {
            outcome,
            fuel_consumed: 0,
            peak_memory_bytes: 0,
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            throttled: Duration::ZERO,
            instantiation: Duration::ZERO,
        }
    }
}

/// What the limits of a run were, to name them in outcomes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub memory_limited: bool,
    pub memory_limit: u64,
    pub fuel_budget: u64,
    pub timeout: Option<Duration>,
}

/// Turns the error a guest call ended with into an outcome.
///
/// Order matters: a guest that was refused memory and then trapped (a Rust
/// guest aborts on allocation failure) hit its memory limit; that is the
/// cause to report, not the trap it led to.
pub(crate) fn classify(err: &wasmtime::Error, hit: Hit) -> Outcome {
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Outcome::Exit(exit.0);
    }
    if err.downcast_ref::<TimedOut>().is_some() {
        return Outcome::Timeout {
            limit: hit.timeout.unwrap_or_default(),
        };
    }
    let trap = err.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::OutOfFuel) {
        return Outcome::OutOfFuel {
            budget: hit.fuel_budget,
        };
    }
    if hit.memory_limited {
        return Outcome::MemoryLimit {
            limit_bytes: hit.memory_limit,
        };
    }
    if trap == Some(wasmtime::Trap::Interrupt) {
        if let Some(limit) = hit.timeout {
            return Outcome::Timeout { limit };
        }
    }
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string())
        .unwrap_or_default();
    let kind = match trap {
        Some(t) => trap_kind(t),
        // The root cause is the host's own words; the backtrace is kept
        // apart above.
        None => TrapKind::Host(err.root_cause().to_string()),
    };
    Outcome::Trap { kind, backtrace }
}

fn trap_kind(t: wasmtime::Trap) -> TrapKind {
    use wasmtime::Trap as T;
    match t {
        T::UnreachableCodeReached => TrapKind::Unreachable,
        T::MemoryOutOfBounds | T::HeapMisaligned => TrapKind::MemoryOutOfBounds,
        T::StackOverflow => TrapKind::StackOverflow,
        T::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
        T::IntegerOverflow => TrapKind::IntegerOverflow,
        T::BadConversionToInteger => TrapKind::BadConversionToInteger,
        T::IndirectCallToNull | T::BadSignature | T::TableOutOfBounds => TrapKind::BadIndirectCall,
        other => TrapKind::Other(other.to_string()),
    }
}

/// `512 MiB`, `1.5 GiB`, `4096 bytes`.
pub fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// `250ms`, `2s`, `1.5s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 30), "3 GiB");
        assert_eq!(human_bytes(100), "100 bytes");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn reasons_name_the_limit() {
        let r = Outcome::MemoryLimit {
            limit_bytes: 16 << 20,
        }
        .reason();
        assert!(r.contains("16 MiB"), "{r}");
        let r = Outcome::Timeout {
            limit: Duration::from_millis(500),
        }
        .reason();
        assert!(r.contains("500ms"), "{r}");
        let r = Outcome::OutOfFuel { budget: 1000 }.reason();
        assert!(r.contains("1000"), "{r}");
    }
}
