//! Service Connect, as ECS has it: the names a service answers on in a
//! namespace (`serviceConnectConfiguration.services`), and the namespace
//! its own tasks call other services in.
//!
//! ECS runs a proxy beside each task; skiff has none to run. A guest's
//! plain-HTTP request to a name of its namespace is routed by the host
//! itself to a task of the service that serves the name, as the ingress
//! routes (see `agent::connect`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::service::{DeploymentStatus, ServiceStatus};
use super::{decode_at, FieldError};

/// A service's `serviceConnectConfiguration`, validated; only an enabled
/// one is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConnect {
    /// The namespace as given (a name, or a Cloud Map namespace's ARN or
    /// id), or the cluster's default.
    pub namespace: String,
    /// Its name (a Cloud Map namespace's, when an ARN or id named one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The names it answers on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ConnectService>,
    /// The configuration as given, shown back.
    pub given: Value,
}

/// One name a service answers on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectService {
    /// The task definition's port mapping it serves (`portName`).
    pub port_name: String,
    /// Its name in the namespace (`discoveryName`, or `portName`).
    pub discovery_name: String,
    /// The host clients call (`clientAliases[0].dnsName`, or
    /// `DISCOVERYNAME.NAMESPACE`).
    pub dns_name: String,
    /// And its port (`clientAliases[0].port`, or the port mapping's
    /// `containerPort`).
    pub port: u16,
    /// `timeout.perRequestTimeoutSeconds`: how long a caller waits for
    /// the response to begin (0 or none: no bound but the callee's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request_timeout: Option<u32>,
}

/// The names a task may call (`dnsName`, port), each with what it reaches.
pub type Names = BTreeMap<(String, u16), Link>;

/// What calls to a name reach: a service, and how long a caller waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The service's cluster.
    pub cluster: String,
    /// The service.
    pub service: String,
    /// Seconds a caller waits for the response to begin.
    pub per_request_timeout: Option<u32>,
}

impl ConnectService {
    /// The name `self` and `other` would both answer on, if any: the
    /// same `discoveryName`, or the same client alias and port.
    fn shared_name(&self, other: &ConnectService) -> Option<String> {
        if self.discovery_name == other.discovery_name {
            Some(format!("discoveryName {:?}", self.discovery_name))
        } else if (self.dns_name.as_str(), self.port) == (other.dns_name.as_str(), other.port) {
            Some(format!("{}:{}", self.dns_name, self.port))
        } else {
            None
        }
    }
}

impl ServiceConnect {
    /// The namespace's name.
    pub fn namespace_name(&self) -> &str {
        if self.name.is_empty() {
            &self.namespace
        } else {
            &self.name
        }
    }

