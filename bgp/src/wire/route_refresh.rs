//! ROUTE-REFRESH message (RFC 2918 §3) with the message subtypes of RFC 7313 §3.

use crate::types::AfiSafi;
use crate::wire::error::RouteRefreshError;
use bytes::{BufMut, Bytes, BytesMut};

/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |              AFI              |  Subtype      |     SAFI      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi_safi: AfiSafi,
    pub subtype: RefreshSubtype,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshSubtype {
    /// A plain request (RFC 2918).
    Request,
    /// Beginning of Route Refresh (RFC 7313).
    Begin,
    /// End of Route Refresh (RFC 7313).
    End,
}

impl RefreshSubtype {
    pub fn to_wire(self) -> u8 {
        match self {
            RefreshSubtype::Request => 0,
            RefreshSubtype::Begin => 1,
            RefreshSubtype::End => 2,
        }
    }

    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            0 => Some(RefreshSubtype::Request),
            1 => Some(RefreshSubtype::Begin),
            2 => Some(RefreshSubtype::End),
            _ => None,
        }
    }
}

impl RouteRefresh {
    pub fn request(afi_safi: AfiSafi) -> Self {
        RouteRefresh {
            afi_safi,
            subtype: RefreshSubtype::Request,
        }
    }

    /// Decode from the whole message (`frame`, header included, for the error's data).
    /// `Ok(None)`: a subtype RFC 7313 §5 says to ignore.
    pub fn decode(frame: &[u8], body: &[u8]) -> Result<Option<RouteRefresh>, RouteRefreshError> {
        // The header already guaranteed at least four octets of body.
        let Some(&subtype) = body.get(2) else {
            return Err(RouteRefreshError::InvalidLength {
                message: Bytes::copy_from_slice(frame),
            });
        };
        let Some(subtype) = RefreshSubtype::from_wire(subtype) else {
            return Ok(None);
        };
        // RFC 7313 §5: the body is exactly AFI, subtype, SAFI.
        if body.len() != 4 {
            return Err(RouteRefreshError::InvalidLength {
                message: Bytes::copy_from_slice(frame),
            });
        }
        Ok(Some(RouteRefresh {
            afi_safi: AfiSafi::new(u16::from_be_bytes([body[0], body[1]]), body[3]),
            subtype,
        }))
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.afi_safi.afi.0);
        out.put_u8(self.subtype.to_wire());
        out.put_u8(self.afi_safi.safi.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_subtype() {
        for (st, wire) in [
            (RefreshSubtype::Request, 0),
            (RefreshSubtype::Begin, 1),
            (RefreshSubtype::End, 2),
        ] {
            let rr = RouteRefresh {
                afi_safi: AfiSafi::new(2, 1),
                subtype: st,
            };
            let mut out = BytesMut::new();
            rr.encode(&mut out);
            assert_eq!(&out[..], &[0, 2, wire, 1]);
            assert_eq!(RouteRefresh::decode(&out, &out), Ok(Some(rr)));
        }
    }

    #[test]
    fn unknown_subtype_is_ignored_and_bad_length_is_an_error() {
        assert_eq!(RouteRefresh::decode(&[], &[0, 1, 9, 1]), Ok(None));
        assert_eq!(RouteRefresh::decode(&[], &[0, 1, 9, 1, 0]), Ok(None));
        let frame = [1u8, 2, 3];
        assert_eq!(
            RouteRefresh::decode(&frame, &[0, 1, 1, 1, 0]),
            Err(RouteRefreshError::InvalidLength {
                message: Bytes::copy_from_slice(&frame)
            })
        );
    }
}
