//! Service Connect: a service's `serviceConnectConfiguration`, checked
//! against its task definition, its cluster's default namespace and the
//! other services of the namespace; and ListServicesByNamespace.
//!
//! Two services must never answer the same name. The check reads every
//! service, so it is made again inside the transaction that stores a new
//! configuration, against the namespace's guard: a record
//! (`connect/namespaces/NAME`) read before the services and rewritten by
//! every commit that gives a service a configuration in the namespace (and
//! by DeleteNamespace). Of two commits that checked the same services, the
//! second finds the guard moved and is checked again.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{clusters, decode, page, Api};
use crate::model::arn::Scope;
use crate::model::cluster::ClusterRecord;
use crate::model::connect::NamespaceError;
use crate::model::connect::{self, ServiceConnect};
use crate::model::taskdef::TaskDefinition;
use crate::store::{Condition, Store, Write};

/// The validated `serviceConnectConfiguration` `given` for a service of
/// `cluster` running `td`: `None` when it is not enabled. Whether its
/// names are another service's is checked by [`claim`], in the commit
/// that stores it.
pub(super) fn config_for(
    api: &Api,
    cluster: &str,
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
        crate::store::records::read::<ClusterRecord>(api.store.as_ref(), &clusters::key(cluster))?
            .and_then(|(c, _)| c.default_namespace());
    // ECS answers InvalidParameterException to a bad configuration.
    let resolve = |ns: &str| super::cloudmap::resolve(api, ns);
    connect::parse(given, &ports, default_namespace.as_deref(), &resolve)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// The key of namespace `name`'s guard.
fn guard_key(name: &str) -> String {
    format!("connect/namespaces/{name}")
}

/// Namespace `name`'s guard as it is now: the condition that it is still
/// so at commit, and the write that moves it. Read it before whatever the
/// commit was checked against.
pub(super) fn guard(store: &dyn Store, name: &str) -> ApiResult<(Condition, Write)> {
    let key = guard_key(name);
    let condition = match store.get(&key)? {
        Some(r) => Condition::At(key.clone(), r.mod_revision),
        None => Condition::Absent(key.clone()),
    };
    let value = serde_json::to_vec(&json!({ "namespace": name })).unwrap_or_default();
    Ok((condition, Write::Put(key, value)))
}

/// What a commit that gives service `me` (cluster, name) the
/// configuration `sc` must also require and write: the namespace's guard,
/// read now, after which the namespace is resolved and the names checked
/// against every other service again. Call it in the same attempt as the
/// commit (retried on a conflict).
pub(super) fn claim(
    api: &Api,
    sc: &ServiceConnect,
    me: (&str, &str),
) -> ApiResult<(Condition, Write)> {
    let name = sc.namespace_name();
    let guarded = guard(api.store.as_ref(), name)?;
    // A Cloud Map namespace the configuration named by its ARN or id
    // must still be there (DeleteNamespace moves the guard too).
    if sc.namespace != name {
        match super::cloudmap::resolve(api, &sc.namespace) {
            Ok(now) if now == name => {}
            Err(NamespaceError::Unreadable(why)) => {
                return Err(ApiError::new(super::error::Kind::Server, why))
            }
            Ok(_) | Err(_) => {
                return Err(ApiError::invalid(format!(
                    "serviceConnectConfiguration.namespace: the Cloud Map namespace {:?} ({name}) was deleted; create it again or name another",
                    sc.namespace
                )))
            }
        }
    }
    let others = crate::store::records::connect_members(api.store.as_ref())?;
    if let Some(e) = connect::clash(sc, me, &others) {
        return Err(ApiError::invalid(e.to_string()));
    }
    Ok(guarded)
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
    let wanted = super::cloudmap::resolve(api, &namespace).map_err(|why| match why {
        NamespaceError::Unreadable(why) => ApiError::new(super::error::Kind::Server, why),
        why => ApiError::new(
            super::error::Kind::EcsNamespaceNotFound,
            format!("namespace: {why}"),
        ),
    })?;
    let mut arns: Vec<String> = crate::store::records::connect_members(api.store.as_ref())?
        .iter()
        .filter(|m| m.config.namespace_name() == wanted.as_str())
        .map(|m| scope.service(&m.cluster, &m.name))
        .collect();
    arns.sort();
    let (arns, next) = page::page(arns, |a| a.clone(), after.as_deref(), max);
    let mut out = json!({ "serviceArns": arns });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, Weak};

    use serde_json::{json, Value};

    use super::super::error::{ApiResult, Kind};
    use super::super::{call, Api, ECS_TARGET};
    use crate::model::arn::Scope;
    use crate::store::hooked::Hooked;
    use crate::store::SqliteStore;

    type Hook = Box<dyn FnOnce() + Send>;

    /// A hook to run just before the first commit writing a key with a
    /// given prefix: another writer landing between a check and the
    /// commit it was made for.
    type Slot = Arc<Mutex<Option<(String, Hook)>>>;

    struct Fixture {
        _dir: tempfile::TempDir,
        hook: Slot,
        api: Arc<Api>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let hook: Slot = Default::default();
        let slot = hook.clone();
        let store = Hooked::new(Arc::new(
            SqliteStore::open(&dir.path().join("store.db")).unwrap(),
        ))
        .before_commit(move |_, writes| {
            let due = {
                let mut hook = slot.lock().unwrap();
                match hook.as_ref() {
                    Some((prefix, _)) if writes.iter().any(|w| w.key().starts_with(prefix)) => {
                        hook.take().map(|(_, run)| run)
                    }
                    _ => None,
                }
            };
            if let Some(run) = due {
                run();
            }
            Ok(())
        });
        let api = Arc::new(Api {
            store: Arc::new(store),
            account: "000000000000".into(),
            default_region: "us-east-1".into(),
            logs_dir: dir.path().join("logs"),
            metrics: Default::default(),
            keys: None,
            host_roots: None,
            node: "node-1".into(),
            peer_secret: Vec::new(),
            blobs: None,
            registry: None,
        });
        let f = Fixture {
            _dir: dir,
            hook,
            api,
        };
        f.ecs("CreateCluster", json!({"clusterName": "default"}))
            .unwrap();
        f.ecs(
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [{
                "name": "web", "image": "/nowhere/web.wasm", "memory": 32,
                "portMappings": [{"name": "api", "containerPort": 8080}]}]}),
        )
        .unwrap();
        f
    }

    impl Fixture {
        fn ecs(&self, action: &str, body: Value) -> ApiResult {
            send(&self.api, &format!("{ECS_TARGET}.{action}"), body)
        }

        fn cloudmap(&self, action: &str, body: Value) -> ApiResult {
            send(
                &self.api,
                &format!("{}.{action}", super::super::cloudmap::TARGET),
                body,
            )
        }

        /// Runs `action` with `body` (by the API, as another client) just
        /// before the first commit that writes a key under `prefix`.
        fn before_commit_to(
            &self,
            prefix: &str,
            target: String,
            body: Value,
        ) -> Arc<Mutex<Option<ApiResult>>> {
            let out = Arc::new(Mutex::new(None));
            let api: Weak<Api> = Arc::downgrade(&self.api);
            let answer = out.clone();
            *self.hook.lock().unwrap() = Some((
                prefix.to_string(),
                Box::new(move || {
                    let api = api.upgrade().unwrap();
                    *answer.lock().unwrap() = Some(send(&api, &target, body));
                }),
            ));
            out
        }
    }

    fn send(api: &Api, target: &str, body: Value) -> ApiResult {
        let scope = Scope {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            user: None,
        };
        call(
            api,
            &scope,
            target,
            &serde_json::to_vec(&body).unwrap(),
            None,
        )
    }

    fn create(name: &str, namespace: &str) -> Value {
        json!({"serviceName": name, "taskDefinition": "web", "desiredCount": 0,
               "serviceConnectConfiguration": {"enabled": true, "namespace": namespace,
                   "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "db"}]}]}})
    }

    /// Another service takes the name between CreateService's check and
    /// its commit: the commit finds the namespace's guard moved, checks
    /// again, and refuses the name, naming the service that has it.
    #[test]
    fn a_name_taken_after_the_check_is_still_refused() {
        let f = fixture();
        let rival = f.before_commit_to(
            "services/default/second",
            format!("{ECS_TARGET}.CreateService"),
            create("first", "shop"),
        );
        let e = f
            .ecs("CreateService", create("second", "shop"))
            .unwrap_err();
        assert!(rival.lock().unwrap().take().unwrap().is_ok());
        assert_eq!(e.kind, Kind::InvalidParameter);
        assert!(
            e.message
                .contains("already served in namespace \"shop\" by service \"first\""),
            "{}",
            e.message
        );
        let listed = f
            .ecs("ListServicesByNamespace", json!({"namespace": "shop"}))
            .unwrap();
        assert_eq!(
            listed["serviceArns"].as_array().unwrap().len(),
            1,
            "{listed}"
        );
        // The same by UpdateService: a service moving into the name.
        f.ecs("CreateService", create("third", "elsewhere"))
            .unwrap();
        let rival = f.before_commit_to(
            "services/default/third",
            format!("{ECS_TARGET}.CreateService"),
            create("fourth", "market"),
        );
        let e = f
            .ecs(
                "UpdateService",
                json!({"service": "third", "serviceConnectConfiguration":
                       create("", "market")["serviceConnectConfiguration"]}),
            )
            .unwrap_err();
        assert!(rival.lock().unwrap().take().unwrap().is_ok());
        assert!(e.message.contains("by service \"fourth\""), "{}", e.message);
    }

    /// A Cloud Map namespace deleted between CreateService's check of its
    /// ARN and the commit, or a service moving into a namespace between
    /// DeleteNamespace's check and its commit: neither leaves a service
    /// in a namespace that is gone.
    #[test]
    fn a_namespace_is_not_deleted_under_a_service_joining_it() {
        let f = fixture();
        f.cloudmap("CreateHttpNamespace", json!({"Name": "shop"}))
            .unwrap();
        let listed = f.cloudmap("ListNamespaces", json!({})).unwrap();
        let ns = &listed["Namespaces"][0];
        let (id, arn) = (ns["Id"].as_str().unwrap(), ns["Arn"].as_str().unwrap());

        let deleted = f.before_commit_to(
            "services/default/first",
            format!("{}.DeleteNamespace", super::super::cloudmap::TARGET),
            json!({"Id": id}),
        );
        let e = f.ecs("CreateService", create("first", arn)).unwrap_err();
        assert!(deleted.lock().unwrap().take().unwrap().is_ok());
        assert!(e.message.contains("was deleted"), "{}", e.message);

        f.cloudmap("CreateHttpNamespace", json!({"Name": "market"}))
            .unwrap();
        let listed = f.cloudmap("ListNamespaces", json!({})).unwrap();
        let id = listed["Namespaces"][0]["Id"].as_str().unwrap().to_string();
        let joined = f.before_commit_to(
            &format!("cloudmap/namespaces/{id}"),
            format!("{ECS_TARGET}.CreateService"),
            create("second", "market"),
        );
        let e = f
            .cloudmap("DeleteNamespace", json!({"Id": id}))
            .unwrap_err();
        assert!(joined.lock().unwrap().take().unwrap().is_ok());
        assert_eq!(e.kind, Kind::CloudMapResourceInUse, "{}", e.message);
        assert!(e.message.contains("service \"second\""), "{}", e.message);
    }
}
