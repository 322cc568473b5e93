//! The interop scenarios. Each builds its own namespaces (removed when it returns or
//! panics), starts serval and the peer daemon from [`RouterSpec`]s, and checks both
//! sides through their own commands. Timers are short (hold time 9 s, restart time
//! 30 s, connection retries of 1–2 s) and every wait has a deadline.

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

// ---- 1. session ----

/// eBGP over IPv4 and IPv6 and iBGP over IPv4 on one segment; both ends establish and
/// each side's view of the other's capabilities holds what both announce.
pub fn session<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::Session) {
        return Ok(v);
    }
    let seg = topology::segment(3)?;
    let (s, e, i) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(e), PEER_AS, addr4(s)))
            .neighbor(neighbor(addr6(e), PEER_AS, addr6(s)))
            .neighbor(neighbor(addr4(i), SERVAL_AS, addr4(s))),
    )?;
    let ebgp = P::start(
        &e.ns,
        dir,
        RouterSpec::new(PEER_AS, e.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(e)))
            .neighbor(neighbor(addr6(s), SERVAL_AS, addr6(e))),
    )?;
    let ibgp = P::start(
        &i.ns,
        dir,
        RouterSpec::new(SERVAL_AS, i.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(i))),
    )?;
    let sessions = [
        (&ebgp, addr4(e), addr4(s), "ebgp", Family::Ipv4Unicast),
        (&ebgp, addr6(e), addr6(s), "ebgp", Family::Ipv6Unicast),
        (&ibgp, addr4(i), addr4(s), "ibgp", Family::Ipv4Unicast),
    ];
    established_both(&serval, &sessions.map(|(p, pa, sa, _, _)| (p, pa, sa)))?;
    for (peer, peer_addr, serval_addr, kind, family) in sessions {
        let st = serval.peer_status(peer_addr)?;
        check(st.kind == kind, || {
            format!("serval calls {peer_addr} {:?}, expected {kind}", st.kind)
        })?;
        check(st.hold_time == Some(HOLD), || {
            format!("hold time with {peer_addr}: {:?}", st.hold_time)
        })?;
        let fam = match family {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        };
        let mut want = vec!["4-octet-as", "route-refresh", "graceful-restart", fam];
        if P::ENHANCED_ROUTE_REFRESH {
            want.push("enhanced-route-refresh");
        }
        for cap in &want {
            check(st.capabilities.iter().any(|c| c == cap), || {
                format!(
                    "serval's session with {peer_addr} lacks {cap}: {}",
                    capability_names(&st)
                )
            })?;
        }
        let seen = peer.seen_capabilities(serval_addr)?;
        for cap in ["4-octet-as", "route-refresh", "graceful-restart", fam] {
            check(seen.iter().any(|c| c == cap), || {
                format!("{} did not see {cap} in serval's OPEN: {seen:?}", P::NAME)
            })?;
        }
        check(
            !seen.iter().any(|c| c.ends_with("-unicast") && c != fam),
            || {
                format!(
                    "{} saw a family serval does not carry on {serval_addr}: {seen:?}",
                    P::NAME
                )
            },
        )?;
    }
    Ok(Verdict::pass())
}

// ---- 2. routes both ways ----

fn serval_routes() -> [Announcement; 2] {
    let attrs = |a: Announcement| {
        a.community(Community::new(65001, 10))
            .large_community(LargeCommunity::new(65001, 1, 2))
            .med(42)
            .local_pref(300)
    };
    [
        attrs(Announcement::new(net("203.0.113.0/25"))),
        attrs(Announcement::new(net("2001:db8:f1::/48"))),
    ]
}

fn peer_routes() -> [Announcement; 2] {
    let attrs = |a: Announcement| {
        a.community(Community::new(65002, 20))
            .community(Community::new(65002, 21))
            .large_community(LargeCommunity::new(65002, 5, 6))
            .med(7)
    };
    [
        attrs(Announcement::new(net("198.51.100.0/25"))),
        attrs(Announcement::new(net("2001:db8:f2::/48"))),
    ]
}

/// IPv4 and IPv6 prefixes with MED, communities and large communities flow both ways
/// over eBGP (IPv6 next hops global, plus link-local where the peer shows it), and over
/// iBGP with LOCAL_PREF; withdrawals on either side reach the other.
pub fn routes<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::Routes) {
        return Ok(v);
    }
    let seg = topology::segment(3)?;
    let (s, e, i) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let ll = |h: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, h);
    if P::LINK_LOCAL_NEXT_HOP {
        for (k, h) in [s, e, i].into_iter().enumerate() {
            h.ns.add_addr(
                &h.ifname,
                IpNet::new(ll(k as u16 + 1).into(), 64).unwrap_or_default(),
            )?;
        }
    }
    let mine = serval_routes();
    let theirs = peer_routes();
    let ibgp_route = Announcement::new(net("192.0.2.128/25"))
        .community(Community::new(65001, 30))
        .large_community(LargeCommunity::new(65001, 3, 4))
        .med(11)
        .local_pref(250);
    // RFC 1997 NO_EXPORT: serval keeps it inside its AS.
    let no_export =
        Announcement::new(net("192.0.2.64/26")).community(Community::new(0xffff, 0xff01));

    let mut serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(e), PEER_AS, addr4(s)))
            .neighbor(neighbor(addr6(e), PEER_AS, addr6(s)).families(&[Family::Ipv6Unicast]))
            .neighbor(neighbor(addr4(i), SERVAL_AS, addr4(s)))
            .announce(mine[0].clone())
            .announce(mine[1].clone()),
    )?;
    let mut ebgp = P::start(
        &e.ns,
        dir,
        RouterSpec::new(PEER_AS, e.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(e)))
            .neighbor(neighbor(addr6(s), SERVAL_AS, addr6(e)))
            .announce(theirs[0].clone())
            .announce(theirs[1].clone()),
    )?;
    let ibgp = P::start(
        &i.ns,
        dir,
        RouterSpec::new(SERVAL_AS, i.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(i)))
            .announce(ibgp_route.clone())
            .announce(no_export.clone()),
    )?;
    established_both(
        &serval,
        &[
            (&ebgp, addr4(e), addr4(s)),
            (&ebgp, addr6(e), addr6(s)),
            (&ibgp, addr4(i), addr4(s)),
        ],
    )?;
    let ll_of = |k: u16| P::LINK_LOCAL_NEXT_HOP.then(|| ll(k));

    // serval → eBGP peer, both families.
    for (a, from, nh, link_local) in [
        (&mine[0], addr4(s), addr4(s), None),
        (&mine[1], addr6(s), addr6(s), ll_of(1)),
    ] {
        let got = ebgp.wait_route(from, a.prefix, ROUTE_TIMEOUT)?;
        check_route(
            &got,
            &Expect {
                sent: a,
                as_path: vec![SERVAL_AS],
                next_hop: nh,
                link_local,
                local_pref: None,
                receiver: P::NAME,
            },
        )?;
    }
    // eBGP peer → serval.
    for (a, from, nh, link_local) in [
        (&theirs[0], addr4(e), addr4(e), None),
        (&theirs[1], addr6(e), addr6(e), ll_of(2)),
    ] {
        let got = serval.wait_route(from, a.prefix, ROUTE_TIMEOUT)?;
        check_route(
            &got,
            &Expect {
                sent: a,
                as_path: vec![PEER_AS],
                next_hop: nh,
                link_local,
                local_pref: None,
                receiver: "serval",
            },
        )?;
    }
    // iBGP both ways: empty AS path, LOCAL_PREF carried.
    let got = ibgp.wait_route(addr4(s), mine[0].prefix, ROUTE_TIMEOUT)?;
    check_route(
        &got,
        &Expect {
            sent: &mine[0],
            as_path: vec![],
            next_hop: addr4(s),
            link_local: None,
            local_pref: mine[0].local_pref,
            receiver: &format!("{} (iBGP)", P::NAME),
        },
    )?;
    let got = serval.wait_route(addr4(i), ibgp_route.prefix, ROUTE_TIMEOUT)?;
    check_route(
        &got,
        &Expect {
            sent: &ibgp_route,
            as_path: vec![],
            next_hop: addr4(i),
            link_local: None,
            local_pref: ibgp_route.local_pref,
            receiver: "serval (iBGP)",
        },
    )?;

    // Transit: what serval learned over iBGP goes to the eBGP peer with serval's AS
    // prepended (next hop serval, or the originator when it shares the peer's subnet,
    // RFC 4271 §5.1.3), and what it learned over eBGP goes to the iBGP peer with the AS
    // path and next hop unchanged and serval's LOCAL_PREF (default 100).
    let got = ebgp.wait_route(addr4(s), ibgp_route.prefix, ROUTE_TIMEOUT)?;
    serval.wait_route(addr4(i), no_export.prefix, ROUTE_TIMEOUT)?;
    holds_for(
        Duration::from_secs(2),
        "a NO_EXPORT route to stay away from the eBGP peer",
        || ebgp.received_routes(addr4(s)),
        |rs| !rs.iter().any(|r| r.prefix == no_export.prefix),
    )?;
    check(got.as_path == vec![SERVAL_AS], || {
        format!("AS path of the transit route at {}: {got:?}", P::NAME)
    })?;
    check(
        got.next_hop == Some(addr4(s)) || got.next_hop == Some(addr4(i)),
        || format!("next hop of the transit route at {}: {got:?}", P::NAME),
    )?;
    let got = ibgp.wait_route(addr4(s), theirs[0].prefix, ROUTE_TIMEOUT)?;
    check(got.as_path == vec![PEER_AS], || {
        format!("AS path of the eBGP route at the iBGP peer: {got:?}")
    })?;
    check(got.next_hop == Some(addr4(e)), || {
        format!("next hop of the eBGP route should reach the iBGP peer unchanged: {got:?}")
    })?;
    check(got.local_pref == Some(100), || {
        format!("LOCAL_PREF of the eBGP route at the iBGP peer: {got:?}")
    })?;

    // Withdrawals, one side at a time, each family.
    for (k, (peer_addr, serval_addr)) in [(addr4(e), addr4(s)), (addr6(e), addr6(s))]
        .into_iter()
        .enumerate()
    {
        serval.withdraw(mine[k].prefix)?;
        ebgp.wait_route_gone(serval_addr, mine[k].prefix, ROUTE_TIMEOUT)?;
        ebgp.withdraw(theirs[k].prefix)?;
        serval.wait_route_gone(peer_addr, theirs[k].prefix, ROUTE_TIMEOUT)?;
    }
    ibgp.wait_route_gone(addr4(s), mine[0].prefix, ROUTE_TIMEOUT)?;
    let note = if P::LINK_LOCAL_NEXT_HOP {
        "link-local next hops checked both ways"
    } else {
        "global IPv6 next hops only (the daemon shows no link-local one)"
    };
    Ok(Verdict::Pass(note.into()))
}

