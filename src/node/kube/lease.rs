//! Leader election over a `coordination.k8s.io/v1` Lease, as a pure state machine with
//! time as an input: the IO shell reads the Lease, hands what it read to
//! [`LeaseState::observe`], asks [`LeaseState::decide`] what to write, writes it with
//! the resourceVersion it read (a lost race is a 409 and nothing is held), and reports
//! the outcome with [`LeaseState::written`].
//!
//! As client-go's leader election does, expiry is measured on the local clock from the
//! moment this agent saw the Lease's record change, never from the `renewTime` written
//! by another node: clocks of different nodes need not agree. A holder that stops
//! renewing loses the Lease `leaseDurationSeconds` after its last renewal was seen; a
//! holder that cannot renew stops acting as leader once its own term ran out, before
//! anyone else may take over.

use std::time::{Duration, Instant};

/// What the Lease says, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` or empty: released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// `metadata.resourceVersion`: any write changes it.
    pub version: String,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// There is no Lease: create it, held by us.
    Create,
    /// Write ourselves as holder over the record read at `version`. `transition`: the
    /// holder changes (the count of transitions goes up).
    Take { version: String, transition: bool },
    /// Nothing to write before `until`.
    Wait { until: Instant },
}

/// This agent's view of the Lease.
#[derive(Clone, Debug)]
pub struct LeaseState {
    identity: String,
    /// Our term when we write.
    duration: Duration,
    /// How often the holder renews (well inside `duration`).
    renew_every: Duration,
    /// The record last read and when it was first seen in that version.
    seen: Option<(LeaseRecord, Instant)>,
    /// Whether the Lease was read as absent.
    absent: bool,
    /// Until when we hold it, from our last successful write.
    held_until: Option<Instant>,
    last_write: Option<Instant>,
}

