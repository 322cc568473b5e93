//! The four contenders with one minimal, equivalent configuration each: eBGP, passive
//! towards every peer (the feeders and the monitor connect), hold time 90 s and
//! keepalive 30 s, IPv4 unicast only, no graceful restart, no kernel routes; everything
//! imported from the feeders and exported to the monitor only.
//!
//! Each daemon is asked for its own count of routes through its own client, from the
//! host's network namespace where the control channel is a Unix socket.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A BGP implementation in the race.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Daemon {
    Serval,
    Bird,
    Gobgp,
    Frr,
}

impl Daemon {
    pub const ALL: [Daemon; 4] = [Daemon::Serval, Daemon::Bird, Daemon::Gobgp, Daemon::Frr];

    pub fn name(self) -> &'static str {
        match self {
            Daemon::Serval => "serval",
            Daemon::Bird => "bird",
            Daemon::Gobgp => "gobgp",
            Daemon::Frr => "frr",
        }
    }

    pub fn parse(s: &str) -> Option<Daemon> {
        Daemon::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The programs it needs (besides serval's own binary).
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Daemon::Serval => &[],
            Daemon::Bird => &["bird", "birdc"],
            Daemon::Gobgp => &["gobgpd", "gobgp"],
            Daemon::Frr => &["/usr/lib/frr/bgpd", "vtysh"],
        }
    }
}

/// Who peers with the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub daemon_addr: Ipv4Addr,
    pub daemon_as: u32,
    /// (address, AS) of each feeder.
    pub feeders: Vec<(Ipv4Addr, u32)>,
    /// (address, AS) of the monitor, which gets every route.
    pub monitor: Option<(Ipv4Addr, u32)>,
    pub hold_time: u16,
    pub keepalive: u16,
}

/// How to run one daemon in its directory.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Files to write first: (name in the directory, contents).
    pub files: Vec<(String, String)>,
    /// The daemon's command line (it stays in the foreground).
    pub argv: Vec<String>,
    /// The count query, run in the host's namespace.
    pub count_argv: Vec<String>,
}

fn s(v: &str) -> String {
    v.to_string()
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// The configuration and command lines of `daemon` for `t`, with its files in `dir`.
/// `serval_bin` is the serval binary.
pub fn launch(daemon: Daemon, t: &Topology, dir: &Path, serval_bin: &Path) -> Launch {
    match daemon {
        Daemon::Serval => {
            let sock = path(dir, "serval.sock");
            let bin = serval_bin.to_string_lossy().into_owned();
            Launch {
                files: vec![(s("serval.toml"), serval_config(t))],
                argv: vec![
                    bin.clone(),
                    s("bgp"),
                    s("--config"),
                    path(dir, "serval.toml"),
                    s("--socket"),
                    sock.clone(),
                    s("--state-dir"),
                    path(dir, "state"),
                    s("--log-level"),
                    s("warn"),
                ],
                count_argv: vec![bin, s("bgp"), s("status"), s("--json"), s("--socket"), sock],
            }
        }
        Daemon::Bird => {
            let sock = path(dir, "bird.ctl");
            Launch {
                files: vec![(s("bird.conf"), bird_config(t))],
                argv: vec![
                    s("bird"),
                    s("-f"),
                    s("-c"),
                    path(dir, "bird.conf"),
                    s("-s"),
                    sock.clone(),
                    s("-P"),
                    path(dir, "bird.pid"),
                ],
                // A per-protocol counter: `show route count` walks the table inside BIRD's
                // one thread (~0.4 s per query at a million routes) and slows the load.
                count_argv: vec![
                    s("birdc"),
                    s("-s"),
                    sock,
                    s("show"),
                    s("protocols"),
                    s("all"),
                ],
            }
        }
        Daemon::Gobgp => {
            let target = format!("unix://{}", path(dir, "gobgp.sock"));
            Launch {
                files: vec![(s("gobgpd.toml"), gobgp_config(t))],
                argv: vec![
                    s("gobgpd"),
                    s("-f"),
                    path(dir, "gobgpd.toml"),
                    s("--api-hosts"),
                    target.clone(),
                    s("--pprof-disable"),
                    s("-l"),
                    s("warn"),
                ],
                // Per-neighbor counters; `global rib summary` walks the table.
                count_argv: vec![s("gobgp"), s("--target"), target, s("neighbor")],
            }
        }
        Daemon::Frr => {
            let vty = dir.to_string_lossy().into_owned();
            Launch {
                files: vec![(s("bgpd.conf"), frr_config(t))],
                argv: vec![
                    s("/usr/lib/frr/bgpd"),
                    s("-Z"),
                    s("-S"),
                    s("-n"),
                    s("-f"),
                    path(dir, "bgpd.conf"),
                    s("-i"),
                    path(dir, "bgpd.pid"),
                    s("--vty_socket"),
                    vty.clone(),
                    s("-l"),
                    t.daemon_addr.to_string(),
                    s("--log"),
                    s("stdout"),
                    s("--log-level"),
                    s("warnings"),
                ],
                count_argv: vec![
                    s("vtysh"),
                    s("--vty_socket"),
                    vty,
                    s("-c"),
                    s("show bgp ipv4 unicast summary json"),
                ],
            }
        }
    }
}

/// Every peer of the daemon: (address, AS, is the monitor).
fn peers(t: &Topology) -> impl Iterator<Item = (Ipv4Addr, u32, bool)> + '_ {
    t.feeders
        .iter()
        .map(|&(a, asn)| (a, asn, false))
        .chain(t.monitor.map(|(a, asn)| (a, asn, true)))
}

