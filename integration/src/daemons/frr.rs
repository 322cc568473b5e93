//! FRR's bgpd on its own (`-Z`: no zebra, `-n`: no kernel routes), queried with
//! `vtysh … json`.
//!
//! FRR defaults undone here: eBGP exchanges nothing without policy
//! (`no bgp ebgp-requires-policy`), a `network` needs a matching RIB route
//! (`no bgp network import-check`), and every neighbour gets IPv4 unicast
//! (`no bgp default ipv4-unicast`, families are activated explicitly). Attributes of
//! an originated prefix come from a route-map of its own.

use super::{BgpDaemon, Instance};
use crate::error::{Error, Result};
use crate::netns::{Netns, NsHandle};
use crate::observed::{parse_prefix, Route, SessionStatus};
use crate::spec::{Announcement, Asn, Community, Family, LargeCommunity, RouterSpec, TtlMode};
use crate::tools;
use crate::workdir::TestDir;
use ipnet::IpNet;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;

const KIND: &str = "frr";
const BGPD: &str = "/usr/lib/frr/bgpd";

#[derive(Debug)]
pub struct Frr {
    spec: RouterSpec,
    inst: Instance,
    /// Route-map names are never reused, so a changed announcement takes effect at
    /// once instead of after FRR's route-map update delay.
    next_map: usize,
}

impl Frr {
    fn vty_dir(&self) -> String {
        self.inst.dir.to_string_lossy().into_owned()
    }

    /// Runs vtysh commands in order against this instance; any `%` error line fails.
    pub fn vtysh(&self, commands: &[&str]) -> Result<String> {
        let dir = self.vty_dir();
        let mut argv = vec!["vtysh", "--vty_socket", dir.as_str()];
        for c in commands {
            argv.push("-c");
            argv.push(c);
        }
        let out = self.inst.exec(&argv)?;
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

    fn json(&self, command: &str) -> Result<Value> {
        let out = self.vtysh(&[command])?;
        serde_json::from_str(&out).map_err(|e| Error::parse(KIND, command, e, &out))
    }

    fn launch(&mut self) -> Result<()> {
        let (config, next_map) = render(&self.spec)?;
        self.next_map = self.next_map.max(next_map);
        let conf = self
            .inst
            .write("bgpd.conf", &config)?
            .to_string_lossy()
            .into_owned();
        let pid = self.inst.path_str("bgpd.pid");
        let dir = self.vty_dir();
        let listen: Vec<String> = self.spec.listen.iter().map(|a| a.to_string()).collect();
        let mut argv = vec![
            BGPD,
            "-Z",
            "-S",
            "-n",
            "-f",
            &conf,
            "-i",
            &pid,
            "--vty_socket",
            &dir,
            "--log",
            "stdout",
        ];
        for l in &listen {
            argv.push("-l");
            argv.push(l);
        }
        self.inst.spawn(&argv)?;
        self.inst
            .wait_ready("vtysh show bgp summary", |ns: &NsHandle| {
                ns.exec(&["vtysh", "--vty_socket", &dir, "-c", "show bgp summary json"])
                    .map(drop)
            })
    }

    /// Detailed paths of `prefix`, optionally only those learned from `from`.
    fn paths(&self, family: Family, prefix: &str, from: Option<IpAddr>) -> Result<Vec<Route>> {
        let cmd = format!("show bgp {} unicast {prefix} json", afi(family));
        let v = self.json(&cmd)?;
        let mut out = Vec::new();
        let Some(paths) = v.get("paths").and_then(Value::as_array) else {
            // The prefix went away between the listing and this query.
            return Ok(out);
        };
        let prefix = parse_prefix(prefix)
            .ok_or_else(|| Error::parse(KIND, &cmd, "bad prefix", &v.to_string()))?;
        for p in paths {
            let route = parse_path(prefix, p);
            if from.is_none() || route.from == from {
                out.push(route);
            }
        }
        Ok(out)
    }

    fn routes_of(&self, listing: &str, family: Family, from: Option<IpAddr>) -> Result<Vec<Route>> {
        let v = self.json(listing)?;
        let mut routes = Vec::new();
        if let Some(map) = v.get("routes").and_then(Value::as_object) {
            for prefix in map.keys() {
                routes.extend(self.paths(family, prefix, from)?);
            }
        }
        Ok(routes)
    }
}

impl BgpDaemon for Frr {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        tools::require_all(&[BGPD, "vtysh"])?;
        let inst = Instance::new(KIND, ns, dir, &spec)?;
        let mut frr = Frr {
            spec,
            inst,
            next_map: 0,
        };
        frr.launch()?;
        Ok(frr)
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        let v = self.json("show bgp neighbors json")?;
        Ok(self
            .spec
            .neighbors
            .iter()
            .map(|n| {
                let state = v
                    .get(n.address.to_string())
                    .and_then(|p| p.get("bgpState"))
                    .and_then(Value::as_str)
                    .unwrap_or("not listed")
                    .to_string();
                SessionStatus {
                    neighbor: n.address,
                    established: state == "Established",
                    state,
                }
            })
            .collect())
    }

    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>> {
        let n = self
            .spec
            .find_neighbor(neighbor)
            .ok_or_else(|| Error::InvalidSpec(format!("frr has no neighbor {neighbor}")))?;
        let mut routes = Vec::new();
        for family in &n.families {
            let listing = format!(
                "show bgp {} unicast neighbors {neighbor} routes json",
                afi(*family)
            );
            routes.extend(self.routes_of(&listing, *family, Some(neighbor))?);
        }
        Ok(routes)
    }

