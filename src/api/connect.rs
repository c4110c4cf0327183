//! Service Connect: a service's `serviceConnectConfiguration`, checked
//! against its task definition, its cluster's default namespace and the
//! other services of the namespace; and ListServicesByNamespace.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{clusters, decode, get_json, page, Api};
use crate::model::arn::Scope;
use crate::model::connect::{self, ServiceConnect};
use crate::model::service::{ServiceRecord, ServiceStatus};
use crate::model::taskdef::TaskDefinition;

/// The validated `serviceConnectConfiguration` `given` for service
/// `name` of `cluster` running `td`: `None` when it is not enabled. Its
/// names must not be another service's in the namespace.
pub(super) fn config_for(
    api: &Api,
    cluster: &str,
    name: &str,
    given: &Value,
    td: &TaskDefinition,
) -> ApiResult<Option<ServiceConnect>> {
    let ports: Vec<(String, u16)> = td
        .containers
        .iter()
        .flat_map(|c| &c.port_mappings)
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect();
    let default_namespace =
        get_json(api.store.as_ref(), &clusters::key(cluster))?.and_then(|(c, _)| {
            c["serviceConnectDefaults"]["namespace"]
                .as_str()
                .map(str::to_string)
        });
    // ECS answers InvalidParameterException to a bad configuration.
    let resolve = |ns: &str| super::cloudmap::resolve(api, ns);
    let Some(sc) = connect::parse(given, &ports, default_namespace.as_deref(), &resolve)
        .map_err(|e| ApiError::invalid(e.to_string()))?
    else {
        return Ok(None);
    };
    let others = crate::agent::connect::all_services(api.store.as_ref())?;
    if let Some(e) = connect::clash(&sc, (cluster, name), &others) {
        return Err(ApiError::invalid(e.to_string()));
    }
    Ok(Some(sc))
}

#[derive(Deserialize)]
struct ByNamespace {
    namespace: Option<String>,
}

/// ListServicesByNamespace: the ARNs of the ACTIVE services, in any
/// cluster, whose Service Connect configuration is in the namespace.
pub fn list_services_by_namespace(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let max = page::max_results(req, 10)?;
    let after = page::after(req)?;
    let r: ByNamespace = decode(req)?;
    let namespace = r
        .namespace
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("namespace is required: a namespace name or ARN"))?;
    let wanted = super::cloudmap::resolve(api, &namespace).map_err(|why| {
        ApiError::new(
            super::error::Kind::EcsNamespaceNotFound,
            format!("namespace: {why}"),
        )
    })?;
    let mut arns: Vec<String> = crate::agent::connect::all_services(api.store.as_ref())?
        .iter()
        .filter(|s| s.status == ServiceStatus::Active)
        .filter(|s: &&ServiceRecord| {
            s.service_connect()
                .is_some_and(|sc| sc.namespace_name() == wanted.as_str())
        })
        .map(|s| scope.service(&s.cluster, &s.name))
        .collect();
    arns.sort();
    let (arns, next) = page::page(arns, |a| a.clone(), after.as_deref(), max);
    let mut out = json!({ "serviceArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}
