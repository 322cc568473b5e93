//! Scenarios with a fixed cast of real daemons: serval reflecting between two BIRD
//! clients, serval reconfigured beside two BIRD peers, RFC 8538 with FRR.

use super::*;

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

/// Two BIRD peers. Reloading serval's configuration (`serval bgp reload`) with a new
/// export policy for one (adding a community) changes what that one receives without
/// restarting its session; then a new hold time (reloaded with SIGHUP) restarts that
/// session alone. The other session stays up throughout (uptime never resets).
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

    // This time through SIGHUP, the daemon's reload signal.
    serval.reconfigure_by_signal(|cfg| cfg.peers[0].hold_time = Some(6))?;
    wait_for(
        SESSION_TIMEOUT,
        "the first session to come back with hold time 6",
        || serval.peer_status(addr4(b1)),
        |st| st.state.is_established() && st.hold_time == Some(6),
    )?;
    let now = serval.peer_status(addr4(b2))?;
    check(
        now.established_count == other.established_count
            && now.flaps == other.flaps
            && now.uptime_secs >= other.uptime_secs
            && now.state.is_established(),
        || format!("the other session was disturbed: before {other:?}, after {now:?}"),
    )?;
    Ok(Verdict::pass())
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
        |(rs, st)| all(rs, true) && !st.state.is_established(),
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
