//! What BFD says about one BGP peer (RFC 5882), and when its session may run.
//!
//! A peer with BFD configured starts its BGP session only once its BFD session is Up
//! (§4.2: BFD is required), and loses it at once when BFD fails (§3.2). The peer going
//! AdminDown is no failure (§3.2): BGP carries on as if BFD were not configured until the
//! peer's BFD comes back.
//!
//! Dampening (§3.2 "a flapping BFD session should not flap the client without end"): each
//! failure in a run holds the next BGP start back until BFD has stayed Up for a while,
//! doubling each time:
//!
//! | failure in the run | BGP starts after BFD has been Up for |
//! |---|---|
//! | 1st | 0 s (at once) |
//! | 2nd | 2 s |
//! | 3rd, 4th, … | 4 s, 8 s, … at most 120 s |
//!
//! A run ends when BFD has stayed Up for `STABLE` (60 s) past the end of the last hold:
//! the next failure is a first one again. So a single failure (a cable pulled and put
//! back) costs nothing beyond BFD's own restart, and a link that flaps every few seconds
//! brings BGP up at most once every two minutes.

use crate::bfd::table::Change;
use crate::bfd::{Diag, State};
use crate::config::BfdConfig;
use std::time::{Duration, Instant};

/// The hold after the second failure of a run; it doubles with every further one.
pub(crate) const HOLD_BASE: Duration = Duration::from_secs(2);
/// The longest hold.
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(120);
/// Up this long past the last hold ends a run of failures.
pub(crate) const STABLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not Up: never yet, or failed.
    Down,
    Up {
        since: Instant,
    },
    /// The peer took its BFD session AdminDown (RFC 5882 §3.2): BGP runs without BFD.
    PeerAdminDown,
}

/// What the speaker does with the peer's BGP session after a BFD change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Nothing,
    /// BGP may start at this time (now, or after the dampening hold).
    StartAt(Instant),
    /// BFD failed: the BGP session goes down now; the routes go as for a failed session.
    TakeDown,
}

#[derive(Clone, Debug)]
pub(crate) struct BfdLink {
    pub config: BfdConfig,
    pub state: LinkState,
    /// Failures in the current run.
    run: u32,
    /// The end of the last hold (or the last Up), from which `STABLE` is counted.
    quiet_since: Option<Instant>,
    /// Why BFD last went down.
    pub last_diag: Option<Diag>,
    pub failures: u64,
}

/// The hold before BGP starts after the `run`th failure in a row.
pub(crate) fn hold(run: u32) -> Duration {
    match run {
        0 | 1 => Duration::ZERO,
        n => HOLD_BASE.saturating_mul(1 << (n - 2).min(16)).min(HOLD_MAX),
    }
}

impl BfdLink {
    pub(crate) fn new(config: BfdConfig) -> BfdLink {
        BfdLink {
            config,
            state: LinkState::Down,
            run: 0,
            quiet_since: None,
            last_diag: None,
            failures: 0,
        }
    }

    /// The failures in the current run.
    pub(crate) fn run(&self) -> u32 {
        self.run
    }

    /// Whether BGP may run now: BFD Up (and any hold over, which the caller times), or
    /// the peer AdminDown.
    pub(crate) fn allows_bgp(&self) -> bool {
        !matches!(self.state, LinkState::Down)
    }

    pub(crate) fn on_change(&mut self, now: Instant, c: &Change) -> Decision {
        if c.to == State::Up {
            self.state = LinkState::Up { since: now };
            let at = now + hold(self.run);
            self.quiet_since = Some(at);
            return Decision::StartAt(at);
        }
        if c.from != State::Up {
            return Decision::Nothing;
        }
        if c.peer_admin_down {
            self.state = LinkState::PeerAdminDown;
            return Decision::StartAt(now);
        }
        self.state = LinkState::Down;
        self.last_diag = Some(c.diag);
        self.failures += 1;
        if self
            .quiet_since
            .is_some_and(|q| now.saturating_duration_since(q) >= STABLE)
        {
            self.run = 0;
        }
        self.run = self.run.saturating_add(1);
        Decision::TakeDown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(from: State, to: State, admin: bool) -> Change {
        Change {
            peer: "10.0.0.2".parse().unwrap(),
            from,
            to,
            diag: if admin {
                Diag::NeighborSignaledSessionDown
            } else {
                Diag::ControlDetectionTimeExpired
            },
            peer_admin_down: admin,
            control_plane_independent: false,
        }
    }

    #[test]
    fn the_hold_doubles_to_its_cap() {
        let secs: Vec<u64> = (1..=10).map(|n| hold(n).as_secs()).collect();
        assert_eq!(secs, [0, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        assert_eq!(hold(u32::MAX), HOLD_MAX);
    }

    #[test]
    fn flaps_in_a_row_hold_bgp_longer_and_a_quiet_minute_forgets_them() {
        let t0 = Instant::now();
        let mut l = BfdLink::new(BfdConfig::default());
        assert!(!l.allows_bgp());
        let up = change(State::Init, State::Up, false);
        let down = change(State::Up, State::Down, false);
        let mut now = t0;
        assert_eq!(l.on_change(now, &up), Decision::StartAt(now));
        let mut starts = Vec::new();
        for _ in 0..4 {
            now += Duration::from_secs(1);
            assert_eq!(l.on_change(now, &down), Decision::TakeDown);
            assert!(!l.allows_bgp());
            now += Duration::from_secs(1);
            match l.on_change(now, &up) {
                Decision::StartAt(at) => starts.push((at - now).as_secs()),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(starts, [0, 2, 4, 8]);
        assert_eq!(l.failures, 4);
        // Up for the hold (8 s) and a quiet minute: the run is over.
        now += Duration::from_secs(8) + STABLE;
        l.on_change(now, &down);
        assert_eq!(l.run(), 1);
        assert_eq!(l.last_diag, Some(Diag::ControlDetectionTimeExpired));
    }

    #[test]
    fn the_peers_admin_down_is_no_failure() {
        let now = Instant::now();
        let mut l = BfdLink::new(BfdConfig::default());
        l.on_change(now, &change(State::Init, State::Up, false));
        let d = l.on_change(now, &change(State::Up, State::Down, true));
        assert_eq!(d, Decision::StartAt(now));
        assert!(l.allows_bgp());
        assert_eq!((l.failures, l.run()), (0, 0));
        // Init → Down (never Up) changes nothing either.
        let mut l = BfdLink::new(BfdConfig::default());
        assert_eq!(
            l.on_change(now, &change(State::Init, State::Down, false)),
            Decision::Nothing
        );
    }
}
