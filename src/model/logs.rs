//! CloudWatch Logs' records in the store: a stream per container of a
//! task whose `logConfiguration` uses `awslogs` (indexed at
//! `logstreams/GROUP/STREAM` when the task is created, forgotten with it),
//! and what was set on a log group (`loggroups/GROUP`). The lines
//! themselves are files on the node that ran the task ([`crate::logs`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::task::TaskRecord;

/// Where log groups' records are stored: `loggroups/GROUP`.
pub const GROUPS: &str = "loggroups/";

fn enc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The store key that makes a container's log a CloudWatch Logs stream.
pub fn stream_key(group: &str, stream: &str) -> String {
    format!("logstreams/{}/{}", enc(group), enc(stream))
}

/// The store key of a log group made by CreateLogGroup (or given a
/// retention policy or tags): `loggroups/GROUP`.
pub fn group_key(group: &str) -> String {
    format!("loggroups/{}", enc(group))
}

/// The prefix of a log group's stream keys.
pub fn group_prefix(group: &str) -> String {
    format!("logstreams/{}/", enc(group))
}

/// The group and stream of a stream key.
pub fn parse_stream_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("logstreams/")?;
    let (g, s) = rest.split_once('/')?;
    let dec = |x: &str| x.replace("%2F", "/").replace("%25", "%");
    Some((dec(g), dec(s)))
}

/// The group a [`group_key`] names.
pub fn parse_group_key(key: &str) -> Option<String> {
    let g = key.strip_prefix(GROUPS)?;
    Some(g.replace("%2F", "/").replace("%25", "%"))
}

/// A container's stream, as indexed at [`stream_key`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    /// The task's cluster.
    #[serde(default)]
    pub cluster: String,
    /// The task's id.
    #[serde(default)]
    pub task: String,
    /// The container.
    #[serde(default)]
    pub container: String,
    /// When the task was created, in ms since the epoch.
    #[serde(default)]
    pub creation_time: u64,
}

impl StreamRecord {
    /// Reads a stored stream; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<StreamRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The stream as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The streams of a new task's `awslogs` containers, by key.
    pub fn of_task(t: &TaskRecord) -> Vec<(String, StreamRecord)> {
        t.log_streams
            .iter()
            .map(|(g, s)| {
                let record = StreamRecord {
                    cluster: t.cluster.clone(),
                    task: t.id.clone(),
                    container: s.rsplit('/').nth(1).unwrap_or_default().to_string(),
                    creation_time: (t.created_at * 1000.0) as u64,
                };
                (stream_key(g, s), record)
            })
            .collect()
    }
}

/// What is kept of a log group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Milliseconds since the epoch.
    pub creation_time: u64,
    /// Days its events are shown for (none: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_in_days: Option<u32>,
    /// Its tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl GroupRecord {
    /// The oldest event time (ms) reads show, with a retention policy.
    pub fn retained_from(&self, now_ms: u64) -> Option<u64> {
        self.retention_in_days
            .map(|d| now_ms.saturating_sub(u64::from(d) * 86_400_000))
    }

    /// Reads a stored group; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<GroupRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The group as stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_as_the_engine_wrote_it_untyped_reads_and_keys_round_trip() {
        let old =
            br#"{"cluster":"default","task":"t1","container":"web","creationTime":1764600000123}"#;
        let s = StreamRecord::decode(old).unwrap();
        assert_eq!(
            (s.container.as_str(), s.creation_time),
            ("web", 1764600000123)
        );
        assert_eq!(StreamRecord::decode(&s.encode()), Some(s));
        let k = stream_key("/ecs/a%b", "web/web/t1");
        assert_eq!(
            parse_stream_key(&k),
            Some(("/ecs/a%b".into(), "web/web/t1".into()))
        );
        assert_eq!(parse_group_key(&group_key("/ecs/a")), Some("/ecs/a".into()));
    }
}
