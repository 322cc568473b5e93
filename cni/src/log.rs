//! The plugin's log: a file under /var/log/serval (stdout belongs to the protocol),
//! rotated by size. Many plugin processes append to it at once: each line is one
//! `write(2)` on an `O_APPEND` descriptor, and rotation happens at start-up under a lock
//! so that two processes never rotate the same file twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::config::LogSettings;

/// How long a plugin waits for another one's rotation.
const ROTATE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `path.N`, the N-th rotated file.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Rotates `path` when it has reached `max_size`: `path.N-1` → `path.N`, …, `path` →
/// `path.1`, keeping `max_count` files and none older than `max_age`.
pub fn rotate_if_needed(s: &LogSettings) -> io::Result<()> {
    let big = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len() >= s.max_size)
            .unwrap_or(false)
    };
    if !big(&s.path) {
        return Ok(());
    }
    let mut lock_path = s.path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    // Root's alone, and waited for a bounded time: a rotation is worth less than the
    // pod the plugin is wiring.
    let lock = ipam::store::file::open_private(&lock_path)?;
    ipam::store::file::lock_within(&lock, ROTATE_LOCK_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", lock_path.display())))?;
    // Another process may have rotated while this one waited.
    if !big(&s.path) {
        return Ok(());
    }
    let _ = fs::remove_file(rotated(&s.path, s.max_count));
    for n in (1..s.max_count).rev() {
        let from = rotated(&s.path, n);
        if from.exists() {
            fs::rename(&from, rotated(&s.path, n + 1))?;
        }
    }
    if s.max_count == 0 {
        fs::remove_file(&s.path)?;
    } else {
        fs::rename(&s.path, rotated(&s.path, 1))?;
    }
    let now = SystemTime::now();
    for n in 1..=s.max_count {
        let p = rotated(&s.path, n);
        let old = fs::metadata(&p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > s.max_age);
        if old {
            let _ = fs::remove_file(&p);
        }
    }
    Ok(())
}

/// Each formatted event is written with a single `write_all` on an append-mode file.
struct LineWriter {
    file: Mutex<File>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineBuf<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineBuf {
            out: &self.file,
            buf: Vec::with_capacity(256),
        }
    }
}

/// Collects one event and writes it in one go when dropped.
struct LineBuf<'a> {
    out: &'a Mutex<File>,
    buf: Vec<u8>,
}

impl Write for LineBuf<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.out.lock() {
            let _ = f.write_all(&self.buf);
        }
    }
}

/// Sends tracing's events to the log file. Failing to open the log is not a reason to
/// fail a pod: the error comes back for the caller to mention, and events are dropped.
pub fn init(s: &LogSettings) -> io::Result<()> {
    if let Some(dir) = s.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ipam::store::file::ensure_private_dir(dir)?;
    }
    // A rotation that cannot happen now (its lock stays busy) happens on a later call.
    let rotation = rotate_if_needed(s);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&s.path)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&s.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(LineWriter {
            file: Mutex::new(file),
        })
        .try_init();
    if let Err(e) = rotation {
        tracing::warn!(error = %e, path = %s.path.display(), "log rotation skipped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rotation_keeps_count_and_shifts() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogSettings {
            path: dir.path().join("cni.log"),
            level: "info".into(),
            max_size: 10,
            max_count: 2,
            max_age: Duration::from_secs(3600),
        };
        for gen in 0..4 {
            fs::write(&s.path, format!("generation {gen}\n")).unwrap();
            rotate_if_needed(&s).unwrap();
            assert!(!s.path.exists(), "rotated away");
        }
        assert_eq!(
            fs::read_to_string(rotated(&s.path, 1)).unwrap(),
            "generation 3\n"
        );
        assert_eq!(
            fs::read_to_string(rotated(&s.path, 2)).unwrap(),
            "generation 2\n"
        );
        assert!(!rotated(&s.path, 3).exists());
        // A small file stays.
        fs::write(&s.path, "x").unwrap();
        rotate_if_needed(&s).unwrap();
        assert!(s.path.exists());
    }

    #[test]
    fn old_rotated_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogSettings {
            path: dir.path().join("cni.log"),
            level: "info".into(),
            max_size: 1,
            max_count: 5,
            max_age: Duration::from_secs(86400),
        };
        fs::write(rotated(&s.path, 1), "old").unwrap();
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
        File::options()
            .write(true)
            .open(rotated(&s.path, 1))
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        fs::write(&s.path, "new").unwrap();
        rotate_if_needed(&s).unwrap();
        assert!(!rotated(&s.path, 2).exists(), "older than max_age");
        assert!(rotated(&s.path, 1).exists(), "the fresh one stays");
    }
}
