//! The lab's top-of-rack router: a real BIRD (or FRR) in `svlab-tor`, configured the way a
//! network engineer would for a rack of Kubernetes nodes — one eBGP session per node,
//! everything the nodes announce accepted and installed in its kernel so it can reach
//! the pods, nothing sent back (the nodes have their default route).
//!
//! With `--tors 2` there are two such routers on one switch, each peering with every node
//! and with the outside host (which runs BIRD too, `Ext`), and each sending the nodes its
//! connected subnets so that they reach the outside and each other through either. With
//! `--bfd`, BIRD's `protocol bfd` (100 ms × 3) runs on the sessions to the nodes; between
//! two ToRs and the outside host it always runs.

use super::topology::{
    ns_exec, tor_addr, tor_ext_addr, tor_netns, LabNode, EXT, EXT_ADDR, EXT_AS, TOR_AS,
};
use anyhow::{bail, Context};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum TorKind {
    Bird,
    Frr,
}

/// BFD as the lab runs it, on both sides of every session that has it: 100 ms × 3.
pub const BFD_INTERVAL_MS: u32 = 100;
pub const BFD_MULTIPLIER: u8 = 3;

/// BIRD's `protocol bfd` at the lab's intervals, on every interface.
fn bird_bfd() -> String {
    format!(
        "protocol bfd {{\n  interface \"*\" {{ min rx interval {BFD_INTERVAL_MS} ms; \
         min tx interval {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
    )
}

/// A quick restart after a failure took a BIRD `protocol bgp` down (BIRD waits 60 s or
/// more after an error by default): a cut ToR or node comes back within seconds.
const BIRD_BGP_RESTART: &str = "  error wait time 1, 5;\n  connect retry time 2;\n";
/// BFD on a BIRD `protocol bgp`, with the quick restart.
const BIRD_BGP_BFD: &str = "  bfd on;\n  error wait time 1, 5;\n  connect retry time 2;\n";

pub struct Tor {
    pub kind: TorKind,
    pub dir: PathBuf,
    /// 1-based: the first ToR is the nodes' gateway.
    pub index: u8,
    /// How many ToRs the lab has.
    pub of: u8,
    /// BFD on the sessions to the nodes.
    pub bfd: bool,
}

impl Tor {
    /// ToR `index` of `of`; its files in `tor/` (the first) or `tor<index>/`.
    pub fn nth(kind: TorKind, lab_dir: &Path, index: u8, of: u8, bfd: bool) -> Self {
        let dir = if index <= 1 {
            lab_dir.join("tor")
        } else {
            lab_dir.join(format!("tor{index}"))
        };
        Tor {
            kind,
            dir,
            index,
            of,
            bfd,
        }
    }

    /// Every ToR of a lab.
    pub fn all(kind: TorKind, lab_dir: &Path, of: u8, bfd: bool) -> Vec<Tor> {
        (1..=of.max(1))
            .map(|k| Self::nth(kind, lab_dir, k, of.max(1), bfd))
            .collect()
    }

    pub fn netns(&self) -> String {
        tor_netns(self.index)
    }

    /// The namespace's name as the report shows it.
    pub fn name(&self) -> String {
        self.netns()
    }

    /// Its BGP sessions: one per node, and the outside host's when there are two ToRs.
    pub fn sessions(&self, nodes: usize) -> usize {
        nodes + usize::from(self.of > 1)
    }

