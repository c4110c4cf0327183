//! Placement: the worker a task goes to, or why it fits nowhere.
//!
//! A pure function of the workers' loads, so that it is tested without
//! threads, and so that placing over several nodes later is the same
//! question asked of more workers.

use std::fmt;

/// What a worker has and has promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLoad {
    /// CPU units the worker has (1024: one core, one thread).
    pub cpu_capacity: u32,
    /// MiB the worker may hand out.
    pub memory_capacity: u64,
    /// CPU units reserved by its tasks.
    pub cpu_reserved: u32,
    /// MiB reserved by its tasks.
    pub memory_reserved: u64,
    /// Tasks placed on it.
    pub tasks: usize,
}

impl WorkerLoad {
    /// An empty worker.
    pub fn new(cpu_capacity: u32, memory_capacity: u64) -> WorkerLoad {
        WorkerLoad {
            cpu_capacity,
            memory_capacity,
            cpu_reserved: 0,
            memory_reserved: 0,
            tasks: 0,
        }
    }

    fn fits_cpu(&self, cpu: u32) -> bool {
        self.cpu_reserved + cpu <= self.cpu_capacity
    }

    fn fits_memory(&self, memory: u64) -> bool {
        self.memory_reserved + memory <= self.memory_capacity
    }
}

/// Why a task fits nowhere, as ECS words it in `failures[].reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFit {
    /// No worker has the CPU units left.
    Cpu,
    /// Workers have the CPU but none the memory.
    Memory,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoFit::Cpu => "RESOURCE:CPU",
            NoFit::Memory => "RESOURCE:MEMORY",
        })
    }
}

/// Spread: among the workers the task fits on, the one with the fewest
/// tasks, then the most free memory, then the lowest index.
pub fn spread(workers: &[WorkerLoad], cpu: u32, memory: u64) -> Result<usize, NoFit> {
    let best = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.fits_cpu(cpu) && w.fits_memory(memory))
        .min_by_key(|(i, w)| {
            (
                w.tasks,
                std::cmp::Reverse(w.memory_capacity - w.memory_reserved),
                *i,
            )
        });
    match best {
        Some((i, _)) => Ok(i),
        None if workers.iter().any(|w| w.fits_cpu(cpu)) => Err(NoFit::Memory),
        None => Err(NoFit::Cpu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_over_workers() {
        let mut w = vec![WorkerLoad::new(1024, 1000); 3];
        let mut placed = Vec::new();
        for _ in 0..6 {
            let i = spread(&w, 256, 100).unwrap();
            w[i].cpu_reserved += 256;
            w[i].memory_reserved += 100;
            w[i].tasks += 1;
            placed.push(i);
        }
        assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn says_which_resource_is_short() {
        let mut w = vec![WorkerLoad::new(1024, 1000)];
        assert_eq!(spread(&w, 2048, 10), Err(NoFit::Cpu));
        assert_eq!(spread(&w, 256, 2000), Err(NoFit::Memory));
        w[0].cpu_reserved = 1024;
        assert_eq!(spread(&w, 1, 1), Err(NoFit::Cpu));
        assert_eq!(spread(&w, 0, 1), Ok(0));
        assert_eq!(NoFit::Memory.to_string(), "RESOURCE:MEMORY");
    }
}
