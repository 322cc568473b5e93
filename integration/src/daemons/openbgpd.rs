//! OpenBGPD (`bgpd -d`, queried with `bgpctl -j`, JSON since 6.9).
//!
//! Its defaults undone here: every UPDATE is denied unless a filter allows it
//! (`allow from any`, `allow to any`), it installs routes into the kernel unless
//! `fib-update no`, and it waits two minutes between connection attempts.

use super::{BgpDaemon, Instance};
use crate::error::{Error, Result};
use crate::netns::{Netns, NsHandle};
use crate::observed::{parse_prefix, Route, SessionStatus};
use crate::spec::{Announcement, Asn, Community, Family, RouterSpec, TtlMode};
use crate::tools;
use crate::workdir::TestDir;
use ipnet::IpNet;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;

const KIND: &str = "openbgpd";

#[derive(Debug)]
pub struct OpenBgpd {
    spec: RouterSpec,
    inst: Instance,
}

impl OpenBgpd {
    fn socket(&self) -> String {
        self.inst.path_str("bgpd.sock")
    }

    /// Runs `bgpctl` against this instance.
    pub fn bgpctl(&self, args: &[&str]) -> Result<String> {
        let sock = self.socket();
        let mut argv = vec!["bgpctl", "-s", sock.as_str()];
        argv.extend_from_slice(args);
        self.inst.exec(&argv)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.bgpctl(&full)?;
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out)
            .map_err(|e| Error::parse(KIND, format!("bgpctl -j {}", args.join(" ")), e, &out))
    }

    fn launch(&mut self) -> Result<()> {
        std::fs::create_dir_all("/run/openbgpd")
            .map_err(|e| Error::io("creating", "/run/openbgpd", e))?;
        let sock = self.socket();
        let config = render(&self.spec, &sock)?;
        let conf = self.inst.write("bgpd.conf", &config)?;
        // bgpd refuses a config file others can read.
        set_mode(&conf, 0o600)?;
        let conf = conf.to_string_lossy().into_owned();
        self.inst.spawn(&["bgpd", "-d", "-f", &conf])?;
        self.inst.wait_ready("bgpctl show", |ns: &NsHandle| {
            ns.exec(&["bgpctl", "-s", &sock, "show"]).map(drop)
        })
    }

    fn rib_routes(&self, args: &[&str]) -> Result<Vec<Route>> {
        let v = self.json(args)?;
        let mut routes = Vec::new();
        for p in v.get("rib").and_then(Value::as_array).into_iter().flatten() {
            routes.push(parse_path(p).ok_or_else(|| {
                Error::parse(
                    KIND,
                    format!("bgpctl -j {}", args.join(" ")),
                    "bad entry",
                    &p.to_string(),
                )
            })?);
        }
        Ok(routes)
    }
}

