//! CloudWatch Logs' log group calls: CreateLogGroup, DeleteLogGroup,
//! PutRetentionPolicy, DeleteRetentionPolicy and the group's tags
//! (TagResource, UntagResource, ListTagsForResource by ARN; TagLogGroup,
//! UntagLogGroup, ListTagsLogGroup by name), as Terraform's
//! `aws_cloudwatch_log_group` and `aws logs` call them.
//!
//! A group exists once a task writes to it (its streams are indexed) or
//! once it is created; what is set on it (creation time, retention, tags)
//! is kept at `loggroups/GROUP`. A retention policy hides the events older
//! than it from every read; the lines themselves go with their task (see
//! `--stopped-task-ttl`) or when the container's log reaches its bound.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, with_retries, Api};
use crate::model::arn::Scope;
use crate::model::logs::{self, GroupRecord, StreamRecord};
use crate::store::{Condition, Write};

/// The retention periods CloudWatch Logs takes, in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// A group's record, when one was made.
pub fn record(api: &Api, group: &str) -> ApiResult<Option<(GroupRecord, i64)>> {
    let Some(r) = api.store.get(&logs::group_key(group))? else {
        return Ok(None);
    };
    let g = serde_json::from_slice(&r.value).map_err(|e| {
        ApiError::new(
            Kind::Server,
            format!("the record of log group {group} is unreadable: {e}"),
        )
    })?;
    Ok(Some((g, r.mod_revision)))
}

/// Every group that has a record, by name.
pub fn records(api: &Api) -> ApiResult<BTreeMap<String, GroupRecord>> {
    let mut out = BTreeMap::new();
    for r in api.store.list(logs::GROUPS, None, usize::MAX)? {
        if let (Some(name), Some(g)) =
            (logs::parse_group_key(&r.key), GroupRecord::decode(&r.value))
        {
            out.insert(name, g);
        }
    }
    Ok(out)
}

/// Whether a task wrote to the group (it has a stream).
fn has_streams(api: &Api, group: &str) -> ApiResult<bool> {
    Ok(!api
        .store
        .list(&logs::group_prefix(group), None, 1)?
        .is_empty())
}

/// The time (ms) of the first event of a group a task wrote to, if any.
fn first_stream(api: &Api, group: &str) -> ApiResult<Option<u64>> {
    Ok(api
        .store
        .list(&logs::group_prefix(group), None, usize::MAX)?
        .iter()
        .filter_map(|r| StreamRecord::decode(&r.value))
        .map(|s| s.creation_time)
        .min())
}

fn not_found() -> ApiError {
    ApiError::new(
        Kind::ResourceNotFound,
        "The specified log group does not exist.",
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupRequest {
    log_group_name: Option<String>,
    log_group_class: Option<String>,
    kms_key_id: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    retention_in_days: Option<i64>,
    resource_arn: Option<String>,
    tag_keys: Option<Vec<String>>,
}

impl GroupRequest {
    fn name(&self) -> ApiResult<&str> {
        self.log_group_name
            .as_deref()
            .ok_or_else(|| ApiError::invalid("logGroupName is required"))
    }

    /// The group a resource ARN names (`arn:aws:logs:R:A:log-group:NAME`).
    fn arn_group(&self) -> ApiResult<String> {
        let arn = self
            .resource_arn
            .as_deref()
            .ok_or_else(|| ApiError::invalid("resourceArn is required"))?;
        arn.split_once(":log-group:")
            .map(|(_, n)| n.trim_end_matches(":*").to_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "resourceArn {arn:?} is not a log group ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME)"
                ))
            })
    }
}

fn valid_name(name: &str) -> bool {
    (1..=512).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c))
}

fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 50 {
        return Err(ApiError::invalid(format!(
            "tags can hold at most 50 tags, got {}",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "tag {k:?}: keys are 1 to 128 characters, not starting aws:, and values at most 256"
            )));
        }
    }
    Ok(())
}

/// Changes a group's record (made if the group exists only through its
/// streams), written guarded by its revision.
fn change(api: &Api, group: &str, edit: impl Fn(&mut GroupRecord)) -> ApiResult<()> {
    with_retries(|| {
        let k = logs::group_key(group);
        let (mut g, condition) = match record(api, group)? {
            Some((g, rev)) => (g, Condition::At(k.clone(), rev)),
            None => {
                let first = first_stream(api, group)?.ok_or_else(not_found)?;
                let g = GroupRecord {
                    creation_time: first,
                    ..Default::default()
                };
                (g, Condition::Absent(k.clone()))
            }
        };
        edit(&mut g);
        Ok(api
            .store
            .commit(&[condition], &[Write::Put(k, g.encode())])
            .map(|_| ()))
    })
}