impl LeaseState {
    pub fn new(identity: impl Into<String>, duration: Duration, renew_every: Duration) -> Self {
        LeaseState {
            identity: identity.into(),
            duration,
            renew_every,
            seen: None,
            absent: false,
            held_until: None,
            last_write: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The Lease as read at `now`; `None`: it does not exist.
    pub fn observe(&mut self, record: Option<LeaseRecord>, now: Instant) {
        match record {
            None => {
                self.absent = true;
                self.seen = None;
                self.held_until = None;
            }
            Some(r) => {
                self.absent = false;
                if r.holder.as_deref() != Some(self.identity.as_str()) {
                    // Someone else holds it (or it was released): we do not.
                    self.held_until = None;
                }
                let changed = self
                    .seen
                    .as_ref()
                    .is_none_or(|(s, _)| s.version != r.version);
                if changed {
                    self.seen = Some((r, now));
                }
            }
        }
    }

    /// What to write now.
    pub fn decide(&self, now: Instant) -> LeaseAction {
        if self.absent {
            return LeaseAction::Create;
        }
        let Some((r, seen_at)) = &self.seen else {
            // Nothing read yet: read first.
            return LeaseAction::Wait { until: now };
        };
        let holder = r.holder.as_deref().filter(|h| !h.is_empty());
        match holder {
            Some(h) if h == self.identity => {
                let due = self.last_write.map_or(now, |t| t + self.renew_every);
                if now >= due || self.held_until.is_none() {
                    LeaseAction::Take {
                        version: r.version.clone(),
                        transition: false,
                    }
                } else {
                    LeaseAction::Wait { until: due }
                }
            }
            None => LeaseAction::Take {
                version: r.version.clone(),
                transition: true,
            },
            Some(_) => {
                let expires = *seen_at + r.duration;
                if now >= expires {
                    LeaseAction::Take {
                        version: r.version.clone(),
                        transition: true,
                    }
                } else {
                    LeaseAction::Wait { until: expires }
                }
            }
        }
    }

    /// The outcome of a write decided at `now`: `Some(record)` as the server returned
    /// it, `None` when it failed (a 409 lost race, or no answer).
    pub fn written(&mut self, outcome: Option<LeaseRecord>, now: Instant) {
        match outcome {
            Some(r) => {
                self.absent = false;
                self.held_until = Some(now + self.duration);
                self.last_write = Some(now);
                self.seen = Some((r, now));
            }
            None => {
                // Keep acting only while the term of the last success lasts.
                if self.held_until.is_some_and(|t| now >= t) {
                    self.held_until = None;
                }
            }
        }
    }

    /// Whether this agent may act as the leader at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|t| now < t)
    }

    /// The record to write for `action`, from the last one read.
    pub fn record_for(&self, action: &LeaseAction) -> Option<LeaseRecord> {
        let transitions = self.seen.as_ref().map_or(0, |(r, _)| r.transitions);
        match action {
            LeaseAction::Create => Some(LeaseRecord {
                holder: Some(self.identity.clone()),
                duration: self.duration,
                version: String::new(),
                transitions: 0,
            }),
            LeaseAction::Take {
                version,
                transition,
            } => Some(LeaseRecord {
                holder: Some(self.identity.clone()),
                duration: self.duration,
                version: version.clone(),
                transitions: transitions + i32::from(*transition),
            }),
            LeaseAction::Wait { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: Duration = Duration::from_secs(15);
    const RENEW: Duration = Duration::from_secs(5);

    fn rec(holder: Option<&str>, version: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            duration: TERM,
            version: version.into(),
            transitions: 3,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn create_when_absent_then_renew_on_schedule() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("node-a", TERM, RENEW);
        assert_eq!(a.decide(t0), LeaseAction::Wait { until: t0 }, "read first");
        a.observe(None, t0);
        assert_eq!(a.decide(t0), LeaseAction::Create);
        assert!(!a.is_leader(t0));
        let made = a.record_for(&LeaseAction::Create).unwrap();
        assert_eq!(made.holder.as_deref(), Some("node-a"));
        a.written(Some(rec(Some("node-a"), "1")), t0);
        assert!(a.is_leader(t0));
        assert_eq!(a.decide(t0 + s(1)), LeaseAction::Wait { until: t0 + RENEW });
        a.observe(Some(rec(Some("node-a"), "1")), t0 + RENEW);
        let renew = a.decide(t0 + RENEW);
        assert_eq!(
            renew,
            LeaseAction::Take {
                version: "1".into(),
                transition: false
            }
        );
        assert_eq!(
            a.record_for(&renew).unwrap().transitions,
            3,
            "no transition"
        );
    }

    #[test]
    fn another_holder_is_waited_for_until_expiry_then_stolen() {
        let t0 = Instant::now();
        let mut b = LeaseState::new("node-b", TERM, RENEW);
        b.observe(Some(rec(Some("node-a"), "7")), t0);
        assert_eq!(b.decide(t0), LeaseAction::Wait { until: t0 + TERM });
        // The holder renews: the term starts again from when the new version was seen.
        b.observe(Some(rec(Some("node-a"), "8")), t0 + s(10));
        assert_eq!(
            b.decide(t0 + s(16)),
            LeaseAction::Wait {
                until: t0 + s(10) + TERM
            }
        );
        // Reading the same version again does not move the expiry.
        b.observe(Some(rec(Some("node-a"), "8")), t0 + s(20));
        let take = b.decide(t0 + s(25));
        assert_eq!(
            take,
            LeaseAction::Take {
                version: "8".into(),
                transition: true
            }
        );
        assert_eq!(b.record_for(&take).unwrap().transitions, 4);
        assert!(!b.is_leader(t0 + s(25)));
        b.written(Some(rec(Some("node-b"), "9")), t0 + s(25));
        assert!(b.is_leader(t0 + s(25)));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut b = LeaseState::new("node-b", TERM, RENEW);
        b.observe(Some(rec(None, "3")), t0);
        assert!(matches!(
            b.decide(t0),
            LeaseAction::Take {
                transition: true,
                ..
            }
        ));
        b.observe(Some(rec(Some(""), "4")), t0);
        assert!(matches!(b.decide(t0), LeaseAction::Take { .. }));
    }

    #[test]
    fn a_holder_that_cannot_renew_stops_leading_at_the_end_of_its_term() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("node-a", TERM, RENEW);
        a.observe(None, t0);
        a.written(Some(rec(Some("node-a"), "1")), t0);
        // Renewals fail (API server away or 409).
        a.written(None, t0 + s(5));
        assert!(a.is_leader(t0 + s(5)));
        a.written(None, t0 + s(10));
        assert!(a.is_leader(t0 + s(14)));
        assert!(!a.is_leader(t0 + TERM), "the term ran out");
        a.written(None, t0 + s(16));
        assert!(!a.is_leader(t0 + s(16)));
    }

    #[test]
    fn losing_the_lease_to_another_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut a = LeaseState::new("node-a", TERM, RENEW);
        a.observe(None, t0);
        a.written(Some(rec(Some("node-a"), "1")), t0);
        a.observe(Some(rec(Some("node-b"), "2")), t0 + s(2));
        assert!(!a.is_leader(t0 + s(2)));
        assert_eq!(
            a.decide(t0 + s(2)),
            LeaseAction::Wait {
                until: t0 + s(2) + TERM
            }
        );
    }
}