impl BgpDaemon for OpenBgpd {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        tools::require_all(&["bgpd", "bgpctl"])?;
        let inst = Instance::new(KIND, ns, dir, &spec)?;
        let mut o = OpenBgpd { spec, inst };
        o.launch()?;
        Ok(o)
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        let v = self.json(&["show", "neighbor"])?;
        let peers = v
            .get("neighbors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(self
            .spec
            .neighbors
            .iter()
            .map(|n| {
                let state = peers
                    .iter()
                    .find(|p| {
                        p.get("remote_addr")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<IpAddr>().ok())
                            == Some(n.address)
                    })
                    .and_then(|p| p.get("state"))
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
        if self.spec.find_neighbor(neighbor).is_none() {
            return Err(Error::InvalidSpec(format!(
                "openbgpd has no neighbor {neighbor}"
            )));
        }
        self.rib_routes(&[
            "show",
            "rib",
            "in",
            "neighbor",
            &neighbor.to_string(),
            "detail",
        ])
    }

    fn rib(&self) -> Result<Vec<Route>> {
        self.rib_routes(&["show", "rib", "detail"])
    }

    fn announce(&mut self, a: Announcement) -> Result<()> {
        let prefix = a.prefix.to_string();
        let attrs = attribute_words(&a);
        let mut args = vec!["network", "add", prefix.as_str()];
        args.extend(attrs.iter().map(String::as_str));
        self.bgpctl(&args)?;
        self.spec.upsert_announcement(a);
        Ok(())
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        let prefix = prefix.trunc();
        self.bgpctl(&["network", "delete", &prefix.to_string()])?;
        self.spec.remove_announcement(prefix);
        Ok(())
    }

    instance_lifecycle!();
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting the mode of", path, e))
}

/// `community A:B large-community G:L:L med N localpref N`, the same words in
/// `network … set { }` and in `bgpctl network add`.
fn attribute_words(a: &Announcement) -> Vec<String> {
    let mut w = Vec::new();
    for c in &a.communities {
        w.extend(["community".to_string(), c.to_string()]);
    }
    for c in &a.large_communities {
        w.extend(["large-community".to_string(), c.to_string()]);
    }
    if let Some(med) = a.med {
        w.extend(["med".to_string(), med.to_string()]);
    }
    if let Some(lp) = a.local_pref {
        w.extend(["localpref".to_string(), lp.to_string()]);
    }
    w
}

/// The whole `bgpd.conf`; `socket` is the control socket bgpctl talks to.
pub fn render(spec: &RouterSpec, socket: &str) -> Result<String> {
    let mut c = String::new();
    let _ = writeln!(c, "AS {}", spec.asn);
    let _ = writeln!(c, "router-id {}", spec.router_id);
    c.push_str("fib-update no\nconnect-retry 2\n");
    let _ = writeln!(c, "socket \"{socket}\"");
    for l in &spec.listen {
        let _ = writeln!(c, "listen on {l}");
    }
    for a in &spec.announce {
        let words = attribute_words(a);
        if words.is_empty() {
            let _ = writeln!(c, "network {}", a.prefix);
        } else {
            let _ = writeln!(c, "network {} set {{ {} }}", a.prefix, words.join(" "));
        }
    }
    for n in &spec.neighbors {
        let _ = writeln!(c, "neighbor {} {{", n.address);
        let _ = writeln!(c, "  remote-as {}", n.asn);
        if let Some(local) = n.local_address {
            let _ = writeln!(c, "  local-address {local}");
        }
        if n.passive {
            c.push_str("  passive\n");
        }
        if let Some(h) = n.hold_time {
            let _ = writeln!(c, "  holdtime {h}");
        }
        if let Some(pw) = &n.password {
            let _ = writeln!(c, "  tcp md5sig password {}", pw.as_str());
        }
        match n.ttl {
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => {
                let _ = writeln!(c, "  multihop {ttl}");
            }
            TtlMode::Gtsm { hops } => {
                // Accepts TTL >= 256 - multihop; direct peers must arrive with 255.
                if hops > 1 {
                    let _ = writeln!(c, "  multihop {hops}");
                }
                c.push_str("  ttl-security yes\n");
            }
        }
        for (family, word) in [(Family::Ipv4Unicast, "IPv4"), (Family::Ipv6Unicast, "IPv6")] {
            let what = if n.carries(family) { "unicast" } else { "none" };
            let _ = writeln!(c, "  announce {word} {what}");
        }
        // OpenBGPD announces only the End-of-RIB part of graceful restart and takes
        // no restart time.
        let restart = if n.graceful_restart.is_some() {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(c, "  announce restart {restart}");
        if n.route_refresh {
            c.push_str("  announce enhanced refresh yes\n");
        } else {
            c.push_str("  announce refresh no\n");
        }
        if n.add_path {
            c.push_str("  announce add-path recv yes\n  announce add-path send all\n");
        }
        if n.rr_client {
            c.push_str("  route-reflector\n");
        }
        c.push_str("}\n");
    }
    c.push_str("allow from any\nallow to any\n");
    Ok(c)
}

/// One entry of `bgpctl -j show rib … detail`.
fn parse_path(p: &Value) -> Option<Route> {
    let prefix = parse_prefix(p.get("prefix")?.as_str()?)?;
    let mut r = Route::new(prefix);
    let text = |k: &str| p.get(k).and_then(Value::as_str);
    r.as_path = text("aspath")
        .map(|s| {
            super::numbers(s)
                .into_iter()
                .map(|n| Asn(n as u32))
                .collect()
        })
        .unwrap_or_default();
    r.next_hop = text("exit_nexthop").and_then(|s| s.parse().ok());
    r.from = p
        .pointer("/neighbor/remote_addr")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    r.med = p.get("metric").and_then(Value::as_u64).map(|n| n as u32);
    r.local_pref = p.get("localpref").and_then(Value::as_u64).map(|n| n as u32);
    r.communities = list(p, "communities")
        .iter()
        .filter_map(|s| well_known(s).or_else(|| s.parse().ok()))
        .collect();
    r.large_communities = list(p, "large_communities")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    r.stale = Some(p.get("stale").and_then(Value::as_bool).unwrap_or(false));
    Some(r)
}

fn list(p: &Value, key: &str) -> Vec<String> {
    p.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// OpenBGPD prints well-known communities by name.
fn well_known(name: &str) -> Option<Community> {
    let value = match name {
        "GRACEFUL_SHUTDOWN" => 0,
        "LLGR_STALE" => 6,
        "NO_LLGR" => 7,
        "BLACKHOLE" => 666,
        "NO_EXPORT" => 0xff01,
        "NO_ADVERTISE" => 0xff02,
        "NO_EXPORT_SUBCONFED" => 0xff03,
        "NO_PEER" => 0xff04,
        _ => return None,
    };
    Some(Community::new(0xffff, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{LargeCommunity, NeighborSpec, Password};
    use std::net::Ipv4Addr;

    #[test]
    fn renders_allow_rules_networks_and_neighbours() {
        let spec = RouterSpec::new(Asn(65002), Ipv4Addr::new(192, 0, 2, 2))
            .listen("192.0.2.2".parse().unwrap())
            .neighbor(
                NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(65001))
                    .local("192.0.2.2".parse().unwrap())
                    .password(Password::new("pw").unwrap())
                    .ttl(TtlMode::Gtsm { hops: 2 }),
            )
            .announce(
                Announcement::new("203.0.113.0/24".parse().unwrap())
                    .community(Community::new(65002, 20))
                    .large_community(LargeCommunity::new(65002, 5, 6))
                    .med(7),
            );
        let c = render(&spec, "/tmp/x/bgpd.sock").unwrap();
        for want in [
            "AS 65002",
            "fib-update no",
            "socket \"/tmp/x/bgpd.sock\"",
            "listen on 192.0.2.2",
            "network 203.0.113.0/24 set { community 65002:20 large-community 65002:5:6 med 7 }",
            "  tcp md5sig password pw",
            "  multihop 2\n  ttl-security yes",
            "  announce IPv4 unicast\n  announce IPv6 none",
            "  announce restart no",
            "allow from any\nallow to any",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn parses_a_rib_entry() {
        let v: Value = serde_json::from_str(
            r#"{"prefix":"198.18.1.0/24","aspath":"65001 65010","exit_nexthop":"192.0.2.1",
                "true_nexthop":"192.0.2.2","neighbor":{"remote_addr":"192.0.2.1","bgp_id":"192.0.2.1"},
                "valid":true,"best":true,"origin":"IGP","metric":42,"localpref":100,
                "communities":["65001:10","NO_EXPORT"],"large_communities":["65001:1:2"]}"#,
        )
        .unwrap();
        let r = parse_path(&v).unwrap();
        assert_eq!(r.prefix.to_string(), "198.18.1.0/24");
        assert_eq!(r.as_path, vec![Asn(65001), Asn(65010)]);
        assert_eq!(r.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.from, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.med, Some(42));
        assert_eq!(r.local_pref, Some(100));
        assert_eq!(
            r.communities,
            vec![Community::new(65001, 10), Community::new(0xffff, 0xff01)]
        );
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65001, 1, 2)]);
        assert_eq!(r.stale, Some(false));
    }
}
