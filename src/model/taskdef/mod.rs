//! Task definitions: ECS's JSON document → a validated [`TaskDefinition`].
//!
//! [`raw`] mirrors the fields skiff reads, with ECS's names and types; the
//! fields it does not read are kept verbatim in the stored document and
//! ignored. [`TaskDefinition::parse`] checks every rule ECS checks that
//! matters here, and names the field of the first one broken.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::{check_name, FieldError};

mod container;
mod labels;
pub mod raw;

pub use labels::{Extensions, DEFAULT_CONCURRENCY, LABELS, MAX_INSTANCE_REUSE};

/// A validated task definition (one revision of a family).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    /// The family name.
    pub family: String,
    /// Task-level CPU units, when set.
    pub cpu: Option<u32>,
    /// Task-level memory in MiB, when set.
    pub memory: Option<u64>,
    /// The containers, in document order.
    pub containers: Vec<ContainerDefinition>,
    /// Host directories the containers may mount, by volume name.
    pub volumes: BTreeMap<String, Option<String>>,
}

/// A validated container definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDefinition {
    /// Unique within the task definition.
    pub name: String,
    /// The wasm image: a path, a `file://` URL or an OCI reference
    /// (see [`crate::model::image`]).
    pub image: String,
    /// `repositoryCredentials.credentialsParameter`: the name (or a
    /// Secrets Manager ARN ending in the name) of the secret with the
    /// registry's username and password.
    pub repository_credentials: Option<String>,
    /// CPU units (0: no quota of its own).
    pub cpu: u32,
    /// Hard memory limit in MiB.
    pub memory: Option<u64>,
    /// Soft limit in MiB: what placement reserves when set.
    pub memory_reservation: Option<u64>,
    /// Whether the task stops when this container stops.
    pub essential: bool,
    /// argv after the program name: `entryPoint` then `command`.
    pub entry_point: Vec<String>,
    /// See `entry_point`.
    pub command: Vec<String>,
    /// Environment, in order.
    pub environment: Vec<(String, String)>,
    /// Start-up ordering.
    pub depends_on: Vec<Dependency>,
    /// Ports the container serves HTTP on.
    pub port_mappings: Vec<PortMapping>,
    /// Seconds to wait for the container to stop before it is stopped hard.
    pub stop_timeout: Option<u32>,
    /// The health check, when set.
    pub health_check: Option<HealthCheck>,
    /// Volumes mounted into the container.
    pub mount_points: Vec<MountPoint>,
    /// skiff's extensions, from `dockerLabels` `skiff.*`.
    pub extensions: Extensions,
    /// Its `dockerLabels`, all of them (the task metadata shows them).
    pub docker_labels: BTreeMap<String, String>,
    /// Where its log is readable through CloudWatch Logs' API, when its
    /// `logConfiguration` uses the `awslogs` driver.
    pub awslogs: Option<AwsLogs>,
}

/// A container's `awslogs` log configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsLogs {
    /// `awslogs-group`.
    pub group: String,
    /// `awslogs-stream-prefix`: streams are named `PREFIX/CONTAINER/TASK_ID`.
    pub prefix: String,
}

impl AwsLogs {
    /// The stream of `container`'s log in task `task`, as ECS names it:
    /// `PREFIX/CONTAINER/TASK_ID`.
    pub fn stream(&self, container: &str, task: &str) -> String {
        format!("{}/{container}/{task}", self.prefix)
    }
}

/// Whether a CloudWatch Logs group or stream name is acceptable.
pub fn valid_log_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b))
}

/// A `dependsOn` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The container depended on.
    pub container: String,
    /// What it must reach first.
    pub condition: DependencyCondition,
}

/// ECS's `dependsOn` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has run to completion (any exit code).
    Complete,
    /// The dependency has exited 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

/// A `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The port the container listens on (informational for wasm guests).
    pub container_port: u16,
    /// A port of its own on the host, when non-zero.
    pub host_port: Option<u16>,
    /// Its `name`, which Service Connect refers to (`portName`).
    pub name: Option<String>,
}

