//! The pod MTU: written to the file the CNI plugin reads when a pod is set up (the
//! value is decided by [`super::tunnels::pod_mtu`]). A failed write is tried again at
//! the next reconcile.

use std::path::{Path, PathBuf};

use tracing::info;

/// How the MTU applier writes the value.
pub(crate) trait MtuIo {
    /// Writes `mtu`; the error names the file.
    fn write(&mut self, mtu: u32) -> Result<(), String>;
}

/// The MTU file, written atomically.
pub struct MtuFile<'a>(pub &'a Path);

impl MtuIo for MtuFile<'_> {
    fn write(&mut self, mtu: u32) -> Result<(), String> {
        write_file(self.0, &mtu.to_string())
            .map_err(|e| format!("mtu-file {}: {e}", self.0.display()))
    }
}

/// Writes `text` to `path` through a temporary file and a rename, creating the
/// directory.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The MTU written last.
#[derive(Debug, Default)]
pub struct MtuApplier {
    applied: Option<u32>,
}

impl MtuApplier {
    /// Writes `want` unless it is what was written; `None` (no underlay known) writes
    /// nothing. Returns the problem of a failed write.
    pub(crate) fn apply(&mut self, want: Option<u32>, io: &mut impl MtuIo) -> Option<String> {
        let mtu = want?;
        if self.applied == Some(mtu) {
            return None;
        }
        match io.write(mtu) {
            Ok(()) => {
                info!(mtu, "pod MTU");
                self.applied = Some(mtu);
                None
            }
            Err(e) => Some(e),
        }
    }

    /// The MTU written.
    pub fn applied(&self) -> Option<u32> {
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        written: Vec<u32>,
        fail: bool,
    }

    impl MtuIo for Fake {
        fn write(&mut self, mtu: u32) -> Result<(), String> {
            self.written.push(mtu);
            if self.fail {
                Err("mtu-file /x: read-only".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn written_once_per_value() {
        let (mut a, mut io) = (MtuApplier::default(), Fake::default());
        assert_eq!(a.apply(Some(1450), &mut io), None);
        assert_eq!(a.apply(Some(1450), &mut io), None);
        assert_eq!(a.apply(None, &mut io), None);
        assert_eq!(a.apply(Some(1480), &mut io), None);
        assert_eq!(io.written, vec![1450, 1480]);
        assert_eq!(a.applied(), Some(1480));
    }

    #[test]
    fn a_failed_write_is_a_problem_and_retried_next_time() {
        let mut a = MtuApplier::default();
        let mut io = Fake {
            fail: true,
            ..Fake::default()
        };
        assert_eq!(
            a.apply(Some(1450), &mut io).as_deref(),
            Some("mtu-file /x: read-only")
        );
        assert_eq!(a.applied(), None);
        io.fail = false;
        assert_eq!(a.apply(Some(1450), &mut io), None);
        assert_eq!(io.written, vec![1450, 1450]);
        assert_eq!(a.applied(), Some(1450));
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/mtu");
        MtuFile(&path).write(1430).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1430");
    }
}
