//! BIRD 2 (`bird -f`, queried with `birdc`), the reference peer.
//!
//! Originated prefixes are blackhole routes in a static protocol per family; their
//! attributes are set in the BGP export filter, because BIRD only sends a MED that was
//! set on export ("fresh"), not one carried from the static route. Export is `all`:
//! without an export filter an eBGP channel exports nothing.

use super::{numbers, BgpDaemon, Instance};
use crate::error::{Error, Result};
use crate::netns::{Netns, NsHandle};
use crate::observed::{parse_prefix, Route, SessionStatus};
use crate::spec::{Announcement, Asn, Community, Family, LargeCommunity, RouterSpec, TtlMode};
use crate::tools;
use crate::workdir::TestDir;
use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::IpAddr;

const KIND: &str = "bird";

#[derive(Debug)]
pub struct Bird {
    spec: RouterSpec,
    inst: Instance,
    /// Set after the first start: BIRD then restarts in graceful-restart recovery.
    started_before: bool,
}

impl Bird {
    fn socket(&self) -> String {
        self.inst.path_str("bird.ctl")
    }

    /// Runs `birdc` against this instance: for what the uniform API does not cover.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let sock = self.socket();
        let mut argv = vec!["birdc", "-s", sock.as_str()];
        argv.extend_from_slice(args);
        self.inst.exec(&argv)
    }

    /// The name of the BGP protocol that talks to `neighbor` (for `birdc` commands).
    pub fn protocol(&self, neighbor: IpAddr) -> Result<String> {
        self.spec
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .map(proto_name)
            .ok_or_else(|| Error::InvalidSpec(format!("bird has no neighbor {neighbor}")))
    }

    fn launch(&mut self) -> Result<()> {
        let config = render(&self.spec)?;
        let conf = self.inst.write("bird.conf", &config)?;
        let conf = conf.to_string_lossy().into_owned();
        let sock = self.socket();
        let mut argv = vec!["bird", "-f", "-c", conf.as_str(), "-s", sock.as_str()];
        let recover = self.started_before
            && self
                .spec
                .neighbors
                .iter()
                .any(|n| n.graceful_restart.is_some());
        if recover {
            argv.push("-R");
        }
        self.inst.spawn(&argv)?;
        self.started_before = true;
        self.inst.wait_ready("birdc show status", |ns: &NsHandle| {
            ns.exec(&["birdc", "-s", &sock, "show", "status"]).map(drop)
        })
    }

    fn reconfigure(&mut self) -> Result<()> {
        let config = render(&self.spec)?;
        self.inst.write("bird.conf", &config)?;
        let out = self.birdc(&["configure"])?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(Error::parse(
                KIND,
                "the answer to configure",
                "not reconfigured",
                &out,
            ))
        }
    }
}

impl BgpDaemon for Bird {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        tools::require_all(&["bird", "birdc"])?;
        let inst = Instance::new(KIND, ns, dir, &spec)?;
        let mut bird = Bird {
            spec,
            inst,
            started_before: false,
        };
        bird.launch()?;
        Ok(bird)
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        let out = self.birdc(&["show", "protocols"])?;
        let states = parse_protocols(&out);
        Ok(self
            .spec
            .neighbors
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let state = states
                    .iter()
                    .find(|(name, _)| *name == proto_name(i))
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| "not listed".into());
                SessionStatus {
                    neighbor: n.address,
                    established: state == "Established",
                    state,
                }
            })
            .collect())
    }

    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>> {
        let index = self
            .spec
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .ok_or_else(|| Error::InvalidSpec(format!("bird has no neighbor {neighbor}")))?;
        let out = self.birdc(&["show", "route", "all", "protocol", &proto_name(index)])?;
        parse_routes(&out, &self.spec)
    }

    fn rib(&self) -> Result<Vec<Route>> {
        let out = self.birdc(&["show", "route", "all"])?;
        parse_routes(&out, &self.spec)
    }

    fn announce(&mut self, announcement: Announcement) -> Result<()> {
        self.spec.upsert_announcement(announcement);
        self.reconfigure()
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        self.spec.remove_announcement(prefix);
        self.reconfigure()
    }

    instance_lifecycle!();
}

fn proto_name(index: usize) -> String {
    format!("sv_n{index}")
}

fn static_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4Unicast => "sv_static4",
        Family::Ipv6Unicast => "sv_static6",
    }
}

fn channel(family: Family) -> &'static str {
    match family {
        Family::Ipv4Unicast => "ipv4",
        Family::Ipv6Unicast => "ipv6",
    }
}

