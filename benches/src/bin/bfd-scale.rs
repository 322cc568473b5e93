//! What BFD costs: `--sessions` BFD sessions at `--interval` ms, serval against serval.
//!
//! Two namespaces on one veth link; each holds `--sessions` addresses (10.77.1.i and
//! 10.77.2.i) and runs one `serval bgp` with a BGP peer with BFD per address of the other
//! side, each session from its own address. Once every BFD session is Up, the CPU time
//! (user + system, from /proc) of one of the two processes is taken over `--seconds`
//! and printed as a share of one core. It sends and receives 1000/`--interval` packets
//! a second per session; the BGP sessions beside them only exchange KEEPALIVEs.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! sudo $CARGO_TARGET_DIR/release/bfd-scale [--sessions 100] [--interval 100] [--seconds 30]
//! ```

use anyhow::{bail, Context as _};
use clap::Parser;
use ipnet::IpNet;
use serval_integration::topology;
use serval_integration::{wait_for, Asn, BgpDaemon, NeighborSpec, RouterSpec, Serval, TestDir};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "the CPU cost of serval's BFD sessions")]
struct Args {
    #[arg(long, default_value_t = 100)]
    sessions: u8,
    /// BFD intervals (both), milliseconds.
    #[arg(long, default_value_t = 100)]
    interval: u32,
    /// How long to measure.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// serval's binary; default: `serval` beside this program.
    #[arg(long)]
    serval: Option<PathBuf>,
}

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
    let n = args.sessions;
    if n == 0 || n > 250 {
        bail!("--sessions: 1 to 250");
    }
    let dir = TestDir::new("bfd-scale")?;
    let link = topology::link()?;
    let a_addr = |i: u8| Ipv4Addr::new(10, 77, 1, i);
    let b_addr = |i: u8| Ipv4Addr::new(10, 77, 2, i);
    for i in 1..=n {
        link.a
            .ns
            .add_addr(&link.a.ifname, IpNet::new(a_addr(i).into(), 16)?)?;
        link.b
            .ns
            .add_addr(&link.b.ifname, IpNet::new(b_addr(i).into(), 16)?)?;
    }
    let spec = |asn: u32,
                peer_asn: u32,
                id: Ipv4Addr,
                mine: &dyn Fn(u8) -> Ipv4Addr,
                theirs: &dyn Fn(u8) -> Ipv4Addr| {
        let mut s = RouterSpec::new(Asn(asn), id);
        for i in 1..=n {
            s = s.neighbor(
                NeighborSpec::new(IpAddr::V4(theirs(i)), Asn(peer_asn))
                    .local(IpAddr::V4(mine(i)))
                    .hold_time(90)
                    .bfd(args.interval, args.interval, 3),
            );
        }
        s
    };
    let a = Serval::start(
        &link.a.ns,
        &dir,
        spec(65001, 65002, link.a.v4, &a_addr, &b_addr),
    )?;
    let _b = Serval::start(
        &link.b.ns,
        &dir,
        spec(65002, 65001, link.b.v4, &b_addr, &a_addr),
    )?;
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "every BFD session Up",
        || a.status(),
        |peers| {
            peers
                .iter()
                .filter(|p| {
                    p.bfd
                        .as_ref()
                        .is_some_and(|b| b.state == bgp::status::BfdState::Up)
                })
                .count()
                == usize::from(n)
        },
    )?;
    eprintln!(
        "{n} BFD sessions Up after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Let every session reach its fast rate (poll sequences after Up).
    std::thread::sleep(Duration::from_secs(3));
    let pids = link.a.ns.pids()?;
    let pid = *pids.first().context("no process in serval's namespace")?;
    let (c0, w0) = (cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (c1, wall) = (cpu_ticks(pid)?, w0.elapsed());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (c1 - c0) as f64 / hz;
    let share = cpu / wall.as_secs_f64() * 100.0;
    let st = a.status()?;
    let up = st
        .iter()
        .filter(|p| {
            p.bfd
                .as_ref()
                .is_some_and(|b| b.state == bgp::status::BfdState::Up)
        })
        .count();
    let sent: u64 = st
        .iter()
        .filter_map(|p| p.bfd.as_ref())
        .map(|b| b.packets_sent)
        .sum();
    let received: u64 = st
        .iter()
        .filter_map(|p| p.bfd.as_ref())
        .map(|b| b.packets_received)
        .sum();
    println!(
        "{n} BFD sessions at {} ms × 3: {cpu:.2} s of CPU in {:.1} s = {share:.2} % of one core \
         ({up} still Up; {sent} packets sent, {received} received in all)",
        args.interval,
        wall.as_secs_f64()
    );
    Ok(())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    let ut: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(ut + stime)
}
