//! The BGP wire format: message framing, each message kind, path attributes and the errors
//! their decoding can raise.

pub mod attr;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub use attr::PathAttrs;
pub use notification::Notification;
pub use open::{Capability, Open};
pub use route_refresh::RouteRefresh;
pub use update::{Nlri, Update};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// What the two speakers negotiated that changes how messages are read and written.
/// Computed from the two OPENs once a session reaches OpenConfirm; before that (for the
/// OPEN itself) the default applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecParams {
    /// RFC 6793: AS numbers on the wire are 4 octets.
    pub four_octet_asn: bool,
    /// RFC 7911, per `Family::index()`: NLRI we receive carry a path identifier.
    pub add_path_rx: [bool; 2],
    /// RFC 7911, per `Family::index()`: NLRI we send carry a path identifier.
    pub add_path_tx: [bool; 2],
    /// RFC 8654: messages other than OPEN and KEEPALIVE may be up to 65535 octets.
    pub extended_message: bool,
    /// Families negotiated, per `Family::index()`.
    pub families: [bool; 2],
    /// RFC 8950 negotiated for IPv4 unicast: IPv4 routes may carry IPv6 next hops.
    pub ipv4_extended_next_hop: bool,
    /// The session is external: RFC 7606 §7.5/§7.9/§7.10 discard LOCAL_PREF,
    /// ORIGINATOR_ID and CLUSTER_LIST received from it.
    pub ebgp: bool,
}

impl Default for CodecParams {
    fn default() -> Self {
        CodecParams {
            four_octet_asn: false,
            add_path_rx: [false; 2],
            add_path_tx: [false; 2],
            extended_message: false,
            families: [true, false],
            ipv4_extended_next_hop: false,
            ebgp: false,
        }
    }
}
