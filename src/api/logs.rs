//! CloudWatch Logs' read API over container logs: DescribeLogGroups,
//! DescribeLogStreams, GetLogEvents and FilterLogEvents (AWS JSON 1.1,
//! target prefix `Logs_20140328`), so that `aws logs` and boto3's `logs`
//! client read them unchanged; log groups themselves are made, deleted,
//! given retention and tagged in [`super::log_groups`].
//!
//! A container whose `logConfiguration` uses the `awslogs` driver has its
//! log (stdout and stderr, line by line) in the group `awslogs-group`, in
//! the stream `PREFIX/CONTAINER/TASK_ID` as ECS names it. Streams are
//! indexed when their task is created and forgotten with it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Kind};
use super::log_groups as groups;
use super::{decode, page, Api};
use crate::logs::{self as files, Line};
use crate::model::arn::Scope;
use crate::model::logs::{group_prefix, parse_stream_key, stream_key, StreamRecord};

/// The JSON 1.1 target prefix of CloudWatch Logs.
pub const LOGS_TARGET: &str = "Logs_20140328";

/// The actions of the Logs API served, by name.
pub(crate) const ACTIONS: &[(&str, super::Action)] = &[
    ("DescribeLogGroups", describe_groups),
    ("DescribeLogStreams", describe_streams),
    ("GetLogEvents", get_events),
    ("FilterLogEvents", filter_events),
    ("CreateLogGroup", groups::create),
    ("DeleteLogGroup", groups::delete),
    ("PutRetentionPolicy", groups::put_retention),
    ("DeleteRetentionPolicy", groups::delete_retention),
    ("ListTagsForResource", groups::list_tags),
    ("TagResource", groups::tag),
    ("UntagResource", groups::untag),
    ("ListTagsLogGroup", groups::list_tags_by_name),
    ("TagLogGroup", groups::tag_by_name),
    ("UntagLogGroup", groups::untag_by_name),
];

/// The oldest event time (ms) a group's reads show: its retention
/// policy's bound, if it has one.
fn retained_from(api: &Api, group: &str) -> ApiResult<Option<u64>> {
    let now_ms = (crate::model::now() * 1000.0) as u64;
    Ok(groups::record(api, group)?.and_then(|(g, _)| g.retained_from(now_ms)))
}

/// A group's streams; ResourceNotFound when the group does not exist
/// (no stream and no record).
fn group_streams(api: &Api, group: &str) -> ApiResult<Vec<Stream>> {
    let all = streams(api, &group_prefix(group))?;
    if all.is_empty() && groups::record(api, group)?.is_none() {
        return Err(not_found("log group"));
    }
    Ok(all)
}

/// One indexed stream.
struct Stream {
    group: String,
    name: String,
    cluster: String,
    task: String,
    container: String,
    created: u64,
}

impl Stream {
    /// The container's log file, wherever its task ran.
    fn text(&self, api: &Api) -> String {
        super::peer::task_files(api, &self.cluster, &self.task)
            .and_then(|mut f| f.remove(&self.container))
            .unwrap_or_default()
    }

    /// Its events, from `from` (ms) on when a retention policy says.
    fn lines(&self, api: &Api, from: Option<u64>) -> Vec<Line> {
        let mut lines = files::parse(&self.text(api));
        if let Some(from) = from {
            lines.retain(|l| l.ms >= from);
        }
        lines
    }

    /// What it keeps on disk, from its files' sizes (not read).
    fn bytes(&self, api: &Api) -> u64 {
        super::peer::task_sizes(api, &self.cluster, &self.task)
            .and_then(|s| s.get(&self.container).copied())
            .unwrap_or(0)
    }
}

fn streams(api: &Api, prefix: &str) -> ApiResult<Vec<Stream>> {
    let mut out = Vec::new();
    for r in api.store.list(prefix, None, usize::MAX)? {
        let Some((group, name)) = parse_stream_key(&r.key) else {
            continue;
        };
        let s = StreamRecord::decode(&r.value).unwrap_or_default();
        out.push(Stream {
            group,
            name,
            cluster: s.cluster,
            task: s.task,
            container: s.container,
            created: s.creation_time,
        });
    }
    Ok(out)
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        Kind::ResourceNotFound,
        format!("The specified {what} does not exist."),
    )
}

/// The fields of the Logs calls skiff serves (`nextToken` of the paged
/// ones is read by [`page`]; GetLogEvents' own tokens are read here).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_group_name_prefix: Option<String>,
    log_stream_name: Option<String>,
    log_stream_name_prefix: Option<String>,
    log_stream_names: Option<Vec<String>>,
    order_by: Option<String>,
    filter_pattern: Option<String>,
    start_time: Option<u64>,
    end_time: Option<u64>,
    start_from_head: Option<bool>,
    limit: Option<i64>,
    next_token: Option<String>,
}

