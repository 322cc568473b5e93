//! MP_REACH_NLRI and MP_UNREACH_NLRI values (RFC 4760 §3, §4) for IPv4 and IPv6 unicast,
//! with the IPv6 next hops of RFC 2545 §3 and RFC 8950 §3 and add-path NLRI (RFC 7911).

use crate::types::{AfiSafi, Family};
use crate::wire::attr::NextHop;
use crate::wire::error::{AttrFault, EncodeError};
use crate::wire::nlri::{self, decode_prefixes, encode_prefix};
use crate::wire::update::{MpReach, MpUnreach, Nlri};
use crate::wire::CodecParams;
use bytes::{BufMut, BytesMut};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The negotiated family an MP attribute names, or the fault that makes it ignored.
fn family(afi_safi: AfiSafi, params: &CodecParams) -> Result<Family, AttrFault> {
    match afi_safi.family() {
        Some(f) if params.families[f.index()] => Ok(f),
        _ => Err(AttrFault::UnsupportedFamily(afi_safi)),
    }
}

/// A decoded MP_REACH_NLRI and, when its next hop is unusable, the fault: the NLRI were
/// found, so the UPDATE can still be treated as withdraw (RFC 7606 §7.11).
pub(crate) fn decode_reach(
    value: &[u8],
    params: &CodecParams,
) -> Result<(MpReach, Option<AttrFault>), AttrFault> {
    let [a0, a1, safi, nh_len, rest @ ..] = value else {
        return Err(AttrFault::Length);
    };
    let afi_safi = AfiSafi::new(u16::from_be_bytes([*a0, *a1]), *safi);
    let fam = family(afi_safi, params)?;
    let nh_len = *nh_len;
    // Next hop, then the one reserved octet (RFC 4760 §3: ignored on receipt).
    if rest.len() < usize::from(nh_len) + 1 {
        return Err(AttrFault::Length);
    }
    let (nh, rest) = rest.split_at(usize::from(nh_len));
    let nlri_field = &rest[1..];
    let next_hop = match (fam, nh.len()) {
        (Family::Ipv4Unicast, 4) => NextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (Family::Ipv4Unicast, 16 | 32) if params.ipv4_extended_next_hop => v6_next_hop(nh),
        (Family::Ipv6Unicast, 16 | 32) => v6_next_hop(nh),
        _ => return Err(AttrFault::MpNextHopLength(nh_len)),
    };
    let mut nlri = Vec::new();
    decode_prefixes(nlri_field, fam, params.add_path_rx[fam.index()], &mut nlri)
        .map_err(AttrFault::MpNlri)?;
    let fault = (!next_hop_usable(&next_hop)).then_some(AttrFault::NextHop);
    Ok((
        MpReach {
            afi_safi,
            next_hop,
            nlri,
        },
        fault,
    ))
}

fn v6_next_hop(nh: &[u8]) -> NextHop {
    let addr = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        Ipv6Addr::from(a)
    };
    let link_local = (nh.len() == 32).then(|| addr(&nh[16..]));
    NextHop::V6 {
        global: addr(nh),
        link_local,
    }
}

/// A next hop that can forward: not unspecified (unless a link-local address stands
/// beside it, as BGP unnumbered sends), not multicast, not broadcast.
pub(crate) fn next_hop_usable(nh: &NextHop) -> bool {
    match nh {
        NextHop::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        NextHop::V6 { global, link_local } => {
            !(global.is_multicast() || (global.is_unspecified() && link_local.is_none()))
        }
    }
}

pub(crate) fn decode_unreach(value: &[u8], params: &CodecParams) -> Result<MpUnreach, AttrFault> {
    let [a0, a1, safi, rest @ ..] = value else {
        return Err(AttrFault::Length);
    };
    let afi_safi = AfiSafi::new(u16::from_be_bytes([*a0, *a1]), *safi);
    let fam = family(afi_safi, params)?;
    let mut withdrawn = Vec::new();
    decode_prefixes(rest, fam, params.add_path_rx[fam.index()], &mut withdrawn)
        .map_err(AttrFault::MpNlri)?;
    Ok(MpUnreach {
        afi_safi,
        withdrawn,
    })
}

fn encode_family(afi_safi: AfiSafi) -> Result<Family, EncodeError> {
    afi_safi.family().ok_or(EncodeError::Family(afi_safi))
}

fn next_hop_len(nh: &NextHop) -> usize {
    match nh {
        NextHop::V4(_) => 4,
        NextHop::V6 {
            link_local: None, ..
        } => 16,
        NextHop::V6 {
            link_local: Some(_),
            ..
        } => 32,
    }
}

fn check_nlri(nlri: &[Nlri], fam: Family, afi_safi: AfiSafi) -> Result<(), EncodeError> {
    if nlri.iter().any(|n| Family::of_prefix(&n.prefix) != fam) {
        return Err(EncodeError::Family(afi_safi));
    }
    Ok(())
}

/// Octets of the MP_REACH_NLRI value.
pub(crate) fn reach_len(r: &MpReach, params: &CodecParams) -> usize {
    let add_path = r
        .afi_safi
        .family()
        .is_some_and(|f| params.add_path_tx[f.index()]);
    5 + next_hop_len(&r.next_hop)
        + r.nlri
            .iter()
            .map(|n| nlri::prefix_wire_len(n, add_path))
            .sum::<usize>()
}