// ---- 3. md5 ----

/// With matching passwords the IPv4 session (serval connects) and the IPv6 one (serval
/// only listens: the key on the IPv6 listener) establish; with a wrong password on a
/// second peer the kernel drops the segments and the session never forms, and serval's
/// status says why as far as it can tell.
pub fn md5<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::Md5) {
        return Ok(v);
    }
    let seg = topology::segment(3)?;
    let (s, good, bad) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let pw = |p: &str| Password::new(p);
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(good), PEER_AS, addr4(s)).password(pw("sv-right-4")?))
            .neighbor(
                neighbor(addr6(good), PEER_AS, addr6(s))
                    .password(pw("sv-right-6")?)
                    .passive(),
            )
            .neighbor(neighbor(addr4(bad), PEER_AS, addr4(s)).password(pw("sv-serval-says")?)),
    )?;
    let peer = P::start(
        &good.ns,
        dir,
        RouterSpec::new(PEER_AS, good.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(good)).password(pw("sv-right-4")?))
            .neighbor(neighbor(addr6(s), SERVAL_AS, addr6(good)).password(pw("sv-right-6")?)),
    )?;
    let wrong = P::start(
        &bad.ns,
        dir,
        RouterSpec::new(PEER_AS, bad.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(bad)).password(pw("sv-peer-says")?)),
    )?;
    established_both(
        &serval,
        &[
            (&peer, addr4(good), addr4(s)),
            (&peer, addr6(good), addr6(s)),
        ],
    )?;
    wait_for(
        SESSION_TIMEOUT,
        "the kernel to drop segments with a wrong MD5 signature",
        || Ok(s.ns.tcp_ext_counter("TCPMD5Failure")? + bad.ns.tcp_ext_counter("TCPMD5Failure")?),
        |n| *n > 0,
    )?;
    let last = holds_for(
        Duration::from_secs(12),
        "the session with mismatched passwords to stay down",
        || Ok((serval.peer_status(addr4(bad))?, wrong.session(addr4(s))?)),
        |(x, y)| x.state != "Established" && !y.established,
    )?;
    let said = last.0.last_error.clone().unwrap_or_default();
    check(said.to_ascii_lowercase().contains("md5"), || {
        format!(
            "serval's status for the peer with the wrong password does not point at TCP MD5: {:?}",
            last.0
        )
    })?;
    Ok(Verdict::Pass(format!("serval says: {said}")))
}

// ---- 4. graceful restart ----

/// serval stops with SIGTERM (no NOTIFICATION); the peer keeps serval's routes stale
/// (checked by its stale flag, or by the routes outliving a hold time); serval comes
/// back without one of them, defers its selection until the peer's End-of-RIB, and the
/// peer then drops the one serval no longer announces and keeps the other, fresh.
pub fn gr_serval_restarts<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::GrServalRestarts) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let keep = Announcement::new(net("203.0.113.0/26")).community(Community::new(65001, 1));
    let drop_ = Announcement::new(net("203.0.113.64/26")).community(Community::new(65001, 2));
    let mut serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(p), PEER_AS, addr4(s)))
            .announce(keep.clone())
            .announce(drop_.clone()),
    )?;
    let peer = P::start(
        &p.ns,
        dir,
        RouterSpec::new(PEER_AS, p.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)))
            .announce(Announcement::new(net("198.51.100.0/24"))),
    )?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    for a in [&keep, &drop_] {
        peer.wait_route(addr4(s), a.prefix, ROUTE_TIMEOUT)?;
    }
    let st = serval.peer_status(addr4(p))?;
    check(
        st.capabilities.iter().any(|c| c == "graceful-restart"),
        || format!("graceful restart not negotiated: {}", capability_names(&st)),
    )?;

    serval.stop_graceful()?;
    let both = |routes: &Vec<Route>| {
        [&keep, &drop_]
            .iter()
            .all(|a| routes.iter().any(|r| r.prefix == a.prefix))
    };
    let how = if P::SHOWS_STALE {
        wait_for(
            ROUTE_TIMEOUT,
            &format!("{} to mark serval's routes stale", P::NAME),
            || peer.received_routes(addr4(s)),
            |routes| {
                both(routes)
                    && routes
                        .iter()
                        .filter(|r| r.prefix == keep.prefix || r.prefix == drop_.prefix)
                        .all(|r| r.stale == Some(true))
            },
        )?;
        "stale flag shown by the peer".to_string()
    } else {
        let window = Duration::from_secs(u64::from(HOLD) + 3);
        holds_for(
            window,
            &format!("{} to keep serval's routes while serval is down", P::NAME),
            || peer.received_routes(addr4(s)),
            both,
        )?;
        format!(
            "routes kept {} s with serval down (longer than the {HOLD} s hold time)",
            window.as_secs()
        )
    };
    check(!peer.session(addr4(s))?.established, || {
        "the peer still shows the session established while serval is down".into()
    })?;

    // Back without `drop_`: the peer removes it at our End-of-RIB, keeps `keep`.
    serval.withdraw(drop_.prefix)?;
    serval.launch()?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    let routes = wait_for(
        ROUTE_TIMEOUT,
        &format!(
            "{} to drop {} and hold {} fresh after serval's End-of-RIB",
            P::NAME,
            drop_.prefix,
            keep.prefix
        ),
        || peer.received_routes(addr4(s)),
        |routes| {
            !routes.iter().any(|r| r.prefix == drop_.prefix)
                && routes
                    .iter()
                    .any(|r| r.prefix == keep.prefix && r.stale != Some(true))
        },
    )?;
    if let Some(r) = routes.iter().find(|r| r.prefix == keep.prefix) {
        check(r.has_community(Community::new(65001, 1)), || {
            format!(
                "{} lost its attributes over the restart: {r:?}",
                keep.prefix
            )
        })?;
    }
    Ok(Verdict::Pass(how))
}

