//! What a test asks of a BGP router, independent of which daemon plays it. Every
//! daemon runner renders its own configuration from a [`RouterSpec`]; a feature a
//! daemon cannot express is an error at start, never silently dropped.

use crate::error::{Error, Result};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

/// An autonomous system number (4 octets, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Asn(pub u32);

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A standard community (RFC 1997), shown as `asn:value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community {
    pub asn: u16,
    pub value: u16,
}

impl Community {
    pub const fn new(asn: u16, value: u16) -> Self {
        Community { asn, value }
    }

    /// From the 32-bit wire form (high half the AS).
    pub fn from_u32(raw: u32) -> Self {
        Community {
            asn: (raw >> 16) as u16,
            value: (raw & 0xffff) as u16,
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.asn, self.value)
    }
}

impl FromStr for Community {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidSpec(format!("community `{s}` is not ASN:VALUE"));
        let (a, v) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(Community {
            asn: a.parse().map_err(|_| bad())?,
            value: v.parse().map_err(|_| bad())?,
        })
    }
}

/// A large community (RFC 8092), shown as `global:local1:local2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl LargeCommunity {
    pub const fn new(global: u32, local1: u32, local2: u32) -> Self {
        LargeCommunity {
            global,
            local1,
            local2,
        }
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidSpec(format!("large community `{s}` is not G:L1:L2"));
        let mut parts = s.trim().split(':').map(|p| p.trim().parse::<u32>());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(g)), Some(Ok(l1)), Some(Ok(l2)), None) => Ok(LargeCommunity::new(g, l1, l2)),
            _ => Err(bad()),
        }
    }
}

/// The address families the test bed exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// The family a prefix belongs to.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }

    /// The family of an address (the default for a session to it).
    pub fn of_addr(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        }
    }
}

/// How far away the neighbour is and how the TTL is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMode {
    /// Directly connected (eBGP default: TTL 1).
    Direct,
    /// eBGP multihop: packets leave with this TTL.
    Multihop { ttl: u8 },
    /// GTSM (RFC 5082): packets leave with TTL 255 and only packets that crossed at
    /// most `hops` hops are accepted (minimum TTL 256 - hops; 1 = directly connected).
    Gtsm { hops: u8 },
}

