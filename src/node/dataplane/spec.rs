//! What the kernel should hold: the input the agent's pure `desired` function produces.
//!
//! The dataplane applies these and decides nothing: which blocks are blackholed, which
//! peer is reached directly, through IP-in-IP or through VXLAN (Calico's `ipipMode` /
//! `vxlanMode` of `Always | CrossSubnet | Never`, per pool) and which pools are
//! masqueraded is the caller's decision, expressed in these types.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Every route serval wants in its table, keyed by destination prefix. A prefix absent
/// here and present in the kernel with serval's protocol is removed by a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRoutes {
    /// Destination → where packets for it go.
    pub routes: BTreeMap<IpNet, RouteTarget>,
}

impl DesiredRoutes {
    /// The remote VTEPs the routes go through, which need FDB and neighbour entries.
    pub fn vxlan_peers(&self) -> BTreeSet<VxlanPeer> {
        self.routes
            .values()
            .flat_map(RouteTarget::vxlan_peers)
            .collect()
    }

    /// Whether applying `diff` may change [`DesiredRoutes::vxlan_peers`], looking at the
    /// diff's prefixes only: when the peers their routes use before and after are the
    /// same, every peer stays in use and none is new. `true` asks for the full sets.
    pub fn vxlan_peers_may_change(&self, diff: &RouteDiff) -> bool {
        let before: BTreeSet<VxlanPeer> = diff
            .withdraw
            .iter()
            .chain(diff.upsert.keys())
            .filter_map(|p| self.routes.get(p))
            .flat_map(RouteTarget::vxlan_peers)
            .collect();
        let after: BTreeSet<VxlanPeer> = diff
            .upsert
            .values()
            .flat_map(RouteTarget::vxlan_peers)
            .collect();
        before != after
    }

    /// Applies an incremental change to this state.
    pub fn apply(&mut self, diff: &RouteDiff) {
        for prefix in &diff.withdraw {
            self.routes.remove(prefix);
        }
        for (prefix, target) in &diff.upsert {
            self.routes.insert(*prefix, target.clone());
        }
    }
}

/// Where a destination's packets go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Dropped: the pod CIDR blocks this node owns, so that traffic to an unallocated
    /// address of the block stops here instead of following the default route.
    Blackhole,
    /// One next hop.
    Unicast(NextHop),
    /// ECMP over several next hops (several BGP paths). A set: order means nothing to
    /// the kernel's hash, and duplicates are not allowed by it.
    Multipath(BTreeSet<NextHop>),
}

impl RouteTarget {
    /// A direct route through a gateway on one of this node's L2 subnets.
    pub fn direct(gateway: IpAddr) -> Self {
        RouteTarget::Unicast(NextHop::Direct { gateway, dev: None })
    }

    /// An IP-in-IP route to a remote node.
    pub fn ipip(gateway: Ipv4Addr) -> Self {
        RouteTarget::Unicast(NextHop::Ipip { gateway })
    }

    /// A VXLAN route to a remote node's VTEP.
    pub fn vxlan(peer: VxlanPeer) -> Self {
        RouteTarget::Unicast(NextHop::Vxlan(peer))
    }

    /// The next hops, empty for a blackhole.
    pub fn next_hops(&self) -> Vec<&NextHop> {
        match self {
            RouteTarget::Blackhole => Vec::new(),
            RouteTarget::Unicast(hop) => vec![hop],
            RouteTarget::Multipath(hops) => hops.iter().collect(),
        }
    }

    fn vxlan_peers(&self) -> impl Iterator<Item = VxlanPeer> + '_ {
        self.next_hops().into_iter().filter_map(|hop| match hop {
            NextHop::Vxlan(peer) => Some(*peer),
            _ => None,
        })
    }
}

/// One way out of this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NextHop {
    /// Plain forwarding to a gateway reachable on a local subnet; `dev` pins the
    /// interface (required for an IPv6 link-local gateway), otherwise the kernel picks
    /// it from the gateway's connected route.
    Direct {
        /// The next router or node.
        gateway: IpAddr,
        /// Interface name, when it must be pinned.
        dev: Option<String>,
    },
    /// Through `tunl0`, `onlink`, with the remote node's underlay address as gateway:
    /// the kernel's ipip device takes the outer destination from the gateway.
    Ipip {
        /// The remote node's address.
        gateway: Ipv4Addr,
    },
    /// Through `vxlan.serval` (or `vxlan-v6.serval` for IPv6), `onlink`, via the remote
    /// VTEP address.
    Vxlan(VxlanPeer),
}