/// The whole `bird.conf` for `spec`.
pub fn render(spec: &RouterSpec) -> Result<String> {
    let mut c = String::new();
    let _ = writeln!(c, "router id {};", spec.router_id);
    c.push_str("log stderr all;\n");
    c.push_str("timeformat protocol \"%T\";\n");
    c.push_str("protocol device {}\n\n");

    for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        if !spec.uses(family) {
            continue;
        }
        let _ = writeln!(c, "protocol static {} {{", static_name(family));
        let _ = writeln!(c, "  {};", channel(family));
        for a in spec.announce.iter().filter(|a| a.family() == family) {
            let _ = writeln!(c, "  route {} blackhole;", a.prefix);
        }
        c.push_str("}\n\n");
    }

    // BIRD takes BFD timers per interface (and for multihop sessions), not per BGP
    // neighbour: the first neighbour with BFD sets them for all.
    if let Some(b) = spec.neighbors.iter().find_map(|n| n.bfd) {
        let timers = format!(
            "min rx interval {} ms; min tx interval {} ms; idle tx interval 1000 ms; multiplier {};",
            b.min_rx_ms, b.min_tx_ms, b.multiplier
        );
        let _ = writeln!(
            c,
            "protocol bfd sv_bfd {{\n  interface \"*\" {{ {timers} }};\n  multihop {{ {timers} }};\n}}\n"
        );
    }

    // Accept all, adding the attributes of each originated prefix.
    c.push_str("filter sv_export {\n");
    for a in &spec.announce {
        let _ = writeln!(c, "  if net = {} then {{", a.prefix);
        for com in &a.communities {
            let _ = writeln!(c, "    bgp_community.add(({},{}));", com.asn, com.value);
        }
        for lc in &a.large_communities {
            let _ = writeln!(
                c,
                "    bgp_large_community.add(({},{},{}));",
                lc.global, lc.local1, lc.local2
            );
        }
        if let Some(med) = a.med {
            let _ = writeln!(c, "    bgp_med = {med};");
        }
        if let Some(lp) = a.local_pref {
            let _ = writeln!(c, "    bgp_local_pref = {lp};");
        }
        c.push_str("  }\n");
    }
    c.push_str("  accept;\n}\n\n");

    for (i, n) in spec.neighbors.iter().enumerate() {
        let ibgp = n.asn == spec.asn;
        let _ = writeln!(c, "protocol bgp {} {{", proto_name(i));
        match n.local_address {
            Some(local) => {
                let _ = writeln!(c, "  local {local} as {};", spec.asn);
            }
            None => {
                let _ = writeln!(c, "  local as {};", spec.asn);
            }
        }
        let _ = writeln!(c, "  neighbor {} as {};", n.address, n.asn);
        if !spec.listen.is_empty() {
            match n.local_address {
                Some(local) if spec.listen.contains(&local) => c.push_str("  strict bind on;\n"),
                _ => {
                    return Err(Error::Unsupported {
                        daemon: KIND,
                        feature: format!(
                            "a listen address without neighbor {} having it as local address",
                            n.address
                        ),
                    })
                }
            }
        }
        if n.passive {
            c.push_str("  passive on;\n");
        }
        if let Some(pw) = &n.password {
            let _ = writeln!(c, "  password \"{}\";", pw.as_str());
        }
        match n.ttl {
            TtlMode::Direct if ibgp => c.push_str("  direct;\n"),
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => {
                let _ = writeln!(c, "  multihop {ttl};");
            }
            TtlMode::Gtsm { hops } => {
                if hops > 1 {
                    let _ = writeln!(c, "  multihop {hops};");
                } else if ibgp {
                    c.push_str("  direct;\n");
                }
                c.push_str("  ttl security on;\n");
            }
        }
        if let Some(t) = n.graceful_restart {
            let _ = writeln!(
                c,
                "  graceful restart on;\n  graceful restart time {};",
                t.as_secs()
            );
        }
        if !n.route_refresh {
            c.push_str("  enable route refresh off;\n");
        }
        if let Some(h) = n.hold_time {
            let _ = writeln!(c, "  hold time {h};\n  keepalive time {};", (h / 3).max(1));
        }
        if n.rr_client {
            c.push_str("  rr client;\n");
        }
        if n.bfd.is_some() {
            c.push_str("  bfd on;\n");
        }
        // Quick retries: tests wait on sessions, not on BIRD's minute-long defaults.
        c.push_str("  connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 5;\n");
        for family in &n.families {
            let _ = writeln!(c, "  {} {{", channel(*family));
            c.push_str("    import all;\n    export filter sv_export;\n");
            if n.add_path {
                c.push_str("    add paths on;\n");
            }
            c.push_str("  };\n");
        }
        c.push_str("}\n\n");
    }
    Ok(c)
}

