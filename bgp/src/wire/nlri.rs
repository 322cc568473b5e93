//! The prefix encoding shared by the NLRI and Withdrawn Routes fields and by
//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4271 §4.3, RFC 4760 §5), with the path
//! identifier of RFC 7911 §3 in front when add-path is negotiated.
//!
//! ```text
//! +--------------------------------+
//! | Path Identifier (4 octets)     |   only with add-path
//! +--------------------------------+
//! | Length (1 octet)               |
//! +--------------------------------+
//! | Prefix (variable)              |
//! +--------------------------------+
//! ```

use crate::types::Family;
use crate::wire::parse;
use crate::wire::update::Nlri;
use bytes::{BufMut, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a prefix field is syntactically incorrect (RFC 7606 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {len} exceeds {max}")]
    PrefixLength { len: u8, max: u8 },
    #[error("field ends inside a prefix")]
    Truncated,
}

/// Decode a whole prefix field, appending to `out`. Host bits past the prefix length are
/// cleared so that equal routes compare equal (RFC 4271 §4.3: they are irrelevant).
///
/// This is the hottest loop of a full-table load, so it indexes the slice directly
/// instead of going through parser combinators; every read is bounds-checked.
pub fn decode_prefixes(
    input: &[u8],
    family: Family,
    add_path: bool,
    out: &mut Vec<Nlri>,
) -> Result<(), NlriError> {
    // Every prefix takes at least one octet (five with a path identifier): this bounds the
    // reservation by the input, never by a length the peer chose.
    out.reserve(input.len() / if add_path { 5 } else { 2 });
    let mut i = 0;
    while i < input.len() {
        let path_id = if add_path {
            let id = input.get(i..i + 4).ok_or(NlriError::Truncated)?;
            i += 4;
            u32::from_be_bytes([id[0], id[1], id[2], id[3]])
        } else {
            0
        };
        let len = *input.get(i).ok_or(NlriError::Truncated)?;
        i += 1;
        let octets = usize::from(len).div_ceil(8);
        let bytes = input.get(i..i + octets).ok_or(NlriError::Truncated);
        let prefix = match family {
            Family::Ipv4Unicast => {
                if len > 32 {
                    return Err(NlriError::PrefixLength { len, max: 32 });
                }
                let bytes = bytes?;
                // Four octets at once where the input has them: the mask below clears
                // whatever follows the prefix.
                let bits = match input.get(i..i + 4) {
                    Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                    None => bytes
                        .iter()
                        .enumerate()
                        .fold(0, |acc, (k, b)| acc | u32::from(*b) << (24 - 8 * k)),
                };
                let net = Ipv4Net::new(Ipv4Addr::from(bits & mask32(len)), len)
                    .map_err(|_| NlriError::PrefixLength { len, max: 32 })?;
                IpNet::V4(net)
            }
            Family::Ipv6Unicast => {
                if len > 128 {
                    return Err(NlriError::PrefixLength { len, max: 128 });
                }
                let mut bits = 0u128;
                for (k, b) in bytes?.iter().enumerate() {
                    bits |= u128::from(*b) << (120 - 8 * k);
                }
                let net = Ipv6Net::new(Ipv6Addr::from(bits & mask128(len)), len)
                    .map_err(|_| NlriError::PrefixLength { len, max: 128 })?;
                IpNet::V6(net)
            }
        };
        i += octets;
        out.push(Nlri { prefix, path_id });
    }
    Ok(())
}

/// Decode one prefix from the front of `input`.
pub fn decode_prefix(
    input: &[u8],
    family: Family,
    add_path: bool,
) -> Result<(&[u8], Nlri), NlriError> {
    let (input, path_id) = if add_path {
        parse::u32(input).map_err(|_| NlriError::Truncated)?
    } else {
        (input, 0)
    };
    let (rest, len) = parse::u8(input).map_err(|_| NlriError::Truncated)?;
    let octets = usize::from(len).div_ceil(8);
    let (_, field) =
        parse::take(input, 1 + octets.min(rest.len())).map_err(|_| NlriError::Truncated)?;
    let mut one = Vec::with_capacity(1);
    decode_prefixes(field, family, false, &mut one)?;
    let nlri = one.pop().ok_or(NlriError::Truncated)?;
    Ok((&input[1 + octets..], Nlri { path_id, ..nlri }))
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Octets `nlri` takes on the wire.
pub fn prefix_wire_len(nlri: &Nlri, add_path: bool) -> usize {
    let path = if add_path { 4 } else { 0 };
    path + 1 + usize::from(nlri.prefix.prefix_len()).div_ceil(8)
}

/// Write one prefix; host bits are cleared as the decoder would.
pub fn encode_prefix(out: &mut BytesMut, nlri: &Nlri, add_path: bool) {
    if add_path {
        out.put_u32(nlri.path_id);
    }
    let len = nlri.prefix.prefix_len();
    let octets = usize::from(len).div_ceil(8);
    out.put_u8(len);
    match nlri.prefix {
        IpNet::V4(net) => {
            let bits = u32::from(net.addr()) & mask32(len);
            out.put_slice(&bits.to_be_bytes()[..octets]);
        }
        IpNet::V6(net) => {
            let bits = u128::from(net.addr()) & mask128(len);
            out.put_slice(&bits.to_be_bytes()[..octets]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Nlri {
        Nlri::new(s.parse().unwrap())
    }

    #[test]
    fn decodes_known_bytes() {
        let mut out = Vec::new();
        decode_prefixes(
            &[24, 10, 1, 2, 0, 32, 192, 0, 2, 1, 8, 10],
            Family::Ipv4Unicast,
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                v4("10.1.2.0/24"),
                v4("0.0.0.0/0"),
                v4("192.0.2.1/32"),
                v4("10.0.0.0/8")
            ]
        );
    }

    #[test]
    fn clears_host_bits() {
        let mut out = Vec::new();
        decode_prefixes(&[9, 10, 0xff], Family::Ipv4Unicast, false, &mut out).unwrap();
        assert_eq!(out, vec![v4("10.128.0.0/9")]);
    }

    #[test]
    fn add_path_reads_the_identifier_first() {
        let mut out = Vec::new();
        decode_prefixes(
            &[0, 0, 0, 7, 16, 10, 1],
            Family::Ipv4Unicast,
            true,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![Nlri {
                prefix: "10.1.0.0/16".parse().unwrap(),
                path_id: 7
            }]
        );
    }

    #[test]
    fn rejects_syntax_errors() {
        let mut out = Vec::new();
        let cases: &[(&[u8], Family, bool, NlriError)] = &[
            (
                &[33, 1, 2, 3, 4, 5],
                Family::Ipv4Unicast,
                false,
                NlriError::PrefixLength { len: 33, max: 32 },
            ),
            (
                &[129],
                Family::Ipv6Unicast,
                false,
                NlriError::PrefixLength { len: 129, max: 128 },
            ),
            (
                &[24, 10, 1],
                Family::Ipv4Unicast,
                false,
                NlriError::Truncated,
            ),
            (&[0, 0, 1], Family::Ipv4Unicast, true, NlriError::Truncated),
            (
                &[0, 0, 0, 1],
                Family::Ipv4Unicast,
                true,
                NlriError::Truncated,
            ),
        ];
        for (bytes, family, add_path, want) in cases {
            assert_eq!(
                decode_prefixes(bytes, *family, *add_path, &mut out),
                Err(*want),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn encode_round_trips() {
        let items = [
            v4("0.0.0.0/0"),
            v4("10.0.0.0/8"),
            v4("192.0.2.128/25"),
            v4("192.0.2.1/32"),
            Nlri {
                prefix: "2001:db8::/32".parse().unwrap(),
                path_id: 0,
            },
            Nlri {
                prefix: "2001:db8:1:2:3:4:5:6/128".parse().unwrap(),
                path_id: 0,
            },
        ];
        for add_path in [false, true] {
            for n in &items {
                let mut buf = BytesMut::new();
                encode_prefix(&mut buf, n, add_path);
                assert_eq!(buf.len(), prefix_wire_len(n, add_path));
                let family = Family::of_prefix(&n.prefix);
                let (rest, back) = decode_prefix(&buf, family, add_path).unwrap();
                assert!(rest.is_empty());
                assert_eq!(back, *n);
            }
        }
    }
}
