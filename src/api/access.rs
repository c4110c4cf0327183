//! What a call acts on, for the caller's policy: the IAM action
//! (`ecs:RunTask`, `logs:GetLogEvents`) and the resources it touches.
//!
//! Calls inside a cluster (tasks, services, the cluster itself) act on the
//! cluster's ARN (the request's `cluster`, and the cluster of every task,
//! service or deployment ARN it names), so that `"Resource": "arn:aws:ecs:*:*:cluster/prod"`
//! grants everything in `prod` and nothing elsewhere; DescribeClusters
//! acts on each cluster it names. Task definitions and ListClusters act on
//! no particular resource (`*`), as in ECS. Tag calls act on the tagged
//! resource's cluster, or on the task definition's ARN. CloudWatch Logs
//! calls act on `arn:aws:logs:REGION:ACCOUNT:log-group:GROUP` (and
//! `...:log-stream:STREAM` for GetLogEvents).

use serde_json::Value;

use super::clusters::DEFAULT as DEFAULT_CLUSTER;
use crate::model::arn::{self, Scope};

fn cluster_arn(scope: &Scope, reference: Option<&str>) -> String {
    scope.cluster(&super::clusters::name_of(
        reference.unwrap_or(DEFAULT_CLUSTER),
    ))
}

/// The resources `action` (its ECS or Logs name) acts on. Fields of the
/// wrong type are left to the action to refuse; here they count as absent.
pub fn ecs_resources(scope: &Scope, action: &str, req: &Value) -> Vec<String> {
    let s = |name: &str| req.get(name).and_then(Value::as_str);
    match action {
        "ListClusters"
        | "RegisterTaskDefinition"
        | "DescribeTaskDefinition"
        | "ListTaskDefinitions"
        | "ListTaskDefinitionFamilies"
        | "DeregisterTaskDefinition"
        | "DeleteTaskDefinitions"
        | "DescribeCapacityProviders"
        | "CreateCapacityProvider"
        | "UpdateCapacityProvider"
        | "DeleteCapacityProvider"
        | "PutAccountSetting"
        | "PutAccountSettingDefault"
        | "DeleteAccountSetting"
        | "ListAccountSettings"
        | "ListServicesByNamespace" => {
            vec!["*".into()]
        }
        "CreateCluster" => vec![cluster_arn(scope, s("clusterName"))],
        "DescribeClusters" => match req.get("clusters").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|c| cluster_arn(scope, c.as_str()))
                .collect(),
            _ => vec![cluster_arn(scope, None)],
        },
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            let target = s("resourceArn").unwrap_or("");
            match arn::parse(target) {
                Some(a) if a.kind == "task-definition" => vec![target.to_string()],
                Some(a) if a.kind == "cluster" => vec![cluster_arn(scope, Some(&a.resource))],
                Some(a) => {
                    // task/CLUSTER/ID, service/CLUSTER/NAME
                    let cluster = a.resource.split('/').next().unwrap_or(DEFAULT_CLUSTER);
                    vec![cluster_arn(scope, Some(cluster))]
                }
                None => vec![target.to_string()],
            }
        }
        _ => {
            // The request's cluster, and the clusters of any task, service,
            // deployment or container-instance ARNs it names (each names
            // its own cluster).
            // Calls that name their deployments or revisions by ARN alone
            // have no `cluster`: they act on the ARNs' clusters only.
            let by_arn_only = matches!(
                action,
                "DescribeServiceDeployments" | "StopServiceDeployment" | "DescribeServiceRevisions"
            );
            let mut out = if by_arn_only && s("cluster").is_none() {
                vec![]
            } else {
                vec![cluster_arn(scope, s("cluster"))]
            };
            for field in [
                "task",
                "tasks",
                "service",
                "services",
                "serviceDeploymentArns",
                "serviceDeploymentArn",
                "serviceRevisionArns",
                "containerInstance",
                "containerInstances",
            ] {
                let refs: Vec<&str> = match req.get(field) {
                    Some(Value::String(r)) => vec![r.as_str()],
                    Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                    _ => continue,
                };
                for r in refs {
                    if let Some(a) = arn::parse(r) {
                        if let Some((cluster, _)) = a.resource.split_once('/') {
                            let c = cluster_arn(scope, Some(cluster));
                            if !out.contains(&c) {
                                out.push(c);
                            }
                        }
                    }
                }
            }
            // A call is never checked against no resource at all.
            if out.is_empty() {
                out.push(cluster_arn(scope, None));
            }
            out
        }
    }
}