/// `(protocol name, BGP state)` from `show protocols`; the state is the first word
/// of the Info column ("Established", "Active", "Connect", …) or the protocol state.
fn parse_protocols(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 5 || cols[1] != "BGP" {
                return None;
            }
            // name proto table state since [info…]
            let state = cols.get(5).copied().unwrap_or(cols[3]);
            Some((cols[0].to_string(), state.to_string()))
        })
        .collect()
}

/// Routes from `show route all`: a line that starts in column 0 opens a prefix, an
/// indented one without a tab is another path for it, tab-indented lines are
/// attributes of the current path.
fn parse_routes(out: &str, spec: &RouterSpec) -> Result<Vec<Route>> {
    let mut routes: Vec<Route> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    for line in out.lines() {
        if line.is_empty() || line.starts_with("BIRD ") || line.starts_with("Table ") {
            continue;
        }
        if line.starts_with('\t') {
            let Some(route) = routes.last_mut() else {
                continue;
            };
            attribute(route, line.trim())
                .map_err(|detail| Error::parse(KIND, "show route all", detail, out))?;
            continue;
        }
        if !line.starts_with(' ') {
            let first = line.split_whitespace().next().unwrap_or_default();
            prefix = Some(
                parse_prefix(first)
                    .ok_or_else(|| Error::parse(KIND, "show route all", "bad prefix", out))?,
            );
        }
        let Some(p) = prefix else {
            return Err(Error::parse(
                KIND,
                "show route all",
                "path before prefix",
                out,
            ));
        };
        let mut route = Route::new(p);
        route.from = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|proto| proto.strip_prefix("sv_n"))
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| spec.neighbors.get(i))
            .map(|n| n.address);
        routes.push(route);
    }
    Ok(routes)
}

