//! A cluster simulated with real agents: N `serval node run` in network namespaces on one
//! bridge, on an etcd datastore, with a BIRD top-of-rack router; full mesh or two route
//! reflectors. For each N it measures start-up, block propagation, a node lost (killed,
//! or hung), the agents' memory and CPU idle and under pod churn, and etcd's load; writes
//! the figures as JSON, fits how each grows with N and plots them (gnuplot).
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! target/release/cluster-sim --sweep           # mesh 25 50 100, reflectors 25 … 300
//! target/release/cluster-sim --nodes 5 --shape mesh --no-plots
//! ```
//!
//! Root, with `ip`, `etcd`, `bird`/`birdc` (Debian iproute2, etcd-server, bird2) and
//! `gnuplot` (gnuplot-nox) unless `--no-plots`. See benches/README.md, `## cluster-sim`.

#[path = "../../../tests/node_support/agent_lab.rs"]
mod agent_lab;
#[path = "../sim/mod.rs"]
mod sim;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};

use sim::cluster::{Cluster, Shape, Timers};
use sim::measure::{Plan, Rng};

#[derive(Parser)]
#[command(about = "A cluster of real serval agents on etcd with a BIRD ToR, measured as it grows")]
struct Args {
    /// Nodes (agents) of the one point to run.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    #[arg(long, value_enum, default_value_t = Shape::Mesh)]
    shape: Shape,
    /// Run the list of points instead: SHAPE:N,… [default with --sweep: mesh:25,mesh:50,
    /// mesh:100,rr:25,rr:50,rr:100,rr:200,rr:300].
    #[arg(long)]
    sweep: bool,
    #[arg(long, value_delimiter = ',')]
    points: Vec<String>,
    /// Blocks claimed one after the other, each timed until it is in every other kernel.
    #[arg(long, default_value_t = 100)]
    claims: usize,
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    #[arg(long, default_value_t = 15)]
    churn_secs: u64,
    /// Pods created per second across the cluster during churn.
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,
    /// Graceful-restart time the nodes announce (seconds).
    #[arg(long, default_value_t = 5)]
    restart_time: u64,
    /// keepAliveTime of the reflector peering (seconds; hold three times it).
    #[arg(long, default_value_t = 3)]
    keepalive: u64,
    /// Leave out the hung node (the mesh's hold time is 90 s).
    #[arg(long)]
    no_hang: bool,
    #[arg(long)]
    no_plots: bool,
    /// Run nothing: the table, the fits and the plots of the points already in `--out`.
    #[arg(long)]
    report_only: bool,
    /// The JSON of all points; a point run again replaces its earlier figures.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the PNGs go [default: benches/plots].
    #[arg(long)]
    plots: Option<PathBuf>,
    /// The serval binary [default: the one next to this program].
    #[arg(long)]
    serval: Option<PathBuf>,
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Keep each point's files (agent logs, etcd data) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
}