/// A password for TCP MD5 signatures (RFC 2385). Restricted to characters every
/// daemon's config syntax takes unquoted-safe, so rendering never needs escaping.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(s: &str) -> Result<Password> {
        let ok = !s.is_empty()
            && s.len() <= 80
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+=@".contains(c));
        if ok {
            Ok(Password(s.to_string()))
        } else {
            Err(Error::InvalidSpec(format!(
                "password must be 1-80 of [A-Za-z0-9-_.+=@], got {} characters",
                s.len()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// One BGP neighbour as seen from the router being configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSpec {
    pub address: IpAddr,
    pub asn: Asn,
    /// Source address of the session; also where the router expects the peer to
    /// connect to. Needed for multihop and by ExaBGP.
    pub local_address: Option<IpAddr>,
    /// Only wait for the neighbour to connect.
    pub passive: bool,
    pub password: Option<Password>,
    pub ttl: TtlMode,
    /// Advertise graceful restart (RFC 4724) with this restart time.
    pub graceful_restart: Option<Duration>,
    /// Advertise route refresh (RFC 2918). On by default; some daemons cannot turn it off.
    pub route_refresh: bool,
    /// Send and receive multiple paths (RFC 7911).
    pub add_path: bool,
    /// The neighbour is a route-reflector client of this router (RFC 4456, iBGP).
    pub rr_client: bool,
    /// Families carried on the session; by default the family of `address`.
    pub families: Vec<Family>,
    /// Proposed hold time in seconds (keepalives every third of it); the daemon's
    /// default when `None`.
    pub hold_time: Option<u16>,
    /// BFD on the session (RFC 5880), tying the BGP session to it.
    pub bfd: Option<BfdSpec>,
}

/// BFD timers: what we accept, what we would like to send (milliseconds), the multiplier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdSpec {
    pub min_rx_ms: u32,
    pub min_tx_ms: u32,
    pub multiplier: u8,
}

impl NeighborSpec {
    pub fn new(address: IpAddr, asn: Asn) -> Self {
        NeighborSpec {
            address,
            asn,
            local_address: None,
            passive: false,
            password: None,
            ttl: TtlMode::Direct,
            graceful_restart: None,
            route_refresh: true,
            add_path: false,
            rr_client: false,
            families: vec![Family::of_addr(address)],
            hold_time: None,
            bfd: None,
        }
    }

    /// BFD on the session with these timers.
    pub fn bfd(mut self, min_rx_ms: u32, min_tx_ms: u32, multiplier: u8) -> Self {
        self.bfd = Some(BfdSpec {
            min_rx_ms,
            min_tx_ms,
            multiplier,
        });
        self
    }

    /// Proposes this hold time (seconds, 3 or more).
    pub fn hold_time(mut self, secs: u16) -> Self {
        self.hold_time = Some(secs);
        self
    }

    pub fn local(mut self, addr: IpAddr) -> Self {
        self.local_address = Some(addr);
        self
    }

    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    pub fn password(mut self, password: Password) -> Self {
        self.password = Some(password);
        self
    }

    pub fn ttl(mut self, ttl: TtlMode) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn graceful_restart(mut self, restart_time: Duration) -> Self {
        self.graceful_restart = Some(restart_time);
        self
    }

    pub fn no_route_refresh(mut self) -> Self {
        self.route_refresh = false;
        self
    }

    pub fn add_path(mut self) -> Self {
        self.add_path = true;
        self
    }

    pub fn rr_client(mut self) -> Self {
        self.rr_client = true;
        self
    }

    pub fn families(mut self, families: &[Family]) -> Self {
        self.families = families.to_vec();
        self
    }

    pub fn carries(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// A prefix a router originates, with the attributes it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub prefix: IpNet,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
}

impl Announcement {
    pub fn new(prefix: IpNet) -> Self {
        Announcement {
            prefix: prefix.trunc(),
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
            local_pref: None,
        }
    }

    pub fn community(mut self, c: Community) -> Self {
        self.communities.push(c);
        self
    }

    pub fn large_community(mut self, c: LargeCommunity) -> Self {
        self.large_communities.push(c);
        self
    }

    pub fn med(mut self, med: u32) -> Self {
        self.med = Some(med);
        self
    }

    pub fn local_pref(mut self, local_pref: u32) -> Self {
        self.local_pref = Some(local_pref);
        self
    }

    pub fn family(&self) -> Family {
        Family::of(&self.prefix)
    }
}

/// One BGP router: identity, where it listens, its neighbours and what it originates.
/// Import and export accept everything (the runners undo each daemon's stricter
/// defaults), so what a test announces is what the other side receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub asn: Asn,
    pub router_id: Ipv4Addr,
    /// Addresses to accept connections on; empty means all.
    pub listen: Vec<IpAddr>,
    pub neighbors: Vec<NeighborSpec>,
    pub announce: Vec<Announcement>,
}

impl RouterSpec {
    pub fn new(asn: Asn, router_id: Ipv4Addr) -> Self {
        RouterSpec {
            asn,
            router_id,
            listen: Vec::new(),
            neighbors: Vec::new(),
            announce: Vec::new(),
        }
    }

    pub fn listen(mut self, addr: IpAddr) -> Self {
        self.listen.push(addr);
        self
    }

    pub fn neighbor(mut self, n: NeighborSpec) -> Self {
        self.neighbors.push(n);
        self
    }

    pub fn announce(mut self, a: Announcement) -> Self {
        self.announce.push(a);
        self
    }

    pub fn find_neighbor(&self, address: IpAddr) -> Option<&NeighborSpec> {
        self.neighbors.iter().find(|n| n.address == address)
    }

    /// Whether any neighbour carries `family`.
    pub fn uses(&self, family: Family) -> bool {
        self.neighbors.iter().any(|n| n.carries(family))
    }

    /// Adds or replaces the announcement of `a.prefix`.
    pub(crate) fn upsert_announcement(&mut self, a: Announcement) {
        match self.announce.iter_mut().find(|x| x.prefix == a.prefix) {
            Some(existing) => *existing = a,
            None => self.announce.push(a),
        }
    }

    /// Removes the announcement of `prefix`; false when it was not announced.
    pub(crate) fn remove_announcement(&mut self, prefix: IpNet) -> bool {
        let before = self.announce.len();
        self.announce.retain(|a| a.prefix != prefix.trunc());
        self.announce.len() != before
    }

    /// Checks what no daemon can do, before any config is written.
    pub fn validate(&self) -> Result<()> {
        for n in &self.neighbors {
            if n.families.is_empty() {
                return Err(Error::InvalidSpec(format!(
                    "neighbor {} carries no address family",
                    n.address
                )));
            }
            if n.rr_client && n.asn != self.asn {
                return Err(Error::InvalidSpec(format!(
                    "neighbor {} is a route-reflector client but not iBGP (AS {} vs {})",
                    n.address, n.asn, self.asn
                )));
            }
            if n.hold_time.is_some_and(|h| h < 3) {
                return Err(Error::InvalidSpec(format!(
                    "neighbor {}: a hold time is at least 3 s",
                    n.address
                )));
            }
            if let TtlMode::Gtsm { hops: 0 } | TtlMode::Multihop { ttl: 0 } = n.ttl {
                return Err(Error::InvalidSpec(format!(
                    "neighbor {}: a TTL or hop count of 0",
                    n.address
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_forms() {
        assert_eq!(Community::from_u32(4259905546), Community::new(65001, 10));
        assert_eq!(
            "65001:10".parse::<Community>().ok(),
            Some(Community::new(65001, 10))
        );
        assert!("65001".parse::<Community>().is_err());
        assert!("70000:1".parse::<Community>().is_err());
        assert_eq!(Community::new(1, 2).to_string(), "1:2");
    }

    #[test]
    fn large_community_forms() {
        let c = LargeCommunity::new(65001, 1, 2);
        assert_eq!("65001:1:2".parse::<LargeCommunity>().ok(), Some(c));
        assert_eq!(c.to_string(), "65001:1:2");
        assert!("1:2".parse::<LargeCommunity>().is_err());
        assert!("1:2:3:4".parse::<LargeCommunity>().is_err());
    }

    #[test]
    fn passwords_are_restricted_to_safe_characters() {
        assert!(Password::new("s3cret-key_1").is_ok());
        assert!(Password::new("").is_err());
        assert!(Password::new("has space").is_err());
        assert!(Password::new("quo\"te").is_err());
        assert_eq!(
            format!("{:?}", Password::new("abc").ok()),
            "Some(Password(..))"
        );
    }

    #[test]
    fn neighbor_defaults_to_its_address_family() {
        let n = NeighborSpec::new("2001:db8::1".parse().unwrap(), Asn(1));
        assert_eq!(n.families, vec![Family::Ipv6Unicast]);
        assert!(n.route_refresh);
        assert_eq!(n.ttl, TtlMode::Direct);
    }

    #[test]
    fn announcements_are_replaced_and_removed_by_prefix() {
        let p: IpNet = "203.0.113.0/24".parse().unwrap();
        let mut spec = RouterSpec::new(Asn(1), Ipv4Addr::new(1, 1, 1, 1));
        spec.upsert_announcement(Announcement::new(p));
        spec.upsert_announcement(Announcement::new(p).med(5));
        assert_eq!(spec.announce.len(), 1);
        assert_eq!(spec.announce[0].med, Some(5));
        assert!(spec.remove_announcement(p));
        assert!(!spec.remove_announcement(p));
    }

    #[test]
    fn announcement_prefix_is_truncated() {
        let a = Announcement::new("203.0.113.7/24".parse().unwrap());
        assert_eq!(a.prefix.to_string(), "203.0.113.0/24");
    }

    #[test]
    fn validate_rejects_ebgp_rr_client_and_empty_families() {
        let rid = Ipv4Addr::new(1, 1, 1, 1);
        let addr: IpAddr = "192.0.2.2".parse().unwrap();
        let rr = RouterSpec::new(Asn(1), rid).neighbor(NeighborSpec::new(addr, Asn(2)).rr_client());
        assert!(rr.validate().is_err());
        let empty =
            RouterSpec::new(Asn(1), rid).neighbor(NeighborSpec::new(addr, Asn(2)).families(&[]));
        assert!(empty.validate().is_err());
        let ok = RouterSpec::new(Asn(1), rid).neighbor(NeighborSpec::new(addr, Asn(1)).rr_client());
        assert!(ok.validate().is_ok());
    }
}
