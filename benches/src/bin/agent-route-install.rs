//! 100,000 routes through serval's route programmer against `ip -batch`, same run.
//!
//! `tests/dataplane_perf.rs` as a figure instead of an assertion: alternately, `--runs`
//! times each, in a fresh namespace with a veth (192.0.2.1/24, gateway 192.0.2.2):
//! serval's route programmer (the `route_install` example of the serval package: one
//! `Dataplane::apply_changes` of `--count` /32 routes via the gateway, proto 83, then
//! their removal) and `ip -batch` adding, then deleting, the same routes. Prints each
//! run, the medians and serval's rate over `ip -batch`'s.
//!
//! ```text
//! cargo build --release -p serval --example route_install
//! cargo build --release -p serval-benches --bin agent-route-install
//! target/release/agent-route-install [--count 100000] [--runs 5] [--example PATH]
//! ```

#[path = "../../../tests/node_support/agent_lab.rs"]
mod agent_lab;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use serval_integration::{tools, Netns};

use agent_lab::load_average;

#[derive(Parser)]
#[command(about = "serval's route programmer against ip -batch, 100,000 routes")]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    count: u32,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The route_install example [default: target/<profile>/examples/route_install].
    #[arg(long)]
    example: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 || args.count == 0 || args.count > 16_000_000 {
        bail!("--runs ≥ 1, --count 1..=16000000");
    }
    tools::require("ip").map_err(|e| anyhow!("{e}"))?;
    let example = match args.example {
        Some(p) => p,
        None => std::env::current_exe()
            .context("where this program is")?
            .with_file_name("examples")
            .join("route_install"),
    };
    if !example.is_file() {
        bail!(
            "{}: build it with cargo build --release -p serval --example route_install",
            example.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("agent-route-install-")
        .tempdir()
        .context("temporary directory")?;
    let (add, del) = batch_files(dir.path(), args.count)?;
    println!(
        "{} routes (/32 via 192.0.2.2 proto 83), {} runs each, alternating; load average {}",
        args.count,
        args.runs,
        load_average()
    );
    let mut s = (Vec::new(), Vec::new());
    let mut ip = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let (si, sr) = serval_run(&example, args.count)?;
        let (ii, ir) = ip_batch_run(&add, &del)?;
        println!(
            "run {run}: serval install {si:.3} s remove {sr:.3} s | ip -batch install {ii:.3} s \
             remove {ir:.3} s | load {}",
            load_average()
        );
        s.0.push(si);
        s.1.push(sr);
        ip.0.push(ii);
        ip.1.push(ir);
    }
    let rate = |secs: f64| f64::from(args.count) / secs;
    let (si, sr, ii, ir) = (median(s.0), median(s.1), median(ip.0), median(ip.1));
    println!("medians:");
    println!(
        "  serval    install {si:.3} s ({:>7.0}/s)  remove {sr:.3} s ({:>7.0}/s)",
        rate(si),
        rate(sr)
    );
    println!(
        "  ip -batch install {ii:.3} s ({:>7.0}/s)  remove {ir:.3} s ({:>7.0}/s)",
        rate(ii),
        rate(ir)
    );
    println!(
        "  serval rate / ip -batch rate: install {:.2}x, remove {:.2}x (target ≥ 1.0x); load {}",
        ii / si,
        ir / sr,
        load_average()
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A namespace with the gateway's subnet on a veth.
fn node() -> anyhow::Result<Netns> {
    let ns = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ])
    .map_err(|e| anyhow!("{e}"))?;
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .map_err(|e| anyhow!("{e}"))?;
    for dev in ["eth0", "peer0"] {
        ns.ip(&["link", "set", dev, "up"])
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(ns)
}

/// Seconds the example reported for installing and for removing.
fn serval_run(example: &Path, count: u32) -> anyhow::Result<(f64, f64)> {
    let ns = node()?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(example)
        .args(["--count", &count.to_string()])
        .output()
        .context("running route_install")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "route_install: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seconds = |verb: &str| -> anyhow::Result<f64> {
        text.lines()
            .find(|l| l.starts_with(verb))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no {verb} figure in: {text}"))
    };
    Ok((seconds("install")?, seconds("remove")?))
}

fn batch_files(dir: &Path, count: u32) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut add = String::new();
    let mut del = String::new();
    for i in 0..count {
        let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
        let _ = writeln!(add, "route add {a}/32 via 192.0.2.2 proto 83");
        let _ = writeln!(del, "route del {a}/32 via 192.0.2.2 proto 83");
    }
    let (pa, pd) = (dir.join("add.batch"), dir.join("del.batch"));
    std::fs::write(&pa, add).context("writing add.batch")?;
    std::fs::write(&pd, del).context("writing del.batch")?;
    Ok((pa, pd))
}

/// Seconds `ip -batch` took to add, then to delete, the routes.
fn ip_batch_run(add: &Path, del: &Path) -> anyhow::Result<(f64, f64)> {
    let ns = node()?;
    let time = |file: &Path| -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let status = Command::new("ip")
            .args(["-n", ns.name(), "-batch"])
            .arg(file)
            .status()
            .context("running ip -batch")?;
        if !status.success() {
            bail!("ip -batch {}: {status}", file.display());
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    Ok((time(add)?, time(del)?))
}
