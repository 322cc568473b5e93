//! UPDATE message (RFC 4271 §4.3) with multiprotocol reachability (RFC 4760), add-path
//! NLRI (RFC 7911) and the revised error handling of RFC 7606.

use crate::types::AfiSafi;
use crate::wire::attr::{NextHop, PathAttrs};
use ipnet::IpNet;

/// One NLRI entry: a prefix and, where add-path is negotiated for its family in the
/// direction it travels, its path identifier (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    pub prefix: IpNet,
    pub path_id: u32,
}

impl Nlri {
    pub fn new(prefix: IpNet) -> Self {
        Nlri { prefix, path_id: 0 }
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    pub afi_safi: AfiSafi,
    pub next_hop: NextHop,
    pub nlri: Vec<Nlri>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4). An empty list for a family is its End-of-RIB
/// (RFC 4724 §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi_safi: AfiSafi,
    pub withdrawn: Vec<Nlri>,
}

/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
///
/// `withdrawn` and `nlri` are the IPv4 unicast fields of the message body; other families
/// travel in `mp_reach` / `mp_unreach`. `attrs` is `None` when the message carried no
/// path attributes other than MP_UNREACH_NLRI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Nlri>,
    pub attrs: Option<PathAttrs>,
    pub nlri: Vec<Nlri>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
}
