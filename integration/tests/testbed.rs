//! Tests of the test bed itself: each daemon runner against BIRD (the reference) in
//! namespaces made here, the namespace cleanup, the topologies, and the User-Mode Linux
//! runner. Every test needs root and the Debian daemons; a missing one fails the test
//! with the package to install.

use ipnet::IpNet;
use serval_integration::daemons::{BgpDaemon, Bird, ExaBgp, Frr, GoBgp, OpenBgpd};
use serval_integration::netns::{self, Netns};
use serval_integration::topology::{self, Host};
use serval_integration::uml::{self, Uml};
use serval_integration::{
    holds_for, scenario, wait_for, Announcement, Asn, Community, LargeCommunity, NeighborSpec,
    Password, Result, Route, RouterSpec, TestDir, TtlMode,
};
use std::net::IpAddr;
use std::time::Duration;

/// Generous: two shared cores, other builds running beside the tests.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

const BIRD_AS: Asn = Asn(65001);
const PEER_AS: Asn = Asn(65002);

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix literal")
}

fn password(s: &str) -> Password {
    Password::new(s).expect("test password literal")
}

/// What each side originates at start and at run time.
struct Plan {
    start: [Announcement; 2],
    later: [Announcement; 2],
}

fn bird_plan() -> Plan {
    let attrs = |a: Announcement| {
        a.community(Community::new(65001, 10))
            .large_community(LargeCommunity::new(65001, 1, 2))
            .med(42)
    };
    Plan {
        start: [
            attrs(Announcement::new(net("203.0.113.0/25"))),
            attrs(Announcement::new(net("2001:db8:f1::/48"))),
        ],
        later: [
            attrs(Announcement::new(net("203.0.113.128/25"))),
            attrs(Announcement::new(net("2001:db8:f3::/48"))),
        ],
    }
}

fn peer_plan() -> Plan {
    let attrs = |a: Announcement| {
        a.community(Community::new(65002, 20))
            .community(Community::new(65002, 21))
            .large_community(LargeCommunity::new(65002, 5, 6))
            .med(7)
    };
    Plan {
        start: [
            attrs(Announcement::new(net("198.51.100.0/25"))),
            attrs(Announcement::new(net("2001:db8:f2::/48"))),
        ],
        later: [
            attrs(Announcement::new(net("198.51.100.128/25"))),
            attrs(Announcement::new(net("2001:db8:f4::/48"))),
        ],
    }
}

/// A spec for `me` peering with `other` over IPv4 and IPv6, one session per family.
fn spec(
    me: &Host,
    asn: Asn,
    other: &Host,
    other_asn: Asn,
    pw: Option<&str>,
    plan: &Plan,
) -> RouterSpec {
    let mut spec = RouterSpec::new(asn, me.v4);
    for (mine, theirs) in [
        (IpAddr::V4(me.v4), IpAddr::V4(other.v4)),
        (me.v6.into(), other.v6.into()),
    ] {
        let mut n = NeighborSpec::new(theirs, other_asn).local(mine);
        if let Some(pw) = pw {
            n = n.password(password(pw));
        }
        spec = spec.neighbor(n);
    }
    for a in &plan.start {
        spec = spec.announce(a.clone());
    }
    spec
}

/// The received path carries what the sender attached, with the sender's AS.
fn check_arrived(
    route: &Route,
    sent: &Announcement,
    sender: Asn,
    next_hop: IpAddr,
    receiver: &str,
) {
    let what = format!("{} at {receiver}", sent.prefix);
    assert_eq!(route.as_path, vec![sender], "AS path of {what}: {route:?}");
    assert_eq!(
        route.next_hop,
        Some(next_hop),
        "next hop of {what}: {route:?}"
    );
    for c in &sent.communities {
        assert!(
            route.has_community(*c),
            "community {c} missing on {what}: {route:?}"
        );
    }
    for c in &sent.large_communities {
        assert!(
            route.has_large_community(*c),
            "large community {c} missing on {what}: {route:?}"
        );
    }
    assert_eq!(route.med, sent.med, "MED of {what}: {route:?}");
}

