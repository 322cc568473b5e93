//! GoBGP (`gobgpd` with its gRPC API on the namespace's loopback, driven and queried
//! with `gobgp … -j`).
//!
//! GoBGP's config file has no originated routes: announcements are added through the
//! API right after start, and again after every restart.

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

const KIND: &str = "gobgp";
/// The API port, on 127.0.0.1 inside the daemon's own namespace.
const API_PORT: &str = "50051";

#[derive(Debug)]
pub struct GoBgp {
    spec: RouterSpec,
    inst: Instance,
    started_before: bool,
}

impl GoBgp {
    /// Runs the `gobgp` client against this instance.
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["gobgp", "-p", API_PORT];
        argv.extend_from_slice(args);
        self.inst.exec(&argv)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let out = self.gobgp(args)?;
        let trimmed = out.trim();
        if trimmed.is_empty() || trimmed == "null" {
            return Ok(Value::Null);
        }
        serde_json::from_str(trimmed)
            .map_err(|e| Error::parse(KIND, format!("gobgp {}", args.join(" ")), e, &out))
    }

    fn launch(&mut self) -> Result<()> {
        let config = render(&self.spec)?;
        let conf = self
            .inst
            .write("gobgpd.toml", &config)?
            .to_string_lossy()
            .into_owned();
        let api = format!("--api-hosts=127.0.0.1:{API_PORT}");
        let mut argv = vec!["gobgpd", "-f", &conf, &api, "--pprof-disable", "-p"];
        let restarting = self.started_before
            && self
                .spec
                .neighbors
                .iter()
                .any(|n| n.graceful_restart.is_some());
        if restarting {
            argv.push("--graceful-restart");
        }
        self.inst.spawn(&argv)?;
        self.started_before = true;
        self.inst.wait_ready("gobgp global", |ns: &NsHandle| {
            ns.exec(&["gobgp", "-p", API_PORT, "global"]).map(drop)
        })?;
        for a in self.spec.announce.clone() {
            self.add(&a)?;
        }
        Ok(())
    }

    fn add(&self, a: &Announcement) -> Result<()> {
        let prefix = a.prefix.to_string();
        let mut args: Vec<String> = vec!["global", "rib", "add", &prefix, "origin", "igp"]
            .into_iter()
            .map(String::from)
            .collect();
        if !a.communities.is_empty() {
            let list: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
            args.extend(["community".into(), list.join(",")]);
        }
        if !a.large_communities.is_empty() {
            let list: Vec<String> = a.large_communities.iter().map(|c| c.to_string()).collect();
            args.extend(["large-community".into(), list.join(",")]);
        }
        if let Some(med) = a.med {
            args.extend(["med".into(), med.to_string()]);
        }
        if let Some(lp) = a.local_pref {
            args.extend(["local-pref".into(), lp.to_string()]);
        }
        args.extend(["-a".into(), afi(a.family()).into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.gobgp(&refs).map(drop)
    }
}

impl BgpDaemon for GoBgp {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        tools::require_all(&["gobgpd", "gobgp"])?;
        let inst = Instance::new(KIND, ns, dir, &spec)?;
        let mut g = GoBgp {
            spec,
            inst,
            started_before: false,
        };
        g.launch()?;
        Ok(g)
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        let v = self.json(&["neighbor", "-j"])?;
        let peers = v.as_array().cloned().unwrap_or_default();
        Ok(self
            .spec
            .neighbors
            .iter()
            .map(|n| {
                let code = peers
                    .iter()
                    .find(|p| {
                        p.pointer("/conf/neighbor_address").and_then(Value::as_str)
                            == Some(n.address.to_string().as_str())
                    })
                    .and_then(|p| p.pointer("/state/session_state"))
                    .and_then(Value::as_u64);
                let state = code.map(session_state).unwrap_or("not listed").to_string();
                SessionStatus {
                    neighbor: n.address,
                    established: code == Some(6),
                    state,
                }
            })
            .collect())
    }

    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>> {
        let n = self
            .spec
            .find_neighbor(neighbor)
            .ok_or_else(|| Error::InvalidSpec(format!("gobgp has no neighbor {neighbor}")))?;
        let addr = neighbor.to_string();
        let mut routes = Vec::new();
        for family in &n.families {
            let v = match self.json(&["neighbor", &addr, "adj-in", "-a", afi(*family), "-j"]) {
                // GoBGP refuses to list the Adj-RIB-In of a session that is down (and
                // holds nothing for it, unless graceful restart keeps it, which it lists).
                Err(Error::Command { stdout, .. }) if stdout.contains("is not established") => {
                    continue
                }
                other => other?,
            };
            routes.extend(parse_table(&v)?);
        }
        Ok(routes)
    }

    fn rib(&self) -> Result<Vec<Route>> {
        let mut routes = Vec::new();
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            let v = self.json(&["global", "rib", "-a", afi(family), "-j"])?;
            routes.extend(parse_table(&v)?);
        }
        Ok(routes)
    }

    fn announce(&mut self, a: Announcement) -> Result<()> {
        self.add(&a)?;
        self.spec.upsert_announcement(a);
        Ok(())
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        let prefix = prefix.trunc();
        let family = afi(Family::of(&prefix));
        self.gobgp(&["global", "rib", "del", &prefix.to_string(), "-a", family])?;
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

/// GoBGP API `PeerState.SessionState`.
fn session_state(code: u64) -> &'static str {
    match code {
        1 => "idle",
        2 => "connect",
        3 => "active",
        4 => "opensent",
        5 => "openconfirm",
        6 => "established",
        _ => "unknown",
    }
}

