//! Path attributes (RFC 4271 §4.3, §5) and their decoding and encoding, with the
//! per-attribute error handling of RFC 7606.
//!
//! `PathAttrs` is the decoded, typed set that the RIB and policy work on. MP_REACH_NLRI
//! and MP_UNREACH_NLRI are not in it: they carry NLRI and live on `Update`.

use crate::types::Asn;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The ASes of one segment; a typical path fits inline, so decoding it allocates nothing.
pub type AsnList = SmallVec<[Asn; 6]>;
/// The segments of a path; almost always one AS_SEQUENCE.
pub type SegmentList = SmallVec<[AsSegment; 1]>;
/// Standard communities; a few fit inline.
pub type CommunityList = SmallVec<[Community; 4]>;

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
    pub asns: AsnList,
}

/// AS_PATH, always held with 4-octet AS numbers: on a session without the 4-octet
/// capability the decoder merges AS4_PATH into it (RFC 6793 §4.2.3) and the encoder splits
/// it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AsPath {
    pub segments: SegmentList,
}

impl AsPath {
    pub fn from_sequence(asns: impl IntoIterator<Item = Asn>) -> Self {
        let asns: AsnList = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: smallvec![AsSegment {
                kind: SegmentType::Sequence,
                asns
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
                        asns: smallvec![asn],
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
    pub communities: CommunityList,
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
            communities: CommunityList::new(),
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------
//
//  0                   1
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  Attr. Flags  |Attr. Type Code|  then a Length of 1 octet, or 2 with Extended Length
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  O T P E: Optional, Transitive, Partial, Extended Length (RFC 4271 §4.3)

use crate::wire::as_path;
use crate::wire::error::{AttrAction, AttrError, AttrFault, EncodeError, UpdateError};
use crate::wire::mp;
use crate::wire::update::{MpReach, MpUnreach};
use crate::wire::CodecParams;
use bytes::{BufMut, BytesMut};

/// The name of an attribute type code, for logs.
pub fn attr_name(attr_code: u8) -> &'static str {
    match attr_code {
        code::ORIGIN => "ORIGIN",
        code::AS_PATH => "AS_PATH",
        code::NEXT_HOP => "NEXT_HOP",
        code::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
        code::LOCAL_PREF => "LOCAL_PREF",
        code::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        code::AGGREGATOR => "AGGREGATOR",
        code::COMMUNITIES => "COMMUNITIES",
        code::ORIGINATOR_ID => "ORIGINATOR_ID",
        code::CLUSTER_LIST => "CLUSTER_LIST",
        code::MP_REACH_NLRI => "MP_REACH_NLRI",
        code::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        code::EXTENDED_COMMUNITIES => "EXTENDED_COMMUNITIES",
        code::AS4_PATH => "AS4_PATH",
        code::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        code::LARGE_COMMUNITIES => "LARGE_COMMUNITIES",
        _ => "unknown attribute",
    }
}

/// The Optional and Transitive bits each known attribute must carry (RFC 4271 §5,
/// RFC 1997, RFC 4360, RFC 4456, RFC 4760, RFC 6793, RFC 8092).
fn expected_flags(attr_code: u8) -> Option<u8> {
    const WELL_KNOWN: u8 = flag::TRANSITIVE;
    const OPT_TRANS: u8 = flag::OPTIONAL | flag::TRANSITIVE;
    const OPT_NON_TRANS: u8 = flag::OPTIONAL;
    Some(match attr_code {
        code::ORIGIN
        | code::AS_PATH
        | code::NEXT_HOP
        | code::LOCAL_PREF
        | code::ATOMIC_AGGREGATE => WELL_KNOWN,
        code::MULTI_EXIT_DISC | code::ORIGINATOR_ID | code::CLUSTER_LIST => OPT_NON_TRANS,
        code::MP_REACH_NLRI | code::MP_UNREACH_NLRI => OPT_NON_TRANS,
        code::AGGREGATOR
        | code::COMMUNITIES
        | code::EXTENDED_COMMUNITIES
        | code::AS4_PATH
        | code::AS4_AGGREGATOR
        | code::LARGE_COMMUNITIES => OPT_TRANS,
        _ => return None,
    })
}

/// RFC 4271 §4.3: Optional and Transitive as the type says; Partial only on optional
/// transitive attributes. The low four bits are ignored on receipt.
fn flags_ok(flags: u8, expected: u8) -> bool {
    let ot = flags & (flag::OPTIONAL | flag::TRANSITIVE);
    let partial_allowed = expected == flag::OPTIONAL | flag::TRANSITIVE;
    ot == expected && (partial_allowed || flags & flag::PARTIAL == 0)
}

/// A set of attribute type codes, for duplicate and missing checks without allocating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CodeSet([u64; 4]);

impl CodeSet {
    pub(crate) fn insert(&mut self, c: u8) -> bool {
        let (w, b) = (usize::from(c / 64), c % 64);
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
    pub(crate) fn contains(&self, c: u8) -> bool {
        self.0[usize::from(c / 64)] & (1 << (c % 64)) != 0
    }
}

/// What the walk over the path attributes found.
#[derive(Debug, Default)]
pub(crate) struct DecodedAttrs {
    pub attrs: PathAttrs,
    /// An attribute other than MP_UNREACH_NLRI was present.
    pub any: bool,
    pub seen: CodeSet,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Errors handled by treat-as-withdraw or attribute discard.
    pub errors: Vec<AttrError>,
}

/// Walk the path attributes, decoding each and applying RFC 7606. Errors that reset
/// the session come back as `Err`; the others are listed in `errors`.
pub(crate) fn decode_attributes(
    mut input: &[u8],
    params: &CodecParams,
) -> Result<DecodedAttrs, UpdateError> {
    let mut out = DecodedAttrs::default();
    let mut as4_path: Option<AsPath> = None;
    let mut as4_aggregator: Option<Aggregator> = None;
    let mut raw_aggregator_as: Option<u32> = None;

    let record = |out: &mut DecodedAttrs, e: AttrError| -> Result<(), UpdateError> {
        if e.action == AttrAction::Reset {
            return Err(UpdateError::Attr(e));
        }
        out.errors.push(e);
        Ok(())
    };

    while !input.is_empty() {
        // RFC 7606 §4: a header or value that runs past the Total Path Attribute Length.
        let (flags, attr_code) = match input {
            [f, c, ..] => (*f, *c),
            _ => {
                record(&mut out, AttrError::new(0, AttrFault::Overrun, input))?;
                break;
            }
        };
        let hdr = if flags & flag::EXTENDED_LENGTH != 0 {
            4
        } else {
            3
        };
        let len = match input.get(2..hdr) {
            Some([l]) => usize::from(*l),
            Some([h, l]) => usize::from(u16::from_be_bytes([*h, *l])),
            _ => {
                record(
                    &mut out,
                    AttrError::new(attr_code, AttrFault::Overrun, input),
                )?;
                break;
            }
        };
        let Some(raw) = input.get(..hdr + len) else {
            record(
                &mut out,
                AttrError::new(attr_code, AttrFault::Overrun, input),
            )?;
            break;
        };
        let value = &raw[hdr..];
        input = &input[hdr + len..];

        if attr_code != code::MP_UNREACH_NLRI {
            out.any = true;
        }
        // RFC 7606 §3 (g).
        if !out.seen.insert(attr_code) {
            record(
                &mut out,
                AttrError::new(attr_code, AttrFault::Duplicate, raw),
            )?;
            continue;
        }
        let Some(expected) = expected_flags(attr_code) else {
            // RFC 4271 §5 / §6.3: unknown well-known is an error; unknown optional
            // transitive is passed on; unknown optional non-transitive is dropped.
            if flags & flag::OPTIONAL == 0 {
                record(
                    &mut out,
                    AttrError::new(attr_code, AttrFault::UnrecognizedWellKnown, raw),
                )?;
            } else if flags & flag::TRANSITIVE != 0 {
                // RFC 4271 §4.3: the low four flag bits are unused, ignored when
                // received and zero when sent; the length form is the encoder's choice.
                out.attrs.unknown.push(RawAttr {
                    flags: flags & (flag::OPTIONAL | flag::TRANSITIVE | flag::PARTIAL),
                    code: attr_code,
                    value: Bytes::copy_from_slice(value),
                });
            }
            continue;
        };
        // RFC 7606 §7.5, §7.9, §7.10: discarded from an external peer, whatever their form.
        if params.ebgp
            && matches!(
                attr_code,
                code::LOCAL_PREF | code::ORIGINATOR_ID | code::CLUSTER_LIST
            )
        {
            record(
                &mut out,
                AttrError::new(attr_code, AttrFault::FromExternal, raw),
            )?;
            continue;
        }
        let flags_fault = !flags_ok(flags, expected);
        if flags_fault && !matches!(attr_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI) {
            // RFC 7606 §3 (c): handled as that attribute's malformation.
            record(&mut out, AttrError::new(attr_code, AttrFault::Flags, raw))?;
            continue;
        }
        let result = match attr_code {
            code::MP_REACH_NLRI => match mp::decode_reach(value, params) {
                Ok((reach, fault)) => {
                    out.mp_reach = Some(reach);
                    match fault {
                        Some(f) => Err(f),
                        None if flags_fault => Err(AttrFault::Flags),
                        None => Ok(()),
                    }
                }
                Err(f) => Err(f),
            },
            code::MP_UNREACH_NLRI => match mp::decode_unreach(value, params) {
                Ok(unreach) => {
                    out.mp_unreach = Some(unreach);
                    if flags_fault {
                        Err(AttrFault::Flags)
                    } else {
                        Ok(())
                    }
                }
                Err(f) => Err(f),
            },
            code::AS4_PATH if !params.four_octet_asn => as_path::decode(value, true, false)
                .map(|p| as4_path = Some(p))
                .map_err(AttrFault::AsPath),
            code::AS4_AGGREGATOR if !params.four_octet_asn => match value {
                [a, b, c, d, e, f, g, h] => {
                    let asn = u32::from_be_bytes([*a, *b, *c, *d]);
                    if asn == 0 {
                        Err(AttrFault::Value("AS 0"))
                    } else {
                        as4_aggregator = Some(Aggregator {
                            asn: Asn(asn),
                            address: Ipv4Addr::new(*e, *f, *g, *h),
                        });
                        Ok(())
                    }
                }
                _ => Err(AttrFault::Length),
            },
            // RFC 6793 §3: AS4_* between 4-octet speakers are discarded.
            code::AS4_PATH | code::AS4_AGGREGATOR => {
                Err(AttrFault::Ignored("AS4 attribute on a 4-octet session"))
            }
            code::AGGREGATOR => {
                decode_aggregator(value, params.four_octet_asn).map(|(agg, raw_as)| {
                    out.attrs.aggregator = Some(agg);
                    raw_aggregator_as = Some(raw_as);
                })
            }
            _ => decode_simple(attr_code, value, params, &mut out.attrs),
        };
        if let Err(fault) = result {
            record(&mut out, AttrError::new(attr_code, fault, raw))?;
        }
    }

    // RFC 6793 §4.2.3: rebuild the 4-octet path on a 2-octet session.
    if !params.four_octet_asn {
        let mut use_as4_path = true;
        if let Some(raw_as) = raw_aggregator_as {
            if raw_as != Asn::TRANS.0 {
                // The aggregator is a 2-octet speaker: AS4_AGGREGATOR and AS4_PATH are stale.
                use_as4_path = false;
            } else if let (Some(agg), Some(a4)) = (out.attrs.aggregator.as_mut(), as4_aggregator) {
                *agg = a4;
            }
        }
        if let Some(p4) = as4_path {
            if !use_as4_path || !as_path::merge_as4(&mut out.attrs.as_path, p4) {
                out.errors.push(AttrError::new(
                    code::AS4_PATH,
                    AttrFault::Ignored("inconsistent with AS_PATH or AGGREGATOR"),
                    &[],
                ));
            }
        }
    }
    Ok(out)
}

fn decode_aggregator(value: &[u8], four: bool) -> Result<(Aggregator, u32), AttrFault> {
    let (asn, addr) = match (four, value) {
        (true, [a, b, c, d, rest @ ..]) if rest.len() == 4 => {
            (u32::from_be_bytes([*a, *b, *c, *d]), rest)
        }
        (false, [a, b, rest @ ..]) if rest.len() == 4 => {
            (u32::from(u16::from_be_bytes([*a, *b])), rest)
        }
        _ => return Err(AttrFault::Length),
    };
    // RFC 7607 §2.
    if asn == 0 {
        return Err(AttrFault::Value("AS 0"));
    }
    let address = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
    Ok((
        Aggregator {
            asn: Asn(asn),
            address,
        },
        asn,
    ))
}

fn u32_value(value: &[u8]) -> Result<u32, AttrFault> {
    match value {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(AttrFault::Length),
    }
}

/// Lists of fixed-size items: non-empty and a whole number of items (RFC 7606 §7.8,
/// §7.10, §7.14, RFC 8092 §6).
fn items(value: &[u8], size: usize) -> Result<std::slice::ChunksExact<'_, u8>, AttrFault> {
    if value.is_empty() || value.len() % size != 0 {
        return Err(AttrFault::Length);
    }
    Ok(value.chunks_exact(size))
}

fn be32(c: &[u8]) -> u32 {
    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
}

/// The attributes whose value alone decides their validity.
fn decode_simple(
    attr_code: u8,
    value: &[u8],
    params: &CodecParams,
    attrs: &mut PathAttrs,
) -> Result<(), AttrFault> {
    match attr_code {
        code::ORIGIN => {
            attrs.origin = match value {
                [0] => Origin::Igp,
                [1] => Origin::Egp,
                [2] => Origin::Incomplete,
                [v] => return Err(AttrFault::Origin(*v)),
                _ => return Err(AttrFault::Length),
            }
        }
        code::AS_PATH => {
            attrs.as_path =
                as_path::decode(value, params.four_octet_asn, true).map_err(AttrFault::AsPath)?
        }
        code::NEXT_HOP => {
            let nh = NextHop::V4(Ipv4Addr::from(u32_value(value)?));
            // RFC 7606 §7.3: a semantically wrong NEXT_HOP is treat-as-withdraw.
            if !mp::next_hop_usable(&nh) {
                return Err(AttrFault::NextHop);
            }
            attrs.next_hop = Some(nh);
        }
        code::MULTI_EXIT_DISC => attrs.med = Some(u32_value(value)?),
        code::LOCAL_PREF => attrs.local_pref = Some(u32_value(value)?),
        code::ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(AttrFault::Length);
            }
            attrs.atomic_aggregate = true;
        }
        code::COMMUNITIES => {
            attrs.communities = items(value, 4)?.map(|c| Community(be32(c))).collect()
        }
        code::ORIGINATOR_ID => attrs.originator_id = Some(Ipv4Addr::from(u32_value(value)?)),
        code::CLUSTER_LIST => {
            attrs.cluster_list = items(value, 4)?.map(|c| Ipv4Addr::from(be32(c))).collect()
        }
        code::EXTENDED_COMMUNITIES => {
            attrs.ext_communities = items(value, 8)?
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    ExtCommunity(a)
                })
                .collect()
        }
        code::LARGE_COMMUNITIES => {
            attrs.large_communities = items(value, 12)?
                .map(|c| LargeCommunity {
                    global: be32(c),
                    local1: be32(&c[4..]),
                    local2: be32(&c[8..]),
                })
                .collect()
        }
        _ => {}
    }
    Ok(())
}