    fn bird_ctl(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    fn frr_vty(&self) -> PathBuf {
        self.dir.join("frr")
    }

    pub fn start(&self, nodes: &[LabNode]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        match self.kind {
            TorKind::Bird => self.start_bird(nodes),
            TorKind::Frr => self.start_frr(nodes),
        }
    }

    fn start_bird(&self, nodes: &[LabNode]) -> anyhow::Result<()> {
        let conf = self.dir.join("bird.conf");
        std::fs::write(&conf, self.bird_conf(nodes))?;
        let ctl = self.bird_ctl();
        let pid = self.dir.join("bird.pid");
        ns_exec(
            &self.netns(),
            &[
                "bird",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &ctl.to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ],
        )
        .context("starting BIRD (Debian package bird2)")?;
        Ok(())
    }

    /// BIRD's configuration: a session per node (from the node's subnet address of this
    /// ToR), and with two ToRs one to the outside host.
    pub fn bird_conf(&self, nodes: &[LabNode]) -> String {
        let two = self.of > 1;
        let mut c = String::new();
        let _ = writeln!(c, "router id {};", tor_ext_addr(self.index));
        let _ = writeln!(c, "log \"{}\" all;", self.dir.join("bird.log").display());
        let _ = writeln!(c, "protocol device {{ }}");
        let _ = writeln!(c, "protocol direct {{ ipv4; }}");
        // Install what the nodes announce, so the ToR can forward to pods.
        let _ = writeln!(
            c,
            "protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}"
        );
        if self.bfd || two {
            c.push_str(&bird_bfd());
        }
        // With two ToRs the nodes learn the outside segment and the other subnets from
        // both, so that either ToR carries their traffic.
        let to_nodes = if two {
            "export where source = RTS_DEVICE;"
        } else {
            "export none;"
        };
        for n in nodes {
            let local = if two {
                tor_addr(n.subnet, self.index)
            } else {
                n.gateway
            };
            let bfd = match (self.bfd, two) {
                (true, _) => BIRD_BGP_BFD,
                (false, true) => BIRD_BGP_RESTART,
                (false, false) => "",
            };
            let _ = writeln!(
                c,
                "protocol bgp {name} {{\n  local {local} as {TOR_AS};\n  neighbor {addr} as {node_as};\n  hold time 9;\n  graceful restart on;\n{bfd}  ipv4 {{ import all; {to_nodes} }};\n}}",
                name = n.name,
                addr = n.address,
                node_as = super::topology::NODE_AS,
            );
        }
        if two {
            let _ = writeln!(
                c,
                "protocol bgp ext {{\n  local {local} as {TOR_AS};\n  neighbor {EXT_ADDR} as {EXT_AS};\n  hold time 9;\n{BIRD_BGP_BFD}  ipv4 {{ import none; export where source = RTS_BGP || source = RTS_DEVICE; }};\n}}",
                local = tor_ext_addr(self.index),
            );
        }
        c
    }

    fn start_frr(&self, nodes: &[LabNode]) -> anyhow::Result<()> {
        let vty = self.frr_vty();
        std::fs::create_dir_all(&vty)?;
        let mut c = String::new();
        let _ = writeln!(
            c,
            "frr defaults datacenter\nhostname tor\nlog file {}\n!",
            self.dir.join("frr.log").display()
        );
        let _ = writeln!(c, "router bgp {TOR_AS}\n bgp router-id {}\n no bgp ebgp-requires-policy\n bgp graceful-restart", tor_ext_addr(self.index));
        for n in nodes {
            let _ = writeln!(
                c,
                " neighbor {} remote-as {}\n neighbor {} timers 3 9",
                n.address,
                super::topology::NODE_AS,
                n.address
            );
        }
        let _ = writeln!(c, " address-family ipv4 unicast");
        for n in nodes {
            // Learn everything; announce nothing back.
            let _ = writeln!(c, "  neighbor {} route-map LAB-OUT out", n.address);
        }
        let _ = writeln!(c, " exit-address-family\n!\nroute-map LAB-OUT deny 10\n!");
        let conf = self.dir.join("frr.conf");
        std::fs::write(&conf, c)?;
        let zserv = vty.join("zserv.api");
        let zebra = "/usr/lib/frr/zebra";
        let bgpd = "/usr/lib/frr/bgpd";
        for bin in [zebra, bgpd] {
            if !Path::new(bin).exists() {
                bail!("{bin} not found: install Debian's frr package");
            }
        }
        let v = vty.to_string_lossy().into_owned();
        let z = zserv.to_string_lossy().into_owned();
        let zconf = vty.join("zebra.conf");
        std::fs::write(&zconf, "hostname tor-zebra\n")?;
        let zconf = zconf.to_string_lossy().into_owned();
        super::topology::run(None, &["chown", "-R", "frr:frr", &v])
            .context("handing the FRR directory to the frr user (Debian package frr)")?;
        let ns = self.netns();
        ns_exec(
            &ns,
            &[
                zebra,
                "-d",
                // zebra has no "skip run-as" switch: it runs as Debian's frr user, in a
                // directory handed to that user, with a config of its own.
                "-u",
                "frr",
                "-g",
                "frr",
                "-f",
                &zconf,
                "-i",
                &format!("{v}/zebra.pid"),
                "--vty_socket",
                &v,
                "-z",
                &z,
            ],
        )
        .context("starting FRR zebra")?;
        ns_exec(
            &ns,
            &[
                bgpd,
                "-d",
                "-S",
                "-f",
                &conf.to_string_lossy(),
                "-i",
                &format!("{v}/bgpd.pid"),
                "--vty_socket",
                &v,
                "-z",
                &z,
            ],
        )
        .context("starting FRR bgpd")?;
        Ok(())
    }

    /// Sessions the ToR sees established, out of how many.
    pub fn established(&self) -> anyhow::Result<(usize, usize)> {
        match self.kind {
            TorKind::Bird => bird_established(&self.netns(), &self.bird_ctl()),
            TorKind::Frr => {
                let out = self.vtysh("show bgp ipv4 unicast summary json")?;
                let v: serde_json::Value = serde_json::from_str(&out).context("vtysh json")?;
                let peers = v["peers"].as_object().cloned().unwrap_or_default();
                let up = peers
                    .values()
                    .filter(|p| p["state"] == "Established")
                    .count();
                Ok((up, peers.len()))
            }
        }
    }

    fn vtysh(&self, cmd: &str) -> anyhow::Result<String> {
        ns_exec(
            &self.netns(),
            &[
                "vtysh",
                "--vty_socket",
                &self.frr_vty().to_string_lossy(),
                "-c",
                cmd,
            ],
        )
    }

    /// The ToR's routes, as its own CLI prints them.
    pub fn routes_text(&self) -> anyhow::Result<String> {
        match self.kind {
            TorKind::Bird => ns_exec(
                &self.netns(),
                &[
                    "birdc",
                    "-s",
                    &self.bird_ctl().to_string_lossy(),
                    "show",
                    "route",
                    "where",
                    "source",
                    "=",
                    "RTS_BGP",
                ],
            ),
            TorKind::Frr => self.vtysh("show bgp ipv4 unicast"),
        }
    }

    /// BIRD's `show bfd sessions`, when this ToR runs BFD.
    pub fn bfd_text(&self) -> Option<anyhow::Result<String>> {
        if self.kind != TorKind::Bird || !(self.bfd || self.of > 1) {
            return None;
        }
        Some(bird_bfd_sessions(&self.netns(), &self.bird_ctl()))
    }
}

fn birdc(netns: &str, ctl: &Path, args: &[&str]) -> anyhow::Result<String> {
    let ctl = ctl.to_string_lossy();
    let mut argv = vec!["birdc", "-s", &ctl];
    argv.extend_from_slice(args);
    ns_exec(netns, &argv)
}

/// BGP sessions BIRD has Established, out of how many.
fn bird_established(netns: &str, ctl: &Path) -> anyhow::Result<(usize, usize)> {
    let out = birdc(netns, ctl, &["show", "protocols"])?;
    let bgp: Vec<&str> = out.lines().filter(|l| l.contains(" BGP ")).collect();
    Ok((
        bgp.iter().filter(|l| l.contains("Established")).count(),
        bgp.len(),
    ))
}

fn bird_bfd_sessions(netns: &str, ctl: &Path) -> anyhow::Result<String> {
    birdc(netns, ctl, &["show", "bfd", "sessions"])
}

/// The outside host with two ToRs: BIRD in `svlab-ext` learning the nodes' subnets and the
/// pod blocks from both, installing them as multipath routes, BFD on both sessions.
pub struct Ext {
    pub dir: PathBuf,
    pub tors: u8,
}

impl Ext {
    pub fn new(lab_dir: &Path, tors: u8) -> Self {
        Ext {
            dir: lab_dir.join("ext"),
            tors,
        }
    }

