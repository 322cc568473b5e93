//! RFC 4271 §10 jitter: each time a jittered timer starts, its value is multiplied by a
//! random factor uniformly distributed between 0.75 and 1.0.
//!
//! A seeded SplitMix64 generator: deterministic, so a test replays the same timers, and
//! independent of any random-number crate's version.

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

    /// `d` times a factor in [0.75, 1.0).
    pub(crate) fn scale(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.75 + 0.25 * self.unit())
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
}
