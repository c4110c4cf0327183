//! RunTask's `overrides`: what skiff applies of them (each container's
//! `command` and extra `environment`), read from the request as the task
//! stores it and checked against its task definition.

use super::taskdef::TaskDefinition;
use super::FieldError;

/// RunTask's `containerOverrides` entry, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOverride {
    /// The container it applies to.
    pub name: String,
    /// Replaces the container's `command` when set.
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the container's `environment`.
    pub environment: Vec<(String, String)>,
}

/// RunTask's `overrides`, as far as skiff applies them.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TaskOverride {
    #[serde(default)]
    container_overrides: Vec<ContainerOverrideDoc>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerOverrideDoc {
    name: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: Vec<KeyValue>,
}

/// ECS's `KeyValuePair`.
#[derive(serde::Deserialize)]
struct KeyValue {
    name: Option<String>,
    value: Option<String>,
}

/// Reads RunTask's `overrides` (as stored with the task) for `td`; the
/// error names the field (`overrides.containerOverrides[0].name`).
pub fn container_overrides(
    raw: &serde_json::Value,
    td: &TaskDefinition,
) -> Result<Vec<ContainerOverride>, FieldError> {
    let parsed: TaskOverride = if raw.is_null() {
        TaskOverride::default()
    } else {
        super::decode_at(raw, "overrides")?
    };
    let mut out = Vec::new();
    for (i, o) in parsed.container_overrides.into_iter().enumerate() {
        let at = |f: &str| format!("overrides.containerOverrides[{i}].{f}");
        let name = o
            .name
            .ok_or_else(|| FieldError::new(at("name"), "required"))?;
        if !td.containers.iter().any(|c| c.name == name) {
            return Err(FieldError::new(
                at("name"),
                format!("{name:?} is not a container of {}", td.family),
            ));
        }
        let mut environment = Vec::new();
        for (j, kv) in o.environment.into_iter().enumerate() {
            let k = kv.name.filter(|k| !k.is_empty()).ok_or_else(|| {
                FieldError::new(at(&format!("environment[{j}].name")), "required")
            })?;
            environment.push((k, kv.value.unwrap_or_default()));
        }
        out.push(ContainerOverride {
            name,
            command: o.command,
            environment,
        });
    }
    Ok(out)
}