    fn rib(&self) -> Result<Vec<Route>> {
        let mut routes = Vec::new();
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            let listing = format!("show bgp {} unicast json", afi(family));
            routes.extend(self.routes_of(&listing, family, None)?);
        }
        Ok(routes)
    }

    fn announce(&mut self, a: Announcement) -> Result<()> {
        let map = format!("SV_{}", self.next_map);
        self.next_map += 1;
        let mut cmds = vec!["configure terminal".to_string()];
        cmds.extend(route_map_lines(&map, &a));
        cmds.push(format!("router bgp {}", self.spec.asn));
        cmds.push(format!("address-family {} unicast", afi(a.family())));
        cmds.push(format!("network {} route-map {map}", a.prefix));
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        self.vtysh(&refs)?;
        self.spec.upsert_announcement(a);
        Ok(())
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        let prefix = prefix.trunc();
        self.vtysh(&[
            "configure terminal",
            &format!("router bgp {}", self.spec.asn),
            &format!("address-family {} unicast", afi(Family::of(&prefix))),
            &format!("no network {prefix}"),
        ])?;
        self.spec.remove_announcement(prefix);
        Ok(())
    }

    instance_lifecycle!();
}

fn afi(family: Family) -> &'static str {
    match family {
        Family::Ipv4Unicast => "ipv4",
        Family::Ipv6Unicast => "ipv6",
    }
}

fn route_map_lines(name: &str, a: &Announcement) -> Vec<String> {
    let mut lines = vec![format!("route-map {name} permit 10")];
    if !a.communities.is_empty() {
        let list: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
        lines.push(format!("set community {}", list.join(" ")));
    }
    if !a.large_communities.is_empty() {
        let list: Vec<String> = a.large_communities.iter().map(|c| c.to_string()).collect();
        lines.push(format!("set large-community {}", list.join(" ")));
    }
    if let Some(med) = a.med {
        lines.push(format!("set metric {med}"));
    }
    if let Some(lp) = a.local_pref {
        lines.push(format!("set local-preference {lp}"));
    }
    lines.push("exit".into());
    lines
}

