//! serval's BFD (RFC 5880/5881, coupled to BGP per RFC 5882) against BIRD's `protocol
//! bfd` and FRR's `bfdd`, in network namespaces: sessions come Up both ways with the
//! configured intervals, a change of intervals is negotiated (each side's view checked
//! with its own command), a cut path (every packet from the peer dropped, the link up,
//! nothing closed) takes the BGP session and its routes down within the detection time,
//! and the peer's AdminDown leaves BGP up.
//!
//! `cargo test -p serval-integration --test bfd`. Needs root, bird2, frr, nftables and a
//! built `serval` binary (`cargo build -p serval`).

use bgp::config::{BfdSettings, PeerBfd};
use bgp::status::BfdState;
use ipnet::IpNet;
use serval_integration::daemons::Bfdd;
use serval_integration::topology;
use serval_integration::{
    holds_for, scenario, tools, wait_for, Announcement, Asn, BfdSpec, BgpDaemon, Bird, Error, Frr,
    NeighborSpec, Netns, Result, RouterSpec, Serval,
};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SERVAL_AS: Asn = Asn(65001);
const PEER_AS: Asn = Asn(65002);
const T: Duration = Duration::from_secs(60);

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(what()))
    }
}

/// Drops every packet from `from` arriving in `ns` (or stops dropping them): the link
/// stays up, no connection is closed, the peer just goes silent.
fn cut(ns: &Netns, from: IpAddr, on: bool) -> Result<()> {
    let h = ns.handle();
    if on {
        h.exec(&["nft", "add", "table", "inet", "svcut"])?;
        h.exec(&[
            "nft",
            "add chain inet svcut input { type filter hook input priority 0 ; }",
        ])?;
        h.exec(&[
            "nft",
            &format!("add rule inet svcut input ip saddr {from} drop"),
        ])
        .map(drop)
    } else {
        h.exec(&["nft", "delete", "table", "inet", "svcut"])
            .map(drop)
    }
}

/// BIRD's `show bfd sessions` row for `peer`: (state, interval, timeout) as it prints
/// them, seconds with three decimals.
fn bird_bfd(bird: &Bird, peer: IpAddr) -> Result<Option<(String, String, String)>> {
    let out = bird.birdc(&["show", "bfd", "sessions"])?;
    Ok(out.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&peer.to_string().as_str()) && cols.len() >= 6).then(|| {
            (
                cols[2].to_string(),
                cols[cols.len() - 2].to_string(),
                cols[cols.len() - 1].to_string(),
            )
        })
    }))
}

fn row(state: &str, interval: &str, timeout: &str) -> Option<(String, String, String)> {
    Some((state.into(), interval.into(), timeout.into()))
}

/// serval's view: (state, tx, rx, detection time) in milliseconds.
fn serval_bfd(serval: &Serval, peer: IpAddr) -> Result<Option<(BfdState, u32, u32, u32)>> {
    Ok(serval.peer_status(peer)?.bfd.map(|b| {
        (
            b.state,
            b.tx_interval_ms.unwrap_or(0),
            b.rx_interval_ms.unwrap_or(0),
            b.detection_time_ms.unwrap_or(0),
        )
    }))
}

fn up(tx: u32, rx: u32, detect: u32) -> Option<(BfdState, u32, u32, u32)> {
    Some((BfdState::Up, tx, rx, detect))
}

fn settings(rx: u32, tx: u32) -> Option<PeerBfd> {
    Some(PeerBfd::On(BfdSettings {
        min_rx: Some(rx),
        min_tx: Some(tx),
        multiplier: Some(3),
        passive: None,
    }))
}

