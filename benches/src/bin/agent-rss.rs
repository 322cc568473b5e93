//! The node agent's memory: idle with one mesh peer, and with 100 BGP sessions.
//!
//! - *idle*: two nodes in namespaces on one subnet, one `serval node run` each on an
//!   embedded file store with one pool and one block per node, the node-to-node mesh
//!   between them (one peer each). Memory of node a's agent after `--settle` seconds.
//! - *100 peers*: one node (198.51.100.254/24) whose datastore has 100 `BGPPeer`s,
//!   towards 198.51.100.1 … .100: 100 BIRD processes in one other namespace, each with
//!   one passive `protocol bgp` bound to its own address (`local`, `strict bind`; one
//!   process per session because BIRD runs one session per neighbour address and port,
//!   and here every session has the agent as neighbour), AS 65001. Each
//!   BIRD session sends `--routes-per-peer` routes of its own (10.200.P.0/24 split into
//!   /28s: prefixes outside the pools, held in the agent's RIB, not in the kernel).
//!   Memory after all 100 are Established, every route received, and `--settle` seconds.
//!
//! Printed per case: VmRSS (resident now) and VmHWM (the peak) of the agent's process,
//! with the machine's load average.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! target/release/agent-rss [--peers 100] [--routes-per-peer 4] [--settle 10] [--serval PATH]
//! ```

#[path = "../../../tests/node_support/agent_lab.rs"]
mod agent_lab;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use serval_integration::{tools, Netns, NsChild};

use agent_lab::{load_average, serval, LabAgent};

