//! Node address autodetection, as Calico does it (`IP_AUTODETECTION_METHOD`):
//!
//! - `first-found`: the first address of the first interface that is not a container,
//!   bridge or tunnel device (docker*, veth*, cali*, tunl*, vxlan.*, …);
//! - `can-reach=ADDR`: the source address the kernel picks to reach ADDR;
//! - `interface=REGEX`: the first address of the first interface whose name matches;
//! - `skip-interface=REGEX`: like first-found, also skipping interfaces that match;
//! - `cidr=CIDR[,CIDR…]`: the first address inside one of the CIDRs.
//!
//! The choice is pure over a list of interfaces; `interfaces()` and `source_for()` are
//! the IO that feeds it.

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;

use ipnet::IpNet;
use regex::Regex;

use crate::node::dataplane::{addresses, links, Netlink};

/// How to find the node's address.
#[derive(Clone, Debug)]
pub enum Method {
    FirstFound,
    CanReach(IpAddr),
    Interface(Regex),
    SkipInterface(Regex),
    Cidrs(Vec<IpNet>),
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let regex = |r: &str| {
            Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| format!("{s:?}: bad regular expression: {e}"))
        };
        if s == "first-found" {
            return Ok(Method::FirstFound);
        }
        let (kind, arg) = s.split_once('=').ok_or_else(|| {
            format!(
                "{s:?}: expected first-found, can-reach=ADDR, interface=REGEX, \
                 skip-interface=REGEX or cidr=CIDR[,CIDR]"
            )
        })?;
        match kind {
            "can-reach" => arg
                .parse()
                .map(Method::CanReach)
                .map_err(|_| format!("{s:?}: {arg:?} is not an IP address")),
            "interface" => regex(arg).map(Method::Interface),
            "skip-interface" => regex(arg).map(Method::SkipInterface),
            "cidr" => arg
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<IpNet>()
                        .map_err(|_| format!("{s:?}: {c:?} is not a CIDR"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Method::Cidrs),
            other => Err(format!("{s:?}: unknown method {other:?}")),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let strip = |r: &Regex| {
            let s = r.as_str();
            s.strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(s)
                .to_owned()
        };
        match self {
            Method::FirstFound => f.write_str("first-found"),
            Method::CanReach(a) => write!(f, "can-reach={a}"),
            Method::Interface(r) => write!(f, "interface={}", strip(r)),
            Method::SkipInterface(r) => write!(f, "skip-interface={}", strip(r)),
            Method::Cidrs(c) => {
                let c: Vec<String> = c.iter().map(ToString::to_string).collect();
                write!(f, "cidr={}", c.join(","))
            }
        }
    }
}

/// One interface and its addresses, in the kernel's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addrs: Vec<IpNet>,
}

/// Interfaces first-found never picks: containers, bridges, tunnels (Calico's list,
/// with serval's own devices).
const EXCLUDED: &[&str] = &[
    "lo",
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "veth",
    "cali",
    "tunl",
    "flannel",
    "kube-ipvs",
    "cni",
    "vxlan.",
    "vxlan-v6.",
    "wireguard.",
    "wg-v6.",
    "nodelocaldns",
];

fn excluded(name: &str) -> bool {
    EXCLUDED.iter().any(|p| {
        if *p == "lo" {
            name == "lo"
        } else {
            name.starts_with(p)
        }
    })
}

