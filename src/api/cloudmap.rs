//! AWS Cloud Map's HTTP namespaces (the `servicediscovery` API: JSON 1.1,
//! target prefix `Route53AutoNaming_v20170314`), the namespaces Service
//! Connect names by ARN: CreateHttpNamespace, GetNamespace,
//! ListNamespaces, DeleteNamespace, GetOperation and tags.
//!
//! Only HTTP namespaces exist here (no DNS namespaces, no Cloud Map
//! services or instances: Service Connect's names live in the services'
//! own configurations). Operations finish as they are asked for: an
//! operation's id says what it did, so GetOperation needs no record of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, page, Api};
use crate::model::arn::Scope;
use crate::model::connect::NamespaceError;
use crate::store::{Condition, Write};

/// The JSON 1.1 target prefix of Cloud Map.
pub const TARGET: &str = "Route53AutoNaming_v20170314";

/// The actions served, by name.
pub(crate) const ACTIONS: &[(&str, super::Action)] = &[
    ("CreateHttpNamespace", create),
    ("GetNamespace", get),
    ("ListNamespaces", list),
    ("DeleteNamespace", delete),
    ("GetOperation", operation),
    ("TagResource", tag),
    ("UntagResource", untag),
    ("ListTagsForResource", list_tags),
];

/// A namespace, as stored at `cloudmap/namespaces/ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Namespace {
    id: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    creator_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

fn key(id: &str) -> String {
    format!("cloudmap/namespaces/{id}")
}

/// The key that holds a name for the namespace that has it.
fn name_key(name: &str) -> String {
    format!("cloudmap/names/{name}")
}

fn arn(scope: &Scope, id: &str) -> String {
    format!(
        "arn:aws:servicediscovery:{}:{}:namespace/{id}",
        scope.region, scope.account
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::CloudMapInvalidInput, message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        Kind::NamespaceNotFound,
        format!("No namespace exists with ID: {id}"),
    )
}

fn load(api: &Api, id: &str) -> ApiResult<Option<(Namespace, i64)>> {
    let Some(r) = api.store.get(&key(id))? else {
        return Ok(None);
    };
    let ns = serde_json::from_slice(&r.value)
        .map_err(|e| ApiError::new(Kind::Server, format!("namespace record {id}: {e}")))?;
    Ok(Some((ns, r.mod_revision)))
}

fn all(api: &Api) -> ApiResult<Vec<Namespace>> {
    Ok(api
        .store
        .list("cloudmap/namespaces/", None, usize::MAX)?
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.value).ok())
        .collect())
}

/// The id of the namespace an ARN of this API names.
fn id_of_arn(resource_arn: &str) -> Option<&str> {
    let rest = resource_arn.strip_prefix("arn:")?;
    let (head, id) = rest.split_once(":namespace/")?;
    head.split(':')
        .nth(1)
        .filter(|s| *s == "servicediscovery")
        .map(|_| id)
}

/// The name of the namespace `namespace` names, for Service Connect: a
/// Cloud Map namespace's ARN must name one that exists; its id names it
/// when one has that id; anything else is a name of its own.
pub(crate) fn resolve(api: &Api, namespace: &str) -> Result<String, NamespaceError> {
    let lookup = |id: &str| load(api, id).map_err(|e| NamespaceError::Unreadable(e.message));
    if namespace.starts_with("arn:") {
        let Some(id) = id_of_arn(namespace) else {
            return Err(NamespaceError::NotAnArn(namespace.to_string()));
        };
        return match lookup(id)? {
            Some((ns, _)) => Ok(ns.name),
            None => Err(NamespaceError::NoSuch {
                id: id.to_string(),
                arn: namespace.to_string(),
            }),
        };
    }
    if namespace.starts_with("ns-") {
        if let Some((ns, _)) = lookup(namespace)? {
            return Ok(ns.name);
        }
    }
    Ok(namespace.to_string())
}