/// BIRD on one end of a link, `D` on the other, IPv4 and IPv6 sessions with matching
/// MD5 passwords: both establish, prefixes with communities and large communities
/// flow both ways, and prefixes announced and withdrawn at run time follow.
fn routes_flow_both_ways<D: BgpDaemon>(name: &str) {
    scenario(name, |dir: &TestDir| {
        let link = topology::link()?;
        let (a, b) = (&link.a, &link.b);
        let (bp, pp) = (bird_plan(), peer_plan());
        let mut bird = Bird::start(
            &a.ns,
            dir,
            spec(a, BIRD_AS, b, PEER_AS, Some("sv-md5-key"), &bp),
        )?;
        let mut peer = D::start(
            &b.ns,
            dir,
            spec(b, PEER_AS, a, BIRD_AS, Some("sv-md5-key"), &pp),
        )?;

        let families = [
            (IpAddr::V4(a.v4), IpAddr::V4(b.v4)),
            (a.v6.into(), b.v6.into()),
        ];
        for (a_addr, b_addr) in families {
            bird.wait_established(b_addr, SESSION_TIMEOUT)?;
            peer.wait_established(a_addr, SESSION_TIMEOUT)?;
        }
        for (i, (a_addr, b_addr)) in families.into_iter().enumerate() {
            let got = peer.wait_route(a_addr, bp.start[i].prefix, ROUTE_TIMEOUT)?;
            check_arrived(&got, &bp.start[i], BIRD_AS, a_addr, peer.kind());
            let got = bird.wait_route(b_addr, pp.start[i].prefix, ROUTE_TIMEOUT)?;
            check_arrived(&got, &pp.start[i], PEER_AS, b_addr, "bird");
        }

        // Run time: each side adds a prefix and withdraws its first one.
        for (i, (a_addr, b_addr)) in families.into_iter().enumerate() {
            peer.announce(pp.later[i].clone())?;
            bird.announce(bp.later[i].clone())?;
            let got = bird.wait_route(b_addr, pp.later[i].prefix, ROUTE_TIMEOUT)?;
            check_arrived(&got, &pp.later[i], PEER_AS, b_addr, "bird");
            let got = peer.wait_route(a_addr, bp.later[i].prefix, ROUTE_TIMEOUT)?;
            check_arrived(&got, &bp.later[i], BIRD_AS, a_addr, peer.kind());

            peer.withdraw(pp.start[i].prefix)?;
            bird.withdraw(bp.start[i].prefix)?;
            bird.wait_route_gone(b_addr, pp.start[i].prefix, ROUTE_TIMEOUT)?;
            peer.wait_route_gone(a_addr, bp.start[i].prefix, ROUTE_TIMEOUT)?;
            // The runtime prefix stays while the withdrawn one goes.
            let left = bird.received_routes(b_addr)?;
            assert!(
                left.iter().any(|r| r.prefix == pp.later[i].prefix),
                "bird lost {} too: {left:?}",
                pp.later[i].prefix
            );
        }
        peer.stop()?;
        bird.stop()
    });
}

/// The IPv6 session has matching passwords and establishes; the IPv4 one does not
/// match, the kernel drops its segments (TCPMD5Failure counts them) and it never
/// establishes.
fn md5_mismatch_keeps_session_down<D: BgpDaemon>(name: &str) {
    scenario(name, |dir: &TestDir| {
        let link = topology::link()?;
        let (a, b) = (&link.a, &link.b);
        let (bp, pp) = (bird_plan(), peer_plan());
        let mut bird_spec = spec(a, BIRD_AS, b, PEER_AS, Some("right-key"), &bp);
        let mut peer_spec = spec(b, PEER_AS, a, BIRD_AS, Some("right-key"), &pp);
        bird_spec.neighbors[0].password = Some(password("bird-says-this"));
        peer_spec.neighbors[0].password = Some(password("peer-says-that"));
        let bird = Bird::start(&a.ns, dir, bird_spec)?;
        let peer = D::start(&b.ns, dir, peer_spec)?;

        bird.wait_established(b.v6.into(), SESSION_TIMEOUT)?;
        peer.wait_established(a.v6.into(), SESSION_TIMEOUT)?;
        wait_for(
            SESSION_TIMEOUT,
            "the kernel to drop segments with a wrong MD5 signature",
            || Ok(a.ns.tcp_ext_counter("TCPMD5Failure")? + b.ns.tcp_ext_counter("TCPMD5Failure")?),
            |n| *n > 0,
        )?;
        holds_for(
            Duration::from_secs(8),
            "the IPv4 session with mismatched passwords to stay down",
            || Ok((bird.session(b.v4.into())?, peer.session(a.v4.into())?)),
            |(x, y)| !x.established && !y.established,
        )?;
        Ok(())
    });
}