impl LogsRequest {
    fn group_name(&self) -> ApiResult<String> {
        let name = self
            .log_group_name
            .as_deref()
            .or(self.log_group_identifier.as_deref())
            .ok_or_else(|| ApiError::invalid("logGroupName is required"))?;
        // An identifier may be the group's ARN.
        Ok(name
            .split_once(":log-group:")
            .map_or(name, |(_, n)| n.trim_end_matches(":*"))
            .to_string())
    }

    fn limit(&self, max: i64, default: usize) -> ApiResult<usize> {
        match self.limit {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::invalid(format!(
                "limit must be between 1 and {max}, got {n}"
            ))),
        }
    }
}

fn group_arn(scope: &Scope, group: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{group}",
        scope.region, scope.account
    )
}

/// DescribeLogGroups.
fn describe_groups(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: LogsRequest = decode(req)?;
    let prefix = r.log_group_name_prefix.as_deref().unwrap_or("");
    let max = r.limit(50, 50)?;
    let after = page::after(req)?;
    // (creation time, bytes, retention) by group: the groups tasks wrote
    // to and those created.
    let mut found: BTreeMap<String, (u64, u64, Option<u32>)> = BTreeMap::new();
    for s in streams(api, "logstreams/")? {
        if !s.group.starts_with(prefix) {
            continue;
        }
        let bytes = s.bytes(api);
        let g = found.entry(s.group.clone()).or_insert((s.created, 0, None));
        g.0 = g.0.min(s.created);
        g.1 += bytes;
    }
    for (name, r) in groups::records(api)? {
        if name.starts_with(prefix) {
            let g = found.entry(name).or_insert((r.creation_time, 0, None));
            g.0 = r.creation_time;
            g.2 = r.retention_in_days;
        }
    }
    let names: Vec<String> = found.keys().cloned().collect();
    let (names, next) = page::page(names, |n| n.clone(), after.as_deref(), max);
    let out: Vec<Value> = names
        .iter()
        .map(|n| {
            let (created, bytes, retention) = found[n];
            let mut v = json!({
                "logGroupName": n,
                "creationTime": created,
                "arn": format!("{}:*", group_arn(scope, n)),
                "logGroupArn": group_arn(scope, n),
                "storedBytes": bytes,
                "metricFilterCount": 0,
                "logGroupClass": "STANDARD",
            });
            if let Some(days) = retention {
                v["retentionInDays"] = json!(days);
            }
            v
        })
        .collect();
    let mut v = json!({ "logGroups": out });
    if let Some(t) = next {
        v["nextToken"] = json!(t);
    }
    Ok(v)
}

/// DescribeLogStreams.
fn describe_streams(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: LogsRequest = decode(req)?;
    let group = r.group_name()?;
    let prefix = r.log_stream_name_prefix.as_deref().unwrap_or("");
    let by_time = match r.order_by.as_deref().unwrap_or("LogStreamName") {
        "LogStreamName" => false,
        "LastEventTime" => true,
        other => {
            return Err(ApiError::invalid(format!(
                "orderBy must be LogStreamName or LastEventTime, got {other:?}"
            )))
        }
    };
    if by_time && !prefix.is_empty() {
        return Err(ApiError::invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    let descending = req
        .get("descending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max = r.limit(50, 50)?;
    let all = group_streams(api, &group)?;
    let from = retained_from(api, &group)?;
    let mut rows: Vec<(String, Value, u64)> = all
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .map(|s| {
            let lines = s.lines(api, from);
            let first = lines.first().map(|l| l.ms);
            let last = lines.last().map(|l| l.ms);
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": s.created,
                "arn": format!("{}:log-stream:{}", group_arn(scope, &group), s.name),
                "storedBytes": s.bytes(api),
            });
            if let (Some(f), Some(l)) = (first, last) {
                v["firstEventTimestamp"] = json!(f);
                v["lastEventTimestamp"] = json!(l);
                v["lastIngestionTime"] = json!(l);
            }
            (s.name.clone(), v, last.unwrap_or(s.created))
        })
        .collect();
    if by_time {
        rows.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    }
    if descending {
        rows.reverse();
    }
    // Tokens are positions: the order is fixed by the request.
    let (rows, next) = page::by_position(&rows, req, max)?;
    let out: Vec<Value> = rows.iter().map(|r| r.1.clone()).collect();
    let mut v = json!({ "logStreams": out });
    if let Some(t) = next {
        v["nextToken"] = json!(t);
    }
    Ok(v)
}

fn event(l: &Line) -> Value {
    json!({"timestamp": l.ms, "message": l.text, "ingestionTime": l.ms})
}

fn in_window(l: &Line, start: Option<u64>, end: Option<u64>) -> bool {
    start.is_none_or(|s| l.ms >= s) && end.is_none_or(|e| l.ms < e)
}

/// GetLogEvents: a window of one stream's events. Tokens are `f/N` and
/// `b/N` (positions); with no new events the forward token comes back
/// unchanged, which is how clients know they reached the end.
fn get_events(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: LogsRequest = decode(req)?;
    let group = r.group_name()?;
    let name = r
        .log_stream_name
        .as_deref()
        .ok_or_else(|| ApiError::invalid("logStreamName is required"))?;
    let s = streams(api, &stream_key(&group, name))?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| not_found("log stream"))?;
    let max = r.limit(10_000, 10_000)?;
    let (start, end) = (r.start_time, r.end_time);
    let lines: Vec<Line> = s
        .lines(api, retained_from(api, &group)?)
        .into_iter()
        .filter(|l| in_window(l, start, end))
        .collect();
    let head = r.start_from_head.unwrap_or(false);
    let (from, to) = match r.next_token.as_deref() {
        Some(t) => {
            let (dir, n) = t
                .split_once('/')
                .and_then(|(d, n)| n.parse::<usize>().ok().map(|n| (d, n)))
                .ok_or_else(|| ApiError::invalid("The specified nextToken is invalid."))?;
            let n = n.min(lines.len());
            match dir {
                "f" => (n, (n + max).min(lines.len())),
                "b" => (n.saturating_sub(max), n),
                _ => return Err(ApiError::invalid("The specified nextToken is invalid.")),
            }
        }
        None if head => (0, max.min(lines.len())),
        None => (lines.len().saturating_sub(max), lines.len()),
    };
    let events: Vec<Value> = lines[from..to].iter().map(event).collect();
    Ok(json!({
        "events": events,
        "nextForwardToken": format!("f/{to}"),
        "nextBackwardToken": format!("b/{from}"),
    }))
}

