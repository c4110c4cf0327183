//! Container logs: every line of a container's stdout and stderr, with
//! its time, appended to `logs/CLUSTER/TASK/CONTAINER.log` in the data
//! directory, readable while the task runs and after it stops.
//!
//! A container keeps its newest lines: when its file would pass
//! [`MAX_LOG_BYTES`] it becomes `CONTAINER.log.1` (replacing the one
//! before) and a new file starts, so a container holds at most twice that.
//! `CONTAINER.base` says how many bytes the container wrote before its
//! current file, so that a reader's place ([`Cursor`]) survives rotation.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_runtime::{LogSink, LogStream};

/// The most a container's log file holds before it is rotated (a
/// container keeps at most twice this).
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// A task's log directory.
pub fn task_dir(logs_dir: &Path, cluster: &str, task: &str) -> PathBuf {
    logs_dir.join(cluster).join(task)
}

struct FileSink {
    file: Mutex<Current>,
    /// The most bytes a file holds before it is rotated.
    limit: u64,
    /// The container's current file, and where its older one and its
    /// base go.
    path: PathBuf,
}

/// A container's file being written.
struct Current {
    file: File,
    /// Bytes in it.
    written: u64,
    /// Bytes the container wrote before it (in rotated files).
    base: u64,
}

/// `CONTAINER.log.1`: the file before the current one.
fn rotated(path: &Path) -> PathBuf {
    path.with_extension("log.1")
}

/// `CONTAINER.base`: how many bytes came before the current file.
fn base_path(path: &Path) -> PathBuf {
    path.with_extension("base")
}

fn read_base(path: &Path) -> u64 {
    std::fs::read_to_string(base_path(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl FileSink {
    /// Moves the current file aside and starts a new one. The base is
    /// written first (to a temporary file renamed into place), so that a
    /// reader never sees a new, short file with the old base.
    fn rotate(&self, cur: &mut Current) -> std::io::Result<()> {
        let base = cur.base + cur.written;
        let tmp = self.path.with_extension("base.tmp");
        std::fs::write(&tmp, base.to_string())?;
        std::fs::rename(&self.path, rotated(&self.path))?;
        std::fs::rename(&tmp, base_path(&self.path))?;
        cur.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        cur.written = 0;
        cur.base = base;
        Ok(())
    }
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
        let entry = format!("{ms} {s} {line}\n");
        let mut cur = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if cur.written > 0 && cur.written + entry.len() as u64 > self.limit {
            // A disk that refuses the rename keeps the file growing
            // rather than losing the line.
            let _ = self.rotate(&mut cur);
        }
        // A full disk loses log lines, never the task.
        if cur.file.write_all(entry.as_bytes()).is_ok() {
            cur.written += entry.len() as u64;
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
    bounded_sink(logs_dir, cluster, task, container, MAX_LOG_BYTES)
}

fn bounded_sink(
    logs_dir: &Path,
    cluster: &str,
    task: &str,
    container: &str,
    limit: u64,
) -> std::io::Result<Arc<dyn LogSink>> {
    let dir = task_dir(logs_dir, cluster, task);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{container}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Arc::new(FileSink {
        file: Mutex::new(Current {
            file,
            written,
            base: read_base(&path),
        }),
        limit,
        path,
    }))
}

/// A task's log files as they are: container name to text (each line
/// `MS STREAM TEXT`). `None` when the task has no logs here.
pub type TaskFiles = std::collections::BTreeMap<String, String>;

/// The log files of a task on this node.
pub fn task_files(logs_dir: &Path, cluster: &str, task: &str) -> Option<TaskFiles> {
    task_files_from(logs_dir, cluster, task, &Cursor::new()).map(|(files, _)| files)
}

/// Where a reader of a task's logs got to: per container, the bytes the
/// container had written up to there (across rotations).
pub type Cursor = std::collections::BTreeMap<String, u64>;

/// The bytes of the file at `path` from `start` to its end (none when it
/// cannot be read).
fn read_from(path: &Path, start: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut bytes);
        }
    }
    bytes
}

/// A container's bytes from `wanted` (in what it wrote over time) to the
/// end of its current file, and the place they start at: `wanted`, or the
/// oldest place kept when `wanted` was rotated away or lies past the end.
/// A read that a rotation overlapped (its base or its current file
/// changed) is read again.
fn read_container(path: &Path, wanted: u64) -> (Vec<u8>, u64) {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.ino(), m.len()));
    let old = rotated(path);
    let mut last = (Vec::new(), wanted);
    for _ in 0..8 {
        let base = read_base(path);
        let Some((cur, cur_len)) = ino(path) else {
            // Between the renames of a rotation.
            std::thread::yield_now();
            continue;
        };
        let old_len = ino(&old).map_or(0, |(_, len)| len);
        let oldest = base.saturating_sub(old_len);
        let start = if wanted > base + cur_len || wanted < oldest {
            oldest
        } else {
            wanted
        };
        let mut bytes = Vec::new();
        if start < base {
            bytes = read_from(&old, start - oldest);
        }
        bytes.extend(read_from(path, start.saturating_sub(base)));
        last = (bytes, start);
        if read_base(path) == base && ino(path).map(|(i, _)| i) == Some(cur) {
            break;
        }
    }
    last
}

