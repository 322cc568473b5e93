//! Network namespaces and one rtnetlink socket per namespace: the kernel IO the plugin
//! does, as requests and answers without policy (that is `veth.rs`).
//!
//! A netlink socket belongs to the namespace its creating thread was in, for its whole
//! life. The plugin runs single-threaded (a current-thread runtime), so opening a socket
//! "in" a pod means: enter the pod's namespace, create the socket, return to the host's
//! namespace — [`Netns::enter`] restores the original namespace when its guard drops,
//! also on an early return. Sysctls under /proc/sys/net are per namespace the same way.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Errors of the kernel IO, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: io::Error,
    },
    #[error("{doing}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { doing: String, errno: i32 },
    #[error("{doing}: netlink: {detail}")]
    Transport { doing: String, detail: String },
}

impl NetError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Kernel { errno, .. } => Some(*errno),
            NetError::Io { source, .. } => source.raw_os_error(),
            NetError::Transport { .. } => None,
        }
    }

    pub fn io(doing: impl Into<String>, source: io::Error) -> Self {
        NetError::Io {
            doing: doing.into(),
            source,
        }
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

/// While alive, the calling thread is in another namespace; dropping it goes back.
#[must_use]
pub struct Entered {
    home: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: setns(2) on a namespace fd this process opened; no memory is touched.
        let rc = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            // Carrying on in the wrong namespace would configure the pod's side as if it
            // were the host's: stop instead.
            tracing::error!(error = %io::Error::last_os_error(), "cannot return to the host network namespace");
            std::process::abort();
        }
    }
}

impl Netns {
    /// Opens the namespace at `path` (a bind mount under /run/netns, or /proc/PID/ns/net)
    /// and checks that it is one.
    pub fn open(path: &Path) -> io::Result<Netns> {
        let file = File::open(path)?;
        let ns = Netns {
            file,
            path: path.to_owned(),
        };
        if !ns.is_netns()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a network namespace",
            ));
        }
        Ok(ns)
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<Netns> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        Ok(Netns {
            file: File::open(&path)?,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Whether the file is a network namespace (NS_GET_NSTYPE, Linux 4.11).
    fn is_netns(&self) -> io::Result<bool> {
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: an ioctl without arguments on an fd we own.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // ENOTTY: a plain file, not a namespace.
            return if e.raw_os_error() == Some(libc::ENOTTY) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc == libc::CLONE_NEWNET)
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> io::Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net")?;
        // SAFETY: setns(2) on an fd we own; affects only the calling thread.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Entered { home })
    }

    /// Whether this is the namespace of the calling thread.
    pub fn is_current(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::metadata("/proc/thread-self/ns/net")?;
        let there = self.file.metadata()?;
        Ok(here.dev() == there.dev() && here.ino() == there.ino())
    }
}

/// Writes a sysctl of the calling thread's namespace (`net/ipv4/conf/X/proxy_arp`).
pub fn write_sysctl(path: &str, value: &str) -> Result<(), NetError> {
    let full = format!("/proc/sys/{path}");
    std::fs::write(&full, value)
        .map_err(|e| NetError::io(format!("setting {} to {value}", path.replace('/', ".")), e))
}

/// Reads a sysctl of the calling thread's namespace.
pub fn read_sysctl(path: &str) -> Result<String, NetError> {
    let full = format!("/proc/sys/{path}");
    std::fs::read_to_string(&full)
        .map(|s| s.trim().to_owned())
        .map_err(|e| NetError::io(format!("reading {}", path.replace('/', ".")), e))
}

/// A rtnetlink socket in one namespace.
#[derive(Clone)]
pub struct Nl {
    handle: rtnetlink::Handle,
}

