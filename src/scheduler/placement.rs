//! Placement: the worker a task goes to, or why it fits nowhere.
//!
//! A pure function of the nodes (ECS's container instances), their
//! attributes and their workers' loads, so that it is tested without
//! threads or a store. A task goes to one worker of one node.

use std::collections::BTreeMap;
use std::fmt;

use super::expr::Expr;
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

/// A container instance (a node) as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Its id (what `instanceId` in an expression names).
    pub id: &'a str,
    /// Its attributes.
    pub attributes: &'a BTreeMap<String, String>,
    /// Its workers.
    pub workers: &'a [WorkerLoad],
    /// Whether it takes new tasks: connected (its lease alive) and ACTIVE
    /// (not DRAINING, not deregistered).
    pub accepts: bool,
}

/// What a task asks of placement.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Strategies in order: the first decides, later ones break its ties.
    /// None: spread over `ecs.availability-zone`, then over instances.
    pub strategies: &'a [Strategy],
    /// At most one task of the group per container instance.
    pub distinct_instance: bool,
    /// `memberOf`: the instances whose attributes match every one.
    pub member_of: &'a [Expr],
    /// The group's live tasks on each host's workers (`[host][worker]`).
    pub group_tasks: &'a [Vec<usize>],
    /// CPU units of the task.
    pub cpu: u32,
    /// MiB of the task.
    pub memory: u64,
    /// A random number, for `random`.
    pub seed: u64,
}

/// Why a task cannot be placed, as ECS words it in `failures[].reason`
/// and in service events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaceable {
    /// No container instance is connected and ACTIVE.
    NoInstance,
    /// No instance matches the `memberOf` constraints.
    MemberOf,
    /// No worker of a matching instance has the resources.
    Resources(NoFit),
    /// Every instance that fits already has one of the group's tasks.
    DistinctInstance,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::NoInstance => f.write_str("no ACTIVE container instance is connected"),
            Unplaceable::MemberOf => f.write_str("memberOf placement constraint"),
            Unplaceable::Resources(n) => n.fmt(f),
            Unplaceable::DistinctInstance => f.write_str("distinctInstance placement constraint"),
        }
    }
}

/// The default strategies: over zones, then over instances.
pub fn default_strategies() -> Vec<Strategy> {
    vec![
        Strategy::SpreadAttribute("ecs.availability-zone".into()),
        Strategy::Spread,
    ]
}