/// CreateLogGroup. KMS keys are refused (logs are not encrypted with
/// them); the class is STANDARD.
pub fn create(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let name = r.name()?;
    if !valid_name(name) {
        return Err(ApiError::invalid(format!(
            "logGroupName {name:?} must be 1 to 512 letters, digits, '.', '_', '-', '/' or '#'"
        )));
    }
    if r.kms_key_id.is_some() {
        return Err(ApiError::invalid(
            "kmsKeyId: skiff keeps logs on its nodes' disks and does not encrypt them with KMS keys; leave it out",
        ));
    }
    match r.log_group_class.as_deref() {
        None | Some("") | Some("STANDARD") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "logGroupClass {other:?} is not offered: STANDARD is"
            )))
        }
    }
    let tags = r.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    if has_streams(api, name)? {
        return Err(ApiError::new(
            Kind::ResourceAlreadyExists,
            "The specified log group already exists",
        ));
    }
    let g = GroupRecord {
        creation_time: (crate::model::now() * 1000.0) as u64,
        retention_in_days: None,
        tags,
    };
    let k = logs::group_key(name);
    match api.store.commit(
        &[Condition::Absent(k.clone())],
        &[Write::Put(k, g.encode())],
    ) {
        Ok(_) => Ok(json!({})),
        Err(crate::store::StoreError::Conflict) => Err(ApiError::new(
            Kind::ResourceAlreadyExists,
            "The specified log group already exists",
        )),
        Err(e) => Err(e.into()),
    }
}

/// DeleteLogGroup: the group and its streams are gone from every read
/// (the lines go with their tasks).
pub fn delete(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let name = r.name()?;
    let k = logs::group_key(name);
    let mut writes: Vec<Write> = api
        .store
        .list(&logs::group_prefix(name), None, usize::MAX)?
        .into_iter()
        .map(|r| Write::Delete(r.key))
        .collect();
    let had = api.store.get(&k)?.is_some();
    if writes.is_empty() && !had {
        return Err(not_found());
    }
    writes.push(Write::Delete(k));
    api.store.commit(&[], &writes)?;
    Ok(json!({}))
}

/// PutRetentionPolicy.
pub fn put_retention(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let name = r.name()?;
    let days = r
        .retention_in_days
        .ok_or_else(|| ApiError::invalid("retentionInDays is required"))?;
    let days = u32::try_from(days)
        .ok()
        .filter(|d| RETENTION_DAYS.contains(d))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "retentionInDays must be one of {RETENTION_DAYS:?}, got {days}"
            ))
        })?;
    change(api, name, |g| g.retention_in_days = Some(days))?;
    Ok(json!({}))
}

/// DeleteRetentionPolicy: events are kept as long as their tasks.
pub fn delete_retention(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    change(api, r.name()?, |g| g.retention_in_days = None)?;
    Ok(json!({}))
}

fn tags_of(api: &Api, group: &str) -> ApiResult<Value> {
    match record(api, group)? {
        Some((g, _)) => Ok(json!({ "tags": g.tags })),
        None if has_streams(api, group)? => Ok(json!({ "tags": {} })),
        None => Err(not_found()),
    }
}

fn add_tags(api: &Api, group: &str, tags: BTreeMap<String, String>) -> ApiResult {
    check_tags(&tags)?;
    let mut merged = record(api, group)?.map(|(g, _)| g.tags).unwrap_or_default();
    merged.extend(tags.clone());
    check_tags(&merged)?;
    change(api, group, |g| g.tags.extend(tags.clone()))?;
    Ok(json!({}))
}

fn remove_tags(api: &Api, group: &str, keys: &[String]) -> ApiResult {
    change(api, group, |g| {
        for k in keys {
            g.tags.remove(k);
        }
    })?;
    Ok(json!({}))
}

/// ListTagsForResource (a log group's ARN).
pub fn list_tags(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    tags_of(api, &r.arn_group()?)
}

/// TagResource (a log group's ARN).
pub fn tag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let tags = r
        .tags
        .clone()
        .ok_or_else(|| ApiError::invalid("tags is required"))?;
    add_tags(api, &r.arn_group()?, tags)
}

/// UntagResource (a log group's ARN).
pub fn untag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let keys = r
        .tag_keys
        .clone()
        .ok_or_else(|| ApiError::invalid("tagKeys is required"))?;
    remove_tags(api, &r.arn_group()?, &keys)
}

/// ListTagsLogGroup (by name; deprecated by AWS, still called).
pub fn list_tags_by_name(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    tags_of(api, r.name()?)
}

/// TagLogGroup (by name).
pub fn tag_by_name(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: GroupRequest = decode(req)?;
    let tags = r
        .tags
        .clone()
        .ok_or_else(|| ApiError::invalid("tags is required"))?;
    add_tags(api, r.name()?, tags)
}

/// UntagLogGroup (by name; its `tags` is a list of keys).
pub fn untag_by_name(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Untag {
        log_group_name: Option<String>,
        tags: Option<Vec<String>>,
    }
    let r: Untag = decode(req)?;
    let name = r
        .log_group_name
        .ok_or_else(|| ApiError::invalid("logGroupName is required"))?;
    let keys = r
        .tags
        .ok_or_else(|| ApiError::invalid("tags is required"))?;
    remove_tags(api, &name, &keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_hides_what_is_older() {
        let day = 86_400_000;
        let g = GroupRecord {
            creation_time: 0,
            retention_in_days: Some(7),
            tags: BTreeMap::new(),
        };
        assert_eq!(g.retained_from(30 * day), Some(23 * day));
        assert_eq!(GroupRecord::default().retained_from(30 * day), None);
        assert!(valid_name("/ecs/web#1"));
        assert!(!valid_name("no spaces"));
        assert!(!valid_name(""));
    }
}
