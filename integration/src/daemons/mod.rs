//! Real BGP daemons as test peers, all driven through one trait.
//!
//! Each runner renders the daemon's own configuration from a [`RouterSpec`], starts the
//! Debian binary in a namespace with its logs in the test's directory, and answers
//! [`BgpDaemon`] queries by parsing the daemon's own output. A test written against the
//! trait runs unchanged with any daemon on either side, and later with serval itself.

/// `stop`, `kill`, `restart` and `log` of [`BgpDaemon`], the same for every runner here:
/// through its `inst: Instance` and its own `launch` (start the process on the spec).
macro_rules! instance_lifecycle {
    () => {
        fn stop(&mut self) -> Result<()> {
            self.inst.stop()
        }

        fn kill(&mut self) -> Result<()> {
            self.inst.kill();
            Ok(())
        }

        fn restart(&mut self) -> Result<()> {
            self.inst.stop()?;
            self.launch()
        }

        fn log(&self) -> String {
            self.inst.log()
        }
    };
}

pub mod bfdd;
pub mod bird;
pub mod exabgp;
pub mod frr;
pub mod gobgp;
pub mod openbgpd;

pub use bfdd::Bfdd;
pub use bird::Bird;
pub use exabgp::ExaBgp;
pub use frr::Frr;
pub use gobgp::GoBgp;
pub use openbgpd::OpenBgpd;

use crate::error::{Error, Result};
use crate::netns::{Netns, NsChild, NsHandle};
use crate::observed::{Route, SessionStatus};
use crate::spec::{Announcement, RouterSpec};
use crate::wait::wait_for;
use crate::workdir::TestDir;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a graceful stop may take before the daemon is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a freshly started daemon may take to answer on its control channel.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A BGP router the test can configure, query and disturb.
pub trait BgpDaemon {
    /// Which daemon this is ("bird", "frr", …), for messages.
    fn kind(&self) -> &'static str;

    /// Renders the config, starts the daemon in `ns` and waits until it answers queries.
    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self>
    where
        Self: Sized;

    /// The spec as it stands, including announcements made since start.
    fn spec(&self) -> &RouterSpec;

    /// The state of every configured session.
    fn sessions(&self) -> Result<Vec<SessionStatus>>;

    /// Routes received from `neighbor` (all its families), after import policy.
    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>>;

    /// Every route the daemon holds, its own and learned.
    fn rib(&self) -> Result<Vec<Route>>;

    /// Starts originating (or changes the attributes of) a prefix at run time.
    fn announce(&mut self, announcement: Announcement) -> Result<()>;

    /// Stops originating a prefix at run time.
    fn withdraw(&mut self, prefix: IpNet) -> Result<()>;

    /// Stops the daemon the polite way (it closes its sessions with a NOTIFICATION).
    fn stop(&mut self) -> Result<()>;

    /// Kills the daemon with SIGKILL: sessions drop without a word, as in a crash —
    /// what a graceful-restart test needs.
    fn kill(&mut self) -> Result<()>;

    /// Starts the daemon again with the config of the current spec.
    fn restart(&mut self) -> Result<()>;

    /// The daemon's log so far.
    fn log(&self) -> String;

    /// The state of the session with `neighbor`.
    fn session(&self, neighbor: IpAddr) -> Result<SessionStatus> {
        let sessions = self.sessions()?;
        Ok(sessions
            .into_iter()
            .find(|s| s.neighbor == neighbor)
            .unwrap_or(SessionStatus {
                neighbor,
                established: false,
                state: "not listed".into(),
            }))
    }

    /// Waits until the session with `neighbor` is established.
    fn wait_established(&self, neighbor: IpAddr, timeout: Duration) -> Result<SessionStatus> {
        wait_for(
            timeout,
            &format!("{} session with {neighbor} to be established", self.kind()),
            || self.session(neighbor),
            |s| s.established,
        )
    }

