//! Capacity providers and capacity provider strategies, as ECS on Fargate
//! has them: the two AWS-managed providers `FARGATE` and `FARGATE_SPOT`,
//! which a cluster associates (PutClusterCapacityProviders) and a service
//! or RunTask spreads its tasks over by `base` and `weight`.
//!
//! On skiff both providers run tasks on the same nodes (there is no spare
//! capacity to reclaim, so a `FARGATE_SPOT` task is never interrupted);
//! what the strategy decides is which provider each task is counted
//! against, shown as the task's `capacityProviderName`, exactly as ECS
//! splits them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;

/// The capacity providers every cluster can use.
pub const PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

/// The most items a strategy may have (ECS's limit).
pub const MAX_ITEMS: usize = 20;

/// One item of a capacity provider strategy, in ECS's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyItem {
    /// `FARGATE` or `FARGATE_SPOT`.
    pub capacity_provider: String,
    /// The share of the tasks beyond `base` (0 to 1000).
    #[serde(default)]
    pub weight: u32,
    /// The tasks this provider gets first (0 to 100000; at most one item
    /// may have a base).
    #[serde(default)]
    pub base: u32,
}

/// Checks the capacity provider names of `field` (a cluster's
/// `capacityProviders`): each one of [`PROVIDERS`], none twice.
pub fn parse_names(field: &str, v: &Value) -> Result<Vec<String>, FieldError> {
    let names: Vec<String> = super::decode_at(v, field)?;
    for (i, n) in names.iter().enumerate() {
        if !PROVIDERS.contains(&n.as_str()) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "the capacity provider {n:?} does not exist: skiff's clusters have FARGATE and FARGATE_SPOT (providers backed by Auto Scaling groups need EC2 instances)"
                ),
            ));
        }
        if names[..i].contains(n) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("the capacity provider {n:?} is named twice"),
            ));
        }
    }
    Ok(names)
}

