//! Polling until something holds, for the phases of the races.

use std::time::{Duration, Instant};

/// A wait that ran out of time: what was waited for, for how long, and the last reason
/// it was not there yet.
#[derive(Debug)]
pub struct TimedOut {
    pub what: String,
    pub secs: f64,
    pub last: String,
}

/// Calls `f` every `every` until it gives `Ok(Ok(value))`; `Ok(Err(reason))` means "not
/// yet". An `Err` from `f` ends the wait with it; after `timeout` the wait ends with
/// `timed_out` of what was waited for and the last reason.
pub fn until<T, E>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Result<T, String>, E>,
    timed_out: impl FnOnce(TimedOut) -> E,
) -> Result<T, E> {
    let start = Instant::now();
    loop {
        let last = match f()? {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            return Err(timed_out(TimedOut {
                what: what.to_string(),
                secs: start.elapsed().as_secs_f64(),
                last,
            }));
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_value_the_error_or_the_last_reason() {
        let mut n = 0;
        let v: Result<u32, String> = until(
            "three",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                Ok(if n == 3 {
                    Ok(n)
                } else {
                    Err(format!("at {n}"))
                })
            },
            |t| t.last,
        );
        assert_eq!(v, Ok(3));
        let e: Result<(), String> = until(
            "fails",
            Duration::from_secs(5),
            Duration::ZERO,
            || Err("broken".to_string()),
            |t| t.last,
        );
        assert_eq!(e, Err("broken".to_string()));
        let t: Result<(), String> = until(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || Ok(Err("still not".to_string())),
            |t| format!("{} after {:.2} s: {}", t.what, t.secs, t.last),
        );
        let t = t.unwrap_err();
        assert!(
            t.starts_with("never after 0.0") && t.ends_with("still not"),
            "{t}"
        );
    }
}
