//! Tags as stored: a resource's tags at `tags/KIND/RESOURCE` (kind
//! `cluster`, `task-definition`, `task`, `service`), a list of `{key,
//! value}` pairs in the order they were given, as ECS shows them.

use serde::{Deserialize, Serialize};

/// The store key of a resource's tags: `tags/task/CLUSTER/ID`,
/// `tags/task-definition/FAMILY:REVISION`, ...
pub fn key(kind: &str, resource: &str) -> String {
    format!("tags/{kind}/{resource}")
}

/// One stored tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tag {
    key: String,
    value: String,
}

/// Tags as stored.
pub fn encode(tags: &[(String, String)]) -> Vec<u8> {
    let list: Vec<Tag> = tags
        .iter()
        .map(|(key, value)| Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

/// Stored tags; `None` when the bytes are not a list of them.
pub fn decode(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let list: Vec<Tag> = serde_json::from_slice(bytes).ok()?;
    Some(list.into_iter().map(|t| (t.key, t.value)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_round_trip_in_the_shape_the_api_shows() {
        let tags = vec![
            ("team".to_string(), "a".to_string()),
            ("b".into(), "".into()),
        ];
        let bytes = super::encode(&tags);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"[{"key":"team","value":"a"},{"key":"b","value":""}]"#
        );
        assert_eq!(super::decode(&bytes), Some(tags));
    }
}
