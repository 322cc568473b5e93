//! Scenarios where a hand-driven speaker ([`RawPeer`]) sends exactly the bytes a check
//! needs: malformed UPDATEs, graceful-restart timing from both sides, enhanced route
//! refresh, a 2-octet AS peer, a silent peer, martian next hops.

use super::*;

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
    check(st.state.is_established(), || {
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
        |st| !st.state.is_established() && st.last_error.is_some(),
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