pub fn serval_config(t: &Topology) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "asn = {}", t.daemon_as);
    let _ = writeln!(c, "router-id = \"{}\"", t.daemon_addr);
    let _ = writeln!(c, "listen = [\"{}:179\"]", t.daemon_addr);
    let _ = writeln!(c, "hold-time = {}", t.hold_time);
    c.push_str("\n[graceful-restart]\nenabled = false\n");
    for (addr, asn, monitor) in peers(t) {
        c.push_str("\n[[peer]]\n");
        let _ = writeln!(c, "address = \"{addr}\"");
        let _ = writeln!(c, "asn = {asn}");
        c.push_str("passive = true\n");
        let _ = writeln!(c, "keepalive = {}", t.keepalive);
        c.push_str("families = [\"ipv4-unicast\"]\ngraceful-restart = false\n");
        if !monitor {
            c.push_str("export = { default = \"reject\" }\n");
        }
    }
    c
}

pub fn bird_config(t: &Topology) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "router id {};", t.daemon_addr);
    c.push_str("log stderr { warning, error, fatal };\n");
    c.push_str("protocol device {}\n");
    for (i, (addr, asn, monitor)) in peers(t).enumerate() {
        let _ = writeln!(c, "\nprotocol bgp p{i} {{");
        let _ = writeln!(c, "  local {} as {};", t.daemon_addr, t.daemon_as);
        let _ = writeln!(c, "  neighbor {addr} as {asn};");
        c.push_str("  passive on;\n");
        let _ = writeln!(
            c,
            "  hold time {};\n  keepalive time {};",
            t.hold_time, t.keepalive
        );
        if monitor {
            c.push_str("  ipv4 { import none; export all; };\n");
        } else {
            c.push_str("  ipv4 { import all; export none; };\n");
        }
        c.push_str("}\n");
    }
    c
}

pub fn gobgp_config(t: &Topology) -> String {
    let mut c = String::new();
    c.push_str("[global.config]\n");
    let _ = writeln!(c, "  as = {}", t.daemon_as);
    let _ = writeln!(c, "  router-id = \"{}\"", t.daemon_addr);
    let _ = writeln!(c, "  local-address-list = [\"{}\"]", t.daemon_addr);
    // GoBGP's export policy is global; its neighbor condition matches the peer the route
    // goes to. Only the monitor gets routes (with a single feeder there is nobody to
    // export to: GoBGP never sends a route back to its source).
    if let Some((m, _)) = t.monitor {
        c.push_str("[global.apply-policy.config]\n");
        c.push_str("  export-policy-list = [\"to-monitor\"]\n");
        c.push_str("  default-export-policy = \"reject-route\"\n");
        c.push_str("  default-import-policy = \"accept-route\"\n");
        c.push_str("\n[[defined-sets.neighbor-sets]]\n  neighbor-set-name = \"monitor\"\n");
        let _ = writeln!(c, "  neighbor-info-list = [\"{m}\"]");
        c.push_str(
            "\n[[policy-definitions]]\n  name = \"to-monitor\"\n  [[policy-definitions.statements]]\n    name = \"monitor\"\n    [policy-definitions.statements.conditions.match-neighbor-set]\n      neighbor-set = \"monitor\"\n      match-set-options = \"any\"\n    [policy-definitions.statements.actions]\n      route-disposition = \"accept-route\"\n",
        );
    }
    for (addr, asn, _) in peers(t) {
        c.push_str("\n[[neighbors]]\n  [neighbors.config]\n");
        let _ = writeln!(c, "    neighbor-address = \"{addr}\"");
        let _ = writeln!(c, "    peer-as = {asn}");
        c.push_str("  [neighbors.timers.config]\n");
        let _ = writeln!(
            c,
            "    hold-time = {}\n    keepalive-interval = {}",
            t.hold_time, t.keepalive
        );
        c.push_str("  [neighbors.transport.config]\n    passive-mode = true\n");
        let _ = writeln!(c, "    local-address = \"{}\"", t.daemon_addr);
        c.push_str("  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n");
    }
    c
}

