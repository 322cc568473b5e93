//! The UDP encapsulations: RFC 5881 (single hop) and RFC 5883 (multihop). The IO task
//! opens the sockets; the rules it applies to them are here.

use std::ops::RangeInclusive;

/// RFC 5881 §4: control packets of single-hop sessions go to this port.
pub const SINGLE_HOP_PORT: u16 = 3784;
/// RFC 5883 §5: control packets of multihop sessions go to this port.
pub const MULTIHOP_PORT: u16 = 4784;
/// RFC 5881 §4: the source port of a session, the same for all its packets.
pub const SOURCE_PORTS: RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: the TTL (IPv4) or Hop Limit (IPv6) every packet is sent with.
pub const TTL: u8 = 255;
/// The least TTL a multihop packet is accepted with unless configured otherwise: one
/// router between the peers, MetalLB's `minimumTtl` default.
pub const DEFAULT_MULTIHOP_MIN_TTL: u8 = 254;

/// How far the peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hop {
    /// RFC 5881: a directly connected peer.
    Single,
    /// RFC 5883: a peer some routers away. RFC 5883 §5 leaves the TTL check to the
    /// operator when there is no authentication; `min_ttl` is that check (255 minus the
    /// most routers a packet may cross).
    Multi { min_ttl: u8 },
}

impl Hop {
    /// The destination port of this encapsulation.
    pub fn port(self) -> u16 {
        match self {
            Hop::Single => SINGLE_HOP_PORT,
            Hop::Multi { .. } => MULTIHOP_PORT,
        }
    }
}

/// How a BGP peer's BFD session is carried, as the speaker's state decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopChoice {
    Fixed(Hop),
    /// Single hop when the peer is on a subnet of one of our interfaces, else multihop
    /// with `DEFAULT_MULTIHOP_MIN_TTL`: for iBGP peers, which say nothing about their
    /// distance. The IO task looks at the interfaces when it adds the session.
    Connected,
}

/// Whether a packet that arrived with this TTL or Hop Limit may be processed. RFC 5881
/// §5: single hop requires 255, so nobody off the link can forge a packet (every router
/// decrements it). RFC 5883 §5: multihop requires the configured minimum.
pub fn accept_ttl(hop: Hop, ttl: u8) -> bool {
    match hop {
        Hop::Single => ttl == TTL,
        Hop::Multi { min_ttl } => ttl >= min_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_hop_takes_only_255() {
        assert!(accept_ttl(Hop::Single, 255));
        for ttl in [0, 1, 64, 254] {
            assert!(!accept_ttl(Hop::Single, ttl), "{ttl}");
        }
    }

    #[test]
    fn multihop_takes_the_configured_minimum_and_above() {
        let hop = Hop::Multi {
            min_ttl: DEFAULT_MULTIHOP_MIN_TTL,
        };
        assert!(accept_ttl(hop, 255));
        assert!(accept_ttl(hop, 254));
        assert!(!accept_ttl(hop, 253));
        assert!(accept_ttl(Hop::Multi { min_ttl: 1 }, 1));
    }

    #[test]
    fn ports() {
        assert_eq!(Hop::Single.port(), 3784);
        assert_eq!(Hop::Multi { min_ttl: 250 }.port(), 4784);
        assert_eq!((*SOURCE_PORTS.start(), *SOURCE_PORTS.end()), (49152, 65535));
    }
}
