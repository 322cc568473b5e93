//! The BGP wire format: message framing, each message kind, path attributes and the errors
//! their decoding can raise.
//!
//! Receiving: [`frame`] says whether a receive buffer holds a whole message and how long it
//! is; [`decode_message`] decodes that frame. An `Err` is a session reset: send
//! [`DecodeError::notification`] and close. An `Ok` may carry RFC 7606 errors that were
//! handled by treat-as-withdraw or attribute discard: log them and apply the message.
//!
//! Sending: [`encode_message`] writes one message; [`pack`] writes the UPDATEs for many
//! routes that share their attributes, each as full as the session allows.

pub mod as_path;
pub mod attr;
pub mod capability;
pub mod consts;
pub mod error;
pub mod header;
pub mod mp;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod pack;
mod parse;
pub mod route_refresh;
pub mod update;

pub use attr::PathAttrs;
pub use error::{AttrAction, AttrError, AttrFault, DecodeError, EncodeError};
pub use header::{frame, Frame};
pub use notification::Notification;
pub use open::{Capability, Open};
pub use pack::{pack_announce, pack_withdraw};
pub use route_refresh::RouteRefresh;
pub use update::{DecodedUpdate, Nlri, Update};

use crate::types::Family;
use bytes::BytesMut;
use consts::{msg_type, HEADER_LEN};
use error::HeaderError;

/// UPDATEs are most of the traffic and carry their attributes inline; boxing them would
/// put an allocation on the common path to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }
}

/// What the two speakers negotiated that changes how messages are read and written.
/// Computed from the two OPENs once a session reaches OpenConfirm; before that (for the
/// OPEN itself) the default applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecParams {
    /// RFC 6793: AS numbers on the wire are 4 octets.
    pub four_octet_asn: bool,
    /// RFC 7911, per `Family::index()`: NLRI we receive carry a path identifier.
    pub add_path_rx: [bool; 2],
    /// RFC 7911, per `Family::index()`: NLRI we send carry a path identifier.
    pub add_path_tx: [bool; 2],
    /// RFC 8654: messages other than OPEN and KEEPALIVE may be up to 65535 octets.
    pub extended_message: bool,
    /// Families negotiated, per `Family::index()`.
    pub families: [bool; 2],
    /// RFC 8950 negotiated for IPv4 unicast: IPv4 routes may carry IPv6 next hops.
    pub ipv4_extended_next_hop: bool,
    /// The session is external: RFC 7606 §7.5/§7.9/§7.10 discard LOCAL_PREF,
    /// ORIGINATOR_ID and CLUSTER_LIST received from it.
    pub ebgp: bool,
}

impl Default for CodecParams {
    fn default() -> Self {
        CodecParams {
            four_octet_asn: false,
            add_path_rx: [false; 2],
            add_path_tx: [false; 2],
            extended_message: false,
            families: [true, false],
            ipv4_extended_next_hop: false,
            ebgp: false,
        }
    }
}

impl CodecParams {
    /// The parameters two OPENs negotiate: a capability counts when both sides sent it
    /// (RFC 5492 §3); add-path per direction (RFC 7911 §5); families announced by both.
    pub fn negotiate(local: &Open, remote: &Open, ebgp: bool) -> CodecParams {
        let both = |c| local.has(c) && remote.has(c);
        let mut p = CodecParams {
            four_octet_asn: local.four_octet_asn() && remote.four_octet_asn(),
            extended_message: both(open::cap_code::EXTENDED_MESSAGE),
            ipv4_extended_next_hop: local.extended_next_hop_ipv4()
                && remote.extended_next_hop_ipv4(),
            ebgp,
            families: [false; 2],
            ..CodecParams::default()
        };
        for fam in Family::ALL {
            let i = fam.index();
            p.families[i] = local.families().any(|a| a == fam.afi_safi())
                && remote.families().any(|a| a == fam.afi_safi());
            let (l, r) = (local.add_path(fam), remote.add_path(fam));
            p.add_path_rx[i] =
                l.is_some_and(|m| m.can_receive()) && r.is_some_and(|m| m.can_send());
            p.add_path_tx[i] =
                l.is_some_and(|m| m.can_send()) && r.is_some_and(|m| m.can_receive());
        }
        p
    }

    /// The largest message of a type this session may carry.
    pub fn max_len(&self, msg_type: u8) -> usize {
        header::max_len(msg_type, self)
    }
}

/// A decoded message and the RFC 7606 errors that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// `None` when the message is to be ignored: a ROUTE-REFRESH of unknown subtype
    /// (RFC 7313 §5), or an UPDATE whose treat-as-withdraw left nothing to withdraw.
    pub message: Option<Message>,
    /// Treat-as-withdraw and attribute-discard errors, to be logged.
    pub attr_errors: Vec<AttrError>,
}

