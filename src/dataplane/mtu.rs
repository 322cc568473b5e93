//! Tunnel MTU: the underlay interface's MTU less the encapsulation's headers, so that
//! encapsulated packets are never fragmented on the wire.

use std::net::IpAddr;

use super::netlink::Netlink;
use super::{addresses, links, Error};

/// How pod traffic is carried between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// Plain routing.
    None,
    /// IP-in-IP: an outer IPv4 header.
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

/// The underlay interface: the one carrying `node_addr`, as (index, name, MTU).
pub async fn underlay(nl: &Netlink, node_addr: IpAddr) -> Result<(u32, String, u32), Error> {
    let index = addresses::interface_with(nl, node_addr)
        .await?
        .ok_or(Error::NoInterfaceWithAddress(node_addr))?;
    let link = links::by_index(nl, index)
        .await?
        .ok_or(Error::NoInterfaceWithAddress(node_addr))?;
    let name = links::name(&link).unwrap_or_default().to_owned();
    let mtu = links::mtu(&link).ok_or_else(|| Error::NoSuchDevice {
        name: name.clone(),
        purpose: format!("its MTU, as the interface carrying {node_addr}"),
    })?;
    Ok((index, name, mtu))
}

/// The MTU for a tunnel of `encapsulation` over the interface carrying `node_addr`.
pub async fn tunnel_mtu(
    nl: &Netlink,
    node_addr: IpAddr,
    encapsulation: Encapsulation,
) -> Result<u32, Error> {
    let (_, _, mtu) = underlay(nl, node_addr).await?;
    Ok(encapsulation.inner_mtu(mtu))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