impl Nl {
    /// A socket in `ns`, or in the calling thread's namespace when `None`. Must run on
    /// the tokio runtime (the connection task is spawned on it).
    pub fn connect(ns: Option<&Netns>) -> Result<Nl, NetError> {
        let guard = ns
            .map(|ns| ns.enter())
            .transpose()
            .map_err(|e| NetError::io("entering the pod's network namespace", e))?;
        let conn = rtnetlink::new_connection();
        drop(guard);
        let (conn, handle, _) = conn.map_err(|e| NetError::io("opening a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    /// Sends a request that is answered by an acknowledgement.
    async fn ack(
        &self,
        doing: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut answers = handle.request(req).map_err(|e| NetError::Transport {
            doing: doing(),
            detail: e.to_string(),
        })?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                if let Some(code) = e.code {
                    return Err(NetError::Kernel {
                        doing: doing(),
                        errno: -code.get(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends a request answered by messages (a dump, or a get of one object).
    async fn query(
        &self,
        doing: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | flags;
        let mut handle = self.handle.clone();
        let mut answers = handle.request(req).map_err(|e| NetError::Transport {
            doing: doing(),
            detail: e.to_string(),
        })?;
        let mut out = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(NetError::Kernel {
                            doing: doing(),
                            errno: -code.get(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The link called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self
            .query(
                || format!("looking up {name}"),
                RouteNetlinkMessage::GetLink(msg),
                0,
            )
            .await
        {
            Ok(links) => Ok(links.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkMessage>, NetError> {
        let answers = self
            .query(
                || "listing network devices".into(),
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair in one request: `host` here with a fixed MAC, an alias and
    /// the MTU; the peer directly inside the namespace `peer_ns` under its final name.
    /// Nothing of the pod side ever exists in this namespace, and a failure leaves
    /// neither end behind.
    pub async fn add_veth(
        &self,
        host: &str,
        host_mac: [u8; 6],
        alias: &str,
        mtu: u32,
        peer: &str,
        peer_ns: &Netns,
    ) -> Result<(), NetError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer_ns.fd()),
        ];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(host.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(host_mac.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.ack(
            || {
                format!(
                    "creating veth {host} with {peer} in {}",
                    peer_ns.path().display()
                )
            },
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await?;
        // The alias goes on separately: veth creation ignores IFLA_IFALIAS.
        let index = self
            .link_by_name(host)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| NetError::Kernel {
                doing: format!("finding {host} after creating it"),
                errno: libc::ENODEV,
            })?;
        let mut set = LinkMessage::default();
        set.header.index = index;
        set.attributes
            .push(LinkAttribute::IfAlias(alias.to_owned()));
        self.ack(
            || format!("setting the alias of {host}"),
            RouteNetlinkMessage::SetLink(set),
            0,
        )
        .await
    }

    /// Brings a link up.
    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(
            || format!("bringing {name} up"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
        .await
    }

    /// Deletes a link (a veth takes its peer with it); absent is fine.
    pub async fn del_link(&self, index: u32, name: &str) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self
            .ack(
                || format!("deleting {name}"),
                RouteNetlinkMessage::DelLink(msg),
                0,
            )
            .await
        {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Adds an address; IPv6 ones without duplicate address detection (the pod's
    /// address is unique by IPAM, and DAD would delay it by a second).
    pub async fn add_address(&self, index: u32, net: IpNet, ifname: &str) -> Result<(), NetError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.family = family(net.addr());
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match self
            .ack(
                || format!("adding {net} to {ifname}"),
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// The addresses on a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetError> {
        let answers = self
            .query(
                || "listing addresses".into(),
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_DUMP,
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let ip = a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = ip.or_else(|| {
                        a.attributes.iter().find_map(|attr| match attr {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    IpNet::new(ip, a.header.prefix_len).ok()
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route in the main table through link `index`: on the link when `gw` is
    /// `None` (scope link), else via `gw`, which is on the link by definition (`onlink`:
    /// the gateway needs no route of its own). Marked `proto static` so that the agent,
    /// which owns routes of serval's own protocol, leaves pod routes alone. Returns false
    /// when the route was already there (a pod's first network keeps the default route,
    /// as the spec's IP allocation notes ask).
    pub async fn add_route(
        &self,
        index: u32,
        dst: IpNet,
        gw: Option<IpAddr>,
        dev: &str,
    ) -> Result<bool, NetError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst.addr());
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = libc::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route_addr(dst.addr())));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        match self
            .ack(
                || format!("adding route {dst}{via} dev {dev}"),
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Routes of the main table that leave through link `index`: (destination, gateway).
    pub async fn routes_via(&self, index: u32) -> Result<Vec<(IpNet, Option<IpAddr>)>, NetError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = fam;
            let answers = self
                .query(
                    || "listing routes".into(),
                    RouteNetlinkMessage::GetRoute(req),
                    NLM_F_DUMP,
                )
                .await?;
            for m in answers {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.table != libc::RT_TABLE_MAIN {
                    continue;
                }
                let mut oif = None;
                let mut dst = None;
                let mut gw = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Destination(d) => dst = ip_of(d),
                        RouteAttribute::Gateway(g) => gw = ip_of(g),
                        RouteAttribute::Table(t) if *t != u32::from(libc::RT_TABLE_MAIN) => {
                            oif = None
                        }
                        _ => {}
                    }
                }
                if oif != Some(index) {
                    continue;
                }
                let unspecified = match fam {
                    AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                };
                let Ok(net) = IpNet::new(
                    dst.unwrap_or(unspecified),
                    r.header.destination_prefix_length,
                ) else {
                    continue;
                };
                out.push((net, gw));
            }
        }
        Ok(out)
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`.
    pub async fn add_neighbor(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
        dev: &str,
    ) -> Result<(), NetError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.ack(
            || format!("adding neighbour {ip} on {dev}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
        )
        .await
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// What CHECK and GC read from a link message.
pub fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn link_alias(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn link_mac(l: &LinkMessage) -> Option<&[u8]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    })
}

pub fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub fn link_is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up)
}

pub fn link_is_veth(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}