/// eBGP multihop through a router namespace with GTSM on both sides: packets cross
/// one router (TTL 255 → 254), both sides accept at most two hops.
fn gtsm_multihop<D: BgpDaemon>(name: &str) {
    scenario(name, |dir: &TestDir| {
        let routed = topology::routed()?;
        let (a, b) = (&routed.a, &routed.b);
        let (bp, pp) = (bird_plan(), peer_plan());
        let gtsm = TtlMode::Gtsm { hops: 2 };
        let bird_spec = RouterSpec::new(BIRD_AS, a.v4)
            .neighbor(
                NeighborSpec::new(b.v4.into(), PEER_AS)
                    .local(a.v4.into())
                    .ttl(gtsm),
            )
            .announce(bp.start[0].clone());
        let peer_spec = RouterSpec::new(PEER_AS, b.v4)
            .neighbor(
                NeighborSpec::new(a.v4.into(), BIRD_AS)
                    .local(b.v4.into())
                    .ttl(gtsm),
            )
            .announce(pp.start[0].clone());
        let bird = Bird::start(&a.ns, dir, bird_spec)?;
        let peer = D::start(&b.ns, dir, peer_spec)?;

        bird.wait_established(b.v4.into(), SESSION_TIMEOUT)?;
        peer.wait_established(a.v4.into(), SESSION_TIMEOUT)?;
        let got = peer.wait_route(a.v4.into(), bp.start[0].prefix, ROUTE_TIMEOUT)?;
        check_arrived(&got, &bp.start[0], BIRD_AS, a.v4.into(), peer.kind());
        let got = bird.wait_route(b.v4.into(), pp.start[0].prefix, ROUTE_TIMEOUT)?;
        check_arrived(&got, &pp.start[0], PEER_AS, b.v4.into(), "bird");
        Ok(())
    });
}

/// The other half of GTSM: `D` accepts only directly connected peers (minimum TTL 255)
/// and waits for BIRD to connect across the router; BIRD's segments arrive with TTL
/// 254, the kernel drops them (TCPMinTTLDrop counts them) and no session forms.
fn gtsm_rejects_an_extra_hop<D: BgpDaemon>(name: &str) {
    scenario(name, |dir: &TestDir| {
        let routed = topology::routed()?;
        let (a, b) = (&routed.a, &routed.b);
        let bird_spec = RouterSpec::new(BIRD_AS, a.v4).neighbor(
            NeighborSpec::new(b.v4.into(), PEER_AS)
                .local(a.v4.into())
                .ttl(TtlMode::Gtsm { hops: 2 }),
        );
        let peer_spec = RouterSpec::new(PEER_AS, b.v4).neighbor(
            NeighborSpec::new(a.v4.into(), BIRD_AS)
                .local(b.v4.into())
                .passive()
                .ttl(TtlMode::Gtsm { hops: 1 }),
        );
        let bird = Bird::start(&a.ns, dir, bird_spec)?;
        let peer = D::start(&b.ns, dir, peer_spec)?;
        wait_for(
            SESSION_TIMEOUT,
            &format!(
                "{}'s namespace to drop segments below its minimum TTL",
                peer.kind()
            ),
            || b.ns.tcp_ext_counter("TCPMinTTLDrop"),
            |n| *n > 0,
        )?;
        // BIRD may briefly believe in a session whose KEEPALIVEs the peer drops; the
        // strict side is the one that must never establish.
        holds_for(
            Duration::from_secs(6),
            &format!(
                "{} to refuse the session across one hop too many",
                peer.kind()
            ),
            || peer.session(a.v4.into()),
            |s| !s.established,
        )?;
        let got = bird.received_routes(b.v4.into())?;
        assert!(
            got.is_empty(),
            "bird received routes over a refused session: {got:?}"
        );
        Ok(())
    });
}