/// The whole `gobgpd.toml`.
pub fn render(spec: &RouterSpec) -> Result<String> {
    let mut c = String::new();
    c.push_str("[global.config]\n");
    let _ = writeln!(c, "  as = {}", spec.asn);
    let _ = writeln!(c, "  router-id = \"{}\"", spec.router_id);
    c.push_str("  port = 179\n");
    if !spec.listen.is_empty() {
        let list: Vec<String> = spec.listen.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(c, "  local-address-list = [{}]", list.join(", "));
    }
    for n in &spec.neighbors {
        if !n.route_refresh {
            return Err(Error::Unsupported {
                daemon: KIND,
                feature: "turning route refresh off".into(),
            });
        }
        c.push_str("\n[[neighbors]]\n  [neighbors.config]\n");
        let _ = writeln!(c, "    neighbor-address = \"{}\"", n.address);
        let _ = writeln!(c, "    peer-as = {}", n.asn);
        if let Some(pw) = &n.password {
            let _ = writeln!(c, "    auth-password = \"{}\"", pw.as_str());
        }
        if n.local_address.is_some() || n.passive {
            c.push_str("  [neighbors.transport.config]\n");
            if let Some(local) = n.local_address {
                let _ = writeln!(c, "    local-address = \"{local}\"");
            }
            if n.passive {
                c.push_str("    passive-mode = true\n");
            }
        }
        // Quick retries, also after a reset (GoBGP waits 30 s by default).
        c.push_str("  [neighbors.timers.config]\n    connect-retry = 2\n    idle-hold-time-after-reset = 1\n");
        if let Some(h) = n.hold_time {
            let _ = writeln!(
                c,
                "    hold-time = {h}\n    keepalive-interval = {}",
                (h / 3).max(1)
            );
        }
        match n.ttl {
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => {
                let _ = writeln!(
                    c,
                    "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = {ttl}"
                );
            }
            TtlMode::Gtsm { hops } => {
                let min = 256 - u16::from(hops);
                let _ = writeln!(
                    c,
                    "  [neighbors.ttl-security.config]\n    enabled = true\n    ttl-min = {min}"
                );
            }
        }
        if let Some(t) = n.graceful_restart {
            let _ = writeln!(
                c,
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {}",
                t.as_secs()
            );
        }
        if n.rr_client {
            let _ = writeln!(
                c,
                "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{}\"",
                spec.router_id
            );
        }
        if n.add_path {
            c.push_str("  [neighbors.add-paths.config]\n    receive = true\n    send-max = 8\n");
        }
        for family in &n.families {
            let name = match family {
                Family::Ipv4Unicast => "ipv4-unicast",
                Family::Ipv6Unicast => "ipv6-unicast",
            };
            c.push_str("  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n");
            let _ = writeln!(c, "      afi-safi-name = \"{name}\"");
            if n.graceful_restart.is_some() {
                c.push_str(
                    "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
                );
            }
        }
    }
    Ok(c)
}

