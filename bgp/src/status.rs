//! What the speaker reports about itself: peers with their session state and counters,
//! and the Loc-RIB with each path's attributes. Serializable, so the status commands
//! print the same data as text for people and as JSON for scripts.

use crate::policy::{CommunityValue, ExtCommunityValue, LargeCommunityValue};
use crate::rib::PathView;
use crate::types::{Asn, Family, RouterId};
use crate::wire::attr::{NextHop, Origin, PathAttrs, SegmentType};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// A peer's session as reported: a state of RFC 4271 §8.2.2, administratively shut
/// down, or not known yet (its session task has not answered). Serialized by name
/// (`"Established"`), as status JSON has always shown it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    Shutdown,
    Unknown,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "Idle",
            SessionState::Connect => "Connect",
            SessionState::Active => "Active",
            SessionState::OpenSent => "OpenSent",
            SessionState::OpenConfirm => "OpenConfirm",
            SessionState::Established => "Established",
            SessionState::Shutdown => "Shutdown",
            SessionState::Unknown => "Unknown",
        }
    }

    pub fn is_established(self) -> bool {
        self == SessionState::Established
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::fsm::State> for SessionState {
    fn from(s: crate::fsm::State) -> Self {
        use crate::fsm::State;
        match s {
            State::Idle => SessionState::Idle,
            State::Connect => SessionState::Connect,
            State::Active => SessionState::Active,
            State::OpenSent => SessionState::OpenSent,
            State::OpenConfirm => SessionState::OpenConfirm,
            State::Established => SessionState::Established,
        }
    }
}

/// One peer, as `serval bgp status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerStatus {
    pub address: IpAddr,
    pub name: Option<String>,
    pub asn: Asn,
    /// "ibgp", "ebgp", "ibgp rr-client".
    pub kind: String,
    pub state: SessionState,
    /// Seconds in Established; `None` when not established.
    pub uptime_secs: Option<u64>,
    /// What ended the last session (or attempt), as an operator reads it.
    pub last_error: Option<String>,
    pub router_id: Option<RouterId>,
    pub local_address: Option<SocketAddr>,
    pub remote_address: Option<SocketAddr>,
    pub hold_time: Option<u16>,
    pub keepalive: Option<u16>,
    /// Negotiated capabilities, by name.
    pub capabilities: Vec<String>,
    pub families: Vec<FamilyStatus>,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    /// Times the session reached Established, and left it.
    pub established_count: u64,
    pub flaps: u64,
    /// Seconds until an automatic restart after an error, while idle.
    pub idle_hold_secs: Option<u64>,
    /// With BFD configured on the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdStatus>,
}

/// A peer's BFD session as reported: a state of RFC 5880 §4.1, or not known (the BFD
/// task did not answer). Serialized by name (`"Up"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
    Unknown,
}

impl BfdState {
    pub fn as_str(self) -> &'static str {
        match self {
            BfdState::AdminDown => "AdminDown",
            BfdState::Down => "Down",
            BfdState::Init => "Init",
            BfdState::Up => "Up",
            BfdState::Unknown => "Unknown",
        }
    }

    /// The state's code on the wire (RFC 5880 §4.1: AdminDown 0, Down 1, Init 2, Up 3);
    /// `None` for `Unknown`.
    pub fn code(self) -> Option<u8> {
        match self {
            BfdState::Unknown => None,
            s => crate::bfd::State::try_from(s).ok().map(|s| s.code()),
        }
    }
}

impl From<crate::bfd::State> for BfdState {
    fn from(s: crate::bfd::State) -> Self {
        match s {
            crate::bfd::State::AdminDown => BfdState::AdminDown,
            crate::bfd::State::Down => BfdState::Down,
            crate::bfd::State::Init => BfdState::Init,
            crate::bfd::State::Up => BfdState::Up,
        }
    }
}

impl TryFrom<BfdState> for crate::bfd::State {
    type Error = ();
    fn try_from(s: BfdState) -> Result<Self, ()> {
        Ok(match s {
            BfdState::AdminDown => crate::bfd::State::AdminDown,
            BfdState::Down => crate::bfd::State::Down,
            BfdState::Init => crate::bfd::State::Init,
            BfdState::Up => crate::bfd::State::Up,
            BfdState::Unknown => return Err(()),
        })
    }
}

impl std::fmt::Display for BfdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A peer's BFD session (RFC 5880), as `serval bgp status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BfdStatus {
    pub state: BfdState,
    /// The state of the peer's last packet.
    pub remote_state: Option<BfdState>,
    /// RFC 5883 (UDP 4784) rather than RFC 5881 single hop (UDP 3784).
    pub multihop: bool,
    /// As configured.
    pub min_rx_ms: u32,
    pub min_tx_ms: u32,
    pub multiplier: u8,
    pub passive: bool,
    /// In use: the negotiated transmit interval (before jitter) and receive interval.
    pub tx_interval_ms: Option<u32>,
    pub rx_interval_ms: Option<u32>,
    /// How long without a packet before the session fails.
    pub detection_time_ms: Option<u32>,
    /// Why our session last changed state, and the peer's (RFC 5880 §4.1 diagnostics).
    pub local_diag: Option<String>,
    pub remote_diag: Option<String>,
    pub local_discriminator: Option<u32>,
    pub remote_discriminator: Option<u32>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Times BFD went down from Up (not counting the peer's AdminDown).
    pub failures: u64,
    /// Seconds BGP stays held down after failures in a row (the dampening).
    pub hold_down_secs: Option<u64>,
}