    /// Waits until `prefix` has been received from `neighbor` and returns its path.
    fn wait_route(&self, neighbor: IpAddr, prefix: IpNet, timeout: Duration) -> Result<Route> {
        let prefix = prefix.trunc();
        let routes = wait_for(
            timeout,
            &format!("{} to receive {prefix} from {neighbor}", self.kind()),
            || self.received_routes(neighbor),
            |routes| routes.iter().any(|r| r.prefix == prefix),
        )?;
        routes
            .into_iter()
            .find(|r| r.prefix == prefix)
            .ok_or_else(|| Error::InvalidSpec(format!("{prefix} vanished")))
    }

    /// Waits until `prefix` is no longer among the routes received from `neighbor`.
    fn wait_route_gone(&self, neighbor: IpAddr, prefix: IpNet, timeout: Duration) -> Result<()> {
        let prefix = prefix.trunc();
        wait_for(
            timeout,
            &format!("{} to lose {prefix} from {neighbor}", self.kind()),
            || self.received_routes(neighbor),
            |routes| routes.iter().all(|r| r.prefix != prefix),
        )
        .map(drop)
    }
}

/// What every runner shares: the namespace, its directory and log, and the process.
#[derive(Debug)]
pub(crate) struct Instance {
    pub kind: &'static str,
    pub ns: NsHandle,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<NsChild>,
}

impl Instance {
    pub fn new(kind: &'static str, ns: &Netns, test: &TestDir, spec: &RouterSpec) -> Result<Self> {
        spec.validate()?;
        let dir = test.subdir(&format!("{kind}-{}", spec.router_id))?;
        let log = dir.join(format!("{kind}.log"));
        Ok(Instance {
            kind,
            ns: ns.handle(),
            dir,
            log,
            child: None,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn path_str(&self, file: &str) -> String {
        self.path(file).to_string_lossy().into_owned()
    }

    pub fn write(&self, file: &str, contents: &str) -> Result<PathBuf> {
        let path = self.path(file);
        std::fs::write(&path, contents).map_err(|e| Error::io("writing", &path, e))?;
        Ok(path)
    }

    /// Starts the daemon's main process with its output in the log.
    pub fn spawn(&mut self, argv: &[&str]) -> Result<()> {
        self.child = Some(self.ns.spawn(argv, Some(&self.log))?);
        Ok(())
    }

    /// Fails if the main process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        let status = match self.child.as_mut() {
            None => None,
            Some(child) => child.try_wait()?,
        };
        match (&self.child, status) {
            (Some(_), None) => Ok(()),
            (None, _) => Err(Error::NotRunning {
                daemon: self.kind.to_string(),
            }),
            (Some(child), Some(status)) => Err(Error::Command {
                command: child.command().to_string(),
                status: format!("exited early, {status}"),
                stdout: String::new(),
                stderr: tail_of(&self.log),
            }),
        }
    }

    /// Waits until `probe` succeeds, failing early if the daemon dies meanwhile.
    pub fn wait_ready(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&NsHandle) -> Result<()>,
    ) -> Result<()> {
        let ns = self.ns.clone();
        let mut died = None;
        let child = &mut self.child;
        let result = wait_for(
            READY_TIMEOUT,
            &format!("{} to answer {what}", self.kind),
            || {
                if let Some(c) = child.as_mut() {
                    if let Some(status) = c.try_wait()? {
                        died = Some(status);
                        return Ok(true);
                    }
                }
                probe(&ns).map(|()| true)
            },
            |ok| *ok,
        );
        if died.is_some() {
            return self.check_alive();
        }
        result.map(drop)
    }

    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        self.ns.exec(argv)
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.terminate(STOP_GRACE)?;
        }
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `a:b` pairs out of text such as `(65001,10) (65001, 11)`.
pub(crate) fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_splits_on_anything_else() {
        assert_eq!(
            numbers("(65001,10) (65001, 11)"),
            vec![65001, 10, 65001, 11]
        );
        assert_eq!(numbers(""), Vec::<u64>::new());
    }
}
