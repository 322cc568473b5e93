//! OPEN message (RFC 4271 §4.2) with capabilities (RFC 5492) and the extended optional
//! parameters length of RFC 9072.

use crate::types::{AfiSafi, Asn, Family, RouterId};
use crate::wire::consts::{opt_param, BGP_VERSION, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::wire::error::{EncodeError, OpenError};
use crate::wire::parse;
use bytes::{BufMut, BytesMut};
use std::net::Ipv4Addr;

pub use crate::wire::capability::{cap_code, AddPathMode, Capability, GracefulRestartFamily};

///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    Version    |     My Autonomous System      |   Hold Time   :
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// :               |                BGP Identifier                 :
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// :               | Opt Parm Len  |  Optional Parameters (var)    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// Optional parameters (RFC 4271 §4.2), and with RFC 9072 §2 when Opt Parm Len is 255
/// and the first parameter type is 255, a two-octet length for the list and for each
/// parameter:
///
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Non-Ext OP Len| Non-Ext OP Type |  Extended Opt. Parm. Length |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Parm. Type   |        Parameter Length       |  Value ...    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// `asn` is the speaker's real AS: the 4-octet capability's value when present, else the
/// 2-octet field. The encoder writes AS_TRANS in the 2-octet field when it does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    pub asn: Asn,
    pub hold_time: u16,
    pub router_id: RouterId,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN of version 4.
    pub fn new(
        asn: Asn,
        hold_time: u16,
        router_id: RouterId,
        capabilities: Vec<Capability>,
    ) -> Self {
        Open {
            version: BGP_VERSION,
            asn,
            hold_time,
            router_id,
            capabilities,
        }
    }

    /// True when the peer can read 4-octet AS numbers (RFC 6793).
    pub fn four_octet_asn(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAsn(_)))
    }

    /// The families announced with the Multiprotocol capability; an OPEN without any
    /// announces IPv4 unicast implicitly (RFC 4760 §8 with RFC 4271's default).
    pub fn families(&self) -> impl Iterator<Item = AfiSafi> + '_ {
        let any = self
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Multiprotocol(_)));
        let implicit = (!any).then(|| Family::Ipv4Unicast.afi_safi());
        self.capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(af) => Some(*af),
                _ => None,
            })
            .chain(implicit)
    }

    pub fn has(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    /// The add-path mode announced for a family (RFC 7911 §4).
    pub fn add_path(&self, family: Family) -> Option<AddPathMode> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::AddPath(v) => v
                .iter()
                .find(|(af, _)| *af == family.afi_safi())
                .map(|(_, m)| *m),
            _ => None,
        })
    }

    /// RFC 8950: IPv6 next hops announced for IPv4 unicast.
    pub fn extended_next_hop_ipv4(&self) -> bool {
        self.capabilities.iter().any(|c| match c {
            Capability::ExtendedNextHop(v) => v.iter().any(|(af, nh)| {
                *af == Family::Ipv4Unicast.afi_safi() && *nh == crate::types::Afi::IPV6
            }),
            _ => false,
        })
    }

    /// Decode the message body (after the 19-octet header).
    pub fn decode(body: &[u8]) -> Result<Open, OpenError> {
        let short = OpenError::MalformedParameters("message shorter than its fields");
        let (rest, version) = parse::u8(body).map_err(|_| short.clone())?;
        // RFC 4271 §6.2: the version is checked before anything else.
        if version != BGP_VERSION {
            return Err(OpenError::UnsupportedVersion(version));
        }
        let (rest, my_as) = parse::u16(rest).map_err(|_| short.clone())?;
        let (rest, hold_time) = parse::u16(rest).map_err(|_| short.clone())?;
        let (rest, id) = parse::ipv4(rest).map_err(|_| short.clone())?;
        let (rest, opt_len) = parse::u8(rest).map_err(|_| short)?;

        let capabilities = decode_parameters(rest, opt_len)?;

        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime(hold_time));
        }
        if id == Ipv4Addr::UNSPECIFIED {
            return Err(OpenError::BadBgpIdentifier(id));
        }
        let four = capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAsn(a) => Some(*a),
            _ => None,
        });
        let asn = four.unwrap_or(Asn(u32::from(my_as)));
        // RFC 7607 §2: AS 0 in either field is a Bad Peer AS.
        if my_as == 0 || asn.0 == 0 {
            return Err(OpenError::BadPeerAs(if my_as == 0 { 0 } else { asn.0 }));
        }
        Ok(Open {
            version,
            asn,
            hold_time,
            router_id: RouterId(id),
            capabilities,
        })
    }

    /// Write the message body. Capabilities go in one optional parameter where they fit,
    /// else in several; beyond 255 octets of parameters, RFC 9072's extended format.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u8(self.version);
        let my_as = u16::try_from(self.asn.0).unwrap_or(Asn::TRANS.0 as u16);
        out.put_u16(my_as);
        out.put_u16(self.hold_time);
        out.put_u32(u32::from(self.router_id.0));

        // Group capabilities into parameters of at most 255 octets of value.
        let mut groups: Vec<(usize, usize)> = Vec::new(); // (first index, value length)
        for (i, cap) in self.capabilities.iter().enumerate() {
            let len = 2 + cap.value_len();
            if len > 257 {
                return Err(EncodeError::Field("capability length"));
            }
            match groups.last_mut() {
                Some((_, glen)) if *glen + len <= 255 => *glen += len,
                _ => groups.push((i, len)),
            }
        }
        let plain_len: usize = groups.iter().map(|(_, l)| 2 + l).sum();
        let extended = plain_len > 255;
        if extended {
            let ext_len: usize = groups.iter().map(|(_, l)| 3 + l).sum();
            out.put_u8(255);
            out.put_u8(opt_param::EXTENDED_LENGTH);
            out.put_u16(
                u16::try_from(ext_len)
                    .map_err(|_| EncodeError::Field("optional parameters length"))?,
            );
        } else {
            out.put_u8(plain_len as u8);
        }
        let mut caps = self.capabilities.iter().peekable();
        for (gi, (_, glen)) in groups.iter().enumerate() {
            out.put_u8(opt_param::CAPABILITIES);
            if extended {
                out.put_u16(*glen as u16);
            } else {
                out.put_u8(*glen as u8);
            }
            let end = groups
                .get(gi + 1)
                .map(|g| g.0)
                .unwrap_or(self.capabilities.len());
            let begin = groups[gi].0;
            for _ in begin..end {
                if let Some(cap) = caps.next() {
                    cap.encode(out)?;
                }
            }
        }
        let len = HEADER_LEN + out.len() - start;
        if len > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        Ok(())
    }
}

