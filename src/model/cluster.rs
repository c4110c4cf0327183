//! Clusters as stored at `clusters/NAME`. A deleted cluster stays (INACTIVE,
//! still describable); creating it again makes it ACTIVE.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::provider::StrategyItem;

/// Where clusters are stored: `clusters/NAME`.
pub const PREFIX: &str = "clusters/";

/// The cluster every request that names none uses.
pub const DEFAULT: &str = "default";

/// The store key of a cluster.
pub fn key(name: &str) -> String {
    format!("clusters/{name}")
}

/// A cluster's status, as ECS has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterStatus {
    /// In use.
    #[default]
    Active,
    /// Deleted: describable, takes nothing new.
    Inactive,
}

impl ClusterStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Active => "ACTIVE",
            ClusterStatus::Inactive => "INACTIVE",
        }
    }
}

/// A cluster, as stored at [`key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    /// Its name.
    pub name: String,
    /// ACTIVE or INACTIVE.
    #[serde(default)]
    pub status: ClusterStatus,
    /// When it was created (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
    /// `settings`, as the client wrote them (containerInsights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// `configuration`, as the client wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Value>,
    /// `serviceConnectDefaults`, as the client wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_connect_defaults: Option<Value>,
    /// Its capacity providers (none: only launch types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_providers: Option<Vec<String>>,
    /// Its default capacity provider strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_capacity_provider_strategy: Option<Vec<StrategyItem>>,
}

impl ClusterRecord {
    /// A new ACTIVE cluster, created `now`.
    pub fn new(name: &str, now: f64) -> ClusterRecord {
        ClusterRecord {
            name: name.to_string(),
            status: ClusterStatus::Active,
            created_at: Some(now),
            settings: None,
            configuration: None,
            service_connect_defaults: None,
            capacity_providers: None,
            default_capacity_provider_strategy: None,
        }
    }

    /// Reads a stored cluster; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<ClusterRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The cluster as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Its capacity providers and its default capacity provider strategy
    /// (both empty unless set).
    pub fn capacity(&self) -> (Vec<String>, Vec<StrategyItem>) {
        (
            self.capacity_providers.clone().unwrap_or_default(),
            self.default_capacity_provider_strategy
                .clone()
                .unwrap_or_default(),
        )
    }

    /// The namespace its `serviceConnectDefaults` name, if any.
    pub fn default_namespace(&self) -> Option<String> {
        self.service_connect_defaults.as_ref()?["namespace"]
            .as_str()
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_written_as_untyped_json_reads_and_round_trips() {
        let old = serde_json::json!({
            "name": "web", "status": "INACTIVE", "createdAt": 1764600000.25,
            "settings": [{"name": "containerInsights", "value": "enabled"}],
            "serviceConnectDefaults": {"namespace": "shop"},
            "capacityProviders": ["FARGATE"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        });
        let c = ClusterRecord::decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(c.status, ClusterStatus::Inactive);
        assert_eq!(c.default_namespace().as_deref(), Some("shop"));
        assert_eq!(c.capacity().0, ["FARGATE"]);
        let back: Value = serde_json::from_slice(&c.encode()).unwrap();
        assert_eq!(back, old);
        // The default cluster as the first start wrote it.
        let d = ClusterRecord::decode(br#"{"name":"default","status":"ACTIVE","createdAt":1.5}"#);
        assert_eq!(d.unwrap().capacity(), (vec![], vec![]));
    }
}