/// The lines of a task's log files on this node past `from` (all that is
/// kept of a container it does not name), and where the next read starts.
/// Whole lines only: a line being written is read whole the next time. A
/// place past what a container wrote (another task's) reads all that is
/// kept; a place in lines rotated away reads from the oldest kept.
pub fn task_files_from(
    logs_dir: &Path,
    cluster: &str,
    task: &str,
    from: &Cursor,
) -> Option<(TaskFiles, Cursor)> {
    let dir = task_dir(logs_dir, cluster, task);
    let mut files = TaskFiles::new();
    let mut next = Cursor::new();
    for entry in std::fs::read_dir(&dir).ok()? {
        let path = entry.ok()?.path();
        let Some(container) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .map(str::to_string)
        else {
            continue;
        };
        let wanted = from.get(&container).copied().unwrap_or(0);
        let (bytes, start) = read_container(&path, wanted);
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut bytes = bytes;
        bytes.truncate(whole);
        files.insert(
            container.clone(),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
        next.insert(container, start + whole as u64);
    }
    Some((files, next))
}

/// The bytes each container of a task keeps on this node (its current
/// and rotated files); `None` when the task has no logs here. Read from
/// the files' sizes, not their text.
pub fn task_sizes(logs_dir: &Path, cluster: &str, task: &str) -> Option<Sizes> {
    let mut sizes = Sizes::new();
    for entry in std::fs::read_dir(task_dir(logs_dir, cluster, task)).ok()? {
        let path = entry.ok()?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(container) = name
            .strip_suffix(".log")
            .or_else(|| name.strip_suffix(".log.1"))
        else {
            continue;
        };
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        *sizes.entry(container.to_string()).or_default() += len;
    }
    Some(sizes)
}

/// Container name to the bytes of log it keeps.
pub type Sizes = std::collections::BTreeMap<String, u64>;

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

    #[test]
    fn a_full_file_is_rotated_keeping_the_newest_lines_and_readers_places() {
        let dir = tempfile::tempdir().unwrap();
        let sink = bounded_sink(dir.path(), "c", "t", "web", 100).unwrap();
        let at = |ms: u64| UNIX_EPOCH + std::time::Duration::from_millis(ms);
        // Each line is 20 bytes: "1000 stdout line-00\n".
        let write = |from: u64, to: u64| {
            for i in from..to {
                sink.line(LogStream::Stdout, at(1000 + i), &format!("line-{i:02}"));
            }
        };
        let texts = |files: &TaskFiles| -> Vec<String> {
            parse(&files["web"]).into_iter().map(|l| l.text).collect()
        };
        write(0, 5);
        let (files, first) = task_files_from(dir.path(), "c", "t", &Cursor::new()).unwrap();
        assert_eq!(texts(&files).len(), 5);
        assert_eq!(first["web"], 100);
        // The sixth line rotates: 5 lines in web.log.1, 1 in web.log.
        write(5, 6);
        let task = task_dir(dir.path(), "c", "t");
        assert_eq!(
            std::fs::metadata(task.join("web.log.1")).unwrap().len(),
            100
        );
        assert_eq!(
            std::fs::read_to_string(task.join("web.base")).unwrap(),
            "100"
        );
        let (files, next) = task_files_from(dir.path(), "c", "t", &first).unwrap();
        assert_eq!(
            texts(&files),
            ["line-05"],
            "the reader's place survives rotation"
        );
        // Far past: the whole of two more files; the oldest are dropped.
        write(6, 23);
        let (files, _) = task_files_from(dir.path(), "c", "t", &Cursor::new()).unwrap();
        let kept = texts(&files);
        assert_eq!(kept.first().map(String::as_str), Some("line-15"));
        assert_eq!(kept.last().map(String::as_str), Some("line-22"));
        assert_eq!(kept.len(), 8, "{kept:?}");
        // A place in lines rotated away reads from the oldest kept.
        let (files, end) = task_files_from(dir.path(), "c", "t", &next).unwrap();
        assert_eq!(texts(&files), kept);
        assert_eq!(end["web"], 23 * 20);
        // A place in the rotated file reads on into the current one.
        let mid: Cursor = [("web".to_string(), 18 * 20)].into();
        let (files, _) = task_files_from(dir.path(), "c", "t", &mid).unwrap();
        assert_eq!(
            texts(&files),
            ["line-18", "line-19", "line-20", "line-21", "line-22"]
        );
        // A sink opened again (a restarted node) goes on from the base.
        drop(sink);
        let again = bounded_sink(dir.path(), "c", "t", "web", 100).unwrap();
        again.line(LogStream::Stderr, at(5000), "after");
        let (files, last) = task_files_from(dir.path(), "c", "t", &end).unwrap();
        assert_eq!(texts(&files), ["after"]);
        assert_eq!(last["web"], 23 * 20 + 18);
        assert_eq!(
            format(&task_files(dir.path(), "c", "t").unwrap(), false)
                .lines()
                .last(),
            Some("web stderr after")
        );
    }
}
