//! Finding the `serval` binary cargo built and starting `serval bgp` in a namespace.
//!
//! Placeholder until the speaker's config format and query socket exist: the config
//! rendered here holds only what every format will need (AS, router id, neighbours),
//! and [`Serval`] does not implement [`crate::BgpDaemon`] yet — that needs the query
//! API behind `--socket`.

use crate::error::{Error, Result};
use crate::netns::{Netns, NsChild, NsHandle};
use crate::spec::RouterSpec;
use crate::workdir::TestDir;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Overrides where the binary is looked for.
pub const BIN_ENV: &str = "SERVAL_BIN";

/// The `serval` binary: `$SERVAL_BIN`, else `$CARGO_TARGET_DIR/debug/serval`, else the
/// target directory holding this test executable (`target/debug/deps/x` →
/// `target/debug/serval`).
pub fn binary() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating", "the test executable", e))?;
    let candidates = candidates(
        std::env::var_os(BIN_ENV),
        std::env::var_os("CARGO_TARGET_DIR"),
        &exe,
    );
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "no serval binary at {candidates:?}: run `cargo build -p serval` or set {BIN_ENV}"
            ))
        })
}

/// Where to look, in order.
fn candidates(bin: Option<OsString>, target_dir: Option<OsString>, exe: &Path) -> Vec<PathBuf> {
    if let Some(bin) = bin {
        // An explicit choice is the only candidate: never silently test another build.
        return vec![PathBuf::from(bin)];
    }
    let mut out = Vec::new();
    if let Some(dir) = target_dir {
        out.push(Path::new(&dir).join("debug").join("serval"));
    }
    // target/debug/deps/<test> → target/debug/serval
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        out.push(profile_dir.join("serval"));
    }
    out
}

/// Minimal speaker config: the integrator replaces this with the real format.
pub fn render_config(spec: &RouterSpec) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "asn = {}", spec.asn);
    let _ = writeln!(c, "router_id = \"{}\"", spec.router_id);
    for n in &spec.neighbors {
        c.push_str("\n[[neighbors]]\n");
        let _ = writeln!(c, "address = \"{}\"", n.address);
        let _ = writeln!(c, "asn = {}", n.asn);
        if n.passive {
            c.push_str("passive = true\n");
        }
    }
    c
}

/// A running `serval bgp --config FILE --socket PATH`.
#[derive(Debug)]
pub struct Serval {
    ns: NsHandle,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<NsChild>,
}

impl Serval {
    pub fn start(ns: &Netns, dir: &TestDir, spec: &RouterSpec) -> Result<Serval> {
        let sub = dir.subdir(&format!("serval-{}", spec.router_id))?;
        let config = sub.join("serval.toml");
        std::fs::write(&config, render_config(spec))
            .map_err(|e| Error::io("writing", &config, e))?;
        let mut s = Serval {
            ns: ns.handle(),
            config,
            socket: sub.join("serval.sock"),
            log: sub.join("serval.log"),
            child: None,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<()> {
        let bin = binary()?;
        let argv = [
            bin.to_string_lossy().into_owned(),
            "bgp".into(),
            "--config".into(),
            self.config.to_string_lossy().into_owned(),
            "--socket".into(),
            self.socket.to_string_lossy().into_owned(),
        ];
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.child = Some(self.ns.spawn(&refs, Some(&self.log))?);
        Ok(())
    }

    /// The control socket `serval bgp` was told to serve.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?.is_none()),
            None => Ok(false),
        }
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Asn, NeighborSpec};
    use std::net::Ipv4Addr;

    #[test]
    fn explicit_binary_wins_alone() {
        let c = candidates(
            Some("/opt/serval".into()),
            Some("/t".into()),
            Path::new("/x/debug/deps/t"),
        );
        assert_eq!(c, vec![PathBuf::from("/opt/serval")]);
    }

    #[test]
    fn target_dir_then_next_to_the_test_executable() {
        let c = candidates(
            None,
            Some("/t".into()),
            Path::new("/w/target/debug/deps/testbed-1"),
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/t/debug/serval"),
                PathBuf::from("/w/target/debug/serval")
            ]
        );
    }

    #[test]
    fn config_names_asn_router_id_and_neighbours() {
        let spec = RouterSpec::new(Asn(65001), Ipv4Addr::new(192, 0, 2, 1))
            .neighbor(NeighborSpec::new("192.0.2.2".parse().unwrap(), Asn(65002)).passive());
        let c = render_config(&spec);
        assert!(c.contains("asn = 65001"), "{c}");
        assert!(c.contains("router_id = \"192.0.2.1\""), "{c}");
        assert!(
            c.contains("address = \"192.0.2.2\"\nasn = 65002\npassive = true"),
            "{c}"
        );
    }
}
