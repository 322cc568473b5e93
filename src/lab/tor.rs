//! The lab's top-of-rack router: a real BIRD (or FRR) in `svlab-tor`, configured the way a
//! network engineer would for a rack of Kubernetes nodes — one eBGP session per node,
//! everything the nodes announce accepted and installed in its kernel so it can reach
//! the pods, nothing sent back (the nodes have their default route).

use super::topology::{ns_exec, LabNode, TOR, TOR_AS, TOR_EXT_ADDR};
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

pub struct Tor {
    pub kind: TorKind,
    pub dir: PathBuf,
}

impl Tor {
    pub fn new(kind: TorKind, lab_dir: &Path) -> Self {
        Tor {
            kind,
            dir: lab_dir.join("tor"),
        }
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
        let mut c = String::new();
        let _ = writeln!(c, "router id {TOR_EXT_ADDR};");
        let _ = writeln!(c, "log \"{}\" all;", self.dir.join("bird.log").display());
        let _ = writeln!(c, "protocol device {{ }}");
        let _ = writeln!(c, "protocol direct {{ ipv4; }}");
        // Install what the nodes announce, so the ToR can forward to pods.
        let _ = writeln!(
            c,
            "protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}"
        );
        for n in nodes {
            let _ = writeln!(
                c,
                "protocol bgp {name} {{\n  local {gw} as {TOR_AS};\n  neighbor {addr} as {node_as};\n  hold time 9;\n  graceful restart on;\n  ipv4 {{ import all; export none; }};\n}}",
                name = n.name,
                gw = n.gateway,
                addr = n.address,
                node_as = super::topology::NODE_AS,
            );
        }
        let conf = self.dir.join("bird.conf");
        std::fs::write(&conf, c)?;
        let ctl = self.bird_ctl();
        let pid = self.dir.join("bird.pid");
        ns_exec(
            TOR,
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

    fn start_frr(&self, nodes: &[LabNode]) -> anyhow::Result<()> {
        let vty = self.frr_vty();
        std::fs::create_dir_all(&vty)?;
        let mut c = String::new();
        let _ = writeln!(
            c,
            "frr defaults datacenter\nhostname tor\nlog file {}\n!",
            self.dir.join("frr.log").display()
        );
        let _ = writeln!(c, "router bgp {TOR_AS}\n bgp router-id {TOR_EXT_ADDR}\n no bgp ebgp-requires-policy\n bgp graceful-restart");
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
        ns_exec(
            TOR,
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
            TOR,
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
            TorKind::Bird => {
                let out = ns_exec(
                    TOR,
                    &[
                        "birdc",
                        "-s",
                        &self.bird_ctl().to_string_lossy(),
                        "show",
                        "protocols",
                    ],
                )?;
                let bgp: Vec<&str> = out.lines().filter(|l| l.contains(" BGP ")).collect();
                Ok((
                    bgp.iter().filter(|l| l.contains("Established")).count(),
                    bgp.len(),
                ))
            }
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
            TOR,
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
                TOR,
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
}
