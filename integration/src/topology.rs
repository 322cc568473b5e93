//! The shapes multi-node tests keep building, each one call:
//!
//! ```text
//! link()            a ──────── b                       192.0.2.0/24, 2001:db8::/64
//! segment(n)        h0 ─┐
//!                   h1 ─┼─ br0 (own namespace)         192.0.2.0/24, 2001:db8::/64
//!                   h2 ─┘
//! routed()          a ──── r ──── b                    198.18.0.0/24 | 198.18.1.0/24
//! routed_through(n) a ── r1 ── … ── rn ── b            198.18.i.0/24, 2001:db8:1:i::/64
//! ```
//!
//! `routed*` is also the multihop shape: `a` and `b` are `n + 1` IP hops apart, their
//! default routes point into the chain and every router forwards. Addresses are from
//! documentation and benchmarking ranges and exist only inside the test's namespaces.

use crate::error::Result;
use crate::netns::{Bridge, Netns};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A namespace with one interface and its addresses on a test network.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub ifname: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    fn new(ifname: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<Host> {
        Ok(Host {
            ns: Netns::new()?,
            ifname: ifname.to_string(),
            v4,
            v6,
        })
    }

    /// Puts the host's addresses on its interface (which must exist by now).
    fn address(&self, v4_len: u8, v6_len: u8) -> Result<()> {
        self.ns
            .add_addr(&self.ifname, net(self.v4.into(), v4_len))?;
        self.ns.add_addr(&self.ifname, net(self.v6.into(), v6_len))
    }

    /// The host's address in the family of `other`.
    pub fn addr_like(&self, other: IpAddr) -> IpAddr {
        match other {
            IpAddr::V4(_) => self.v4.into(),
            IpAddr::V6(_) => self.v6.into(),
        }
    }
}

/// Two hosts on one veth link.
#[derive(Debug)]
pub struct Link {
    pub a: Host,
    pub b: Host,
}

/// Hosts sharing one L2 segment through a bridge namespace.
#[derive(Debug)]
pub struct Segment {
    pub bridge: Bridge,
    pub hosts: Vec<Host>,
}

/// A router namespace with its addresses on the subnet to its left and to its right.
#[derive(Debug)]
pub struct Router {
    pub ns: Netns,
    pub left: (Ipv4Addr, Ipv6Addr),
    pub right: (Ipv4Addr, Ipv6Addr),
}

/// `a` and `b` on different subnets joined by a chain of routers.
#[derive(Debug)]
pub struct Routed {
    pub a: Host,
    pub routers: Vec<Router>,
    pub b: Host,
}

/// `a` (192.0.2.1, 2001:db8::1) and `b` (192.0.2.2, 2001:db8::2) on `eth0`.
pub fn link() -> Result<Link> {
    let a = Host::new("eth0", v4([192, 0, 2, 1]), segment_v6(1))?;
    let b = Host::new("eth0", v4([192, 0, 2, 2]), segment_v6(2))?;
    a.ns.veth(&a.ifname, &b.ns, &b.ifname)?;
    a.address(24, 64)?;
    b.address(24, 64)?;
    Ok(Link { a, b })
}

/// `n` hosts on one bridge; host `i` is 192.0.2.(i+1) and 2001:db8::(i+1) on `eth0`.
pub fn segment(n: u8) -> Result<Segment> {
    let mut bridge = Bridge::new()?;
    let mut hosts = Vec::with_capacity(n.into());
    for i in 0..n {
        let host = Host::new("eth0", v4([192, 0, 2, i + 1]), segment_v6(u16::from(i) + 1))?;
        bridge.connect(&host.ns, &host.ifname)?;
        host.address(24, 64)?;
        hosts.push(host);
    }
    Ok(Segment { bridge, hosts })
}

/// `a` — router — `b`: the two-subnet and the multihop (two IP hops) shape.
pub fn routed() -> Result<Routed> {
    routed_through(1)
}

