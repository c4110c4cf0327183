//! The file sink a container's stdout and stderr go to: each line with
//! its time, appended to the container's file and rotated as
//! [`crate::logs`] lays them out.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_runtime::{LogSink, LogStream};

use crate::logs::{base_path, read_base, rotated, task_dir, MAX_LOG_BYTES};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{format, parse, task_files, task_files_from, Cursor, TaskFiles};

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