/// The peer dies (SIGKILL: no NOTIFICATION) and comes back; serval keeps its routes
/// stale meanwhile (status shows them stale, past the hold time) and fresh again after
/// the peer's End-of-RIB.
pub fn gr_peer_restarts<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::GrPeerRestarts) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let routes = feed(100, 2);
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(p), PEER_AS, addr4(s)))
            .announce(Announcement::new(net("203.0.113.0/24"))),
    )?;
    let mut spec = RouterSpec::new(PEER_AS, p.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)));
    for a in &routes {
        spec = spec.announce(a.clone());
    }
    let mut peer = P::start(&p.ns, dir, spec)?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    for a in &routes {
        serval.wait_route(addr4(p), a.prefix, ROUTE_TIMEOUT)?;
    }

    peer.kill()?;
    let all_stale = |rs: &Vec<Route>| {
        routes.iter().all(|a| {
            rs.iter()
                .any(|r| r.prefix == a.prefix && r.stale == Some(true))
        })
    };
    wait_for(
        SESSION_TIMEOUT,
        "serval to notice the peer is gone and mark its routes stale",
        || serval.received_routes(addr4(p)),
        all_stale,
    )?;
    holds_for(
        Duration::from_secs(u64::from(HOLD) + 3),
        "serval to keep the restarting peer's routes stale",
        || serval.received_routes(addr4(p)),
        all_stale,
    )?;
    let st = serval.peer_status(addr4(p))?;
    let stale: u32 = st.families.iter().map(|f| f.stale).sum();
    check(stale as usize == routes.len(), || {
        format!(
            "serval's status counts {stale} stale prefixes, expected {}: {st:?}",
            routes.len()
        )
    })?;

    peer.restart()?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    wait_for(
        ROUTE_TIMEOUT,
        "serval to hold the peer's routes fresh after its End-of-RIB",
        || serval.received_routes(addr4(p)),
        |rs| {
            routes.iter().all(|a| {
                rs.iter()
                    .any(|r| r.prefix == a.prefix && r.stale == Some(false))
            })
        },
    )?;
    let st = serval.peer_status(addr4(p))?;
    let stale: u32 = st.families.iter().map(|f| f.stale).sum();
    check(stale == 0, || {
        format!("stale prefixes left after the End-of-RIB: {st:?}")
    })?;
    Ok(Verdict::pass())
}

// ---- 5. route refresh ----

fn refresh_pair<P: InteropPeer>(
    dir: &TestDir,
    link: &topology::Link,
) -> Result<(Serval, P, Vec<Announcement>)> {
    let (s, p) = (&link.a, &link.b);
    let theirs = feed(100, 3);
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(p), PEER_AS, addr4(s)))
            .announce(Announcement::new(net("203.0.113.0/24")))
            .announce(Announcement::new(net("203.0.113.0/25")))
            .announce(Announcement::new(net("203.0.113.128/25"))),
    )?;
    let mut spec = RouterSpec::new(PEER_AS, p.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)));
    for a in &theirs {
        spec = spec.announce(a.clone());
    }
    let peer = P::start(&p.ns, dir, spec)?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    for a in &theirs {
        serval.wait_route(addr4(p), a.prefix, ROUTE_TIMEOUT)?;
    }
    peer.wait_route(addr4(s), net("203.0.113.0/24"), ROUTE_TIMEOUT)?;
    Ok((serval, peer, theirs))
}

/// `serval bgp refresh PEER`: the peer sends its table again (serval counts the
/// UPDATEs) and nothing is lost or left stale.
pub fn refresh_serval_asks<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::RefreshServalAsks) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (serval, _peer, theirs) = refresh_pair::<P>(dir, &link)?;
    let p = addr4(&link.b);
    let before = serval.peer_status(p)?.updates_received;
    serval.refresh(p)?;
    let after = wait_for(
        ROUTE_TIMEOUT,
        "serval to receive the peer's table again",
        || serval.peer_status(p),
        |st| st.updates_received > before,
    )?;
    let routes = serval.received_routes(p)?;
    for a in &theirs {
        check(
            routes
                .iter()
                .any(|r| r.prefix == a.prefix && r.stale != Some(true)),
            || {
                format!(
                    "{} missing or stale after the refresh: {routes:?}",
                    a.prefix
                )
            },
        )?;
    }
    Ok(Verdict::Pass(format!(
        "{} UPDATEs received again",
        after.updates_received - before
    )))
}

/// The peer asks with its own command; serval sends its table again (its status counts
/// the UPDATEs), bracketed by Begin/End of Route Refresh where enhanced route refresh
/// was negotiated.
pub fn refresh_peer_asks<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::RefreshPeerAsks) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (serval, peer, _) = refresh_pair::<P>(dir, &link)?;
    let (s, p) = (addr4(&link.a), addr4(&link.b));
    let st = serval.peer_status(p)?;
    let enhanced = st
        .capabilities
        .iter()
        .any(|c| c == "enhanced-route-refresh");
    check(enhanced == P::ENHANCED_ROUTE_REFRESH, || {
        format!(
            "enhanced route refresh negotiated: {enhanced}, expected {}: {}",
            P::ENHANCED_ROUTE_REFRESH,
            capability_names(&st)
        )
    })?;
    let before = st.updates_sent;
    let markers = peer.refresh_markers_received(s)?;
    peer.request_refresh(s)?;
    let after = wait_for(
        ROUTE_TIMEOUT,
        "serval to send its table again",
        || serval.peer_status(p),
        |st| st.updates_sent > before,
    )?;
    let mut bracket = String::new();
    if let Some((borr, eorr)) = markers {
        let now = wait_for(
            ROUTE_TIMEOUT,
            &format!("{} to receive Begin and End of Route Refresh", P::NAME),
            || peer.refresh_markers_received(s),
            |m| m.is_some_and(|(b, e)| b > borr && e > eorr),
        )?;
        bracket = format!(" (BoRR/EoRR counted by the peer: {now:?})");
    }
    let routes = peer.received_routes(s)?;
    for prefix in ["203.0.113.0/24", "203.0.113.0/25", "203.0.113.128/25"] {
        check(
            routes
                .iter()
                .any(|r| r.prefix == net(prefix) && r.stale != Some(true)),
            || format!("{prefix} missing or stale at the peer after the refresh: {routes:?}"),
        )?;
    }
    Ok(Verdict::Pass(format!(
        "{} UPDATEs sent again{}{bracket}",
        after.updates_sent - before,
        if enhanced {
            ", enhanced route refresh"
        } else {
            ""
        }
    )))
}

// ---- 6. max-prefix ----

