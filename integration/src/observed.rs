//! What a daemon reports, in one typed form whichever daemon it came from: a test
//! compares these, never a daemon's own text.

use crate::spec::{Asn, Community, LargeCommunity};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The state of the session with one neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub neighbor: IpAddr,
    pub established: bool,
    /// The daemon's own word for the state ("Established", "Active", "6", "up"…).
    pub state: String,
}

/// One path for a prefix, as received from a neighbour or held in a RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    pub next_hop: Option<IpAddr>,
    /// The link-local half of an IPv6 next hop (RFC 2545 §3), when the daemon shows it.
    pub link_local_next_hop: Option<Ipv6Addr>,
    /// AS_PATH flattened in order (sets included as they appear).
    pub as_path: Vec<Asn>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// Marked stale by graceful restart; `None` when the daemon does not show it.
    pub stale: Option<bool>,
    /// The neighbour it was learned from, when the daemon says.
    pub from: Option<IpAddr>,
    /// RFC 4456 ORIGINATOR_ID, when present and shown.
    pub originator_id: Option<Ipv4Addr>,
    /// RFC 4456 CLUSTER_LIST in order, when shown.
    pub cluster_list: Vec<Ipv4Addr>,
}

impl Route {
    /// A route with only a prefix, for parsers to fill in.
    pub(crate) fn new(prefix: IpNet) -> Route {
        Route {
            prefix,
            next_hop: None,
            link_local_next_hop: None,
            as_path: Vec::new(),
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref: None,
            stale: None,
            from: None,
            originator_id: None,
            cluster_list: Vec::new(),
        }
    }

    pub fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }

    pub fn has_large_community(&self, c: LargeCommunity) -> bool {
        self.large_communities.contains(&c)
    }
}

/// Parses a prefix the way daemons print it, normalised to its network address.
pub(crate) fn parse_prefix(s: &str) -> Option<IpNet> {
    s.trim().parse::<IpNet>().ok().map(|p| p.trunc())
}