/// The resources a CloudWatch Logs action acts on.
pub fn logs_resources(scope: &Scope, action: &str, req: &Value) -> Vec<String> {
    let s = |name: &str| req.get(name).and_then(Value::as_str);
    // The tag calls name their group by ARN.
    let by_arn = s("resourceArn")
        .and_then(|a| a.split_once(":log-group:"))
        .map(|(_, g)| g.trim_end_matches(":*"));
    let group = s("logGroupName").or(s("logGroupIdentifier")).or(by_arn);
    match (action, group) {
        ("DescribeLogGroups", _) | (_, None) => vec!["*".into()],
        ("GetLogEvents", Some(g)) => vec![format!(
            "arn:aws:logs:{}:{}:log-group:{g}:log-stream:{}",
            scope.region,
            scope.account,
            s("logStreamName").unwrap_or("")
        )],
        (_, Some(g)) => vec![format!(
            "arn:aws:logs:{}:{}:log-group:{g}",
            scope.region, scope.account
        )],
    }
}

/// The resource of `GET /logs/CLUSTER/TASK` (action `logs:GetLogEvents`).
pub fn task_logs_resource(scope: &Scope, cluster: &str) -> String {
    cluster_arn(scope, Some(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_act_on_their_clusters() {
        let scope = Scope::new("eu-west-1", "1");
        let prod = "arn:aws:ecs:eu-west-1:1:cluster/prod";
        let default = "arn:aws:ecs:eu-west-1:1:cluster/default";
        assert_eq!(
            ecs_resources(&scope, "RunTask", &json!({"cluster": "prod"})),
            [prod]
        );
        assert_eq!(
            ecs_resources(&scope, "RunTask", &json!({"cluster": prod})),
            [prod]
        );
        assert_eq!(ecs_resources(&scope, "ListTasks", &json!({})), [default]);
        // An ARN names its own cluster, whatever `cluster` says.
        assert_eq!(
            ecs_resources(
                &scope,
                "StopTask",
                &json!({"cluster": "prod", "task": "arn:aws:ecs:eu-west-1:1:task/default/abc"})
            ),
            [prod, default]
        );
        assert_eq!(
            ecs_resources(
                &scope,
                "DescribeServices",
                &json!({"cluster": "prod", "services": ["web", "arn:aws:ecs:eu-west-1:1:service/prod/api"]})
            ),
            [prod]
        );
        // Deployments and revisions named by ARN act on their clusters.
        assert_eq!(
            ecs_resources(
                &scope,
                "StopServiceDeployment",
                &json!({"serviceDeploymentArn": "arn:aws:ecs:eu-west-1:1:service-deployment/prod/web/123"})
            ),
            [prod]
        );
        assert_eq!(
            ecs_resources(
                &scope,
                "DescribeServiceRevisions",
                &json!({"serviceRevisionArns": ["arn:aws:ecs:eu-west-1:1:service-revision/prod/web/123"]})
            ),
            [prod]
        );
        assert_eq!(
            ecs_resources(&scope, "RunTask", &json!({"cluster": 5})),
            [default]
        );
        assert_eq!(
            ecs_resources(
                &scope,
                "DescribeClusters",
                &json!({"clusters": ["prod", "default"]})
            ),
            [prod, default]
        );
        assert_eq!(
            ecs_resources(&scope, "CreateCluster", &json!({"clusterName": "prod"})),
            [prod]
        );
        assert_eq!(
            ecs_resources(&scope, "RegisterTaskDefinition", &json!({})),
            ["*"]
        );
        assert_eq!(
            ecs_resources(
                &scope,
                "TagResource",
                &json!({"resourceArn": "arn:aws:ecs:eu-west-1:1:service/prod/web"})
            ),
            [prod]
        );
        assert_eq!(
            logs_resources(
                &scope,
                "TagResource",
                &json!({"resourceArn": "arn:aws:logs:eu-west-1:1:log-group:/ecs/web"})
            ),
            ["arn:aws:logs:eu-west-1:1:log-group:/ecs/web"]
        );
        assert_eq!(
            logs_resources(
                &scope,
                "GetLogEvents",
                &json!({"logGroupName": "/ecs/web", "logStreamName": "ecs/web/1"})
            ),
            ["arn:aws:logs:eu-west-1:1:log-group:/ecs/web:log-stream:ecs/web/1"]
        );
    }
}
