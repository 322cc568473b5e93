//! The dataplane's errors. Each says what was being done (which route, which device),
//! so a log line is enough to act on.

use std::net::IpAddr;

use super::netlink::NetlinkError;

/// Everything that can go wrong while programming the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed.
    #[error("{doing}: {source}")]
    Netlink {
        /// What was being done, e.g. "adding route 10.0.1.0/26 via 192.0.2.1 (proto 83, table 254)".
        doing: String,
        /// The kernel's answer.
        source: NetlinkError,
    },
    /// Opening the netlink socket failed.
    #[error("opening the rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The kernel cannot create IP-in-IP devices.
    #[error(
        "the kernel has no IP-in-IP (ipip) support, which IP pool {requested_by} needs \
         (ipipMode): creating {device} failed with {source}; load the ipip module \
         (modprobe ipip) or set the pool's ipipMode to Never"
    )]
    IpipUnsupported {
        /// The pool whose ipipMode asked for the tunnel.
        requested_by: String,
        /// The device serval tried to create.
        device: String,
        /// The kernel's answer.
        source: NetlinkError,
    },
    /// The kernel cannot create VXLAN devices.
    #[error(
        "the kernel has no VXLAN support, which IP pool {requested_by} needs (vxlanMode): \
         creating {device} failed with {source}; load the vxlan module (modprobe vxlan) \
         or set the pool's vxlanMode to Never"
    )]
    VxlanUnsupported {
        /// The pool whose vxlanMode asked for the tunnel.
        requested_by: String,
        /// The device serval tried to create.
        device: String,
        /// The kernel's answer.
        source: NetlinkError,
    },
    /// A device the request needs does not exist.
    #[error("no network device named {name} ({purpose})")]
    NoSuchDevice {
        /// The device name.
        name: String,
        /// Why it was needed.
        purpose: String,
    },
    /// No interface carries the node's address.
    #[error(
        "no interface carries the node address {0}: cannot tell the underlay MTU or VXLAN parent"
    )]
    NoInterfaceWithAddress(IpAddr),
    /// An address of the wrong family was given.
    #[error("{what}: {addr} is not an {expected} address")]
    WrongFamily {
        /// What the address was for.
        what: String,
        /// The address.
        addr: IpAddr,
        /// "IPv4" or "IPv6".
        expected: &'static str,
    },
    /// The `nft` binary (Debian package nftables) is missing.
    #[error(
        "natOutgoing needs the nft binary (Debian package nftables), not found at {0} or in PATH"
    )]
    NftMissing(String),
    /// `nft` rejected serval's ruleset or could not be run.
    #[error("{doing}: {detail}")]
    Nft {
        /// What was being done.
        doing: String,
        /// nft's error, with its stderr.
        detail: String,
    },
}

impl Error {
    pub(crate) fn netlink(doing: impl Into<String>, source: NetlinkError) -> Self {
        Error::Netlink {
            doing: doing.into(),
            source,
        }
    }
}
