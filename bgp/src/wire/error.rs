//! Everything that can go wrong reading or writing a message, and what each error means on
//! the wire: one enum per message kind wrapped into [`DecodeError`], the RFC 7606 handling
//! of path attribute errors in [`AttrError`] / [`handling`], and [`DecodeError::notification`],
//! the one place an error becomes its NOTIFICATION (code, subcode, data).

use crate::types::AfiSafi;
use crate::wire::attr::{attr_name, code};
use crate::wire::consts::{
    error_code, header_subcode, open_subcode, route_refresh_subcode, update_subcode, BGP_VERSION,
};
use crate::wire::nlri::NlriError;
use crate::wire::notification::Notification;
use bytes::Bytes;
use std::fmt;
use std::net::Ipv4Addr;

/// A received message that the session must answer with a NOTIFICATION and close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: {0}")]
    Header(#[from] HeaderError),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    #[error("ROUTE-REFRESH: {0}")]
    RouteRefresh(#[from] RouteRefreshError),
}

/// RFC 4271 §6.1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("marker is not all ones")]
    NotSynchronized,
    #[error("bad length {len} for message type {msg_type}")]
    BadLength { len: u16, msg_type: u8 },
    #[error("bad message type {0}")]
    BadType(u8),
}

/// RFC 4271 §6.2, RFC 5492, RFC 9072.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// RFC 7607: AS 0 is never a peer's AS.
    #[error("bad peer AS {0}")]
    BadPeerAs(u32),
    /// RFC 6286 §2.2: the identifier is a non-zero 32-bit number.
    #[error("bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    /// RFC 4271 §6.2: one or two seconds.
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    #[error("unsupported optional parameter type {0}")]
    UnsupportedOptionalParameter(u8),
    #[error("malformed optional parameters: {0}")]
    MalformedParameters(&'static str),
    #[error("malformed capability {code}: {reason}")]
    MalformedCapability { code: u8, reason: &'static str },
}

/// UPDATE errors that reset the session (RFC 4271 §6.3 as revised by RFC 7606).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// RFC 7606 §4: the Withdrawn Routes Length overruns the message.
    #[error("withdrawn routes length {0} overruns the message")]
    WithdrawnLength(u16),
    /// RFC 7606 §4: the Total Path Attribute Length overruns the message.
    #[error("total path attribute length {0} overruns the message")]
    AttributesLength(u16),
    /// RFC 7606 §5.3.
    #[error("withdrawn routes field: {0}")]
    Withdrawn(NlriError),
    /// RFC 7606 §5.3.
    #[error("NLRI field: {0}")]
    Nlri(NlriError),
    #[error("{0}")]
    Attr(AttrError),
}

/// RFC 7313 §5.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefreshError {
    /// Data: the complete message as received.
    #[error("invalid message length {}", message.len())]
    InvalidLength { message: Bytes },
}

/// The approaches of RFC 7606 §2, weakest first: §3 (f) applies the strongest one found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrAction {
    /// Drop the attribute, keep the routes.
    Discard,
    /// Withdraw the UPDATE's routes (treat-as-withdraw).
    Withdraw,
    /// Send a NOTIFICATION and close the session.
    Reset,
}

impl fmt::Display for AttrAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrAction::Discard => "attribute discarded",
            AttrAction::Withdraw => "treat-as-withdraw",
            AttrAction::Reset => "session reset",
        })
    }
}

/// What was wrong with a path attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttrFault {
    #[error("flags conflict with the type")]
    Flags,
    #[error("bad length")]
    Length,
    #[error("undefined ORIGIN {0}")]
    Origin(u8),
    #[error("malformed AS_PATH: {0}")]
    AsPath(&'static str),
    #[error("invalid next hop")]
    NextHop,
    #[error("invalid value: {0}")]
    Value(&'static str),
    #[error("next hop length {0} does not fit the family")]
    MpNextHopLength(u8),
    #[error("NLRI: {0}")]
    MpNlri(NlriError),
    #[error("runs past the path attributes")]
    Overrun,
    #[error("appears more than once")]
    Duplicate,
    #[error("unrecognized well-known attribute")]
    UnrecognizedWellKnown,
    #[error("missing well-known attribute")]
    Missing,
    #[error("not accepted from an external peer")]
    FromExternal,
    #[error("family {0} not negotiated")]
    UnsupportedFamily(AfiSafi),
    #[error("ignored: {0}")]
    Ignored(&'static str),
}

/// One path attribute error and the handling RFC 7606 prescribes for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError {
    pub action: AttrAction,
    /// The attribute type code.
    pub code: u8,
    pub fault: AttrFault,
    /// The attribute as received, type/length/value form (RFC 4271 §6.3 NOTIFICATION data);
    /// empty where the RFC gives no data.
    pub attr: Bytes,
}

impl std::error::Error for AttrError {}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}): {}",
            self.action,
            attr_name(self.code),
            self.code,
            self.fault
        )
    }
}