#[derive(Parser)]
#[command(about = "The node agent's memory, idle and with 100 BGP sessions")]
struct Args {
    /// BGP sessions of the second case.
    #[arg(long, default_value_t = 100)]
    peers: u16,
    /// Routes each of those peers sends.
    #[arg(long, default_value_t = 4)]
    routes_per_peer: u16,
    /// Seconds to wait, once everything is up, before reading the memory.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// The serval binary [default: the one next to this program].
    #[arg(long)]
    serval: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.peers == 0 || args.peers > 250 || !(1..=16).contains(&args.routes_per_peer) {
        bail!("--peers 1..=250, --routes-per-peer 1..=16");
    }
    let bin = agent_lab::serval_binary(args.serval.clone())?;
    tools::require_all(&["ip", "bird", "birdc"]).map_err(|e| anyhow!("{e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("agent-rss-")
        .tempdir()
        .context("temporary directory")?;
    println!(
        "agent-rss: {} (release build expected), settle {} s",
        bin.display(),
        args.settle
    );
    let idle = idle(&bin, dir.path(), args.settle)?;
    let many = many_peers(&bin, dir.path(), &args)?;
    println!(
        "{:<44} {:>10} {:>10}  load average",
        "case", "VmRSS", "VmHWM"
    );
    for (what, (rss, hwm), load) in [idle, many] {
        println!(
            "{what:<44} {:>6.1} MiB {:>6.1} MiB  {load}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}

type Figure = (String, (u64, u64), String);

fn settle(agent: &mut LabAgent, secs: u64) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Ok(Some(status)) = agent.child.try_wait() {
            bail!("the agent exited ({status}):\n{}", agent.log_tail());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The pods' pool 10.65.0.0/16 in `store`.
fn add_pool(bin: &Path, store: &str) -> anyhow::Result<()> {
    serval(
        bin,
        &[
            "pool",
            "add",
            "10.65.0.0/16",
            "--name",
            "pods",
            "--datastore",
            store,
        ],
    )?;
    Ok(())
}

/// Two nodes, the mesh, a block on each: node a's agent.
fn idle(bin: &Path, dir: &Path, secs: u64) -> anyhow::Result<Figure> {
    let store = format!("file:{}", dir.join("idle.json").display());
    add_pool(bin, &store)?;
    let a = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    let b = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    a.veth("eth0", &b, "eth0").map_err(|e| anyhow!("{e}"))?;
    a.add_addr("eth0", "192.0.2.11/24".parse().context("address")?)
        .map_err(|e| anyhow!("{e}"))?;
    b.add_addr("eth0", "192.0.2.12/24".parse().context("address")?)
        .map_err(|e| anyhow!("{e}"))?;
    let mut agent_a = LabAgent::start(bin, &a, "a", &store, &dir.join("idle-a"), "warn")?;
    let mut agent_b = LabAgent::start(bin, &b, "b", &store, &dir.join("idle-b"), "warn")?;
    agent_a.wait_established(bin, 1, Duration::from_secs(60))?;
    agent_b.wait_established(bin, 1, Duration::from_secs(60))?;
    for (node, ip) in [("a", "10.65.0.1"), ("b", "10.65.0.65")] {
        serval(
            bin,
            &[
                "ipam",
                "assign",
                "--node",
                node,
                "--handle",
                &format!("pod-{node}"),
                "--ip",
                ip,
                "--datastore",
                &store,
            ],
        )?;
    }
    settle(&mut agent_a, secs)?;
    let mem = agent_a.memory_kib()?;
    Ok(("idle, 1 mesh peer, 2 blocks".into(), mem, load_average()))
}

/// One node with `--peers` BGPPeers towards one BIRD.
fn many_peers(bin: &Path, dir: &Path, args: &Args) -> anyhow::Result<Figure> {
    let n = args.peers;
    let store = format!("file:{}", dir.join("peers.json").display());
    add_pool(bin, &store)?;
    let mut yaml = String::new();
    for p in 1..=n {
        let _ = write!(
            yaml,
            "---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: tor-{p}}}\n\
             spec: {{peerIP: 198.51.100.{p}, asNumber: 65001}}\n"
        );
    }
    let peers_file = dir.join("peers.yaml");
    std::fs::write(&peers_file, yaml).context("writing peers.yaml")?;
    serval(
        bin,
        &[
            "apply",
            "-f",
            &peers_file.display().to_string(),
            "--datastore",
            &store,
        ],
    )?;

    let node = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    let tor = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    node.veth("eth0", &tor, "eth0")
        .map_err(|e| anyhow!("{e}"))?;
    node.add_addr("eth0", "198.51.100.254/24".parse().context("address")?)
        .map_err(|e| anyhow!("{e}"))?;
    for p in 1..=n {
        tor.add_addr(
            "eth0",
            format!("198.51.100.{p}/24").parse().context("address")?,
        )
        .map_err(|e| anyhow!("{e}"))?;
    }
    let birds = start_birds(&tor, dir, n, args.routes_per_peer)?;
    let t0 = Instant::now();
    let mut agent = LabAgent::start(bin, &node, "n", &store, &dir.join("peers-n"), "warn")?;
    let up = agent.wait_established(bin, usize::from(n), Duration::from_secs(180))?;
    let want = u64::from(n) * u64::from(args.routes_per_peer);
    let mut got = 0;
    while t0.elapsed() < Duration::from_secs(240) {
        got = received(&agent.peers(bin)?);
        if got >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if got < want {
        bail!("{got} of {want} routes received:\n{}", agent.log_tail());
    }
    println!(
        "{n} sessions Established {:.1} s after the agent started, {want} routes received",
        up.as_secs_f64()
    );
    settle(&mut agent, args.settle)?;
    let mem = agent.memory_kib()?;
    let mut birds_rss = 0;
    for b in &birds {
        birds_rss += agent_lab::memory_kib(b.pid())?.0;
    }
    println!(
        "for scale: the {n} BIRD processes together, VmRSS {:.1} MiB",
        birds_rss as f64 / 1024.0
    );
    Ok((
        format!("{n} BGP peers (BIRD), {want} routes"),
        mem,
        load_average(),
    ))
}

/// Routes received over every session, from the speaker's per-family counters.
fn received(peers: &[serde_json::Value]) -> u64 {
    peers
        .iter()
        .flat_map(|p| p["families"].as_array().cloned().unwrap_or_default())
        .map(|f| f["received"].as_u64().unwrap_or(0))
        .sum()
}

/// One BIRD per address, each with one passive `protocol bgp` bound to its address
/// (`strict bind`) exporting its own statics. One process each: BIRD runs one session
/// per neighbour address and port, and every session here has the same neighbour.
fn start_birds(tor: &Netns, dir: &Path, n: u16, routes: u16) -> anyhow::Result<Vec<NsChild>> {
    let mut birds = Vec::new();
    for p in 1..=n {
        let mut c = format!(
            "router id 198.51.100.{p};\nprotocol device {{}}\nprotocol static feed {{\n  ipv4;\n"
        );
        for r in 0..routes {
            let _ = writeln!(c, "  route 10.200.{p}.{}/28 blackhole;", r * 16);
        }
        let _ = writeln!(
            c,
            "}}\nprotocol bgp tor {{\n  local 198.51.100.{p} as 65001;\n  \
             neighbor 198.51.100.254 as 64512;\n  passive on;\n  strict bind on;\n  \
             ipv4 {{ import none; export where proto = \"feed\"; }};\n}}"
        );
        let conf = dir.join(format!("bird-{p}.conf"));
        std::fs::write(&conf, c).with_context(|| format!("writing {}", conf.display()))?;
        let ctl = dir.join(format!("bird-{p}.ctl")).display().to_string();
        let conf_s = conf.display().to_string();
        birds.push(
            tor.spawn(
                &["bird", "-f", "-c", &conf_s, "-s", &ctl],
                Some(&dir.join(format!("bird-{p}.log"))),
            )
            .map_err(|e| anyhow!("starting bird {p}: {e}"))?,
        );
    }
    Ok(birds)
}