/// `a` — r1 — … — rn — `b`. Subnet `i` (0..=n) is 198.18.i.0/24 and 2001:db8:1:i::/64;
/// on each subnet the node on the left is `.1`/`::1` and the node on the right `.2`/`::2`.
/// So `a` is 198.18.0.1, `b` is 198.18.n.2, and every node can reach every other.
pub fn routed_through(routers: u8) -> Result<Routed> {
    let left = |subnet: u8| (v4([198, 18, subnet, 1]), chain_v6(subnet, 1));
    let right = |subnet: u8| (v4([198, 18, subnet, 2]), chain_v6(subnet, 2));

    let (a_v4, a_v6) = left(0);
    let a = Host::new("eth0", a_v4, a_v6)?;
    let (b_v4, b_v6) = right(routers);
    let b = Host::new("eth0", b_v4, b_v6)?;

    let mut chain: Vec<Router> = Vec::with_capacity(routers.into());
    for k in 0..routers {
        let router = Router {
            ns: Netns::new()?,
            left: right(k),
            right: left(k + 1),
        };
        router.ns.enable_forwarding()?;
        // The link on this router's left goes to the previous router, or to `a`.
        let (prev_ns, prev_if) = match chain.last() {
            Some(prev) => (&prev.ns, "eth1"),
            None => (&a.ns, a.ifname.as_str()),
        };
        prev_ns.veth(prev_if, &router.ns, "eth0")?;
        router.ns.add_addr("eth0", net(router.left.0.into(), 24))?;
        router.ns.add_addr("eth0", net(router.left.1.into(), 64))?;
        chain.push(router);
    }
    let (last_ns, last_if) = match chain.last() {
        Some(last) => (&last.ns, "eth1"),
        None => (&a.ns, a.ifname.as_str()),
    };
    last_ns.veth(last_if, &b.ns, &b.ifname)?;
    for (k, router) in chain.iter().enumerate() {
        router.ns.add_addr("eth1", net(router.right.0.into(), 24))?;
        router.ns.add_addr("eth1", net(router.right.1.into(), 64))?;
        // A forwarding node solicits neighbours from a link-local address and sends
        // none without one; links have none by default (see `netns`).
        for (side, ifname) in [(1, "eth0"), (2, "eth1")] {
            let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, k as u16 + 1, side);
            router.ns.add_addr(ifname, net(ll.into(), 64))?;
        }
    }
    a.address(24, 64)?;
    b.address(24, 64)?;

    if let Some(first) = chain.first() {
        a.ns.add_default_route(first.left.0.into())?;
        a.ns.add_default_route(first.left.1.into())?;
    }
    if let Some(last) = chain.last() {
        b.ns.add_default_route(last.right.0.into())?;
        b.ns.add_default_route(last.right.1.into())?;
    }
    // Router k is attached to subnets k and k+1; it reaches subnets further left
    // through router k-1 and further right through router k+1.
    for (k, router) in chain.iter().enumerate() {
        let k = k as u8;
        for subnet in 0..=routers {
            let via = if subnet < k {
                chain[usize::from(k) - 1].right
            } else if subnet > k + 1 {
                chain[usize::from(k) + 1].left
            } else {
                continue;
            };
            router
                .ns
                .add_route(net(v4([198, 18, subnet, 0]).into(), 24), via.0.into())?;
            router
                .ns
                .add_route(net(chain_v6(subnet, 0).into(), 64), via.1.into())?;
        }
    }
    Ok(Routed {
        a,
        routers: chain,
        b,
    })
}

fn v4(octets: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(octets)
}

fn segment_v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host)
}

fn chain_v6(subnet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, subnet.into(), 0, 0, 0, host)
}

fn net(addr: IpAddr, len: u8) -> IpNet {
    // Lengths here are constants within range for their family.
    IpNet::new(addr, len).unwrap_or_else(|_| IpNet::from(addr))
}
