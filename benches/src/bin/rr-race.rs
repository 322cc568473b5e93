//! `rr-race`: one route reflector and 1,000 clients; serval (`serval bgp` and the node
//! agent), BIRD, FRR and GoBGP as the reflector, side by side, in one run.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! sudo target/release/rr-race --clients 1000 --runs 3
//! ```
//!
//! First the clients run alone against a stand-in reflector that costs nothing
//! (`serval_benches::rr::selftest`): their own cold start, the floor under every figure.
//! Then each round runs every reflector once, in turn, each in fresh namespaces (see
//! `serval_benches::rr`). Prints the medians and spreads, serval's ratios against each
//! other reflector and the targets, with the load average. Needs root and bird2, frr
//! and gobgpd installed.

use anyhow::{bail, Context};
use clap::Parser;
use serval_benches::rr::reflectors::Reflector;
use serval_benches::rr::{self, report, RrOpts, Sample};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "serval as a route reflector for 1,000 clients, against BIRD, FRR and GoBGP")]
struct Cli {
    /// Rounds (every reflector once per round).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Reflectors, comma separated: serval, serval-node, bird, frr, gobgp.
    #[arg(
        long,
        default_value = "serval,serval-node,bird,frr,gobgp",
        value_delimiter = ','
    )]
    reflectors: Vec<String>,
    /// Clients, each with its own address, session and /26 (at most 1024).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients that drop and come back at once.
    #[arg(long, default_value_t = 100)]
    churn: usize,
    /// Withdraw rounds, one client each.
    #[arg(long, default_value_t = 20)]
    withdrawals: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// serval's binary; default: `serval` beside this program.
    #[arg(long)]
    serval: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let reflectors: Vec<Reflector> = cli
        .reflectors
        .iter()
        .map(|r| Reflector::parse(r).with_context(|| format!("unknown reflector {r:?}")))
        .collect::<anyhow::Result<_>>()?;
    let serval_bin = match cli.serval {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("serval"),
    };
    if !serval_bin.is_file() {
        bail!(
            "{} not found: cargo build --release -p serval -p serval-benches",
            serval_bin.display()
        );
    }
    let opts = RrOpts {
        serval_bin,
        clients: cli.clients,
        churn: cli.churn,
        withdrawals: cli.withdrawals,
        timeout: Duration::from_secs(cli.timeout),
    };
    let nofile = rr::raise_nofile();
    let load_before = rr::load();
    let alone = rr::selftest::run(opts.clients, opts.timeout)?;
    eprintln!(
        "the clients alone against a stand-in reflector: {:.3} s, {:.0} UPDATEs/s, {:.2} CPU s",
        alone.secs, alone.updates_per_sec, alone.cpu_secs
    );
    let mut results: Vec<(Reflector, Vec<Sample>)> =
        reflectors.iter().map(|&r| (r, Vec::new())).collect();
    for round in 1..=cli.runs {
        for (r, samples) in results.iter_mut() {
            eprint!(
                "round {round}/{} {:<11} load {} ... ",
                cli.runs,
                r.name(),
                rr::load()
            );
            match rr::run_once(*r, &opts) {
                Ok(s) => {
                    eprintln!(
                        "cold start {:.3} s (reflector {:.2} CPU s, clients {:.2}, {} UPDATEs, {} listen drops), churn {}, withdraw max {:.1} ms, peak RSS {:.1} MiB",
                        s.cold_secs,
                        s.cold_cpu_secs,
                        s.clients_cpu_secs,
                        s.cold_updates,
                        s.listen_drops,
                        s.churn_secs.map_or("-".into(), |c| format!("{c:.3} s")),
                        s.withdraw_ms.iter().copied().fold(0.0, f64::max),
                        s.peak_rss_kib as f64 / 1024.0
                    );
                    if s.sessions_lost > 0 {
                        eprintln!(
                            "  the reflector ended {} Established sessions (the clients connected again); the last: {}",
                            s.sessions_lost, s.last_loss
                        );
                    }
                    samples.push(s);
                }
                Err(e) => eprintln!("FAILED: {e}"),
            }
        }
    }
    let load_after = rr::load();
    println!(
        "rr-race: {} clients (iBGP AS 64512, one /26 each), {} rounds, churn {} clients, {} withdrawals; open files {nofile}",
        opts.clients, cli.runs, opts.churn, opts.withdrawals
    );
    println!("load average (1/5/15 min): {load_before} before, {load_after} after; 2 cores");
    println!(
        "the clients alone (a stand-in reflector that sends every block at once): cold start {:.3} s, {:.0} UPDATEs/s taken in, {:.2} CPU s",
        alone.secs, alone.updates_per_sec, alone.cpu_secs
    );
    println!(
        "start s: the reflector's start until its client answered (serval-node: until it had every client as a peer); cold start: first connection until every client holds the other {} blocks; CPU s: the reflector's during it (cli CPU: the clients' process); churn: {} clients close without NOTIFICATION and reconnect, until everyone is whole again; wd: a withdrawal until no other client holds the block (percentiles over all rounds); k-routes: blocks the reflector node programmed into its kernel; lost: Established sessions the reflector ended, over all rounds (the clients connect again)",
        opts.clients - 1,
        opts.churn
    );
    print!("{}", report::table(opts.clients, &results));
    Ok(())
}