    /// `serviceConnectConfiguration` as DescribeServices shows it in a
    /// deployment.
    pub fn view(&self) -> Value {
        let mut v = self.given.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("enabled".into(), json!(true));
            o.insert("namespace".into(), json!(self.namespace));
        }
        v
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    enabled: Option<bool>,
    namespace: Option<String>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(rename = "logConfiguration")]
    _log_configuration: Option<Value>,
    #[serde(rename = "accessLogConfiguration")]
    _access_log_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawService {
    port_name: Option<String>,
    discovery_name: Option<String>,
    #[serde(default)]
    client_aliases: Vec<RawAlias>,
    ingress_port_override: Option<i64>,
    timeout: Option<RawTimeout>,
    tls: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlias {
    port: Option<i64>,
    dns_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimeout {
    idle_timeout_seconds: Option<i64>,
    per_request_timeout_seconds: Option<i64>,
}

const FIELD: &str = "serviceConnectConfiguration";

/// Validates a `serviceConnectConfiguration` for a service whose task
/// definition names the ports `ports` (`name`, `containerPort`).
/// `default_namespace` is the cluster's `serviceConnectDefaults`;
/// `resolve` gives a namespace's name (a name is its own; a Cloud Map
/// namespace's ARN or id, that namespace's name) or says why it has none.
/// `None` when it is not enabled.
pub fn parse(
    v: &Value,
    ports: &[(String, u16)],
    default_namespace: Option<&str>,
    resolve: &dyn Fn(&str) -> Result<String, NamespaceError>,
) -> Result<Option<ServiceConnect>, FieldError> {
    let raw: Raw = decode_at(v, FIELD)?;
    match raw.enabled {
        None => {
            return Err(FieldError::new(
                format!("{FIELD}.enabled"),
                "required: true to join a namespace, false to leave it",
            ))
        }
        Some(false) => return Ok(None),
        Some(true) => {}
    }
    let (namespace, ns_name) = namespace(raw.namespace, default_namespace, resolve)?;
    // Default names are DNS names: lowercase.
    let ns_dns = ns_name.to_ascii_lowercase();
    let mut services: Vec<ConnectService> = Vec::with_capacity(raw.services.len());
    for (i, s) in raw.services.into_iter().enumerate() {
        let here = service(i, s, ports, &ns_dns)?;
        if let Some(j) = services.iter().position(|o| here.shared_name(o).is_some()) {
            return Err(FieldError::new(
                format!("{FIELD}.services[{i}]"),
                format!("its discoveryName or client alias is services[{j}]'s too: each must be unique in the namespace"),
            ));
        }
        services.push(here);
    }
    let mut given = v.clone();
    if let Some(o) = given.as_object_mut() {
        o.remove("enabled");
        o.remove("namespace");
    }
    Ok(Some(ServiceConnect {
        name: if ns_name == namespace {
            String::new()
        } else {
            ns_name
        },
        namespace,
        services,
        given,
    }))
}

/// Why a Service Connect namespace names no namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// An ARN, but not a Cloud Map namespace's.
    #[error("{0:?} is not a Cloud Map namespace ARN (arn:aws:servicediscovery:REGION:ACCOUNT:namespace/ID); give the ARN or the namespace's name")]
    NotAnArn(String),
    /// A Cloud Map namespace's ARN, of none that exists.
    #[error("no Cloud Map namespace {id} ({arn}): create it with servicediscovery CreateHttpNamespace, or give a namespace name")]
    NoSuch { id: String, arn: String },
    /// The namespaces could not be read (the store's message).
    #[error("{0}")]
    Unreadable(String),
}

/// The namespace given (or the cluster's default) and its name
/// (`resolve` reads a Cloud Map namespace's ARN or id).
fn namespace(
    given: Option<String>,
    default_namespace: Option<&str>,
    resolve: &dyn Fn(&str) -> Result<String, NamespaceError>,
) -> Result<(String, String), FieldError> {
    let namespace = match given.filter(|n| !n.trim().is_empty()) {
        Some(n) => n,
        None => default_namespace
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                FieldError::new(
                    format!("{FIELD}.namespace"),
                    "required: the cluster has no serviceConnectDefaults.namespace to use",
                )
            })?,
    };
    if namespace.len() > 1024 {
        return Err(FieldError::new(
            format!("{FIELD}.namespace"),
            "must be a namespace name or a Cloud Map namespace ARN, at most 1024 characters",
        ));
    }
    let name = resolve(&namespace)
        .map_err(|why| FieldError::new(format!("{FIELD}.namespace"), why.to_string()))?;
    Ok((namespace, name))
}

