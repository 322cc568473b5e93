//! The monitor: a peer that counts the distinct prefixes it holds from what the daemon
//! under test exports, and says when it has them all.

use bgp::wire::{Nlri, Update};
use ipnet::IpNet;
use std::collections::HashSet;

/// The prefixes currently announced to us (announced minus withdrawn).
#[derive(Debug, Default)]
pub struct PrefixSet {
    held: HashSet<u128, BuildIdentity>,
}

/// Prefix keys are already well spread (address bits and length); hashing them again
/// with SipHash would cost more than the monitor's whole decode.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = Mix;
    fn build_hasher(&self) -> Mix {
        Mix(0)
    }
}

/// A multiply-xorshift mix of the key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mix(u64);

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64).rotate_left(17);
    }
}

fn key(n: &Nlri) -> u128 {
    match n.prefix {
        IpNet::V4(p) => (u128::from(u32::from(p.addr())) << 8) | u128::from(p.prefix_len()),
        // IPv6 keys keep the top 112 bits of the address; prefixes up to /112 stay distinct,
        // which the benchmark's feeds never exceed.
        IpNet::V6(p) => {
            (1u128 << 127) | ((u128::from(p.addr()) >> 16) << 8) | u128::from(p.prefix_len())
        }
    }
}

impl PrefixSet {
    pub fn with_capacity(n: usize) -> Self {
        PrefixSet {
            held: HashSet::with_capacity_and_hasher(n, BuildIdentity),
        }
    }

    /// Applies an UPDATE: withdrawals first, then announcements (RFC 4271 §4.3 allows
    /// both in one message, and a prefix in both is announced).
    pub fn apply(&mut self, u: &Update) {
        for n in &u.withdrawn {
            self.held.remove(&key(n));
        }
        if let Some(m) = &u.mp_unreach {
            for n in &m.withdrawn {
                self.held.remove(&key(n));
            }
        }
        for n in &u.nlri {
            self.held.insert(key(n));
        }
        if let Some(m) = &u.mp_reach {
            for n in &m.nlri {
                self.held.insert(key(n));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Nlri {
        Nlri::new(s.parse().unwrap())
    }

    #[test]
    fn counts_distinct_prefixes_announced_and_not_withdrawn() {
        let mut s = PrefixSet::default();
        s.apply(&Update {
            nlri: vec![n("10.0.0.0/24"), n("10.0.0.0/23"), n("10.0.1.0/24")],
            ..Update::default()
        });
        assert_eq!(s.len(), 3);
        // Re-announcing changes nothing; a withdrawal removes.
        s.apply(&Update {
            withdrawn: vec![n("10.0.1.0/24"), n("192.0.2.0/24")],
            nlri: vec![n("10.0.0.0/24")],
            ..Update::default()
        });
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn ipv4_and_ipv6_keys_differ() {
        let mut s = PrefixSet::default();
        s.apply(&Update {
            nlri: vec![n("10.0.0.0/8")],
            ..Update::default()
        });
        s.apply(&Update {
            mp_reach: Some(bgp::wire::update::MpReach {
                afi_safi: bgp::types::AfiSafi::new(2, 1),
                next_hop: bgp::wire::attr::NextHop::V6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: vec![n("a00::/8")],
            }),
            ..Update::default()
        });
        assert_eq!(s.len(), 2);
    }
}
