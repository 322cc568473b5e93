//! The race end to end at a small scale: serval, BIRD, GoBGP and FRR each load a
//! 20,000-prefix table from one feeder, and as a route server from four feeders to a
//! monitor, in fresh namespaces. Checks the machinery (configs, feeds, counts, the
//! monitor, timing, RSS), not the speed.
//!
//! Needs root, bird2, frr and gobgpd, and serval's binary: `cargo build -p serval`
//! first (or set `SERVAL_BIN`).

use serval_benches::race::daemons::Daemon;
use serval_benches::race::{self, RaceOpts, Shape};
use std::path::PathBuf;
use std::time::Duration;

fn opts() -> RaceOpts {
    let serval_bin = match serval_integration::serval::binary() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    RaceOpts {
        serval_bin,
        feeder_bin: PathBuf::from(env!("CARGO_BIN_EXE_bgp-feeder")),
        prefixes: 20_000,
        per_update: 20,
        rs_feeders: 4,
        poll: Duration::from_millis(20),
        timeout: Duration::from_secs(120),
        hold_time: 90,
        keepalive: 30,
    }
}

fn check(daemon: Daemon, shape: Shape) {
    let s = race::run_once(daemon, shape, &opts())
        .unwrap_or_else(|e| panic!("{} {}: {e}", daemon.name(), shape.name()));
    assert_eq!(s.prefixes, 20_000);
    assert!(s.secs > 0.0 && s.lower_secs <= s.secs, "{s:?}");
    assert!(s.feeder_written_secs > 0.0, "{s:?}");
    assert!(
        s.peak_rss_kib >= s.idle_rss_kib && s.peak_rss_kib > 0,
        "{s:?}"
    );
    assert_eq!(s.feeders_received, 0, "only the monitor gets routes");
    if shape == Shape::Single {
        assert!(s.polls > 0, "{s:?}");
    }
}

#[test]
fn serval_loads_a_table_in_both_shapes() {
    check(Daemon::Serval, Shape::Single);
    check(Daemon::Serval, Shape::RouteServer);
}

#[test]
fn bird_loads_a_table_in_both_shapes() {
    check(Daemon::Bird, Shape::Single);
    check(Daemon::Bird, Shape::RouteServer);
}

#[test]
fn gobgp_loads_a_table_in_both_shapes() {
    check(Daemon::Gobgp, Shape::Single);
    check(Daemon::Gobgp, Shape::RouteServer);
}

#[test]
fn frr_loads_a_table_in_both_shapes() {
    check(Daemon::Frr, Shape::Single);
    check(Daemon::Frr, Shape::RouteServer);
}