/// The whole `bgpd.conf`, and how many route-map names it used.
pub fn render(spec: &RouterSpec) -> Result<(String, usize)> {
    let mut c = String::new();
    let _ = writeln!(c, "hostname sv-{}", spec.router_id);
    for (i, a) in spec.announce.iter().enumerate() {
        for line in route_map_lines(&format!("SV_{i}"), a) {
            let _ = writeln!(c, "{line}");
        }
    }
    let restart_times: Vec<u64> = spec
        .neighbors
        .iter()
        .filter_map(|n| n.graceful_restart.map(|t| t.as_secs()))
        .collect();
    if restart_times.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::Unsupported {
            daemon: KIND,
            feature: "different graceful-restart times per neighbor".into(),
        });
    }

    let _ = writeln!(c, "router bgp {}", spec.asn);
    let _ = writeln!(c, " bgp router-id {}", spec.router_id);
    c.push_str(" no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n");
    if let Some(t) = restart_times.first() {
        let _ = writeln!(
            c,
            " bgp graceful-restart\n bgp graceful-restart restart-time {t}"
        );
    }
    for n in &spec.neighbors {
        let a = n.address;
        let _ = writeln!(c, " neighbor {a} remote-as {}", n.asn);
        if let Some(local) = n.local_address {
            let _ = writeln!(c, " neighbor {a} update-source {local}");
        }
        if n.passive {
            let _ = writeln!(c, " neighbor {a} passive");
        }
        if let Some(pw) = &n.password {
            let _ = writeln!(c, " neighbor {a} password {}", pw.as_str());
        }
        match n.ttl {
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => {
                let _ = writeln!(c, " neighbor {a} ebgp-multihop {ttl}");
            }
            TtlMode::Gtsm { hops } => {
                let _ = writeln!(c, " neighbor {a} ttl-security hops {hops}");
            }
        }
        if n.graceful_restart.is_some() {
            let _ = writeln!(c, " neighbor {a} graceful-restart");
        }
        if !n.route_refresh {
            return Err(Error::Unsupported {
                daemon: KIND,
                feature: "turning route refresh off".into(),
            });
        }
        if let Some(h) = n.hold_time {
            let _ = writeln!(c, " neighbor {a} timers {} {h}", (h / 3).max(1));
        }
        // Retry a refused connection quickly: tests wait on sessions.
        let _ = writeln!(c, " neighbor {a} timers connect 2");
    }
    for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let neighbors: Vec<_> = spec
            .neighbors
            .iter()
            .filter(|n| n.carries(family))
            .collect();
        let announce: Vec<_> = spec
            .announce
            .iter()
            .enumerate()
            .filter(|(_, a)| a.family() == family)
            .collect();
        if neighbors.is_empty() && announce.is_empty() {
            continue;
        }
        let _ = writeln!(c, " address-family {} unicast", afi(family));
        for (i, a) in announce {
            let _ = writeln!(c, "  network {} route-map SV_{i}", a.prefix);
        }
        for n in neighbors {
            let a = n.address;
            let _ = writeln!(c, "  neighbor {a} activate");
            if n.add_path {
                let _ = writeln!(c, "  neighbor {a} addpath-tx-all-paths");
            }
            if n.rr_client {
                let _ = writeln!(c, "  neighbor {a} route-reflector-client");
            }
        }
        c.push_str(" exit-address-family\n");
    }
    c.push_str("exit\n");
    Ok((c, spec.announce.len()))
}

