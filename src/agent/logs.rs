//! Container logs: every line of a container's stdout and stderr, with
//! its time, appended to `logs/CLUSTER/TASK/CONTAINER.log` in the data
//! directory, readable while the task runs and after it stops.
//!
//! Each file is bounded ([`MAX_LOG_BYTES`]); past that, one line says the
//! rest was dropped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_runtime::{LogSink, LogStream};

/// The most a container's log file may hold.
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// A task's log directory.
pub fn task_dir(logs_dir: &Path, cluster: &str, task: &str) -> PathBuf {
    logs_dir.join(cluster).join(task)
}

struct FileSink {
    file: Mutex<(File, u64)>,
}

impl LogSink for FileSink {
    fn line(&self, stream: LogStream, at: SystemTime, line: &str) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let s = match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        };
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (file, written) = &mut *f;
        if *written >= MAX_LOG_BYTES {
            return;
        }
        let entry = if *written + line.len() as u64 + 32 > MAX_LOG_BYTES {
            format!(
                "{ms} stderr [skiff: log limit of {} MiB reached; later lines dropped]\n",
                MAX_LOG_BYTES >> 20
            )
        } else {
            format!("{ms} {s} {line}\n")
        };
        // A full disk loses log lines, never the task.
        if file.write_all(entry.as_bytes()).is_ok() {
            *written += entry.len() as u64;
        }
        if *written + 32 > MAX_LOG_BYTES {
            *written = MAX_LOG_BYTES;
        }
    }
}

/// The sink for one container's output.
pub fn sink(
    logs_dir: &Path,
    cluster: &str,
    task: &str,
    container: &str,
) -> std::io::Result<Arc<dyn LogSink>> {
    let dir = task_dir(logs_dir, cluster, task);
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{container}.log")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Arc::new(FileSink {
        file: Mutex::new((file, len)),
    }))
}

/// A task's log files as they are: container name to text (each line
/// `MS STREAM TEXT`). `None` when the task has no logs here.
pub type TaskFiles = std::collections::BTreeMap<String, String>;

/// The log files of a task on this node.
pub fn task_files(logs_dir: &Path, cluster: &str, task: &str) -> Option<TaskFiles> {
    task_files_from(logs_dir, cluster, task, &Cursor::new()).map(|(files, _)| files)
}

/// Where a reader of a task's logs got to: the bytes of each container's
/// file it has read.
pub type Cursor = std::collections::BTreeMap<String, u64>;

/// The lines of a task's log files on this node past `from` (all of a
/// file it does not name), and where the next read starts. Whole lines
/// only: a line being written is read whole the next time. A file shorter
/// than its place in `from` is read from its start.
pub fn task_files_from(
    logs_dir: &Path,
    cluster: &str,
    task: &str,
    from: &Cursor,
) -> Option<(TaskFiles, Cursor)> {
    use std::io::{Read, Seek, SeekFrom};
    let dir = task_dir(logs_dir, cluster, task);
    let mut files = TaskFiles::new();
    let mut next = Cursor::new();
    for entry in std::fs::read_dir(&dir).ok()? {
        let path = entry.ok()?.path();
        let container = path.file_stem()?.to_string_lossy().into_owned();
        let mut start = from.get(&container).copied().unwrap_or(0);
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if start > len {
                start = 0;
            }
            if f.seek(SeekFrom::Start(start)).is_ok() {
                let _ = f.take(len - start).read_to_end(&mut bytes);
            }
        }
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
        files.insert(
            container.clone(),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
        next.insert(container, start + whole as u64);
    }
    Some((files, next))
}

