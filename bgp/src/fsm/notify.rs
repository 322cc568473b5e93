//! The NOTIFICATION codes the FSM and the OPEN checks send (IANA "BGP Error (Notification)
//! Codes" and "... Subcodes"), and the Hard Reset wrapping of RFC 8538.
//!
//! The codes are defined once, in `wire::consts`; this module names them for the FSM.

use crate::wire::Notification;
use bytes::Bytes;

// The codes themselves are the codec's (`wire::consts`), under the names the FSM uses.
pub(crate) use crate::wire::consts::cease_subcode as cease;
pub(crate) use crate::wire::consts::error_code::{
    CEASE, FSM as FSM_ERROR, HOLD_TIMER_EXPIRED, OPEN_MESSAGE as OPEN_MESSAGE_ERROR,
};
pub(crate) use crate::wire::consts::fsm_subcode as fsm;
pub(crate) use crate::wire::consts::open_subcode as open;

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