#[test]
fn frr_with_bird_gtsm_rejects_an_extra_hop() {
    gtsm_rejects_an_extra_hop::<Frr>("frr_gtsm_reject");
}

#[test]
fn gobgp_with_bird_gtsm_rejects_an_extra_hop() {
    gtsm_rejects_an_extra_hop::<GoBgp>("gobgp_gtsm_reject");
}

#[test]
fn openbgpd_with_bird_gtsm_rejects_an_extra_hop() {
    gtsm_rejects_an_extra_hop::<OpenBgpd>("openbgpd_gtsm_reject");
}

#[test]
fn exabgp_with_bird_gtsm_rejects_an_extra_hop() {
    gtsm_rejects_an_extra_hop::<ExaBgp>("exabgp_gtsm_reject");
}

#[test]
fn frr_with_bird_routes_flow_both_ways() {
    routes_flow_both_ways::<Frr>("frr_routes");
}

#[test]
fn frr_with_bird_md5_mismatch() {
    md5_mismatch_keeps_session_down::<Frr>("frr_md5");
}

#[test]
fn frr_with_bird_gtsm_multihop() {
    gtsm_multihop::<Frr>("frr_gtsm");
}

#[test]
fn gobgp_with_bird_routes_flow_both_ways() {
    routes_flow_both_ways::<GoBgp>("gobgp_routes");
}

#[test]
fn gobgp_with_bird_md5_mismatch() {
    md5_mismatch_keeps_session_down::<GoBgp>("gobgp_md5");
}

#[test]
fn gobgp_with_bird_gtsm_multihop() {
    gtsm_multihop::<GoBgp>("gobgp_gtsm");
}

#[test]
fn openbgpd_with_bird_routes_flow_both_ways() {
    routes_flow_both_ways::<OpenBgpd>("openbgpd_routes");
}

#[test]
fn openbgpd_with_bird_md5_mismatch() {
    md5_mismatch_keeps_session_down::<OpenBgpd>("openbgpd_md5");
}

#[test]
fn openbgpd_with_bird_gtsm_multihop() {
    gtsm_multihop::<OpenBgpd>("openbgpd_gtsm");
}

#[test]
fn exabgp_with_bird_routes_flow_both_ways() {
    routes_flow_both_ways::<ExaBgp>("exabgp_routes");
}

#[test]
fn exabgp_with_bird_md5_mismatch() {
    md5_mismatch_keeps_session_down::<ExaBgp>("exabgp_md5");
}

#[test]
fn exabgp_with_bird_gtsm_multihop() {
    gtsm_multihop::<ExaBgp>("exabgp_gtsm");
}

/// A namespace, a child spawned in it and a process that escaped into the background
/// all vanish when the test holding the namespace panics.
#[test]
fn namespace_is_removed_when_a_test_panics() {
    let mut seen: Option<(String, u32, u32)> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new().expect("namespace");
        let child = ns.spawn(&["sleep", "600"], None).expect("spawn sleep");
        let escaped = ns
            .exec(&[
                "sh",
                "-c",
                "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!",
            ])
            .expect("background sleep");
        let escaped: u32 = escaped.trim().parse().expect("pid");
        seen = Some((ns.name().to_string(), child.pid(), escaped));
        // The child handle is forgotten so only the namespace's drop can kill it.
        std::mem::forget(child);
        panic!("a test failing while holding a namespace");
    }));
    assert!(outcome.is_err(), "the closure was meant to panic");
    let (name, child, escaped) = seen.expect("the closure got far enough");
    let names = netns::list().expect("ip netns list");
    assert!(
        !names.contains(&name),
        "{name} survived the panic: {names:?}"
    );
    for pid in [child, escaped] {
        // The spawned child is ours, so it is a zombie until reaped: check it is dead.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "process {pid} from {name} still alive: {stat}"
        );
    }
}

