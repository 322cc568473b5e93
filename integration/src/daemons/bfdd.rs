//! FRR's `bfdd` on its own, with its peers configured statically (`bfd` / `peer ADDR`),
//! queried with `vtysh -d bfdd … json`. Without zebra FRR's bgpd cannot ask bfdd for
//! sessions, so a test pairs this with a BGP daemon of its choice; the BFD sessions are
//! what is tested against it.

use crate::error::{Error, Result};
use crate::netns::{Netns, NsChild, NsHandle};
use crate::spec::BfdSpec;
use crate::tools;
use crate::wait::wait_for;
use crate::workdir::TestDir;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const BFDD: &str = "/usr/lib/frr/bfdd";

#[derive(Debug)]
pub struct Bfdd {
    ns: NsHandle,
    dir: PathBuf,
    child: Option<NsChild>,
}

/// One peer as bfdd shows it (`show bfd peers json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfddPeer {
    pub peer: IpAddr,
    /// "up", "down", "init", "shutdown".
    pub status: String,
    /// The intervals bfdd uses for the session, milliseconds.
    pub transmit_interval: u64,
    pub receive_interval: u64,
    /// What serval (the remote) asked for.
    pub remote_transmit_interval: u64,
    pub remote_receive_interval: u64,
    pub remote_detect_multiplier: u64,
    pub diagnostic: String,
    pub remote_diagnostic: String,
}

impl Bfdd {
    /// Starts bfdd in `ns` with a session to each of `peers`.
    pub fn start(ns: &Netns, dir: &TestDir, peers: &[(IpAddr, BfdSpec)]) -> Result<Bfdd> {
        tools::require_all(&[BFDD, "vtysh"])?;
        let sub = dir.subdir(&format!("bfdd-{}", ns.name()))?;
        // bfdd runs as the frr user: its sockets go where that user may write.
        std::fs::set_permissions(&sub, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(|e| Error::io("opening up", &sub, e))?;
        let mut conf = String::from("bfd\n");
        for (addr, b) in peers {
            let _ = writeln!(
                conf,
                " peer {addr}\n  receive-interval {}\n  transmit-interval {}\n  detect-multiplier {}\n !",
                b.min_rx_ms, b.min_tx_ms, b.multiplier
            );
        }
        conf.push_str("!\n");
        let conf_path = sub.join("bfdd.conf");
        std::fs::write(&conf_path, conf).map_err(|e| Error::io("writing", &conf_path, e))?;
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let (conf, pid, ctl, vty) = (
            s(conf_path),
            s(sub.join("bfdd.pid")),
            s(sub.join("bfdd.sock")),
            s(sub.clone()),
        );
        let argv = [
            BFDD,
            "-f",
            &conf,
            "-i",
            &pid,
            "--bfdctl",
            &ctl,
            "--vty_socket",
            &vty,
            "--log",
            "stdout",
        ];
        let child = ns.handle().spawn(&argv, Some(&sub.join("bfdd.log")))?;
        let b = Bfdd {
            ns: ns.handle(),
            dir: sub,
            child: Some(child),
        };
        wait_for(
            Duration::from_secs(30),
            "bfdd to answer on its vty",
            || b.peers(),
            |_| true,
        )?;
        Ok(b)
    }

    /// Runs vtysh commands against bfdd, in order; a `%` line is an error.
    pub fn vtysh(&self, commands: &[&str]) -> Result<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut argv = vec!["vtysh", "--vty_socket", dir.as_str(), "-d", "bfdd"];
        for c in commands {
            argv.push("-c");
            argv.push(c);
        }
        let out = self.ns.exec(&argv)?;
        if let Some(line) = out.lines().find(|l| l.trim_start().starts_with('%')) {
            return Err(Error::Command {
                command: argv.join(" "),
                status: "vtysh reported an error".into(),
                stdout: out.clone(),
                stderr: line.to_string(),
            });
        }
        Ok(out)
    }

    /// Changes a peer's settings in bfdd's running configuration (`shutdown`,
    /// `receive-interval 200`, …).
    pub fn configure_peer(&self, peer: IpAddr, lines: &[&str]) -> Result<()> {
        let head = format!("peer {peer}");
        let mut cmds = vec!["configure terminal", "bfd", head.as_str()];
        cmds.extend_from_slice(lines);
        self.vtysh(&cmds).map(drop)
    }

    pub fn peers(&self) -> Result<Vec<BfddPeer>> {
        let cmd = "show bfd peers json";
        let out = self.vtysh(&[cmd])?;
        let v: Value =
            serde_json::from_str(&out).map_err(|e| Error::parse("bfdd", cmd, e, &out))?;
        let list = v.as_array().cloned().unwrap_or_default();
        let num = |p: &Value, k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        let text = |p: &Value, k: &str| {
            p.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(list
            .iter()
            .filter_map(|p| {
                Some(BfddPeer {
                    peer: p.get("peer")?.as_str()?.parse().ok()?,
                    status: text(p, "status"),
                    transmit_interval: num(p, "transmit-interval"),
                    receive_interval: num(p, "receive-interval"),
                    remote_transmit_interval: num(p, "remote-transmit-interval"),
                    remote_receive_interval: num(p, "remote-receive-interval"),
                    remote_detect_multiplier: num(p, "remote-detect-multiplier"),
                    diagnostic: text(p, "diagnostic"),
                    remote_diagnostic: text(p, "remote-diagnostic"),
                })
            })
            .collect())
    }

    pub fn peer(&self, peer: IpAddr) -> Result<BfddPeer> {
        self.peers()?
            .into_iter()
            .find(|p| p.peer == peer)
            .ok_or_else(|| Error::InvalidSpec(format!("bfdd has no peer {peer}")))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bfdd.log")).unwrap_or_default()
    }
}

impl Drop for Bfdd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.terminate(Duration::from_secs(5));
        }
    }
}
