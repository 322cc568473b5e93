//! Tunnel devices: IP-in-IP through the kernel's fallback device `tunl0`, and VXLAN
//! through serval's own `vxlan.serval` / `vxlan-v6.serval` with static FDB and
//! neighbour entries per remote node (no multicast, no learning: every node knows every
//! VTEP from the datastore, as Calico's VXLAN mode does).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkIpIp, LinkUnspec, LinkVxlan};

use super::netlink::{Netlink, NetlinkError};
use super::spec::{Mac, VxlanPeer};
use super::{addresses, links, Error};

/// The IP-in-IP device. It is the kernel's fallback tunnel (created in every namespace
/// when the `ipip` module loads), which receives every IP-in-IP packet whatever its
/// outer addresses, so one device serves every remote node.
pub const IPIP_DEVICE: &str = "tunl0";
/// Serval's IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.serval";
/// Serval's IPv6 VXLAN device (15 characters, the kernel's limit).
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.serval";
/// VXLAN network identifier, Calico's default.
pub const VXLAN_VNI: u32 = 4096;
/// The IANA VXLAN port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;

/// The IP-in-IP tunnel this node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipTunnel {
    /// The pool (or pools) whose `ipipMode` asked for it, named in errors.
    pub requested_by: String,
    /// The node's tunnel address (from the pool), as the source of tunnelled traffic
    /// the node itself sends.
    pub address: Option<Ipv4Addr>,
    /// Device MTU: underlay MTU minus 20.
    pub mtu: u32,
}

/// Makes `tunl0` exist (creating an ipip link makes the kernel load the `ipip` module),
/// be up with `tunnel.mtu` and carry `tunnel.address`. Returns its index.
pub async fn ensure_ipip(nl: &Netlink, tunnel: &IpipTunnel) -> Result<u32, Error> {
    if links::by_name(nl, IPIP_DEVICE).await?.is_none() {
        let create = LinkIpIp::new(IPIP_DEVICE).build();
        match nl
            .ack(
                RouteNetlinkMessage::NewLink(create),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            // The module loaded and brought its own tunl0 first.
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) if is_unsupported(&e) => {
                return Err(Error::IpipUnsupported {
                    requested_by: tunnel.requested_by.clone(),
                    device: IPIP_DEVICE.into(),
                    source: e,
                })
            }
            Err(e) => return Err(Error::netlink(format!("creating {IPIP_DEVICE}"), e)),
        }
    }
    let index = existing(nl, IPIP_DEVICE).await?;
    set_up(nl, index, IPIP_DEVICE, tunnel.mtu, None).await?;
    if let Some(address) = tunnel.address {
        addresses::ensure_sole(nl, index, IPIP_DEVICE, IpAddr::V4(address)).await?;
    }
    Ok(index)
}

/// One VXLAN device of this node (one per address family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanTunnel {
    /// The pool (or pools) whose `vxlanMode` asked for it, named in errors.
    pub requested_by: String,
    /// The node's underlay address: the outer source. Its family picks the device.
    pub node_addr: IpAddr,
    /// The node's VTEP address (from the pool), given to the device.
    pub vtep_addr: IpAddr,
    /// The node's VTEP MAC, see [`Mac::vtep`].
    pub vtep_mac: Mac,
    /// Device MTU: underlay MTU minus 50 (IPv4) or 70 (IPv6).
    pub mtu: u32,
    /// The underlay interface (the one carrying `node_addr`), if known.
    pub parent: Option<u32>,
}

impl VxlanTunnel {
    /// The device name for this tunnel's family.
    pub fn device(&self) -> &'static str {
        vxlan_device(self.node_addr)
    }
}

/// The VXLAN device serving underlay addresses of `addr`'s family.
pub fn vxlan_device(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => VXLAN_DEVICE,
        IpAddr::V6(_) => VXLAN_V6_DEVICE,
    }
}

impl Mac {
    /// The VTEP MAC of `node`'s VXLAN device of one family; every node computes every
    /// other node's the same way.
    pub fn vtep(node: &str, ipv6: bool) -> Mac {
        if ipv6 {
            Mac::derived(&format!("{node}/vxlan-v6"))
        } else {
            Mac::derived(&format!("{node}/vxlan"))
        }
    }
}

