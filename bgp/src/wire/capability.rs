//! Capabilities advertised in OPEN (RFC 5492 §4) and their values.
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! ~                              ~
//! +------------------------------+
//! ```

use crate::types::{Afi, AfiSafi, Asn, Safi};
use crate::wire::error::{EncodeError, OpenError};
use crate::wire::parse;
use bytes::{BufMut, Bytes, BytesMut};

/// Capability codes (IANA "Capability Codes").
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_ASN: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    Receive = 1,
    Send = 2,
    Both = 3,
}

impl AddPathMode {
    pub fn can_send(self) -> bool {
        matches!(self, AddPathMode::Send | AddPathMode::Both)
    }
    pub fn can_receive(self) -> bool {
        matches!(self, AddPathMode::Receive | AddPathMode::Both)
    }
    fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(AddPathMode::Receive),
            2 => Some(AddPathMode::Send),
            3 => Some(AddPathMode::Both),
            _ => None,
        }
    }
}

/// One family in the Graceful Restart capability (RFC 4724 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi_safi: AfiSafi,
    /// The F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol(AfiSafi),
    /// RFC 2918.
    RouteRefresh,
    /// RFC 7313.
    EnhancedRouteRefresh,
    /// RFC 6793.
    FourOctetAsn(Asn),
    /// RFC 4724 (the N bit from RFC 8538).
    GracefulRestart {
        restart_state: bool,
        notification: bool,
        restart_time: u16,
        families: Vec<GracefulRestartFamily>,
    },
    /// RFC 7911.
    AddPath(Vec<(AfiSafi, AddPathMode)>),
    /// RFC 8950: (NLRI family, next hop AFI).
    ExtendedNextHop(Vec<(AfiSafi, crate::types::Afi)>),
    /// RFC 8654.
    ExtendedMessage,
    /// Anything else, kept so it can be shown and logged.
    Unknown { code: u8, value: Bytes },
}