/// Leftovers of a dead test process are swept; those of a live one are not.
#[test]
fn sweep_removes_only_namespaces_of_dead_owners() -> Result<()> {
    // A pid that existed and is gone: a finished child, reaped.
    let dead = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("run true");
    assert!(
        !std::path::Path::new(&format!("/proc/{dead}")).exists(),
        "pid {dead} reused already"
    );
    let stale = format!("sv-{dead}-sweeptest");
    let alive = format!("sv-{}-sweeptest", std::process::id());
    for name in [&stale, &alive] {
        let status = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "ip netns add {name}");
    }
    let removed = netns::sweep_stale()?;
    let names = netns::list()?;
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &alive])
        .status();
    assert!(removed.contains(&stale), "{stale} not swept: {removed:?}");
    assert!(!names.contains(&stale), "{stale} still listed: {names:?}");
    assert!(
        names.contains(&alive),
        "{alive} of a live process was swept: {names:?}"
    );
    Ok(())
}

fn ping(from: &Netns, to: IpAddr) -> Result<()> {
    wait_for(
        Duration::from_secs(20),
        &format!("{to} to answer ping from {}", from.name()),
        || {
            from.exec(&["ping", "-c", "1", "-W", "1", &to.to_string()])
                .map(|_| true)
        },
        |ok| *ok,
    )
    .map(drop)
}

/// Three hosts on one bridge reach each other over IPv4 and IPv6.
#[test]
fn segment_hosts_reach_each_other() -> Result<()> {
    let seg = topology::segment(3)?;
    for from in &seg.hosts {
        for to in &seg.hosts {
            if from.v4 != to.v4 {
                ping(&from.ns, to.v4.into())?;
                ping(&from.ns, to.v6.into())?;
            }
        }
    }
    Ok(())
}

/// Across two routers both ends reach each other, and the TTL shows the hops.
#[test]
fn routed_chain_forwards_both_families() -> Result<()> {
    let chain = topology::routed_through(2)?;
    ping(&chain.a.ns, chain.b.v4.into())?;
    ping(&chain.a.ns, chain.b.v6.into())?;
    ping(&chain.b.ns, chain.a.v4.into())?;
    let out = chain
        .a
        .ns
        .exec(&["ping", "-c", "1", "-W", "2", &chain.b.v4.to_string()])?;
    // Linux answers with TTL 64; two routers take two off on the way back.
    assert!(
        out.contains("ttl=62"),
        "expected ttl=62 after two routers:\n{out}"
    );
    Ok(())
}

/// The host kernel has no ipip; under the UML runner the same command works and a
/// ping crosses an ipip tunnel between two namespaces. This one test runs on both
/// sides: on the host it checks the failure and re-runs itself inside the guest.
#[test]
fn ipip_needs_the_uml_runner() -> Result<()> {
    if uml::inside() {
        let link = topology::link()?;
        for (host, local, remote, inner) in [
            (&link.a, link.a.v4, link.b.v4, "198.51.100.1/30"),
            (&link.b, link.b.v4, link.a.v4, "198.51.100.2/30"),
        ] {
            let (local, remote) = (local.to_string(), remote.to_string());
            host.ns.ip(&[
                "link", "add", "ipip0", "type", "ipip", "local", &local, "remote", &remote,
            ])?;
            host.ns.ip(&["link", "set", "ipip0", "up"])?;
            host.ns.add_addr("ipip0", net(inner))?;
        }
        ping(&link.a.ns, "198.51.100.2".parse().expect("literal"))?;
        println!("ping crossed the ipip tunnel");
        return Ok(());
    }

    let ns = Netns::new()?;
    let host = ns.ip(&[
        "link",
        "add",
        "ipip0",
        "type",
        "ipip",
        "local",
        "192.0.2.1",
        "remote",
        "192.0.2.2",
    ]);
    assert!(
        host.is_err(),
        "the host kernel unexpectedly has ipip; the UML runner is no longer needed for it"
    );

    let exe = std::env::current_exe().expect("test executable path");
    let run = Uml::new()?.run_test(&exe, "ipip_needs_the_uml_runner")?;
    assert!(
        run.success(),
        "inside UML the test failed (status {}):\n{}",
        run.status,
        run.output
    );
    assert!(
        run.output.contains("ping crossed the ipip tunnel"),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("1 passed"),
        "the test did not run inside UML:\n{}",
        run.output
    );
    Ok(())
}

