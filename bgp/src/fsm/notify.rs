//! The NOTIFICATION codes the FSM and the OPEN checks send (IANA "BGP Error (Notification)
//! Codes" and "... Subcodes"), and the Hard Reset wrapping of RFC 8538.
//!
//! Kept private to the crate until the codec's typed constructors replace them.

use crate::wire::Notification;
use bytes::Bytes;

pub(crate) const OPEN_MESSAGE_ERROR: u8 = 2;
pub(crate) const HOLD_TIMER_EXPIRED: u8 = 4;
pub(crate) const FSM_ERROR: u8 = 5;
pub(crate) const CEASE: u8 = 6;

/// OPEN Message Error subcodes (RFC 4271 §4.5, RFC 5492 §5).
pub(crate) mod open {
    pub(crate) const UNSUPPORTED_VERSION: u8 = 1;
    pub(crate) const BAD_PEER_AS: u8 = 2;
    pub(crate) const BAD_BGP_IDENTIFIER: u8 = 3;
    pub(crate) const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub(crate) const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub(crate) mod fsm {
    pub(crate) const UNSPECIFIED: u8 = 0;
    pub(crate) const IN_OPEN_SENT: u8 = 1;
    pub(crate) const IN_OPEN_CONFIRM: u8 = 2;
    pub(crate) const IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4, RFC 8538 §3).
pub(crate) mod cease {
    pub(crate) const MAX_PREFIXES: u8 = 1;
    pub(crate) const ADMIN_SHUTDOWN: u8 = 2;
    pub(crate) const PEER_DECONFIGURED: u8 = 3;
    pub(crate) const ADMIN_RESET: u8 = 4;
    pub(crate) const CONNECTION_REJECTED: u8 = 5;
    pub(crate) const COLLISION_RESOLUTION: u8 = 7;
    pub(crate) const HARD_RESET: u8 = 9;
}

pub(crate) fn notification(code: u8, subcode: u8) -> Notification {
    Notification {
        code,
        subcode,
        data: Bytes::new(),
    }
}

pub(crate) fn cease(subcode: u8) -> Notification {
    notification(CEASE, subcode)
}

pub(crate) fn is_hard_reset(n: &Notification) -> bool {
    n.code == CEASE && n.subcode == cease::HARD_RESET
}

/// RFC 8538 §5: once the N bit is exchanged, the Cease subcodes that mean "this peer is
/// going away" (maximum prefixes, administrative shutdown, peer de-configured, and by
/// default administrative reset) are sent as a Hard Reset, so the peer flushes our routes
/// instead of keeping them stale. The others stay as they are and trigger graceful
/// restart.
pub(crate) fn needs_hard_reset(n: &Notification) -> bool {
    n.code == CEASE
        && matches!(
            n.subcode,
            cease::MAX_PREFIXES
                | cease::ADMIN_SHUTDOWN
                | cease::PEER_DECONFIGURED
                | cease::ADMIN_RESET
        )
}

/// RFC 8538 §3: a Hard Reset carries the original code, subcode and data as its data.
pub(crate) fn hard_reset(inner: &Notification) -> Notification {
    let mut data = Vec::with_capacity(2 + inner.data.len());
    data.push(inner.code);
    data.push(inner.subcode);
    data.extend_from_slice(&inner.data);
    Notification {
        code: CEASE,
        subcode: cease::HARD_RESET,
        data: Bytes::from(data),
    }
}

/// The RFC's name for a code and subcode, for `status` and logs.
pub(crate) fn describe(code: u8, subcode: u8) -> &'static str {
    match (code, subcode) {
        (1, 1) => "message header error: connection not synchronized",
        (1, 2) => "message header error: bad message length",
        (1, 3) => "message header error: bad message type",
        (1, _) => "message header error",
        (2, 1) => "OPEN error: unsupported version number",
        (2, 2) => "OPEN error: bad peer AS",
        (2, 3) => "OPEN error: bad BGP identifier",
        (2, 4) => "OPEN error: unsupported optional parameter",
        (2, 6) => "OPEN error: unacceptable hold time",
        (2, 7) => "OPEN error: unsupported capability",
        (2, 11) => "OPEN error: role mismatch",
        (2, _) => "OPEN error",
        (3, 1) => "UPDATE error: malformed attribute list",
        (3, 2) => "UPDATE error: unrecognized well-known attribute",
        (3, 3) => "UPDATE error: missing well-known attribute",
        (3, 4) => "UPDATE error: attribute flags error",
        (3, 5) => "UPDATE error: attribute length error",
        (3, 6) => "UPDATE error: invalid ORIGIN attribute",
        (3, 8) => "UPDATE error: invalid NEXT_HOP attribute",
        (3, 9) => "UPDATE error: optional attribute error",
        (3, 10) => "UPDATE error: invalid network field",
        (3, 11) => "UPDATE error: malformed AS_PATH",
        (3, _) => "UPDATE error",
        (4, _) => "hold timer expired",
        (5, 1) => "FSM error: unexpected message in OpenSent",
        (5, 2) => "FSM error: unexpected message in OpenConfirm",
        (5, 3) => "FSM error: unexpected message in Established",
        (5, _) => "FSM error",
        (6, 1) => "cease: maximum number of prefixes reached",
        (6, 2) => "cease: administrative shutdown",
        (6, 3) => "cease: peer de-configured",
        (6, 4) => "cease: administrative reset",
        (6, 5) => "cease: connection rejected",
        (6, 6) => "cease: other configuration change",
        (6, 7) => "cease: connection collision resolution",
        (6, 8) => "cease: out of resources",
        (6, 9) => "cease: hard reset",
        (6, 10) => "cease: BFD down",
        (6, _) => "cease",
        (7, _) => "ROUTE-REFRESH error",
        _ => "unknown error code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_reset_encapsulates_code_subcode_and_data() {
        let inner = Notification {
            code: CEASE,
            subcode: cease::ADMIN_SHUTDOWN,
            data: Bytes::from_static(b"\x03bye"),
        };
        let hr = hard_reset(&inner);
        assert_eq!((hr.code, hr.subcode), (6, 9));
        assert_eq!(&hr.data[..], b"\x06\x02\x03bye");
    }

    #[test]
    fn which_cease_subcodes_become_hard_resets() {
        let cases = [
            (cease(1), true),
            (cease(2), true),
            (cease(3), true),
            (cease(4), true),
            (cease(5), false),
            (cease(6), false),
            (cease(7), false),
            (cease(8), false),
            (cease(10), false),
            (notification(HOLD_TIMER_EXPIRED, 0), false),
            (notification(FSM_ERROR, 1), false),
        ];
        for (n, want) in cases {
            assert_eq!(needs_hard_reset(&n), want, "{}/{}", n.code, n.subcode);
        }
    }

    #[test]
    fn describe_names_the_rfc_subcodes() {
        assert_eq!(describe(2, 6), "OPEN error: unacceptable hold time");
        assert_eq!(describe(6, 7), "cease: connection collision resolution");
        assert_eq!(describe(5, 0), "FSM error");
        assert_eq!(describe(42, 0), "unknown error code");
    }
}
