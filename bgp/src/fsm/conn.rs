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
    /// Set on a connection the peer opened while a graceful-restart session was
    /// Established: our OPEN waits until that session is known dead, or this passes and
    /// the Established session wins (§6.8). See `PeerFsm` on RFC 4724 §4.2.
    pub(crate) probe_until: Option<Instant>,
    /// The peer's OPEN on a connection held by `probe_until`, processed once the old
    /// session is gone.
    pub(crate) held_open: Option<Open>,
    /// `held_open` set the Restart State bit the Established session's OPEN did not: if
    /// the old connection fails while this one is held, the peer restarted.
    pub(crate) held_restarted: bool,
    /// The peer's KEEPALIVE after `held_open`: it chose this connection.
    pub(crate) held_keepalive: bool,
    /// Accepted while the peer was in its idle hold: reaching Established on it resets
    /// the back-off.
    pub(crate) accepted_in_idle_hold: bool,
    /// When a KEEPALIVE last probed this Established connection.
    pub(crate) probed_at: Option<Instant>,
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
            probe_until: None,
            held_open: None,
            held_restarted: false,
            held_keepalive: false,
            accepted_in_idle_hold: false,
            probed_at: None,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.hold_at,
            self.keepalive_at,
            self.delay_open_at,
            self.probe_until,
        ]
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
