//! Placement: the worker a task goes to, or why it fits nowhere.
//!
//! A pure function of the workers' loads, so that it is tested without
//! threads, and so that placing over several nodes later is the same
//! question asked of more workers.

use std::fmt;

use crate::model::service::Strategy;

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

/// What a service asks of placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Strategies in order: the first decides, later ones break its ties
    /// (the worker index breaks the last ties).
    pub strategies: &'a [Strategy],
    /// At most one of the service's tasks per worker.
    pub distinct_instance: bool,
    /// The service's live tasks on each worker.
    pub group_tasks: &'a [usize],
    /// CPU units and MiB of the task.
    pub cpu: u32,
    /// MiB of the task.
    pub memory: u64,
    /// A random number, for `random`.
    pub seed: u64,
}

/// Why a service's task cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaceable {
    /// No worker has the resources.
    Resources(NoFit),
    /// Every worker that fits already has one of the service's tasks.
    DistinctInstance,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::Resources(n) => n.fmt(f),
            Unplaceable::DistinctInstance => f.write_str("distinctInstance placement constraint"),
        }
    }
}

/// Places a service's task: the worker chosen by the service's strategies
/// among those it fits on and its constraint allows.
pub fn place(workers: &[WorkerLoad], req: &Request<'_>) -> Result<usize, Unplaceable> {
    let fitting: Vec<usize> = (0..workers.len())
        .filter(|&i| workers[i].fits_cpu(req.cpu) && workers[i].fits_memory(req.memory))
        .collect();
    if fitting.is_empty() {
        return Err(Unplaceable::Resources(
            if workers.iter().any(|w| w.fits_cpu(req.cpu)) {
                NoFit::Memory
            } else {
                NoFit::Cpu
            },
        ));
    }
    let group = |i: usize| req.group_tasks.get(i).copied().unwrap_or(0);
    let allowed: Vec<usize> = fitting
        .into_iter()
        .filter(|&i| !req.distinct_instance || group(i) == 0)
        .collect();
    if allowed.is_empty() {
        return Err(Unplaceable::DistinctInstance);
    }
    let key = |i: usize| -> Vec<u64> {
        let w = &workers[i];
        let mut k: Vec<u64> = req
            .strategies
            .iter()
            .map(|s| match s {
                Strategy::Spread => group(i) as u64,
                Strategy::BinpackCpu => (w.cpu_capacity - w.cpu_reserved) as u64,
                Strategy::BinpackMemory => w.memory_capacity - w.memory_reserved,
                Strategy::Random => {
                    // A stable shuffle of workers by the seed.
                    (req.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                        >> 1
                }
            })
            .collect();
        if req.strategies.is_empty() {
            k.push(group(i) as u64);
        }
        // Then the fewest tasks overall, then the lowest index.
        k.push(w.tasks as u64);
        k.push(i as u64);
        k
    };
    Ok(allowed
        .into_iter()
        .min_by_key(|&i| key(i))
        .expect("allowed is not empty"))
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

    fn load(cpu_reserved: u32, memory_reserved: u64, tasks: usize) -> WorkerLoad {
        WorkerLoad {
            cpu_capacity: 1024,
            memory_capacity: 1000,
            cpu_reserved,
            memory_reserved,
            tasks,
        }
    }

    fn req<'a>(strategies: &'a [Strategy], group: &'a [usize]) -> Request<'a> {
        Request {
            strategies,
            distinct_instance: false,
            group_tasks: group,
            cpu: 100,
            memory: 100,
            seed: 7,
        }
    }

    #[test]
    fn service_strategies_choose_their_worker() {
        let w = [load(512, 100, 3), load(0, 800, 1), load(100, 0, 0)];
        // Spread by the service's own tasks, whatever else runs there.
        assert_eq!(place(&w, &req(&[Strategy::Spread], &[0, 2, 1])), Ok(0));
        assert_eq!(place(&w, &req(&[], &[1, 1, 0])), Ok(2));
        // Binpack: the least of the resource left.
        assert_eq!(place(&w, &req(&[Strategy::BinpackCpu], &[])), Ok(0));
        assert_eq!(place(&w, &req(&[Strategy::BinpackMemory], &[])), Ok(1));
        // Ties of the first strategy go to the next.
        let tied = [load(0, 100, 0), load(0, 500, 0)];
        assert_eq!(
            place(
                &tied,
                &req(&[Strategy::Spread, Strategy::BinpackMemory], &[1, 1])
            ),
            Ok(1)
        );
        // Random lands on every worker for some seed, and only where it fits.
        let mut seen = [false; 3];
        for seed in 0..64 {
            let r = Request {
                seed,
                ..req(&[Strategy::Random], &[])
            };
            seen[place(&w, &r).unwrap()] = true;
        }
        assert_eq!(seen, [true, true, true]);
        let full = [load(1024, 0, 1), load(0, 0, 0)];
        for seed in 0..16 {
            let r = Request {
                seed,
                ..req(&[Strategy::Random], &[])
            };
            assert_eq!(place(&full, &r), Ok(1));
        }
    }

    #[test]
    fn distinct_instance_keeps_one_task_per_worker() {
        let w = [load(0, 0, 1), load(0, 0, 0)];
        let mut r = req(&[Strategy::BinpackCpu], &[1, 0]);
        r.distinct_instance = true;
        assert_eq!(place(&w, &r), Ok(1));
        r.group_tasks = &[1, 1];
        assert_eq!(place(&w, &r), Err(Unplaceable::DistinctInstance));
        r.cpu = 4096;
        assert_eq!(place(&w, &r), Err(Unplaceable::Resources(NoFit::Cpu)));
    }
}