/// Write an attribute header; Extended Length only when the value needs it.
pub(crate) fn put_header(
    out: &mut BytesMut,
    flags: u8,
    attr_code: u8,
    len: usize,
) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::Field("attribute length"));
    }
    if len > 255 {
        out.put_u8(flags | flag::EXTENDED_LENGTH);
        out.put_u8(attr_code);
        out.put_u16(len as u16);
    } else {
        out.put_u8(flags & !flag::EXTENDED_LENGTH);
        out.put_u8(attr_code);
        out.put_u8(len as u8);
    }
    Ok(())
}

/// Write the path attributes other than MP_REACH_NLRI / MP_UNREACH_NLRI, in type code
/// order (RFC 4271 §5). LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST go to internal peers
/// only (RFC 4271 §5.1.5, RFC 4456 §8); NEXT_HOP only when it is an IPv4 address (other
/// next hops travel in MP_REACH_NLRI). Unknown transitive attributes are passed on with
/// the Partial bit set (RFC 4271 §5).
pub fn encode_attributes(
    attrs: &PathAttrs,
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    const WK: u8 = flag::TRANSITIVE;
    const OT: u8 = flag::OPTIONAL | flag::TRANSITIVE;
    const ON: u8 = flag::OPTIONAL;
    let four = params.four_octet_asn;
    let ibgp = !params.ebgp;

    let mut unknown: SmallVec<[&RawAttr; 4]> = attrs
        .unknown
        .iter()
        .filter(|a| expected_flags(a.code).is_none())
        .collect();
    unknown.sort_by_key(|a| a.code);
    let mut unknown = unknown.into_iter().peekable();
    let mut flush = |below: u16, out: &mut BytesMut| -> Result<(), EncodeError> {
        while let Some(a) = unknown.next_if(|a| u16::from(a.code) < below) {
            put_header(out, (a.flags | flag::PARTIAL) & 0xf0, a.code, a.value.len())?;
            out.put_slice(&a.value);
        }
        Ok(())
    };

    flush(u16::from(code::ORIGIN), out)?;
    put_header(out, WK, code::ORIGIN, 1)?;
    out.put_u8(attrs.origin as u8);

    flush(u16::from(code::AS_PATH), out)?;
    put_header(
        out,
        WK,
        code::AS_PATH,
        as_path::encoded_len(&attrs.as_path, four, false),
    )?;
    as_path::encode(&attrs.as_path, four, false, out);

    flush(u16::from(code::NEXT_HOP), out)?;
    if let Some(NextHop::V4(a)) = attrs.next_hop {
        put_header(out, WK, code::NEXT_HOP, 4)?;
        out.put_slice(&a.octets());
    }
    flush(u16::from(code::MULTI_EXIT_DISC), out)?;
    if let Some(med) = attrs.med {
        put_header(out, ON, code::MULTI_EXIT_DISC, 4)?;
        out.put_u32(med);
    }
    flush(u16::from(code::LOCAL_PREF), out)?;
    if let (Some(lp), true) = (attrs.local_pref, ibgp) {
        put_header(out, WK, code::LOCAL_PREF, 4)?;
        out.put_u32(lp);
    }
    flush(u16::from(code::ATOMIC_AGGREGATE), out)?;
    if attrs.atomic_aggregate {
        put_header(out, WK, code::ATOMIC_AGGREGATE, 0)?;
    }
    flush(u16::from(code::AGGREGATOR), out)?;
    if let Some(agg) = attrs.aggregator {
        if four {
            put_header(out, OT, code::AGGREGATOR, 8)?;
            out.put_u32(agg.asn.0);
        } else {
            put_header(out, OT, code::AGGREGATOR, 6)?;
            out.put_u16(u16::try_from(agg.asn.0).unwrap_or(Asn::TRANS.0 as u16));
        }
        out.put_slice(&agg.address.octets());
    }
    flush(u16::from(code::COMMUNITIES), out)?;
    if !attrs.communities.is_empty() {
        put_header(out, OT, code::COMMUNITIES, 4 * attrs.communities.len())?;
        for c in &attrs.communities {
            out.put_u32(c.0);
        }
    }
    flush(u16::from(code::ORIGINATOR_ID), out)?;
    if let (Some(id), true) = (attrs.originator_id, ibgp) {
        put_header(out, ON, code::ORIGINATOR_ID, 4)?;
        out.put_slice(&id.octets());
    }
    flush(u16::from(code::CLUSTER_LIST), out)?;
    if !attrs.cluster_list.is_empty() && ibgp {
        put_header(out, ON, code::CLUSTER_LIST, 4 * attrs.cluster_list.len())?;
        for id in &attrs.cluster_list {
            out.put_slice(&id.octets());
        }
    }
    flush(u16::from(code::EXTENDED_COMMUNITIES), out)?;
    if !attrs.ext_communities.is_empty() {
        put_header(
            out,
            OT,
            code::EXTENDED_COMMUNITIES,
            8 * attrs.ext_communities.len(),
        )?;
        for c in &attrs.ext_communities {
            out.put_slice(&c.0);
        }
    }
    // RFC 6793 §4.2.2: a 2-octet session gets the real path and aggregator in AS4_*.
    flush(u16::from(code::AS4_PATH), out)?;
    if !four && as_path::needs_as4(&attrs.as_path) {
        put_header(
            out,
            OT,
            code::AS4_PATH,
            as_path::encoded_len(&attrs.as_path, true, true),
        )?;
        as_path::encode(&attrs.as_path, true, true, out);
    }
    flush(u16::from(code::AS4_AGGREGATOR), out)?;
    if let (Some(agg), false) = (attrs.aggregator, four) {
        if !agg.asn.is_two_octet() {
            put_header(out, OT, code::AS4_AGGREGATOR, 8)?;
            out.put_u32(agg.asn.0);
            out.put_slice(&agg.address.octets());
        }
    }
    flush(u16::from(code::LARGE_COMMUNITIES), out)?;
    if !attrs.large_communities.is_empty() {
        put_header(
            out,
            OT,
            code::LARGE_COMMUNITIES,
            12 * attrs.large_communities.len(),
        )?;
        for c in &attrs.large_communities {
            out.put_u32(c.global);
            out.put_u32(c.local1);
            out.put_u32(c.local2);
        }
    }
    flush(256, out)?;
    Ok(())
}