/// Whether a line matches a filter pattern: every term (or quoted phrase)
/// appears in it. An empty pattern matches everything.
fn matches(pattern: &str, text: &str) -> bool {
    let mut terms = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let (term, after) = r.split_once('"').unwrap_or((r, ""));
            terms.push(term.to_string());
            rest = after.trim_start();
        } else {
            let (term, after) = rest.split_once(' ').unwrap_or((rest, ""));
            terms.push(term.to_string());
            rest = after.trim_start();
        }
    }
    terms.iter().all(|t| text.contains(t.as_str()))
}

/// FilterLogEvents: events of a group's streams (all, named, or by prefix)
/// in time order, filtered by a pattern of terms.
fn filter_events(api: &Api, _scope: &Scope, req: &Value) -> ApiResult {
    let r: LogsRequest = decode(req)?;
    let group = r.group_name()?;
    let names = r.log_stream_names.clone();
    let prefix = r.log_stream_name_prefix.as_deref();
    if names.is_some() && prefix.is_some() {
        return Err(ApiError::invalid(
            "logStreamNames and logStreamNamePrefix cannot both be given",
        ));
    }
    let pattern = r.filter_pattern.as_deref().unwrap_or("");
    let (start, end) = (r.start_time, r.end_time);
    let max = r.limit(10_000, 10_000)?;
    let all = group_streams(api, &group)?;
    let from = retained_from(api, &group)?;
    let mut events: Vec<(u64, String, usize, Line)> = Vec::new();
    let mut searched = Vec::new();
    for s in all.iter().filter(|s| {
        names.as_ref().is_none_or(|n| n.contains(&s.name))
            && prefix.is_none_or(|p| s.name.starts_with(p))
    }) {
        searched.push(json!({"logStreamName": s.name, "searchedCompletely": true}));
        for (i, l) in s.lines(api, from).into_iter().enumerate() {
            if in_window(&l, start, end) && matches(pattern, &l.text) {
                events.push((l.ms, s.name.clone(), i, l));
            }
        }
    }
    events.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let (events, next) = page::by_position(&events, req, max)?;
    let out: Vec<Value> = events
        .iter()
        .map(|(ms, name, i, l)| {
            let mut v = event(l);
            v["logStreamName"] = json!(name);
            v["eventId"] = json!(format!("{ms:020}{i:010}"));
            v
        })
        .collect();
    let mut v = json!({ "events": out, "searchedLogStreams": searched });
    if let Some(t) = next {
        v["nextToken"] = json!(t);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns_are_terms_and_phrases() {
        assert!(matches("", "anything"));
        assert!(matches("ERROR db", "ERROR: db down"));
        assert!(!matches("ERROR db", "ERROR: cache down"));
        assert!(matches("\"db down\"", "ERROR: db down"));
        assert!(!matches("\"down db\"", "ERROR: db down"));
    }
}