    fn bird_ctl(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    pub fn bird_conf(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "router id {EXT_ADDR};");
        let _ = writeln!(c, "log \"{}\" all;", self.dir.join("bird.log").display());
        let _ = writeln!(c, "protocol device {{ }}");
        // One route per prefix with a next hop per ToR that has it.
        let _ = writeln!(
            c,
            "protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}"
        );
        c.push_str(&bird_bfd());
        for k in 1..=self.tors {
            let _ = writeln!(
                c,
                "protocol bgp tor{k} {{\n  local {EXT_ADDR} as {EXT_AS};\n  neighbor {tor} as {TOR_AS};\n  hold time 9;\n{BIRD_BGP_BFD}  ipv4 {{ import where net != 10.10.99.0/24; export none; }};\n}}",
                tor = tor_ext_addr(k),
            );
        }
        c
    }

    pub fn start(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let conf = self.dir.join("bird.conf");
        std::fs::write(&conf, self.bird_conf())?;
        let pid = self.dir.join("bird.pid");
        ns_exec(
            EXT,
            &[
                "bird",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &self.bird_ctl().to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ],
        )
        .context("starting BIRD on the outside host (Debian package bird2)")?;
        Ok(())
    }

    pub fn established(&self) -> anyhow::Result<(usize, usize)> {
        bird_established(EXT, &self.bird_ctl())
    }

