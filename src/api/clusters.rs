//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster.
//! Stored at `clusters/NAME`; a deleted cluster stays describable as
//! INACTIVE, and creating it again makes it ACTIVE.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, get_json, now, page, tags, to_bytes, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::check_name;
use crate::store::{Condition, Store, Write};

/// The cluster every request that names none uses.
pub const DEFAULT: &str = "default";

/// The store key of a cluster.
pub fn key(name: &str) -> String {
    format!("clusters/{name}")
}

/// The name a request's `cluster` (a name or an ARN) refers to.
pub fn name_of(reference: &str) -> String {
    match arn::parse(reference) {
        Some(a) if a.kind == "cluster" => a.resource,
        _ => reference.to_string(),
    }
}

/// Fields of CreateCluster that are stored and returned as given.
const ECHOED: [&str; 5] = [
    "settings",
    "configuration",
    "capacityProviders",
    "defaultCapacityProviderStrategy",
    "serviceConnectDefaults",
];

/// Makes sure the default cluster exists (at first start).
pub fn ensure_default(store: &dyn Store) -> Result<(), String> {
    if store
        .get(&key(DEFAULT))
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let record = json!({"name": DEFAULT, "status": "ACTIVE", "createdAt": now()});
    match store.commit(
        &[Condition::Absent(key(DEFAULT))],
        &[Write::Put(key(DEFAULT), to_bytes(&record))],
    ) {
        Ok(_) | Err(crate::store::StoreError::Conflict) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The cluster a request names (or the default), which must be ACTIVE.
pub fn active(api: &Api, req: &Value) -> ApiResult<String> {
    let r: InCluster = decode(req)?;
    let name = name_of(r.cluster.as_deref().unwrap_or(DEFAULT));
    load_active(api, &name).map(|_| name)
}

/// A cluster record that is ACTIVE, with its revision, or ClusterNotFound.
fn load_active(api: &Api, name: &str) -> ApiResult<(Value, i64)> {
    match get_json(api.store.as_ref(), &key(name))? {
        Some((c, rev)) if c.get("status").and_then(Value::as_str) == Some("ACTIVE") => Ok((c, rev)),
        _ => Err(ApiError::cluster_not_found(name)),
    }
}

/// Counts of a cluster's tasks by last status.
fn task_counts(api: &Api, name: &str) -> ApiResult<(u64, u64)> {
    let (mut running, mut pending) = (0, 0);
    for r in api
        .store
        .list(&format!("tasks/{name}/"), None, usize::MAX)?
    {
        let t = super::parse_record(&r)?;
        match t.get("lastStatus").and_then(Value::as_str) {
            Some("RUNNING") => running += 1,
            Some("STOPPED") | Some("DEPROVISIONING") | Some("STOPPING") | Some("DEACTIVATING") => {}
            _ => pending += 1,
        }
    }
    Ok((running, pending))
}

/// How many of a cluster's services are ACTIVE or DRAINING.
fn service_count(api: &Api, name: &str) -> ApiResult<u64> {
    let mut n = 0;
    for r in api
        .store
        .list(&format!("services/{name}/"), None, usize::MAX)?
    {
        let s = super::parse_record(&r)?;
        if s.get("status").and_then(Value::as_str) != Some("INACTIVE") {
            n += 1;
        }
    }
    Ok(n)
}

fn view(api: &Api, scope: &Scope, record: &Value, with_tags: bool) -> ApiResult {
    let name = record
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (running, pending) = task_counts(api, name)?;
    let mut out = Map::new();
    out.insert("clusterArn".into(), json!(scope.cluster(name)));
    out.insert("clusterName".into(), json!(name));
    out.insert(
        "status".into(),
        record.get("status").cloned().unwrap_or(json!("ACTIVE")),
    );
    // Every node is a container instance of every cluster.
    let fleet = crate::scheduler::capacity::Fleet::read(api.store.as_ref())?;
    out.insert(
        "registeredContainerInstancesCount".into(),
        json!(fleet
            .members
            .iter()
            .filter(|m| m.status != crate::scheduler::capacity::InstanceStatus::Inactive)
            .count()),
    );
    out.insert("runningTasksCount".into(), json!(running));
    out.insert("pendingTasksCount".into(), json!(pending));
    out.insert(
        "activeServicesCount".into(),
        json!(service_count(api, name)?),
    );
    out.insert("statistics".into(), json!([]));
    for f in ECHOED {
        if let Some(v) = record.get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    if with_tags {
        out.insert(
            "tags".into(),
            tags::to_json(&tags::read(api.store.as_ref(), "cluster", name)?),
        );
    }
    Ok(Value::Object(out))
}

/// The field of every call made in a cluster.
#[derive(Deserialize)]
struct InCluster {
    cluster: Option<String>,
}

/// What the cluster calls read. The settings are kept as the client wrote them; their shapes
/// (lists, objects) are checked here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRequest {
    cluster: Option<String>,
    cluster_name: Option<String>,
    clusters: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
    tags: Option<Value>,
    #[serde(rename = "settings")]
    _settings: Option<Vec<Map<String, Value>>>,
    #[serde(rename = "configuration")]
    _configuration: Option<Map<String, Value>>,
    #[serde(rename = "capacityProviders")]
    _capacity_providers: Option<Vec<String>>,
    #[serde(rename = "defaultCapacityProviderStrategy")]
    _default_capacity_provider_strategy: Option<Vec<Map<String, Value>>>,
    #[serde(rename = "serviceConnectDefaults")]
    _service_connect_defaults: Option<Map<String, Value>>,
}

impl ClusterRequest {
    /// The cluster named by `cluster`, which the call requires.
    fn required_cluster(&self) -> ApiResult<String> {
        self.cluster
            .as_deref()
            .map(name_of)
            .ok_or_else(|| ApiError::client("cluster is required"))
    }
}

/// CreateCluster: idempotent for an existing cluster.
pub fn create(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: ClusterRequest = decode(req)?;
    let name = r.cluster_name.unwrap_or_else(|| DEFAULT.to_string());
    check_name("clusterName", "cluster", &name).map_err(|e| ApiError::invalid(e.to_string()))?;
    let new_tags = tags::parse(r.tags.as_ref())?;
    let k = key(&name);
    let record = with_retries(|| {
        let current = get_json(api.store.as_ref(), &k)?;
        if let Some((c, _)) = &current {
            if c.get("status").and_then(Value::as_str) == Some("ACTIVE") {
                return Ok(Ok(c.clone()));
            }
        }
        let mut record = json!({"name": name, "status": "ACTIVE", "createdAt": now()});
        for f in ECHOED {
            if let Some(v) = req.get(f) {
                record[f] = v.clone();
            }
        }
        let cond = match &current {
            Some((_, rev)) => Condition::At(k.clone(), *rev),
            None => Condition::Absent(k.clone()),
        };
        let mut writes = vec![Write::Put(k.clone(), to_bytes(&record))];
        if !new_tags.is_empty() || current.is_some() {
            writes.push(tags::write("cluster", &name, &new_tags));
        }
        Ok(api.store.commit(&[cond], &writes).map(|_| record))
    })?;
    Ok(json!({ "cluster": view(api, scope, &record, true)? }))
}

/// DescribeClusters: unknown names are `failures` with reason MISSING.
pub fn describe(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: ClusterRequest = decode(req)?;
    let names = r.clusters.unwrap_or_else(|| vec![DEFAULT.to_string()]);
    if names.len() > 100 {
        return Err(ApiError::invalid("clusters can name at most 100 clusters"));
    }
    let with_tags = r.include.iter().any(|i| i == "TAGS");
    let (mut clusters, mut failures) = (Vec::new(), Vec::new());
    for reference in names {
        let name = name_of(&reference);
        match get_json(api.store.as_ref(), &key(&name))? {
            Some((record, _)) => clusters.push(view(api, scope, &record, with_tags)?),
            None => failures.push(json!({"arn": scope.cluster(&name), "reason": "MISSING"})),
        }
    }
    Ok(json!({ "clusters": clusters, "failures": failures }))
}

/// ListClusters: ACTIVE clusters' ARNs, paginated.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let max = page::max_results(req, 100)?;
    let after = page::after(req)?;
    let mut names = Vec::new();
    for r in api.store.list("clusters/", None, usize::MAX)? {
        let c = super::parse_record(&r)?;
        if c.get("status").and_then(Value::as_str) == Some("ACTIVE") {
            names.push(r.key.trim_start_matches("clusters/").to_string());
        }
    }
    let (names, next) = page::page(names, |n| n.clone(), after.as_deref(), max);
    let arns: Vec<String> = names.iter().map(|n| scope.cluster(n)).collect();
    let mut out = json!({ "clusterArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

/// Applies `change` to an ACTIVE cluster's record and writes it back if
/// nothing changed it meanwhile (retrying otherwise); returns the record.
fn modify_active(
    api: &Api,
    name: &str,
    change: impl Fn(&mut Value) -> ApiResult<()>,
) -> ApiResult<Value> {
    let k = key(name);
    with_retries(|| {
        let (mut c, rev) = load_active(api, name)?;
        change(&mut c)?;
        Ok(api
            .store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k.clone(), to_bytes(&c))],
            )
            .map(|_| c))
    })
}

/// DeleteCluster: refused while the cluster has tasks that are not stopped.
pub fn delete(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let name = decode::<ClusterRequest>(req)?.required_cluster()?;
    let record = modify_active(api, &name, |c| {
        let services = service_count(api, &name)?;
        if services > 0 {
            return Err(ApiError::new(
                Kind::ClusterContainsServices,
                format!(
                    "The cluster {name:?} has {services} services that are not deleted; delete them (DeleteService) and wait until they are INACTIVE"
                ),
            ));
        }
        let (running, pending) = task_counts(api, &name)?;
        if running + pending > 0 {
            return Err(ApiError::new(
                Kind::ClusterContainsTasks,
                format!(
                    "The cluster {name:?} has {} tasks that are not stopped; stop them first",
                    running + pending
                ),
            ));
        }
        c["status"] = json!("INACTIVE");
        Ok(())
    })?;
    Ok(json!({ "cluster": view(api, scope, &record, false)? }))
}

/// UpdateCluster and UpdateClusterSettings: replace the given fields of an
/// ACTIVE cluster (what Terraform calls when `setting` or `configuration`
/// change).
pub fn update(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let name = decode::<ClusterRequest>(req)?.required_cluster()?;
    let record = modify_active(api, &name, |c| {
        for f in ["settings", "configuration", "serviceConnectDefaults"] {
            if let Some(v) = req.get(f).filter(|v| !v.is_null()) {
                c[f] = v.clone();
            }
        }
        Ok(())
    })?;
    Ok(json!({ "cluster": view(api, scope, &record, false)? }))
}
