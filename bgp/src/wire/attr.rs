//! Path attributes (RFC 4271 §4.3, §5) and their decoding and encoding, with the
//! per-attribute error handling of RFC 7606.
//!
//! `PathAttrs` is the decoded, typed set that the RIB and policy work on. MP_REACH_NLRI
//! and MP_UNREACH_NLRI are not in it: they carry NLRI and live on `Update`.

use crate::types::Asn;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<Asn>,
}

/// AS_PATH, always held with 4-octet AS numbers: on a session without the 4-octet
/// capability the decoder merges AS4_PATH into it (RFC 6793 §4.2.3) and the encoder splits
/// it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn from_sequence(asns: impl IntoIterator<Item = Asn>) -> Self {
        let asns: Vec<Asn> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length for the decision process (RFC 4271 §9.1.2.2 a): an AS_SET counts
    /// one, confederation segments count nothing (RFC 5065 §5.3).
    pub fn decision_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of the first AS_SEQUENCE segment, skipping
    /// confederation segments (RFC 4271 §9.1.2.2 c, RFC 5065).
    pub fn neighbor_as(&self) -> Option<Asn> {
        self.segments
            .iter()
            .find(|s| !matches!(s.kind, SegmentType::ConfedSequence | SegmentType::ConfedSet))
            .and_then(|s| match s.kind {
                SegmentType::Sequence => s.asns.first().copied(),
                _ => None,
            })
    }

    /// The AS that originated the route: the last AS of the last AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<Asn> {
        match self.segments.last() {
            Some(AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }) => asns.last().copied(),
            _ => None,
        }
    }

    pub fn contains(&self, asn: Asn) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// Prepend `asn` `count` times into a leading AS_SEQUENCE (RFC 4271 §5.1.2), opening a
    /// new segment when the first is not a sequence or is full (255 ASes).
    pub fn prepend(&mut self, asn: Asn, count: usize) {
        for _ in 0..count {
            match self.segments.first_mut() {
                Some(seg) if seg.kind == SegmentType::Sequence && seg.asns.len() < 255 => {
                    seg.asns.insert(0, asn)
                }
                _ => self.segments.insert(
                    0,
                    AsSegment {
                        kind: SegmentType::Sequence,
                        asns: vec![asn],
                    },
                ),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }
}

/// A standard community (RFC 1997).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    pub const NO_PEER: Community = Community(0xFFFF_FF04);
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    pub const NO_LLGR: Community = Community(0xFFFF_0007);

    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

/// An extended community (RFC 4360), kept as its 8 octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunity(pub [u8; 8]);

/// A large community (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aggregator {
    pub asn: Asn,
    pub address: Ipv4Addr,
}

/// A route's next hop. IPv6 next hops may carry a link-local address beside the global one
/// (RFC 2545 §3); an IPv4 route may have an IPv6 next hop (RFC 8950).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// An attribute the codec does not interpret, kept as received so that an optional
/// transitive one can be passed on (with the Partial bit set, RFC 4271 §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub code: u8,
    pub value: Bytes,
}

/// The typed path attributes of a route.
///
/// `next_hop` holds the NEXT_HOP attribute as decoded from an UPDATE; in the RIB it holds
/// the next hop of the route itself, whichever attribute carried it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: AsPath,
    pub next_hop: Option<NextHop>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<Community>,
    pub ext_communities: Vec<ExtCommunity>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised attributes, in the order received.
    pub unknown: Vec<RawAttr>,
}

impl Default for PathAttrs {
    fn default() -> Self {
        PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: Vec::new(),
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            unknown: Vec::new(),
        }
    }
}