/// The peer sends five prefixes, serval allows three: Cease / Maximum Number of
/// Prefixes Reached (with AFI/SAFI/limit) ends the session, the peer shows it as its
/// last error, serval's status says it, and with `restart-after` the session returns.
pub fn max_prefix<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::MaxPrefix) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let serval = Serval::start_with(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4).neighbor(neighbor(addr4(p), PEER_AS, addr4(s))),
        |cfg| {
            cfg.peers[0].max_prefix = Some(MaxPrefixConfig {
                limit: 3,
                action: Default::default(),
                count_filtered: false,
                restart_after: Some(5),
            });
        },
    )?;
    let mut spec = RouterSpec::new(PEER_AS, p.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)));
    for a in feed(100, 5) {
        spec = spec.announce(a);
    }
    let peer = P::start(&p.ns, dir, spec)?;
    let st = wait_for(
        SESSION_TIMEOUT,
        "serval to close the session over the prefix limit",
        || serval.peer_status(addr4(p)),
        |st| {
            st.flaps >= 1
                && st
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("maximum"))
        },
    )?;
    let said = st.last_error.clone().unwrap_or_default();
    check(said.contains('3'), || {
        format!("serval's status does not name the limit: {said}")
    })?;
    let theirs = wait_for(
        ROUTE_TIMEOUT,
        &format!("{} to show the Cease it received", P::NAME),
        || peer.last_error(addr4(s)),
        |e| {
            let e = e.to_ascii_lowercase().replace(' ', "");
            e.contains("prefix")
                || (e.contains("\"code\":6") && e.contains("\"subcode\":1"))
                || (e.contains("code=6") && e.contains("subcode=1"))
        },
    )?;
    // AFI 1, SAFI 1, limit 3 (RFC 4486 §4), where the peer shows the data.
    let data_shown = ["0x00010100000003", "[0 1 1 0 0 0 3]"]
        .iter()
        .any(|d| theirs.contains(d));
    wait_for(
        SESSION_TIMEOUT,
        "the session to come back after restart-after",
        || serval.peer_status(addr4(p)),
        |st| st.established_count >= 2,
    )?;
    Ok(Verdict::Pass(format!(
        "peer says: {}{}",
        theirs.lines().next().unwrap_or_default(),
        if data_shown {
            " (AFI/SAFI/limit data checked)"
        } else {
            ""
        }
    )))
}

// ---- 8. multihop + GTSM ----

/// serval and the peer two hops apart through a router, GTSM on both sides allowing two
/// hops, serval only listening (so the accepted connection must send with TTL 255 for
/// the peer to take it): the session forms and routes pass. Then serval allows one hop
/// only: the peer's segments arrive with TTL 254, the kernel drops them and the session
/// never forms.
pub fn gtsm<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::Gtsm) {
        return Ok(v);
    }
    let routed = topology::routed()?;
    let (s, p) = (&routed.a, &routed.b);
    let gtsm = TtlMode::Gtsm { hops: 2 };
    let mut serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(p), PEER_AS, addr4(s)).ttl(gtsm).passive())
            .announce(Announcement::new(net("203.0.113.0/24"))),
    )?;
    let peer = P::start(
        &p.ns,
        dir,
        RouterSpec::new(PEER_AS, p.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)).ttl(gtsm))
            .announce(Announcement::new(net("198.51.100.0/24"))),
    )?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    peer.wait_route(addr4(s), net("203.0.113.0/24"), ROUTE_TIMEOUT)?;
    serval.wait_route(addr4(p), net("198.51.100.0/24"), ROUTE_TIMEOUT)?;

    let drops_before = s.ns.tcp_ext_counter("TCPMinTTLDrop")?;
    serval.reconfigure(|cfg| {
        cfg.peers[0].ttl_security = Some(1);
        cfg.peers[0].passive = false;
    })?;
    wait_for(
        SESSION_TIMEOUT,
        "serval's namespace to drop segments below the minimum TTL",
        || s.ns.tcp_ext_counter("TCPMinTTLDrop"),
        |n| *n > drops_before,
    )?;
    holds_for(
        Duration::from_secs(12),
        "serval to refuse a peer one hop further than allowed",
        || serval.session(addr4(p)),
        |st| !st.established,
    )?;
    // A connection serval accepted before its minimum TTL applied must not linger in
    // OpenSent: nothing of the peer gets through, so it ends within a hold time.
    let st = wait_for(
        SESSION_TIMEOUT,
        "serval to give up connections from the peer that is too far away",
        || serval.peer_status(addr4(p)),
        |st| matches!(st.state.as_str(), "Idle" | "Connect" | "Active"),
    )?;
    Ok(Verdict::Pass(format!(
        "refused at one hop: serval shows {}{}",
        st.state,
        st.last_error.map(|e| format!(" ({e})")).unwrap_or_default()
    )))
}

// ---- 7. route reflector ----

/// serval reflects between two BIRD iBGP clients: each learns the other's prefix with
/// ORIGINATOR_ID the originator's router id, CLUSTER_LIST serval's cluster id, and the
/// next hop unchanged (RFC 4456 §8, §10).
pub fn route_reflector(dir: &TestDir) -> Result<Verdict> {
    let seg = topology::segment(3)?;
    let (s, c1, c2) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let p1 = Announcement::new(net("198.51.100.0/25")).community(Community::new(65001, 1));
    let p2 = Announcement::new(net("198.51.100.128/25")).community(Community::new(65001, 2));
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(c1), SERVAL_AS, addr4(s)).rr_client())
            .neighbor(neighbor(addr4(c2), SERVAL_AS, addr4(s)).rr_client()),
    )?;
    let bird1 = Bird::start(
        &c1.ns,
        dir,
        RouterSpec::new(SERVAL_AS, c1.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(c1)))
            .announce(p1.clone()),
    )?;
    let bird2 = Bird::start(
        &c2.ns,
        dir,
        RouterSpec::new(SERVAL_AS, c2.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(c2)))
            .announce(p2.clone()),
    )?;
    established_both(
        &serval,
        &[(&bird1, addr4(c1), addr4(s)), (&bird2, addr4(c2), addr4(s))],
    )?;
    for (receiver, originator, prefix) in [(&bird1, c2, &p2), (&bird2, c1, &p1)] {
        let r = receiver.wait_route(addr4(s), prefix.prefix, ROUTE_TIMEOUT)?;
        check(r.originator_id == Some(originator.v4), || {
            format!("ORIGINATOR_ID should be {}: {r:?}", originator.v4)
        })?;
        check(r.cluster_list == vec![s.v4], || {
            format!("CLUSTER_LIST should be [{}]: {r:?}", s.v4)
        })?;
        check(r.next_hop == Some(addr4(originator)), || {
            format!("next hop should stay {}: {r:?}", originator.v4)
        })?;
        check(r.as_path.is_empty(), || {
            format!("AS path should stay empty: {r:?}")
        })?;
        check(r.has_community(prefix.communities[0]), || {
            format!("community lost in reflection: {r:?}")
        })?;
    }
    Ok(Verdict::pass())
}

// ---- 9. dynamic reconfiguration ----

/// Two BIRD peers. Reloading serval's configuration with a new export policy for one
/// (adding a community) changes what that one receives; then a new hold time restarts
/// that session alone. The other session stays up throughout (uptime never resets).
pub fn reconfigure(dir: &TestDir) -> Result<Verdict> {
    let seg = topology::segment(3)?;
    let (s, b1, b2) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let prefix = net("203.0.113.0/24");
    let mut serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(b1), PEER_AS, addr4(s)))
            .neighbor(neighbor(addr4(b2), Asn(65003), addr4(s)))
            .announce(Announcement::new(prefix)),
    )?;
    let bird1 = Bird::start(
        &b1.ns,
        dir,
        RouterSpec::new(PEER_AS, b1.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(b1))),
    )?;
    let bird2 = Bird::start(
        &b2.ns,
        dir,
        RouterSpec::new(Asn(65003), b2.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(b2))),
    )?;
    established_both(
        &serval,
        &[(&bird1, addr4(b1), addr4(s)), (&bird2, addr4(b2), addr4(s))],
    )?;
    bird1.wait_route(addr4(s), prefix, ROUTE_TIMEOUT)?;
    bird2.wait_route(addr4(s), prefix, ROUTE_TIMEOUT)?;
    let other = serval.peer_status(addr4(b2))?;
    let count1 = serval.peer_status(addr4(b1))?.established_count;

    let tag = Community::new(65001, 77);
    serval.reconfigure(|cfg| {
        cfg.peers[0].export = Some(PolicyRef::Inline(Policy {
            rules: vec![Rule {
                then: Actions {
                    action: PolicyVerdict::Accept,
                    add_communities: vec![CommunityValue(bgp::wire::attr::Community(
                        (u32::from(tag.asn) << 16) | u32::from(tag.value),
                    ))],
                    ..Actions::default()
                },
                ..Rule::default()
            }],
            default: PolicyVerdict::Accept,
        }));
    })?;
    wait_for(
        ROUTE_TIMEOUT,
        "the first peer to receive the prefix with the new community",
        || bird1.received_routes(addr4(s)),
        |rs| {
            rs.iter()
                .any(|r| r.prefix == prefix && r.has_community(tag))
        },
    )?;
    let st1 = serval.peer_status(addr4(b1))?;
    check(st1.established_count == count1, || {
        format!("an export policy change restarted the session: {st1:?}")
    })?;
    let r2 = bird2.wait_route(addr4(s), prefix, ROUTE_TIMEOUT)?;
    check(!r2.has_community(tag), || {
        format!("the other peer got the community too: {r2:?}")
    })?;

    serval.reconfigure(|cfg| cfg.peers[0].hold_time = Some(6))?;
    wait_for(
        SESSION_TIMEOUT,
        "the first session to come back with hold time 6",
        || serval.peer_status(addr4(b1)),
        |st| st.state == "Established" && st.hold_time == Some(6),
    )?;
    let now = serval.peer_status(addr4(b2))?;
    check(
        now.established_count == other.established_count
            && now.flaps == other.flaps
            && now.uptime_secs >= other.uptime_secs
            && now.state == "Established",
        || format!("the other session was disturbed: before {other:?}, after {now:?}"),
    )?;
    Ok(Verdict::pass())
}