/// Octets of the MP_UNREACH_NLRI value.
pub(crate) fn unreach_len(u: &MpUnreach, params: &CodecParams) -> usize {
    let add_path = u
        .afi_safi
        .family()
        .is_some_and(|f| params.add_path_tx[f.index()]);
    3 + u
        .withdrawn
        .iter()
        .map(|n| nlri::prefix_wire_len(n, add_path))
        .sum::<usize>()
}

/// Write the MP_REACH_NLRI value header: AFI, SAFI, next hop, reserved.
pub(crate) fn encode_reach_header(afi_safi: AfiSafi, next_hop: &NextHop, out: &mut BytesMut) {
    out.put_u16(afi_safi.afi.0);
    out.put_u8(afi_safi.safi.0);
    out.put_u8(next_hop_len(next_hop) as u8);
    match next_hop {
        NextHop::V4(a) => out.put_slice(&a.octets()),
        NextHop::V6 { global, link_local } => {
            out.put_slice(&global.octets());
            if let Some(ll) = link_local {
                out.put_slice(&ll.octets());
            }
        }
    }
    out.put_u8(0);
}

pub(crate) fn encode_reach(
    r: &MpReach,
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let fam = encode_family(r.afi_safi)?;
    check_nlri(&r.nlri, fam, r.afi_safi)?;
    let nh_ok = match (fam, &r.next_hop) {
        (Family::Ipv4Unicast, NextHop::V4(_)) | (Family::Ipv6Unicast, NextHop::V6 { .. }) => true,
        (Family::Ipv4Unicast, NextHop::V6 { .. }) => params.ipv4_extended_next_hop,
        (Family::Ipv6Unicast, NextHop::V4(_)) => false,
    };
    if !nh_ok {
        return Err(EncodeError::Field("MP_REACH_NLRI next hop"));
    }
    encode_reach_header(r.afi_safi, &r.next_hop, out);
    let add_path = params.add_path_tx[fam.index()];
    for n in &r.nlri {
        encode_prefix(out, n, add_path);
    }
    Ok(())
}

pub(crate) fn encode_unreach(
    u: &MpUnreach,
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let fam = encode_family(u.afi_safi)?;
    check_nlri(&u.withdrawn, fam, u.afi_safi)?;
    out.put_u16(u.afi_safi.afi.0);
    out.put_u8(u.afi_safi.safi.0);
    let add_path = params.add_path_tx[fam.index()];
    for n in &u.withdrawn {
        encode_prefix(out, n, add_path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_params() -> CodecParams {
        CodecParams {
            families: [true, true],
            ..CodecParams::default()
        }
    }

    #[test]
    fn ipv6_reach_with_link_local() {
        let r = MpReach {
            afi_safi: Family::Ipv6Unicast.afi_safi(),
            next_hop: NextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            },
            nlri: vec![Nlri::new("2001:db8:1::/48".parse().unwrap())],
        };
        let p = v6_params();
        let mut out = BytesMut::new();
        encode_reach(&r, &p, &mut out).unwrap();
        assert_eq!(out.len(), reach_len(&r, &p));
        assert_eq!(out[3], 32);
        assert_eq!(decode_reach(&out, &p), Ok((r, None)));
    }

    #[test]
    fn ipv4_with_ipv6_next_hop_needs_rfc8950() {
        let r = MpReach {
            afi_safi: Family::Ipv4Unicast.afi_safi(),
            next_hop: NextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: vec![Nlri::new("10.0.0.0/8".parse().unwrap())],
        };
        let mut p = CodecParams {
            ipv4_extended_next_hop: true,
            ..CodecParams::default()
        };
        let mut out = BytesMut::new();
        encode_reach(&r, &p, &mut out).unwrap();
        assert_eq!(decode_reach(&out, &p), Ok((r, None)));
        p.ipv4_extended_next_hop = false;
        assert_eq!(decode_reach(&out, &p), Err(AttrFault::MpNextHopLength(16)));
    }

    #[test]
    fn faults() {
        let p = v6_params();
        assert_eq!(decode_reach(&[0, 2, 1], &p), Err(AttrFault::Length));
        assert_eq!(decode_reach(&[0, 2, 1, 16, 0], &p), Err(AttrFault::Length));
        assert_eq!(
            decode_reach(&[0, 2, 1, 4, 1, 2, 3, 4, 0], &p),
            Err(AttrFault::MpNextHopLength(4))
        );
        assert_eq!(
            decode_reach(&[0, 3, 1, 4, 1, 2, 3, 4, 0], &p),
            Err(AttrFault::UnsupportedFamily(AfiSafi::new(3, 1)))
        );
        assert_eq!(
            decode_unreach(&[0, 2, 1], &CodecParams::default()),
            Err(AttrFault::UnsupportedFamily(AfiSafi::new(2, 1)))
        );
        let bad_nlri = [0, 1, 1, 4, 10, 0, 0, 1, 0, 33, 1, 2, 3, 4, 5];
        assert!(matches!(
            decode_reach(&bad_nlri, &p),
            Err(AttrFault::MpNlri(_))
        ));
        let mcast = [0, 1, 1, 4, 224, 0, 0, 1, 0, 8, 10];
        let (r, fault) = decode_reach(&mcast, &p).unwrap();
        assert_eq!(fault, Some(AttrFault::NextHop));
        assert_eq!(r.nlri.len(), 1);
    }
}
