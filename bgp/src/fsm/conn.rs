//! One TCP connection of a peer and where it stands in the RFC 4271 §8 machine.
//!
//! A peer holds at most one connection per direction (§6.8): the one we opened and the
//! one the peer opened. Each carries its own OPEN exchange and timers; the peer's state is
//! that of its most advanced connection.

use super::ConnId;
use crate::negotiate::Negotiated;
use crate::wire::Open;
use std::time::Instant;

/// How far one connection got. Ordered: later phases are further along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Our connect() is under way (outgoing only).
    Connecting,
    /// TCP is up and DelayOpenTimer runs: the peer may speak first (§8.1.1 DelayOpen).
    DelayOpen,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) phase: Phase,
    /// The OPEN we sent on this connection: negotiation is against it, not against
    /// capabilities changed since.
    pub(crate) sent_open: Option<Open>,
    /// Set once the peer's OPEN on this connection was accepted.
    pub(crate) negotiated: Option<Negotiated>,
    pub(crate) hold_at: Option<Instant>,
    pub(crate) keepalive_at: Option<Instant>,
    pub(crate) delay_open_at: Option<Instant>,
    pub(crate) established_at: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(id: ConnId, phase: Phase) -> Self {
        Conn {
            id,
            phase,
            sent_open: None,
            negotiated: None,
            hold_at: None,
            keepalive_at: None,
            delay_open_at: None,
            established_at: None,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.hold_at, self.keepalive_at, self.delay_open_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// RFC 4271 §8.2.2: the HoldTimer restarts on each KEEPALIVE or UPDATE received; a
    /// negotiated hold time of 0 means no timer.
    pub(crate) fn restart_hold(&mut self, now: Instant) {
        self.hold_at = self
            .negotiated
            .as_ref()
            .and_then(|n| n.hold())
            .map(|h| now + h);
    }
}
