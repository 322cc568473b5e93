//! `bgp-race`: serval, BIRD, GoBGP and FRR fed the same table, side by side, in one run.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! sudo target/release/bgp-race --runs 3
//! ```
//!
//! Each shape runs `--runs` rounds; a round runs every daemon once, in turn, each in
//! fresh namespaces. Prints one table per shape with medians and spreads and serval's
//! ratios against each daemon. Needs root and bird2, frr and gobgpd installed.

use anyhow::{bail, Context};
use clap::Parser;
use serval_benches::race::daemons::Daemon;
use serval_benches::race::{self, report, RaceOpts, Sample, Shape};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "serval's BGP speaker against BIRD, GoBGP and FRR")]
struct Cli {
    /// Rounds per shape (every daemon once per round).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Daemons, comma separated.
    #[arg(long, default_value = "serval,bird,gobgp,frr", value_delimiter = ',')]
    daemons: Vec<String>,
    /// Shapes: single, route-server (or rs), comma separated.
    #[arg(long, default_value = "single,route-server", value_delimiter = ',')]
    shapes: Vec<String>,
    /// Prefixes in total (the route server splits them over its feeders).
    #[arg(long, default_value_t = 1_000_000)]
    prefixes: u32,
    #[arg(long, default_value_t = 20)]
    per_update: u32,
    #[arg(long, default_value_t = 10)]
    rs_feeders: u32,
    /// How often the daemon's count is polled (single feeder shape).
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// serval's binary; default: `serval` beside this program.
    #[arg(long)]
    serval: Option<PathBuf>,
    /// The feeder's binary; default: `bgp-feeder` beside this program.
    #[arg(long)]
    feeder: Option<PathBuf>,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this program")?;
    Ok(exe.with_file_name(name))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let daemons: Vec<Daemon> = cli
        .daemons
        .iter()
        .map(|d| Daemon::parse(d).with_context(|| format!("unknown daemon {d:?}")))
        .collect::<anyhow::Result<_>>()?;
    let shapes: Vec<Shape> = cli
        .shapes
        .iter()
        .map(|s| Shape::parse(s).with_context(|| format!("unknown shape {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    let opts = RaceOpts {
        serval_bin: cli.serval.map_or_else(|| sibling("serval"), Ok)?,
        feeder_bin: cli.feeder.map_or_else(|| sibling("bgp-feeder"), Ok)?,
        prefixes: cli.prefixes,
        per_update: cli.per_update,
        rs_feeders: cli.rs_feeders,
        poll: Duration::from_millis(cli.poll_ms),
        timeout: Duration::from_secs(cli.timeout),
        hold_time: 90,
        keepalive: 30,
    };
    for bin in [&opts.serval_bin, &opts.feeder_bin] {
        if !bin.is_file() {
            bail!(
                "{} not found: cargo build --release -p serval -p serval-benches",
                bin.display()
            );
        }
    }
    let load_before = race::load_average();
    let rate = race::feeder_selftest(&opts.feeder_bin, opts.prefixes)?;
    eprintln!("bgp-feeder alone into a discarding peer: {rate:.0} prefixes/s");
    let mut results: BTreeMap<Shape, Vec<(Daemon, Vec<Sample>)>> = BTreeMap::new();
    for &shape in &shapes {
        let entry = results.entry(shape).or_default();
        for &d in &daemons {
            entry.push((d, Vec::new()));
        }
        for round in 1..=cli.runs {
            for (d, samples) in entry.iter_mut() {
                eprint!(
                    "[{}] round {round}/{} {:<7} load {} ... ",
                    shape.name(),
                    cli.runs,
                    d.name(),
                    race::load_average()
                );
                match race::run_once(*d, shape, &opts) {
                    Ok(s) => {
                        if s.feeders_received > 0 {
                            eprintln!(
                                "warning: the feeders were sent {} prefixes",
                                s.feeders_received
                            );
                        }
                        eprintln!(
                            "{:.3} s ({:.3} s at the previous poll), peak RSS {} MiB, fed by {:.3} s",
                            s.secs,
                            s.lower_secs,
                            s.peak_rss_kib / 1024,
                            s.feeder_written_secs
                        );
                        samples.push(s);
                    }
                    Err(e) => eprintln!("FAILED: {e}"),
                }
            }
        }
    }
    let load_after = race::load_average();
    println!(
        "bgp-race: {} prefixes in UPDATEs of {}, hold 90 s / keepalive 30 s, {} rounds",
        opts.prefixes, opts.per_update, cli.runs
    );
    println!("load average (1/5/15 min): {load_before} before, {load_after} after; 2 cores");
    println!("feeder alone into a discarding peer: {rate:.0} prefixes/s");
    println!(
        "time: from the (first) feeder's OPEN; single feeder: first poll of the daemon's own count that saw every prefix (polled every {} ms; 'poll ms' is one query's duration), route server: the monitor holding every prefix. 'fed by': when the last feeder's last octet was accepted by the kernel.",
        cli.poll_ms
    );
    for (shape, rs) in &results {
        let (feeders, per) = opts.feeders(*shape);
        let header = match shape {
            Shape::Single => format!(
                "single feeder: {} prefixes in {} UPDATEs",
                per,
                per.div_ceil(opts.per_update)
            ),
            Shape::RouteServer => format!(
                "route server: {feeders} feeders x {per} prefixes, one monitor receives all {}",
                feeders * per
            ),
        };
        println!();
        print!("{}", report::table(*shape, &header, rs));
    }
    Ok(())
}