/// Makes the VXLAN device exist with serval's parameters (recreating it when they
/// differ), be up with the MTU and MAC, and carry the VTEP address. Returns its index.
pub async fn ensure_vxlan(nl: &Netlink, tunnel: &VxlanTunnel) -> Result<u32, Error> {
    let device = tunnel.device();
    if tunnel.vtep_addr.is_ipv4() != tunnel.node_addr.is_ipv4() {
        return Err(Error::WrongFamily {
            what: format!("VTEP address of {device}"),
            addr: tunnel.vtep_addr,
            expected: if tunnel.node_addr.is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            },
        });
    }
    if let Some(link) = links::by_name(nl, device).await? {
        if !vxlan_matches(&link, tunnel) {
            delete_link(nl, link.header.index, device).await?;
        }
    }
    if links::by_name(nl, device).await?.is_none() {
        let mut builder = LinkVxlan::new(device, VXLAN_VNI)
            .port(VXLAN_PORT)
            .learning(false);
        builder = match tunnel.node_addr {
            IpAddr::V4(a) => builder.local(a),
            IpAddr::V6(a) => builder.local6(a),
        };
        if let Some(parent) = tunnel.parent {
            builder = builder.dev(parent);
        }
        let create = builder
            .mtu(tunnel.mtu)
            .address(tunnel.vtep_mac.0.to_vec())
            .build();
        match nl
            .ack(
                RouteNetlinkMessage::NewLink(create),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Ok(()) => {}
            Err(e) if is_unsupported(&e) => {
                return Err(Error::VxlanUnsupported {
                    requested_by: tunnel.requested_by.clone(),
                    device: device.into(),
                    source: e,
                })
            }
            Err(e) => {
                return Err(Error::netlink(
                    format!(
                        "creating {device} (VNI {VXLAN_VNI}, local {})",
                        tunnel.node_addr
                    ),
                    e,
                ))
            }
        }
    }
    let link = links::by_name(nl, device)
        .await?
        .ok_or_else(|| Error::NoSuchDevice {
            name: device.into(),
            purpose: "serval's tunnel device".into(),
        })?;
    let index = link.header.index;
    // Setting the MAC, even to the same value, makes the kernel flush the device's
    // neighbour entries (NETDEV_CHANGEADDR), permanent ones included: every remote
    // VTEP would become unreachable. Only a different MAC is set.
    let mac = (link_mac(&link) != Some(tunnel.vtep_mac)).then_some(tunnel.vtep_mac);
    set_up(nl, index, device, tunnel.mtu, mac).await?;
    addresses::ensure_sole(nl, index, device, tunnel.vtep_addr).await?;
    Ok(index)
}

/// Removes a serval tunnel device if it exists (no pool uses that encapsulation any
/// more). `tunl0` is the kernel's and cannot be deleted: it is brought down instead.
pub async fn remove(nl: &Netlink, device: &str) -> Result<(), Error> {
    let Some(link) = links::by_name(nl, device).await? else {
        return Ok(());
    };
    if device == IPIP_DEVICE {
        let down = LinkUnspec::new_with_index(link.header.index).down().build();
        return nl
            .ack(RouteNetlinkMessage::SetLink(down), 0)
            .await
            .map_err(|e| Error::netlink(format!("bringing {device} down"), e));
    }
    delete_link(nl, link.header.index, device).await
}

/// What a peer sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// Peers whose FDB and neighbour entries were written.
    pub written: Vec<VxlanPeer>,
    /// (MAC, underlay address) FDB entries removed.
    pub removed_fdb: Vec<(Mac, IpAddr)>,
    /// (VTEP address, MAC) neighbour entries removed.
    pub removed_neighbours: Vec<(IpAddr, Mac)>,
}