pub fn frr_config(t: &Topology) -> String {
    let mut c = String::new();
    c.push_str("hostname race\n");
    // eBGP needs policy both ways (FRR's default `bgp ebgp-requires-policy`): the
    // feeders get an inbound permit, the monitor an outbound one, so nothing else flows.
    c.push_str("route-map ALL permit 10\nexit\n");
    let _ = writeln!(c, "router bgp {}", t.daemon_as);
    let _ = writeln!(c, " bgp router-id {}", t.daemon_addr);
    c.push_str(" no bgp default ipv4-unicast\n");
    let _ = writeln!(c, " timers bgp {} {}", t.keepalive, t.hold_time);
    for (addr, asn, _) in peers(t) {
        let _ = writeln!(c, " neighbor {addr} remote-as {asn}");
        let _ = writeln!(c, " neighbor {addr} passive");
    }
    c.push_str(" address-family ipv4 unicast\n");
    for (addr, _, monitor) in peers(t) {
        let _ = writeln!(c, "  neighbor {addr} activate");
        let dir = if monitor { "out" } else { "in" };
        let _ = writeln!(c, "  neighbor {addr} route-map ALL {dir}");
    }
    c.push_str(" exit-address-family\nexit\n");
    c
}

/// Routes the daemon holds from the feeders, from the count query's output.
pub fn parse_count(daemon: Daemon, out: &str, t: &Topology) -> Option<u64> {
    match daemon {
        Daemon::Serval => {
            let v: serde_json::Value = serde_json::from_str(out).ok()?;
            let feeders: Vec<String> = t.feeders.iter().map(|(a, _)| a.to_string()).collect();
            let mut total = 0;
            for p in v.as_array()? {
                let addr = p.get("address")?.as_str()?;
                if !feeders.iter().any(|f| f == addr) {
                    continue;
                }
                for f in p.get("families")?.as_array()? {
                    total += f.get("accepted")?.as_u64()?;
                }
            }
            Some(total)
        }
        // "  Routes:         1000000 imported, 0 exported, 1000000 preferred", per protocol;
        // only the feeders import.
        Daemon::Bird => {
            let mut total = None;
            for l in out.lines() {
                let Some(rest) = l.trim().strip_prefix("Routes:") else {
                    continue;
                };
                let mut w = rest.split_whitespace();
                let n: u64 = w.next()?.parse().ok()?;
                if w.next()?.trim_end_matches(',') == "imported" {
                    *total.get_or_insert(0) += n;
                }
            }
            // An answer without any channel counters yet still means "ready, 0 routes".
            total.or_else(|| out.contains("BGP").then_some(0))
        }
        // "192.0.2.2 65001 00:00:05 Establ | 1000000 1000000": Accepted is last.
        Daemon::Gobgp => {
            if !out.contains("Peer") {
                return None;
            }
            let mut total = 0;
            for l in out.lines() {
                let mut w = l.split_whitespace();
                let Some(addr) = w.next() else { continue };
                if !t.feeders.iter().any(|(a, _)| a.to_string() == addr) {
                    continue;
                }
                total += l
                    .split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            Some(total)
        }
        Daemon::Frr => {
            let v: serde_json::Value = serde_json::from_str(out).ok()?;
            let peers = v.get("peers")?.as_object()?;
            let mut total = 0;
            for (addr, p) in peers {
                if t.feeders.iter().any(|(a, _)| a.to_string() == *addr) {
                    total += p
                        .get("pfxRcd")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                }
            }
            Some(total)
        }
    }
}

/// The daemon's pid file, where it writes one (BIRD and FRR); serval and GoBGP are the
/// process the race started.
pub fn pid_file(daemon: Daemon, dir: &Path) -> Option<PathBuf> {
    match daemon {
        Daemon::Bird => Some(dir.join("bird.pid")),
        Daemon::Frr => Some(dir.join("bgpd.pid")),
        Daemon::Serval | Daemon::Gobgp => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology {
            daemon_addr: Ipv4Addr::new(192, 0, 2, 1),
            daemon_as: 64512,
            feeders: vec![
                (Ipv4Addr::new(192, 0, 2, 2), 65001),
                (Ipv4Addr::new(192, 0, 2, 3), 65002),
            ],
            monitor: Some((Ipv4Addr::new(192, 0, 2, 4), 65100)),
            hold_time: 90,
            keepalive: 30,
        }
    }

    #[test]
    fn serval_config_parses_and_exports_only_to_the_monitor() {
        let text = serval_config(&topo());
        let cfg = bgp::config::SpeakerConfig::from_toml(&text).unwrap();
        assert_eq!(cfg.peers.len(), 3);
        assert!(cfg.peers.iter().all(|p| p.passive));
        assert!(cfg.peers[0].export.is_some() && cfg.peers[1].export.is_some());
        assert!(cfg.peers[2].export.is_none());
        assert!(!cfg.graceful_restart.enabled);
    }

    #[test]
    fn bird_config_imports_from_feeders_and_exports_to_the_monitor() {
        let c = bird_config(&topo());
        assert_eq!(c.matches("import all; export none;").count(), 2);
        assert_eq!(c.matches("import none; export all;").count(), 1);
        assert!(c.contains("neighbor 192.0.2.4 as 65100;"));
        assert!(c.contains("hold time 90;"));
    }

    #[test]
    fn frr_config_has_policy_in_from_feeders_and_out_to_the_monitor() {
        let c = frr_config(&topo());
        assert!(c.contains("neighbor 192.0.2.2 route-map ALL in"));
        assert!(c.contains("neighbor 192.0.2.4 route-map ALL out"));
        assert!(c.contains("timers bgp 30 90"));
    }

    #[test]
    fn gobgp_config_exports_only_to_the_monitor() {
        let c = gobgp_config(&topo());
        assert!(c.contains("default-export-policy = \"reject-route\""));
        assert!(c.contains("neighbor-info-list = [\"192.0.2.4\"]"));
        assert_eq!(c.matches("[[neighbors]]").count(), 3);
    }

    #[test]
    fn counts_parse_from_each_client() {
        let t = topo();
        let bird = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\np0         BGP        ---        up     17:20:31.123  Established\n  BGP state:          Established\n  Channel ipv4\n    State:          UP\n    Routes:         600000 imported, 0 exported, 600000 preferred\np1         BGP        ---        up     17:20:31.123  Established\n  Channel ipv4\n    Routes:         400000 imported, 0 exported, 0 preferred\np2         BGP        ---        up     17:20:31.123  Established\n  Channel ipv4\n    Routes:         0 imported, 999 exported, 0 preferred\n";
        assert_eq!(parse_count(Daemon::Bird, bird, &t), Some(1_000_000));
        let gobgp = "Peer           AS  Up/Down State       |#Received  Accepted\n192.0.2.2   65001 00:00:05 Establ      |      600       523\n192.0.2.3   65002 00:00:05 Establ      |       10        10\n192.0.2.4   65100 00:00:05 Establ      |        0         0\n";
        assert_eq!(parse_count(Daemon::Gobgp, gobgp, &t), Some(533));
        let frr = r#"{"routerId":"192.0.2.1","peers":{"192.0.2.2":{"pfxRcd":10},"192.0.2.3":{"pfxRcd":5},"192.0.2.4":{"pfxRcd":99}}}"#;
        assert_eq!(parse_count(Daemon::Frr, frr, &t), Some(15));
        let serval = r#"[{"address":"192.0.2.2","families":[{"accepted":7}]},{"address":"192.0.2.4","families":[{"accepted":100}]}]"#;
        assert_eq!(parse_count(Daemon::Serval, serval, &t), Some(7));
        assert_eq!(parse_count(Daemon::Bird, "BIRD 2.0.12 ready.\n", &t), None);
        assert_eq!(parse_count(Daemon::Gobgp, "", &t), None);
        assert_eq!(parse_count(Daemon::Frr, "{}", &t), None);
    }
}