/// A container health check, with ECS's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `["CMD", ...]` or `["CMD-SHELL", ...]` as ECS writes it.
    pub command: Vec<String>,
    /// Seconds between checks (5-300, default 30).
    pub interval: u32,
    /// Seconds a check may take (2-60, default 5).
    pub timeout: u32,
    /// Consecutive failures before unhealthy (1-10, default 3).
    pub retries: u32,
    /// Seconds of grace after start (0-300, default 0).
    pub start_period: u32,
}

/// Whether `name` may name a port mapping (ECS's rule for Service
/// Connect's names: 1 to 64 lowercase letters, digits, `_` and `-`, not
/// starting with `-`).
pub fn valid_port_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// The task definition volume.
    pub source_volume: String,
    /// Where the guest sees it.
    pub container_path: String,
    /// Read-only unless `readOnly: false`.
    pub read_only: bool,
}

/// The smallest hard memory limit of a container, in MiB (as ECS).
pub const MIN_CONTAINER_MEMORY: u64 = 6;

/// Fargate's valid task sizes: CPU units → (smallest MiB, largest MiB, step).
const FARGATE: [(u32, &[u64]); 7] = [
    (256, &[512, 1024, 2048]),
    (512, &[1024, 2048, 3072, 4096]),
    (1024, &[2048, 3072, 4096, 5120, 6144, 7168, 8192]),
    (2048, &[4096, 16384, 1024]),
    (4096, &[8192, 30720, 1024]),
    (8192, &[16384, 61440, 4096]),
    (16384, &[32768, 122880, 8192]),
];

/// Whether `memory` MiB is a valid Fargate size with `cpu` units, and if
/// not, the sizes that are (in words).
fn fargate_sizes(cpu: u32) -> Option<(Vec<u64>, String)> {
    let (_, spec) = FARGATE.iter().find(|(c, _)| *c == cpu)?;
    if cpu >= 2048 {
        let (lo, hi, step) = (spec[0], spec[1], spec[2]);
        let all = (lo..=hi).step_by(step as usize).collect();
        Some((all, format!("{lo} to {hi} MiB in steps of {step}")))
    } else {
        let words = spec
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Some((spec.to_vec(), format!("{words} MiB")))
    }
}

/// Parses a task-level `cpu`: units (`"256"`) or vCPUs (`"1 vCPU"`, `"0.5vcpu"`).
pub fn parse_cpu(s: &str) -> Result<u32, FieldError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let units = if let Some(n) = lower.strip_suffix("vcpu") {
        n.trim().parse::<f64>().ok().map(|v| v * 1024.0)
    } else {
        t.parse::<f64>().ok()
    };
    match units {
        Some(u) if u.is_finite() && (1.0..=192.0 * 1024.0).contains(&u) && u.fract() == 0.0 => {
            Ok(u as u32)
        }
        _ => Err(FieldError::new(
            "cpu",
            format!(
                "{s:?} is not a CPU amount: write CPU units (\"256\", \"1024\") or vCPUs (\"1 vCPU\")"
            ),
        )),
    }
}

/// Parses a task-level `memory`: MiB (`"512"`) or GB (`"1GB"`, `"0.5 GB"`).
pub fn parse_memory(s: &str) -> Result<u64, FieldError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let mib = if let Some(n) = lower.strip_suffix("gb") {
        n.trim().parse::<f64>().ok().map(|v| v * 1024.0)
    } else {
        t.parse::<f64>().ok()
    };
    match mib {
        Some(m) if m.is_finite() && (1.0..=1024.0 * 1024.0).contains(&m) && m.fract() == 0.0 => {
            Ok(m as u64)
        }
        _ => Err(FieldError::new(
            "memory",
            format!("{s:?} is not a memory size: write MiB (\"512\") or GB (\"1 GB\")"),
        )),
    }
}

pub(super) fn non_negative(
    field: &str,
    v: Option<i64>,
    max: i64,
) -> Result<Option<i64>, FieldError> {
    match v {
        Some(n) if n < 0 || n > max => Err(FieldError::new(
            field,
            format!("must be between 0 and {max}, got {n}"),
        )),
        other => Ok(other),
    }
}

