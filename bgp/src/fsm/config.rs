//! What one peer's session state machine is configured with, and the checks that make a
//! configuration usable before any OPEN is sent.

use crate::types::{Asn, RouterId};
use crate::wire::open::Capability;
use std::time::Duration;

/// The timers and identity of one peer's FSM (RFC 4271 §8.1 and §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_asn: Asn,
    pub local_id: RouterId,
    /// `None`: accept any AS the peer claims (dynamic peers).
    pub peer_asn: Option<Asn>,
    /// Hold time we propose, in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None` uses a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// ConnectRetryTime (RFC 4271 §10 suggests 120 s; a node mesh wants sooner).
    pub connect_retry: Duration,
    /// Never connect out, only accept (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// First IdleHoldTime after an error (RFC 4271 §8.1.1 DampPeerOscillations).
    pub idle_hold: Duration,
    /// Cap of the doubling idle hold time; also how long a session must stay Established
    /// before the back-off starts over.
    pub idle_hold_max: Duration,
    /// The "large value" of the HoldTimer in OpenSent (RFC 4271 §8.2.2 suggests 4 min).
    pub open_hold_time: Duration,
    /// DelayOpenTime: wait this long for the peer's OPEN before sending ours
    /// (RFC 4271 §8.1.1 DelayOpen).
    pub delay_open: Option<Duration>,
    /// Seeds the jitter (RFC 4271 §10). Give each peer on each node its own seed, or every
    /// node in a cluster retries in lockstep.
    pub jitter_seed: u64,
    /// Whether a hold-timer expiry, once both sides set RFC 8538's N bit, keeps the
    /// peer's routes as stale like any other NOTIFICATION does. Turn it off where a peer
    /// that goes silent is gone rather than restarting (a node of the cluster that was
    /// powered off): its routes then go when the hold timer expires, while a restart that
    /// closes the connection still keeps them.
    pub graceful_on_hold_expiry: bool,
}

impl FsmConfig {
    pub const DEFAULT_HOLD_TIME: u16 = 90;
    pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(5);
    /// One second, doubling to two minutes: FRR's bgpd backs off the same way. A peer
    /// that restarted comes back within seconds, one that keeps failing is retried at
    /// most every two minutes.
    pub const DEFAULT_IDLE_HOLD: Duration = Duration::from_secs(1);
    pub const DEFAULT_IDLE_HOLD_MAX: Duration = Duration::from_secs(120);
    pub const DEFAULT_OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

    /// An active peer with the default timers; the jitter seed is derived from our
    /// identifier and the peer's AS so that nodes differ.
    pub fn new(local_asn: Asn, local_id: RouterId, peer_asn: Option<Asn>) -> Self {
        let id = u64::from(u32::from(local_id.0));
        let peer = u64::from(peer_asn.map_or(0, |a| a.0));
        FsmConfig {
            local_asn,
            local_id,
            peer_asn,
            hold_time: Self::DEFAULT_HOLD_TIME,
            keepalive: None,
            connect_retry: Self::DEFAULT_CONNECT_RETRY,
            passive: false,
            idle_hold: Self::DEFAULT_IDLE_HOLD,
            idle_hold_max: Self::DEFAULT_IDLE_HOLD_MAX,
            open_hold_time: Self::DEFAULT_OPEN_HOLD_TIME,
            delay_open: None,
            jitter_seed: (id << 32) ^ peer,
            graceful_on_hold_expiry: true,
        }
    }

