//! Waiting on a condition with a deadline: the only way a test here lets time pass.
//! Polls with a short, growing backoff and, on timeout, names what it waited for and the
//! last value it saw, so a failure says "session 192.0.2.2 stuck in Active", not "false".

use crate::error::{Error, Result};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The outcome of one look at the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    /// The condition holds; waiting ends with this value.
    Ready(T),
    /// Not yet; the string describes what was observed instead.
    Pending(String),
}

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Calls `check` until it returns [`Poll::Ready`] or `timeout` has passed.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Poll<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let last = match check() {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(observed) => observed,
        };
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited,
                last,
            });
        }
        std::thread::sleep(backoff.min(timeout - waited));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Probes a value until `done` accepts it. An error from the probe (a daemon not yet
/// answering on its socket) counts as "not yet" and is reported if time runs out.
pub fn wait_for<V: Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<V>,
    mut done: impl FnMut(&V) -> bool,
) -> Result<V> {
    wait_until(timeout, what, || match probe() {
        Ok(value) if done(&value) => Poll::Ready(value),
        Ok(value) => Poll::Pending(format!("{value:?}")),
        Err(err) => Poll::Pending(format!("error: {err}")),
    })
}

/// Checks that `holds` stays true for the whole `window`, probing as [`wait_for`] does.
/// For negative claims ("with the wrong password the session never comes up"): it fails
/// as soon as the claim is broken, and otherwise returns the last value seen.
pub fn holds_for<V: Debug>(
    window: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<V>,
    mut holds: impl FnMut(&V) -> bool,
) -> Result<V> {
    let start = Instant::now();
    loop {
        let value = probe()?;
        if !holds(&value) {
            return Err(Error::Timeout {
                what: format!("{what} to keep holding for {window:?}"),
                waited: start.elapsed(),
                last: format!("broken by {value:?}"),
            });
        }
        if start.elapsed() >= window {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn returns_as_soon_as_ready() {
        let calls = Cell::new(0);
        let value = wait_until(Duration::from_secs(5), "third call", || {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                Poll::Ready(calls.get())
            } else {
                Poll::Pending(format!("call {}", calls.get()))
            }
        });
        assert_eq!(value.ok(), Some(3));
    }

    #[test]
    fn timeout_names_what_and_last_observation() {
        let err = wait_until::<()>(Duration::from_millis(60), "the moon", || {
            Poll::Pending("still cheese".into())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("the moon"), "{err}");
        assert!(err.contains("still cheese"), "{err}");
    }

    #[test]
    fn wait_for_reports_probe_errors_as_observations() {
        let err = wait_for(
            Duration::from_millis(50),
            "a socket",
            || -> Result<u32> { Err(Error::InvalidSpec("not listening".into())) },
            |_| true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not listening"), "{err}");
    }

    #[test]
    fn wait_for_shows_last_value_with_debug() {
        let err = wait_for(Duration::from_millis(50), "seven", || Ok(6u8), |v| *v == 7)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last observed: 6"), "{err}");
    }

    #[test]
    fn holds_for_fails_when_broken() {
        let n = Cell::new(0);
        let err = holds_for(
            Duration::from_secs(5),
            "below two",
            || {
                n.set(n.get() + 1);
                Ok(n.get())
            },
            |v| *v < 2,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("broken by 2"), "{err}");
    }

    #[test]
    fn holds_for_passes_over_the_window() {
        let v = holds_for(Duration::from_millis(250), "true", || Ok(true), |v| *v);
        assert_eq!(v.ok(), Some(true));
    }
}