// ---- 10. malformed input ----

/// A raw speaker opens a session to serval, announces a prefix, then sends `bad`.
fn raw_session(dir: &TestDir) -> Result<(topology::Link, Serval, RawPeer)> {
    let link = topology::link()?;
    let serval = Serval::start(
        &link.a.ns,
        dir,
        RouterSpec::new(SERVAL_AS, link.a.v4)
            .neighbor(neighbor(addr4(&link.b), PEER_AS, addr4(&link.a)).passive()),
    )?;
    let mut peer = RawPeer::connect(
        &link.b.ns.handle(),
        addr4(&link.b),
        SocketAddr::new(addr4(&link.a), 179),
    )?;
    peer.establish(PEER_AS.0, link.b.v4, HOLD)?;
    serval.wait_established(addr4(&link.b), SESSION_TIMEOUT)?;
    Ok((link, serval, peer))
}

fn good_update(prefix: ipnet::Ipv4Net, nh: Ipv4Addr) -> Vec<u8> {
    raw::update(
        &[],
        &[
            raw::origin(0),
            raw::as_path(&[PEER_AS.0]),
            raw::next_hop(nh),
        ]
        .concat(),
        &raw::nlri(prefix),
    )
}

/// An UPDATE whose ORIGIN has the undefined value 5: RFC 7606 §7.1 treat-as-withdraw.
/// The prefix it re-announces is withdrawn, the session stays up, serval runs on.
pub fn malformed_origin(dir: &TestDir) -> Result<Verdict> {
    let (link, mut serval, mut peer) = raw_session(dir)?;
    let prefix: ipnet::Ipv4Net = "198.51.100.0/24"
        .parse()
        .map_err(|_| Error::Check("literal".into()))?;
    let other: ipnet::Ipv4Net = "198.51.101.0/24"
        .parse()
        .map_err(|_| Error::Check("literal".into()))?;
    peer.send(&good_update(prefix, link.b.v4))?;
    peer.send(&good_update(other, link.b.v4))?;
    serval.wait_route(addr4(&link.b), prefix.into(), ROUTE_TIMEOUT)?;
    serval.wait_route(addr4(&link.b), other.into(), ROUTE_TIMEOUT)?;
    let bad = raw::update(
        &[],
        &[
            raw::origin(5),
            raw::as_path(&[PEER_AS.0]),
            raw::next_hop(link.b.v4),
        ]
        .concat(),
        &raw::nlri(prefix),
    );
    peer.send(&bad)?;
    serval.wait_route_gone(addr4(&link.b), prefix.into(), ROUTE_TIMEOUT)?;
    let n = peer.notification_within(Duration::from_secs(3))?;
    check(n.is_none(), || format!("serval reset the session: {n:?}"))?;
    check(serval.running(), || "serval exited".into())?;
    let st = serval.peer_status(addr4(&link.b))?;
    check(st.state == "Established", || {
        format!("the session did not survive a treat-as-withdraw error: {st:?}")
    })?;
    let left = serval.received_routes(addr4(&link.b))?;
    check(left.iter().any(|r| r.prefix == IpNet::from(other)), || {
        format!("the other prefix went too: {left:?}")
    })?;
    Ok(Verdict::Pass("treat-as-withdraw, session kept".into()))
}

/// An UPDATE with MP_REACH_NLRI twice: RFC 7606 §3 (g) — NOTIFICATION UPDATE Message
/// Error / Malformed Attribute List, the session is reset, serval runs on.
pub fn malformed_duplicate_mp_reach(dir: &TestDir) -> Result<Verdict> {
    let (link, mut serval, mut peer) = raw_session(dir)?;
    let prefix: ipnet::Ipv4Net = "198.51.100.0/24"
        .parse()
        .map_err(|_| Error::Check("literal".into()))?;
    let reach = raw::mp_reach_v4(link.b.v4, &raw::nlri(prefix));
    let bad = raw::update(
        &[],
        &[
            raw::origin(0),
            raw::as_path(&[PEER_AS.0]),
            reach.clone(),
            reach,
        ]
        .concat(),
        &[],
    );
    peer.send(&bad)?;
    let n = peer.notification_within(Duration::from_secs(10))?;
    check(
        matches!(&n, Some(n) if n.code == 3 && n.subcode == 1),
        || {
            format!("expected NOTIFICATION 3/1 (UPDATE Message Error / Malformed Attribute List), got {n:?}")
        },
    )?;
    check(serval.running(), || "serval exited".into())?;
    let st = wait_for(
        SESSION_TIMEOUT,
        "serval's status to show the reset",
        || serval.peer_status(addr4(&link.b)),
        |st| st.state != "Established" && st.last_error.is_some(),
    )?;
    let routes = serval.received_routes(addr4(&link.b))?;
    check(routes.is_empty(), || {
        format!("routes kept from a malformed UPDATE: {routes:?}")
    })?;
    Ok(Verdict::Pass(format!(
        "NOTIFICATION 3/1; serval says: {}",
        st.last_error.unwrap_or_default()
    )))
}

// ---- graceful restart, byte by byte ----

fn v4net(s: &str) -> Result<ipnet::Ipv4Net> {
    s.parse()
        .map_err(|_| Error::Check(format!("bad literal {s}")))
}

/// serval and a raw speaker on one link; serval only listens.
fn raw_gr_pair(dir: &TestDir, announce: &[&str]) -> Result<(topology::Link, Serval)> {
    let link = topology::link()?;
    let mut spec = RouterSpec::new(SERVAL_AS, link.a.v4)
        .neighbor(neighbor(addr4(&link.b), PEER_AS, addr4(&link.a)).passive());
    for p in announce {
        spec = spec.announce(Announcement::new(net(p)));
    }
    let serval = Serval::start(&link.a.ns, dir, spec)?;
    Ok((link, serval))
}

fn raw_connect(link: &topology::Link) -> Result<RawPeer> {
    RawPeer::connect(
        &link.b.ns.handle(),
        addr4(&link.b),
        SocketAddr::new(addr4(&link.a), 179),
    )
}

/// Connects and establishes with `open`, again while serval refuses (it holds a peer
/// Idle for a moment after a session ends, RFC 4271 §8.1.1 IdleHoldTimer); returns
/// serval's OPEN body.
fn raw_establish(link: &topology::Link, open: &[u8]) -> Result<(RawPeer, Vec<u8>)> {
    let mut last = None;
    let deadline = std::time::Instant::now() + SESSION_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let attempt = raw_connect(link).and_then(|mut raw| {
            let theirs = raw.establish_with(open)?;
            Ok((raw, theirs))
        });
        match attempt {
            Ok(done) => return Ok(done),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last.unwrap_or_else(|| Error::Check("no attempt to connect".into())))
}

fn raw_gr_open(link: &topology::Link, restarting: bool) -> Vec<u8> {
    let gr = raw::GracefulRestart {
        restarting,
        restart_time: RESTART.as_secs() as u16,
        ipv4_forwarding: Some(true),
    };
    raw::open_with(PEER_AS.0, link.b.v4, HOLD, &gr.capability())
}

