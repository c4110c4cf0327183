//! Task definitions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeregisterTaskDefinition,
//! DeleteTaskDefinitions.
//!
//! Each revision is stored at `taskdefs/FAMILY/REVISION` with the document
//! exactly as submitted; `families/FAMILY` holds the latest revision
//! number, how many revisions are ACTIVE and how many were deleted for
//! good. Registering writes both in one transaction guarded by the
//! family's revision, so concurrent registrations get consecutive numbers.
//!
//! A deleted revision is DELETE_IN_PROGRESS, marked at
//! `deleting/FAMILY/REVISION`, until the scheduler finds no task or
//! service deployment that uses it and removes it for good
//! ([`crate::scheduler::controller`]).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::{decode, get_json, now, page, parse_record, tags, to_bytes, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::taskdef::TaskDefinition;
use crate::store::{Condition, Write};

/// The store key of one revision.
pub fn key(family: &str, revision: u32) -> String {
    format!("taskdefs/{family}/{revision:010}")
}

pub(crate) fn family_key(family: &str) -> String {
    format!("families/{family}")
}

/// The prefix of the marks of revisions to delete for good.
pub const DELETING: &str = "deleting/";

/// The store key that marks a revision to delete once nothing uses it.
pub fn deleting_key(family: &str, revision: u32) -> String {
    format!("{DELETING}{family}/{revision:010}")
}

/// The family and revision a [`deleting_key`] names.
pub fn parse_deleting_key(key: &str) -> Option<(String, u32)> {
    let (family, rev) = key.strip_prefix(DELETING)?.rsplit_once('/')?;
    Some((family.to_string(), rev.parse().ok()?))
}

/// The most revisions one DeleteTaskDefinitions call names (as ECS).
pub const MAX_DELETE: usize = 10;

/// Fields the server adds; a client may not set them.
const SERVER_FIELDS: [&str; 7] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "registeredAt",
    "deregisteredAt",
    "compatibilities",
    "requiresAttributes",
];

