//! The export path's encoder: many routes that share one attribute set (or many
//! withdrawals) written as the fewest UPDATEs the session's maximum message size allows.
//!
//! IPv4 unicast with an IPv4 next hop uses the NEXT_HOP attribute and the NLRI field;
//! every other case uses MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760), placed first in the
//! attributes (RFC 7606 §5.1) and followed by the shared attributes in type code order.

use crate::types::Family;
use crate::wire::attr::{self, code, flag, NextHop, PathAttrs};
use crate::wire::consts::{msg_type, HEADER_LEN};
use crate::wire::error::EncodeError;
use crate::wire::header;
use crate::wire::mp;
use crate::wire::nlri::{encode_prefix, prefix_wire_len};
use crate::wire::update::{patch_u16, Nlri};
use crate::wire::CodecParams;
use bytes::{BufMut, BytesMut};

/// Withdrawn Routes Length and Total Path Attribute Length.
const UPDATE_FIXED: usize = HEADER_LEN + 4;
/// The header of an attribute that may need the extended length.
const ATTR_HEADER_MAX: usize = 4;

fn check_family(nlri: &[Nlri], family: Family) -> Result<(), EncodeError> {
    if nlri.iter().any(|n| Family::of_prefix(&n.prefix) != family) {
        return Err(EncodeError::Family(family.afi_safi()));
    }
    Ok(())
}

/// How many of `nlri` fit in `room` octets.
fn fit(nlri: &[Nlri], add_path: bool, room: usize) -> (usize, usize) {
    let mut used = 0;
    for (i, n) in nlri.iter().enumerate() {
        let l = prefix_wire_len(n, add_path);
        if used + l > room {
            return (i, used);
        }
        used += l;
    }
    (nlri.len(), used)
}