/// Checks the strategy `v` given as `field`, whose providers must be among
/// the cluster's `associated` ones: at most [`MAX_ITEMS`] items, each
/// provider once, weights 0 to 1000, bases 0 to 100000 on at most one
/// item, and (unless empty) some weight above 0.
pub fn parse_strategy(
    field: &str,
    v: &Value,
    associated: &[String],
) -> Result<Vec<StrategyItem>, FieldError> {
    let items: Vec<StrategyItem> = super::decode_at(v, field)?;
    if items.len() > MAX_ITEMS {
        return Err(FieldError::new(
            field,
            format!(
                "a capacity provider strategy has at most {MAX_ITEMS} items, got {}",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = &item.capacity_provider;
        if !associated.contains(name) {
            let known = if PROVIDERS.contains(&name.as_str()) {
                format!("{name:?} is not associated with the cluster; associate it first (PutClusterCapacityProviders)")
            } else {
                format!("{name:?} does not exist: skiff's clusters have FARGATE and FARGATE_SPOT")
            };
            return Err(FieldError::new(
                format!("{at}.capacityProvider"),
                format!(
                    "the capacity provider {known}; the cluster has {}",
                    if associated.is_empty() {
                        "none".to_string()
                    } else {
                        associated.join(", ")
                    }
                ),
            ));
        }
        if items[..i].iter().any(|o| &o.capacity_provider == name) {
            return Err(FieldError::new(
                format!("{at}.capacityProvider"),
                format!("the capacity provider {name:?} is in the strategy twice"),
            ));
        }
        if item.weight > 1000 {
            return Err(FieldError::new(
                format!("{at}.weight"),
                format!("weight must be 0 to 1000, got {}", item.weight),
            ));
        }
        if item.base > 100_000 {
            return Err(FieldError::new(
                format!("{at}.base"),
                format!("base must be 0 to 100000, got {}", item.base),
            ));
        }
        if item.base > 0 && items[..i].iter().any(|o| o.base > 0) {
            return Err(FieldError::new(
                format!("{at}.base"),
                "only one capacity provider in a strategy can have a base",
            ));
        }
    }
    if !items.is_empty() && items.iter().all(|i| i.weight == 0) {
        return Err(FieldError::new(
            field,
            "at least one capacity provider in the strategy must have a weight above 0",
        ));
    }
    Ok(items)
}

/// The provider of the next task under `strategy`, given how many live
/// tasks each provider has (`counts`, which the pick is added to). The
/// provider with a base gets tasks until it has `base`; after that each
/// task goes to the provider furthest below its weight's share of the
/// tasks beyond the base (the first in the strategy on a tie), so that
/// base 1 on FARGATE and weights 1 FARGATE, 3 FARGATE_SPOT give 5 tasks
/// as 2 and 3. `None` for an empty strategy.
pub fn pick(strategy: &[StrategyItem], counts: &mut BTreeMap<String, u32>) -> Option<String> {
    let count = |counts: &BTreeMap<String, u32>, p: &str| counts.get(p).copied().unwrap_or(0);
    let chosen = match strategy
        .iter()
        .find(|i| i.base > count(counts, &i.capacity_provider))
    {
        Some(i) => i,
        None => {
            // Tasks beyond each provider's base, against its weight: the
            // one with the least (n + 1) / weight is furthest behind.
            strategy.iter().filter(|i| i.weight > 0).min_by(|a, b| {
                let beyond = |i: &StrategyItem| {
                    u64::from(count(counts, &i.capacity_provider).saturating_sub(i.base)) + 1
                };
                (beyond(a) * u64::from(b.weight)).cmp(&(beyond(b) * u64::from(a.weight)))
            })?
        }
    };
    *counts.entry(chosen.capacity_provider.clone()).or_default() += 1;
    Some(chosen.capacity_provider.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn associated() -> Vec<String> {
        PROVIDERS.iter().map(|p| p.to_string()).collect()
    }

    fn split(strategy: &Value, n: usize) -> BTreeMap<String, u32> {
        let s = parse_strategy("s", strategy, &associated()).unwrap();
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            pick(&s, &mut counts).unwrap();
        }
        counts
    }

    #[test]
    fn base_first_then_by_weight() {
        let s = json!([
            {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 3}
        ]);
        let c = split(&s, 5);
        assert_eq!(c["FARGATE"], 2);
        assert_eq!(c["FARGATE_SPOT"], 3);
        let c = split(&s, 1);
        assert_eq!(c.get("FARGATE_SPOT"), None, "the base comes first");
        let c = split(&s, 401);
        assert_eq!((c["FARGATE"], c["FARGATE_SPOT"]), (101, 300));
    }

    #[test]
    fn a_weight_of_zero_gets_only_its_base() {
        let s = json!([
            {"capacityProvider": "FARGATE", "base": 2, "weight": 0},
            {"capacityProvider": "FARGATE_SPOT", "weight": 1}
        ]);
        let c = split(&s, 10);
        assert_eq!((c["FARGATE"], c["FARGATE_SPOT"]), (2, 8));
    }

    #[test]
    fn picks_continue_from_the_live_tasks() {
        let s = parse_strategy(
            "s",
            &json!([
                {"capacityProvider": "FARGATE", "weight": 1},
                {"capacityProvider": "FARGATE_SPOT", "weight": 1}
            ]),
            &associated(),
        )
        .unwrap();
        // Three FARGATE tasks survive; the next two go to FARGATE_SPOT.
        let mut counts = BTreeMap::from([("FARGATE".to_string(), 3)]);
        assert_eq!(pick(&s, &mut counts).as_deref(), Some("FARGATE_SPOT"));
        assert_eq!(pick(&s, &mut counts).as_deref(), Some("FARGATE_SPOT"));
        assert_eq!(pick(&[], &mut counts), None);
    }

    #[test]
    fn bad_strategies_name_the_field() {
        let only_fargate = vec!["FARGATE".to_string()];
        let err = |v: Value, assoc: &[String]| parse_strategy("s", &v, assoc).unwrap_err();
        let e = err(
            json!([{"capacityProvider": "FARGATE_SPOT", "weight": 1}]),
            &only_fargate,
        );
        assert_eq!(e.field, "s[0].capacityProvider");
        assert!(e.message.contains("not associated"), "{e}");
        let e = err(
            json!([{"capacityProvider": "my-asg", "weight": 1}]),
            &associated(),
        );
        assert!(e.message.contains("does not exist"), "{e}");
        let e = err(
            json!([{"capacityProvider": "FARGATE", "weight": 1001}]),
            &associated(),
        );
        assert_eq!(e.field, "s[0].weight");
        let e = err(
            json!([
                {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                {"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 1}
            ]),
            &associated(),
        );
        assert_eq!(e.field, "s[1].base");
        let e = err(
            json!([{"capacityProvider": "FARGATE", "weight": 0}]),
            &associated(),
        );
        assert!(e.message.contains("weight above 0"), "{e}");
        let e = err(
            json!([{"capacityProvider": "FARGATE"}, {"capacityProvider": "FARGATE", "weight": 1}]),
            &associated(),
        );
        assert!(e.message.contains("twice"), "{e}");
        let e = err(
            json!([{"capacityProvider": "FARGATE", "wieght": 1}]),
            &associated(),
        );
        assert!(e.field.starts_with("s[0]"), "{e}");
        let e = parse_names("capacityProviders", &json!(["FARGATE", "EC2"])).unwrap_err();
        assert_eq!(e.field, "capacityProviders[1]");
        assert!(parse_strategy("s", &json!([]), &[]).unwrap().is_empty());
    }
}
