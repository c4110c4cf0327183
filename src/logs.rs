//! Container logs on the node that ran the task: every line of a
//! container's stdout and stderr, with its time, in
//! `logs/CLUSTER/TASK/CONTAINER.log` in the data directory, readable while
//! the task runs and after it stops. The agent writes them (its file
//! sink); the API reads them, here or through the node that has them.
//!
//! A container keeps its newest lines: when its file would pass
//! [`MAX_LOG_BYTES`] it becomes `CONTAINER.log.1` (replacing the one
//! before) and a new file starts, so a container holds at most twice that.
//! `CONTAINER.base` says how many bytes the container wrote before its
//! current file, so that a reader's place ([`Cursor`]) survives rotation.

use std::path::{Path, PathBuf};

/// The most a container's log file holds before it is rotated (a
/// container keeps at most twice this).
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// A task's log directory.
pub fn task_dir(logs_dir: &Path, cluster: &str, task: &str) -> PathBuf {
    logs_dir.join(cluster).join(task)
}

/// `CONTAINER.log.1`: the file before the current one.
pub fn rotated(path: &Path) -> PathBuf {
    path.with_extension("log.1")
}

/// `CONTAINER.base`: how many bytes came before the current file.
pub fn base_path(path: &Path) -> PathBuf {
    path.with_extension("base")
}

/// The bytes a container wrote before its current file at `path`.
pub fn read_base(path: &Path) -> u64 {
    std::fs::read_to_string(base_path(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
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

/// A cursor that is not [`cursor_to_string`]'s form: the part that is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("from: {0:?} is not CONTAINER~BYTES; pass back the x-skiff-log-cursor of the last answer")]
pub struct BadCursor(pub String);

/// Reads [`cursor_to_string`]'s form; says what is wrong with another.
pub fn parse_cursor(s: &str) -> Result<Cursor, BadCursor> {
    let mut out = Cursor::new();
    for part in s.split('.').filter(|p| !p.is_empty()) {
        let parsed = part.split_once('~').and_then(|(c, n)| {
            let name_ok = !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            Some((c.to_string(), n.parse::<u64>().ok().filter(|_| name_ok)?))
        });
        let Some((c, n)) = parsed else {
            return Err(BadCursor(part.to_string()));
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

/// Removes a task's logs (when the task itself is forgotten).
pub fn remove(logs_dir: &Path, cluster: &str, task: &str) {
    let _ = std::fs::remove_dir_all(task_dir(logs_dir, cluster, task));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
            assert_eq!(e, BadCursor(bad.to_string()));
            assert!(e.to_string().starts_with("from:"), "{bad}: {e}");
        }
        assert_eq!(parse_cursor(""), Ok(Cursor::new()));
    }
}
