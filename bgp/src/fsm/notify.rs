//! The NOTIFICATION codes the FSM and the OPEN checks send (IANA "BGP Error (Notification)
//! Codes" and "... Subcodes"), and the Hard Reset wrapping of RFC 8538.
//!
//! The codes and their names are defined once, in `wire::consts`; this module names them
//! for the FSM.

use crate::wire::Notification;
use bytes::Bytes;

// The codes themselves are the codec's (`wire::consts`), under the names the FSM uses.
pub(crate) use crate::wire::consts::cease_subcode as cease;
pub(crate) use crate::wire::consts::error_code::{
    CEASE, FSM as FSM_ERROR, HOLD_TIMER_EXPIRED, OPEN_MESSAGE as OPEN_MESSAGE_ERROR,
};
pub(crate) use crate::wire::consts::error_status;
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
    n.is_hard_reset()
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
    Notification::hard_reset(inner)
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
    fn status_names_the_rfc_subcodes() {
        let said = |code, subcode| error_status(code, subcode).to_string();
        assert_eq!(said(2, 6), "OPEN error: unacceptable hold time");
        assert_eq!(said(6, 7), "cease: connection collision resolution");
        assert_eq!(said(6, 10), "cease: BFD down");
        assert_eq!(said(5, 0), "FSM error");
        assert_eq!(said(5, 2), "FSM error: unexpected message in OpenConfirm");
        assert_eq!(said(3, 7), "UPDATE error");
        assert_eq!(said(4, 0), "hold timer expired");
        assert_eq!(said(7, 1), "ROUTE-REFRESH error");
        assert_eq!(said(42, 0), "unknown error code");
    }
}