/// `services[i]`: the port it names (one of `ports`), its discovery name,
/// its client alias (the name and port callers use; by default
/// DISCOVERYNAME.NAMESPACE and the container's port) and its timeout.
fn service(
    i: usize,
    s: RawService,
    ports: &[(String, u16)],
    ns_dns: &str,
) -> Result<ConnectService, FieldError> {
    let at = |f: &str| format!("{FIELD}.services[{i}].{f}");
    let port_name = s.port_name.ok_or_else(|| {
        FieldError::new(
            at("portName"),
            "required: the name of one of the task definition's portMappings",
        )
    })?;
    let Some(&(_, container_port)) = ports.iter().find(|(n, _)| *n == port_name) else {
        let names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
        return Err(FieldError::new(
            at("portName"),
            if names.is_empty() {
                format!("{port_name:?} names no port mapping: the task definition's portMappings have no name")
            } else {
                format!(
                    "{port_name:?} names no port mapping of the task definition; it has {}",
                    names.join(", ")
                )
            },
        ));
    };
    let discovery_name = s.discovery_name.unwrap_or_else(|| port_name.clone());
    if !super::taskdef::valid_port_name(&discovery_name) {
        return Err(FieldError::new(
            at("discoveryName"),
            format!("must be 1 to 64 lowercase letters, digits, '_' and '-', not starting with '-', got {discovery_name:?}"),
        ));
    }
    if s.client_aliases.len() > 1 {
        return Err(FieldError::new(
            at("clientAliases"),
            format!(
                "at most 1 client alias per service, got {}",
                s.client_aliases.len()
            ),
        ));
    }
    let (dns_name, port) = match s.client_aliases.into_iter().next() {
        None => (format!("{discovery_name}.{ns_dns}"), container_port),
        Some(a) => {
            let port = match a.port {
                Some(p) if (1..=65535).contains(&p) => p as u16,
                other => {
                    return Err(FieldError::new(
                        at("clientAliases[0].port"),
                        format!(
                            "required, between 1 and 65535, got {}",
                            other.map_or("nothing".into(), |n| n.to_string())
                        ),
                    ))
                }
            };
            let dns = a
                .dns_name
                .unwrap_or_else(|| format!("{discovery_name}.{ns_dns}"));
            (dns, port)
        }
    };
    if !valid_dns_name(&dns_name) {
        return Err(FieldError::new(
            at("clientAliases[0].dnsName"),
            format!("must be 1 to 127 lowercase letters, digits, '_', '-' and '.', not starting with '-' or '.', got {dns_name:?}"),
        ));
    }
    if let Some(p) = s.ingress_port_override {
        if !(1..=65535).contains(&p) {
            return Err(FieldError::new(
                at("ingressPortOverride"),
                format!("must be between 1 and 65535, got {p}"),
            ));
        }
    }
    if s.tls.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(FieldError::new(
            at("tls"),
            "not supported: calls between services stay inside skiff's process (or its nodes' peer links); remove tls",
        ));
    }
    Ok(ConnectService {
        port_name,
        discovery_name,
        dns_name,
        port,
        per_request_timeout: timeout(&at, s.timeout)?,
    })
}

/// A service's `timeout`: both bounds in range; the per-request one, when
/// it is set and not 0, is kept.
fn timeout(at: &dyn Fn(&str) -> String, t: Option<RawTimeout>) -> Result<Option<u32>, FieldError> {
    let Some(t) = t else {
        return Ok(None);
    };
    for (name, value) in [
        ("idleTimeoutSeconds", t.idle_timeout_seconds),
        ("perRequestTimeoutSeconds", t.per_request_timeout_seconds),
    ] {
        if value.is_some_and(|n| !(0..=2_147_483_647).contains(&n)) {
            return Err(FieldError::new(
                at(&format!("timeout.{name}")),
                "must be between 0 and 2147483647",
            ));
        }
    }
    Ok(t.per_request_timeout_seconds
        .filter(|n| *n > 0)
        .map(|n| n as u32))
}

/// Whether `name` may be a client alias's `dnsName`.
fn valid_dns_name(name: &str) -> bool {
    (1..=127).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// An ACTIVE service with a Service Connect configuration (its primary
/// deployment's): all of a service record that Service Connect reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its cluster.
    pub cluster: String,
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: ServiceConnect,
}

impl Member {
    /// The member a stored service record (`services/CLUSTER/NAME`) is:
    /// `None` when the service is not ACTIVE, has no configuration, or
    /// does not parse. The rest of the record (its events, most of it) is
    /// skipped, not built.
    pub fn from_record(bytes: &[u8]) -> Option<Member> {
        #[derive(Deserialize)]
        struct Record {
            name: String,
            cluster: String,
            status: ServiceStatus,
            #[serde(default)]
            deployments: Vec<Deployment>,
        }
        #[derive(Deserialize)]
        struct Deployment {
            status: DeploymentStatus,
            #[serde(default)]
            service_connect: Option<ServiceConnect>,
        }
        let r: Record = serde_json::from_slice(bytes).ok()?;
        if r.status != ServiceStatus::Active {
            return None;
        }
        // The primary deployment's, as `ServiceRecord::service_connect`.
        let config = r
            .deployments
            .into_iter()
            .find(|d| d.status == DeploymentStatus::Primary)?
            .service_connect?;
        Some(Member {
            cluster: r.cluster,
            name: r.name,
            config,
        })
    }
}