/// The document as returned: what was submitted, plus the server's fields.
pub fn view(scope: &Scope, record: &Value) -> Value {
    let mut out: Map<String, Value> = record
        .get("document")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let family = record
        .get("family")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let revision = record.get("revision").and_then(Value::as_u64).unwrap_or(0) as u32;
    out.insert(
        "taskDefinitionArn".into(),
        json!(scope.task_definition(family, revision)),
    );
    out.insert("revision".into(), json!(revision));
    out.insert(
        "status".into(),
        record.get("status").cloned().unwrap_or(json!("ACTIVE")),
    );
    out.insert("compatibilities".into(), json!(["EC2", "FARGATE"]));
    out.insert("requiresAttributes".into(), json!([]));
    for f in ["registeredAt", "deregisteredAt"] {
        if let Some(v) = record.get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// Refuses images and host volumes outside the server's host roots,
/// naming the field.
fn check_host_paths(api: &Api, doc: &Value) -> ApiResult<()> {
    use crate::agent::hostfs::within_lexically;
    if api.host_roots.is_none() {
        return Ok(());
    }
    let list = |name: &str| {
        doc.get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (i, c) in list("containerDefinitions").iter().enumerate() {
        if let Some(image) = c
            .get("image")
            .and_then(Value::as_str)
            .filter(|i| !crate::model::image::is_reference(i))
        {
            let path = crate::agent::image_path(image);
            within_lexically(
                &format!("containerDefinitions[{i}].image"),
                &path,
                &api.host_roots,
            )
            .map_err(ApiError::client)?;
        }
    }
    for (i, v) in list("volumes").iter().enumerate() {
        if let Some(p) = v.pointer("/host/sourcePath").and_then(Value::as_str) {
            within_lexically(
                &format!("volumes[{i}].host.sourcePath"),
                std::path::Path::new(p),
                &api.host_roots,
            )
            .map_err(ApiError::client)?;
        }
    }
    Ok(())
}

/// RegisterTaskDefinition.
pub fn register(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let mut document = req.as_object().cloned().unwrap_or_default();
    let new_tags = tags::parse(document.remove("tags").as_ref())?;
    for f in SERVER_FIELDS {
        if document.contains_key(f) {
            return Err(ApiError::client(format!(
                "{f} is set by the server; remove it from the task definition"
            )));
        }
    }
    let document = Value::Object(document);
    let td = TaskDefinition::parse(&document)?;
    check_host_paths(api, &document)?;
    // Images on this machine are kept by digest, for nodes that do not
    // have the path; no sweep of blobs runs until the task definition
    // that names them is committed.
    let _sweeps = api.blobs.as_ref().map(|b| b.hold());
    let mut digests = serde_json::Map::new();
    let mut held = Vec::new();
    if let Some(blobs) = &api.blobs {
        for (i, c) in td.containers.iter().enumerate() {
            let path = crate::agent::task::image_path(&c.image);
            if crate::model::image::is_reference(&c.image) || !path.is_file() {
                continue;
            }
            // Symlinks resolved: what is kept is what a task may load.
            let field = format!("containerDefinitions[{i}].image");
            let path = crate::agent::hostfs::confine(&field, &path, &api.host_roots)
                .map_err(ApiError::client)?;
            match blobs.keep(&path) {
                Ok(Some((hex, write))) => {
                    digests.insert(c.name.clone(), json!(hex));
                    held.extend(write);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ApiError::client(format!(
                        "containerDefinitions: the image {} of container {} cannot be read: {e}",
                        c.image, c.name
                    )))
                }
            }
        }
    }
    let family = td.family.clone();
    let fk = family_key(&family);
    let record = with_retries(|| {
        let current = get_json(api.store.as_ref(), &fk)?;
        let (latest, active, cond) = match &current {
            Some((f, rev)) => (
                f.get("latest").and_then(Value::as_u64).unwrap_or(0) as u32,
                f.get("active").and_then(Value::as_u64).unwrap_or(0),
                Condition::At(fk.clone(), *rev),
            ),
            None => (0, 0, Condition::Absent(fk.clone())),
        };
        let revision = latest + 1;
        let deleted = current
            .as_ref()
            .and_then(|(f, _)| f.get("deleted").and_then(Value::as_u64))
            .unwrap_or(0);
        let record = json!({
            "family": family,
            "revision": revision,
            "status": "ACTIVE",
            "registeredAt": now(),
            "document": document,
            "digests": digests,
        });
        let mut writes = vec![
            Write::Put(
                fk.clone(),
                to_bytes(&json!({"latest": revision, "active": active + 1, "deleted": deleted})),
            ),
            Write::Put(key(&family, revision), to_bytes(&record)),
            tags::write(
                "task-definition",
                &format!("{family}:{revision}"),
                &new_tags,
            ),
        ];
        writes.extend(held.iter().cloned());
        Ok(api.store.commit(&[cond], &writes).map(|_| record))
    })?;
    Ok(json!({ "taskDefinition": view(scope, &record), "tags": tags::to_json(&new_tags) }))
}

/// Finds the revision a reference names: `family` (its latest ACTIVE
/// revision), `family:revision`, or an ARN.
pub fn resolve(api: &Api, reference: &str) -> ApiResult<Option<(Value, u64)>> {
    let reference = without_arn(reference);
    if let Some((family, rev)) = reference.rsplit_once(':') {
        let Ok(rev) = rev.parse::<u32>() else {
            return Ok(None);
        };
        return get_json(api.store.as_ref(), &key(family, rev))
            .map(|r| r.map(|(v, m)| (v, m as u64)));
    }
    let revisions = api
        .store
        .list(&format!("taskdefs/{reference}/"), None, usize::MAX)?;
    for r in revisions.iter().rev() {
        let v = parse_record(r)?;
        if v.get("status").and_then(Value::as_str) == Some("ACTIVE") {
            return Ok(Some((v, r.mod_revision as u64)));
        }
    }
    Ok(None)
}

/// The record of the ACTIVE revision a reference names: what new tasks
/// and deployments may use.
pub fn active(api: &Api, reference: &str) -> ApiResult<Value> {
    let (record, _) = resolve(api, reference)?
        .ok_or_else(|| ApiError::invalid(format!("TaskDefinition not found: {reference:?}")))?;
    match record.get("status").and_then(Value::as_str) {
        Some("ACTIVE") => Ok(record),
        status => Err(ApiError::client(format!(
            "TaskDefinition is inactive: {reference:?} is {}; register a new revision",
            status.unwrap_or("INACTIVE")
        ))),
    }
}

/// A reference with its ARN prefix taken off: `family` or
/// `family:revision`.
fn without_arn(reference: &str) -> String {
    match arn::parse(reference) {
        Some(a) if a.kind == "task-definition" => a.resource,
        _ => reference.to_string(),
    }
}

fn unable(action: &str, reference: &str) -> ApiError {
    ApiError::client(format!(
        "Unable to {action} task definition {reference:?}: no such family or revision (name it as family, family:revision or its ARN)"
    ))
}

/// The fields of the calls that read task definitions (Register reads
/// its document through the model).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    task_definition: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    status: Option<String>,
    family_prefix: Option<String>,
    sort: Option<String>,
}

impl Request {
    fn task_definition(&self) -> ApiResult<&str> {
        self.task_definition
            .as_deref()
            .ok_or_else(|| ApiError::client("taskDefinition is required"))
    }

    fn status(&self, allowed: &[&str]) -> ApiResult<String> {
        let s = self.status.as_deref().unwrap_or("ACTIVE");
        if !allowed.contains(&s) {
            return Err(ApiError::invalid(format!(
                "status must be one of {}, got {s:?}",
                allowed.join(", ")
            )));
        }
        Ok(s.to_string())
    }
}

/// DescribeTaskDefinition.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let reference = r.task_definition()?;
    let (record, _) = resolve(api, reference)?.ok_or_else(|| unable("describe", reference))?;
    let mut out = json!({ "taskDefinition": view(scope, &record) });
    if r.include.iter().any(|i| i == "TAGS") {
        let family = record["family"].as_str().unwrap_or_default();
        let rev = record["revision"].as_u64().unwrap_or(0);
        out["tags"] = tags::to_json(&tags::read(
            api.store.as_ref(),
            "task-definition",
            &format!("{family}:{rev}"),
        )?);
    }
    Ok(out)
}