const SWEEP: &str = "mesh:25,mesh:50,mesh:100,rr:25,rr:50,rr:100,rr:200,rr:300";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = agent_lab::serval_binary(args.serval.clone())?;
    serval_integration::tools::require_all(&["ip", "etcd", "bird", "birdc"])
        .map_err(|e| anyhow!("{e}"))?;
    if !args.no_plots {
        sim::report::require_gnuplot()?;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plots_dir = args.plots.clone().unwrap_or_else(|| manifest.join("plots"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| plots_dir.join("cluster-sim.json"));
    let points: Vec<(Shape, usize)> = if args.report_only {
        Vec::new()
    } else if args.sweep || !args.points.is_empty() {
        let list: Vec<String> = if args.points.is_empty() {
            SWEEP.split(',').map(str::to_owned).collect()
        } else {
            args.points.clone()
        };
        list.iter()
            .map(|p| parse_point(p))
            .collect::<anyhow::Result<_>>()?
    } else {
        vec![(args.shape, args.nodes)]
    };
    let removed = sim::net::sweep_stale()?;
    if !removed.is_empty() {
        eprintln!(
            "cluster-sim: removed {} namespaces of an earlier run",
            removed.len()
        );
    }
    let plan = Plan {
        claims: args.claims,
        idle_secs: args.idle_secs,
        churn_secs: args.churn_secs,
        churn_rate: args.churn_rate,
        hang: !args.no_hang,
        log_level: args.log_level.clone(),
    };
    let timers = Timers {
        restart_secs: args.restart_time,
        keepalive_secs: args.keepalive,
    };
    let mut per_agent_mib = 40.0;
    for (shape, n) in points {
        let avail = mem_available_mib();
        let need = n as f64 * per_agent_mib * 1.5 + 1024.0;
        if avail < need {
            eprintln!(
                "cluster-sim: {} N={n} left out: {avail:.0} MiB available, about {need:.0} MiB needed",
                shape.name()
            );
            continue;
        }
        let p = run_point(&bin, shape, n, timers, &plan, args.keep.as_deref())?;
        if let Some(r) = sim::report::get(&p, &["churn", "rss_mib_mean"]).and_then(Value::as_f64) {
            per_agent_mib = r.max(10.0);
        }
        println!("{}", serde_json::to_string_pretty(&p)?);
        merge(&out, p)?;
    }
    let mut all = read_points(&out)?;
    sim::report::derive(&mut all);
    println!("\n{}", sim::report::table(&all));
    let fits = sim::report::fits_text(&all);
    println!("fitted curves (least squares; chosen: smallest residual standard error)\n{fits}");
    std::fs::write(out.with_extension("fits.txt"), &fits)?;
    if !args.no_plots {
        let made = sim::report::plots(&all, &plots_dir)?;
        println!("plots in {}: {}", plots_dir.display(), made.join(", "));
    }
    Ok(())
}

fn parse_point(p: &str) -> anyhow::Result<(Shape, usize)> {
    let (s, n) = p
        .split_once(':')
        .ok_or_else(|| anyhow!("{p}: a point is SHAPE:N (mesh:25, rr:100)"))?;
    let shape = match s {
        "mesh" => Shape::Mesh,
        "rr" => Shape::Rr,
        _ => bail!("{p}: the shape is mesh or rr"),
    };
    Ok((shape, n.parse().with_context(|| format!("{p}: N"))?))
}

fn run_point(
    bin: &Path,
    shape: Shape,
    n: usize,
    timers: Timers,
    plan: &Plan,
    keep: Option<&Path>,
) -> anyhow::Result<Value> {
    let tmp = tempfile::Builder::new()
        .prefix("cluster-sim-")
        .tempdir()
        .context("temporary directory")?;
    let dir = match keep {
        Some(k) => k.join(format!("{}-{n}", shape.name())),
        None => tmp.path().to_owned(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let load_before = agent_lab::load_average();
    let mem_before = mem_available_mib();
    eprintln!(
        "cluster-sim: {} N={n}: building (load {load_before})",
        shape.name()
    );
    let t0 = std::time::Instant::now();
    let mut c = Cluster::build(n, shape, timers, bin, &dir)?;
    let build_s = t0.elapsed().as_secs_f64();
    let mut rng = Rng::new(0x5e7a_1000 + n as u64);
    let figures = sim::measure::run(&mut c, plan, &mut rng)?;
    let mem_after = mem_available_mib();
    drop(c);
    let mut p = json!({
        "shape": shape.name(),
        "nodes": n,
        "load_before": load_before,
        "load_after": agent_lab::load_average(),
        "mem_available_mib_before": mem_before.round(),
        "mem_available_mib_during": mem_after.round(),
        "build_s": sim::etcd::round(build_s),
        "timers": {
            "restart_time_s": timers.restart_secs,
            "hold_time_s": timers.hold_secs(shape),
            "keepalive_s": if shape == Shape::Rr { Some(timers.keepalive_secs) } else { None },
        },
        "routes_read_from": "kernel (netlink RTMGRP_IPV4_ROUTE notifications in every node namespace, protocol 83)",
        "etcd_counters": "grpc_server_handled_total{grpc_type=unary} (requests), etcd_debugging_mvcc_events_total (watch events), grpc_server_msg_sent_total{grpc_method=Watch}",
    });
    if let (Some(o), Value::Object(f)) = (p.as_object_mut(), figures) {
        o.extend(f);
    }
    Ok(p)
}

fn read_points(out: &Path) -> anyhow::Result<Vec<Value>> {
    match std::fs::read_to_string(out) {
        Ok(text) => {
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("{}", out.display()))?;
            Ok(v["points"].as_array().cloned().unwrap_or_default())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", out.display())),
    }
}

/// Adds `p` to the JSON at `out`, replacing an earlier point of the same shape and N.
fn merge(out: &Path, p: Value) -> anyhow::Result<()> {
    let mut all = read_points(out)?;
    all.retain(|q| !(q["shape"] == p["shape"] && q["nodes"] == p["nodes"]));
    all.push(p);
    all.sort_by_key(|q| {
        (
            q["shape"].as_str().unwrap_or("").to_owned(),
            q["nodes"].as_u64(),
        )
    });
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        out,
        serde_json::to_string_pretty(&json!({ "points": all }))? + "\n",
    )
    .with_context(|| format!("writing {}", out.display()))
}

fn mem_available_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0)
}
