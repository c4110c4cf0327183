//! IAM identity policies, read as IAM reads them: a request is allowed when
//! some statement allows its action on its resource and none denies it.
//! `Action`/`NotAction` match case-insensitively, `Resource`/`NotResource`
//! case-sensitively, both with `*` and `?` wildcards. `Condition` is
//! refused when the policy is loaded: ignoring one would allow more than
//! the policy says.

use serde_json::Value;

/// A policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    allow: bool,
    actions: Match,
    resources: Match,
}

/// A list of patterns, or its negation (`NotAction`, `NotResource`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Match {
    patterns: Vec<String>,
    negated: bool,
}

impl Match {
    fn matches(&self, value: &str, fold_case: bool) -> bool {
        let hit = self.patterns.iter().any(|p| {
            if fold_case {
                glob(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                glob(p, value)
            }
        });
        hit != self.negated
    }
}

/// Whether `pattern` (with `*` for any run and `?` for any one character)
/// matches all of `value`.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What the policy decides for one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it and none denies it.
    Allow,
    /// A statement denies it.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
}

impl Policy {
    /// Reads a policy document; the error names the statement and field
    /// and says what would be right.
    pub fn parse(doc: &Value) -> Result<Policy, super::DocumentError> {
        let obj = doc.as_object().ok_or(super::DocumentError::from(
            "the policy must be a JSON object with a \"Statement\"",
        ))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(format!(
                    "the policy has an unknown field {key:?}; expected Version, Id and Statement"
                )
                .into());
            }
        }
        if let Some(v) = obj.get("Version") {
            if v != "2012-10-17" && v != "2008-10-17" {
                return Err(format!("Version must be \"2012-10-17\", got {v}").into());
            }
        }
        let statements = match obj.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(s @ Value::Object(_)) => vec![s],
            _ => return Err("Statement must be a statement object or a list of them".into()),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                Statement::parse(s)
                    .map_err(|e| super::DocumentError(format!("Statement[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { statements })
    }

    /// The decision for `action` (`ecs:RunTask`) on `resource` (an ARN, or
    /// `*` for actions on no particular resource).
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let applies = |s: &&Statement| {
            s.actions.matches(action, true) && s.resources.matches(resource, false)
        };
        let mut allowed = false;
        for s in self.statements.iter().filter(applies) {
            if !s.allow {
                return Decision::ExplicitDeny;
            }
            allowed = true;
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

impl Statement {
    fn parse(s: &Value) -> Result<Statement, String> {
        let obj = s.as_object().ok_or("a statement must be a JSON object")?;
        for key in obj.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" => {}
                "Condition" => {
                    return Err(
                        "Condition is not supported by skiff; narrow Resource instead, \
                                or use separate keys"
                            .into(),
                    )
                }
                "Principal" | "NotPrincipal" => {
                    return Err(format!(
                        "{key} belongs in resource policies; a key's policy is an identity \
                         policy: remove it"
                    ))
                }
                _ => {
                    return Err(format!(
                        "unknown field {key:?}; expected Sid, Effect, Action or NotAction, \
                         Resource or NotResource"
                    ))
                }
            }
        }
        let allow = match obj.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err("Effect must be \"Allow\" or \"Deny\"".into()),
        };
        let actions = one_of(obj, "Action", "NotAction")?;
        for a in &actions.patterns {
            if a != "*" && !a.contains(':') {
                return Err(format!(
                    "action {a:?} must be SERVICE:ACTION, such as \"ecs:RunTask\" or \"ecs:*\""
                ));
            }
        }
        let resources = one_of(obj, "Resource", "NotResource")?;
        Ok(Statement {
            allow,
            actions,
            resources,
        })
    }
}

fn one_of(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    negated: &str,
) -> Result<Match, String> {
    let (value, is_negated, name) = match (obj.get(field), obj.get(negated)) {
        (Some(v), None) => (v, false, field),
        (None, Some(v)) => (v, true, negated),
        (Some(_), Some(_)) => return Err(format!("give {field} or {negated}, not both")),
        (None, None) => return Err(format!("{field} (or {negated}) is required")),
    };
    let patterns = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(format!("{name} must be a string or a list of strings"))?,
        _ => {
            return Err(format!(
                "{name} must be a string or a non-empty list of strings"
            ))
        }
    };
    Ok(Match {
        patterns,
        negated: is_negated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("ecs:*", "ecs:RunTask"));
        assert!(glob("ecs:Describe*", "ecs:DescribeTasks"));
        assert!(!glob("ecs:Describe*", "ecs:RunTask"));
        assert!(glob(
            "arn:aws:ecs:*:*:cluster/prod-?",
            "arn:aws:ecs:us-east-1:1:cluster/prod-a"
        ));
        assert!(!glob(
            "arn:aws:ecs:*:*:cluster/prod-?",
            "arn:aws:ecs:us-east-1:1:cluster/prod-ab"
        ));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_by_default() {
        let p = Policy::parse(&json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["ecs:*"], "Resource": "*"},
                {"Effect": "Deny", "Action": "ecs:Delete*",
                 "Resource": "arn:aws:ecs:*:*:cluster/prod"}
            ]
        }))
        .unwrap();
        let prod = "arn:aws:ecs:us-east-1:0:cluster/prod";
        assert_eq!(p.decide("ecs:RunTask", prod), Decision::Allow);
        assert_eq!(p.decide("ECS:runtask", prod), Decision::Allow);
        assert_eq!(p.decide("ecs:DeleteService", prod), Decision::ExplicitDeny);
        assert_eq!(
            p.decide("ecs:DeleteService", "arn:aws:ecs:us-east-1:0:cluster/dev"),
            Decision::Allow
        );
        assert_eq!(p.decide("logs:GetLogEvents", "*"), Decision::ImplicitDeny);

        let read_only = Policy::parse(&json!({
            "Statement": {"Effect": "Allow", "NotAction": "ecs:Delete*",
                          "NotResource": "arn:aws:ecs:*:*:cluster/secret"}
        }))
        .unwrap();
        assert_eq!(read_only.decide("ecs:ListTasks", prod), Decision::Allow);
        assert_eq!(
            read_only.decide("ecs:DeleteCluster", prod),
            Decision::ImplicitDeny
        );
        assert_eq!(
            read_only.decide("ecs:ListTasks", "arn:aws:ecs:us-east-1:0:cluster/secret"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (doc, words) in [
            (json!([]), "JSON object"),
            (json!({"Statement": []}), ""),
            (
                json!({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}),
                "Statement[0]: Effect",
            ),
            (
                json!({"Statement": {"Effect": "Allow", "Action": "RunTask", "Resource": "*"}}),
                "SERVICE:ACTION",
            ),
            (
                json!({"Statement": {"Effect": "Allow", "Action": "*"}}),
                "Resource (or NotResource) is required",
            ),
            (
                json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
                                  "Condition": {"StringEquals": {}}}}),
                "Condition is not supported",
            ),
            (json!({"Version": "2020-01-01", "Statement": []}), "Version"),
        ] {
            match Policy::parse(&doc) {
                Ok(p) if words.is_empty() => {
                    assert_eq!(p.decide("ecs:ListClusters", "*"), Decision::ImplicitDeny)
                }
                Ok(_) => panic!("{doc} was accepted"),
                Err(e) => assert!(e.to_string().contains(words), "{doc}: {e}"),
            }
        }
    }
}
