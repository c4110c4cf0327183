//! skiff's extensions of a container: what ECS has no field for, read
//! from its `dockerLabels` under `skiff.` keys (so that aws-cli, boto3 and
//! Terraform, which check documents against ECS's model, still accept
//! them).

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::FieldError;

/// skiff's extensions, from a container's `dockerLabels` under `skiff.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `skiff.timeout`: wall-clock limit per run or request.
    pub timeout: Option<Duration>,
    /// `skiff.max-fuel`: fuel budget per run or request.
    pub max_fuel: Option<u64>,
    /// `skiff.concurrency`: the most requests one task's HTTP container
    /// handles at once (default [`DEFAULT_CONCURRENCY`]); past that the
    /// ingress sends requests to other tasks, or answers 503.
    pub concurrency: Option<u32>,
    /// `skiff.allowed-outbound-hosts`: the hosts the container may send
    /// HTTP requests to, separated by commas (none without the label).
    pub allowed_outbound_hosts: crate::model::outbound::OutboundRules,
    /// `skiff.domains`: hostnames the service answers on besides
    /// `SERVICE.CLUSTER.DOMAIN` (see [`crate::model::domain`]).
    pub domains: Vec<String>,
    /// `skiff.https-redirect`: plain HTTP requests for the service's
    /// domains are answered with a redirect to HTTPS.
    pub https_redirect: bool,
    /// `skiff.instance-reuse`: the most requests one instance of an HTTP
    /// container serves, one after another (default 1: a fresh instance
    /// for every request). State a request leaves in the instance is seen
    /// by later requests of the same task; an instance that fails is
    /// never reused.
    pub instance_reuse: Option<u32>,
}

/// The concurrency limit of an HTTP container without `skiff.concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 64;

/// The `skiff.` labels skiff knows.
pub const LABELS: [&str; 7] = [
    "skiff.timeout",
    "skiff.max-fuel",
    "skiff.concurrency",
    "skiff.allowed-outbound-hosts",
    "skiff.domains",
    "skiff.https-redirect",
    "skiff.instance-reuse",
];

/// The largest `skiff.instance-reuse`.
pub const MAX_INSTANCE_REUSE: u32 = 1_000_000;

/// Reads the `skiff.` labels of `labels` (the container's `dockerLabels`,
/// at `field`); an unknown `skiff.` label is refused, others are ignored.
pub(super) fn extensions(
    field: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Extensions, FieldError> {
    let mut ext = Extensions::default();
    for (k, v) in labels {
        if !k.starts_with("skiff.") {
            continue;
        }
        let at = format!("{field}.{k:?}");
        match k.as_str() {
            "skiff.timeout" => {
                ext.timeout =
                    Some(crate::units::parse_duration(v).map_err(|e| FieldError::new(&at, e.to_string()))?)
            }
            "skiff.max-fuel" => {
                ext.max_fuel = Some(v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    FieldError::new(
                        &at,
                        format!("{v:?} is not a fuel budget: write a positive whole number"),
                    )
                })?)
            }
            "skiff.concurrency" => {
                ext.concurrency = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| {
                            FieldError::new(
                                &at,
                                format!("{v:?} is not a concurrency limit: write a whole number from 1 to 100000"),
                            )
                        })?,
                )
            }
            "skiff.instance-reuse" => {
                ext.instance_reuse = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_INSTANCE_REUSE).contains(n))
                        .ok_or_else(|| {
                            FieldError::new(
                                &at,
                                format!("{v:?} is not a number of requests per instance: write a whole number from 1 (a fresh instance for every request) to {MAX_INSTANCE_REUSE}"),
                            )
                        })?,
                )
            }
            "skiff.allowed-outbound-hosts" => {
                ext.allowed_outbound_hosts = v
                    .split([',', ' ', '\n', '\t'])
                    .filter(|h| !h.is_empty())
                    .map(crate::model::outbound::OutboundRule::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| FieldError::new(&at, e.to_string()))?;
            }
            "skiff.domains" => {
                ext.domains =
                    crate::model::domain::parse_list(v).map_err(|e| FieldError::new(&at, e.to_string()))?;
            }
            "skiff.https-redirect" => {
                ext.https_redirect = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(FieldError::new(
                            &at,
                            format!("{v:?} is not true or false"),
                        ))
                    }
                }
            }
            _ => {
                return Err(FieldError::new(
                    at,
                    format!(
                        "unknown skiff label; the labels skiff reads are {}",
                        LABELS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(ext)
}
