//! NOTIFICATION message (RFC 4271 §4.5, §6) with the FSM error subcodes of RFC 6608, the
//! Cease subcodes of RFC 4486 and RFC 8538, the ROUTE-REFRESH error of RFC 7313 and the
//! shutdown communication of RFC 8203 / RFC 9003.

use crate::types::AfiSafi;
use crate::wire::consts::{
    cease_subcode, error_code, error_code_name, error_subcode_name, fsm_subcode, header_subcode,
    open_subcode, route_refresh_subcode, update_subcode, HEADER_LEN,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Error code    | Error subcode |   Data (variable)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

/// RFC 8203 §2 / RFC 9003 §2: the longest shutdown communication.
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

/// Cease subcodes (RFC 4486 §4, RFC 8538 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CeaseSubcode {
    MaxPrefixes,
    AdminShutdown,
    PeerDeconfigured,
    AdminReset,
    ConnectionRejected,
    OtherConfigChange,
    ConnectionCollision,
    OutOfResources,
    HardReset,
}

impl CeaseSubcode {
    pub fn code(self) -> u8 {
        use cease_subcode::*;
        match self {
            CeaseSubcode::MaxPrefixes => MAX_PREFIXES,
            CeaseSubcode::AdminShutdown => ADMIN_SHUTDOWN,
            CeaseSubcode::PeerDeconfigured => PEER_DECONFIGURED,
            CeaseSubcode::AdminReset => ADMIN_RESET,
            CeaseSubcode::ConnectionRejected => CONNECTION_REJECTED,
            CeaseSubcode::OtherConfigChange => OTHER_CONFIG_CHANGE,
            CeaseSubcode::ConnectionCollision => CONNECTION_COLLISION,
            CeaseSubcode::OutOfResources => OUT_OF_RESOURCES,
            CeaseSubcode::HardReset => HARD_RESET,
        }
    }

    pub fn from_code(subcode: u8) -> Option<Self> {
        use cease_subcode::*;
        Some(match subcode {
            MAX_PREFIXES => CeaseSubcode::MaxPrefixes,
            ADMIN_SHUTDOWN => CeaseSubcode::AdminShutdown,
            PEER_DECONFIGURED => CeaseSubcode::PeerDeconfigured,
            ADMIN_RESET => CeaseSubcode::AdminReset,
            CONNECTION_REJECTED => CeaseSubcode::ConnectionRejected,
            OTHER_CONFIG_CHANGE => CeaseSubcode::OtherConfigChange,
            CONNECTION_COLLISION => CeaseSubcode::ConnectionCollision,
            OUT_OF_RESOURCES => CeaseSubcode::OutOfResources,
            HARD_RESET => CeaseSubcode::HardReset,
            _ => return None,
        })
    }
}

/// The states an unexpected message can arrive in (RFC 6608 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsmSubcode {
    Unspecified,
    UnexpectedInOpenSent,
    UnexpectedInOpenConfirm,
    UnexpectedInEstablished,
}