impl AttrError {
    /// The error with the handling RFC 7606 gives it on this session.
    pub fn new(code: u8, fault: AttrFault, attr: &[u8]) -> Self {
        AttrError {
            action: handling(code, fault),
            code,
            fault,
            attr: Bytes::copy_from_slice(attr),
        }
    }
}

/// RFC 7606 in one place: the approach for `fault` in attribute `code`.
pub fn handling(attr_code: u8, fault: AttrFault) -> AttrAction {
    use AttrAction::*;
    match fault {
        // §3 (g): MP_REACH/MP_UNREACH more than once is a Malformed Attribute List;
        // any other attribute keeps its first occurrence.
        AttrFault::Duplicate
            if matches!(attr_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI) =>
        {
            Reset
        }
        AttrFault::Duplicate => Discard,
        // RFC 4271 §6.3, unchanged by RFC 7606.
        AttrFault::UnrecognizedWellKnown => Reset,
        // §3 (d).
        AttrFault::Missing => Withdraw,
        // §4: the Total Attribute Length still locates the NLRI; an MP attribute that
        // overruns cannot be parsed, so its NLRI cannot be withdrawn (§5.2).
        AttrFault::Overrun if matches!(attr_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI) => {
            Reset
        }
        AttrFault::Overrun => Withdraw,
        // §7.5, §7.9, §7.10.
        AttrFault::FromExternal => Discard,
        // RFC 4760 §7 lets a speaker ignore a family; this one was not negotiated.
        AttrFault::UnsupportedFamily(_) => Discard,
        AttrFault::Ignored(_) => Discard,
        // §7.11, §5.3: without a sound next hop length or NLRI field the NLRI cannot be
        // located, so the session is reset.
        AttrFault::MpNextHopLength(_) | AttrFault::MpNlri(_) => Reset,
        AttrFault::Flags
        | AttrFault::Length
        | AttrFault::Origin(_)
        | AttrFault::AsPath(_)
        | AttrFault::NextHop
        | AttrFault::Value(_) => match attr_code {
            // §7.1–§7.5, §7.8–§7.10, §7.14; RFC 8092 §6.
            code::ORIGIN
            | code::AS_PATH
            | code::NEXT_HOP
            | code::MULTI_EXIT_DISC
            | code::LOCAL_PREF
            | code::COMMUNITIES
            | code::ORIGINATOR_ID
            | code::CLUSTER_LIST
            | code::EXTENDED_COMMUNITIES
            | code::LARGE_COMMUNITIES => Withdraw,
            // §7.6, §7.7; RFC 6793 §6.
            code::ATOMIC_AGGREGATE | code::AGGREGATOR | code::AS4_PATH | code::AS4_AGGREGATOR => {
                Discard
            }
            // §7.11 (a sound MP attribute with a bad next hop or flags): the NLRI were
            // found, so they are withdrawn.
            code::MP_REACH_NLRI | code::MP_UNREACH_NLRI => match fault {
                AttrFault::Length => Reset,
                _ => Withdraw,
            },
            _ => Withdraw,
        },
    }
}