/// Decode one whole message, header included, as [`frame`] delimited it.
pub fn decode_message(frame: &[u8], params: &CodecParams) -> Result<Decoded, DecodeError> {
    let len = match header::frame(frame, params)? {
        Frame::Complete { len, .. } => len,
        Frame::Incomplete { .. } => {
            return Err(HeaderError::BadLength {
                len: frame.len() as u16,
                msg_type: *frame.get(18).unwrap_or(&0),
            }
            .into())
        }
    };
    // Octets beyond the header's length belong to the next message; a caller that passes
    // more than one frame is a bug, but reading only this message is what it asked for.
    let frame = &frame[..len];
    let t = frame[18];
    let body = &frame[HEADER_LEN..];
    let plain = |m| {
        Ok(Decoded {
            message: Some(m),
            attr_errors: Vec::new(),
        })
    };
    match t {
        msg_type::OPEN => plain(Message::Open(Open::decode(body)?)),
        msg_type::UPDATE => {
            let d = Update::decode(body, params)?;
            Ok(Decoded {
                message: d.update.map(Message::Update),
                attr_errors: d.errors,
            })
        }
        msg_type::NOTIFICATION => match Notification::decode(body) {
            Some(n) => plain(Message::Notification(n)),
            None => Err(HeaderError::BadLength {
                len: len as u16,
                msg_type: t,
            }
            .into()),
        },
        msg_type::KEEPALIVE => plain(Message::Keepalive),
        msg_type::ROUTE_REFRESH => match RouteRefresh::decode(frame, body)? {
            Some(rr) => plain(Message::RouteRefresh(rr)),
            None => Ok(Decoded {
                message: None,
                attr_errors: Vec::new(),
            }),
        },
        _ => Err(HeaderError::BadType(t).into()),
    }
}

/// Append one message to `out`. On error `out` is left as it was.
pub fn encode_message(
    msg: &Message,
    params: &CodecParams,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let at = header::start(out, msg.msg_type());
    let result = match msg {
        Message::Open(o) => o.encode(out),
        Message::Update(u) => u.encode(params, out),
        Message::Notification(n) => {
            n.encode(out);
            Ok(())
        }
        Message::Keepalive => Ok(()),
        Message::RouteRefresh(rr) => {
            rr.encode(out);
            Ok(())
        }
    };
    let len = out.len() - at;
    let max = params.max_len(msg.msg_type());
    let result = result.and(if len > max {
        Err(EncodeError::TooLong { len, max })
    } else {
        Ok(())
    });
    match result {
        Ok(()) => {
            header::finish(out, at);
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AfiSafi, Asn, RouterId};
    use open::AddPathMode;

    #[test]
    fn negotiation_takes_what_both_sent() {
        let local = Open::new(
            Asn(65001),
            90,
            RouterId("10.0.0.1".parse().unwrap()),
            vec![
                Capability::Multiprotocol(AfiSafi::new(1, 1)),
                Capability::Multiprotocol(AfiSafi::new(2, 1)),
                Capability::FourOctetAsn(Asn(65001)),
                Capability::AddPath(vec![(AfiSafi::new(1, 1), AddPathMode::Both)]),
                Capability::ExtendedMessage,
            ],
        );
        let remote = Open::new(
            Asn(65002),
            90,
            RouterId("10.0.0.2".parse().unwrap()),
            vec![
                Capability::Multiprotocol(AfiSafi::new(1, 1)),
                Capability::FourOctetAsn(Asn(65002)),
                Capability::AddPath(vec![(AfiSafi::new(1, 1), AddPathMode::Send)]),
            ],
        );
        let p = CodecParams::negotiate(&local, &remote, true);
        assert!(p.four_octet_asn);
        assert!(!p.extended_message);
        assert_eq!(p.families, [true, false]);
        assert_eq!(p.add_path_rx, [true, false]);
        assert_eq!(p.add_path_tx, [false, false]);
        assert!(p.ebgp);
    }

    #[test]
    fn encode_keepalive_and_decode_it() {
        let p = CodecParams::default();
        let mut out = BytesMut::new();
        encode_message(&Message::Keepalive, &p, &mut out).unwrap();
        assert_eq!(out.len(), 19);
        assert_eq!(
            decode_message(&out, &p).unwrap().message,
            Some(Message::Keepalive)
        );
    }

    #[test]
    fn too_long_leaves_the_buffer_as_it_was() {
        let p = CodecParams::default();
        let mut out = BytesMut::from(&b"abc"[..]);
        let n = Notification::new(6, 2, vec![0u8; 5000]);
        assert!(matches!(
            encode_message(&Message::Notification(n), &p, &mut out),
            Err(EncodeError::TooLong { .. })
        ));
        assert_eq!(&out[..], b"abc");
    }
}
