//! The interop scenarios. Each builds its own namespaces (removed when it returns or
//! panics), starts serval and its peers from [`RouterSpec`]s, and checks both sides
//! through their own commands. Timers are short (hold time 9 s, restart time 30 s,
//! connection retries of 1–2 s) and every wait has a deadline.
//!
//! - [`per_peer`]: the matrix columns, generic over the peer daemon.
//! - [`with_daemons`]: scenarios with a fixed cast of real daemons (route reflection,
//!   reconfiguration, RFC 8538 with FRR).
//! - [`raw_client`]: scenarios where a hand-driven speaker sends exact bytes (malformed
//!   UPDATEs, graceful-restart timing, enhanced route refresh, 2-octet AS, hold timer).

use super::peer::{Feature, InteropPeer};
use super::raw::{self, RawPeer};
use super::{check, Verdict};
use crate::daemons::{BgpDaemon, Bird};
use crate::error::{Error, Result};
use crate::observed::Route;
use crate::serval::Serval;
use crate::spec::{
    Announcement, Asn, Community, Family, LargeCommunity, NeighborSpec, Password, RouterSpec,
    TtlMode,
};
use crate::topology::{self, Host};
use crate::wait::{holds_for, wait_for};
use crate::workdir::TestDir;
use bgp::config::{MaxPrefixConfig, PolicyRef};
use bgp::policy::{Actions, CommunityValue, Policy, Rule, Verdict as PolicyVerdict};
use bgp::status::PeerStatus;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub mod per_peer;
pub mod raw_client;
pub mod with_daemons;

pub use per_peer::*;
pub use raw_client::*;
pub use with_daemons::*;

pub const SERVAL_AS: Asn = Asn(65001);
pub const PEER_AS: Asn = Asn(65002);
/// Hold time proposed by both sides, seconds.
pub const HOLD: u16 = 9;
/// Graceful-restart time both sides announce.
pub const RESTART: Duration = Duration::from_secs(30);

const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    // Literals of this file only.
    s.parse()
        .unwrap_or_else(|_| IpNet::from(IpAddr::from([0, 0, 0, 0])))
}

/// A neighbour with the suite's timers: hold time 9 s and graceful restart.
pub fn neighbor(address: IpAddr, asn: Asn, local: IpAddr) -> NeighborSpec {
    NeighborSpec::new(address, asn)
        .local(local)
        .hold_time(HOLD)
        .graceful_restart(RESTART)
}

/// `n` IPv4 /24s from 198.18.100.0, for feeds that only need a count.
fn feed(first: u8, n: u8) -> Vec<Announcement> {
    (0..n)
        .map(|i| {
            Announcement::new(IpNet::from(
                ipnet::Ipv4Net::new(Ipv4Addr::new(198, 18, first.wrapping_add(i), 0), 24)
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

/// Starts `P` unless it cannot take part in `feature`.
fn unless_cannot<P: InteropPeer>(feature: Feature) -> Option<Verdict> {
    P::cannot(feature).map(|why| Verdict::NotApplicable(why.to_string()))
}

fn addr4(h: &Host) -> IpAddr {
    IpAddr::V4(h.v4)
}

fn addr6(h: &Host) -> IpAddr {
    IpAddr::V6(h.v6)
}

/// Both ends of every session established.
fn established_both<P: InteropPeer>(serval: &Serval, pairs: &[(&P, IpAddr, IpAddr)]) -> Result<()> {
    for (peer, peer_addr, serval_addr) in pairs {
        serval.wait_established(*peer_addr, SESSION_TIMEOUT)?;
        peer.wait_established(*serval_addr, SESSION_TIMEOUT)?;
    }
    Ok(())
}

/// The attributes a route should arrive with.
struct Expect<'a> {
    sent: &'a Announcement,
    as_path: Vec<Asn>,
    next_hop: IpAddr,
    link_local: Option<Ipv6Addr>,
    local_pref: Option<u32>,
    receiver: &'a str,
}

fn check_route(route: &Route, e: &Expect) -> Result<()> {
    let what = format!("{} at {}: {route:?}", e.sent.prefix, e.receiver);
    check(route.as_path == e.as_path, || {
        format!("AS path {:?} expected for {what}", e.as_path)
    })?;
    check(route.next_hop == Some(e.next_hop), || {
        format!("next hop {} expected for {what}", e.next_hop)
    })?;
    if let Some(ll) = e.link_local {
        check(route.link_local_next_hop == Some(ll), || {
            format!("link-local next hop {ll} expected for {what}")
        })?;
    }
    for c in &e.sent.communities {
        check(route.has_community(*c), || {
            format!("community {c} missing on {what}")
        })?;
    }
    for c in &e.sent.large_communities {
        check(route.has_large_community(*c), || {
            format!("large community {c} missing on {what}")
        })?;
    }
    check(route.med == e.sent.med, || {
        format!("MED {:?} expected for {what}", e.sent.med)
    })?;
    if e.local_pref.is_some() {
        check(route.local_pref == e.local_pref, || {
            format!("LOCAL_PREF {:?} expected for {what}", e.local_pref)
        })?;
    }
    Ok(())
}

fn capability_names(p: &PeerStatus) -> String {
    p.capabilities.join(", ")
}
