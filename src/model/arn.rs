//! ARNs in ECS's long format. Resources are stored by name and id; ARNs
//! are made for each response from the region the request was signed for
//! and the configured account.

/// Region and account that ARNs are made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// For example `us-east-1`.
    pub region: String,
    /// Twelve digits.
    pub account: String,
    /// The name of the key that signed the request (`None` without
    /// `--auth`): the caller is then `arn:aws:iam::ACCOUNT:user/NAME`,
    /// otherwise the account's root.
    pub user: Option<String>,
}

impl Scope {
    /// A scope for `region` and `account` whose caller is the account's
    /// root.
    pub fn new(region: impl Into<String>, account: impl Into<String>) -> Scope {
        Scope {
            region: region.into(),
            account: account.into(),
            user: None,
        }
    }

    /// `arn:aws:iam::ACCOUNT:root`
    pub fn root(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account)
    }

    /// The caller's ARN: its key's user, or the account's root.
    pub fn principal(&self) -> String {
        match &self.user {
            Some(name) => format!("arn:aws:iam::{}:user/{name}", self.account),
            None => self.root(),
        }
    }

    fn prefix(&self) -> String {
        format!("arn:aws:ecs:{}:{}", self.region, self.account)
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`
    pub fn cluster(&self, name: &str) -> String {
        format!("{}:cluster/{name}", self.prefix())
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION`
    pub fn task_definition(&self, family: &str, revision: u32) -> String {
        format!("{}:task-definition/{family}:{revision}", self.prefix())
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`
    pub fn task(&self, cluster: &str, id: &str) -> String {
        format!("{}:task/{cluster}/{id}", self.prefix())
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:container-instance/CLUSTER/NODE`: a
    /// skiff node.
    pub fn container_instance(&self, cluster: &str, node: &str) -> String {
        format!("{}:container-instance/{cluster}/{node}", self.prefix())
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`
    pub fn service(&self, cluster: &str, name: &str) -> String {
        format!("{}:service/{cluster}/{name}", self.prefix())
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:service-deployment/CLUSTER/SERVICE/ID`
    pub fn service_deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        format!(
            "{}:service-deployment/{cluster}/{service}/{id}",
            self.prefix()
        )
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:service-revision/CLUSTER/SERVICE/ID`
    pub fn service_revision(&self, cluster: &str, service: &str, id: &str) -> String {
        format!(
            "{}:service-revision/{cluster}/{service}/{id}",
            self.prefix()
        )
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:container/CLUSTER/TASK/ID`
    pub fn container(&self, cluster: &str, task: &str, id: &str) -> String {
        format!("{}:container/{cluster}/{task}/{id}", self.prefix())
    }
}

/// A parsed ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    /// `cluster`, `task-definition`, `task`, `container`, `service`, ...
    pub kind: String,
    /// What follows `kind/`.
    pub resource: String,
}

/// Parses `arn:PARTITION:ecs:REGION:ACCOUNT:KIND/RESOURCE`.
pub fn parse(arn: &str) -> Option<Arn> {
    let mut parts = arn.splitn(6, ':');
    let (arn_lit, _partition, service, _region, _account, rest) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if arn_lit != "arn" || service != "ecs" {
        return None;
    }
    let (kind, resource) = rest.split_once('/')?;
    if kind.is_empty() || resource.is_empty() {
        return None;
    }
    Some(Arn {
        kind: kind.to_string(),
        resource: resource.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_format_round_trips() {
        let s = Scope::new("eu-west-1", "000000000000");
        let t = s.task("default", "abc123");
        assert_eq!(t, "arn:aws:ecs:eu-west-1:000000000000:task/default/abc123");
        let a = parse(&t).unwrap();
        assert_eq!(
            (a.kind.as_str(), a.resource.as_str()),
            ("task", "default/abc123")
        );
        let td = parse(&s.task_definition("web", 3)).unwrap();
        assert_eq!(td.resource, "web:3");
        assert!(parse("arn:aws:s3:::bucket").is_none());
        assert!(parse("default").is_none());
    }
}
