//! A scratch directory per test for configs, sockets and daemon logs. When the test
//! fails — by panic, or by returning an error through [`scenario`] — every log and
//! config in it is printed, so a red test shows what the daemons said. A passing test
//! removes it.

use crate::error::{Error, Result};
use crate::netns::{owner_pid, process_exists, PREFIX};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Per-test directory `/tmp/sv-<pid>-<n>-<name>`; short because daemons put Unix
/// sockets in it (108 bytes at most for a socket path).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    dumped: bool,
}

impl TestDir {
    pub fn new(name: &str) -> Result<TestDir> {
        let short: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(24)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}-{short}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| Error::io("creating", &path, e))?;
        Ok(TestDir {
            path,
            dumped: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory (created) for one daemon.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        Ok(dir)
    }

    /// Every log and config file under the directory, each under a header.
    pub fn logs(&self) -> String {
        let mut files = Vec::new();
        collect(&self.path, &mut files);
        files.sort();
        let mut out = String::new();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let _ = writeln!(out, "===== {} =====", file.display());
            out.push_str(tail(&text, 64 * 1024));
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Prints [`TestDir::logs`] to stderr (once) and keeps the directory.
    pub fn dump_logs(&mut self) {
        if !self.dumped {
            self.dumped = true;
            eprintln!("{}", self.logs());
            eprintln!("(kept {} for inspection)", self.path.display());
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if !self.dumped {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs a test body with its own [`TestDir`]. An error returned by the body prints
/// the logs and fails the test with the error's message; a panic does the same
/// through the directory's drop.
pub fn scenario(name: &str, body: impl FnOnce(&TestDir) -> Result<()>) {
    sweep_stale_dirs();
    let mut dir = match TestDir::new(name) {
        Ok(dir) => dir,
        Err(err) => panic!("{name}: {err:?}"),
    };
    if let Err(err) = body(&dir) {
        dir.dump_logs();
        panic!("{name}: {err:?}");
    }
}

/// Removes scratch directories of test processes that no longer exist.
pub fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name) {
            if !process_exists(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Logs, configs and JSON the daemons wrote; sockets, FIFOs and pid files are skipped.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(&path, out);
        } else if kind.is_file() {
            let keep = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "log" | "conf" | "toml" | "jsonl" | "py"));
            if keep {
                out.push(path);
            }
        }
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_include_log_and_config_files() {
        let dir = TestDir::new("logs/test").unwrap();
        let sub = dir.subdir("bird").unwrap();
        std::fs::write(sub.join("bird.log"), "hello from bird").unwrap();
        std::fs::write(sub.join("bird.conf"), "router id 1.2.3.4;").unwrap();
        std::fs::write(sub.join("bird.pid"), "42").unwrap();
        let logs = dir.logs();
        assert!(logs.contains("hello from bird"), "{logs}");
        assert!(logs.contains("router id"), "{logs}");
        assert!(!logs.contains("42\n"), "{logs}");
        assert!(dir.path().to_string_lossy().contains("logs_test"));
    }

    #[test]
    fn passing_test_removes_its_dir() {
        let path = {
            let dir = TestDir::new("removed").unwrap();
            dir.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("abc", 10), "abc");
    }
}