impl FsmSubcode {
    pub fn code(self) -> u8 {
        match self {
            FsmSubcode::Unspecified => fsm_subcode::UNSPECIFIED,
            FsmSubcode::UnexpectedInOpenSent => fsm_subcode::UNEXPECTED_IN_OPENSENT,
            FsmSubcode::UnexpectedInOpenConfirm => fsm_subcode::UNEXPECTED_IN_OPENCONFIRM,
            FsmSubcode::UnexpectedInEstablished => fsm_subcode::UNEXPECTED_IN_ESTABLISHED,
        }
    }
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Bytes>) -> Self {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    // --- Message Header Error (RFC 4271 §6.1) ---

    pub fn connection_not_synchronized() -> Self {
        Self::new(
            error_code::MESSAGE_HEADER,
            header_subcode::CONNECTION_NOT_SYNCHRONIZED,
            Bytes::new(),
        )
    }

    /// Data: the erroneous Length field.
    pub fn bad_message_length(len: u16) -> Self {
        Self::new(
            error_code::MESSAGE_HEADER,
            header_subcode::BAD_MESSAGE_LENGTH,
            len.to_be_bytes().to_vec(),
        )
    }

    /// Data: the erroneous Type field.
    pub fn bad_message_type(msg_type: u8) -> Self {
        Self::new(
            error_code::MESSAGE_HEADER,
            header_subcode::BAD_MESSAGE_TYPE,
            vec![msg_type],
        )
    }

    // --- OPEN Message Error (RFC 4271 §6.2, RFC 5492 §5) ---

    pub fn open_error(subcode: u8, data: impl Into<Bytes>) -> Self {
        Self::new(error_code::OPEN_MESSAGE, subcode, data)
    }

    /// Data: the largest version we support, two octets.
    pub fn unsupported_version(supported: u8) -> Self {
        Self::open_error(
            open_subcode::UNSUPPORTED_VERSION,
            u16::from(supported).to_be_bytes().to_vec(),
        )
    }

    pub fn bad_peer_as() -> Self {
        Self::open_error(open_subcode::BAD_PEER_AS, Bytes::new())
    }

    pub fn bad_bgp_identifier() -> Self {
        Self::open_error(open_subcode::BAD_BGP_IDENTIFIER, Bytes::new())
    }

    pub fn unsupported_optional_parameter() -> Self {
        Self::open_error(open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER, Bytes::new())
    }

    pub fn unacceptable_hold_time() -> Self {
        Self::open_error(open_subcode::UNACCEPTABLE_HOLD_TIME, Bytes::new())
    }

    /// RFC 5492 §5. Data: the capabilities (code, length, value) we require and the peer
    /// did not advertise.
    pub fn unsupported_capability(capabilities: impl Into<Bytes>) -> Self {
        Self::open_error(open_subcode::UNSUPPORTED_CAPABILITY, capabilities)
    }

    /// RFC 9234 §4.2.
    pub fn role_mismatch() -> Self {
        Self::open_error(open_subcode::ROLE_MISMATCH, Bytes::new())
    }

    // --- UPDATE Message Error (RFC 4271 §6.3) ---

    pub fn update_error(subcode: u8, data: impl Into<Bytes>) -> Self {
        Self::new(error_code::UPDATE_MESSAGE, subcode, data)
    }

    // --- Hold Timer Expired (RFC 4271 §6.5) ---

    pub fn hold_timer_expired() -> Self {
        Self::new(error_code::HOLD_TIMER_EXPIRED, 0, Bytes::new())
    }

    // --- Finite State Machine Error (RFC 6608) ---

    /// RFC 6608 §4: data is the type of the unexpected message.
    pub fn fsm_error(subcode: FsmSubcode, unexpected_type: Option<u8>) -> Self {
        let data = unexpected_type
            .map(|t| Bytes::copy_from_slice(&[t]))
            .unwrap_or_default();
        Self::new(error_code::FSM, subcode.code(), data)
    }

    // --- Cease (RFC 4486, RFC 8203, RFC 9003, RFC 8538) ---

    pub fn cease(subcode: CeaseSubcode) -> Self {
        Self::new(error_code::CEASE, subcode.code(), Bytes::new())
    }

    /// RFC 4486 §4: AFI, SAFI and the upper bound that was exceeded.
    pub fn max_prefixes(afi_safi: AfiSafi, limit: u32) -> Self {
        let mut data = BytesMut::with_capacity(7);
        data.put_u16(afi_safi.afi.0);
        data.put_u8(afi_safi.safi.0);
        data.put_u32(limit);
        Self::new(
            error_code::CEASE,
            cease_subcode::MAX_PREFIXES,
            data.freeze(),
        )
    }

    /// Administrative Shutdown with an operator's message (RFC 9003 §2), cut at a character
    /// boundary to 255 octets. An empty message sends no data.
    pub fn admin_shutdown(message: &str) -> Self {
        Self::new(
            error_code::CEASE,
            cease_subcode::ADMIN_SHUTDOWN,
            shutdown_data(message),
        )
    }

    /// Administrative Reset with an operator's message (RFC 9003 §2).
    pub fn admin_reset(message: &str) -> Self {
        Self::new(
            error_code::CEASE,
            cease_subcode::ADMIN_RESET,
            shutdown_data(message),
        )
    }

    /// RFC 8538 §3: Hard Reset carrying the NOTIFICATION that caused it.
    pub fn hard_reset(cause: &Notification) -> Self {
        let mut data = BytesMut::with_capacity(2 + cause.data.len());
        data.put_u8(cause.code);
        data.put_u8(cause.subcode);
        data.put_slice(&cause.data);
        Self::new(error_code::CEASE, cease_subcode::HARD_RESET, data.freeze())
    }

    // --- ROUTE-REFRESH Message Error (RFC 7313 §5) ---

    /// Data: the complete ROUTE-REFRESH message.
    pub fn route_refresh_invalid_length(message: impl Into<Bytes>) -> Self {
        Self::new(
            error_code::ROUTE_REFRESH_MESSAGE,
            route_refresh_subcode::INVALID_MESSAGE_LENGTH,
            message,
        )
    }

    // --- Accessors ---

    pub fn is_cease(&self) -> bool {
        self.code == error_code::CEASE
    }

    pub fn cease_subcode(&self) -> Option<CeaseSubcode> {
        if self.is_cease() {
            CeaseSubcode::from_code(self.subcode)
        } else {
            None
        }
    }

    /// RFC 8538 §3: a Hard Reset, or a NOTIFICATION sent without the N bit negotiated,
    /// ends the session without graceful restart; only a Hard Reset says so itself.
    pub fn is_hard_reset(&self) -> bool {
        self.cease_subcode() == Some(CeaseSubcode::HardReset)
    }

    /// The NOTIFICATION inside a Hard Reset (RFC 8538 §3).
    pub fn hard_reset_cause(&self) -> Option<Notification> {
        if !self.is_hard_reset() || self.data.len() < 2 {
            return None;
        }
        Some(Notification {
            code: self.data[0],
            subcode: self.data[1],
            data: self.data.slice(2..),
        })
    }

    /// The operator's message of an Administrative Shutdown or Reset (RFC 9003 §2).
    /// Tolerant of bad data, as RFC 9003 §4 asks: a length octet larger than the data is
    /// clamped and invalid UTF-8 is replaced, so what the peer said can still be logged.
    pub fn shutdown_communication(&self) -> Option<String> {
        if !matches!(
            self.cease_subcode(),
            Some(CeaseSubcode::AdminShutdown | CeaseSubcode::AdminReset)
        ) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = &rest[..usize::from(len).min(rest.len())];
        if text.is_empty() {
            return None;
        }
        Some(String::from_utf8_lossy(text).into_owned())
    }

    /// The maximum-prefix data (RFC 4486 §4), when present.
    pub fn max_prefixes_data(&self) -> Option<(AfiSafi, u32)> {
        if self.cease_subcode() != Some(CeaseSubcode::MaxPrefixes) || self.data.len() < 7 {
            return None;
        }
        let d = &self.data;
        let afi_safi = AfiSafi::new(u16::from_be_bytes([d[0], d[1]]), d[2]);
        Some((afi_safi, u32::from_be_bytes([d[3], d[4], d[5], d[6]])))
    }

    // --- Wire ---

    /// The message body: any two octets are a NOTIFICATION; data is whatever follows.
    pub fn decode(body: &[u8]) -> Option<Self> {
        match body {
            [code, subcode, data @ ..] => {
                Some(Self::new(*code, *subcode, Bytes::copy_from_slice(data)))
            }
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }

    pub fn wire_len(&self) -> usize {
        HEADER_LEN + 2 + self.data.len()
    }
}

fn shutdown_data(message: &str) -> Bytes {
    if message.is_empty() {
        return Bytes::new();
    }
    let mut end = message.len().min(MAX_SHUTDOWN_COMMUNICATION);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut data = BytesMut::with_capacity(1 + end);
    data.put_u8(end as u8);
    data.put_slice(&message.as_bytes()[..end]);
    data.freeze()
}

/// "Cease / Maximum Number of Prefixes Reached", with the operator's message or the
/// cause of a Hard Reset after it.
impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match error_code_name(self.code) {
            Some(name) => f.write_str(name.iana)?,
            None => write!(f, "Error code {}", self.code)?,
        }
        match error_subcode_name(self.code, self.subcode) {
            Some(name) => write!(f, " / {}", name.iana)?,
            None if self.subcode != 0 || self.code == error_code::CEASE => {
                write!(f, " / subcode {}", self.subcode)?
            }
            None => {}
        }
        if let Some(msg) = self.shutdown_communication() {
            write!(f, ": {msg:?}")?;
        } else if let Some(cause) = self.hard_reset_cause() {
            write!(f, " ({cause})")?;
        } else if let Some((afi_safi, limit)) = self.max_prefixes_data() {
            write!(f, " ({afi_safi}, limit {limit})")?;
        } else if self.code == error_code::UPDATE_MESSAGE
            && self.subcode == update_subcode::MISSING_WELL_KNOWN
            && self.data.len() == 1
        {
            write!(f, " (attribute {})", self.data[0])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_like_an_operator_would_say_it() {
        let cases = [
            (
                Notification::cease(CeaseSubcode::MaxPrefixes),
                "Cease / Maximum Number of Prefixes Reached",
            ),
            (Notification::hold_timer_expired(), "Hold Timer Expired"),
            (
                Notification::bad_message_length(5000),
                "Message Header Error / Bad Message Length",
            ),
            (
                Notification::fsm_error(FsmSubcode::UnexpectedInOpenSent, Some(2)),
                "Finite State Machine Error / Receive Unexpected Message in OpenSent State",
            ),
            (
                Notification::admin_shutdown("maintenance"),
                "Cease / Administrative Shutdown: \"maintenance\"",
            ),
            (
                Notification::hard_reset(&Notification::hold_timer_expired()),
                "Cease / Hard Reset (Hold Timer Expired)",
            ),
            (
                Notification::max_prefixes(AfiSafi::new(1, 1), 1000),
                "Cease / Maximum Number of Prefixes Reached (ipv4-unicast, limit 1000)",
            ),
            (
                Notification::new(9, 9, Bytes::new()),
                "Error code 9 / subcode 9",
            ),
            (
                Notification::update_error(3, vec![5]),
                "UPDATE Message Error / Missing Well-known Attribute (attribute 5)",
            ),
            (
                Notification::route_refresh_invalid_length(vec![0; 20]),
                "ROUTE-REFRESH Message Error / Invalid Message Length",
            ),
        ];
        for (n, want) in cases {
            assert_eq!(n.to_string(), want);
        }
    }

    #[test]
    fn shutdown_communication_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 octets
        let n = Notification::admin_shutdown(&long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.data.len(), 255);
        assert_eq!(n.shutdown_communication().unwrap(), "é".repeat(127));
        assert!(Notification::admin_shutdown("").data.is_empty());
        assert_eq!(
            Notification::admin_reset("bye")
                .shutdown_communication()
                .as_deref(),
            Some("bye")
        );
    }

    #[test]
    fn shutdown_communication_tolerates_bad_data() {
        let n = |data: &[u8]| Notification::new(6, 2, data.to_vec());
        assert_eq!(
            n(&[10, b'h', b'i']).shutdown_communication().as_deref(),
            Some("hi")
        );
        assert_eq!(
            n(&[2, 0xff, b'a']).shutdown_communication().as_deref(),
            Some("\u{fffd}a")
        );
        assert_eq!(n(&[]).shutdown_communication(), None);
        assert_eq!(n(&[0]).shutdown_communication(), None);
        assert_eq!(
            Notification::new(6, 3, vec![2, b'h', b'i']).shutdown_communication(),
            None
        );
    }

    #[test]
    fn hard_reset_carries_its_cause() {
        let cause = Notification::admin_shutdown("x");
        let hr = Notification::hard_reset(&cause);
        assert!(hr.is_hard_reset());
        assert_eq!(hr.hard_reset_cause(), Some(cause));
        assert_eq!(Notification::new(6, 9, vec![6]).hard_reset_cause(), None);
    }

    #[test]
    fn decode_accepts_any_data() {
        assert_eq!(
            Notification::decode(&[6, 2]),
            Some(Notification::cease(CeaseSubcode::AdminShutdown))
        );
        assert_eq!(Notification::decode(&[6]), None);
        let n = Notification::decode(&[1, 2, 0x10, 0]).unwrap();
        assert_eq!(n, Notification::bad_message_length(4096));
        let mut out = BytesMut::new();
        n.encode(&mut out);
        assert_eq!(&out[..], &[1, 2, 0x10, 0]);
    }

    #[test]
    fn every_cease_subcode_round_trips() {
        for sub in 1..=9 {
            let c = CeaseSubcode::from_code(sub).unwrap();
            assert_eq!(c.code(), sub);
            assert!(error_subcode_name(6, sub).is_some());
        }
        assert_eq!(CeaseSubcode::from_code(10), None);
    }
}