/// Places a task: the (host, worker) its strategies choose among those
/// its constraints allow and it fits on. Ties go to the worker with the
/// fewest of the group's tasks, then the fewest tasks, then the lowest
/// host and worker index.
pub fn place(hosts: &[Host<'_>], req: &Request<'_>) -> Result<(usize, usize), Unplaceable> {
    let open: Vec<usize> = (0..hosts.len()).filter(|&h| hosts[h].accepts).collect();
    if open.is_empty() {
        return Err(Unplaceable::NoInstance);
    }
    let members: Vec<usize> = open
        .into_iter()
        .filter(|&h| {
            req.member_of
                .iter()
                .all(|e| e.matches(hosts[h].id, hosts[h].attributes))
        })
        .collect();
    if members.is_empty() {
        return Err(Unplaceable::MemberOf);
    }
    let group = |h: usize, w: usize| {
        req.group_tasks
            .get(h)
            .and_then(|g| g.get(w))
            .copied()
            .unwrap_or(0)
    };
    let host_group = |h: usize| -> usize { (0..hosts[h].workers.len()).map(|w| group(h, w)).sum() };
    let fitting: Vec<(usize, usize)> = members
        .iter()
        .flat_map(|&h| (0..hosts[h].workers.len()).map(move |w| (h, w)))
        .filter(|&(h, w)| {
            let l = &hosts[h].workers[w];
            l.fits_cpu(req.cpu) && l.fits_memory(req.memory)
        })
        .collect();
    if fitting.is_empty() {
        let cpu_somewhere = members
            .iter()
            .flat_map(|&h| hosts[h].workers.iter())
            .any(|l| l.fits_cpu(req.cpu));
        return Err(Unplaceable::Resources(if cpu_somewhere {
            NoFit::Memory
        } else {
            NoFit::Cpu
        }));
    }
    let allowed: Vec<(usize, usize)> = fitting
        .into_iter()
        .filter(|&(h, _)| !req.distinct_instance || host_group(h) == 0)
        .collect();
    if allowed.is_empty() {
        return Err(Unplaceable::DistinctInstance);
    }
    let defaults;
    let strategies = if req.strategies.is_empty() {
        defaults = default_strategies();
        &defaults[..]
    } else {
        req.strategies
    };
    // The group's tasks on the hosts sharing each value of an attribute.
    let by_value = |name: &str, value: Option<&String>| -> usize {
        (0..hosts.len())
            .filter(|&h| hosts[h].attributes.get(name) == value)
            .map(host_group)
            .sum()
    };
    let key = |(h, w): (usize, usize)| -> Vec<u64> {
        let l = &hosts[h].workers[w];
        let mut k: Vec<u64> = strategies
            .iter()
            .map(|s| match s {
                Strategy::Spread => host_group(h) as u64,
                Strategy::SpreadAttribute(name) => {
                    by_value(name, hosts[h].attributes.get(name)) as u64
                }
                Strategy::BinpackCpu => (l.cpu_capacity - l.cpu_reserved) as u64,
                Strategy::BinpackMemory => l.memory_capacity - l.memory_reserved,
                Strategy::Random => {
                    // A stable shuffle of the workers by the seed.
                    let i = ((h as u64) << 32) | w as u64;
                    (req.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                        >> 1
                }
            })
            .collect();
        k.push(group(h, w) as u64);
        k.push(l.tasks as u64);
        k.push(h as u64);
        k.push(w as u64);
        k
    };
    Ok(allowed
        .into_iter()
        .min_by_key(|&s| key(s))
        .expect("allowed is not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(cpu_reserved: u32, memory_reserved: u64, tasks: usize) -> WorkerLoad {
        WorkerLoad {
            cpu_capacity: 1024,
            memory_capacity: 1000,
            cpu_reserved,
            memory_reserved,
            tasks,
        }
    }

    fn req<'a>(strategies: &'a [Strategy], group: &'a [Vec<usize>]) -> Request<'a> {
        Request {
            strategies,
            distinct_instance: false,
            member_of: &[],
            group_tasks: group,
            cpu: 100,
            memory: 100,
            seed: 7,
        }
    }

    fn no_attributes() -> &'static BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        &EMPTY
    }

    /// One host with these workers.
    fn one(workers: &[WorkerLoad]) -> Vec<Host<'_>> {
        vec![Host {
            id: "n0",
            attributes: no_attributes(),
            workers,
            accepts: true,
        }]
    }

    #[test]
    fn spreads_over_workers_and_says_which_resource_is_short() {
        let mut w = vec![WorkerLoad::new(1024, 1000); 3];
        let mut group = vec![vec![0; 3]];
        let mut placed = Vec::new();
        for _ in 0..6 {
            let (_, i) = place(&one(&w), &req(&[], &group)).unwrap();
            w[i].cpu_reserved += 100;
            w[i].memory_reserved += 100;
            w[i].tasks += 1;
            group[0][i] += 1;
            placed.push(i);
        }
        assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
        let mut r = req(&[], &[]);
        r.cpu = 2048;
        assert_eq!(place(&one(&w), &r), Err(Unplaceable::Resources(NoFit::Cpu)));
        r.cpu = 1;
        r.memory = 2000;
        assert_eq!(
            place(&one(&w), &r),
            Err(Unplaceable::Resources(NoFit::Memory))
        );
        assert_eq!(NoFit::Memory.to_string(), "RESOURCE:MEMORY");
    }

    #[test]
    fn service_strategies_choose_their_worker() {
        let w = [load(512, 100, 3), load(0, 800, 1), load(100, 0, 0)];
        let h = one(&w);
        // Spread by the group's own tasks, whatever else runs there.
        assert_eq!(place(&h, &req(&[], &[vec![0, 2, 1]])), Ok((0, 0)));
        assert_eq!(place(&h, &req(&[], &[vec![1, 1, 0]])), Ok((0, 2)));
        // Binpack: the least of the resource left.
        assert_eq!(place(&h, &req(&[Strategy::BinpackCpu], &[])), Ok((0, 0)));
        assert_eq!(place(&h, &req(&[Strategy::BinpackMemory], &[])), Ok((0, 1)));
        // Ties of the first strategy go to the next.
        let tied = [load(0, 100, 0), load(0, 500, 0)];
        assert_eq!(
            place(
                &one(&tied),
                &req(&[Strategy::Spread, Strategy::BinpackMemory], &[vec![1, 1]])
            ),
            Ok((0, 1))
        );
        // Random lands on every worker for some seed, and only where it fits.
        let mut seen = [false; 3];
        for seed in 0..64 {
            let r = Request {
                seed,
                ..req(&[Strategy::Random], &[])
            };
            seen[place(&h, &r).unwrap().1] = true;
        }
        assert_eq!(seen, [true, true, true]);
        let full = [load(1024, 0, 1), load(0, 0, 0)];
        for seed in 0..16 {
            let r = Request {
                seed,
                ..req(&[Strategy::Random], &[])
            };
            assert_eq!(place(&one(&full), &r), Ok((0, 1)));
        }
    }

    fn zoned<'a>(
        zones: &'a [BTreeMap<String, String>],
        workers: &'a [WorkerLoad],
    ) -> Vec<Host<'a>> {
        const IDS: [&str; 4] = ["n0", "n1", "n2", "n3"];
        zones
            .iter()
            .enumerate()
            .map(|(i, a)| Host {
                id: IDS[i],
                attributes: a,
                workers,
                accepts: true,
            })
            .collect()
    }

    fn zone(z: &str) -> BTreeMap<String, String> {
        [("ecs.availability-zone".to_string(), z.to_string())].into()
    }

    #[test]
    fn spreads_over_zones_then_instances_and_keeps_to_constraints() {
        // Two nodes in zone a, one in zone b: by default six tasks go
        // three to each zone, and within zone a over both nodes.
        let zones = [zone("a"), zone("a"), zone("b")];
        let w = [WorkerLoad::new(4096, 10_000)];
        let hosts = zoned(&zones, &w);
        let mut group = vec![vec![0]; 3];
        for _ in 0..6 {
            let (h, _) = place(&hosts, &req(&[], &group)).unwrap();
            group[h][0] += 1;
        }
        assert_eq!(group, [vec![2], vec![1], vec![3]]);
        // spread by instanceId alone: even over the nodes.
        let mut group = vec![vec![0]; 3];
        for _ in 0..6 {
            let (h, _) = place(&hosts, &req(&[Strategy::Spread], &group)).unwrap();
            group[h][0] += 1;
        }
        assert_eq!(group, [vec![2], vec![2], vec![2]]);
        // memberOf: only zone b; nothing if no node matches.
        let only_b =
            [crate::scheduler::expr::parse("attribute:ecs.availability-zone == b").unwrap()];
        let mut r = req(&[], &[]);
        r.member_of = &only_b;
        assert_eq!(place(&hosts, &r), Ok((2, 0)));
        let none = [crate::scheduler::expr::parse("attribute:ecs.availability-zone == c").unwrap()];
        r.member_of = &none;
        assert_eq!(place(&hosts, &r), Err(Unplaceable::MemberOf));
        // A node that does not accept tasks (lost or DRAINING) gets none.
        let mut closed = hosts.clone();
        closed[2].accepts = false;
        r.member_of = &only_b;
        assert_eq!(place(&closed, &r), Err(Unplaceable::MemberOf));
        for h in &mut closed {
            h.accepts = false;
        }
        assert_eq!(place(&closed, &r), Err(Unplaceable::NoInstance));
    }

    #[test]
    fn distinct_instance_keeps_one_task_per_node() {
        let w = [load(0, 0, 0), load(0, 0, 0)];
        let zones = [zone("a"), zone("a")];
        let hosts = zoned(&zones, &w);
        let mut r = req(&[Strategy::BinpackCpu], &[]);
        r.distinct_instance = true;
        let g1 = [vec![0, 1], vec![0, 0]];
        r.group_tasks = &g1;
        assert_eq!(place(&hosts, &r), Ok((1, 0)));
        let g2 = [vec![0, 1], vec![1, 0]];
        r.group_tasks = &g2;
        assert_eq!(place(&hosts, &r), Err(Unplaceable::DistinctInstance));
        r.cpu = 4096;
        assert_eq!(place(&hosts, &r), Err(Unplaceable::Resources(NoFit::Cpu)));
    }
}