#[test]
fn bird_bfd_up_renegotiated_and_a_cut_detected() {
    scenario("bfd-bird", |dir| {
        tools::require_root()?;
        tools::require("nft")?;
        let link = topology::link()?;
        let (s, p) = (&link.a, &link.b);
        let (sa, pa) = (IpAddr::V4(s.v4), IpAddr::V4(p.v4));
        let x: IpNet = "198.51.100.0/24"
            .parse()
            .map_err(|_| Error::InvalidSpec("prefix".into()))?;
        let bird = Bird::start(
            &p.ns,
            dir,
            RouterSpec::new(PEER_AS, p.v4)
                .neighbor(
                    NeighborSpec::new(sa, SERVAL_AS)
                        .local(pa)
                        .hold_time(9)
                        .bfd(100, 100, 3),
                )
                .announce(Announcement::new(x)),
        )?;
        let mut serval = Serval::start(
            &s.ns,
            dir,
            RouterSpec::new(SERVAL_AS, s.v4).neighbor(
                NeighborSpec::new(pa, PEER_AS)
                    .local(sa)
                    .hold_time(9)
                    .bfd(100, 100, 3),
            ),
        )?;
        serval.wait_established(pa, T)?;
        bird.wait_established(sa, T)?;
        serval.wait_route(pa, x, T)?;
        // Up both ways, at the configured 100 ms x 3.
        wait_for(
            T,
            "serval's BFD Up at 100 ms",
            || serval_bfd(&serval, pa),
            |v| *v == up(100, 100, 300),
        )?;
        wait_for(
            T,
            "BIRD's BFD Up at 100 ms",
            || bird_bfd(&bird, sa),
            |v| *v == row("Up", "0.100", "0.300"),
        )?;

        // The path is cut: serval's BFD fails within 300 ms and BGP and the route go.
        cut(&s.ns, pa, true)?;
        let t0 = Instant::now();
        wait_for(
            Duration::from_secs(5),
            "the route to go",
            || serval.routes(),
            |r| r.is_empty(),
        )?;
        let took = t0.elapsed();
        let st = serval.peer_status(pa)?;
        check(!st.state.is_established(), || format!("still up: {st:?}"))?;
        check(
            st.last_error.as_deref() == Some("BFD down: control detection time expired"),
            || format!("serval does not say BFD took it down: {st:?}"),
        )?;
        // 300 ms of detection, plus this test's polling of the CLI.
        check(took < Duration::from_millis(600), || {
            format!("BGP went down {took:?} after the cut")
        })?;
        eprintln!("cut detected and the route gone after {took:?}");
        cut(&s.ns, pa, false)?;
        serval.wait_established(pa, T)?;
        serval.wait_route(pa, x, T)?;

        // New intervals at serval: negotiated by a poll sequence, BGP untouched. BIRD
        // now sends every max(its 100, our min-rx 300) and waits 3 x max(its 100, our
        // min-tx 200).
        let before = serval.peer_status(pa)?.established_count;
        serval.reconfigure(|c| c.peers[0].bfd = settings(300, 200))?;
        wait_for(
            T,
            "BIRD to take serval's new intervals",
            || bird_bfd(&bird, sa),
            |v| *v == row("Up", "0.300", "0.600"),
        )?;
        wait_for(
            T,
            "serval's own view of them",
            || serval_bfd(&serval, pa),
            |v| *v == up(200, 300, 900),
        )?;
        let st = serval.peer_status(pa)?;
        check(
            st.state.is_established() && st.established_count == before,
            || format!("the BGP session was reset by a BFD change: {st:?}"),
        )?;
        Ok(())
    });
}

#[test]
fn bird_bfd_over_ipv6() {
    scenario("bfd-bird-v6", |dir| {
        tools::require_root()?;
        let link = topology::link()?;
        let (s, p) = (&link.a, &link.b);
        let (sa, pa) = (IpAddr::V6(s.v6), IpAddr::V6(p.v6));
        let bird = Bird::start(
            &p.ns,
            dir,
            RouterSpec::new(PEER_AS, p.v4).neighbor(
                NeighborSpec::new(sa, SERVAL_AS)
                    .local(pa)
                    .hold_time(9)
                    .bfd(100, 100, 3),
            ),
        )?;
        let serval = Serval::start(
            &s.ns,
            dir,
            RouterSpec::new(SERVAL_AS, s.v4).neighbor(
                NeighborSpec::new(pa, PEER_AS)
                    .local(sa)
                    .hold_time(9)
                    .bfd(100, 100, 3),
            ),
        )?;
        serval.wait_established(pa, T)?;
        wait_for(
            T,
            "serval's BFD Up at 100 ms",
            || serval_bfd(&serval, pa),
            |v| *v == up(100, 100, 300),
        )?;
        wait_for(
            T,
            "BIRD's BFD Up at 100 ms",
            || bird_bfd(&bird, sa),
            |v| *v == row("Up", "0.100", "0.300"),
        )?;
        Ok(())
    });
}

