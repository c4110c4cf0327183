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
//! ([`crate::scheduler::controller`]). The records' shapes are
//! [`crate::model::definitions`].

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::{decode, now, page, tags, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::definitions::{
    deleting_key, family_key, key, revisions_prefix, DefinitionRecord, DefinitionStatus,
    FamilyRecord, FAMILIES, PREFIX,
};
use crate::model::taskdef::TaskDefinition;
use crate::store::records::read;
use crate::store::{Condition, Write};

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

/// A member and the value it has when a registration leaves it out.
type Filled = (&'static str, fn() -> Value);

/// Members AWS returns in every task definition, with the value it fills
/// in when the registration left them out (the response examples of
/// DescribeTaskDefinition and RegisterTaskDefinition in the ECS API
/// reference, and botocore's `examples-1.json`): tools written for ECS
/// read them without looking (ecs-deploy's task definition takes
/// `volumes` as a required argument).
const TASK_DEFAULTS: [Filled; 2] = [
    ("volumes", || json!([])),
    ("placementConstraints", || json!([])),
];

/// The same for each of `containerDefinitions`.
const CONTAINER_DEFAULTS: [Filled; 6] = [
    ("cpu", || json!(0)),
    ("essential", || json!(true)),
    ("environment", || json!([])),
    ("mountPoints", || json!([])),
    ("portMappings", || json!([])),
    ("volumesFrom", || json!([])),
];

/// The document as returned: what was submitted, with the members AWS
/// fills in where it left them out, plus the server's fields.
pub fn view(scope: &Scope, record: &DefinitionRecord) -> Value {
    let mut out: Map<String, Value> = record.document.as_object().cloned().unwrap_or_default();
    for (member, default) in TASK_DEFAULTS {
        out.entry(member).or_insert_with(default);
    }
    if let Some(Value::Array(containers)) = out.get_mut("containerDefinitions") {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            for (member, default) in CONTAINER_DEFAULTS {
                c.entry(member).or_insert_with(default);
            }
        }
    }
    out.insert(
        "taskDefinitionArn".into(),
        json!(scope.task_definition(&record.family, record.revision)),
    );
    out.insert("revision".into(), json!(record.revision));
    out.insert("status".into(), json!(record.status.as_str()));
    out.insert("compatibilities".into(), json!(["EC2", "FARGATE"]));
    out.insert("requiresAttributes".into(), json!([]));
    if let Some(at) = record.registered_at {
        out.insert("registeredAt".into(), json!(at));
    }
    if let Some(at) = record.deregistered_at {
        out.insert("deregisteredAt".into(), json!(at));
    }
    Value::Object(out)
}

/// Refuses images and host volumes outside the server's host roots,
/// naming the field.
fn check_host_paths(api: &Api, doc: &Value) -> ApiResult<()> {
    use crate::model::hostfs::within_lexically;
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
            let path = crate::model::image::image_path(image);
            within_lexically(
                &format!("containerDefinitions[{i}].image"),
                &path,
                &api.host_roots,
            )
            .map_err(|e| ApiError::client(e.to_string()))?;
        }
    }
    for (i, v) in list("volumes").iter().enumerate() {
        if let Some(p) = v.pointer("/host/sourcePath").and_then(Value::as_str) {
            within_lexically(
                &format!("volumes[{i}].host.sourcePath"),
                std::path::Path::new(p),
                &api.host_roots,
            )
            .map_err(|e| ApiError::client(e.to_string()))?;
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
    let mut digests = std::collections::BTreeMap::new();
    let mut held = Vec::new();
    if let Some(blobs) = &api.blobs {
        for (i, c) in td.containers.iter().enumerate() {
            let path = crate::model::image::image_path(&c.image);
            if crate::model::image::is_reference(&c.image) || !path.is_file() {
                continue;
            }
            // Symlinks resolved: what is kept is what a task may load.
            let field = format!("containerDefinitions[{i}].image");
            let path = crate::model::hostfs::confine(&field, &path, &api.host_roots)
                .map_err(|e| ApiError::client(e.to_string()))?;
            match blobs.keep(&path) {
                Ok(Some((hex, write))) => {
                    digests.insert(c.name.clone(), hex);
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
        let current = read::<FamilyRecord>(api.store.as_ref(), &fk)?;
        let (mut fam, cond) = match current {
            Some((f, rev)) => (f, Condition::At(fk.clone(), rev)),
            None => (FamilyRecord::default(), Condition::Absent(fk.clone())),
        };
        fam.latest += 1;
        fam.active += 1;
        let record = DefinitionRecord {
            family: family.clone(),
            revision: fam.latest,
            status: DefinitionStatus::Active,
            registered_at: Some(now()),
            deregistered_at: None,
            document: document.clone(),
            digests: digests.clone(),
        };
        let mut writes = vec![
            Write::Put(fk.clone(), fam.encode()),
            Write::Put(key(&family, record.revision), record.encode()),
            tags::write(
                "task-definition",
                &format!("{family}:{}", record.revision),
                &new_tags,
            ),
        ];
        writes.extend(held.iter().cloned());
        Ok(api.store.commit(&[cond], &writes).map(|_| record))
    })?;
    Ok(json!({ "taskDefinition": view(scope, &record), "tags": tags::to_json(&new_tags) }))
}

/// Finds the revision a reference names: `family` (its latest ACTIVE
/// revision), `family:revision`, or an ARN; with the store revision it
/// was read at.
pub fn resolve(api: &Api, reference: &str) -> ApiResult<Option<(DefinitionRecord, i64)>> {
    let reference = without_arn(reference);
    if let Some((family, rev)) = reference.rsplit_once(':') {
        let Ok(rev) = rev.parse::<u32>() else {
            return Ok(None);
        };
        return Ok(read(api.store.as_ref(), &key(family, rev))?);
    }
    let revisions = crate::store::records::read_all::<DefinitionRecord>(
        api.store.as_ref(),
        &revisions_prefix(&reference),
    )?;
    Ok(revisions
        .into_iter()
        .rev()
        .find(|(_, d, _)| d.status == DefinitionStatus::Active)
        .map(|(_, d, rev)| (d, rev)))
}

/// The ACTIVE revision a reference names, validated: what new tasks and
/// deployments may use.
pub fn active(api: &Api, reference: &str) -> ApiResult<(DefinitionRecord, TaskDefinition)> {
    let (record, _) = resolve(api, reference)?
        .ok_or_else(|| ApiError::invalid(format!("TaskDefinition not found: {reference:?}")))?;
    if record.status != DefinitionStatus::Active {
        return Err(ApiError::client(format!(
            "TaskDefinition is inactive: {reference:?} is {}; register a new revision",
            record.status.as_str()
        )));
    }
    let td = record.definition()?;
    Ok((record, td))
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
        out["tags"] = tags::to_json(&tags::read(
            api.store.as_ref(),
            "task-definition",
            &format!("{}:{}", record.family, record.revision),
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
    let status = DefinitionStatus::parse(&status).unwrap_or_default();
    // Despite its name, ECS reads familyPrefix here as the whole family
    // name (the API reference: "The full family name"); only
    // ListTaskDefinitionFamilies reads it as a prefix.
    let family = r.family_prefix.as_deref().filter(|f| !f.is_empty());
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
    let revisions = crate::store::records::read_all::<DefinitionRecord>(
        api.store.as_ref(),
        &family.map_or_else(|| PREFIX.to_string(), revisions_prefix),
    )?;
    for (_, d, _) in revisions {
        if d.status == status && family.is_none_or(|f| d.family == f) {
            items.push((d.family, d.revision));
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
    let stored = crate::store::records::read_all::<FamilyRecord>(
        api.store.as_ref(),
        &format!("{FAMILIES}{prefix}"),
    )?;
    for (k, f, _) in stored {
        let active = f.active > 0;
        // Every revision deleted for good: the name is kept (revisions
        // go on counting) but not shown, as ECS does.
        if f.deleted >= u64::from(f.latest) {
            continue;
        }
        let keep = match status.as_str() {
            "ACTIVE" => active,
            "INACTIVE" => !active,
            _ => true,
        };
        if keep {
            families.push(k.trim_start_matches(FAMILIES).to_string());
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
        let Some((mut record, td_rev)) = read::<DefinitionRecord>(api.store.as_ref(), &k)? else {
            return Err(unable("deregister", reference));
        };
        if record.status != DefinitionStatus::Active {
            return Ok(Ok(record));
        }
        let Some((mut fam, fam_rev)) = read::<FamilyRecord>(api.store.as_ref(), &fk)? else {
            return Err(unable("deregister", reference));
        };
        record.status = DefinitionStatus::Inactive;
        record.deregistered_at = Some(now());
        fam.active = fam.active.saturating_sub(1);
        Ok(api
            .store
            .commit(
                &[
                    Condition::At(k.clone(), td_rev),
                    Condition::At(fk.clone(), fam_rev),
                ],
                &[
                    Write::Put(k.clone(), record.encode()),
                    Write::Put(fk.clone(), fam.encode()),
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
            let Some((mut record, td_rev)) = read::<DefinitionRecord>(api.store.as_ref(), &k)?
            else {
                return Ok(Ok(Err(failure(
                    "MISSING",
                    format!("no task definition {family}:{rev}"),
                ))));
            };
            match record.status {
                DefinitionStatus::DeleteInProgress => return Ok(Ok(Ok(record))),
                DefinitionStatus::Inactive => {}
                DefinitionStatus::Active => {
                    return Ok(Ok(Err(failure(
                        "ACTIVE",
                        format!(
                            "{family}:{rev} is still ACTIVE: deregister it (DeregisterTaskDefinition) before deleting it"
                        ),
                    ))))
                }
            }
            record.status = DefinitionStatus::DeleteInProgress;
            Ok(api
                .store
                .commit(
                    &[Condition::At(k.clone(), td_rev)],
                    &[
                        Write::Put(k.clone(), record.encode()),
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