/// Where `config`'s names clash with another service of the same
/// namespace among `members` (every member, any cluster): the field and
/// what to do.
pub fn clash<'a>(
    config: &ServiceConnect,
    me: (&str, &str),
    members: impl IntoIterator<Item = &'a Member>,
) -> Option<FieldError> {
    for other in members {
        if (other.cluster.as_str(), other.name.as_str()) == me {
            continue;
        }
        let theirs = &other.config;
        if theirs.namespace_name() != config.namespace_name() {
            continue;
        }
        for (i, s) in config.services.iter().enumerate() {
            for t in &theirs.services {
                let Some(what) = s.shared_name(t) else {
                    continue;
                };
                return Some(FieldError::new(
                    format!("{FIELD}.services[{i}]"),
                    format!(
                        "{what} is already served in namespace {:?} by service {:?} of cluster {:?}: each name must be unique in the namespace",
                        config.namespace_name(),
                        other.name,
                        other.cluster
                    ),
                ));
            }
        }
    }
    None
}

/// The names a task of a service in namespace `namespace` may call, and
/// what each reaches: every member's names in that namespace, in any
/// cluster.
pub fn links<'a>(namespace: &str, members: impl IntoIterator<Item = &'a Member>) -> Names {
    let mut out = BTreeMap::new();
    for s in members {
        let sc = &s.config;
        if sc.namespace_name() != namespace {
            continue;
        }
        for e in &sc.services {
            out.entry((e.dns_name.clone(), e.port))
                .or_insert_with(|| Link {
                    cluster: s.cluster.clone(),
                    service: s.name.clone(),
                    per_request_timeout: e.per_request_timeout,
                });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<(String, u16)> {
        vec![("web".into(), 8080), ("admin".into(), 9090)]
    }

    /// Names are their own; one Cloud Map namespace, `ns-abc`, is `Shop`.
    fn resolve(ns: &str) -> Result<String, NamespaceError> {
        match ns {
            "ns-abc" | "arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-abc" => {
                Ok("Shop".into())
            }
            n if n.starts_with("arn:") || n.starts_with("ns-") => Err(NamespaceError::NoSuch {
                id: n.into(),
                arn: n.into(),
            }),
            n => Ok(n.into()),
        }
    }

    fn parse(
        v: &Value,
        ports: &[(String, u16)],
        default: Option<&str>,
    ) -> Result<Option<ServiceConnect>, FieldError> {
        super::parse(v, ports, default, &resolve)
    }

    /// A member is read from a stored service record: its primary
    /// deployment's configuration, the rest of the record skipped; a
    /// service that is not ACTIVE, or has none, is no member.
    #[test]
    fn members_are_read_from_the_primary_deployment_of_active_services() {
        let sc = |alias: &str| {
            let v = json!({"enabled": true, "namespace": "shop", "services": [
                {"portName": "web", "clientAliases": [{"port": 80, "dnsName": alias}]}]});
            parse(&v, &ports(), None).unwrap().unwrap()
        };
        let record = |status: &str, deployments: Value| {
            serde_json::to_vec(&json!({
                "name": "api", "cluster": "prod", "status": status, "desiredCount": 2,
                "events": [{"id": "e1", "createdAt": 1.0, "message": "has reached a steady state."}],
                "deployments": deployments,
            }))
            .unwrap()
        };
        let deployments = json!([
            {"id": "ecs-svc/2", "status": "PRIMARY", "taskDefinition": "x", "service_connect": sc("new")},
            {"id": "ecs-svc/1", "status": "ACTIVE", "service_connect": sc("old")},
        ]);
        let m = Member::from_record(&record("ACTIVE", deployments.clone())).unwrap();
        assert_eq!((m.cluster.as_str(), m.name.as_str()), ("prod", "api"));
        assert_eq!(m.config, sc("new"));
        let names = links("shop", [&m]);
        assert_eq!(names.keys().collect::<Vec<_>>(), [&("new".to_string(), 80)]);
        assert_eq!(Member::from_record(&record("DRAINING", deployments)), None);
        let without = json!([{"id": "ecs-svc/3", "status": "PRIMARY"}]);
        assert_eq!(Member::from_record(&record("ACTIVE", without)), None);
        assert_eq!(Member::from_record(b"{not json"), None);
    }

    #[test]
    fn defaults_follow_ecs() {
        let v = json!({"enabled": true, "namespace": "shop", "services": [
            {"portName": "web"},
            {"portName": "admin", "discoveryName": "ops", "clientAliases": [{"port": 80, "dnsName": "ops"}]},
        ]});
        let sc = parse(&v, &ports(), None).unwrap().unwrap();
        assert_eq!(sc.namespace, "shop");
        let names: Vec<(&str, &str, u16)> = sc
            .services
            .iter()
            .map(|s| (s.discovery_name.as_str(), s.dns_name.as_str(), s.port))
            .collect();
        assert_eq!(names, [("web", "web.shop", 8080), ("ops", "ops", 80)]);
        // The view is what was given, enabled and with its namespace.
        assert_eq!(sc.view()["services"][0], json!({"portName": "web"}));
        assert_eq!(sc.view()["enabled"], json!(true));
        // The cluster's default namespace; a Cloud Map namespace's ARN
        // names it by its name (lowercase in default DNS names).
        let arn = "arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-abc";
        let v = json!({"enabled": true, "services": [{"portName": "web"}]});
        let sc = parse(&v, &ports(), Some(arn)).unwrap().unwrap();
        assert_eq!((sc.namespace.as_str(), sc.namespace_name()), (arn, "Shop"));
        assert_eq!(sc.services[0].dns_name, "web.shop");
        let e = parse(
            &json!({"enabled": true, "namespace": "ns-zzz"}),
            &ports(),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (
                "serviceConnectConfiguration.namespace",
                "no Cloud Map namespace ns-zzz (ns-zzz): create it with servicediscovery CreateHttpNamespace, or give a namespace name"
            )
        );
        assert!(
            parse(&json!({"enabled": false, "services": [{}]}), &ports(), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_configurations_name_their_field() {
        let bad = |v: Value, default: Option<&str>| parse(&v, &ports(), default).unwrap_err();
        assert_eq!(
            bad(json!({}), None).field,
            "serviceConnectConfiguration.enabled"
        );
        let e = bad(json!({"enabled": true}), None);
        assert_eq!(e.field, "serviceConnectConfiguration.namespace");
        assert!(e.message.contains("serviceConnectDefaults"), "{e}");
        let e = bad(
            json!({"enabled": true, "services": [{"portName": "db"}]}),
            Some("shop"),
        );
        assert_eq!(e.field, "serviceConnectConfiguration.services[0].portName");
        assert!(e.message.contains("web, admin"), "{e}");
        let e = bad(
            json!({"enabled": true, "services": [{"portName": "web", "clientAliases": [{"dnsName": "x"}]}]}),
            Some("shop"),
        );
        assert_eq!(
            e.field,
            "serviceConnectConfiguration.services[0].clientAliases[0].port"
        );
        let e = bad(
            json!({"enabled": true, "services": [{"portName": "web", "clientAliases": [{"port": 80, "dnsName": "Web"}]}]}),
            Some("shop"),
        );
        assert_eq!(
            e.field,
            "serviceConnectConfiguration.services[0].clientAliases[0].dnsName"
        );
        let e = bad(
            json!({"enabled": true, "services": [{"portName": "web"}, {"portName": "web"}]}),
            Some("shop"),
        );
        assert_eq!(e.field, "serviceConnectConfiguration.services[1]");
        let e = bad(
            json!({"enabled": true, "services": [{"portName": "web", "tls": {"roleArn": "x"}}]}),
            Some("shop"),
        );
        assert_eq!(e.field, "serviceConnectConfiguration.services[0].tls");
        let e = bad(json!({"enabled": "yes"}), None);
        assert_eq!(e.field, "serviceConnectConfiguration.enabled");
    }
}