/// ListTaskDefinitions: ARNs by family then revision, ASC or DESC.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let r: Request = decode(req)?;
    let status = r.status(&["ACTIVE", "INACTIVE", "DELETE_IN_PROGRESS"])?;
    let prefix = r.family_prefix.as_deref().unwrap_or("");
    let desc = match r.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "sort must be ASC or DESC, got {other:?}"
            )))
        }
    };
    let mut items: Vec<(String, u32)> = Vec::new();
    for r in api
        .store
        .list(&format!("taskdefs/{prefix}"), None, usize::MAX)?
    {
        let v = parse_record(&r)?;
        if v.get("status").and_then(Value::as_str) == Some(status.as_str()) {
            let family = v["family"].as_str().unwrap_or_default().to_string();
            if family.starts_with(prefix) {
                items.push((family, v["revision"].as_u64().unwrap_or(0) as u32));
            }
        }
    }
    items.sort();
    if desc {
        items.reverse();
    }
    // Position keys sort the same way as the list, so a token resumes it.
    let position = |(f, r): &(String, u32)| {
        if desc {
            format!("{}:{:010}", invert(f), u32::MAX - r)
        } else {
            format!("{f}:{r:010}")
        }
    };
    let (items, next) = page::page(items, position, after.as_deref(), max);
    let arns: Vec<String> = items
        .iter()
        .map(|(f, r)| scope.task_definition(f, *r))
        .collect();
    let mut out = json!({ "taskDefinitionArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

/// A string that sorts in the reverse order of `s` among family names.
fn invert(s: &str) -> String {
    let mut out: String = s.bytes().map(|b| (b'~' - (b - b'-')) as char).collect();
    // Shorter names come after their extensions in descending order.
    out.push('~');
    out
}

/// ListTaskDefinitionFamilies.
pub fn list_families(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let r: Request = decode(req)?;
    let status = r.status(&["ACTIVE", "INACTIVE", "ALL"])?;
    let prefix = r.family_prefix.as_deref().unwrap_or("");
    let mut families = Vec::new();
    for r in api
        .store
        .list(&format!("families/{prefix}"), None, usize::MAX)?
    {
        let v = parse_record(&r)?;
        let active = v.get("active").and_then(Value::as_u64).unwrap_or(0) > 0;
        // Every revision deleted for good: the name is kept (revisions
        // go on counting) but not shown, as ECS does.
        let latest = v.get("latest").and_then(Value::as_u64).unwrap_or(0);
        if v.get("deleted").and_then(Value::as_u64).unwrap_or(0) >= latest {
            continue;
        }
        let keep = match status.as_str() {
            "ACTIVE" => active,
            "INACTIVE" => !active,
            _ => true,
        };
        if keep {
            families.push(r.key.trim_start_matches("families/").to_string());
        }
    }
    let (families, next) = page::page(families, |f| f.clone(), after.as_deref(), max);
    let mut out = json!({ "families": families });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

/// DeregisterTaskDefinition: needs a revision; the revision becomes
/// INACTIVE (still describable, not usable for new tasks).
pub fn deregister(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: Request = decode(req)?;
    let reference = r.task_definition()?;
    let plain = without_arn(reference);
    let Some((family, rev)) = plain.rsplit_once(':') else {
        return Err(ApiError::client(format!(
            "taskDefinition {reference:?} names no revision: write family:revision or the ARN"
        )));
    };
    let rev: u32 = rev.parse().map_err(|_| unable("deregister", reference))?;
    let k = key(family, rev);
    let fk = family_key(family);
    let record = with_retries(|| {
        let Some((mut record, td_rev)) = get_json(api.store.as_ref(), &k)? else {
            return Err(unable("deregister", reference));
        };
        if record.get("status").and_then(Value::as_str) != Some("ACTIVE") {
            return Ok(Ok(record));
        }
        let Some((mut fam, fam_rev)) = get_json(api.store.as_ref(), &fk)? else {
            return Err(unable("deregister", reference));
        };
        record["status"] = json!("INACTIVE");
        record["deregisteredAt"] = json!(now());
        let active = fam.get("active").and_then(Value::as_u64).unwrap_or(1);
        fam["active"] = json!(active.saturating_sub(1));
        Ok(api
            .store
            .commit(
                &[
                    Condition::At(k.clone(), td_rev),
                    Condition::At(fk.clone(), fam_rev),
                ],
                &[
                    Write::Put(k.clone(), to_bytes(&record)),
                    Write::Put(fk.clone(), to_bytes(&fam)),
                ],
            )
            .map(|_| record))
    })?;
    Ok(json!({ "taskDefinition": view(scope, &record) }))
}

/// DeleteTaskDefinitions: each INACTIVE revision named becomes
/// DELETE_IN_PROGRESS (still describable, never usable again) and is
/// deleted for good once no task or service deployment uses it. A
/// revision that is still ACTIVE, or that does not exist, is a failure
/// of its own; the others are deleted all the same.
pub fn delete(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Delete {
        task_definitions: Option<Vec<String>>,
    }
    let r: Delete = decode(req)?;
    let references = r
        .task_definitions
        .ok_or_else(|| ApiError::invalid("taskDefinitions is required"))?;
    if references.is_empty() || references.len() > MAX_DELETE {
        return Err(ApiError::invalid(format!(
            "taskDefinitions must name 1 to {MAX_DELETE} revisions (family:revision or an ARN), got {}",
            references.len()
        )));
    }
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for reference in &references {
        let plain = without_arn(reference);
        let failure = |reason: &str, detail: String| json!({"arn": reference, "reason": reason, "detail": detail});
        let Some((family, rev)) = plain
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f.to_string(), r.parse::<u32>().ok()?)))
        else {
            failures.push(failure(
                "MISSING",
                format!("{reference:?} names no revision: write family:revision or the ARN"),
            ));
            continue;
        };
        let k = key(&family, rev);
        let outcome = with_retries(|| {
            let Some((mut record, td_rev)) = get_json(api.store.as_ref(), &k)? else {
                return Ok(Ok(Err(failure(
                    "MISSING",
                    format!("no task definition {family}:{rev}"),
                ))));
            };
            match record.get("status").and_then(Value::as_str) {
                Some("DELETE_IN_PROGRESS") => return Ok(Ok(Ok(record))),
                Some("INACTIVE") => {}
                _ => {
                    return Ok(Ok(Err(failure(
                        "ACTIVE",
                        format!(
                            "{family}:{rev} is still ACTIVE: deregister it (DeregisterTaskDefinition) before deleting it"
                        ),
                    ))))
                }
            }
            record["status"] = json!("DELETE_IN_PROGRESS");
            Ok(api
                .store
                .commit(
                    &[Condition::At(k.clone(), td_rev)],
                    &[
                        Write::Put(k.clone(), to_bytes(&record)),
                        Write::Put(deleting_key(&family, rev), Vec::new()),
                    ],
                )
                .map(|_| Ok(record)))
        })?;
        match outcome {
            Ok(record) => deleted.push(view(scope, &record)),
            Err(f) => failures.push(f),
        }
    }
    Ok(json!({ "taskDefinitions": deleted, "failures": failures }))
}