/// A remote node's VXLAN endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VxlanPeer {
    /// The remote VTEP's overlay address (from the pool, on its vxlan device).
    pub vtep_addr: IpAddr,
    /// The remote VTEP's MAC address.
    pub vtep_mac: Mac,
    /// The remote node's underlay address: the outer destination of encapsulated
    /// packets.
    pub node_addr: IpAddr,
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast address derived from `seed` (a node name):
    /// the same name gives the same MAC on every node and across restarts, so remote
    /// nodes' FDB entries stay valid.
    pub fn derived(seed: &str) -> Self {
        // FNV-1a, 64-bit: stable across Rust versions, unlike `DefaultHasher`.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = hash.to_be_bytes();
        // Bit 1 of the first octet: locally administered; bit 0 cleared: unicast.
        Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An incremental change, e.g. from a BGP UPDATE: routes to add or change, and
/// prefixes to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Add, or replace when serval already has a route there.
    pub upsert: BTreeMap<IpNet, RouteTarget>,
    /// Remove serval's route at these prefixes.
    pub withdraw: BTreeSet<IpNet>,
}

/// An IP pool as NAT sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatPool {
    /// The pool's CIDR.
    pub cidr: IpNet,
    /// Calico's `natOutgoing`: masquerade traffic from this pool to anything outside
    /// every pool.
    pub nat_outgoing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_stable_local_and_unicast() {
        let a = Mac::derived("node-a");
        assert_eq!(a, Mac::derived("node-a"));
        assert_ne!(a, Mac::derived("node-b"));
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
        assert_eq!(a.0[0] & 0x01, 0x00, "unicast");
        // A fixed value: a change here would break FDB entries across upgrades.
        assert_eq!(Mac::derived("node-a").to_string(), "e6:97:1c:c2:20:78");
    }

    #[test]
    fn vxlan_peers_come_from_unicast_and_multipath_targets() {
        let peer = |n: u8| VxlanPeer {
            vtep_addr: IpAddr::from([10, 0, n, 0]),
            vtep_mac: Mac([2, 0, 0, 0, 0, n]),
            node_addr: IpAddr::from([192, 0, 2, n]),
        };
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert("10.0.1.0/26".parse().unwrap(), RouteTarget::vxlan(peer(1)));
        desired.routes.insert(
            "10.0.9.0/26".parse().unwrap(),
            RouteTarget::Multipath([NextHop::Vxlan(peer(2)), NextHop::Vxlan(peer(1))].into()),
        );
        desired
            .routes
            .insert("10.0.0.0/26".parse().unwrap(), RouteTarget::Blackhole);
        assert_eq!(desired.vxlan_peers(), [peer(1), peer(2)].into());
    }

    #[test]
    fn vxlan_peers_may_change_only_when_the_diffs_peers_do() {
        let peer = |n: u8| VxlanPeer {
            vtep_addr: IpAddr::from([10, 0, n, 0]),
            vtep_mac: Mac([2, 0, 0, 0, 0, n]),
            node_addr: IpAddr::from([192, 0, 2, n]),
        };
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net("10.0.1.0/26"), RouteTarget::vxlan(peer(1)));
        desired
            .routes
            .insert(net("10.0.2.0/26"), RouteTarget::vxlan(peer(1)));
        let upsert = |p: &str, t: RouteTarget| RouteDiff {
            upsert: [(net(p), t)].into(),
            withdraw: BTreeSet::new(),
        };
        let withdraw = |p: &str| RouteDiff {
            upsert: BTreeMap::new(),
            withdraw: [net(p)].into(),
        };
        let direct = RouteTarget::direct("192.0.2.9".parse().unwrap());
        // Routes without VXLAN, or the same peer again: nothing to look at.
        assert!(!desired.vxlan_peers_may_change(&upsert("198.18.0.0/24", direct.clone())));
        assert!(!desired.vxlan_peers_may_change(&withdraw("198.18.0.0/24")));
        assert!(
            !desired.vxlan_peers_may_change(&upsert("10.0.1.0/26", RouteTarget::vxlan(peer(1))))
        );
        // A peer that may be new, or may be no longer used.
        assert!(desired.vxlan_peers_may_change(&upsert("10.0.3.0/26", RouteTarget::vxlan(peer(2)))));
        assert!(desired.vxlan_peers_may_change(&withdraw("10.0.1.0/26")));
        assert!(desired.vxlan_peers_may_change(&upsert("10.0.1.0/26", direct)));
        // Whenever it says no, the full sets agree.
        for diff in [
            upsert("10.0.2.0/26", RouteTarget::vxlan(peer(1))),
            withdraw("10.0.9.0/26"),
        ] {
            let mut after = desired.clone();
            after.apply(&diff);
            assert!(!desired.vxlan_peers_may_change(&diff));
            assert_eq!(after.vxlan_peers(), desired.vxlan_peers());
        }
    }

    #[test]
    fn apply_withdraws_then_upserts() {
        let p1: IpNet = "10.0.1.0/26".parse().unwrap();
        let p2: IpNet = "10.0.2.0/26".parse().unwrap();
        let mut desired = DesiredRoutes::default();
        desired.routes.insert(p1, RouteTarget::Blackhole);
        let diff = RouteDiff {
            upsert: [(p2, RouteTarget::direct("192.0.2.1".parse().unwrap()))].into(),
            withdraw: [p1].into(),
        };
        desired.apply(&diff);
        assert_eq!(desired.routes.keys().collect::<Vec<_>>(), vec![&p2]);
    }
}