/// serval as the helper of a peer that restarts with its forwarding state preserved
/// (RFC 4724 §4.2): the peer's routes stay, stale, after its connection drops; when it
/// is back, a route it sends again is fresh at once while the others stay stale until
/// its End-of-RIB, which removes them.
pub fn gr_helper_stale_until_end_of_rib(dir: &TestDir) -> Result<Verdict> {
    let (link, serval) = raw_gr_pair(dir, &[])?;
    let peer_addr = addr4(&link.b);
    let (x, y) = (v4net("198.51.100.0/24")?, v4net("198.51.101.0/24")?);
    let (mut raw, _) = raw_establish(&link, &raw_gr_open(&link, false))?;
    raw.send(&good_update(x, link.b.v4))?;
    raw.send(&good_update(y, link.b.v4))?;
    raw.send(&raw::end_of_rib())?;
    serval.wait_route(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    serval.wait_route(peer_addr, y.into(), ROUTE_TIMEOUT)?;
    drop(raw);

    let stale = |rs: &Vec<Route>, p: ipnet::Ipv4Net, want: bool| {
        rs.iter()
            .any(|r| r.prefix == IpNet::from(p) && r.stale == Some(want))
    };
    wait_for(
        SESSION_TIMEOUT,
        "serval to keep both routes, stale, after the connection dropped",
        || serval.received_routes(peer_addr),
        |rs| stale(rs, x, true) && stale(rs, y, true),
    )?;
    let (mut raw, _) = raw_establish(&link, &raw_gr_open(&link, true))?;
    serval.wait_established(peer_addr, SESSION_TIMEOUT)?;
    raw.send(&good_update(x, link.b.v4))?;
    wait_for(
        ROUTE_TIMEOUT,
        "the route sent again to be fresh",
        || serval.received_routes(peer_addr),
        |rs| stale(rs, x, false),
    )?;
    holds_for(
        Duration::from_secs(3),
        "the route not sent again to stay, stale, until End-of-RIB",
        || serval.received_routes(peer_addr),
        |rs| stale(rs, y, true) && stale(rs, x, false),
    )?;
    raw.send(&raw::end_of_rib())?;
    serval.wait_route_gone(peer_addr, y.into(), ROUTE_TIMEOUT)?;
    let left = serval.received_routes(peer_addr)?;
    check(stale(&left, x, false), || {
        format!("{x} should stay, fresh: {left:?}")
    })?;
    let n = raw.notification_within(Duration::from_millis(500))?;
    check(n.is_none(), || format!("serval closed the session: {n:?}"))?;

    // Back once more, but without the forwarding state: the stale route goes at once
    // (RFC 4724 §4.2), before anything else arrives.
    drop(raw);
    wait_for(
        SESSION_TIMEOUT,
        "serval to keep the route, stale, after the second drop",
        || serval.received_routes(peer_addr),
        |rs| stale(rs, x, true),
    )?;
    let lost_forwarding = raw::GracefulRestart {
        restarting: true,
        restart_time: RESTART.as_secs() as u16,
        ipv4_forwarding: Some(false),
    };
    let (_raw, _) = raw_establish(
        &link,
        &raw::open_with(PEER_AS.0, link.b.v4, HOLD, &lost_forwarding.capability()),
    )?;
    serval.wait_route_gone(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    Ok(Verdict::pass())
}

/// serval restarts (SIGTERM, then start): the connection closes without a NOTIFICATION,
/// serval's new OPEN carries the Restart State bit, serval advertises nothing until the
/// peer's End-of-RIB (RFC 4724 §4.1 selection deferral), then its routes and its own
/// End-of-RIB after them; the next OPEN (after a reset) no longer says it restarted.
pub fn gr_restarting_speaker(dir: &TestDir) -> Result<Verdict> {
    let p = v4net("203.0.113.0/24")?;
    let (link, mut serval) = raw_gr_pair(dir, &["203.0.113.0/24"])?;
    let (mut raw, first) = raw_establish(&link, &raw_gr_open(&link, false))?;
    let gr = raw::GracefulRestart::of_open(&first);
    check(gr.is_some_and(|g| !g.restarting), || {
        format!("first OPEN: graceful restart {gr:?}, expected it without the Restart State bit")
    })?;
    raw.send(&raw::end_of_rib())?;
    expect_routes_then_eor(&mut raw, &raw::nlri(p), "at start")?;

    serval.stop_graceful()?;
    let n = raw.notification_within(Duration::from_secs(5))?;
    check(n.is_none(), || {
        format!("a graceful stop sent a NOTIFICATION: {n:?}")
    })?;
    drop(raw);
    serval.launch()?;
    let (mut raw, open) = raw_establish(&link, &raw_gr_open(&link, false))?;
    let gr = raw::GracefulRestart::of_open(&open);
    check(
        gr.is_some_and(|g| g.restarting && g.ipv4_forwarding.is_some()),
        || format!("OPEN after the restart: {gr:?}, expected the Restart State bit and IPv4"),
    )?;
    // Nothing before our End-of-RIB.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match raw.recv(left)? {
            Some(m) if m.kind == raw::UPDATE => {
                return Err(Error::Check(format!(
                    "serval sent an UPDATE before the peer's End-of-RIB: {:?}",
                    m.body
                )))
            }
            Some(m) if m.kind == raw::NOTIFICATION => {
                return Err(Error::Check(format!("NOTIFICATION: {:?}", m.body)))
            }
            Some(m) if m.kind == raw::KEEPALIVE => raw.send(&raw::message(raw::KEEPALIVE, &[]))?,
            Some(_) => {}
            None => break,
        }
    }
    raw.send(&raw::end_of_rib())?;
    expect_routes_then_eor(&mut raw, &raw::nlri(p), "after the restart")?;

    // The restart is over: a new session is an ordinary one.
    drop(raw);
    serval.wait_until_down(addr4(&link.b))?;
    let (_raw, open) = raw_establish(&link, &raw_gr_open(&link, false))?;
    let gr = raw::GracefulRestart::of_open(&open);
    check(gr.is_some_and(|g| !g.restarting), || {
        format!("OPEN once the restart is over: {gr:?}, expected no Restart State bit")
    })?;
    Ok(Verdict::pass())
}

/// Reads UPDATEs until End-of-RIB; `nlri` must have been announced before it.
fn expect_routes_then_eor(raw: &mut RawPeer, nlri: &[u8], when: &str) -> Result<()> {
    let mut seen = false;
    let deadline = std::time::Instant::now() + ROUTE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(m) = raw.recv(left)? else {
            return Err(Error::Check(format!(
                "{when}: no End-of-RIB from serval (route seen: {seen})"
            )));
        };
        match m.kind {
            raw::UPDATE if raw::is_end_of_rib(&m.body) => {
                return check(seen, || format!("{when}: End-of-RIB came before the route"))
            }
            raw::UPDATE => seen |= raw::announces(&m.body, nlri),
            raw::KEEPALIVE => raw.send(&raw::message(raw::KEEPALIVE, &[]))?,
            raw::NOTIFICATION => {
                return Err(Error::Check(format!("{when}: NOTIFICATION {:?}", m.body)))
            }
            _ => {}
        }
    }
}

