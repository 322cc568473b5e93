//! Liveness and readiness of the node agent, as `/healthz` and `/readyz` answer them.
//!
//! - Live: the agent loop turned recently (a stuck loop is a restart's business).
//! - Ready: the speaker runs, the datastore answers, the first reconcile was applied,
//!   and the dataplane holds what was asked (a tunnel the kernel cannot create, e.g.
//!   no ipip support, makes the node not ready while the other pools keep working), and
//!   IP forwarding is on (a read-only /proc/sys leaves it off: sessions would come up and
//!   attract traffic the kernel then drops).
//!
//! Pure: the HTTP server asks these with the published state and the time.

use std::time::{Duration, Instant};

/// How long the loop may go without turning before the agent counts as stuck. The loop
/// turns at least every second.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// What readiness depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthInput {
    pub speaker_running: bool,
    pub datastore_ok: bool,
    pub first_reconcile_done: bool,
    /// Dataplane failures (tunnels, NAT, IP forwarding), each naming what failed.
    pub dataplane_errors: Vec<String>,
}

/// `Ok` when ready, else every reason it is not.
pub fn readiness(h: &HealthInput) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if !h.speaker_running {
        why.push("the BGP speaker is not running".to_owned());
    }
    if !h.datastore_ok {
        why.push("the datastore does not answer".to_owned());
    }
    if !h.first_reconcile_done {
        why.push("the first reconcile has not been applied yet".to_owned());
    }
    why.extend(h.dataplane_errors.iter().cloned());
    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

/// `Ok` while the loop turned within [`STUCK_AFTER`] of `now`.
pub fn liveness(last_turn: Option<Instant>, now: Instant) -> Result<(), String> {
    match last_turn {
        Some(t) if now.saturating_duration_since(t) <= STUCK_AFTER => Ok(()),
        Some(t) => Err(format!(
            "the agent loop has not turned for {:.0?}",
            now.saturating_duration_since(t)
        )),
        None => Err("the agent loop has not started".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_table() {
        let ok = HealthInput {
            speaker_running: true,
            datastore_ok: true,
            first_reconcile_done: true,
            dataplane_errors: vec![],
        };
        assert_eq!(readiness(&ok), Ok(()));
        let cases = [
            (
                HealthInput {
                    speaker_running: false,
                    ..ok.clone()
                },
                "speaker",
            ),
            (
                HealthInput {
                    datastore_ok: false,
                    ..ok.clone()
                },
                "datastore",
            ),
            (
                HealthInput {
                    first_reconcile_done: false,
                    ..ok.clone()
                },
                "first reconcile",
            ),
            (
                HealthInput {
                    dataplane_errors: vec!["tunl0: no ipip, which IP pool ipip-pool needs".into()],
                    ..ok.clone()
                },
                "ipip-pool",
            ),
        ];
        for (h, want) in cases {
            let why = readiness(&h).unwrap_err();
            assert!(why.iter().any(|w| w.contains(want)), "{why:?} lacks {want}");
        }
    }

    #[test]
    fn liveness_table() {
        let now = Instant::now();
        assert!(liveness(Some(now), now).is_ok());
        assert!(liveness(None, now).is_err());
        let later = now + STUCK_AFTER + Duration::from_secs(1);
        let e = liveness(Some(now), later).unwrap_err();
        assert!(e.contains("not turned"), "{e}");
    }
}
