//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster,
//! UpdateCluster, and their capacity providers (PutClusterCapacityProviders,
//! DescribeCapacityProviders). Stored at `clusters/NAME`; a deleted cluster
//! stays describable as INACTIVE, and creating it again makes it ACTIVE.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::{decode, now, page, tags, with_retries, Api};
use crate::model::arn::{self, Scope};
use crate::model::check_name;
pub use crate::model::cluster::{key, DEFAULT};
use crate::model::cluster::{ClusterRecord, ClusterStatus, PREFIX};
use crate::model::provider::{self, StrategyItem};
use crate::model::service::{ServiceRecord, ServiceStatus};
use crate::model::task::{self, TaskRecord, TaskStatus};
use crate::store::records::{read, read_all};
use crate::store::{Condition, Store, Write};

/// The name a request's `cluster` (a name or an ARN) refers to.
pub fn name_of(reference: &str) -> String {
    match arn::parse(reference) {
        Some(a) if a.kind == "cluster" => a.resource,
        _ => reference.to_string(),
    }
}

/// Sets the fields a client's request gives that are stored and returned
/// as written (`settings`, `configuration`, `serviceConnectDefaults`);
/// absent and null ones are left as they are.
fn echo(c: &mut ClusterRecord, req: &Value) {
    let given = |f: &str| req.get(f).filter(|v| !v.is_null()).cloned();
    if let Some(v) = given("settings") {
        c.settings = Some(v);
    }
    if let Some(v) = given("configuration") {
        c.configuration = Some(v);
    }
    if let Some(v) = given("serviceConnectDefaults") {
        c.service_connect_defaults = Some(v);
    }
}

/// The capacity providers and default strategy of a CreateCluster or
/// PutClusterCapacityProviders request, checked; each `None` where absent.
struct RequestedCapacity {
    providers: Option<Vec<String>>,
    strategy: Option<Vec<StrategyItem>>,
}

/// Reads and checks a request's [`RequestedCapacity`].
fn requested_capacity(req: &Value) -> ApiResult<RequestedCapacity> {
    let providers = match req.get("capacityProviders").filter(|v| !v.is_null()) {
        Some(v) => Some(provider::parse_names("capacityProviders", v)?),
        None => None,
    };
    let strategy = match req
        .get("defaultCapacityProviderStrategy")
        .filter(|v| !v.is_null())
    {
        Some(v) => Some(provider::parse_strategy(
            "defaultCapacityProviderStrategy",
            v,
            providers.as_deref().unwrap_or_default(),
        )?),
        None => None,
    };
    Ok(RequestedCapacity {
        providers,
        strategy,
    })
}

/// The capacity provider strategy a CreateService or RunTask in `cluster`
/// runs with: `given` (its `capacityProviderStrategy`, checked against the
/// cluster's providers) or, when neither it nor a launch type is given,
/// the cluster's default strategy. Empty means the launch type.
pub fn strategy_for(
    api: &Api,
    cluster: &str,
    launch_type_given: bool,
    given: Option<&Value>,
) -> ApiResult<Vec<StrategyItem>> {
    let given = given.filter(|v| !v.is_null());
    if launch_type_given && given.is_some() {
        return Err(ApiError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported: remove launchType or capacityProviderStrategy",
        ));
    }
    let (providers, default) = load_active(api, cluster)?.0.capacity();
    match given {
        Some(v) => {
            let s = provider::parse_strategy("capacityProviderStrategy", v, &providers)?;
            Ok(if s.is_empty() { default } else { s })
        }
        None if launch_type_given => Ok(Vec::new()),
        None => Ok(default),
    }
}

/// The capacity providers that services or unstopped tasks of `cluster`
/// use, each with one of its users (for the error that refuses removing
/// it).
fn providers_in_use(api: &Api, cluster: &str) -> ApiResult<BTreeMap<String, String>> {
    let mut used = BTreeMap::new();
    let services = read_all::<ServiceRecord>(
        api.store.as_ref(),
        &crate::model::service::cluster_prefix(cluster),
    )?;
    for (_, s, _) in services {
        if s.status == ServiceStatus::Inactive {
            continue;
        }
        for item in &s.capacity_provider_strategy {
            used.entry(item.capacity_provider.clone())
                .or_insert_with(|| format!("service {:?}", s.name));
        }
    }
    let tasks = read_all::<TaskRecord>(api.store.as_ref(), &task::cluster_prefix(cluster))?;
    for (_, t, _) in tasks {
        if t.last_status == TaskStatus::Stopped {
            continue;
        }
        if let Some(p) = t.capacity_provider {
            used.entry(p).or_insert_with(|| format!("task {}", t.id));
        }
    }
    Ok(used)
}