    /// Checks the configuration and the capabilities we will announce with it.
    pub fn validate(&self, capabilities: &[Capability]) -> Result<(), FsmConfigError> {
        if matches!(self.hold_time, 1 | 2) {
            return Err(FsmConfigError::HoldTime(self.hold_time));
        }
        if let Some(k) = self.keepalive {
            if k == 0 || (self.hold_time > 0 && k >= self.hold_time) {
                return Err(FsmConfigError::Keepalive {
                    keepalive: k,
                    hold_time: self.hold_time,
                });
            }
        }
        if self.local_id.0.is_unspecified() {
            return Err(FsmConfigError::RouterId);
        }
        for asn in [Some(self.local_asn), self.peer_asn].into_iter().flatten() {
            if asn.0 == 0 || asn == Asn::TRANS {
                return Err(FsmConfigError::ReservedAsn(asn));
            }
        }
        let four_octet = capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAsn(a) => Some(*a),
            _ => None,
        });
        match four_octet {
            Some(a) if a != self.local_asn => {
                return Err(FsmConfigError::FourOctetAsnMismatch {
                    capability: a,
                    local_asn: self.local_asn,
                })
            }
            None if !self.local_asn.is_two_octet() => {
                return Err(FsmConfigError::FourOctetAsnMissing(self.local_asn))
            }
            _ => {}
        }
        let positive = [
            ("connect_retry", self.connect_retry),
            ("idle_hold", self.idle_hold),
            ("open_hold_time", self.open_hold_time),
            (
                "delay_open",
                self.delay_open.unwrap_or(Duration::from_secs(1)),
            ),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(FsmConfigError::ZeroDuration(field));
        }
        if self.idle_hold > self.idle_hold_max {
            return Err(FsmConfigError::IdleHold {
                idle_hold: self.idle_hold,
                max: self.idle_hold_max,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsmConfigError {
    #[error("hold_time {0}: must be 0 or at least 3 seconds (RFC 4271 §4.2)")]
    HoldTime(u16),
    #[error("keepalive {keepalive}: must be at least 1 and below hold_time {hold_time}")]
    Keepalive { keepalive: u16, hold_time: u16 },
    #[error("local_id 0.0.0.0: the BGP identifier must be non-zero (RFC 6286 §2.1)")]
    RouterId,
    #[error("AS {0} is reserved (RFC 7607, RFC 6793 AS_TRANS) and cannot name a speaker")]
    ReservedAsn(Asn),
    #[error("local_asn {0} needs the 4-octet AS capability (RFC 6793)")]
    FourOctetAsnMissing(Asn),
    #[error("4-octet AS capability {capability} differs from local_asn {local_asn}")]
    FourOctetAsnMismatch { capability: Asn, local_asn: Asn },
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("idle_hold {idle_hold:?} exceeds idle_hold_max {max:?}")]
    IdleHold { idle_hold: Duration, max: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn base() -> FsmConfig {
        FsmConfig::new(
            Asn(64512),
            RouterId(Ipv4Addr::new(10, 0, 0, 1)),
            Some(Asn(65001)),
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            base().validate(&[Capability::FourOctetAsn(Asn(64512))]),
            Ok(())
        );
        assert_eq!(base().validate(&[]), Ok(()));
    }

    #[test]
    fn seeds_differ_between_nodes() {
        let other = FsmConfig::new(
            Asn(64512),
            RouterId(Ipv4Addr::new(10, 0, 0, 2)),
            Some(Asn(65001)),
        );
        assert_ne!(base().jitter_seed, other.jitter_seed);
    }

    #[test]
    fn invalid_configurations_name_the_problem() {
        type Edit = fn(&mut FsmConfig, &mut Vec<Capability>);
        let cases: &[(Edit, FsmConfigError)] = &[
            (|c, _| c.hold_time = 2, FsmConfigError::HoldTime(2)),
            (|c, _| c.hold_time = 1, FsmConfigError::HoldTime(1)),
            (
                |c, _| c.keepalive = Some(0),
                FsmConfigError::Keepalive {
                    keepalive: 0,
                    hold_time: 90,
                },
            ),
            (
                |c, _| c.keepalive = Some(90),
                FsmConfigError::Keepalive {
                    keepalive: 90,
                    hold_time: 90,
                },
            ),
            (
                |c, _| c.local_id = RouterId(Ipv4Addr::UNSPECIFIED),
                FsmConfigError::RouterId,
            ),
            (
                |c, _| c.local_asn = Asn(0),
                FsmConfigError::ReservedAsn(Asn(0)),
            ),
            (
                |c, _| c.peer_asn = Some(Asn::TRANS),
                FsmConfigError::ReservedAsn(Asn::TRANS),
            ),
            (
                |c, caps| {
                    c.local_asn = Asn(4_200_000_000);
                    caps.clear();
                },
                FsmConfigError::FourOctetAsnMissing(Asn(4_200_000_000)),
            ),
            (
                |_, caps| caps.push(Capability::FourOctetAsn(Asn(1))),
                FsmConfigError::FourOctetAsnMismatch {
                    capability: Asn(1),
                    local_asn: Asn(64512),
                },
            ),
            (
                |c, _| c.connect_retry = Duration::ZERO,
                FsmConfigError::ZeroDuration("connect_retry"),
            ),
            (
                |c, _| c.delay_open = Some(Duration::ZERO),
                FsmConfigError::ZeroDuration("delay_open"),
            ),
            (
                |c, _| c.idle_hold = Duration::from_secs(300),
                FsmConfigError::IdleHold {
                    idle_hold: Duration::from_secs(300),
                    max: Duration::from_secs(120),
                },
            ),
        ];
        for (edit, want) in cases {
            let mut c = base();
            let mut caps = Vec::new();
            edit(&mut c, &mut caps);
            assert_eq!(c.validate(&caps).as_ref(), Err(want));
        }
    }

    #[test]
    fn hold_zero_allows_any_keepalive_setting() {
        let mut c = base();
        c.hold_time = 0;
        c.keepalive = Some(30);
        assert_eq!(c.validate(&[]), Ok(()));
    }
}
