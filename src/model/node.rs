//! Nodes as the store keeps them: what a live node's workers have
//! (`nodes/NODE`, under the node's lease), what the tasks placed on them
//! reserve (`nodes/NODE/reservations`), and the node as an ECS container
//! instance (`instances/NODE`: its status and what it last registered,
//! kept after the lease lapses).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where node records are stored (`nodes/NODE`, `nodes/NODE/reservations`).
pub const NODES: &str = "nodes/";

/// Where container-instance records are stored (`instances/NODE`).
pub const INSTANCES: &str = "instances/";

/// The store key of a node's workers.
pub fn node_key(node: &str) -> String {
    format!("nodes/{node}")
}

/// The store key of what a node's workers have promised.
pub fn reservations_key(node: &str) -> String {
    format!("nodes/{node}/reservations")
}

/// The store key of a node's container-instance record.
pub fn instance_key(node: &str) -> String {
    format!("instances/{node}")
}

/// A node, as it registers itself: what each of its workers has, and its
/// attributes. The record lives under the node's lease: when the node
/// stops keeping it alive, the record goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Per worker: CPU units (1024, one thread) and MiB it may hand out.
    pub workers: Vec<(u32, u64)>,
    /// Its attributes (`ecs.availability-zone`, and those given with
    /// `--attribute`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// When it registered (seconds since the epoch).
    #[serde(default)]
    pub registered_at: f64,
    /// Where other nodes reach its ingress (HOST:PORT), to forward
    /// requests for its tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Where other nodes reach its API (HOST:PORT), to read the logs of
    /// its tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

/// A container instance's status, as ECS has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum InstanceStatus {
    #[default]
    Active,
    /// Takes no new tasks; its service tasks are replaced elsewhere.
    Draining,
    /// Deregistered: takes nothing until the node registers again.
    Inactive,
}

impl InstanceStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Draining => "DRAINING",
            InstanceStatus::Inactive => "INACTIVE",
        }
    }
}

/// A node as a container instance (`instances/NODE`, not leased): what it
/// last registered, and the status the API set. It outlives the node's
/// lease, so that a lost node is still listed (agentConnected false)
/// until it is deregistered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: InstanceStatus,
    /// What the node last registered.
    pub node: Node,
    /// Bumped at every change, as ECS's `version`.
    #[serde(default)]
    pub version: u64,
    /// Attributes set through the API (PutAttributes), beside the node's
    /// own; an empty value is an attribute without one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, String>,
}

/// What a node's workers have promised to their tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservations {
    /// Per worker: CPU units and MiB reserved, and how many tasks.
    pub workers: Vec<(u32, u64, usize)>,
}

impl Reservations {
    /// Counts a task of `cpu` and `memory` on `worker`.
    pub fn add(&mut self, worker: usize, cpu: u32, memory: u64) {
        self.add_many(worker, cpu, memory, 1);
    }

    /// Counts `tasks` tasks holding `cpu` and `memory` in all on `worker`.
    pub fn add_many(&mut self, worker: usize, cpu: u32, memory: u64, tasks: usize) {
        if self.workers.len() <= worker {
            self.workers.resize(worker + 1, (0, 0, 0));
        }
        let w = &mut self.workers[worker];
        w.0 += cpu;
        w.1 += memory;
        w.2 += tasks;
    }

    /// Gives back what a task of `cpu` and `memory` on `worker` held.
    pub fn remove(&mut self, worker: usize, cpu: u32, memory: u64) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.0 = w.0.saturating_sub(cpu);
            w.1 = w.1.saturating_sub(memory);
            w.2 = w.2.saturating_sub(1);
        }
    }
}

impl Instance {
    /// Reads a stored instance record; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Instance> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A record as stored (JSON).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
