//! How pools carry pod traffic between nodes, and what that costs in MTU: the one rule
//! the agent (tunnel devices, the MTU it publishes to the CNI plugin) and the CNI plugin
//! (a pod wired before the agent published its MTU) both follow.

use crate::model::{EncapMode, IpPool};

/// How pod traffic is carried between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Encapsulation {
    /// Plain routing.
    None,
    /// IP-in-IP (IPv4 pools only): an outer IPv4 header.
    Ipip,
    /// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
    Vxlan,
    /// VXLAN over IPv6: outer IPv6 (40) + UDP + VXLAN + inner Ethernet.
    VxlanV6,
}

impl Encapsulation {
    /// Bytes the encapsulation adds to each packet.
    pub fn overhead(self) -> u32 {
        match self {
            Encapsulation::None => 0,
            Encapsulation::Ipip => 20,
            Encapsulation::Vxlan => 50,
            Encapsulation::VxlanV6 => 70,
        }
    }

    /// The MTU left inside the tunnel over an underlay of `underlay` bytes.
    pub fn inner_mtu(self, underlay: u32) -> u32 {
        underlay.saturating_sub(self.overhead())
    }
}

/// The encapsulations `pool` may use (IP-in-IP only for IPv4; VXLAN over the pool's own
/// family).
pub fn of_pool(pool: &IpPool) -> Vec<Encapsulation> {
    let v4 = pool.cidr.addr().is_ipv4();
    let mut out = Vec::new();
    if v4 && pool.ipip_mode != EncapMode::Never {
        out.push(Encapsulation::Ipip);
    }
    if pool.vxlan_mode != EncapMode::Never {
        out.push(if v4 {
            Encapsulation::Vxlan
        } else {
            Encapsulation::VxlanV6
        });
    }
    out
}

/// The encapsulations the pools use.
pub fn encapsulations(pools: &[IpPool]) -> Vec<Encapsulation> {
    pools.iter().flat_map(of_pool).collect()
}

/// The MTU pods get over an underlay of `underlay` bytes: every pod may talk through
/// any tunnel, so the largest overhead in use counts.
pub fn pod_mtu(underlay: u32, pools: &[IpPool]) -> u32 {
    let overhead = encapsulations(pools)
        .into_iter()
        .map(Encapsulation::overhead)
        .max()
        .unwrap_or(0);
    underlay.saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PoolName;

    fn pool(cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IpPool {
        let mut p = IpPool::new(PoolName::new("p").unwrap(), cidr.parse().unwrap());
        p.ipip_mode = ipip;
        p.vxlan_mode = vxlan;
        p
    }

    #[test]
    fn overheads() {
        let cases = [
            (Encapsulation::None, 1500, 1500),
            (Encapsulation::Ipip, 1500, 1480),
            (Encapsulation::Vxlan, 1500, 1450),
            (Encapsulation::VxlanV6, 1500, 1430),
            (Encapsulation::Vxlan, 9000, 8950),
            (Encapsulation::VxlanV6, 40, 0),
        ];
        for (encap, underlay, inner) in cases {
            assert_eq!(
                encap.inner_mtu(underlay),
                inner,
                "{encap:?} over {underlay}"
            );
        }
    }

    #[test]
    fn pod_mtu_subtracts_the_largest_overhead_in_use() {
        use EncapMode::*;
        let cases = [
            (vec![], 1500),
            (vec![pool("10.65.0.0/16", Never, Never)], 1500),
            (vec![pool("10.65.0.0/16", CrossSubnet, Never)], 1480),
            (vec![pool("10.65.0.0/16", Always, Never)], 1480),
            (vec![pool("10.65.0.0/16", Never, Always)], 1450),
            (
                vec![
                    pool("10.65.0.0/16", Always, Never),
                    pool("10.66.0.0/16", Never, CrossSubnet),
                ],
                1450,
            ),
            (vec![pool("fd00::/48", Never, Always)], 1430),
            // IP-in-IP carries IPv4 only: an IPv6 pool's ipipMode costs nothing.
            (vec![pool("fd00::/48", Always, Never)], 1500),
        ];
        for (pools, want) in cases {
            assert_eq!(pod_mtu(1500, &pools), want, "{pools:?}");
        }
        assert_eq!(pod_mtu(9000, &[pool("10.65.0.0/16", Never, Always)]), 8950);
    }
}