/// The optional parameters field, in either format (RFC 4271 §4.2, RFC 9072 §2).
fn decode_parameters(rest: &[u8], opt_len: u8) -> Result<Vec<Capability>, OpenError> {
    let extended = opt_len == 255 && rest.first() == Some(&opt_param::EXTENDED_LENGTH);
    let (mut params, extended) = if extended {
        let (after, ext_len) = parse::u16(&rest[1..])
            .map_err(|_| OpenError::MalformedParameters("extended length missing"))?;
        if usize::from(ext_len) != after.len() {
            return Err(OpenError::MalformedParameters(
                "extended length does not match the message",
            ));
        }
        (after, true)
    } else {
        if usize::from(opt_len) != rest.len() {
            return Err(OpenError::MalformedParameters(
                "length does not match the message",
            ));
        }
        (rest, false)
    };
    let mut caps = Vec::new();
    while !params.is_empty() {
        let (r, ptype) =
            parse::u8(params).map_err(|_| OpenError::MalformedParameters("truncated parameter"))?;
        let (r, plen) = if extended {
            parse::u16(r).map_err(|_| OpenError::MalformedParameters("truncated parameter"))?
        } else {
            let (r, l) =
                parse::u8(r).map_err(|_| OpenError::MalformedParameters("truncated parameter"))?;
            (r, u16::from(l))
        };
        let (r, value) = parse::take(r, usize::from(plen))
            .map_err(|_| OpenError::MalformedParameters("parameter overruns"))?;
        params = r;
        if ptype != opt_param::CAPABILITIES {
            return Err(OpenError::UnsupportedOptionalParameter(ptype));
        }
        let mut value = value;
        while !value.is_empty() {
            let (r, code) = parse::u8(value)
                .map_err(|_| OpenError::MalformedParameters("truncated capability"))?;
            let (r, clen) = parse::u8(r).map_err(|_| OpenError::MalformedCapability {
                code,
                reason: "truncated",
            })?;
            let (r, cval) =
                parse::take(r, usize::from(clen)).map_err(|_| OpenError::MalformedCapability {
                    code,
                    reason: "overruns its parameter",
                })?;
            caps.push(Capability::decode(code, cval)?);
            value = r;
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(caps: Vec<Capability>) -> Open {
        Open::new(Asn(65001), 90, RouterId(Ipv4Addr::new(192, 0, 2, 1)), caps)
    }

    fn body(o: &Open) -> Vec<u8> {
        let mut b = BytesMut::new();
        o.encode(&mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn known_bytes() {
        let o = open(vec![
            Capability::Multiprotocol(AfiSafi::new(1, 1)),
            Capability::RouteRefresh,
        ]);
        let b = body(&o);
        assert_eq!(
            b,
            [4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 10, 2, 8, 1, 4, 0, 1, 0, 1, 2, 0]
        );
        assert_eq!(Open::decode(&b).unwrap(), o);
    }

    #[test]
    fn four_octet_as_is_the_real_as() {
        let o = Open::new(
            Asn(4_200_000_001),
            180,
            RouterId(Ipv4Addr::new(10, 0, 0, 1)),
            vec![Capability::FourOctetAsn(Asn(4_200_000_001))],
        );
        let b = body(&o);
        assert_eq!(&b[1..3], &23456u16.to_be_bytes());
        assert_eq!(Open::decode(&b).unwrap().asn, Asn(4_200_000_001));
    }

    #[test]
    fn parameters_one_per_capability_are_read() {
        // Older speakers put each capability in its own parameter.
        let b = [
            4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 8, 2, 2, 2, 0, 2, 2, 70, 0,
        ];
        let o = Open::decode(&b).unwrap();
        assert_eq!(
            o.capabilities,
            vec![Capability::RouteRefresh, Capability::EnhancedRouteRefresh]
        );
    }

    #[test]
    fn extended_parameters_length_is_read_and_written() {
        let caps: Vec<Capability> = (0..60)
            .map(|i| Capability::Unknown {
                code: 200,
                value: vec![i; 3].into(),
            })
            .collect();
        let o = open(caps);
        let b = body(&o);
        assert_eq!(b[9], 255);
        assert_eq!(b[10], 255);
        assert_eq!(Open::decode(&b).unwrap(), o);
        // The small form can also be written extended (RFC 9072 §2 allows it).
        let b = [
            4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 255, 255, 0, 5, 2, 0, 2, 2, 0,
        ];
        assert_eq!(
            Open::decode(&b).unwrap().capabilities,
            vec![Capability::RouteRefresh]
        );
    }

    #[test]
    fn errors() {
        let good = body(&open(vec![Capability::RouteRefresh]));
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(
            Open::decode(&with(0, 3)),
            Err(OpenError::UnsupportedVersion(3))
        );
        assert_eq!(
            Open::decode(&with(4, 2)),
            Err(OpenError::UnacceptableHoldTime(2))
        );
        let mut zero_id = good.clone();
        zero_id[5..9].copy_from_slice(&[0; 4]);
        assert!(matches!(
            Open::decode(&zero_id),
            Err(OpenError::BadBgpIdentifier(_))
        ));
        let mut zero_as = good.clone();
        zero_as[1..3].copy_from_slice(&[0; 2]);
        assert_eq!(Open::decode(&zero_as), Err(OpenError::BadPeerAs(0)));
        assert_eq!(
            Open::decode(&with(10, 1)),
            Err(OpenError::UnsupportedOptionalParameter(1))
        );
        assert!(matches!(
            Open::decode(&with(9, 5)),
            Err(OpenError::MalformedParameters(_))
        ));
        assert!(matches!(
            Open::decode(&good[..5]),
            Err(OpenError::MalformedParameters(_))
        ));
    }
}