/// Makes the permanent FDB entries (remote VTEP MAC → remote node address) and
/// neighbour entries (remote VTEP address → remote VTEP MAC) of `device` exactly those of
/// `peers`; entries of removed nodes go. Peers of the other family are ignored.
pub async fn sync_vxlan_peers(
    nl: &Netlink,
    device: &str,
    peers: &BTreeSet<VxlanPeer>,
) -> Result<PeerReport, Error> {
    let index = existing(nl, device).await?;
    let ipv6 = device == VXLAN_V6_DEVICE;
    let peers: Vec<&VxlanPeer> = peers
        .iter()
        .filter(|p| p.node_addr.is_ipv6() == ipv6 && p.vtep_addr.is_ipv6() == ipv6)
        .collect();
    let mut report = PeerReport::default();

    let fdb = neighbours(nl, AddressFamily::Bridge, index, device).await?;
    for entry in &fdb {
        let (Some(mac), Some(dst)) = (entry.mac, entry.dst) else {
            continue;
        };
        if entry.permanent
            && !peers
                .iter()
                .any(|p| p.vtep_mac == mac && p.node_addr == dst)
        {
            let message = fdb_message(index, mac, dst);
            match nl.ack(RouteNetlinkMessage::DelNeighbour(message), 0).await {
                Ok(()) => report.removed_fdb.push((mac, dst)),
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(Error::netlink(
                        format!("removing FDB entry {mac} dst {dst} from {device}"),
                        e,
                    ))
                }
            }
        }
    }
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let neighbours_now = neighbours(nl, family, index, device).await?;
    for entry in &neighbours_now {
        let (Some(mac), Some(dst)) = (entry.mac, entry.dst) else {
            continue;
        };
        if entry.permanent
            && !peers
                .iter()
                .any(|p| p.vtep_addr == dst && p.vtep_mac == mac)
        {
            let message = neighbour_message(index, dst, mac);
            match nl.ack(RouteNetlinkMessage::DelNeighbour(message), 0).await {
                Ok(()) => report.removed_neighbours.push((dst, mac)),
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(Error::netlink(
                        format!("removing neighbour {dst} lladdr {mac} from {device}"),
                        e,
                    ))
                }
            }
        }
    }
    for peer in peers {
        let has_fdb = fdb
            .iter()
            .any(|e| e.permanent && e.mac == Some(peer.vtep_mac) && e.dst == Some(peer.node_addr));
        let has_neighbour = neighbours_now
            .iter()
            .any(|e| e.permanent && e.dst == Some(peer.vtep_addr) && e.mac == Some(peer.vtep_mac));
        if has_fdb && has_neighbour {
            continue;
        }
        nl.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, peer.vtep_mac, peer.node_addr)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| {
            Error::netlink(
                format!(
                    "adding FDB entry {} dst {} to {device}",
                    peer.vtep_mac, peer.node_addr
                ),
                e,
            )
        })?;
        nl.ack(
            RouteNetlinkMessage::NewNeighbour(neighbour_message(
                index,
                peer.vtep_addr,
                peer.vtep_mac,
            )),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|e| {
            Error::netlink(
                format!(
                    "adding neighbour {} lladdr {} to {device}",
                    peer.vtep_addr, peer.vtep_mac
                ),
                e,
            )
        })?;
        report.written.push(*peer);
    }
    Ok(report)
}

/// One FDB or neighbour entry of the device.
struct Entry {
    mac: Option<Mac>,
    dst: Option<IpAddr>,
    permanent: bool,
}

async fn neighbours(
    nl: &Netlink,
    family: AddressFamily,
    index: u32,
    device: &str,
) -> Result<Vec<Entry>, Error> {
    let mut request = NeighbourMessage::default();
    request.header.family = family;
    // With strict checking, an FDB dump filters on the header's ifindex (the bridge
    // port) while a neighbour dump wants it zero and the filter in NDA_IFINDEX.
    if family == AddressFamily::Bridge {
        request.header.ifindex = index;
    } else {
        request.attributes.push(NeighbourAttribute::IfIndex(index));
    }
    let answers = nl
        .dump(RouteNetlinkMessage::GetNeighbour(request))
        .await
        .map_err(|e| Error::netlink(format!("listing {family:?} neighbours of {device}"), e))?;
    Ok(answers
        .into_iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => Some(Entry {
                mac: n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(b) => {
                        <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac)
                    }
                    _ => None,
                }),
                dst: n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        Some(IpAddr::V4(*ip))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                        Some(IpAddr::V6(*ip))
                    }
                    // FDB entries (AF_BRIDGE) come back with the address undecoded.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        ip_from_bytes(bytes)
                    }
                    _ => None,
                }),
                permanent: n.header.state == NeighbourState::Permanent,
            }),
            _ => None,
        })
        .collect())
}

/// `bridge fdb replace MAC dev DEVICE dst NODE self permanent`.
fn fdb_message(index: u32, mac: Mac, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    m
}

/// `ip neigh replace VTEP lladdr MAC dev DEVICE nud permanent`.
fn neighbour_message(index: u32, dst: IpAddr, mac: Mac) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// Whether an existing device is serval's VXLAN device as `tunnel` wants it.
/// The device's MAC address.
fn link_mac(link: &LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
        _ => None,
    })
}

fn vxlan_matches(link: &LinkMessage, tunnel: &VxlanTunnel) -> bool {
    let mut is_vxlan = false;
    let mut data: &[InfoVxlan] = &[];
    for attribute in &link.attributes {
        if let LinkAttribute::LinkInfo(infos) = attribute {
            for info in infos {
                match info {
                    LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                    LinkInfo::Data(InfoData::Vxlan(d)) => data = d,
                    _ => {}
                }
            }
        }
    }
    let has = |want: &InfoVxlan| data.iter().any(|d| d == want);
    let local = match tunnel.node_addr {
        IpAddr::V4(a) => InfoVxlan::Local(a),
        IpAddr::V6(a) => InfoVxlan::Local6(a),
    };
    is_vxlan
        && has(&InfoVxlan::Id(VXLAN_VNI))
        && has(&InfoVxlan::Port(VXLAN_PORT))
        && has(&InfoVxlan::Learning(false))
        && has(&local)
        && tunnel.parent.is_none_or(|p| has(&InfoVxlan::Link(p)))
}

