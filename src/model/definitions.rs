//! Task definitions as stored: one record per revision at
//! `taskdefs/FAMILY/REVISION` (the document exactly as submitted, with the
//! server's fields beside it), one per family at `families/FAMILY`
//! (counts that number and list its revisions), and a mark at
//! `deleting/FAMILY/REVISION` for a revision DeleteTaskDefinitions asked
//! to delete for good once nothing uses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::taskdef::TaskDefinition;
use super::FieldError;

/// Where revisions are stored: `taskdefs/FAMILY/REVISION`.
pub const PREFIX: &str = "taskdefs/";

/// The store key of one revision.
pub fn key(family: &str, revision: u32) -> String {
    format!("taskdefs/{family}/{revision:010}")
}

/// The prefix of a family's revisions, oldest first.
pub fn revisions_prefix(family: &str) -> String {
    format!("taskdefs/{family}/")
}

/// Where family records are stored: `families/FAMILY`.
pub const FAMILIES: &str = "families/";

/// The store key of a family's record.
pub fn family_key(family: &str) -> String {
    format!("families/{family}")
}

/// The prefix of the marks of revisions to delete for good.
pub const DELETING: &str = "deleting/";

/// The store key that marks a revision to delete once nothing uses it.
pub fn deleting_key(family: &str, revision: u32) -> String {
    format!("{DELETING}{family}/{revision:010}")
}

/// The family and revision a [`deleting_key`] names.
pub fn parse_deleting_key(key: &str) -> Option<(String, u32)> {
    let (family, rev) = key.strip_prefix(DELETING)?.rsplit_once('/')?;
    Some((family.to_string(), rev.parse().ok()?))
}

/// A revision's status, as ECS has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DefinitionStatus {
    /// New tasks and deployments may use it.
    #[default]
    Active,
    /// Deregistered: what runs it goes on, nothing new starts.
    Inactive,
    /// Deleted: gone for good once no task or deployment uses it.
    DeleteInProgress,
}

impl DefinitionStatus {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionStatus::Active => "ACTIVE",
            DefinitionStatus::Inactive => "INACTIVE",
            DefinitionStatus::DeleteInProgress => "DELETE_IN_PROGRESS",
        }
    }

    /// The status an API word names.
    pub fn parse(word: &str) -> Option<DefinitionStatus> {
        [
            DefinitionStatus::Active,
            DefinitionStatus::Inactive,
            DefinitionStatus::DeleteInProgress,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

/// One registered revision, as stored at [`key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionRecord {
    /// Its family.
    #[serde(default)]
    pub family: String,
    /// Its revision (1, 2, ...).
    #[serde(default)]
    pub revision: u32,
    /// ACTIVE, INACTIVE or DELETE_IN_PROGRESS.
    #[serde(default)]
    pub status: DefinitionStatus,
    /// When it was registered (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<f64>,
    /// When it was deregistered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<f64>,
    /// The document exactly as submitted (what DescribeTaskDefinition
    /// returns, with the server's fields added).
    #[serde(default)]
    pub document: Value,
    /// Per container (by name): the SHA-256 (hex) of its image file as
    /// registered, by which nodes that do not have the path fetch it.
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
}

impl DefinitionRecord {
    /// Reads a stored revision; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<DefinitionRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The revision as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Its document, validated.
    pub fn definition(&self) -> Result<TaskDefinition, FieldError> {
        TaskDefinition::parse(&self.document)
    }
}

/// A family, as stored at [`family_key`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// The last revision registered (the next is one more).
    #[serde(default)]
    pub latest: u32,
    /// How many of its revisions are ACTIVE.
    #[serde(default)]
    pub active: u64,
    /// How many of its revisions were deleted for good: when all are, the
    /// family is no longer listed.
    #[serde(default)]
    pub deleted: u64,
}

impl FamilyRecord {
    /// Reads a stored family; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<FamilyRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The family as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the engine wrote before these records were typed (a
    /// `serde_json::json!` object) reads, and writes back the same fields.
    #[test]
    fn records_written_as_untyped_json_read_and_round_trip() {
        let old = serde_json::json!({
            "family": "web", "revision": 3, "status": "INACTIVE",
            "registeredAt": 1764600000.5, "deregisteredAt": 1764600100.0,
            "document": {"family": "web", "containerDefinitions": []},
            "digests": {"app": "ab".repeat(32)},
        });
        let r = DefinitionRecord::decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!((r.revision, r.status), (3, DefinitionStatus::Inactive));
        assert_eq!(r.digests["app"].len(), 64);
        let back: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(back, old);
        let f = FamilyRecord::decode(br#"{"latest":3,"active":1}"#).unwrap();
        assert_eq!(
            f,
            FamilyRecord {
                latest: 3,
                active: 1,
                deleted: 0
            }
        );
        assert_eq!(
            parse_deleting_key(&deleting_key("web", 12)),
            Some(("web".into(), 12))
        );
    }
}