/// Makes sure the default cluster exists (at first start).
pub fn ensure_default(store: &dyn Store) -> Result<(), crate::store::StoreError> {
    if store.get(&key(DEFAULT))?.is_some() {
        return Ok(());
    }
    let record = ClusterRecord::new(DEFAULT, now());
    match store.commit(
        &[Condition::Absent(key(DEFAULT))],
        &[Write::Put(key(DEFAULT), record.encode())],
    ) {
        Ok(_) | Err(crate::store::StoreError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The cluster a request names (or the default), which must be ACTIVE.
pub fn active(api: &Api, req: &Value) -> ApiResult<String> {
    let r: InCluster = decode(req)?;
    let name = name_of(r.cluster.as_deref().unwrap_or(DEFAULT));
    load_active(api, &name).map(|_| name)
}

/// A cluster record that is ACTIVE, with its revision, or ClusterNotFound.
pub fn load_active(api: &Api, name: &str) -> ApiResult<(ClusterRecord, i64)> {
    match read::<ClusterRecord>(api.store.as_ref(), &key(name))? {
        Some((c, rev)) if c.status == ClusterStatus::Active => Ok((c, rev)),
        _ => Err(ApiError::cluster_not_found(name)),
    }
}

/// Counts of a cluster's tasks by last status.
fn task_counts(api: &Api, name: &str) -> ApiResult<(u64, u64)> {
    let (mut running, mut pending) = (0, 0);
    for (_, t, _) in read_all::<TaskRecord>(api.store.as_ref(), &task::cluster_prefix(name))? {
        match t.last_status {
            TaskStatus::Running => running += 1,
            TaskStatus::Provisioning | TaskStatus::Pending | TaskStatus::Activating => pending += 1,
            TaskStatus::Deactivating
            | TaskStatus::Stopping
            | TaskStatus::Deprovisioning
            | TaskStatus::Stopped => {}
        }
    }
    Ok((running, pending))
}

/// How many of a cluster's services are ACTIVE or DRAINING.
fn service_count(api: &Api, name: &str) -> ApiResult<u64> {
    let services = read_all::<ServiceRecord>(
        api.store.as_ref(),
        &crate::model::service::cluster_prefix(name),
    )?;
    Ok(services
        .iter()
        .filter(|(_, s, _)| s.status != ServiceStatus::Inactive)
        .count() as u64)
}

fn view(api: &Api, scope: &Scope, record: &ClusterRecord, with_tags: bool) -> ApiResult {
    let name = record.name.as_str();
    let (running, pending) = task_counts(api, name)?;
    let mut out = Map::new();
    out.insert("clusterArn".into(), json!(scope.cluster(name)));
    out.insert("clusterName".into(), json!(name));
    out.insert("status".into(), json!(record.status.as_str()));
    // Every node is a container instance of every cluster.
    let fleet = crate::scheduler::capacity::Fleet::read(api.store.as_ref())?;
    out.insert(
        "registeredContainerInstancesCount".into(),
        json!(fleet
            .members
            .iter()
            .filter(|m| m.status != crate::model::node::InstanceStatus::Inactive)
            .count()),
    );
    out.insert("runningTasksCount".into(), json!(running));
    out.insert("pendingTasksCount".into(), json!(pending));
    out.insert(
        "activeServicesCount".into(),
        json!(service_count(api, name)?),
    );
    out.insert("statistics".into(), json!([]));
    for (f, v) in [
        ("settings", &record.settings),
        ("configuration", &record.configuration),
        ("serviceConnectDefaults", &record.service_connect_defaults),
    ] {
        if let Some(v) = v {
            out.insert(f.into(), v.clone());
        }
    }
    let (providers, strategy) = record.capacity();
    out.insert("capacityProviders".into(), json!(providers));
    out.insert("defaultCapacityProviderStrategy".into(), json!(strategy));
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
    let RequestedCapacity {
        providers,
        strategy,
    } = requested_capacity(req)?;
    // Without its own containerInsights setting a cluster gets the
    // caller's account setting, where one was made.
    let insights = super::account_settings::chosen(api, scope, "containerInsights")?;
    let k = key(&name);
    let record = with_retries(|| {
        let current = read::<ClusterRecord>(api.store.as_ref(), &k)?;
        if let Some((c, _)) = &current {
            if c.status == ClusterStatus::Active {
                return Ok(Ok(c.clone()));
            }
        }
        let mut record = ClusterRecord::new(&name, now());
        echo(&mut record, req);
        if let Some(v) = &insights {
            let settings = record.settings.as_ref().and_then(Value::as_array);
            let has = settings.is_some_and(|l| l.iter().any(|s| s["name"] == "containerInsights"));
            if !has {
                let mut settings = settings.cloned().unwrap_or_default();
                settings.push(json!({"name": "containerInsights", "value": v}));
                record.settings = Some(json!(settings));
            }
        }
        record.capacity_providers.clone_from(&providers);
        record
            .default_capacity_provider_strategy
            .clone_from(&strategy);
        let cond = match &current {
            Some((_, rev)) => Condition::At(k.clone(), *rev),
            None => Condition::Absent(k.clone()),
        };
        let mut writes = vec![Write::Put(k.clone(), record.encode())];
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
        match read::<ClusterRecord>(api.store.as_ref(), &key(&name))? {
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
    for (k, c, _) in read_all::<ClusterRecord>(api.store.as_ref(), PREFIX)? {
        if c.status == ClusterStatus::Active {
            names.push(k.trim_start_matches(PREFIX).to_string());
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
    change: impl Fn(&mut ClusterRecord) -> ApiResult<()>,
) -> ApiResult<ClusterRecord> {
    let k = key(name);
    with_retries(|| {
        let (mut c, rev) = load_active(api, name)?;
        change(&mut c)?;
        Ok(api
            .store
            .commit(
                &[Condition::At(k.clone(), rev)],
                &[Write::Put(k.clone(), c.encode())],
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
        c.status = ClusterStatus::Inactive;
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
        echo(c, req);
        Ok(())
    })?;
    Ok(json!({ "cluster": view(api, scope, &record, false)? }))
}

/// PutClusterCapacityProviders: replaces a cluster's capacity providers
/// and its default strategy (both required; empty lists clear them). A
/// provider that a service's strategy or an unstopped task uses cannot be
/// removed.
pub fn put_capacity_providers(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let name = decode::<ClusterRequest>(req)?.required_cluster()?;
    let RequestedCapacity {
        providers: Some(providers),
        strategy: Some(strategy),
    } = requested_capacity(req)?
    else {
        return Err(ApiError::invalid(
            "capacityProviders and defaultCapacityProviderStrategy are both required (empty lists clear them)",
        ));
    };
    let record = modify_active(api, &name, |c| {
        let (current, _) = c.capacity();
        let in_use = providers_in_use(api, &name)?;
        for p in current.iter().filter(|p| !providers.contains(p)) {
            if let Some(user) = in_use.get(p) {
                return Err(ApiError::new(
                    Kind::ResourceInUse,
                    format!(
                        "The specified capacity provider {p:?} is in use and cannot be removed: {user} uses it (update or delete it first)"
                    ),
                ));
            }
        }
        c.capacity_providers = Some(providers.clone());
        c.default_capacity_provider_strategy = Some(strategy.clone());
        Ok(())
    })?;
    Ok(json!({ "cluster": view(api, scope, &record, false)? }))
}

/// DescribeCapacityProviders: FARGATE and FARGATE_SPOT, which every
/// cluster can use; other names are `failures` with reason MISSING.
pub fn describe_capacity_providers(_api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let names: Option<Vec<String>> = match req.get("capacityProviders").filter(|v| !v.is_null()) {
        Some(v) => Some(crate::model::decode_at(v, "capacityProviders")?),
        None => None,
    };
    let arn = |n: &str| {
        format!(
            "arn:aws:ecs:{}:{}:capacity-provider/{n}",
            scope.region, scope.account
        )
    };
    let view =
        |n: &str| json!({"capacityProviderArn": arn(n), "name": n, "status": "ACTIVE", "tags": []});
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    match names {
        None => found = provider::PROVIDERS.iter().map(|n| view(n)).collect(),
        Some(names) => {
            for reference in names {
                let n = reference.rsplit('/').next().unwrap_or_default();
                if provider::PROVIDERS.contains(&n) {
                    found.push(view(n));
                } else {
                    failures.push(json!({"arn": reference, "reason": "MISSING"}));
                }
            }
        }
    }
    Ok(json!({"capacityProviders": found, "failures": failures}))
}

/// CreateCapacityProvider, UpdateCapacityProvider and
/// DeleteCapacityProvider: skiff's capacity is its nodes, not Auto Scaling
/// groups, so only FARGATE and FARGATE_SPOT exist.
pub fn custom_capacity_provider(_api: &Api, _scope: &Scope, _req: &Value) -> ApiResult {
    Err(ApiError::new(
        Kind::UnsupportedFeature,
        "capacity providers backed by Auto Scaling groups are not supported: skiff's capacity is its nodes; associate FARGATE or FARGATE_SPOT with the cluster (PutClusterCapacityProviders) instead",
    ))
}
