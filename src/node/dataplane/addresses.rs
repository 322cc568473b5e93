//! Interface addresses: the tunnel devices' own addresses, and finding the interface
//! that carries the node's address.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;
use super::Error;

/// Every address of the namespace as (interface index, address/prefix).
pub async fn all(nl: &Netlink) -> Result<Vec<(u32, IpNet)>, Error> {
    let answers = nl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .await
        .map_err(|e| Error::netlink("listing interface addresses", e))?;
    Ok(answers
        .into_iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewAddress(a) => {
                let ip = address_of(&a)?;
                Some((a.header.index, IpNet::new(ip, a.header.prefix_len).ok()?))
            }
            _ => None,
        })
        .collect())
}

/// The index of the interface that has `ip` as one of its addresses.
pub async fn interface_with(nl: &Netlink, ip: IpAddr) -> Result<Option<u32>, Error> {
    Ok(all(nl)
        .await?
        .into_iter()
        .find(|(_, net)| net.addr() == ip)
        .map(|(index, _)| index))
}

/// Gives device `index` (named `device` in errors) the host address `ip` (/32 or /128)
/// and removes its other addresses of that family, except IPv6 link-local ones: the
/// device is serval's, and a stale tunnel address would be picked as source address.
pub async fn ensure_sole(nl: &Netlink, index: u32, device: &str, ip: IpAddr) -> Result<(), Error> {
    let want = IpNet::from(ip);
    let present = all(nl).await?;
    let mut has = false;
    for (_, net) in present.iter().filter(|(i, _)| *i == index) {
        if net.addr().is_ipv4() != ip.is_ipv4() || is_link_local(net.addr()) {
            continue;
        }
        if *net == want {
            has = true;
            continue;
        }
        nl.ack(RouteNetlinkMessage::DelAddress(message(index, *net)), 0)
            .await
            .map_err(|e| {
                Error::netlink(format!("removing stale address {net} from {device}"), e)
            })?;
    }
    if !has {
        nl.ack(
            RouteNetlinkMessage::NewAddress(message(index, want)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| Error::netlink(format!("adding address {want} to {device}"), e))?;
    }
    Ok(())
}

fn message(index: u32, net: IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = net.prefix_len();
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    // IPv4 wants IFA_LOCAL (the address) and IFA_ADDRESS (the peer, same on
    // non-point-to-point links); IPv6 only IFA_ADDRESS.
    if net.addr().is_ipv4() {
        m.attributes.push(AddressAttribute::Local(net.addr()));
    }
    m.attributes.push(AddressAttribute::Address(net.addr()));
    if net.addr().is_ipv6() {
        // The pool's IPAM made it unique; duplicate address detection would only keep
        // it tentative (unusable as a source) for a second or more.
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m
}

fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_only_fe80_slash_10() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
        assert!(!is_link_local("169.254.0.1".parse().unwrap()));
    }

    #[test]
    fn ipv4_message_has_local_and_address() {
        let m = message(3, "10.0.0.1/32".parse().unwrap());
        assert_eq!(address_of(&m), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(m.attributes.len(), 2);
        let m = message(3, "fd00::1/128".parse().unwrap());
        assert_eq!(m.attributes.len(), 2);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        assert_eq!(m.header.family, AddressFamily::Inet6);
    }
}