/// A cursor as it travels (`CONTAINER~BYTES` joined by `.`: container
/// names are letters, digits, `-` and `_`, so it needs no escaping in a
/// query or a header).
pub fn cursor_to_string(cursor: &Cursor) -> String {
    cursor
        .iter()
        .map(|(c, n)| format!("{c}~{n}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Reads [`cursor_to_string`]'s form; says what is wrong with another.
pub fn parse_cursor(s: &str) -> Result<Cursor, String> {
    let mut out = Cursor::new();
    for part in s.split('.').filter(|p| !p.is_empty()) {
        let parsed = part.split_once('~').and_then(|(c, n)| {
            let name_ok = !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            Some((c.to_string(), n.parse::<u64>().ok().filter(|_| name_ok)?))
        });
        let Some((c, n)) = parsed else {
            return Err(format!(
                "from: {part:?} is not CONTAINER~BYTES; pass back the x-skiff-log-cursor of the last answer"
            ));
        };
        out.insert(c, n);
    }
    Ok(out)
}

/// A task's logs as text: each line `CONTAINER STREAM LINE` (preceded by
/// its time in ms since the epoch with `timestamps`), in time order across
/// containers.
pub fn format(files: &TaskFiles, timestamps: bool) -> String {
    let mut lines: Vec<(u64, String)> = Vec::new();
    for (container, text) in files {
        for l in parse(text) {
            let line = format!("{container} {} {}", l.stream, l.text);
            lines.push((
                l.ms,
                if timestamps {
                    format!("{} {line}", l.ms)
                } else {
                    line
                },
            ));
        }
    }
    lines.sort_by_key(|(ms, _)| *ms);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was written, in ms since the epoch.
    pub ms: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub text: String,
}

/// The lines of a container's log file, oldest first.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let ms = parts.next()?.parse().ok()?;
            let stream = parts.next()?.to_string();
            Some(Line {
                ms,
                stream,
                text: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

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

/// The index entries of a new task's `awslogs` streams, written with it.
pub fn stream_writes(t: &crate::model::task::TaskRecord) -> Vec<crate::store::Write> {
    t.log_streams
        .iter()
        .map(|(g, s)| {
            let container = s.rsplit('/').nth(1).unwrap_or_default();
            let v = serde_json::json!({
                "cluster": t.cluster,
                "task": t.id,
                "container": container,
                "creationTime": (t.created_at * 1000.0) as u64,
            });
            crate::store::Write::Put(stream_key(g, s), v.to_string().into_bytes())
        })
        .collect()
}

/// Removes a task's stream index entries (when it is forgotten).
pub fn stream_deletes(t: &crate::model::task::TaskRecord) -> Vec<crate::store::Write> {
    t.log_streams
        .iter()
        .map(|(g, s)| crate::store::Write::Delete(stream_key(g, s)))
        .collect()
}

/// Removes a task's logs (when the task itself is forgotten).
pub fn remove(logs_dir: &Path, cluster: &str, task: &str) {
    let _ = std::fs::remove_dir_all(task_dir(logs_dir, cluster, task));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_whole_lines_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let task = task_dir(dir.path(), "c", "t");
        std::fs::create_dir_all(&task).unwrap();
        let append = |container: &str, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(task.join(format!("{container}.log")))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("web", "1 stdout one\n2 stdout tw");
        append("side", "1 stderr s1\n");
        let (files, cursor) = task_files_from(dir.path(), "c", "t", &Cursor::new()).unwrap();
        assert_eq!(
            files["web"], "1 stdout one\n",
            "the line being written waits"
        );
        assert_eq!(files["side"], "1 stderr s1\n");
        assert_eq!(cursor_to_string(&cursor), "side~12.web~13");
        assert_eq!(parse_cursor(&cursor_to_string(&cursor)), Ok(cursor.clone()));

        append("web", "o\n3 stdout three\n");
        let (files, next) = task_files_from(dir.path(), "c", "t", &cursor).unwrap();
        assert_eq!(files["web"], "2 stdout two\n3 stdout three\n");
        assert_eq!(files["side"], "");
        assert_eq!(format(&files, false), "web stdout two\nweb stdout three\n");
        // Nothing new: nothing read, the same place.
        let (files, again) = task_files_from(dir.path(), "c", "t", &next).unwrap();
        assert!(files.values().all(String::is_empty));
        assert_eq!(again, next);
        // A place past a file's end (another file): read from its start.
        let far: Cursor = [("side".to_string(), 999)].into();
        assert_eq!(
            task_files_from(dir.path(), "c", "t", &far).unwrap().0["side"],
            "1 stderr s1\n"
        );

        for bad in ["web", "web~x", "~3", "w/eb~1"] {
            let e = parse_cursor(bad).unwrap_err();
            assert!(e.starts_with("from:"), "{bad}: {e}");
        }
        assert_eq!(parse_cursor(""), Ok(Cursor::new()));
    }
}
