//! Tunnel MTU: the underlay interface's MTU less the encapsulation's headers, so that
//! encapsulated packets are never fragmented on the wire.

use std::net::IpAddr;

use super::netlink::Netlink;
use super::{addresses, links, Error};

pub use ipam::encap::Encapsulation;

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