/// Graceful restart (RFC 4724) with `D` as the helper: BIRD is killed hard, `D` keeps
/// BIRD's route marked stale; BIRD comes back with the same config and the route is
/// fresh again. Then `D` is killed and restarted, and BIRD gets `D`'s routes again,
/// including one `D` announced at run time before the crash.
fn graceful_restart_and_restart<D: BgpDaemon>(name: &str, shows_stale: bool) {
    scenario(name, |dir: &TestDir| {
        let link = topology::link()?;
        let (a, b) = (&link.a, &link.b);
        let (bp, pp) = (bird_plan(), peer_plan());
        let gr = Duration::from_secs(120);
        let bird_spec = RouterSpec::new(BIRD_AS, a.v4)
            .neighbor(
                NeighborSpec::new(b.v4.into(), PEER_AS)
                    .local(a.v4.into())
                    .graceful_restart(gr),
            )
            .announce(bp.start[0].clone());
        let peer_spec = RouterSpec::new(PEER_AS, b.v4)
            .neighbor(
                NeighborSpec::new(a.v4.into(), BIRD_AS)
                    .local(b.v4.into())
                    .graceful_restart(gr),
            )
            .announce(pp.start[0].clone());
        let (a_addr, b_addr): (IpAddr, IpAddr) = (a.v4.into(), b.v4.into());
        let mut bird = Bird::start(&a.ns, dir, bird_spec)?;
        let mut peer = D::start(&b.ns, dir, peer_spec)?;
        peer.wait_established(a_addr, SESSION_TIMEOUT)?;
        let fresh = peer.wait_route(a_addr, bp.start[0].prefix, ROUTE_TIMEOUT)?;
        if shows_stale {
            assert_eq!(
                fresh.stale,
                Some(false),
                "{} before the restart: {fresh:?}",
                peer.kind()
            );
        }

        // BIRD crashes after the initial exchange is complete: the helper has taken
        // BIRD's End-of-RIB in. OpenBGPD hands a received EOR from its session engine to
        // its route engine; one still queued when the session goes down is read as the
        // end of the restart, and the stale routes go at once.
        wait_for(
            ROUTE_TIMEOUT,
            &format!("{} to take BIRD's End-of-RIB in", peer.kind()),
            || Ok(peer.log()),
            |log| peer.kind() != "openbgpd" || log.contains("received IPv4 unicast EOR marker"),
        )?;
        std::thread::sleep(Duration::from_millis(500));
        bird.kill()?;
        if shows_stale {
            let prefix = bp.start[0].prefix;
            wait_for(
                ROUTE_TIMEOUT,
                &format!(
                    "{} to keep {prefix} as stale while BIRD restarts",
                    peer.kind()
                ),
                || peer.received_routes(a_addr),
                |routes| {
                    routes
                        .iter()
                        .any(|r| r.prefix == prefix && r.stale == Some(true))
                },
            )?;
        }
        bird.restart()?;
        bird.wait_established(b_addr, SESSION_TIMEOUT)?;
        let prefix = bp.start[0].prefix;
        wait_for(
            ROUTE_TIMEOUT,
            &format!(
                "{} to hold {prefix} fresh after BIRD's restart",
                peer.kind()
            ),
            || peer.received_routes(a_addr),
            |routes| {
                routes
                    .iter()
                    .any(|r| r.prefix == prefix && r.stale != Some(true))
            },
        )?;

        peer.announce(pp.later[0].clone())?;
        bird.wait_route(b_addr, pp.later[0].prefix, ROUTE_TIMEOUT)?;
        peer.kill()?;
        peer.restart()?;
        peer.wait_established(a_addr, SESSION_TIMEOUT)?;
        for sent in [&pp.start[0], &pp.later[0]] {
            let got = bird.wait_route(b_addr, sent.prefix, ROUTE_TIMEOUT)?;
            check_arrived(&got, sent, PEER_AS, b_addr, "bird");
        }
        Ok(())
    });
}