/// serval asks a peer with enhanced route refresh (RFC 7313) for its routes: the peer
/// brackets its answer with Begin and End of Route Refresh, and a route it does not send
/// again in between is gone at the End (§4), while the ones it sends stay.
pub fn enhanced_refresh_purges(dir: &TestDir) -> Result<Verdict> {
    let (link, serval) = raw_gr_pair(dir, &[])?;
    let peer_addr = addr4(&link.b);
    let (x, y) = (v4net("198.51.100.0/24")?, v4net("198.51.101.0/24")?);
    // Route refresh (2) and enhanced route refresh (70).
    let open = raw::open_with(PEER_AS.0, link.b.v4, HOLD, &[2, 0, 70, 0]);
    let (mut raw, theirs) = raw_establish(&link, &open)?;
    let caps = raw::capabilities(&theirs);
    check(caps.iter().any(|c| c.0 == 70), || {
        format!("serval does not announce enhanced route refresh: {caps:?}")
    })?;
    raw.send(&good_update(x, link.b.v4))?;
    raw.send(&good_update(y, link.b.v4))?;
    raw.send(&raw::end_of_rib())?;
    serval.wait_route(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    serval.wait_route(peer_addr, y.into(), ROUTE_TIMEOUT)?;

    serval.refresh(peer_addr)?;
    let deadline = std::time::Instant::now() + ROUTE_TIMEOUT;
    let request = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match raw.recv(left)? {
            Some(m) if m.kind == raw::ROUTE_REFRESH => break m.body,
            Some(m) if m.kind == raw::KEEPALIVE => raw.send(&raw::message(raw::KEEPALIVE, &[]))?,
            Some(_) => {}
            None => return Err(Error::Check("no ROUTE-REFRESH from serval".into())),
        }
    };
    check(request == [0, 1, 0, 1], || {
        format!("ROUTE-REFRESH request for IPv4 unicast expected: {request:?}")
    })?;
    raw.send(&raw::message(raw::ROUTE_REFRESH, &[0, 1, 1, 1]))?;
    raw.send(&good_update(x, link.b.v4))?;
    holds_for(
        Duration::from_secs(2),
        "both routes to stay while the refresh is under way",
        || serval.received_routes(peer_addr),
        |rs| rs.len() == 2,
    )?;
    raw.send(&raw::message(raw::ROUTE_REFRESH, &[0, 1, 2, 1]))?;
    serval.wait_route_gone(peer_addr, y.into(), ROUTE_TIMEOUT)?;
    let left = serval.received_routes(peer_addr)?;
    check(
        left.iter()
            .any(|r| r.prefix == IpNet::from(x) && r.stale != Some(true)),
        || format!("{x} should stay, fresh: {left:?}"),
    )?;
    let n = raw.notification_within(Duration::from_millis(500))?;
    check(n.is_none(), || format!("serval closed the session: {n:?}"))?;
    Ok(Verdict::pass())
}

/// A peer without the 4-octet AS capability, and serval with a 4-octet AS (RFC 6793):
/// serval's OPEN says AS_TRANS, its UPDATEs carry AS_PATH with 2-octet ASes (AS_TRANS
/// for its own) and the real path in AS4_PATH; the peer's 2-octet AS_PATH is read right.
pub fn two_octet_peer(dir: &TestDir) -> Result<Verdict> {
    const BIG_AS: u32 = 4_200_000_001;
    const AS_TRANS: u16 = 23456;
    let link = topology::link()?;
    let p = v4net("203.0.113.0/24")?;
    let serval = Serval::start(
        &link.a.ns,
        dir,
        RouterSpec::new(Asn(BIG_AS), link.a.v4)
            .neighbor(neighbor(addr4(&link.b), PEER_AS, addr4(&link.a)).passive())
            .announce(Announcement::new(p.into())),
    )?;
    let open = raw::open_two_octet(PEER_AS.0 as u16, link.b.v4, HOLD);
    let (mut raw, theirs) = raw_establish(&link, &open)?;
    let my_as = u16::from_be_bytes([theirs[1], theirs[2]]);
    check(my_as == AS_TRANS, || {
        format!("serval's OPEN says AS {my_as}, expected AS_TRANS")
    })?;
    // Our route, with a 2-octet AS_PATH.
    // One AS_SEQUENCE holding AS 65002 in two octets.
    let two_octet_path = [2u8, 1, 0xfd, 0xea];
    raw.send(&raw::update(
        &[],
        &[
            raw::origin(0),
            raw::attr(0x40, 2, &two_octet_path),
            raw::next_hop(link.b.v4),
        ]
        .concat(),
        &raw::nlri(v4net("198.51.100.0/24")?),
    ))?;
    raw.send(&raw::end_of_rib())?;
    let got = serval.wait_route(addr4(&link.b), net("198.51.100.0/24"), ROUTE_TIMEOUT)?;
    check(got.as_path == vec![PEER_AS], || {
        format!("2-octet AS_PATH read wrong: {got:?}")
    })?;
    // serval's route.
    let deadline = std::time::Instant::now() + ROUTE_TIMEOUT;
    let body = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match raw.recv(left)? {
            Some(m) if m.kind == raw::UPDATE && raw::announces(&m.body, &raw::nlri(p)) => {
                break m.body
            }
            Some(m) if m.kind == raw::KEEPALIVE => raw.send(&raw::message(raw::KEEPALIVE, &[]))?,
            Some(m) if m.kind == raw::NOTIFICATION => {
                return Err(Error::Check(format!("NOTIFICATION {:?}", m.body)))
            }
            Some(_) => {}
            None => return Err(Error::Check(format!("serval did not announce {p}"))),
        }
    };
    let attrs = raw::attributes(&body);
    let as_path = attrs.iter().find(|(c, _)| *c == 2).map(|(_, v)| v.clone());
    let as4_path = attrs.iter().find(|(c, _)| *c == 17).map(|(_, v)| v.clone());
    let trans = AS_TRANS.to_be_bytes();
    check(as_path == Some(vec![2, 1, trans[0], trans[1]]), || {
        format!("AS_PATH to a 2-octet peer: {as_path:?}, expected [AS_TRANS]")
    })?;
    let big = BIG_AS.to_be_bytes();
    check(
        as4_path == Some(vec![2, 1, big[0], big[1], big[2], big[3]]),
        || format!("AS4_PATH: {as4_path:?}, expected [{BIG_AS}]"),
    )?;
    Ok(Verdict::pass())
}

/// A peer that stops talking: after the hold time serval sends Hold Timer Expired,
/// drops the peer's routes and its status says why.
pub fn hold_timer_expiry(dir: &TestDir) -> Result<Verdict> {
    let (link, serval) = raw_gr_pair(dir, &[])?;
    let peer_addr = addr4(&link.b);
    let x = v4net("198.51.100.0/24")?;
    let (mut raw, _) = raw_establish(&link, &raw::open(PEER_AS.0, link.b.v4, HOLD))?;
    raw.send(&good_update(x, link.b.v4))?;
    serval.wait_route(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    let started = std::time::Instant::now();
    // Read without answering: serval's KEEPALIVEs go unanswered.
    let deadline = started + Duration::from_secs(u64::from(HOLD) + 10);
    let n = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match raw.recv(left)? {
            Some(m) if m.kind == raw::NOTIFICATION => break Some(m.body),
            Some(_) => {}
            None => break None,
        }
    };
    let waited = started.elapsed();
    check(matches!(&n, Some(b) if b.first() == Some(&4)), || {
        format!("expected NOTIFICATION 4 (Hold Timer Expired), got {n:?}")
    })?;
    check(waited >= Duration::from_secs(u64::from(HOLD) - 1), || {
        format!("Hold Timer Expired after {waited:?}, before the {HOLD} s hold time")
    })?;
    serval.wait_route_gone(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    let st = serval.peer_status(peer_addr)?;
    let said = st.last_error.clone().unwrap_or_default();
    check(said.to_ascii_lowercase().contains("hold"), || {
        format!("serval's status does not say the hold timer expired: {st:?}")
    })?;
    Ok(Verdict::Pass(format!(
        "after {:.1} s; serval says: {said}",
        waited.as_secs_f64()
    )))
}

/// RFC 8538 with FRR: once the N bit is negotiated, a NOTIFICATION other than Hard
/// Reset ends the session gracefully: FRR resets the session (Cease / Administrative
/// Reset, sent as is with `no bgp hard-administrative-reset`) and serval keeps its
/// routes, stale, until FRR is back and has sent them again. FRR's Administrative
/// Shutdown is a Hard Reset, and serval drops the routes at once.
pub fn graceful_notification_frr(dir: &TestDir) -> Result<Verdict> {
    use crate::daemons::Frr;
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let routes = feed(100, 2);
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4).neighbor(neighbor(addr4(p), PEER_AS, addr4(s))),
    )?;
    let mut spec = RouterSpec::new(PEER_AS, p.v4).neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)));
    for a in &routes {
        spec = spec.announce(a.clone());
    }
    let frr = Frr::start(&p.ns, dir, spec)?;
    established_both(&serval, &[(&frr, addr4(p), addr4(s))])?;
    for a in &routes {
        serval.wait_route(addr4(p), a.prefix, ROUTE_TIMEOUT)?;
    }
    let st = serval.peer_status(addr4(p))?;
    check(
        st.capabilities.iter().any(|c| c == "graceful-notification"),
        || {
            format!(
                "the N bit was not negotiated with FRR: {}",
                capability_names(&st)
            )
        },
    )?;
    let router = format!("router bgp {}", PEER_AS);
    let shutdown = format!("neighbor {} shutdown", s.v4);
    let all = |rs: &Vec<Route>, stale: bool| {
        routes.iter().all(|a| {
            rs.iter()
                .any(|r| r.prefix == a.prefix && r.stale == Some(stale))
        })
    };

    // Administrative Reset is graceful unless FRR is told to make it hard (RFC 8538
    // §5.1 leaves that choice; Administrative Shutdown is always a Hard Reset).
    frr.vtysh(&[
        "configure terminal",
        &router,
        "no bgp hard-administrative-reset",
    ])?;
    frr.vtysh(&[&format!("clear bgp {}", s.v4)])?;
    let down = wait_for(
        SESSION_TIMEOUT,
        "serval to keep FRR's routes stale after a Cease with the N bit",
        || {
            Ok((
                serval.received_routes(addr4(p))?,
                serval.peer_status(addr4(p))?,
            ))
        },
        |(rs, st)| all(rs, true) && st.state != "Established",
    )?
    .1;
    established_both(&serval, &[(&frr, addr4(p), addr4(s))])?;
    wait_for(
        ROUTE_TIMEOUT,
        "FRR's routes to be fresh again",
        || serval.received_routes(addr4(p)),
        |rs| all(rs, false),
    )?;

    frr.vtysh(&["configure terminal", &router, &shutdown])?;
    wait_for(
        SESSION_TIMEOUT,
        "serval to drop FRR's routes at once after a Hard Reset",
        || serval.received_routes(addr4(p)),
        |rs| rs.is_empty(),
    )?;
    let hard = serval.peer_status(addr4(p))?;
    Ok(Verdict::Pass(format!(
        "graceful: {}; hard: {}",
        down.last_error.unwrap_or_default(),
        hard.last_error.unwrap_or_default()
    )))
}

