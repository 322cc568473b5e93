//! Timer jitter, from one seeded SplitMix64 generator: deterministic, so a test replays the
//! same timers, and independent of any random-number crate's version. Two rules use it:
//!
//! - RFC 4271 §10 (the BGP FSM): each time a jittered timer starts, its value is
//!   multiplied by a random factor uniformly distributed between 0.75 and 1.0 ([`Jitter::scale`]);
//! - RFC 5880 §6.8.7 (BFD): each transmit interval is reduced by a random 0–25 %, and by
//!   10–25 % when the detect multiplier is 1, so one late packet never ends a session
//!   ([`Jitter::tx_interval`]).

use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Jitter { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform factor in [0, 1) from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` times a factor in [0.75, 1.0): RFC 4271 §10.
    pub(crate) fn scale(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.75 + 0.25 * self.unit())
    }

    /// `interval` times a factor in (0.75, 1.0], or in [0.75, 0.9] with `detect_mult` 1.
    pub(crate) fn tx_interval(&mut self, interval: Duration, detect_mult: u8) -> Duration {
        let top = if detect_mult == 1 { 0.90 } else { 1.0 };
        interval.mul_f64(top - (top - 0.75) * self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_stays_within_range_and_spreads_over_it() {
        let mut j = Jitter::new(7);
        let base = Duration::from_secs(30);
        let draws: Vec<Duration> = (0..10_000).map(|_| j.scale(base)).collect();
        let lo = base.mul_f64(0.75);
        assert!(draws.iter().all(|d| *d >= lo && *d < base));
        // Each tenth of the range gets roughly a tenth of the draws.
        let mut buckets = [0u32; 10];
        for d in &draws {
            let f = (d.as_secs_f64() / base.as_secs_f64() - 0.75) / 0.25;
            buckets[((f * 10.0) as usize).min(9)] += 1;
        }
        assert!(
            buckets.iter().all(|b| (800..1200).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        let d = Duration::from_secs(5);
        let a: Vec<_> = {
            let mut j = Jitter::new(1);
            (0..8).map(|_| j.scale(d)).collect()
        };
        let b: Vec<_> = {
            let mut j = Jitter::new(1);
            (0..8).map(|_| j.scale(d)).collect()
        };
        let c: Vec<_> = {
            let mut j = Jitter::new(2);
            (0..8).map(|_| j.scale(d)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn within_range_and_spread_over_it() {
        let base = Duration::from_millis(300);
        for (mult, top) in [(3, 1.0), (1, 0.9)] {
            let mut j = Jitter::new(11);
            let draws: Vec<f64> = (0..10_000)
                .map(|_| j.tx_interval(base, mult).as_secs_f64() / base.as_secs_f64())
                .collect();
            assert!(draws.iter().all(|f| *f >= 0.75 - 1e-9 && *f <= top + 1e-9));
            let mut buckets = [0u32; 10];
            for f in &draws {
                let x = (f - 0.75) / (top - 0.75);
                buckets[((x * 10.0) as usize).min(9)] += 1;
            }
            assert!(
                buckets.iter().all(|b| (800..1200).contains(b)),
                "{buckets:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_schedule() {
        let d = Duration::from_millis(100);
        let run = |seed| {
            let mut j = Jitter::new(seed);
            (0..8).map(|_| j.tx_interval(d, 3)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