    pub fn bfd_text(&self) -> anyhow::Result<String> {
        bird_bfd_sessions(EXT, &self.bird_ctl())
    }

    /// The outside host's routes from BIRD, as the kernel holds them.
    pub fn routes_text(&self) -> anyhow::Result<String> {
        ns_exec(EXT, &["ip", "route", "show", "proto", "bird"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::plan;

    #[test]
    fn one_tor_without_bfd_peers_from_the_gateway_and_sends_nothing() {
        let nodes = plan(3, 2).unwrap();
        let c = Tor::all(TorKind::Bird, Path::new("/x"), 1, false)[0].bird_conf(&nodes);
        assert!(c.contains("router id 10.10.99.1;"), "{c}");
        assert!(c.contains("local 10.10.2.1 as 65000;\n  neighbor 10.10.2.11 as 64512;"));
        assert!(c.contains("import all; export none;"), "{c}");
        assert!(!c.contains("bfd"), "{c}");
        assert!(!c.contains("protocol bgp ext"), "{c}");
    }

    #[test]
    fn second_tor_with_bfd_peers_from_its_own_addresses_and_with_the_outside_host() {
        let nodes = plan(3, 2).unwrap();
        let tors = Tor::all(TorKind::Bird, Path::new("/x"), 2, true);
        assert_eq!(tors[1].netns(), "svlab-tor2");
        assert_eq!(tors[1].dir, Path::new("/x/tor2"));
        assert_eq!(tors[1].sessions(3), 4);
        let c = tors[1].bird_conf(&nodes);
        assert!(c.contains("router id 10.10.99.2;"), "{c}");
        assert!(c.contains("min rx interval 100 ms; min tx interval 100 ms; multiplier 3;"));
        assert!(c.contains("local 10.10.2.2 as 65000;\n  neighbor 10.10.2.11 as 64512;"));
        assert_eq!(c.matches("bfd on;").count(), 4, "{c}");
        assert!(c.contains("export where source = RTS_DEVICE;"), "{c}");
        assert!(c.contains("local 10.10.99.2 as 65000;\n  neighbor 10.10.99.10 as 65100;"));
        let ext = Ext::new(Path::new("/x"), 2).bird_conf();
        assert!(ext.contains("merge paths on;"), "{ext}");
        assert!(ext.contains("neighbor 10.10.99.1 as 65000;"), "{ext}");
        assert!(ext.contains("neighbor 10.10.99.2 as 65000;"), "{ext}");
        assert_eq!(ext.matches("bfd on;").count(), 2, "{ext}");
    }
}