/// Write UPDATEs announcing `nlri` (all of `family`) with `attrs`; the next hop is
/// `attrs.next_hop`. Returns the number of messages written. On error `out` is left as it
/// was.
pub fn pack_announce(
    family: Family,
    attrs: &PathAttrs,
    nlri: &[Nlri],
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let r = announce(family, attrs, nlri, params, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn announce(
    family: Family,
    attrs: &PathAttrs,
    nlri: &[Nlri],
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(nlri, family)?;
    if nlri.is_empty() {
        return Ok(0);
    }
    let max = params.max_len(msg_type::UPDATE);
    let add_path = params.add_path_tx[family.index()];
    let next_hop = attrs.next_hop.ok_or(EncodeError::Field("next hop"))?;
    let classic = matches!((family, next_hop), (Family::Ipv4Unicast, NextHop::V4(_)));
    match (family, next_hop) {
        (Family::Ipv6Unicast, NextHop::V4(_)) => {
            return Err(EncodeError::Field("IPv4 next hop for IPv6 routes"))
        }
        (Family::Ipv4Unicast, NextHop::V6 { .. }) if !params.ipv4_extended_next_hop => {
            return Err(EncodeError::Field(
                "IPv6 next hop without extended next hop",
            ))
        }
        _ => {}
    }

    // The shared attributes, written once.
    let mut block = BytesMut::with_capacity(128);
    attr::encode_attributes(attrs, params, &mut block)?;

    let mut count = 0;
    let mut rest = nlri;
    if classic {
        let room = max
            .checked_sub(UPDATE_FIXED + block.len())
            .ok_or(EncodeError::TooLong {
                len: block.len(),
                max,
            })?;
        out.reserve(rest.len().min(room) + UPDATE_FIXED + block.len());
        while !rest.is_empty() {
            let (n, _) = fit(rest, add_path, room);
            if n == 0 {
                return Err(EncodeError::TooLong {
                    len: UPDATE_FIXED + block.len(),
                    max,
                });
            }
            let at = header::start(out, msg_type::UPDATE);
            out.put_u16(0);
            patch_len_and_put(out, block.len())?;
            out.put_slice(&block);
            for p in &rest[..n] {
                encode_prefix(out, p, add_path);
            }
            header::finish(out, at);
            rest = &rest[n..];
            count += 1;
        }
    } else {
        let mut nh_hdr = BytesMut::with_capacity(40);
        mp::encode_reach_header(family.afi_safi(), &next_hop, &mut nh_hdr);
        let fixed = UPDATE_FIXED + ATTR_HEADER_MAX + nh_hdr.len() + block.len();
        let room = max
            .checked_sub(fixed)
            .ok_or(EncodeError::TooLong { len: fixed, max })?;
        while !rest.is_empty() {
            let (n, used) = fit(rest, add_path, room);
            if n == 0 {
                return Err(EncodeError::TooLong { len: fixed, max });
            }
            let at = header::start(out, msg_type::UPDATE);
            out.put_u16(0);
            let mp_len = nh_hdr.len() + used;
            let attr_len = mp_len + if mp_len > 255 { 4 } else { 3 } + block.len();
            patch_len_and_put(out, attr_len)?;
            attr::put_header(out, flag::OPTIONAL, code::MP_REACH_NLRI, mp_len)?;
            out.put_slice(&nh_hdr);
            for p in &rest[..n] {
                encode_prefix(out, p, add_path);
            }
            out.put_slice(&block);
            header::finish(out, at);
            rest = &rest[n..];
            count += 1;
        }
    }
    Ok(count)
}

fn patch_len_and_put(out: &mut BytesMut, len: usize) -> Result<(), EncodeError> {
    let at = out.len();
    out.put_u16(0);
    patch_u16(out, at, len, "total path attribute length")
}

/// Write UPDATEs withdrawing `nlri` (all of `family`): the Withdrawn Routes field for
/// IPv4 unicast, MP_UNREACH_NLRI for IPv6. Returns the number of messages written.
pub fn pack_withdraw(
    family: Family,
    nlri: &[Nlri],
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(nlri, family)?;
    let max = params.max_len(msg_type::UPDATE);
    let add_path = params.add_path_tx[family.index()];
    let mut count = 0;
    let mut rest = nlri;
    while !rest.is_empty() {
        let at = header::start(out, msg_type::UPDATE);
        match family {
            Family::Ipv4Unicast => {
                let (n, used) = fit(rest, add_path, max - UPDATE_FIXED);
                out.put_u16(used as u16);
                for p in &rest[..n] {
                    encode_prefix(out, p, add_path);
                }
                out.put_u16(0);
                rest = &rest[n..];
            }
            Family::Ipv6Unicast => {
                let (n, used) = fit(rest, add_path, max - UPDATE_FIXED - ATTR_HEADER_MAX - 3);
                out.put_u16(0);
                let mp_len = 3 + used;
                out.put_u16((mp_len + if mp_len > 255 { 4 } else { 3 }) as u16);
                attr::put_header(out, flag::OPTIONAL, code::MP_UNREACH_NLRI, mp_len)?;
                out.put_u16(family.afi_safi().afi.0);
                out.put_u8(family.afi_safi().safi.0);
                for p in &rest[..n] {
                    encode_prefix(out, p, add_path);
                }
                rest = &rest[n..];
            }
        }
        header::finish(out, at);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Asn;
    use crate::wire::attr::AsPath;
    use crate::wire::{decode_message, frame, Frame, Message, Update};
    use ipnet::IpNet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4_prefixes(n: u32) -> Vec<Nlri> {
        (0..n)
            .map(|i| {
                Nlri::new(IpNet::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24).unwrap())
            })
            .collect()
    }

    fn v6_prefixes(n: u32) -> Vec<Nlri> {
        (0..n)
            .map(|i| {
                Nlri::new(
                    IpNet::new(
                        Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64).into(),
                        64,
                    )
                    .unwrap(),
                )
            })
            .collect()
    }

    fn attrs(nh: NextHop) -> PathAttrs {
        PathAttrs {
            as_path: AsPath::from_sequence([Asn(65001), Asn(65002)]),
            next_hop: Some(nh),
            med: Some(10),
            local_pref: Some(100),
            ..PathAttrs::default()
        }
    }

    /// Split `buf` into messages, decode each, check its size against `max`.
    fn decode_all(buf: &[u8], p: &CodecParams, max: usize) -> Vec<Update> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let Frame::Complete { len, .. } = frame(rest, p).unwrap() else {
                panic!("partial")
            };
            assert!(len <= max);
            let d = decode_message(&rest[..len], p).unwrap();
            assert!(d.attr_errors.is_empty(), "{:?}", d.attr_errors);
            let Some(Message::Update(u)) = d.message else {
                panic!("not an update")
            };
            out.push(u);
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn ipv4_announce_fills_each_message() {
        let p = CodecParams::default();
        let nlri = v4_prefixes(5000);
        let mut out = BytesMut::new();
        let a = attrs(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let n = pack_announce(Family::Ipv4Unicast, &a, &nlri, &p, &mut out).unwrap();
        let ups = decode_all(&out, &p, 4096);
        assert_eq!(ups.len(), n);
        let got: Vec<Nlri> = ups.iter().flat_map(|u| u.nlri.iter().copied()).collect();
        assert_eq!(got, nlri);
        for u in &ups {
            assert_eq!(u.attrs.as_ref(), Some(&a));
        }
        // Every message but the last is within one prefix of full.
        let sizes: Vec<usize> = ups.iter().map(|u| 23 + 4 * u.nlri.len()).collect();
        let attr_len = out.len() - sizes.iter().sum::<usize>();
        let per_msg = attr_len / n;
        for s in &sizes[..n - 1] {
            assert!(4096 - (s + per_msg) < 4, "{s}");
        }
        assert_eq!(n, 5000usize.div_ceil((4096 - 23 - per_msg) / 4));
    }

    #[test]
    fn extended_messages_take_more() {
        let p = CodecParams {
            extended_message: true,
            ..CodecParams::default()
        };
        let nlri = v4_prefixes(20000);
        let mut out = BytesMut::new();
        let n = pack_announce(
            Family::Ipv4Unicast,
            &attrs(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
            &nlri,
            &p,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            decode_all(&out, &p, 65535)
                .iter()
                .map(|u| u.nlri.len())
                .sum::<usize>(),
            20000
        );
    }

    #[test]
    fn ipv6_announce_and_withdraw_use_mp_attributes() {
        let p = CodecParams {
            families: [true, true],
            add_path_tx: [false, true],
            add_path_rx: [false, true],
            ..CodecParams::default()
        };
        let nlri: Vec<Nlri> = v6_prefixes(1000)
            .into_iter()
            .enumerate()
            .map(|(i, n)| Nlri {
                path_id: i as u32,
                ..n
            })
            .collect();
        let nh = NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        };
        let mut out = BytesMut::new();
        let n = pack_announce(Family::Ipv6Unicast, &attrs(nh), &nlri, &p, &mut out).unwrap();
        let ups = decode_all(&out, &p, 4096);
        assert_eq!(ups.len(), n);
        assert!(n > 1);
        let got: Vec<Nlri> = ups
            .iter()
            .flat_map(|u| u.mp_reach.as_ref().unwrap().nlri.iter().copied())
            .collect();
        assert_eq!(got, nlri);
        assert_eq!(ups[0].mp_reach.as_ref().unwrap().next_hop, nh);
        // RFC 7606 §5.1: MP_REACH_NLRI is the first attribute.
        assert_eq!(out[19 + 2 + 2 + 1], code::MP_REACH_NLRI);

        let mut out = BytesMut::new();
        let n = pack_withdraw(Family::Ipv6Unicast, &nlri, &p, &mut out).unwrap();
        let ups = decode_all(&out, &p, 4096);
        assert_eq!(ups.len(), n);
        let got: Vec<Nlri> = ups
            .iter()
            .flat_map(|u| u.mp_unreach.as_ref().unwrap().withdrawn.iter().copied())
            .collect();
        assert_eq!(got, nlri);
    }

    #[test]
    fn ipv4_with_ipv6_next_hop_goes_in_mp_reach() {
        let p = CodecParams {
            ipv4_extended_next_hop: true,
            ..CodecParams::default()
        };
        let nh = NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        };
        let nlri = v4_prefixes(10);
        let mut out = BytesMut::new();
        assert_eq!(
            pack_announce(Family::Ipv4Unicast, &attrs(nh), &nlri, &p, &mut out),
            Ok(1)
        );
        let ups = decode_all(&out, &p, 4096);
        assert_eq!(ups[0].mp_reach.as_ref().unwrap().nlri, nlri);
        assert!(ups[0].nlri.is_empty());
        let mut out = BytesMut::new();
        let plain = CodecParams::default();
        assert!(pack_announce(Family::Ipv4Unicast, &attrs(nh), &nlri, &plain, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn ipv4_withdraw() {
        let p = CodecParams::default();
        let nlri = v4_prefixes(3000);
        let mut out = BytesMut::new();
        let n = pack_withdraw(Family::Ipv4Unicast, &nlri, &p, &mut out).unwrap();
        assert_eq!(n, 3000usize.div_ceil((4096 - 23) / 4));
        let got: Vec<Nlri> = decode_all(&out, &p, 4096)
            .iter()
            .flat_map(|u| u.withdrawn.clone())
            .collect();
        assert_eq!(got, nlri);
    }

    #[test]
    fn wrong_family_is_an_error() {
        let mut out = BytesMut::new();
        let p = CodecParams::default();
        assert!(pack_withdraw(Family::Ipv4Unicast, &v6_prefixes(1), &p, &mut out).is_err());
    }
}
