//! One container definition: `containerDefinitions[i]` of the raw
//! document, checked field by field into a [`ContainerDefinition`].

use std::collections::BTreeMap;

use super::labels::extensions;
use super::{
    in_range, non_negative, raw, valid_log_name, valid_port_name, AwsLogs, ContainerDefinition,
    Dependency, DependencyCondition, HealthCheck, MountPoint, PortMapping, MIN_CONTAINER_MEMORY,
};
use crate::model::{check_name, FieldError};

/// Checks container `i`. `task_has_memory`: the task sets `memory` (so
/// a container need not); `volumes`: the task's volumes by name;
/// `port_names`: the port mappings' names so far (unique in the task).
pub(super) fn container(
    i: usize,
    rc: raw::ContainerDefinition,
    task_has_memory: bool,
    volumes: &BTreeMap<String, Option<String>>,
    port_names: &mut Vec<String>,
) -> Result<ContainerDefinition, FieldError> {
    let at = |f: &str| format!("containerDefinitions[{i}].{f}");
    let name = rc
        .name
        .ok_or_else(|| FieldError::new(at("name"), "required"))?;
    check_name(&at("name"), "container", &name)?;
    let (image, repository_credentials) = image(&at, rc.image, rc.repository_credentials)?;
    let cpu = non_negative(&at("cpu"), rc.cpu, 10 * 1024 * 192)?.unwrap_or(0) as u32;
    let (memory, memory_reservation) =
        memory(i, &at, rc.memory, rc.memory_reservation, task_has_memory)?;
    let mut environment = Vec::with_capacity(rc.environment.len());
    for (j, kv) in rc.environment.into_iter().enumerate() {
        let name = kv
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| FieldError::new(at(&format!("environment[{j}].name")), "required"))?;
        environment.push((name, kv.value.unwrap_or_default()));
    }
    Ok(ContainerDefinition {
        name,
        image,
        repository_credentials,
        cpu,
        memory,
        memory_reservation,
        essential: rc.essential.unwrap_or(true),
        entry_point: rc.entry_point,
        command: rc.command,
        environment,
        depends_on: depends_on(&at, rc.depends_on)?,
        port_mappings: port_mappings(&at, rc.port_mappings, port_names)?,
        stop_timeout: non_negative(&at("stopTimeout"), rc.stop_timeout, 120)?.map(|n| n as u32),
        health_check: health_check(&at, rc.health_check)?,
        mount_points: mount_points(&at, rc.mount_points, volumes)?,
        extensions: extensions(&at("dockerLabels"), &rc.docker_labels)?,
        awslogs: awslogs(&at, rc.log_configuration.as_ref())?,
        docker_labels: rc.docker_labels,
    })
}

/// `image` (a file or an OCI reference) and `repositoryCredentials`
/// (only for a registry's image).
fn image(
    at: &dyn Fn(&str) -> String,
    image: Option<String>,
    credentials: Option<raw::RepositoryCredentials>,
) -> Result<(String, Option<String>), FieldError> {
    let image = image.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        FieldError::new(
            at("image"),
            "required: the path of a .wasm file, a file:// URL, or an OCI reference (REGISTRY/REPOSITORY:TAG)",
        )
    })?;
    let source = crate::model::image::ImageSource::parse(&image)
        .map_err(|e| FieldError::new(at("image"), e.to_string()))?;
    let Some(r) = credentials else {
        return Ok((image, None));
    };
    let f = at("repositoryCredentials.credentialsParameter");
    let p = r
        .credentials_parameter
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            FieldError::new(
                &f,
                "required: the name of a secret in the server's --registry-secrets directory",
            )
        })?;
    if source.reference().is_none() {
        return Err(FieldError::new(
            f,
            format!("is only for images in a registry; the image {image:?} is a file"),
        ));
    }
    Ok((image, Some(p)))
}