fn attribute(route: &mut Route, line: &str) -> std::result::Result<(), String> {
    let Some((key, value)) = line.split_once(':') else {
        return Ok(());
    };
    let value = value.trim();
    match key {
        "BGP.as_path" => {
            route.as_path = numbers(value).into_iter().map(|n| Asn(n as u32)).collect();
        }
        "BGP.next_hop" => {
            let mut words = value.split_whitespace();
            route.next_hop = words.next().and_then(|a| a.parse().ok());
            route.link_local_next_hop = words.next().and_then(|a| a.parse().ok());
        }
        "BGP.originator_id" => route.originator_id = value.parse().ok(),
        "BGP.cluster_list" => {
            route.cluster_list = value
                .split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect();
        }
        "BGP.med" => route.med = value.parse().ok(),
        "BGP.local_pref" => route.local_pref = value.parse().ok(),
        "BGP.community" => {
            let n = numbers(value);
            if n.len() % 2 != 0 {
                return Err(format!("odd community list `{value}`"));
            }
            route.communities = n
                .chunks(2)
                .map(|p| Community::new(p[0] as u16, p[1] as u16))
                .collect();
            // BIRD does not show graceful-restart staleness; the RFC 9494 LLGR_STALE
            // community is the one sign of a route kept past a restart.
            if route.has_community(Community::new(0xffff, 6)) {
                route.stale = Some(true);
            }
        }
        "BGP.large_community" => {
            let n = numbers(value);
            if n.len() % 3 != 0 {
                return Err(format!("bad large community list `{value}`"));
            }
            route.large_communities = n
                .chunks(3)
                .map(|p| LargeCommunity::new(p[0] as u32, p[1] as u32, p[2] as u32))
                .collect();
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NeighborSpec, Password};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn spec() -> RouterSpec {
        RouterSpec::new(Asn(65001), Ipv4Addr::new(192, 0, 2, 1))
            .neighbor(
                NeighborSpec::new("192.0.2.2".parse().unwrap(), Asn(65002))
                    .local("192.0.2.1".parse().unwrap())
                    .password(Password::new("pw1").unwrap())
                    .ttl(TtlMode::Gtsm { hops: 2 })
                    .graceful_restart(Duration::from_secs(30)),
            )
            .neighbor(NeighborSpec::new(
                "2001:db8::2".parse().unwrap(),
                Asn(65002),
            ))
            .announce(
                Announcement::new("203.0.113.0/24".parse().unwrap())
                    .community(Community::new(65001, 10))
                    .large_community(LargeCommunity::new(65001, 1, 2))
                    .med(42),
            )
    }

    #[test]
    fn renders_neighbours_statics_and_export_attributes() {
        let c = render(&spec()).unwrap();
        assert!(c.contains("router id 192.0.2.1;"), "{c}");
        assert!(c.contains("route 203.0.113.0/24 blackhole;"), "{c}");
        assert!(c.contains("if net = 203.0.113.0/24 then {"), "{c}");
        assert!(c.contains("bgp_community.add((65001,10));"), "{c}");
        assert!(c.contains("bgp_large_community.add((65001,1,2));"), "{c}");
        assert!(c.contains("bgp_med = 42;"), "{c}");
        assert!(c.contains("local 192.0.2.1 as 65001;"), "{c}");
        assert!(c.contains("neighbor 192.0.2.2 as 65002;"), "{c}");
        assert!(c.contains("password \"pw1\";"), "{c}");
        assert!(c.contains("multihop 2;\n  ttl security on;"), "{c}");
        assert!(c.contains("graceful restart time 30;"), "{c}");
        assert!(c.contains("protocol static sv_static6"), "{c}");
        assert!(
            c.contains("  ipv6 {\n    import all;\n    export filter sv_export;"),
            "{c}"
        );
    }

    #[test]
    fn parses_protocol_states() {
        let out = "BIRD 2.0.12 ready.\n\
Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     15:59:19.990  \n\
sv_static4 Static     master4    up     15:59:19.990  \n\
sv_n0      BGP        ---        up     15:59:24.725  Established   \n\
sv_n1      BGP        ---        start  15:59:24.724  Idle          Received: Invalid network field\n";
        let states = parse_protocols(out);
        assert_eq!(
            states,
            vec![
                ("sv_n0".to_string(), "Established".to_string()),
                ("sv_n1".to_string(), "Idle".to_string())
            ]
        );
    }

    #[test]
    fn parses_routes_with_attributes() {
        let out = "BIRD 2.0.12 ready.\n\
Table master4:\n\
198.18.2.0/24        unicast [sv_n0 15:59:36.749] * (100) [AS65002i]\n\
\tvia 192.0.2.2 on e0\n\
\tType: BGP univ\n\
\tBGP.origin: IGP\n\
\tBGP.as_path: 65002 65010\n\
\tBGP.next_hop: 192.0.2.2\n\
\tBGP.med: 7\n\
\tBGP.local_pref: 100\n\
\tBGP.community: (65002,20) (65002,21)\n\
\tBGP.large_community: (65002, 5, 6)\n\
\x20                    unicast [sv_n1 15:59:37.000] (100) [AS65002i]\n\
\tBGP.next_hop: 2001:db8::2 fe80::1\n\
\tBGP.originator_id: 192.0.2.9\n\
\tBGP.cluster_list: 192.0.2.1 10.0.0.1\n\
Table master6:\n\
2001:db8:200::/48    blackhole [sv_static6 15:59:19.990] * (200)\n\
\tType: static univ\n";
        let routes = parse_routes(out, &spec()).unwrap();
        assert_eq!(routes.len(), 3);
        let r = &routes[0];
        assert_eq!(r.prefix.to_string(), "198.18.2.0/24");
        assert_eq!(r.from, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(r.next_hop, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(r.as_path, vec![Asn(65002), Asn(65010)]);
        assert_eq!(r.med, Some(7));
        assert_eq!(r.local_pref, Some(100));
        assert_eq!(
            r.communities,
            vec![Community::new(65002, 20), Community::new(65002, 21)]
        );
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65002, 5, 6)]);
        assert_eq!(r.stale, None);
        assert_eq!(routes[1].prefix.to_string(), "198.18.2.0/24");
        assert_eq!(routes[1].from, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(routes[1].next_hop, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(
            routes[1].link_local_next_hop,
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(routes[1].originator_id, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(
            routes[1].cluster_list,
            vec![
                "192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert_eq!(r.link_local_next_hop, None);
        assert_eq!(routes[2].prefix.to_string(), "2001:db8:200::/48");
        assert_eq!(routes[2].from, None);
    }

    #[test]
    fn listen_without_matching_local_address_is_unsupported() {
        let s = spec().listen("192.0.2.9".parse().unwrap());
        assert!(matches!(render(&s), Err(Error::Unsupported { .. })));
    }
}