/// RFC 4724 §3: Restart State (R) and, from RFC 8538 §2, Graceful Notification (N).
const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
/// RFC 4724 §3: Forwarding State (F) in the per-family flags.
const GR_FORWARDING: u8 = 0x80;

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => cap_code::MULTIPROTOCOL,
            Capability::RouteRefresh => cap_code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => cap_code::ENHANCED_ROUTE_REFRESH,
            Capability::FourOctetAsn(_) => cap_code::FOUR_OCTET_ASN,
            Capability::GracefulRestart { .. } => cap_code::GRACEFUL_RESTART,
            Capability::AddPath(_) => cap_code::ADD_PATH,
            Capability::ExtendedNextHop(_) => cap_code::EXTENDED_NEXT_HOP,
            Capability::ExtendedMessage => cap_code::EXTENDED_MESSAGE,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Octets of the value.
    pub fn value_len(&self) -> usize {
        match self {
            Capability::Multiprotocol(_) | Capability::FourOctetAsn(_) => 4,
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => 0,
            Capability::GracefulRestart { families, .. } => 2 + 4 * families.len(),
            Capability::AddPath(v) => 4 * v.len(),
            Capability::ExtendedNextHop(v) => 6 * v.len(),
            Capability::Unknown { value, .. } => value.len(),
        }
    }

    /// Code, length and value.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let len =
            u8::try_from(self.value_len()).map_err(|_| EncodeError::Field("capability length"))?;
        out.put_u8(self.code());
        out.put_u8(len);
        match self {
            Capability::Multiprotocol(af) => {
                out.put_u16(af.afi.0);
                out.put_u8(0);
                out.put_u8(af.safi.0);
            }
            Capability::FourOctetAsn(asn) => out.put_u32(asn.0),
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families,
            } => {
                let mut word = restart_time & GR_TIME_MASK;
                if *restart_state {
                    word |= GR_RESTART_STATE;
                }
                if *notification {
                    word |= GR_NOTIFICATION;
                }
                out.put_u16(word);
                for fam in families {
                    out.put_u16(fam.afi_safi.afi.0);
                    out.put_u8(fam.afi_safi.safi.0);
                    out.put_u8(if fam.forwarding_preserved {
                        GR_FORWARDING
                    } else {
                        0
                    });
                }
            }
            Capability::AddPath(v) => {
                for (af, mode) in v {
                    out.put_u16(af.afi.0);
                    out.put_u8(af.safi.0);
                    out.put_u8(*mode as u8);
                }
            }
            Capability::ExtendedNextHop(v) => {
                for (af, nh_afi) in v {
                    out.put_u16(af.afi.0);
                    out.put_u16(u16::from(af.safi.0));
                    out.put_u16(nh_afi.0);
                }
            }
            Capability::Unknown { value, .. } => out.put_slice(value),
        }
        Ok(())
    }

    /// Decode one capability from its code and value. A known capability whose value does
    /// not have the size its RFC gives is an error: it cannot be negotiated safely.
    pub fn decode(code: u8, value: &[u8]) -> Result<Capability, OpenError> {
        let bad = |reason| OpenError::MalformedCapability { code, reason };
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                if value.len() != 4 {
                    return Err(bad("length is not 4"));
                }
                Capability::Multiprotocol(AfiSafi::new(
                    u16::from_be_bytes([value[0], value[1]]),
                    value[3],
                ))
            }
            cap_code::ROUTE_REFRESH
            | cap_code::ENHANCED_ROUTE_REFRESH
            | cap_code::EXTENDED_MESSAGE => {
                if !value.is_empty() {
                    return Err(bad("length is not 0"));
                }
                match code {
                    cap_code::ROUTE_REFRESH => Capability::RouteRefresh,
                    cap_code::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
                    _ => Capability::ExtendedMessage,
                }
            }
            cap_code::FOUR_OCTET_ASN => {
                let (rest, asn) = parse::u32(value).map_err(|_| bad("length is not 4"))?;
                if !rest.is_empty() {
                    return Err(bad("length is not 4"));
                }
                Capability::FourOctetAsn(Asn(asn))
            }
            cap_code::GRACEFUL_RESTART => {
                let (mut rest, word) = parse::u16(value).map_err(|_| bad("shorter than 2"))?;
                if rest.len() % 4 != 0 {
                    return Err(bad("family list is not a multiple of 4"));
                }
                let mut families = Vec::with_capacity(rest.len() / 4);
                while let [a0, a1, safi, flags, tail @ ..] = rest {
                    families.push(GracefulRestartFamily {
                        afi_safi: AfiSafi::new(u16::from_be_bytes([*a0, *a1]), *safi),
                        forwarding_preserved: flags & GR_FORWARDING != 0,
                    });
                    rest = tail;
                }
                Capability::GracefulRestart {
                    restart_state: word & GR_RESTART_STATE != 0,
                    notification: word & GR_NOTIFICATION != 0,
                    restart_time: word & GR_TIME_MASK,
                    families,
                }
            }
            cap_code::ADD_PATH => {
                if value.is_empty() || value.len() % 4 != 0 {
                    return Err(bad("length is not a multiple of 4"));
                }
                let mut v = Vec::with_capacity(value.len() / 4);
                for chunk in value.chunks_exact(4) {
                    let mode = AddPathMode::from_wire(chunk[3])
                        .ok_or(bad("send/receive is not 1, 2 or 3"))?;
                    v.push((
                        AfiSafi::new(u16::from_be_bytes([chunk[0], chunk[1]]), chunk[2]),
                        mode,
                    ));
                }
                Capability::AddPath(v)
            }
            cap_code::EXTENDED_NEXT_HOP => {
                if value.is_empty() || value.len() % 6 != 0 {
                    return Err(bad("length is not a multiple of 6"));
                }
                let mut v = Vec::with_capacity(value.len() / 6);
                for chunk in value.chunks_exact(6) {
                    let safi = u16::from_be_bytes([chunk[2], chunk[3]]);
                    // RFC 8950 carries a 2-octet SAFI; the ones above 255 name no family
                    // this speaker knows, so they are left out.
                    let Ok(safi) = u8::try_from(safi) else {
                        continue;
                    };
                    let af = AfiSafi {
                        afi: Afi(u16::from_be_bytes([chunk[0], chunk[1]])),
                        safi: Safi(safi),
                    };
                    v.push((af, Afi(u16::from_be_bytes([chunk[4], chunk[5]]))));
                }
                if v.is_empty() {
                    // Nothing this speaker can use: kept as it came, so that it encodes
                    // again as it was (an empty list would not be a valid capability).
                    Capability::Unknown {
                        code,
                        value: Bytes::copy_from_slice(value),
                    }
                } else {
                    Capability::ExtendedNextHop(v)
                }
            }
            _ => Capability::Unknown {
                code,
                value: Bytes::copy_from_slice(value),
            },
        };
        Ok(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cap: Capability, bytes: &[u8]) {
        let mut out = BytesMut::new();
        cap.encode(&mut out).unwrap();
        assert_eq!(&out[..], bytes, "{cap:?}");
        assert_eq!(Capability::decode(bytes[0], &bytes[2..]).unwrap(), cap);
    }

    #[test]
    fn known_bytes() {
        round_trip(
            Capability::Multiprotocol(AfiSafi::new(2, 1)),
            &[1, 4, 0, 2, 0, 1],
        );
        round_trip(Capability::RouteRefresh, &[2, 0]);
        round_trip(Capability::EnhancedRouteRefresh, &[70, 0]);
        round_trip(Capability::ExtendedMessage, &[6, 0]);
        round_trip(
            Capability::FourOctetAsn(Asn(4_200_000_000)),
            &[65, 4, 0xfa, 0x56, 0xea, 0],
        );
        round_trip(
            Capability::GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: AfiSafi::new(1, 1),
                    forwarding_preserved: true,
                }],
            },
            &[64, 6, 0xc0, 120, 0, 1, 1, 0x80],
        );
        round_trip(
            Capability::AddPath(vec![
                (AfiSafi::new(1, 1), AddPathMode::Both),
                (AfiSafi::new(2, 1), AddPathMode::Receive),
            ]),
            &[69, 8, 0, 1, 1, 3, 0, 2, 1, 1],
        );
        round_trip(
            Capability::ExtendedNextHop(vec![(AfiSafi::new(1, 1), Afi(2))]),
            &[5, 6, 0, 1, 0, 1, 0, 2],
        );
        // RFC 8950 tuples with a 2-octet SAFI above 255: the usable ones are kept; when
        // none is, the capability stays as it came and encodes the same again.
        assert_eq!(
            Capability::decode(5, &[0, 1, 0, 1, 0, 2, 0, 2, 0x77, 0, 0, 1]).unwrap(),
            Capability::ExtendedNextHop(vec![(AfiSafi::new(1, 1), Afi(2))])
        );
        round_trip(
            Capability::Unknown {
                code: 5,
                value: Bytes::from_static(&[0, 2, 0x77, 0, 0x28, 0]),
            },
            &[5, 6, 0, 2, 0x77, 0, 0x28, 0],
        );
        round_trip(
            Capability::Unknown {
                code: 73,
                value: Bytes::from_static(b"\x04host"),
            },
            &[73, 5, 4, b'h', b'o', b's', b't'],
        );
    }

    #[test]
    fn malformed_known_capabilities_are_errors() {
        for (code, value) in [
            (1u8, &[0u8, 1, 0][..]),
            (2, &[0]),
            (65, &[0, 0, 1]),
            (64, &[0]),
            (64, &[0, 0, 1]),
            (69, &[0, 1, 1, 4]),
            (69, &[]),
            (5, &[0, 1, 0, 1, 0]),
        ] {
            assert!(
                matches!(
                    Capability::decode(code, value),
                    Err(OpenError::MalformedCapability { .. })
                ),
                "{code} {value:?}"
            );
        }
    }
}