/// serval as the helper of a peer that does not come back: its stale routes go when
/// the restart time it announced has passed (RFC 4724 §4.2), not before.
pub fn gr_helper_restart_time_expires(dir: &TestDir) -> Result<Verdict> {
    const RESTART_SECS: u16 = 5;
    let (link, serval) = raw_gr_pair(dir, &[])?;
    let peer_addr = addr4(&link.b);
    let x = v4net("198.51.100.0/24")?;
    let gr = raw::GracefulRestart {
        restarting: false,
        restart_time: RESTART_SECS,
        ipv4_forwarding: Some(true),
    };
    let (mut raw, _) = raw_establish(
        &link,
        &raw::open_with(PEER_AS.0, link.b.v4, HOLD, &gr.capability()),
    )?;
    raw.send(&good_update(x, link.b.v4))?;
    raw.send(&raw::end_of_rib())?;
    serval.wait_route(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    drop(raw);
    let gone_at = std::time::Instant::now() + Duration::from_secs(u64::from(RESTART_SECS));
    wait_for(
        ROUTE_TIMEOUT,
        "serval to mark the route stale",
        || serval.received_routes(peer_addr),
        |rs| rs.iter().any(|r| r.stale == Some(true)),
    )?;
    holds_for(
        Duration::from_secs(u64::from(RESTART_SECS) - 2),
        "the stale route to stay within the restart time",
        || serval.received_routes(peer_addr),
        |rs| !rs.is_empty(),
    )?;
    serval.wait_route_gone(peer_addr, x.into(), ROUTE_TIMEOUT)?;
    let late = std::time::Instant::now().saturating_duration_since(gone_at);
    check(late < Duration::from_secs(10), || {
        format!("the stale route outlived the restart time by {late:?}")
    })?;
    Ok(Verdict::Pass(format!(
        "gone {:.1} s after the {RESTART_SECS} s restart time",
        late.as_secs_f64()
    )))
}

// ---- dual stack over one IPv4 session ----

/// One IPv4 session carrying IPv4 and IPv6 unicast (how Calico-style nodes peer): IPv6
/// routes from serval carry serval's global IPv6 address of the shared link as next hop
/// (never an IPv4-mapped one), and the peer's IPv6 routes arrive at serval.
pub fn dual_stack_one_session<P: InteropPeer>(dir: &TestDir) -> Result<Verdict> {
    if let Some(v) = unless_cannot::<P>(Feature::DualStack) {
        return Ok(v);
    }
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let both = [Family::Ipv4Unicast, Family::Ipv6Unicast];
    let mine = serval_routes();
    let theirs = peer_routes();
    let serval = Serval::start(
        &s.ns,
        dir,
        RouterSpec::new(SERVAL_AS, s.v4)
            .neighbor(neighbor(addr4(p), PEER_AS, addr4(s)).families(&both))
            .announce(mine[0].clone())
            .announce(mine[1].clone()),
    )?;
    let peer = P::start(
        &p.ns,
        dir,
        RouterSpec::new(PEER_AS, p.v4)
            .neighbor(neighbor(addr4(s), SERVAL_AS, addr4(p)).families(&both))
            .announce(theirs[0].clone())
            .announce(theirs[1].clone()),
    )?;
    established_both(&serval, &[(&peer, addr4(p), addr4(s))])?;
    let st = serval.peer_status(addr4(p))?;
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        check(st.capabilities.iter().any(|c| c == fam), || {
            format!("{fam} not negotiated: {}", capability_names(&st))
        })?;
    }
    let got = peer.wait_route(addr4(s), mine[1].prefix, ROUTE_TIMEOUT)?;
    check_route(
        &got,
        &Expect {
            sent: &mine[1],
            as_path: vec![SERVAL_AS],
            next_hop: addr6(s),
            link_local: None,
            local_pref: None,
            receiver: P::NAME,
        },
    )?;
    let got4 = peer.wait_route(addr4(s), mine[0].prefix, ROUTE_TIMEOUT)?;
    check(got4.next_hop == Some(addr4(s)), || {
        format!("IPv4 next hop at {}: {got4:?}", P::NAME)
    })?;
    let back = serval.wait_route(addr4(p), theirs[1].prefix, ROUTE_TIMEOUT)?;
    serval.wait_route(addr4(p), theirs[0].prefix, ROUTE_TIMEOUT)?;
    let nh = back.next_hop;
    let usable = matches!(nh, Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none());
    Ok(Verdict::Pass(if usable {
        format!(
            "the peer's IPv6 next hop: {}",
            nh.map(|a| a.to_string()).unwrap_or_default()
        )
    } else {
        format!(
            "the peer sends IPv6 routes with next hop {nh:?} over an IPv4 session (not a global IPv6 address)"
        )
    }))
}

/// A route whose NEXT_HOP is a martian (loopback 127.0.0.1, RFC 4271 §6.3: semantically
/// incorrect) is ignored without closing the session; a good one beside it is kept.
pub fn martian_next_hop(dir: &TestDir) -> Result<Verdict> {
    let (link, mut serval, mut peer) = raw_session(dir)?;
    let good = v4net("198.51.100.0/24")?;
    let bad = v4net("198.51.101.0/24")?;
    peer.send(&good_update(bad, Ipv4Addr::LOCALHOST))?;
    peer.send(&good_update(good, link.b.v4))?;
    serval.wait_route(addr4(&link.b), good.into(), ROUTE_TIMEOUT)?;
    let n = peer.notification_within(Duration::from_secs(2))?;
    check(n.is_none(), || format!("serval reset the session: {n:?}"))?;
    check(serval.running(), || "serval exited".into())?;
    let routes = serval.received_routes(addr4(&link.b))?;
    check(!routes.iter().any(|r| r.prefix == IpNet::from(bad)), || {
        format!("a route with next hop 127.0.0.1 was accepted: {routes:?}")
    })?;
    Ok(Verdict::pass())
}