#[test]
fn frr_bfdd_up_renegotiated_and_its_admin_down_keeps_bgp() {
    scenario("bfd-frr", |dir| {
        tools::require_root()?;
        let link = topology::link()?;
        let (s, p) = (&link.a, &link.b);
        let (sa, pa) = (IpAddr::V4(s.v4), IpAddr::V4(p.v4));
        // FRR's bgpd cannot reach bfdd without zebra: BGP and BFD run side by side there.
        let frr = Frr::start(
            &p.ns,
            dir,
            RouterSpec::new(PEER_AS, p.v4)
                .neighbor(NeighborSpec::new(sa, SERVAL_AS).local(pa).hold_time(9)),
        )?;
        let bfdd = Bfdd::start(
            &p.ns,
            dir,
            &[(
                sa,
                BfdSpec {
                    min_rx_ms: 100,
                    min_tx_ms: 100,
                    multiplier: 3,
                },
            )],
        )?;
        let mut serval = Serval::start(
            &s.ns,
            dir,
            RouterSpec::new(SERVAL_AS, s.v4).neighbor(
                NeighborSpec::new(pa, PEER_AS)
                    .local(sa)
                    .hold_time(9)
                    .bfd(100, 100, 3),
            ),
        )?;
        // serval's BGP waits for BFD: established means BFD came Up with bfdd.
        serval.wait_established(pa, T)?;
        frr.wait_established(sa, T)?;
        wait_for(
            T,
            "serval's BFD Up at 100 ms",
            || serval_bfd(&serval, pa),
            |v| *v == up(100, 100, 300),
        )?;
        let v = wait_for(
            T,
            "bfdd's session Up",
            || bfdd.peer(sa),
            |v| v.status == "up",
        )?;
        check(
            (
                v.remote_receive_interval,
                v.remote_transmit_interval,
                v.remote_detect_multiplier,
            ) == (100, 100, 3),
            || format!("bfdd sees other intervals from serval: {v:?}"),
        )?;

        // bfdd changes its intervals; serval follows, and the other way round.
        bfdd.configure_peer(sa, &["receive-interval 300", "transmit-interval 200"])?;
        wait_for(
            T,
            "serval to take bfdd's new intervals",
            || serval_bfd(&serval, pa),
            |v| *v == up(300, 200, 600),
        )?;
        serval.reconfigure(|c| c.peers[0].bfd = settings(150, 250))?;
        wait_for(
            T,
            "bfdd to take serval's new intervals",
            || bfdd.peer(sa),
            |v| {
                v.status == "up"
                    && (v.remote_receive_interval, v.remote_transmit_interval) == (150, 250)
            },
        )?;
        let before = serval.peer_status(pa)?;

        // bfdd goes AdminDown: serval's BFD goes Down, and BGP stays (RFC 5882 §3.2).
        bfdd.configure_peer(sa, &["shutdown"])?;
        wait_for(
            T,
            "serval's BFD to go down",
            || serval.peer_status(pa),
            |st| st.bfd.as_ref().is_some_and(|b| b.state == BfdState::Down),
        )?;
        holds_for(
            Duration::from_secs(2),
            "serval's BGP session to stay up",
            || serval.peer_status(pa),
            |st| st.state.is_established() && st.established_count == before.established_count,
        )?;
        let st = serval.peer_status(pa)?;
        let b = st
            .bfd
            .clone()
            .ok_or_else(|| Error::InvalidSpec(format!("no BFD in {st:?}")))?;
        check(
            b.local_diag.as_deref() == Some("neighbor signaled session down") && b.failures == 0,
            || format!("the AdminDown was taken for a failure: {b:?}"),
        )?;
        bfdd.configure_peer(sa, &["no shutdown"])?;
        wait_for(
            T,
            "BFD Up again",
            || serval_bfd(&serval, pa),
            |v| v.as_ref().is_some_and(|v| v.0 == BfdState::Up),
        )?;
        Ok(())
    });
}