/// `memory` and `memoryReservation`, in MiB: each at least
/// [`MIN_CONTAINER_MEMORY`], the reservation within the limit, and one of
/// them set unless the task sets its memory.
fn memory(
    i: usize,
    at: &dyn Fn(&str) -> String,
    memory: Option<i64>,
    reservation: Option<i64>,
    task_has_memory: bool,
) -> Result<(Option<u64>, Option<u64>), FieldError> {
    for (field, v) in [("memory", memory), ("memoryReservation", reservation)] {
        if let Some(m) = v {
            if m < MIN_CONTAINER_MEMORY as i64 {
                return Err(FieldError::new(
                    at(field),
                    format!("must be at least {MIN_CONTAINER_MEMORY} MiB, got {m}"),
                ));
            }
        }
    }
    if let (Some(m), Some(r)) = (memory, reservation) {
        if r > m {
            return Err(FieldError::new(
                at("memoryReservation"),
                format!("must not exceed memory ({m} MiB), got {r}"),
            ));
        }
    }
    if memory.is_none() && reservation.is_none() && !task_has_memory {
        return Err(FieldError::new(
            format!("containerDefinitions[{i}]"),
            "set memory or memoryReservation for the container, or memory for the task",
        ));
    }
    Ok((memory.map(|m| m as u64), reservation.map(|m| m as u64)))
}

/// `dependsOn`: each names a container and a condition (the names are
/// checked against the task's containers once all are read).
fn depends_on(
    at: &dyn Fn(&str) -> String,
    raw: Vec<raw::Dependency>,
) -> Result<Vec<Dependency>, FieldError> {
    let mut out = Vec::with_capacity(raw.len());
    for (j, d) in raw.into_iter().enumerate() {
        let container = d.container_name.ok_or_else(|| {
            FieldError::new(at(&format!("dependsOn[{j}].containerName")), "required")
        })?;
        let condition = match d.condition.as_deref() {
            Some("START") => DependencyCondition::Start,
            Some("COMPLETE") => DependencyCondition::Complete,
            Some("SUCCESS") => DependencyCondition::Success,
            Some("HEALTHY") => DependencyCondition::Healthy,
            other => {
                return Err(FieldError::new(
                    at(&format!("dependsOn[{j}].condition")),
                    format!("must be START, COMPLETE, SUCCESS or HEALTHY, got {other:?}"),
                ))
            }
        };
        out.push(Dependency {
            container,
            condition,
        });
    }
    Ok(out)
}

/// `portMappings`: ports in range, tcp only, names unique in the task.
fn port_mappings(
    at: &dyn Fn(&str) -> String,
    raw: Vec<raw::PortMapping>,
    port_names: &mut Vec<String>,
) -> Result<Vec<PortMapping>, FieldError> {
    let mut out = Vec::with_capacity(raw.len());
    for (j, p) in raw.into_iter().enumerate() {
        let field = at(&format!("portMappings[{j}]"));
        let container_port = match p.container_port {
            Some(n) if (1..=65535).contains(&n) => n as u16,
            other => {
                return Err(FieldError::new(
                    format!("{field}.containerPort"),
                    format!(
                        "must be between 1 and 65535, got {}",
                        other.map_or("nothing".into(), |n| n.to_string())
                    ),
                ))
            }
        };
        let host_port = match p.host_port {
            None | Some(0) => None,
            Some(n) if (1..=65535).contains(&n) => Some(n as u16),
            Some(n) => {
                return Err(FieldError::new(
                    format!("{field}.hostPort"),
                    format!("must be between 0 and 65535, got {n}"),
                ))
            }
        };
        if p.protocol.as_deref().is_some_and(|proto| proto != "tcp") {
            return Err(FieldError::new(
                format!("{field}.protocol"),
                "skiff serves HTTP over tcp only: use \"tcp\"",
            ));
        }
        let name = match p.name {
            None => None,
            Some(n) if valid_port_name(&n) => {
                if port_names.contains(&n) {
                    return Err(FieldError::new(
                        format!("{field}.name"),
                        format!("{n:?} names another port mapping of the task definition: each name must be unique"),
                    ));
                }
                port_names.push(n.clone());
                Some(n)
            }
            Some(n) => {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("must be 1 to 64 lowercase letters, digits, '_' and '-', not starting with '-', got {n:?}"),
                ))
            }
        };
        out.push(PortMapping {
            container_port,
            host_port,
            name,
        });
    }
    Ok(out)
}