/// UPDATE Message Error subcode and data of an attribute error (RFC 4271 §6.3, RFC 4760 §7).
fn attr_subcode_data(e: &AttrError) -> (u8, Bytes) {
    use update_subcode::*;
    let with_attr = |sub| (sub, e.attr.clone());
    match e.fault {
        AttrFault::Flags => with_attr(ATTRIBUTE_FLAGS),
        AttrFault::Length => with_attr(ATTRIBUTE_LENGTH),
        AttrFault::Origin(_) => with_attr(INVALID_ORIGIN),
        AttrFault::AsPath(_) => (MALFORMED_AS_PATH, Bytes::new()),
        AttrFault::NextHop if e.code == code::NEXT_HOP => with_attr(INVALID_NEXT_HOP),
        AttrFault::NextHop
        | AttrFault::Value(_)
        | AttrFault::MpNextHopLength(_)
        | AttrFault::MpNlri(_) => with_attr(OPTIONAL_ATTRIBUTE),
        AttrFault::UnrecognizedWellKnown => with_attr(UNRECOGNIZED_WELL_KNOWN),
        AttrFault::Missing => (MISSING_WELL_KNOWN, Bytes::copy_from_slice(&[e.code])),
        AttrFault::Overrun | AttrFault::Duplicate => (MALFORMED_ATTRIBUTE_LIST, Bytes::new()),
        AttrFault::FromExternal | AttrFault::UnsupportedFamily(_) | AttrFault::Ignored(_) => {
            with_attr(OPTIONAL_ATTRIBUTE)
        }
    }
}

impl AttrError {
    /// The NOTIFICATION this error would send were it a session reset; for logging a
    /// treat-as-withdraw or discard in the same words as a peer would see.
    pub fn notification(&self) -> Notification {
        let (subcode, data) = attr_subcode_data(self);
        Notification {
            code: error_code::UPDATE_MESSAGE,
            subcode,
            data,
        }
    }
}

impl DecodeError {
    /// The NOTIFICATION to send for this error: (code, subcode, data) per RFC 4271 §6,
    /// RFC 5492, RFC 7313, RFC 7606.
    pub fn notification(&self) -> Notification {
        let n = |code, subcode, data: Bytes| Notification {
            code,
            subcode,
            data,
        };
        match self {
            DecodeError::Header(e) => match e {
                HeaderError::NotSynchronized => n(
                    error_code::MESSAGE_HEADER,
                    header_subcode::CONNECTION_NOT_SYNCHRONIZED,
                    Bytes::new(),
                ),
                HeaderError::BadLength { len, .. } => n(
                    error_code::MESSAGE_HEADER,
                    header_subcode::BAD_MESSAGE_LENGTH,
                    Bytes::copy_from_slice(&len.to_be_bytes()),
                ),
                HeaderError::BadType(t) => n(
                    error_code::MESSAGE_HEADER,
                    header_subcode::BAD_MESSAGE_TYPE,
                    Bytes::copy_from_slice(&[*t]),
                ),
            },
            DecodeError::Open(e) => {
                let (subcode, data) = match e {
                    OpenError::UnsupportedVersion(_) => (
                        open_subcode::UNSUPPORTED_VERSION,
                        Bytes::copy_from_slice(&u16::from(BGP_VERSION).to_be_bytes()),
                    ),
                    OpenError::BadPeerAs(_) => (open_subcode::BAD_PEER_AS, Bytes::new()),
                    OpenError::BadBgpIdentifier(_) => {
                        (open_subcode::BAD_BGP_IDENTIFIER, Bytes::new())
                    }
                    OpenError::UnacceptableHoldTime(_) => {
                        (open_subcode::UNACCEPTABLE_HOLD_TIME, Bytes::new())
                    }
                    OpenError::UnsupportedOptionalParameter(_) => {
                        (open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER, Bytes::new())
                    }
                    OpenError::MalformedParameters(_) | OpenError::MalformedCapability { .. } => {
                        (open_subcode::UNSPECIFIC, Bytes::new())
                    }
                };
                n(error_code::OPEN_MESSAGE, subcode, data)
            }
            DecodeError::Update(e) => match e {
                UpdateError::WithdrawnLength(_) | UpdateError::AttributesLength(_) => n(
                    error_code::UPDATE_MESSAGE,
                    update_subcode::MALFORMED_ATTRIBUTE_LIST,
                    Bytes::new(),
                ),
                UpdateError::Withdrawn(_) | UpdateError::Nlri(_) => n(
                    error_code::UPDATE_MESSAGE,
                    update_subcode::INVALID_NETWORK_FIELD,
                    Bytes::new(),
                ),
                UpdateError::Attr(a) => a.notification(),
            },
            DecodeError::RouteRefresh(RouteRefreshError::InvalidLength { message }) => n(
                error_code::ROUTE_REFRESH_MESSAGE,
                route_refresh_subcode::INVALID_MESSAGE_LENGTH,
                message.clone(),
            ),
        }
    }
}

/// A message that cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} octets exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("{0} does not fit its field")]
    Field(&'static str),
    #[error("family {0} cannot be carried here")]
    Family(AfiSafi),
}