pub(super) fn in_range(
    field: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<u32, FieldError> {
    let n = v.unwrap_or(default);
    if n < lo || n > hi {
        return Err(FieldError::new(
            field,
            format!("must be between {lo} and {hi}, got {n}"),
        ));
    }
    Ok(n as u32)
}

impl TaskDefinition {
    /// The custom domains its containers claim (`skiff.domains`), sorted,
    /// each once.
    pub fn domains(&self) -> std::collections::BTreeSet<String> {
        self.containers
            .iter()
            .flat_map(|c| c.extensions.domains.iter().cloned())
            .collect()
    }

    /// Whether plain HTTP requests for its domains are redirected to
    /// HTTPS (`skiff.https-redirect` on any container).
    pub fn https_redirect(&self) -> bool {
        self.containers.iter().any(|c| c.extensions.https_redirect)
    }

    /// Validates a RegisterTaskDefinition document.
    pub fn parse(doc: &Value) -> Result<TaskDefinition, FieldError> {
        let raw: raw::TaskDefinition = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "request".to_string()
            } else {
                path
            };
            FieldError::new(field, e.into_inner().to_string())
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: raw::TaskDefinition) -> Result<TaskDefinition, FieldError> {
        let family = raw.family.clone().ok_or_else(|| {
            FieldError::new(
                "family",
                "required: name the family, 1 to 255 letters, numbers, hyphens and underscores",
            )
        })?;
        check_name("family", "family", &family)?;

        let cpu = raw.cpu.as_deref().map(parse_cpu).transpose()?;
        let memory = raw.memory.as_deref().map(parse_memory).transpose()?;

        launch_types(&raw, cpu, memory)?;
        let volumes = volumes(raw.volumes)?;
        let containers = containers(raw.container_definitions, memory, &volumes)?;
        fits(&containers, cpu, memory)?;
        Ok(TaskDefinition {
            family,
            cpu,
            memory,
            containers,
            volumes,
        })
    }

    /// The memory (MiB) placement reserves for a task of this definition.
    pub fn reserved_memory(&self) -> u64 {
        self.memory.unwrap_or_else(|| {
            self.containers
                .iter()
                .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0))
                .sum()
        })
    }

    /// The CPU units placement reserves for a task of this definition.
    pub fn reserved_cpu(&self) -> u32 {
        self.cpu
            .unwrap_or_else(|| self.containers.iter().map(|c| c.cpu).sum())
    }
}

/// `requiresCompatibilities` and `networkMode`; FARGATE also needs a
/// task `cpu` and `memory` of one of Fargate's sizes, and awsvpc.
fn launch_types(
    raw: &raw::TaskDefinition,
    cpu: Option<u32>,
    memory: Option<u64>,
) -> Result<(), FieldError> {
    for (i, c) in raw.requires_compatibilities.iter().enumerate() {
        if !["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"].contains(&c.as_str()) {
            return Err(FieldError::new(
                format!("requiresCompatibilities[{i}]"),
                format!(
                    "{c:?} is not a launch type: use EC2, FARGATE, EXTERNAL or MANAGED_INSTANCES"
                ),
            ));
        }
    }
    if let Some(mode) = &raw.network_mode {
        if !["bridge", "host", "awsvpc", "none"].contains(&mode.as_str()) {
            return Err(FieldError::new(
                "networkMode",
                format!("{mode:?} is not a network mode: use awsvpc, bridge, host or none"),
            ));
        }
    }
    if !raw.requires_compatibilities.iter().any(|c| c == "FARGATE") {
        return Ok(());
    }
    let Some(cpu) = cpu else {
        return Err(FieldError::new(
            "cpu",
            "required when requiresCompatibilities includes FARGATE",
        ));
    };
    let Some(memory) = memory else {
        return Err(FieldError::new(
            "memory",
            "required when requiresCompatibilities includes FARGATE",
        ));
    };
    match fargate_sizes(cpu) {
        None => {
            return Err(FieldError::new(
                "cpu",
                format!(
                "{cpu} is not a Fargate CPU size: use 256, 512, 1024, 2048, 4096, 8192 or 16384"
            ),
            ))
        }
        Some((sizes, words)) if !sizes.contains(&memory) => {
            return Err(FieldError::new(
                "memory",
                format!("{memory} MiB is not a Fargate size for {cpu} CPU units: use {words}"),
            ))
        }
        Some(_) => {}
    }
    if raw.network_mode.as_deref().is_some_and(|m| m != "awsvpc") {
        return Err(FieldError::new(
            "networkMode",
            "Fargate requires \"awsvpc\"",
        ));
    }
    Ok(())
}