/// Prefix counters of one peer in one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FamilyStatus {
    pub family: Family,
    /// Prefixes the peer sent us and we hold (accepted + filtered).
    pub received: u32,
    /// Prefixes the import policy accepted.
    pub accepted: u32,
    /// Prefixes the import policy rejected.
    pub filtered: u32,
    /// Prefixes kept as stale during a graceful restart or refresh.
    pub stale: u32,
    /// Prefixes we advertise to the peer.
    pub sent: u32,
}

/// One destination of the Loc-RIB with every path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteEntry {
    pub prefix: IpNet,
    pub paths: Vec<PathEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PathEntry {
    /// The peer it came from; `None` for routes this speaker originates.
    pub peer: Option<IpAddr>,
    pub path_id: u32,
    pub best: bool,
    /// In the ECMP set installed with the best path.
    pub multipath: bool,
    pub stale: bool,
    /// Rejected by the import policy (kept for counting, not used).
    pub filtered: bool,
    pub next_hop: Option<String>,
    pub as_path: String,
    pub origin: Origin,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<CommunityValue>,
    pub large_communities: Vec<LargeCommunityValue>,
    pub ext_communities: Vec<ExtCommunityValue>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    /// Attributes passed on without being understood, as `code:flags`.
    pub unknown_attributes: Vec<String>,
}

/// AS_PATH as routers print it: sequences space-separated, sets in braces, confederation
/// segments in parentheses.
pub fn as_path_text(attrs: &PathAttrs) -> String {
    let mut parts = Vec::new();
    for seg in &attrs.as_path.segments {
        let asns: Vec<String> = seg.asns.iter().map(|a| a.0.to_string()).collect();
        parts.push(match seg.kind {
            SegmentType::Sequence => asns.join(" "),
            SegmentType::Set => format!("{{{}}}", asns.join(",")),
            SegmentType::ConfedSequence => format!("({})", asns.join(" ")),
            SegmentType::ConfedSet => format!("[{}]", asns.join(",")),
        });
    }
    parts.join(" ")
}

pub fn next_hop_text(nh: &NextHop) -> String {
    match nh {
        NextHop::V4(a) => a.to_string(),
        NextHop::V6 {
            global,
            link_local: Some(ll),
        } => format!("{global} ({ll})"),
        NextHop::V6 {
            global,
            link_local: None,
        } => global.to_string(),
    }
}

impl PathEntry {
    pub fn from_view(p: &PathView, peer: Option<IpAddr>) -> Self {
        let a = &*p.attrs;
        PathEntry {
            peer,
            path_id: p.path_id,
            best: p.best,
            multipath: p.multipath,
            stale: p.stale,
            filtered: p.filtered,
            next_hop: a.next_hop.as_ref().map(next_hop_text),
            as_path: as_path_text(a),
            origin: a.origin,
            med: a.med,
            local_pref: a.local_pref,
            communities: a.communities.iter().map(|c| CommunityValue(*c)).collect(),
            large_communities: a
                .large_communities
                .iter()
                .map(|c| LargeCommunityValue(*c))
                .collect(),
            ext_communities: a
                .ext_communities
                .iter()
                .map(|c| ExtCommunityValue(*c))
                .collect(),
            atomic_aggregate: a.atomic_aggregate,
            aggregator: a.aggregator.map(|g| format!("{} {}", g.asn, g.address)),
            originator_id: a.originator_id.map(|o| o.to_string()),
            cluster_list: a.cluster_list.iter().map(ToString::to_string).collect(),
            unknown_attributes: a
                .unknown
                .iter()
                .map(|u| format!("{}:{:#04x}", u.code, u.flags))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::{AsPath, AsSegment};

    #[test]
    fn as_path_prints_like_routers() {
        let as_path = AsPath {
            segments: [
                AsSegment {
                    kind: SegmentType::ConfedSequence,
                    asns: [Asn(65010)].into_iter().collect(),
                },
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: [Asn(65001), Asn(65002)].into_iter().collect(),
                },
                AsSegment {
                    kind: SegmentType::Set,
                    asns: [Asn(1), Asn(2)].into_iter().collect(),
                },
            ]
            .into_iter()
            .collect(),
        };
        let a = PathAttrs {
            as_path,
            ..PathAttrs::default()
        };
        assert_eq!(as_path_text(&a), "(65010) 65001 65002 {1,2}");
    }
}
