//! Custom attributes of container instances: PutAttributes,
//! DeleteAttributes, ListAttributes.
//!
//! A node's attributes are its own (`ecs.availability-zone`, those given
//! with `--attribute`) and those set through the API, which are kept in
//! its instance record (`instances/NODE`, so they outlive restarts) and
//! win where both name one. Placement reads both: a `memberOf`
//! constraint or a `spread` over `attribute:NAME` sees an attribute as
//! soon as it is put. As every node is a container instance of every
//! cluster, a node's attributes are the same in every cluster.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::instances::node_of;
use super::{clusters, decode, page, with_retries, Api};
use crate::model::arn::Scope;
use crate::model::node::{self, Instance};
use crate::scheduler::capacity::Fleet;
use crate::store::{Condition, Write};

/// The most attributes the API may set on one container instance, as
/// ECS allows.
pub const MAX_CUSTOM: usize = 10;

/// The only target type skiff's attributes have.
const TARGET_TYPE: &str = "container-instance";

/// One attribute in a request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attribute {
    name: Option<String>,
    value: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
}

#[derive(Deserialize)]
struct ChangeRequest {
    attributes: Option<Vec<Attribute>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    target_type: Option<String>,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
}

/// An attribute as the API shows it: no `value` for one without.
pub fn shown(name: &str, value: &str) -> Value {
    if value.is_empty() {
        json!({ "name": name })
    } else {
        json!({ "name": name, "value": value })
    }
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./\\".contains(c))
}

fn valid_value(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@/\\: ".contains(c))
}

/// The attributes of a request, checked: `(node, name, value)` each.
fn checked(req: &Value, verb: &str) -> ApiResult<Vec<(String, String, String)>> {
    let r: ChangeRequest = decode(req)?;
    let attributes = r.attributes.ok_or_else(|| {
        ApiError::client(
            "attributes is required: a list of {name, value, targetId} (targetId a container instance id or ARN)",
        )
    })?;
    if attributes.is_empty() || attributes.len() > MAX_CUSTOM {
        return Err(ApiError::invalid(format!(
            "attributes must hold 1 to {MAX_CUSTOM} attributes to {verb}, got {}",
            attributes.len()
        )));
    }
    let mut out = Vec::new();
    for (i, a) in attributes.into_iter().enumerate() {
        let name = a
            .name
            .ok_or_else(|| ApiError::client(format!("attributes[{i}].name is required")))?;
        if !valid_name(&name) {
            return Err(ApiError::invalid(format!(
                "attributes[{i}].name {name:?} must be 1 to 128 letters, digits, '-', '_', '.', '/' or '\\'"
            )));
        }
        if name.starts_with("ecs.") || name.starts_with("skiff.") {
            return Err(ApiError::invalid(format!(
                "attributes[{i}].name {name:?}: names that start with ecs. or skiff. are the engine's"
            )));
        }
        let value = a.value.unwrap_or_default();
        if !value.is_empty() && !valid_value(&value) {
            return Err(ApiError::invalid(format!(
                "attributes[{i}].value {value:?} must be 1 to 128 letters, digits, spaces (not first or last) or '-', '_', '.', '@', '/', '\\', ':'"
            )));
        }
        if let Some(t) = a.target_type.as_deref().filter(|t| *t != TARGET_TYPE) {
            return Err(ApiError::invalid(format!(
                "attributes[{i}].targetType must be {TARGET_TYPE}, got {t:?}"
            )));
        }
        let target = a.target_id.ok_or_else(|| {
            ApiError::client(format!(
                "attributes[{i}].targetId is required: a container instance id or ARN (ListContainerInstances)"
            ))
        })?;
        out.push((node_of(&target), name, value));
    }
    Ok(out)
}