/// `volumes`, by name (each name once), with their host paths.
fn volumes(raw: Vec<raw::Volume>) -> Result<BTreeMap<String, Option<String>>, FieldError> {
    let mut volumes = BTreeMap::new();
    for (i, v) in raw.into_iter().enumerate() {
        let field = format!("volumes[{i}].name");
        let name = v.name.ok_or_else(|| FieldError::new(&field, "required"))?;
        check_name(&field, "volume", &name)?;
        if volumes
            .insert(name.clone(), v.host.and_then(|h| h.source_path))
            .is_some()
        {
            return Err(FieldError::new(
                field,
                format!("{name:?} is declared twice; volume names must be unique"),
            ));
        }
    }
    Ok(volumes)
}

/// `containerDefinitions`: at least one, names unique, one essential,
/// dependencies that can be met.
fn containers(
    raw: Option<Vec<raw::ContainerDefinition>>,
    memory: Option<u64>,
    volumes: &BTreeMap<String, Option<String>>,
) -> Result<Vec<ContainerDefinition>, FieldError> {
    let raw_containers = raw.unwrap_or_default();
    if raw_containers.is_empty() {
        return Err(FieldError::new(
            "containerDefinitions",
            "at least one container definition is required",
        ));
    }
    let mut containers = Vec::with_capacity(raw_containers.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut port_names = Vec::new();
    for (i, rc) in raw_containers.into_iter().enumerate() {
        let c = container::container(i, rc, memory.is_some(), volumes, &mut port_names)?;
        if let Some(first) = seen.insert(c.name.clone(), i) {
            return Err(FieldError::new(
                format!("containerDefinitions[{i}].name"),
                format!(
                    "{:?} is used by containerDefinitions[{first}] too; container names must be unique",
                    c.name
                ),
            ));
        }
        containers.push(c);
    }
    if !containers.iter().any(|c| c.essential) {
        return Err(FieldError::new(
            "containerDefinitions",
            "at least one container must be essential (essential defaults to true)",
        ));
    }
    check_dependencies(&containers)?;
    Ok(containers)
}

/// The containers' memory and cpu within the task's, where it sets them.
fn fits(
    containers: &[ContainerDefinition],
    cpu: Option<u32>,
    memory: Option<u64>,
) -> Result<(), FieldError> {
    if let Some(task_mem) = memory {
        let sum: u64 = containers
            .iter()
            .map(|c| c.memory.or(c.memory_reservation).unwrap_or(0))
            .sum();
        if sum > task_mem {
            return Err(FieldError::new(
                "containerDefinitions",
                format!(
                    "the containers' memory adds up to {sum} MiB, more than the task's memory of {task_mem} MiB; lower the containers' memory or raise the task's"
                ),
            ));
        }
    }
    if let Some(task_cpu) = cpu {
        let sum: u32 = containers.iter().map(|c| c.cpu).sum();
        if sum > task_cpu {
            return Err(FieldError::new(
                "containerDefinitions",
                format!(
                    "the containers' cpu adds up to {sum} units, more than the task's cpu of {task_cpu}; lower the containers' cpu or raise the task's"
                ),
            ));
        }
    }
    Ok(())
}

fn check_dependencies(containers: &[ContainerDefinition]) -> Result<(), FieldError> {
    let index: HashMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    for (i, c) in containers.iter().enumerate() {
        for (j, d) in c.depends_on.iter().enumerate() {
            let field = format!("containerDefinitions[{i}].dependsOn[{j}].containerName");
            let Some(&target) = index.get(d.container.as_str()) else {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{:?} is not a container of this task definition",
                        d.container
                    ),
                ));
            };
            if target == i {
                return Err(FieldError::new(
                    field,
                    "a container cannot depend on itself",
                ));
            }
            if d.condition == DependencyCondition::Healthy
                && containers[target].health_check.is_none()
            {
                return Err(FieldError::new(
                    format!("containerDefinitions[{i}].dependsOn[{j}].condition"),
                    format!("HEALTHY needs a healthCheck on {:?}", d.container),
                ));
            }
        }
    }
    // Cycles: depth-first search over dependsOn edges.
    fn visit(
        i: usize,
        containers: &[ContainerDefinition],
        index: &HashMap<&str, usize>,
        path: &mut Vec<usize>,
        done: &mut HashSet<usize>,
    ) -> Option<Vec<usize>> {
        if let Some(pos) = path.iter().position(|&p| p == i) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(i);
            return Some(cycle);
        }
        if done.contains(&i) {
            return None;
        }
        path.push(i);
        for d in &containers[i].depends_on {
            if let Some(c) = visit(index[d.container.as_str()], containers, index, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(i);
        None
    }
    let mut done = HashSet::new();
    for i in 0..containers.len() {
        if let Some(cycle) = visit(i, containers, &index, &mut Vec::new(), &mut done) {
            let names: Vec<&str> = cycle.iter().map(|&c| containers[c].name.as_str()).collect();
            return Err(FieldError::new(
                format!("containerDefinitions[{}].dependsOn", cycle[0]),
                format!("dependsOn forms a cycle: {}", names.join(" -> ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_minimal_definition_validates() {
        let td = TaskDefinition::parse(&json!({
            "family": "web",
            "containerDefinitions": [{"name": "app", "image": "hello.wasm", "memory": 64}]
        }))
        .unwrap();
        assert_eq!(td.family, "web");
        assert!(td.containers[0].essential);
        assert_eq!(td.reserved_memory(), 64);
    }

    #[test]
    fn instance_reuse_is_read_from_its_label() {
        let td = |labels: serde_json::Value| {
            TaskDefinition::parse(&json!({
                "family": "web",
                "containerDefinitions": [{"name": "app", "image": "hello.wasm", "memory": 64,
                                          "dockerLabels": labels}]
            }))
        };
        let reuse = |t: TaskDefinition| t.containers[0].extensions.instance_reuse;
        assert_eq!(reuse(td(json!({})).unwrap()), None);
        assert_eq!(
            reuse(td(json!({"skiff.instance-reuse": "100"})).unwrap()),
            Some(100)
        );
        for bad in ["0", "-1", "many", "1000001", ""] {
            let e = td(json!({"skiff.instance-reuse": bad})).unwrap_err();
            assert!(
                e.to_string().contains("\"skiff.instance-reuse\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_cpu("256"), Ok(256));
        assert_eq!(parse_cpu("1 vCPU"), Ok(1024));
        assert_eq!(parse_cpu(".5 vcpu"), Ok(512));
        assert_eq!(parse_cpu("lots").unwrap_err().field, "cpu");
        assert_eq!(parse_memory("512"), Ok(512));
        assert_eq!(parse_memory("1 GB"), Ok(1024));
        assert_eq!(parse_memory("2GB"), Ok(2048));
        assert_eq!(parse_memory("-1").unwrap_err().field, "memory");
    }

    #[test]
    fn fargate_table() {
        assert!(fargate_sizes(256).unwrap().0.contains(&512));
        assert!(!fargate_sizes(256).unwrap().0.contains(&4096));
        assert!(fargate_sizes(2048).unwrap().0.contains(&5120));
        assert!(fargate_sizes(300).is_none());
    }
}
