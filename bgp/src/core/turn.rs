//! What the core serves next, and which of its own timers are due.
//!
//! The core has four sources of work: the handle's commands, the sessions' events (UPDATE
//! batches above all), connections the listeners accepted, and the timers that span
//! sessions. It serves them in turns: each turn takes from every source in a fixed order,
//! each up to its share, and ends with the timers that are due. So whatever one source
//! holds — a peer that never stops sending UPDATEs keeps the events full — the others
//! wait at most one turn, and a turn is bounded work.
//!
//! Between the sessions themselves the event channel is fair already: it is bounded
//! (`EVENT_QUEUE`), a session waits on one send at a time, and a full channel hands freed
//! slots to the waiting sessions in the order they came, so an event waits behind at most
//! the queue and one event of every other busy session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Commands,
    Events,
    Accepts,
    Timers,
}

/// Each source in turn order, with the inputs it may give per turn. Every due timer
/// fires in its turn (there are at most two per peer).
const SHARES: [(Source, usize); 4] = [
    (Source::Commands, 16),
    (Source::Events, super::EVENT_BATCH),
    (Source::Accepts, 16),
    (Source::Timers, 1),
];

/// One turn over the sources: ask [`Turn::next`] which source to take from, then tell
/// [`Turn::served`] whether it had an input.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    at: usize,
    taken: usize,
}

impl Turn {
    /// The source to take the next input from; `None` once every source had its turn.
    pub(crate) fn next(&self) -> Option<Source> {
        SHARES.get(self.at).map(|(s, _)| *s)
    }

    /// `got`: the source returned by `next` had an input. An empty source, or one that
    /// has had its share, passes the turn on.
    pub(crate) fn served(&mut self, got: bool) {
        let Some((_, share)) = SHARES.get(self.at) else {
            return;
        };
        self.taken += usize::from(got);
        if !got || self.taken >= *share {
            self.at += 1;
            self.taken = 0;
        }
    }
}

/// A deadline of the core's (the sessions keep their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Timer {
    /// A restarted peer is back: its routes still stale when this passes go
    /// (RFC 4724 §4.2, the stale time; its End-of-RIB cancels it). Not the session's
    /// restart timer, which runs while the peer is down.
    EndOfRibWait(IpAddr),
    /// A peer stopped for sending too many prefixes starts again.
    MaxPrefixRestart(IpAddr),
    /// This speaker restarted: select and advertise even without every peer's
    /// End-of-RIB (RFC 4724 §4.1 selection deferral).
    SelectionDeferral,
    /// A peer's BFD is Up again after failures in a row: its BGP session starts when
    /// this passes (the dampening hold of `bfd_link`).
    BfdHold(IpAddr),
}

impl Timer {
    fn peer(self) -> Option<IpAddr> {
        match self {
            Timer::EndOfRibWait(p) | Timer::MaxPrefixRestart(p) | Timer::BfdHold(p) => Some(p),
            Timer::SelectionDeferral => None,
        }
    }
}

/// The core's running timers.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    at: HashMap<Timer, Instant>,
}

impl Timers {
    /// Start (or move) a timer.
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.at.insert(t, at);
    }

    pub(crate) fn cancel(&mut self, t: Timer) {
        self.at.remove(&t);
    }

    /// Stop every timer of a peer that is going away.
    pub(crate) fn cancel_peer(&mut self, peer: IpAddr) {
        self.at.retain(|t, _| t.peer() != Some(peer));
    }

    /// When a running timer fires.
    pub(crate) fn at(&self, t: Timer) -> Option<Instant> {
        self.at.get(&t).copied()
    }

    pub(crate) fn is_running(&self, t: Timer) -> bool {
        self.at.contains_key(&t)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }

    /// The timers due at `now`, earliest first; they stop running.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<(Instant, Timer)> = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, at)| (*at, *t))
            .collect();
        due.sort_by_key(|(at, _)| *at);
        for (_, t) in &due {
            self.at.remove(t);
        }
        due.into_iter().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs one turn against sources holding `pending` inputs each (Timers: whether one
    /// is due) and returns the order they were served in.
    fn run_turn(pending: [usize; 4]) -> Vec<Source> {
        let mut left = pending;
        let mut turn = Turn::default();
        let mut served = Vec::new();
        while let Some(s) = turn.next() {
            let i = SHARES.iter().position(|(x, _)| *x == s).unwrap();
            let got = left[i] > 0;
            if got {
                left[i] -= 1;
                served.push(s);
            }
            turn.served(got);
        }
        served
    }

    #[test]
    fn a_source_that_never_empties_gets_its_share_and_the_others_their_turn() {
        use Source::*;
        let served = run_turn([0, usize::MAX, 1, 1]);
        let events = served.iter().filter(|s| **s == Events).count();
        assert_eq!(events, super::super::EVENT_BATCH);
        assert_eq!(&served[events..], &[Accepts, Timers]);
    }

    #[test]
    fn every_source_is_served_in_order_within_its_share() {
        use Source::*;
        let served = run_turn([2, 1, 1, 1]);
        assert_eq!(served, vec![Commands, Commands, Events, Accepts, Timers]);
        let flood = run_turn([usize::MAX; 4]);
        for (source, share) in SHARES {
            assert_eq!(flood.iter().filter(|s| **s == source).count(), share);
        }
    }

    #[test]
    fn the_timers_are_looked_at_every_turn_even_with_nothing_else_to_do() {
        let mut turn = Turn::default();
        let mut asked = Vec::new();
        while let Some(s) = turn.next() {
            asked.push(s);
            turn.served(false);
        }
        assert_eq!(asked.last(), Some(&Source::Timers));
        assert_eq!(asked.len(), SHARES.len());
    }

    #[test]
    fn due_timers_expire_earliest_first_and_stop_running() {
        let t0 = Instant::now();
        let s = |n| Duration::from_secs(n);
        let (p, q): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut timers = Timers::default();
        assert_eq!(timers.next_deadline(), None);
        timers.set(Timer::EndOfRibWait(p), t0 + s(30));
        timers.set(Timer::MaxPrefixRestart(q), t0 + s(10));
        timers.set(Timer::SelectionDeferral, t0 + s(20));
        assert_eq!(timers.next_deadline(), Some(t0 + s(10)));
        assert!(timers.expire(t0 + s(9)).is_empty());
        assert_eq!(
            timers.expire(t0 + s(25)),
            vec![Timer::MaxPrefixRestart(q), Timer::SelectionDeferral]
        );
        assert!(!timers.is_running(Timer::SelectionDeferral));
        assert_eq!(timers.next_deadline(), Some(t0 + s(30)));
        // Set again, a timer moves.
        timers.set(Timer::EndOfRibWait(p), t0 + s(40));
        assert!(timers.expire(t0 + s(35)).is_empty());
        assert_eq!(timers.expire(t0 + s(40)), vec![Timer::EndOfRibWait(p)]);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_removed_peer_takes_its_timers_along() {
        let t0 = Instant::now();
        let (p, q): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut timers = Timers::default();
        timers.set(Timer::EndOfRibWait(p), t0);
        timers.set(Timer::MaxPrefixRestart(p), t0);
        timers.set(Timer::EndOfRibWait(q), t0);
        timers.set(Timer::SelectionDeferral, t0);
        timers.cancel_peer(p);
        let mut left = timers.expire(t0);
        left.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(left, vec![Timer::EndOfRibWait(q), Timer::SelectionDeferral]);
    }
}