/// Applies `change` to each named node's custom attributes, in one
/// transaction (all or nothing), retried on a conflict.
fn change_all(
    api: &Api,
    attributes: &[(String, String, String)],
    change: impl Fn(&str, &mut Instance, &str, &str) -> ApiResult<()>,
) -> ApiResult<()> {
    let mut nodes: Vec<&str> = attributes.iter().map(|(n, _, _)| n.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    with_retries(|| {
        let (mut conditions, mut writes) = (Vec::new(), Vec::new());
        for node in &nodes {
            let k = node::instance_key(node);
            let record = api.store.get(&k)?.ok_or_else(|| {
                ApiError::new(
                    Kind::TargetNotFound,
                    format!("container instance {node} was not found; ListContainerInstances names them"),
                )
            })?;
            let mut i: Instance = serde_json::from_slice(&record.value).map_err(|e| {
                ApiError::new(
                    Kind::Server,
                    format!("the record of container instance {node} is unreadable: {e}"),
                )
            })?;
            for (_, name, value) in attributes.iter().filter(|(n, _, _)| n == node) {
                change(node, &mut i, name, value)?;
            }
            i.version += 1;
            conditions.push(Condition::At(k.clone(), record.mod_revision));
            writes.push(Write::Put(k, node::encode(&i)));
        }
        Ok(api.store.commit(&conditions, &writes).map(|_| ()))
    })
}

/// The attributes as the answer shows them.
fn answer(scope: &Scope, cluster: &str, attributes: &[(String, String, String)]) -> Value {
    let shown: Vec<Value> = attributes
        .iter()
        .map(|(node, name, value)| {
            let mut v = shown(name, value);
            v["targetType"] = json!(TARGET_TYPE);
            v["targetId"] = json!(scope.container_instance(cluster, node));
            v
        })
        .collect();
    json!({ "attributes": shown })
}

/// PutAttributes: sets (or replaces) up to 10 attributes of container
/// instances; each may have at most [`MAX_CUSTOM`] set this way.
pub fn put(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let attributes = checked(req, "put")?;
    change_all(api, &attributes, |node, i, name, value| {
        i.custom.insert(name.to_string(), value.to_string());
        if i.custom.len() > MAX_CUSTOM {
            return Err(ApiError::new(
                Kind::AttributeLimitExceeded,
                format!(
                    "container instance {node} would have {} attributes set through the API; at most {MAX_CUSTOM} (DeleteAttributes removes some)",
                    i.custom.len()
                ),
            ));
        }
        Ok(())
    })?;
    Ok(answer(scope, &cluster, &attributes))
}

/// DeleteAttributes: removes attributes set through the API (removing one
/// that is not set is no error); a node's own attributes are refused.
pub fn delete(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let attributes = checked(req, "delete")?;
    change_all(api, &attributes, |node, i, name, _| {
        if i.custom.remove(name).is_none() && i.node.attributes.contains_key(name) {
            return Err(ApiError::invalid(format!(
                "attribute {name} of container instance {node} is the node's own (--attribute); start the node without it to remove it"
            )));
        }
        Ok(())
    })?;
    Ok(answer(scope, &cluster, &attributes))
}

/// ListAttributes: every attribute of every container instance (the
/// nodes' own and the API's), by name and value if asked, paginated.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let cluster = clusters::active(api, req)?;
    let r: ListRequest = decode(req)?;
    match r.target_type.as_deref() {
        Some(TARGET_TYPE) => {}
        other => {
            return Err(ApiError::invalid(format!(
                "targetType must be {TARGET_TYPE}, got {}",
                other.map_or("nothing".to_string(), |t| format!("{t:?}"))
            )))
        }
    }
    if r.attribute_value.is_some() && r.attribute_name.is_none() {
        return Err(ApiError::invalid(
            "attributeValue needs attributeName: the value of which attribute?",
        ));
    }
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let fleet = Fleet::read(api.store.as_ref())?;
    let mut all: Vec<(String, String, String)> = Vec::new();
    for m in &fleet.members {
        let attributes: &BTreeMap<String, String> = &m.attributes;
        for (name, value) in attributes {
            let keep = r.attribute_name.as_ref().is_none_or(|n| n == name)
                && r.attribute_value.as_ref().is_none_or(|v| v == value);
            if keep {
                all.push((m.id.clone(), name.clone(), value.clone()));
            }
        }
    }
    let (items, next) = page::page(
        all,
        |(node, name, _)| format!("{node}/{name}"),
        after.as_deref(),
        max,
    );
    let mut out = answer(scope, &cluster, &items);
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}
