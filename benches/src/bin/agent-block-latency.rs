//! From a block claimed on node A to its route in node B's kernel.
//!
//! Two nodes in network namespaces on one subnet (A 192.0.2.11, B 192.0.2.12), one
//! `serval node run` each on an embedded file store, the node-to-node mesh between them.
//! Then, `--claims` times: this program claims an address in a fresh /26 block for node
//! A through the ipam crate (in process, so no CLI start-up is counted), and a thread
//! inside B's namespace, subscribed to the kernel's IPv4 route notifications (netlink
//! `RTMGRP_IPV4_ROUTE`), stamps the `RTM_NEWROUTE` of that block. Printed: the claim's
//! own time (the store write) and claim → route, p50 / p90 / max.
//!
//! The path measured: the store write; agent A's watch (one `stat` of the file every
//! 10 ms) and reconcile; A's UPDATE; B's speaker, best path, and route programming.
//!
//! ```text
//! cargo build --release -p serval -p serval-benches
//! target/release/agent-block-latency [--claims 100] [--serval PATH]
//! ```

#[path = "../../../tests/node_support/agent_lab.rs"]
mod agent_lab;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use ipam::allocator::{AssignIpRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::store::file::FileStore;
use ipam::Ipam;
use ipnet::Ipv4Net;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::RouteNetlinkMessage;
use serval_integration::Netns;

use agent_lab::{load_average, LabAgent};

#[derive(Parser)]
#[command(about = "Time from a block claimed on node A to its route installed on node B")]
struct Args {
    /// How many blocks to claim, one after the other.
    #[arg(long, default_value_t = 100)]
    claims: usize,
    /// The serval binary [default: the one next to this program].
    #[arg(long)]
    serval: Option<PathBuf>,
    /// Give up on one route after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

const POOL: &str = "10.65.0.0/16";
/// `RTMGRP_IPV4_ROUTE`: the multicast group of IPv4 route changes.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = agent_lab::serval_binary(args.serval.clone())?;
    let dir = tempfile::Builder::new()
        .prefix("agent-latency-")
        .tempdir()
        .context("temporary directory")?;
    let store_path = dir.path().join("ipam.json");
    let store = format!("file:{}", store_path.display());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let ipam = Ipam::new(Arc::new(FileStore::new(&store_path)));
    let pool = IpPool::new(
        PoolName::new("pods").map_err(|e| anyhow!("{e}"))?,
        POOL.parse().context("pool")?,
    );
    rt.block_on(ipam.add_pool(pool))
        .context("adding the pool")?;

    let a = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    let b = Netns::new().map_err(|e| anyhow!("namespace: {e}"))?;
    a.veth("eth0", &b, "eth0")
        .map_err(|e| anyhow!("veth: {e}"))?;
    a.add_addr("eth0", "192.0.2.11/24".parse().context("address")?)
        .map_err(|e| anyhow!("{e}"))?;
    b.add_addr("eth0", "192.0.2.12/24".parse().context("address")?)
        .map_err(|e| anyhow!("{e}"))?;

    let mut agent_a = LabAgent::start(&bin, &a, "a", &store, &dir.path().join("a"), "warn")?;
    let mut agent_b = LabAgent::start(&bin, &b, "b", &store, &dir.path().join("b"), "warn")?;
    agent_a.wait_established(&bin, 1, Duration::from_secs(60))?;
    agent_b.wait_established(&bin, 1, Duration::from_secs(60))?;

    let (tx, rx) = mpsc::channel::<(Ipv4Net, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let ns = b.name().to_owned();
        let stop = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let h = std::thread::spawn(move || watch_routes(&ns, tx, ready_tx, &stop));
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the route watcher ended before it was ready"))??;
        h
    };

    let node = NodeInfo::new(NodeName::new("a").map_err(|e| anyhow!("{e}"))?);
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut writes = Vec::with_capacity(args.claims);
    let mut routed = Vec::with_capacity(args.claims);
    for i in 0..args.claims {
        // Block i+1 of the pool (block 0 left alone): 10.65.0.64/26, 10.65.0.128/26, …
        let base = u32::from(Ipv4Addr::new(10, 65, 0, 0)) + (i as u32 + 1) * 64;
        let block = Ipv4Net::new(Ipv4Addr::from(base), 26).context("block")?;
        let ip = IpAddr::V4(Ipv4Addr::from(base + 1));
        let req = AssignIpRequest {
            ip,
            handle: HandleId::new(format!("bench-{i}")).map_err(|e| anyhow!("{e}"))?,
            node: node.clone(),
            namespace: None,
            pod: None,
        };
        let t0 = Instant::now();
        rt.block_on(ipam.assign_ip(req))
            .with_context(|| format!("claiming {block} for node a"))?;
        writes.push(t0.elapsed());
        let deadline = t0 + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((net, at)) if net == block => {
                    routed.push(at.saturating_duration_since(t0));
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    bail!(
                        "{block}: no route on node b within {timeout:?}\nagent a:\n{}\nagent b:\n{}",
                        agent_a.log_tail(),
                        agent_b.log_tail()
                    )
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = listener.join();

    println!(
        "agent-block-latency: {} blocks claimed on node a, route seen on node b (release \
         build; load average {})",
        args.claims,
        load_average()
    );
    println!("{:<28} {:>8} {:>8} {:>8}", "", "p50 ms", "p90 ms", "max ms");
    for (what, v) in [
        ("claim (store write)", &mut writes),
        ("claim → route on b", &mut routed),
    ] {
        v.sort();
        println!(
            "{what:<28} {:>8.1} {:>8.1} {:>8.1}",
            ms(pct(v, 50)),
            ms(pct(v, 90)),
            ms(v.last().copied().unwrap_or_default())
        );
    }
    let (rss, hwm) = agent_a.memory_kib()?;
    println!(
        "agent a after the run: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of sorted `v`.
fn pct(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// Inside namespace `ns`: sends every IPv4 route the kernel adds, stamped as it arrives,
/// until `stop`. Runs on its own thread, which `setns` moves into the namespace.
fn watch_routes(
    ns: &str,
    tx: mpsc::Sender<(Ipv4Net, Instant)>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    stop: &AtomicBool,
) {
    let sock = match subscribe(ns) {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `buf` is valid for its length; the fd is an open socket we own.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let at = Instant::now();
        if n <= 0 {
            // Timeout (SO_RCVTIMEO) or an interrupted call: look at `stop` again.
            continue;
        }
        let mut data = &buf[..n as usize];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
            if len < 16 || len > data.len() {
                break;
            }
            if let Some(net) = new_route(&data[..len]) {
                if tx.send((net, at)).is_err() {
                    return;
                }
            }
            data = &data[len.next_multiple_of(4).min(data.len())..];
        }
    }
}

/// The destination of an `RTM_NEWROUTE` message, if `msg` is one for IPv4.
fn new_route(msg: &[u8]) -> Option<Ipv4Net> {
    let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = m.payload else {
        return None;
    };
    let len = r.header.destination_prefix_length;
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(d)) => Ipv4Net::new(*d, len).ok(),
        _ => None,
    })
}

/// A netlink socket inside `ns` that receives IPv4 route changes.
fn subscribe(ns: &str) -> anyhow::Result<OwnedFd> {
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: plain syscalls on descriptors we own; `addr` and `tv` outlive the calls.
    unsafe {
        if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_IPV4_ROUTE;
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            bail!("netlink bind: {}", std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        // A large buffer: a burst of notifications must not be dropped.
        let size: libc::c_int = 4 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        Ok(sock)
    }
}
