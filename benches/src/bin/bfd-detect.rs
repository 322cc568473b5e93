//! How fast serval notices a dead path, with BFD and without.
//!
//! serval (192.0.2.1) and BIRD (192.0.2.2) on one veth link, eBGP, BIRD announcing one
//! prefix. A cut drops every packet from BIRD in serval's namespace (nftables; the link
//! stays up and nothing is closed, as when a router or a node dies without a word). The
//! time measured is from the cut to the moment serval withdrew BIRD's routes, taken from
//! serval's own log line (wall clock, microseconds), so the CLI's polling adds nothing.
//!
//! With BFD (`--interval` ms × `--multiplier`, both sides) it is done `--cuts` times;
//! serval is started afresh for each cut, because its BFD dampening would hold BGP down
//! longer with each flap in a row (that is what it is for). Without BFD, the BGP hold time
//! (`--hold` s) is what notices, `--cuts-without` times.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! sudo $CARGO_TARGET_DIR/release/bfd-detect [--cuts 20] [--interval 100] [--multiplier 3]
//! ```

use anyhow::{bail, Context as _};
use clap::Parser;
use serval_integration::topology;
use serval_integration::{
    wait_for, Announcement, Asn, BgpDaemon, Bird, NeighborSpec, Netns, RouterSpec, Serval, TestDir,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(about = "time from a cut path to serval's BGP reaction, with and without BFD")]
struct Args {
    /// Cuts with BFD.
    #[arg(long, default_value_t = 20)]
    cuts: usize,
    /// Cuts without BFD (each takes the hold time).
    #[arg(long, default_value_t = 3)]
    cuts_without: usize,
    /// BFD intervals, milliseconds.
    #[arg(long, default_value_t = 100)]
    interval: u32,
    #[arg(long, default_value_t = 3)]
    multiplier: u8,
    /// BGP hold time, seconds.
    #[arg(long, default_value_t = 9)]
    hold: u16,
    /// serval's binary; default: `serval` beside this program.
    #[arg(long)]
    serval: Option<PathBuf>,
}

const T: Duration = Duration::from_secs(60);
const LOG_LINE: &str = "routes of the peer withdrawn";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.serval {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("where this program is")?
            .join("serval"),
    };
    if !bin.is_file() {
        bail!(
            "no serval binary at {}: build it or give --serval",
            bin.display()
        );
    }
    std::env::set_var("SERVAL_BIN", &bin);
    let with = run(&args, true, args.cuts)?;
    let without = run(&args, false, args.cuts_without)?;
    println!(
        "\ncut → serval's routes withdrawn, {} cuts with BFD {} ms × {}, {} without (hold time {} s)",
        with.len(),
        args.interval,
        args.multiplier,
        without.len(),
        args.hold
    );
    println!("| | p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|");
    for (name, v) in [("with BFD", with), ("without BFD", without)] {
        if v.is_empty() {
            continue;
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            pct(&v, 50),
            pct(&v, 90),
            v.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// The `p`th percentile of sorted values (nearest rank).
fn pct(sorted: &[f64], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn run(args: &Args, bfd: bool, cuts: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    if cuts == 0 {
        return Ok(out);
    }
    let dir = TestDir::new(if bfd { "bfd-detect" } else { "bfd-detect-hold" })?;
    let link = topology::link()?;
    let (s, p) = (&link.a, &link.b);
    let (sa, pa) = (IpAddr::V4(s.v4), IpAddr::V4(p.v4));
    let x: ipnet::IpNet = "198.51.100.0/24".parse()?;
    let neighbor = |addr, asn, local| {
        let n = NeighborSpec::new(addr, asn)
            .local(local)
            .hold_time(args.hold);
        if bfd {
            n.bfd(args.interval, args.interval, args.multiplier)
        } else {
            n
        }
    };
    let bird = Bird::start(
        &p.ns,
        &dir,
        RouterSpec::new(Asn(65002), p.v4)
            .neighbor(neighbor(sa, Asn(65001), pa))
            .announce(Announcement::new(x)),
    )?;
    for i in 0..cuts {
        let serval = Serval::start(
            &s.ns,
            &dir,
            RouterSpec::new(Asn(65001), s.v4).neighbor(neighbor(pa, Asn(65002), sa)),
        )?;
        serval.wait_established(pa, T)?;
        serval.wait_route(pa, x, T)?;
        // Let BFD settle at its fast rate (BIRD's poll sequence after Up).
        std::thread::sleep(Duration::from_millis(500));
        let log = dir
            .path()
            .join(format!("serval-{}", s.v4))
            .join("serval.log");
        let before = std::fs::read_to_string(&log).unwrap_or_default().len();
        cut(&s.ns, pa, true)?;
        let at = tod(SystemTime::now());
        let wait = Duration::from_secs(u64::from(args.hold) * 2 + 10);
        wait_for(
            wait,
            "serval to withdraw the route",
            || serval.routes(),
            |r| r.is_empty(),
        )?;
        let text = std::fs::read_to_string(&log)?;
        let line = text[before..]
            .lines()
            .find(|l| l.contains(LOG_LINE))
            .context("serval's log does not say when the routes went")?;
        let done = log_tod(line).context("no time on serval's log line")?;
        let ms = (done - at) * 1000.0;
        eprintln!(
            "cut {}/{cuts} {}: {ms:.0} ms",
            i + 1,
            if bfd { "with BFD" } else { "without BFD" }
        );
        out.push(ms);
        cut(&s.ns, pa, false)?;
        drop(serval);
    }
    drop(bird);
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn cut(ns: &Netns, from: IpAddr, on: bool) -> anyhow::Result<()> {
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
        ])?;
    } else {
        h.exec(&["nft", "delete", "table", "inet", "svcut"])?;
    }
    Ok(())
}

/// Seconds since midnight UTC.
fn tod(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// Seconds since midnight UTC of a log line's `…THH:MM:SS.ffffffZ` stamp.
fn log_tod(line: &str) -> Option<f64> {
    let t = line.split('T').nth(1)?;
    let t = t.split('Z').next()?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}