/// One path of `show bgp … PREFIX json`.
fn parse_path(prefix: IpNet, p: &Value) -> Route {
    let mut r = Route::new(prefix);
    r.as_path = p
        .pointer("/aspath/segments")
        .and_then(Value::as_array)
        .map(|segs| {
            segs.iter()
                .filter_map(|s| s.get("list").and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_u64)
                .map(|n| Asn(n as u32))
                .collect()
        })
        .unwrap_or_default();
    r.communities = strings(p.pointer("/community/list"))
        .iter()
        .filter_map(|s| well_known(s).or_else(|| s.parse().ok()))
        .collect();
    r.large_communities = strings(p.pointer("/largeCommunity/list"))
        .iter()
        .filter_map(|s| s.parse::<LargeCommunity>().ok())
        .collect();
    r.med = p.get("metric").and_then(Value::as_u64).map(|m| m as u32);
    r.local_pref = ["locPrf", "localpref", "localPref"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_u64))
        .map(|m| m as u32);
    r.next_hop = p
        .pointer("/nexthops/0/ip")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    r.from = p
        .pointer("/peer/peerId")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    r.stale = Some(p.get("stale").and_then(Value::as_bool).unwrap_or(false));
    r
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// FRR prints well-known communities (RFC 1997, RFC 9494…) by name.
fn well_known(name: &str) -> Option<Community> {
    let value = match name {
        "graceful-shutdown" => 0,
        "accept-own" => 1,
        "llgr-stale" => 6,
        "no-llgr" => 7,
        "blackhole" => 666,
        "no-export" => 0xff01,
        "no-advertise" => 0xff02,
        "local-AS" => 0xff03,
        "no-peer" => 0xff04,
        _ => return None,
    };
    Some(Community::new(0xffff, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NeighborSpec, Password};
    use std::net::Ipv4Addr;

    #[test]
    fn renders_policy_defaults_neighbours_and_networks() {
        let spec = RouterSpec::new(Asn(65002), Ipv4Addr::new(192, 0, 2, 2))
            .neighbor(
                NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(65001))
                    .password(Password::new("pw").unwrap())
                    .ttl(TtlMode::Gtsm { hops: 2 })
                    .passive(),
            )
            .neighbor(NeighborSpec::new(
                "2001:db8::1".parse().unwrap(),
                Asn(65001),
            ))
            .announce(
                Announcement::new("203.0.113.0/24".parse().unwrap())
                    .community(Community::new(65002, 20))
                    .large_community(LargeCommunity::new(65002, 5, 6))
                    .med(7),
            );
        let (c, maps) = render(&spec).unwrap();
        assert_eq!(maps, 1);
        for want in [
            "route-map SV_0 permit 10\nset community 65002:20\nset large-community 65002:5:6\nset metric 7\nexit",
            "no bgp ebgp-requires-policy",
            "no bgp default ipv4-unicast",
            " neighbor 192.0.2.1 password pw",
            " neighbor 192.0.2.1 ttl-security hops 2",
            " neighbor 192.0.2.1 passive",
            " address-family ipv4 unicast\n  network 203.0.113.0/24 route-map SV_0\n  neighbor 192.0.2.1 activate",
            " address-family ipv6 unicast\n  neighbor 2001:db8::1 activate",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn parses_a_detailed_path() {
        let v: Value = serde_json::from_str(
            r#"{"aspath":{"string":"65001","segments":[{"type":"as-sequence","list":[65001,65010]}],"length":2},
                "community":{"string":"65001:10 no-export","list":["65001:10","no-export"]},
                "largeCommunity":{"string":"65001:1:2","list":["65001:1:2"]},
                "metric":42,"locPrf":100,"stale":true,
                "nexthops":[{"ip":"192.0.2.1","afi":"ipv4"}],
                "peer":{"peerId":"192.0.2.1","routerId":"192.0.2.1","type":"external"}}"#,
        )
        .unwrap();
        let r = parse_path("198.18.1.0/24".parse().unwrap(), &v);
        assert_eq!(r.as_path, vec![Asn(65001), Asn(65010)]);
        assert_eq!(
            r.communities,
            vec![Community::new(65001, 10), Community::new(0xffff, 0xff01)]
        );
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65001, 1, 2)]);
        assert_eq!(r.med, Some(42));
        assert_eq!(r.local_pref, Some(100));
        assert_eq!(r.stale, Some(true));
        assert_eq!(r.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.from, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn local_paths_have_no_peer_address() {
        let v: Value = serde_json::from_str(r#"{"peer":{"peerId":"(unspec)"}}"#).unwrap();
        assert_eq!(parse_path("198.18.1.0/24".parse().unwrap(), &v).from, None);
    }

    #[test]
    fn route_refresh_off_is_unsupported() {
        let spec = RouterSpec::new(Asn(1), Ipv4Addr::new(1, 1, 1, 1))
            .neighbor(NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(2)).no_route_refresh());
        assert!(matches!(render(&spec), Err(Error::Unsupported { .. })));
    }
}
