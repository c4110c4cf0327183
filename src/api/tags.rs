//! Tags on clusters, task definitions and tasks: TagResource,
//! UntagResource, ListTagsForResource. Stored at `tags/KIND/RESOURCE`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, decode_at, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::cluster::{ClusterRecord, ClusterStatus};
use crate::model::service::{ServiceRecord, ServiceStatus};
use crate::store::{Condition, Store, Write};

/// The most tags a resource may have (as ECS).
pub const MAX_TAGS: usize = 50;

pub use crate::model::tags::key;

/// ECS's `Tag`.
#[derive(Deserialize)]
struct Tag {
    key: Option<String>,
    value: Option<String>,
}

/// Validates a `tags` list: `[{key, value}]`, keys 1-128 characters,
/// values up to 256, no `aws:` prefix, at most 50.
pub fn parse(v: Option<&Value>) -> ApiResult<Vec<(String, String)>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items: Vec<Tag> = decode_at(v, "tags")?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, t) in items.into_iter().enumerate() {
        let k = t.key.unwrap_or_default();
        let val = t.value.unwrap_or_default();
        if k.is_empty() || k.chars().count() > 128 {
            return Err(ApiError::invalid(format!(
                "tags[{i}].key must be 1 to 128 characters"
            )));
        }
        if val.chars().count() > 256 {
            return Err(ApiError::invalid(format!(
                "tags[{i}].value must be at most 256 characters"
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "tags[{i}].key: the aws: prefix is reserved"
            )));
        }
        match out.iter_mut().find(|(ok, _)| *ok == k) {
            Some(slot) => slot.1 = val,
            None => out.push((k, val)),
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ApiError::invalid(format!(
            "a resource can have at most {MAX_TAGS} tags, got {}",
            out.len()
        )));
    }
    Ok(out)
}

/// Tags as the API returns them.
pub fn to_json(tags: &[(String, String)]) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// The tags stored for a resource.
pub fn read(store: &dyn Store, kind: &str, resource: &str) -> ApiResult<Vec<(String, String)>> {
    match store.get(&key(kind, resource))? {
        None => Ok(Vec::new()),
        Some(r) => crate::model::tags::decode(&r.value).ok_or_else(|| unreadable(&r.key)),
    }
}

fn unreadable(key: &str) -> ApiError {
    ApiError::new(Kind::Server, format!("stored record {key} is unreadable"))
}

/// The write that stores a resource's tags (none: deletes the record).
pub fn write(kind: &str, resource: &str, tags: &[(String, String)]) -> Write {
    if tags.is_empty() {
        Write::Delete(key(kind, resource))
    } else {
        Write::Put(key(kind, resource), crate::model::tags::encode(tags))
    }
}

/// The kind and resource of an ARN that names something that exists.
fn resolve(api: &Api, arn_str: &str) -> ApiResult<(String, String)> {
    let not_found = || {
        ApiError::new(
            Kind::ResourceNotFound,
            format!("The specified resource could not be found: {arn_str}"),
        )
    };
    let a = arn::parse(arn_str).ok_or_else(|| {
        ApiError::invalid(format!(
            "resourceArn {arn_str:?} is not an ECS ARN (arn:aws:ecs:REGION:ACCOUNT:KIND/NAME)"
        ))
    })?;
    let record_key = match a.kind.as_str() {
        "cluster" => crate::model::cluster::key(&a.resource),
        "task-definition" => {
            let (family, rev) = a.resource.rsplit_once(':').ok_or_else(not_found)?;
            let rev: u32 = rev.parse().map_err(|_| not_found())?;
            crate::model::definitions::key(family, rev)
        }
        "task" => format!("tasks/{}", a.resource),
        "service" => format!("services/{}", a.resource),
        other => {
            return Err(ApiError::invalid(format!(
                "resourceArn: tagging {other} resources is not supported; tag clusters, task definitions, tasks or services"
            )))
        }
    };
    let record = api.store.get(&record_key)?.ok_or_else(not_found)?;
    let inactive = match a.kind.as_str() {
        "cluster" => ClusterRecord::decode(&record.value)
            .is_some_and(|c| c.status == ClusterStatus::Inactive),
        "service" => serde_json::from_slice::<ServiceRecord>(&record.value)
            .is_ok_and(|s| s.status == ServiceStatus::Inactive),
        _ => false,
    };
    if inactive {
        return Err(not_found());
    }
    Ok((a.kind, a.resource))
}

/// The fields of TagResource, UntagResource and ListTagsForResource.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagsRequest {
    resource_arn: Option<String>,
    tags: Option<Value>,
    tag_keys: Option<Vec<String>>,
}

impl TagsRequest {
    fn arn(&self) -> ApiResult<&str> {
        self.resource_arn
            .as_deref()
            .ok_or_else(|| ApiError::client("resourceArn is required"))
    }
}

/// TagResource.
pub fn tag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: TagsRequest = decode(req)?;
    let new = parse(r.tags.as_ref())?;
    let (kind, resource) = resolve(api, r.arn()?)?;
    update(api, &kind, &resource, |tags| {
        for (k, v) in &new {
            match tags.iter_mut().find(|(ok, _)| ok == k) {
                Some(slot) => slot.1 = v.clone(),
                None => tags.push((k.clone(), v.clone())),
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(ApiError::invalid(format!(
                "a resource can have at most {MAX_TAGS} tags"
            )));
        }
        Ok(())
    })?;
    Ok(json!({}))
}

/// UntagResource.
pub fn untag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: TagsRequest = decode(req)?;
    let (kind, resource) = resolve(api, r.arn()?)?;
    let keys = r
        .tag_keys
        .ok_or_else(|| ApiError::client("tagKeys is required"))?;
    update(api, &kind, &resource, |tags| {
        tags.retain(|(k, _)| !keys.contains(k));
        Ok(())
    })?;
    Ok(json!({}))
}

fn update(
    api: &Api,
    kind: &str,
    resource: &str,
    change: impl Fn(&mut Vec<(String, String)>) -> ApiResult<()>,
) -> ApiResult<()> {
    let k = key(kind, resource);
    with_retries(|| {
        let (mut tags, cond) = match api.store.get(&k)? {
            Some(r) => (
                crate::model::tags::decode(&r.value).ok_or_else(|| unreadable(&r.key))?,
                Condition::At(k.clone(), r.mod_revision),
            ),
            None => (Vec::new(), Condition::Absent(k.clone())),
        };
        change(&mut tags)?;
        Ok(api
            .store
            .commit(&[cond], &[write(kind, resource, &tags)])
            .map(|_| ()))
    })
}

/// ListTagsForResource.
pub fn list(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: TagsRequest = decode(req)?;
    let (kind, resource) = resolve(api, r.arn()?)?;
    Ok(json!({ "tags": to_json(&read(api.store.as_ref(), &kind, &resource)?) }))
}