/// Seconds since the epoch of an operation made now, and the operation's
/// id: what it did, to which namespace, and when.
fn operation_id(kind: &str, id: &str) -> String {
    let millis = (crate::model::now() * 1000.0) as u64;
    format!("{kind}.{id}.{millis}")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagIn {
    key: Option<String>,
    value: Option<String>,
}

fn tags_in(v: Option<Vec<TagIn>>, field: &str) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, t) in v.unwrap_or_default().into_iter().enumerate() {
        let k = t.key.unwrap_or_default();
        if k.is_empty() || k.chars().count() > 128 || k.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "{field}[{i}].Key must be 1 to 128 characters, not starting with aws:"
            )));
        }
        let val = t.value.unwrap_or_default();
        if val.chars().count() > 256 {
            return Err(invalid(format!(
                "{field}[{i}].Value must be at most 256 characters"
            )));
        }
        out.insert(k, val);
    }
    Ok(out)
}

fn tags_out(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// The most tags a namespace may have (as Cloud Map).
const MAX_TAGS: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    name: Option<String>,
    creator_request_id: Option<String>,
    description: Option<String>,
    tags: Option<Vec<TagIn>>,
}

/// Whether `name` may name an HTTP namespace (Cloud Map's rule: 1 to
/// 1024 printable characters, no spaces).
fn valid_name(name: &str) -> bool {
    (1..=1024).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

/// CreateHttpNamespace.
fn create(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: CreateRequest = decode(req)?;
    let name = r
        .name
        .ok_or_else(|| invalid("Name is required: the namespace's name"))?;
    if !valid_name(&name) {
        return Err(invalid(format!(
            "Name must be 1 to 1024 printable characters without spaces, got {name:?}"
        )));
    }
    if r.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(invalid("Description must be at most 1024 characters"));
    }
    let tags = tags_in(r.tags, "Tags")?;
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "at most {MAX_TAGS} tags, got {}",
            tags.len()
        )));
    }
    if let Some(held) = api.store.get(&name_key(&name))? {
        let id = String::from_utf8_lossy(&held.value).into_owned();
        let existing = load(api, &id)?.map(|(ns, _)| ns);
        // The same request again (its CreatorRequestId): the same answer.
        if let Some(ns) = existing.filter(|ns| {
            r.creator_request_id.is_some() && ns.creator_request_id == r.creator_request_id
        }) {
            return Ok(json!({"OperationId": operation_id("create", &ns.id)}));
        }
        return Err(ApiError::new(
            Kind::NamespaceAlreadyExists,
            format!("Namespace {name:?} already exists (ID {id}); use it, or delete it first"),
        ));
    }
    let id = format!("ns-{}", &super::new_id()[..16]);
    let ns = Namespace {
        id: id.clone(),
        name: name.clone(),
        description: r.description,
        created_at: crate::model::now(),
        creator_request_id: r.creator_request_id,
        tags,
    };
    let writes = [
        Write::Put(name_key(&name), id.clone().into_bytes()),
        Write::Put(key(&id), serde_json::to_vec(&ns).unwrap_or_default()),
    ];
    match api
        .store
        .commit(&[Condition::Absent(name_key(&name))], &writes)
    {
        Ok(_) => Ok(json!({"OperationId": operation_id("create", &id)})),
        Err(crate::store::StoreError::Conflict) => Err(ApiError::new(
            Kind::NamespaceAlreadyExists,
            format!("Namespace {name:?} was created concurrently; use it, or delete it first"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ById {
    id: Option<String>,
}

fn required_id(req: &Value) -> ApiResult<String> {
    decode::<ById>(req)?
        .id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("Id is required: the namespace's ID (ns-...)"))
}

/// The services of Service Connect in namespace `name`: ECS's Cloud Map
/// services, one per discovery name.
fn service_count(members: &[crate::model::connect::Member], name: &str) -> usize {
    members
        .iter()
        .filter(|m| m.config.namespace_name() == name)
        .map(|m| m.config.services.len())
        .sum()
}

fn view(scope: &Scope, ns: &Namespace, count: usize) -> Value {
    let mut v = json!({
        "Id": ns.id,
        "Arn": arn(scope, &ns.id),
        "Name": ns.name,
        "Type": "HTTP",
        "ServiceCount": count,
        "Properties": {"HttpProperties": {"HttpName": ns.name}},
        "CreateDate": ns.created_at,
    });
    if let Some(d) = &ns.description {
        v["Description"] = json!(d);
    }
    v
}

/// GetNamespace.
fn get(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let id = required_id(req)?;
    let (ns, _) = load(api, &id)?.ok_or_else(|| not_found(&id))?;
    let services = crate::store::records::connect_members(api.store.as_ref())?;
    let mut v = view(scope, &ns, service_count(&services, &ns.name));
    if let Some(c) = &ns.creator_request_id {
        v["CreatorRequestId"] = json!(c);
    }
    Ok(json!({ "Namespace": v }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    name: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    condition: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    #[serde(default)]
    filters: Vec<Filter>,
}

/// Whether `ns` passes `f` (TYPE, NAME or HTTP_NAME; EQ, IN or
/// BEGINS_WITH).
fn passes(ns: &Namespace, f: &Filter, i: usize) -> ApiResult<bool> {
    let field = format!("Filters[{i}]");
    let value = match f.name.as_deref() {
        Some("TYPE") => "HTTP",
        Some("NAME") | Some("HTTP_NAME") => ns.name.as_str(),
        other => {
            return Err(invalid(format!(
                "{field}.Name must be TYPE, NAME or HTTP_NAME, got {other:?}"
            )))
        }
    };
    if f.values.is_empty() {
        return Err(invalid(format!("{field}.Values must have a value")));
    }
    match f.condition.as_deref().unwrap_or("EQ") {
        "EQ" if f.values.len() == 1 => Ok(f.values[0] == value),
        "IN" => Ok(f.values.iter().any(|v| v == value)),
        "BEGINS_WITH" if f.values.len() == 1 => Ok(value.starts_with(&f.values[0])),
        other => Err(invalid(format!(
            "{field}.Condition {other:?} with {} values: use EQ or BEGINS_WITH with one value, or IN",
            f.values.len()
        ))),
    }
}

/// ListNamespaces.
fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: ListRequest = decode(req)?;
    let max = match req.get("MaxResults").and_then(Value::as_i64) {
        None => 100,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => return Err(invalid(format!("MaxResults must be 1 to 100, got {n}"))),
    };
    let after = page::after(&json!({"nextToken": req.get("NextToken")}))?;
    let mut kept = Vec::new();
    for ns in all(api)? {
        let mut keep = true;
        for (i, f) in r.filters.iter().enumerate() {
            keep &= passes(&ns, f, i)?;
        }
        if keep {
            kept.push(ns);
        }
    }
    let (items, next) = page::page(kept, |ns| ns.id.clone(), after.as_deref(), max);
    let services = crate::store::records::connect_members(api.store.as_ref())?;
    let list: Vec<Value> = items
        .iter()
        .map(|ns| view(scope, ns, service_count(&services, &ns.name)))
        .collect();
    let mut out = json!({ "Namespaces": list });
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Ok(out)
}

/// DeleteNamespace: refused (ResourceInUse) while a service's Service
/// Connect configuration is in it.
fn delete(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let id = required_id(req)?;
    // Retried on a conflict: a service given a configuration in the
    // namespace at once moves its guard, and is then found.
    super::with_retries(|| delete_once(api, &id))?;
    Ok(json!({"OperationId": operation_id("delete", &id)}))
}

fn delete_once(api: &Api, id: &str) -> ApiResult<Result<(), crate::store::StoreError>> {
    let (ns, rev) = load(api, id)?.ok_or_else(|| not_found(id))?;
    let (guard, moved) = super::connect::guard(api.store.as_ref(), &ns.name)?;
    let services = crate::store::records::connect_members(api.store.as_ref())?;
    if let Some(s) = services
        .iter()
        .find(|m| m.config.namespace_name() == ns.name)
    {
        return Err(ApiError::new(
            Kind::CloudMapResourceInUse,
            format!(
                "Namespace {id} is used by the Service Connect configuration of service {:?} in cluster {:?}; delete that service or move it out of the namespace first",
                s.name, s.cluster
            ),
        ));
    }
    Ok(api
        .store
        .commit(
            &[Condition::At(key(id), rev), guard],
            &[
                Write::Delete(key(id)),
                Write::Delete(name_key(&ns.name)),
                moved,
            ],
        )
        .map(|_| ()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OperationRequest {
    operation_id: Option<String>,
}

/// GetOperation: every operation has succeeded by the time its id is
/// returned.
fn operation(_api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: OperationRequest = decode(req)?;
    let op = r
        .operation_id
        .ok_or_else(|| invalid("OperationId is required"))?;
    let parsed = op.split_once('.').and_then(|(kind, rest)| {
        let (id, millis) = rest.rsplit_once('.')?;
        let kind = match kind {
            "create" => "CREATE_NAMESPACE",
            "delete" => "DELETE_NAMESPACE",
            _ => return None,
        };
        Some((kind, id, millis.parse::<u64>().ok()?))
    });
    let Some((kind, id, millis)) = parsed.filter(|(_, id, _)| id.starts_with("ns-")) else {
        return Err(ApiError::new(
            Kind::OperationNotFound,
            format!("No operation exists with ID {op:?}"),
        ));
    };
    let at = millis as f64 / 1000.0;
    Ok(json!({"Operation": {
        "Id": op,
        "Type": kind,
        "Status": "SUCCESS",
        "CreateDate": at,
        "UpdateDate": at,
        "Targets": {"NAMESPACE": id},
    }}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    tags: Option<Vec<TagIn>>,
    tag_keys: Option<Vec<String>>,
}

/// The namespace a tag request's ResourceARN names.
fn tagged(api: &Api, r: &TagRequest) -> ApiResult<(Namespace, i64)> {
    let target = r
        .resource_arn
        .as_deref()
        .ok_or_else(|| invalid("ResourceARN is required"))?;
    let missing = || {
        ApiError::new(
            Kind::ResourceNotFound,
            format!("No namespace has the ARN {target:?}"),
        )
    };
    let id = id_of_arn(target).ok_or_else(missing)?;
    load(api, id)?.ok_or_else(missing)
}

fn change_tags(
    api: &Api,
    req: &Value,
    f: impl Fn(&mut BTreeMap<String, String>, &TagRequest) -> ApiResult<()>,
) -> ApiResult {
    let r: TagRequest = decode(req)?;
    super::with_retries(|| {
        let (mut ns, rev) = tagged(api, &r)?;
        f(&mut ns.tags, &r)?;
        if ns.tags.len() > MAX_TAGS {
            return Err(ApiError::new(
                Kind::CloudMapTooManyTags,
                format!("a namespace can have at most {MAX_TAGS} tags"),
            ));
        }
        let k = key(&ns.id);
        Ok(api.store.commit(
            &[Condition::At(k.clone(), rev)],
            &[Write::Put(k, serde_json::to_vec(&ns).unwrap_or_default())],
        ))
    })?;
    Ok(json!({}))
}

/// TagResource.
fn tag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: TagRequest = decode(req)?;
    let added = tags_in(r.tags, "Tags")?;
    change_tags(api, req, move |tags, _| {
        tags.extend(added.clone());
        Ok(())
    })
}

/// UntagResource.
fn untag(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    change_tags(api, req, |tags, r| {
        for k in r.tag_keys.as_deref().unwrap_or_default() {
            tags.remove(k);
        }
        Ok(())
    })
}

/// ListTagsForResource.
fn list_tags(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: TagRequest = decode(req)?;
    let (ns, _) = tagged(api, &r)?;
    Ok(json!({ "Tags": tags_out(&ns.tags) }))
}

/// The resources a Cloud Map action acts on, for IAM: its namespace's ARN,
/// or `*` for creating, listing and operations.
pub fn resources(scope: &Scope, action: &str, req: &Value) -> Vec<String> {
    let s = |name: &str| req.get(name).and_then(Value::as_str);
    match action {
        "GetNamespace" | "DeleteNamespace" => match s("Id") {
            Some(id) => vec![arn(scope, id)],
            None => vec!["*".into()],
        },
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            vec![s("ResourceARN").unwrap_or("*").to_string()]
        }
        _ => vec!["*".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_name_namespaces_of_this_api_only() {
        assert_eq!(
            id_of_arn("arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-abc"),
            Some("ns-abc")
        );
        assert_eq!(id_of_arn("arn:aws:ecs:us-east-1:1:namespace/ns-abc"), None);
        assert_eq!(
            id_of_arn("arn:aws:servicediscovery:us-east-1:1:service/srv-1"),
            None
        );
        assert_eq!(id_of_arn("ns-abc"), None);
    }
}
