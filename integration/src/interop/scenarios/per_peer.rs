//! The scenarios of the matrix, one per column, each generic over the peer daemon.

use super::*;

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

    // `serval bgp shutdown` withdraws everything at once: a Cease (a Hard Reset where
    // the N bit was negotiated) leaves the peer nothing to keep stale, so the transit
    // route goes well within a hold time.
    serval.stop()?;
    ebgp.wait_route_gone(
        addr4(s),
        ibgp_route.prefix,
        Duration::from_secs(u64::from(HOLD) - 2),
    )?;
    let note = if P::LINK_LOCAL_NEXT_HOP {
        "link-local next hops checked both ways"
    } else {
        "global IPv6 next hops only (the daemon shows no link-local one)"
    };
    Ok(Verdict::Pass(note.into()))
}

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
        |(x, y)| !x.state.is_established() && !y.established,
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
    // The UPDATE count moves when the session reads the message; the Loc-RIB takes it
    // (and, after an enhanced refresh's Begin-of-RR, clears the stale marks) a moment
    // later: wait, within the same bound, for every route to be there and not stale.
    wait_for(
        ROUTE_TIMEOUT,
        "the peer's routes present and not stale after the refresh",
        || serval.received_routes(p),
        |routes| {
            theirs.iter().all(|a| {
                routes
                    .iter()
                    .any(|r| r.prefix == a.prefix && r.stale != Some(true))
            })
        },
    )?;
    Ok(Verdict::Pass(format!(
        "table received again in {} UPDATE(s)",
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
        if let Some((b, e)) = now {
            bracket = format!("; the peer counted BoRR {b}, EoRR {e}");
        }
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
        "table sent again in {} UPDATE(s){}{bracket}",
        after.updates_sent - before,
        if enhanced {
            ", enhanced route refresh"
        } else {
            ""
        }
    )))
}

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