/// A `{prefix: [path…]}` table from `-j` output.
fn parse_table(v: &Value) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    let Some(map) = v.as_object() else {
        return Ok(routes);
    };
    for (key, paths) in map {
        let prefix =
            parse_prefix(key).ok_or_else(|| Error::parse(KIND, "a RIB", "bad prefix", key))?;
        for p in paths.as_array().into_iter().flatten() {
            routes.push(parse_path(prefix, p));
        }
    }
    Ok(routes)
}

fn parse_path(prefix: IpNet, p: &Value) -> Route {
    let mut r = Route::new(prefix);
    r.stale = Some(p.get("stale").and_then(Value::as_bool).unwrap_or(false));
    r.from = p
        .get("neighbor-ip")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    for attr in p
        .get("attrs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let u32_of = |key: &str| attr.get(key).and_then(Value::as_u64).map(|n| n as u32);
        match attr.get("type").and_then(Value::as_u64) {
            Some(2) => {
                r.as_path = attr
                    .get("as_paths")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|seg| seg.get("asns").and_then(Value::as_array))
                    .flatten()
                    .filter_map(Value::as_u64)
                    .map(|n| Asn(n as u32))
                    .collect();
            }
            Some(3) | Some(14) => {
                r.next_hop = attr
                    .get("nexthop")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok());
            }
            Some(4) => r.med = u32_of("metric"),
            Some(5) => r.local_pref = u32_of("value"),
            Some(8) => {
                r.communities = attr
                    .get("communities")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .map(|n| Community::from_u32(n as u32))
                    .collect();
            }
            Some(32) => {
                r.large_communities = attr
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|lc| {
                        let f = |k: &str| lc.get(k).and_then(Value::as_u64).map(|n| n as u32);
                        Some(LargeCommunity::new(
                            f("ASN")?,
                            f("LocalData1")?,
                            f("LocalData2")?,
                        ))
                    })
                    .collect();
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NeighborSpec, Password};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn renders_neighbour_options() {
        let spec = RouterSpec::new(Asn(65002), Ipv4Addr::new(192, 0, 2, 2)).neighbor(
            NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(65001))
                .local("192.0.2.2".parse().unwrap())
                .password(Password::new("pw").unwrap())
                .ttl(TtlMode::Gtsm { hops: 2 })
                .graceful_restart(Duration::from_secs(40)),
        );
        let c = render(&spec).unwrap();
        for want in [
            "as = 65002",
            "neighbor-address = \"192.0.2.1\"",
            "auth-password = \"pw\"",
            "local-address = \"192.0.2.2\"",
            "ttl-min = 254",
            "restart-time = 40",
            "afi-safi-name = \"ipv4-unicast\"",
            "[neighbors.afi-safis.mp-graceful-restart.config]",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn parses_adj_in_json() {
        let v: Value = serde_json::from_str(
            r#"{"198.18.1.0/24":[{"nlri":{"prefix":"198.18.1.0/24"},"best":false,
               "attrs":[{"type":1,"value":0},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[65001]}]},
                        {"type":3,"nexthop":"192.0.2.1"},{"type":4,"metric":42},{"type":5,"value":120},
                        {"type":8,"communities":[4259905546]},
                        {"type":32,"value":[{"ASN":65001,"LocalData1":1,"LocalData2":2}]}],
               "stale":false,"source-id":"192.0.2.1","neighbor-ip":"192.0.2.1"}],
               "2001:db8:100::/48":[{"attrs":[{"type":14,"nexthop":"2001:db8::1","afi":2,"safi":1}],"stale":true}]}"#,
        )
        .unwrap();
        let mut routes = parse_table(&v).unwrap();
        routes.sort_by_key(|r| r.prefix);
        let r = &routes[0];
        assert_eq!(r.prefix.to_string(), "198.18.1.0/24");
        assert_eq!(r.as_path, vec![Asn(65001)]);
        assert_eq!(r.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.med, Some(42));
        assert_eq!(r.local_pref, Some(120));
        assert_eq!(r.communities, vec![Community::new(65001, 10)]);
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65001, 1, 2)]);
        assert_eq!(r.from, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(routes[1].next_hop, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(routes[1].stale, Some(true));
    }

    #[test]
    fn empty_answers_are_empty_tables() {
        assert!(parse_table(&Value::Null).unwrap().is_empty());
    }
}