/// `healthCheck`: a command, and its timings within ECS's ranges.
fn health_check(
    at: &dyn Fn(&str) -> String,
    raw: Option<raw::HealthCheck>,
) -> Result<Option<HealthCheck>, FieldError> {
    let Some(h) = raw else {
        return Ok(None);
    };
    let field = at("healthCheck");
    if h.command.is_empty() {
        return Err(FieldError::new(
            format!("{field}.command"),
            "required: [\"CMD\", \"GET /healthz\"] for an HTTP container, [\"CMD\", args...] for a command",
        ));
    }
    Ok(Some(HealthCheck {
        command: h.command,
        interval: in_range(&format!("{field}.interval"), h.interval, 5, 300, 30)?,
        timeout: in_range(&format!("{field}.timeout"), h.timeout, 2, 60, 5)?,
        retries: in_range(&format!("{field}.retries"), h.retries, 1, 10, 3)?,
        start_period: in_range(&format!("{field}.startPeriod"), h.start_period, 0, 300, 0)?,
    }))
}

/// `mountPoints`: each names a volume of the task and an absolute path.
fn mount_points(
    at: &dyn Fn(&str) -> String,
    raw: Vec<raw::MountPoint>,
    volumes: &BTreeMap<String, Option<String>>,
) -> Result<Vec<MountPoint>, FieldError> {
    let mut out = Vec::with_capacity(raw.len());
    for (j, m) in raw.into_iter().enumerate() {
        let field = at(&format!("mountPoints[{j}]"));
        let source_volume = m
            .source_volume
            .ok_or_else(|| FieldError::new(format!("{field}.sourceVolume"), "required"))?;
        if !volumes.contains_key(&source_volume) {
            return Err(FieldError::new(
                format!("{field}.sourceVolume"),
                format!("{source_volume:?} is not a volume of this task definition; declare it in volumes"),
            ));
        }
        let container_path = m
            .container_path
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| {
                FieldError::new(
                    format!("{field}.containerPath"),
                    "required: an absolute path such as /data",
                )
            })?;
        out.push(MountPoint {
            source_volume,
            container_path,
            read_only: m.read_only.unwrap_or(true),
        });
    }
    Ok(out)
}

/// The `awslogs` log driver's group and stream prefix, when it is the
/// container's (other drivers are accepted and change nothing).
fn awslogs(
    at: &dyn Fn(&str) -> String,
    lc: Option<&raw::LogConfiguration>,
) -> Result<Option<AwsLogs>, FieldError> {
    let Some(lc) = lc.filter(|lc| lc.log_driver.as_deref() == Some("awslogs")) else {
        return Ok(None);
    };
    let f = at("logConfiguration.options");
    let group = lc.options.get("awslogs-group").cloned().unwrap_or_default();
    if !valid_log_name(&group, 512) {
        return Err(FieldError::new(
            format!("{f}.awslogs-group"),
            "required: a log group name of 1 to 512 letters, digits and . _ - / #",
        ));
    }
    let prefix = lc
        .options
        .get("awslogs-stream-prefix")
        .cloned()
        .unwrap_or_default();
    if !valid_log_name(&prefix, 256) || prefix.contains(':') {
        return Err(FieldError::new(
            format!("{f}.awslogs-stream-prefix"),
            "required with awslogs (streams are named PREFIX/CONTAINER/TASK_ID): letters, digits and . _ - / #",
        ));
    }
    Ok(Some(AwsLogs { group, prefix }))
}
