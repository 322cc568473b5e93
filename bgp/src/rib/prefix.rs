//! Compact prefix keys for the per-family tables: `Ipv4Net` is 5 bytes, `Ipv6Net` 17, both
//! byte aligned, so a destination spends no padding on its key.

use crate::types::Family;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt::Debug;

pub(crate) trait PrefixKey: Copy + Eq + Debug + 'static {
    const FAMILY: Family;
    fn from_net(net: &IpNet) -> Option<Self>;
    fn to_net(self) -> IpNet;
    fn len(self) -> u8;
    /// The same prefix shortened to `len` bits.
    fn supernet(self, len: u8) -> Self;
    /// A well-mixed hash for the destination index, keyed by a per-table random `seed` so
    /// that peers cannot choose prefixes that collide.
    fn hash64(self, seed: u64) -> u64;
}

/// The MurmurHash3 finaliser: every input bit affects every output bit, which hashbrown
/// needs both in the low bits (bucket) and the top seven (control byte). Prefixes of one
/// table differ in few bits, in the middle of the word; a weaker mix clusters them.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl PrefixKey for Ipv4Net {
    const FAMILY: Family = Family::Ipv4Unicast;
    fn from_net(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V4(n) => Some(n.trunc()),
            IpNet::V6(_) => None,
        }
    }
    fn to_net(self) -> IpNet {
        IpNet::V4(self)
    }
    fn len(self) -> u8 {
        self.prefix_len()
    }
    fn supernet(self, len: u8) -> Self {
        Ipv4Net::new(self.addr(), len.min(32))
            .map(|n| n.trunc())
            .unwrap_or(self)
    }
    fn hash64(self, seed: u64) -> u64 {
        mix(((u64::from(u32::from(self.addr())) << 8) | u64::from(self.prefix_len())) ^ seed)
    }
}

impl PrefixKey for Ipv6Net {
    const FAMILY: Family = Family::Ipv6Unicast;
    fn from_net(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V6(n) => Some(n.trunc()),
            IpNet::V4(_) => None,
        }
    }
    fn to_net(self) -> IpNet {
        IpNet::V6(self)
    }
    fn len(self) -> u8 {
        self.prefix_len()
    }
    fn supernet(self, len: u8) -> Self {
        Ipv6Net::new(self.addr(), len.min(128))
            .map(|n| n.trunc())
            .unwrap_or(self)
    }
    fn hash64(self, seed: u64) -> u64 {
        let a = u128::from(self.addr());
        mix(mix(((a >> 64) as u64) ^ seed) ^ (a as u64) ^ u64::from(self.prefix_len()))
    }
}