async fn existing(nl: &Netlink, device: &str) -> Result<u32, Error> {
    links::by_name(nl, device)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| Error::NoSuchDevice {
            name: device.into(),
            purpose: "serval's tunnel device".into(),
        })
}

async fn set_up(
    nl: &Netlink,
    index: u32,
    device: &str,
    mtu: u32,
    mac: Option<Mac>,
) -> Result<(), Error> {
    let mut builder = LinkUnspec::new_with_index(index).mtu(mtu).up();
    if let Some(mac) = mac {
        builder = builder.address(mac.0.to_vec());
    }
    nl.ack(RouteNetlinkMessage::SetLink(builder.build()), 0)
        .await
        .map_err(|e| Error::netlink(format!("setting {device} up with MTU {mtu}"), e))
}

async fn delete_link(nl: &Netlink, index: u32, device: &str) -> Result<(), Error> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    nl.ack(RouteNetlinkMessage::DelLink(message), 0)
        .await
        .map_err(|e| Error::netlink(format!("deleting {device}"), e))
}

/// The kernel has no such link kind: `rtnl_newlink` found no ops even after asking
/// for the `rtnl-link-KIND` module.
fn is_unsupported(e: &NetlinkError) -> bool {
    e.errno() == Some(libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(node: &str) -> VxlanTunnel {
        VxlanTunnel {
            requested_by: "pool-a".into(),
            node_addr: node.parse().unwrap(),
            vtep_addr: "10.0.0.0".parse().unwrap(),
            vtep_mac: Mac::vtep("node-a", false),
            mtu: 1450,
            parent: None,
        }
    }

    fn vxlan_link(data: Vec<InfoVxlan>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        link
    }

    #[test]
    fn device_names_fit_ifnamsiz() {
        for name in [IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE] {
            assert!(name.len() <= 15, "{name}");
        }
        assert_eq!(tunnel("192.0.2.1").device(), VXLAN_DEVICE);
        assert_eq!(
            vxlan_device("2001:db8::1".parse().unwrap()),
            VXLAN_V6_DEVICE
        );
    }

    #[test]
    fn vxlan_matches_only_serval_parameters() {
        let good = vec![
            InfoVxlan::Id(VXLAN_VNI),
            InfoVxlan::Port(VXLAN_PORT),
            InfoVxlan::Learning(false),
            InfoVxlan::Local("192.0.2.1".parse().unwrap()),
        ];
        assert!(vxlan_matches(
            &vxlan_link(good.clone()),
            &tunnel("192.0.2.1")
        ));
        assert!(!vxlan_matches(
            &vxlan_link(good.clone()),
            &tunnel("192.0.2.9")
        ));
        let mut learning = good.clone();
        learning[2] = InfoVxlan::Learning(true);
        assert!(!vxlan_matches(&vxlan_link(learning), &tunnel("192.0.2.1")));
        let mut vni = good;
        vni[0] = InfoVxlan::Id(1);
        assert!(!vxlan_matches(&vxlan_link(vni), &tunnel("192.0.2.1")));
        assert!(!vxlan_matches(
            &LinkMessage::default(),
            &tunnel("192.0.2.1")
        ));
    }

    #[test]
    fn link_mac_reads_the_address_attribute() {
        let mut link = LinkMessage::default();
        assert_eq!(link_mac(&link), None);
        link.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(link_mac(&link), Some(Mac([2, 0, 0, 0, 0, 9])));
    }

    #[test]
    fn vtep_macs_differ_per_family_and_node() {
        assert_ne!(Mac::vtep("a", false), Mac::vtep("a", true));
        assert_ne!(Mac::vtep("a", false), Mac::vtep("b", false));
        assert_eq!(Mac::vtep("a", true), Mac::vtep("a", true));
    }

    #[test]
    fn fdb_and_neighbour_messages_are_permanent() {
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let fdb = fdb_message(7, mac, "192.0.2.2".parse().unwrap());
        assert_eq!(fdb.header.family, AddressFamily::Bridge);
        assert_eq!(fdb.header.state, NeighbourState::Permanent);
        assert!(fdb.header.flags.contains(NeighbourFlags::Own));
        let n = neighbour_message(7, "fd00::1".parse().unwrap(), mac);
        assert_eq!(n.header.family, AddressFamily::Inet6);
        assert_eq!(n.header.state, NeighbourState::Permanent);
    }
}