#[test]
fn frr_with_bird_graceful_restart_and_restart() {
    graceful_restart_and_restart::<Frr>("frr_gr", true);
}

#[test]
fn gobgp_with_bird_graceful_restart_and_restart() {
    graceful_restart_and_restart::<GoBgp>("gobgp_gr", true);
}

#[test]
fn openbgpd_with_bird_graceful_restart_and_restart() {
    graceful_restart_and_restart::<OpenBgpd>("openbgpd_gr", true);
}

/// ExaBGP keeps no routes across a session loss, so only the restarts are checked.
#[test]
fn exabgp_with_bird_restart() {
    graceful_restart_and_restart::<ExaBgp>("exabgp_gr", false);
}

/// `D` as an iBGP route reflector (RFC 4456) for two BIRD clients on one L2 segment,
/// with ADD-PATH (RFC 7911) negotiated on every session: a prefix from one client
/// reaches the other through `D` with its next hop and communities untouched.
fn route_reflector<D: BgpDaemon>(name: &str) {
    scenario(name, |dir: &TestDir| {
        let seg = topology::segment(3)?;
        let (rr, c1, c2) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
        let asn = Asn(65000);
        let client = |me: &Host| {
            RouterSpec::new(asn, me.v4).neighbor(
                NeighborSpec::new(rr.v4.into(), asn)
                    .local(me.v4.into())
                    .add_path(),
            )
        };
        let sent = bird_plan().start[0].clone().local_pref(300);
        let rr_spec = RouterSpec::new(asn, rr.v4)
            .neighbor(
                NeighborSpec::new(c1.v4.into(), asn)
                    .local(rr.v4.into())
                    .rr_client()
                    .add_path(),
            )
            .neighbor(
                NeighborSpec::new(c2.v4.into(), asn)
                    .local(rr.v4.into())
                    .rr_client()
                    .add_path(),
            );
        let reflector = D::start(&rr.ns, dir, rr_spec)?;
        let bird1 = Bird::start(&c1.ns, dir, client(c1).announce(sent.clone()))?;
        let bird2 = Bird::start(&c2.ns, dir, client(c2))?;
        for c in [c1, c2] {
            reflector.wait_established(c.v4.into(), SESSION_TIMEOUT)?;
        }
        for bird in [&bird1, &bird2] {
            bird.wait_established(rr.v4.into(), SESSION_TIMEOUT)?;
            let caps = bird.birdc(&["show", "protocols", "all", "sv_n0"])?;
            let theirs = caps
                .split("Neighbor capabilities")
                .nth(1)
                .unwrap_or_default();
            let add_path = theirs.split("ADD-PATH").nth(1).unwrap_or_default();
            assert!(
                add_path.contains("RX: ipv4") && add_path.contains("TX: ipv4"),
                "{} did not offer ADD-PATH both ways:\n{caps}",
                reflector.kind()
            );
        }
        let got = bird2.wait_route(rr.v4.into(), sent.prefix, ROUTE_TIMEOUT)?;
        assert_eq!(got.as_path, Vec::<Asn>::new(), "iBGP adds no AS: {got:?}");
        assert_eq!(
            got.next_hop,
            Some(c1.v4.into()),
            "a reflector keeps the next hop: {got:?}"
        );
        assert_eq!(
            got.local_pref,
            Some(300),
            "local preference crosses iBGP: {got:?}"
        );
        for c in &sent.communities {
            assert!(
                got.has_community(*c),
                "community {c} lost in reflection: {got:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn frr_route_reflector_for_bird_clients() {
    route_reflector::<Frr>("frr_rr");
}

#[test]
fn gobgp_route_reflector_for_bird_clients() {
    route_reflector::<GoBgp>("gobgp_rr");
}

#[test]
fn openbgpd_route_reflector_for_bird_clients() {
    route_reflector::<OpenBgpd>("openbgpd_rr");
}