fn usable(net: &IpNet, v4: bool) -> bool {
    let a = net.addr();
    a.is_ipv4() == v4
        && !a.is_loopback()
        && !a.is_unspecified()
        && !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// Picks the node's address of one family. `reach_source`: for `can-reach`, the source
/// address the kernel chose.
pub fn choose(
    method: &Method,
    v4: bool,
    ifaces: &[Interface],
    reach_source: Option<IpAddr>,
) -> Result<IpNet, String> {
    let family = if v4 { "IPv4" } else { "IPv6" };
    let first = |pred: &dyn Fn(&Interface) -> bool| {
        ifaces
            .iter()
            .filter(|i| pred(i))
            .flat_map(|i| i.addrs.iter())
            .find(|n| usable(n, v4))
            .copied()
    };
    let found = match method {
        Method::FirstFound => first(&|i| !excluded(&i.name)),
        Method::SkipInterface(r) => first(&|i| !excluded(&i.name) && !r.is_match(&i.name)),
        Method::Interface(r) => first(&|i| r.is_match(&i.name)),
        Method::Cidrs(cidrs) => ifaces
            .iter()
            .flat_map(|i| i.addrs.iter())
            .find(|n| usable(n, v4) && cidrs.iter().any(|c| c.contains(&n.addr())))
            .copied(),
        Method::CanReach(_) => reach_source.and_then(|src| {
            ifaces
                .iter()
                .flat_map(|i| i.addrs.iter())
                .find(|n| n.addr() == src)
                .copied()
        }),
    };
    found.ok_or_else(|| format!("no {family} address found with {method}"))
}

/// Every interface with its addresses.
pub async fn interfaces(nl: &Netlink) -> Result<Vec<Interface>, crate::node::dataplane::Error> {
    let names: std::collections::BTreeMap<u32, String> = links::indices(nl)
        .await?
        .into_iter()
        .map(|(n, i)| (i, n))
        .collect();
    let mut out: Vec<Interface> = names
        .values()
        .map(|n| Interface {
            name: n.clone(),
            addrs: Vec::new(),
        })
        .collect();
    for (index, net) in addresses::all(nl).await? {
        if let Some(name) = names.get(&index) {
            if let Some(i) = out.iter_mut().find(|i| i.name == *name) {
                i.addrs.push(net);
            }
        }
    }
    Ok(out)
}

/// The source address the kernel picks to reach `dest` (a UDP connect sends nothing).
pub fn source_for(dest: IpAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(SocketAddr::new(dest, 179))?;
    Ok(s.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces() -> Vec<Interface> {
        let i = |name: &str, addrs: &[&str]| Interface {
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        vec![
            i("lo", &["127.0.0.1/8", "::1/128"]),
            i("docker0", &["172.17.0.1/16"]),
            i("veth12", &["10.65.0.1/32"]),
            i("eth0", &["fe80::1/64", "192.0.2.10/24", "2001:db8::10/64"]),
            i("eth1", &["198.51.100.10/24"]),
            i("vxlan.serval", &["10.66.0.1/32"]),
        ]
    }

    #[test]
    fn methods_table() {
        let cases = [
            ("first-found", true, None, Ok("192.0.2.10/24")),
            ("first-found", false, None, Ok("2001:db8::10/64")),
            ("interface=eth1", true, None, Ok("198.51.100.10/24")),
            ("interface=eth.*", true, None, Ok("192.0.2.10/24")),
            (
                "interface=wlan0",
                true,
                None,
                Err("no IPv4 address found with interface=wlan0"),
            ),
            ("skip-interface=eth0", true, None, Ok("198.51.100.10/24")),
            ("cidr=198.51.100.0/24", true, None, Ok("198.51.100.10/24")),
            (
                "cidr=203.0.113.0/24, 192.0.2.0/25",
                true,
                None,
                Ok("192.0.2.10/24"),
            ),
            (
                "can-reach=198.51.100.1",
                true,
                Some("198.51.100.10"),
                Ok("198.51.100.10/24"),
            ),
            (
                "can-reach=198.51.100.1",
                true,
                None,
                Err("no IPv4 address found with can-reach=198.51.100.1"),
            ),
        ];
        for (method, v4, src, want) in cases {
            let m: Method = method.parse().unwrap();
            let got = choose(&m, v4, &ifaces(), src.map(|s| s.parse().unwrap()));
            let want = want
                .map(|w| w.parse::<IpNet>().unwrap())
                .map_err(str::to_owned);
            assert_eq!(got, want, "{method}");
        }
    }

    #[test]
    fn bad_methods_are_named() {
        for bad in [
            "firstfound",
            "can-reach=host",
            "interface=(",
            "cidr=10.0.0.0/33",
            "nic=eth0",
        ] {
            let e = bad.parse::<Method>().unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert_eq!(
            "interface=eth.*".parse::<Method>().unwrap().to_string(),
            "interface=eth.*"
        );
    }
}
