//! A BGPPeer that floods the node: 1,000,000 IPv4 prefixes outside every pool, a full
//! Internet table's worth, from a router peered through a `BGPPeer` without `maxPrefix`.
//!
//! ```text
//!   tor (feeder)                      n1 (serval node run)                  edge
//!   192.0.2.21, AS 65001 ── eth0 ── 192.0.2.11 · 198.51.100.11, AS 64512 ── eth1 ── 198.51.100.22, AS 65002
//! ```
//!
//! Both routers are small BGP speakers in this process, built on the `bgp` crate's
//! codec: the feeder writes UPDATEs of about 1,000 prefixes each as fast as the session
//! takes them, the edge router announces one prefix and answers KEEPALIVEs. The node's
//! default limit for a `peerIP` peering (100,000 prefixes) must close the feeder's
//! session with Cease / Maximum Number of Prefixes Reached (RFC 4486, subcode 1), while
//! `/healthz` answers 200 throughout, the agent's peak resident memory stays under the
//! chart's memory limit, and the edge session stays up with its routes both ways.

mod hostile_support;
mod node_support;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgp::status::{PeerStatus, RouteEntry};
use bgp::wire::attr::{AsPath, NextHop, PathAttrs};
use bgp::wire::{self, CodecParams, Message, Nlri, Notification};
use bgp::{Asn, Family};
use ipnet::{IpNet, Ipv4Net};

use hostile_support::in_netns;
use node_support::{apply, run, serval_bin, store_with_pool, Node};
use serval_integration::interop::raw;
use serval_integration::{scenario, tools, wait_for, Error, Netns, Result};

/// Prefixes the feeder offers.
const FLOOD: u32 = 1_000_000;
/// The node's default `maxPrefix.limit` for a peering with `peerIP`.
const DEFAULT_LIMIT: u32 = 100_000;

const NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const TOR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
const EDGE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 22);
/// What the edge router announces.
const EDGE_PREFIX: &str = "203.0.113.0/24";

fn err(what: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(what.to_string())
}

/// The `i`-th /24 of the flood: 32.0.0.0/4 onwards, outside the pool, the node's
/// subnets and everything else the test uses.
fn flood_prefix(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x2000_0000 + (i << 8)), 24).unwrap_or_default())
}

/// The chart's `agent.resources.limits.memory`, in KiB.
fn chart_memory_limit_kib() -> Result<u64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/serval/values.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("{path}: {e}")))?;
    let values: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| err(format!("{path}: {e}")))?;
    let limit = values["agent"]["resources"]["limits"]["memory"]
        .as_str()
        .ok_or_else(|| err(format!("{path}: no agent.resources.limits.memory")))?;
    let (number, unit) = limit.split_at(
        limit
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(limit.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| err(format!("{path}: memory limit {limit:?}")))?;
    match unit {
        "Ki" => Ok(n),
        "Mi" => Ok(n * 1024),
        "Gi" => Ok(n * 1024 * 1024),
        _ => Err(err(format!(
            "{path}: memory limit {limit:?}: unit {unit:?}"
        ))),
    }
}

/// What one router has seen from the node.
#[derive(Debug, Default)]
struct Seen {
    notification: Option<Notification>,
    /// Prefixes the node announces to it now.
    announced: BTreeSet<IpNet>,
    keepalives: usize,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

/// One router's session with the node: established here, then read by a thread of
/// its own that records what the node sends.
struct Router {
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
}

/// The codec parameters of the sessions: `raw::open` offers 4-octet AS numbers and
/// IPv4 unicast, and nothing the node would negotiate beyond that.
fn params() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ebgp: true,
        ..CodecParams::default()
    }
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 19];
    stream.read_exact(&mut frame)?;
    let len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if len < 19 {
        return Err(std::io::Error::other(format!("message length {len}")));
    }
    frame.resize(len, 0);
    stream.read_exact(&mut frame[19..])?;
    Ok(frame)
}

fn decode(frame: &[u8]) -> Result<Option<Message>> {
    wire::decode_message(frame, &params())
        .map(|d| d.message)
        .map_err(|e| err(format!("decoding what the node sent: {e}")))
}

impl Router {
    /// Connects from `ns` to the node and brings the session up as AS `asn`;
    /// `answer_keepalives`: the reader answers each KEEPALIVE (a router that is
    /// otherwise quiet), else the caller keeps the session busy.
    fn establish(ns: &Netns, asn: u32, id: Ipv4Addr, answer_keepalives: bool) -> Result<Router> {
        let node = SocketAddr::new(IpAddr::V4(NODE_V4), 179);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The node may not listen yet, or still be in its connect-retry wait.
        let mut stream = loop {
            match in_netns(ns, move || {
                TcpStream::connect_timeout(&node, Duration::from_secs(2))
            }) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(err(format!("AS {asn}: connecting to {node}: {e}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        stream.set_nodelay(true).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        stream
            .write_all(&raw::open(asn, id, 90))
            .map_err(|e| err(format!("AS {asn}: OPEN: {e}")))?;
        let mut got_open = false;
        loop {
            let frame =
                read_frame(&mut stream).map_err(|e| err(format!("AS {asn}: no OPEN: {e}")))?;
            match decode(&frame)? {
                Some(Message::Open(_)) => {
                    got_open = true;
                    stream
                        .write_all(&raw::message(raw::KEEPALIVE, &[]))
                        .map_err(err)?;
                }
                Some(Message::Keepalive) if got_open => break,
                Some(Message::Notification(n)) => {
                    return Err(err(format!("AS {asn}: the node refused the session: {n}")))
                }
                _ => {}
            }
        }
        stream.set_read_timeout(None).map_err(err)?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut rd = stream.try_clone().map_err(err)?;
        let s = seen.clone();
        let reader = std::thread::spawn(move || loop {
            let frame = match read_frame(&mut rd) {
                Ok(f) => f,
                Err(e) => {
                    lock(&s).closed = Some(e.to_string());
                    return;
                }
            };
            match decode(&frame) {
                Ok(Some(Message::Notification(n))) => lock(&s).notification = Some(n),
                Ok(Some(Message::Keepalive)) => {
                    lock(&s).keepalives += 1;
                    if answer_keepalives {
                        let _ = rd.write_all(&raw::message(raw::KEEPALIVE, &[]));
                    }
                }
                Ok(Some(Message::Update(u))) => {
                    let mut g = lock(&s);
                    for n in &u.withdrawn {
                        g.announced.remove(&n.prefix);
                    }
                    for n in &u.nlri {
                        g.announced.insert(n.prefix);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    lock(&s).closed = Some(e.to_string());
                    return;
                }
            }
        });
        Ok(Router {
            stream,
            seen,
            reader: Some(reader),
        })
    }

    /// Announces `prefixes` with this router as next hop, packed into UPDATEs of as
    /// many prefixes as fit (about 1,000 /24s), `per_write` prefixes per write; returns
    /// how many were written before the node closed the connection.
    fn announce(
        &mut self,
        asn: u32,
        next_hop: Ipv4Addr,
        prefixes: impl Iterator<Item = IpNet>,
        per_write: usize,
    ) -> Result<u32> {
        let attrs = PathAttrs {
            as_path: AsPath::from_sequence([Asn(asn)]),
            next_hop: Some(NextHop::V4(next_hop)),
            ..PathAttrs::default()
        };
        let mut prefixes = prefixes.peekable();
        let mut written = 0u32;
        while prefixes.peek().is_some() {
            let nlri: Vec<Nlri> = prefixes.by_ref().take(per_write).map(Nlri::new).collect();
            let mut out = Default::default();
            wire::pack_announce(Family::Ipv4Unicast, &attrs, &nlri, &params(), &mut out)
                .map_err(|e| err(format!("encoding UPDATEs: {e}")))?;
            if self.stream.write_all(&out).is_err() {
                break;
            }
            written += nlri.len() as u32;
        }
        Ok(written)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        lock(&self.seen)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn lock(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The embedded speaker's peers, as `serval bgp status --json` shows them.
fn bgp_status(n: &Node) -> Result<Vec<PeerStatus>> {
    let sock = n.dir.join("bgp.sock").display().to_string();
    let text = run(std::process::Command::new(serval_bin())
        .args(["bgp", "status", "--json", "--socket", &sock]))?;
    serde_json::from_str(&text).map_err(|e| err(format!("bgp status JSON: {e}")))
}

fn peer_at(peers: &[PeerStatus], ip: Ipv4Addr) -> Option<&PeerStatus> {
    peers.iter().find(|p| p.address == IpAddr::V4(ip))
}

/// The speaker's Loc-RIB entry for `prefix`.
fn bgp_route(n: &Node, prefix: &str) -> Result<Vec<RouteEntry>> {
    let sock = n.dir.join("bgp.sock").display().to_string();
    let text = run(std::process::Command::new(serval_bin())
        .args(["bgp", "routes", "--json", prefix, "--socket", &sock]))?;
    serde_json::from_str(&text).map_err(|e| err(format!("bgp routes JSON: {e}")))
}

/// How many of serval's kernel routes lie in the flood's range (32.0.0.0/4).
fn flood_routes_in_kernel(n: &Node) -> Result<usize> {
    let text =
        n.ns.ip(&["-4", "route", "show", "root", "32.0.0.0/4", "proto", "83"])?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// Polls `/healthz` until stopped; what it saw.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, Vec<String>, Duration)>>,
}

impl HealthProbe {
    fn start(ns: &Netns) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let name = ns.name().to_owned();
        let thread = std::thread::spawn(move || {
            let (mut answers, mut bad, mut slowest) = (0usize, Vec::new(), Duration::ZERO);
            while !s.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &name,
                        "curl",
                        "-s",
                        "-m",
                        "2",
                        "-o",
                        "/dev/null",
                    ])
                    .args(["-w", "%{http_code}", "http://127.0.0.1:9099/healthz"])
                    .output();
                slowest = slowest.max(t0.elapsed());
                match out {
                    Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "200" => answers += 1,
                    Ok(o) => bad.push(format!(
                        "after {:?}: {} {}",
                        t0.elapsed(),
                        String::from_utf8_lossy(&o.stdout).trim(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => bad.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (answers, bad, slowest)
        });
        HealthProbe {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or((
            0,
            vec!["the probe thread panicked".into()],
            Duration::ZERO,
        ))
    }
}

#[test]
fn a_peer_flooding_a_full_table_is_stopped_at_the_default_limit() {
    scenario("hostile-flood", |test| {
        tools::require_all(&["ip", "curl"])?;
        tools::require_root()?;
        let t_start = Instant::now();
        let limit_kib = chart_memory_limit_kib()?;
        let store = store_with_pool(test, &[])?;

        let mut n1 = Node::new("n1", test)?;
        let tor = Netns::new()?;
        let edge = Netns::new()?;
        n1.ns.veth("eth0", &tor, "eth0")?;
        n1.ns.veth("eth1", &edge, "eth0")?;
        for (ns, dev, addr) in [
            (&n1.ns, "eth0", "192.0.2.11/24"),
            (&n1.ns, "eth1", "198.51.100.11/24"),
            (&tor, "eth0", "192.0.2.21/24"),
            (&edge, "eth0", "198.51.100.22/24"),
        ] {
            ns.add_addr(dev, addr.parse().map_err(err)?)?;
        }
        // The edge router reaches the node's address (192.0.2.11) through it.
        edge.add_default_route(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)))?;
        apply(
            &store,
            test,
            "peers.yaml",
            "apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {name: tor}\n\
             spec: {peerIP: 192.0.2.21, asNumber: 65001}\n---\n\
             apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {name: edge}\n\
             spec: {peerIP: 198.51.100.22, asNumber: 65002}\n",
        )?;
        n1.extra = vec!["--ip".into(), "192.0.2.11/24".into()];
        n1.start(&store)?;
        let pid = n1
            .agent
            .as_ref()
            .map(|a| a.pid())
            .ok_or_else(|| err("no agent"))?;
        wait_for(
            Duration::from_secs(30),
            "/healthz to answer 200",
            || node_support::http(&n1.ns, "/healthz"),
            |(c, _)| *c == 200,
        )?;
        // A pod's block, which the node announces to its peers.
        let pod = n1.add_pod(&store)?;
        let block: IpNet = node_support::block_of(pod).parse().map_err(err)?;

        let mut edge_router = Router::establish(&edge, 65002, EDGE, true)?;
        let sent = edge_router.announce(
            65002,
            EDGE,
            [EDGE_PREFIX.parse().map_err(err)?].into_iter(),
            1,
        )?;
        assert_eq!(sent, 1);
        wait_for(
            Duration::from_secs(30),
            "the edge router's route in the node's RIB and the pod's block at the edge router",
            || {
                Ok((
                    bgp_route(&n1, EDGE_PREFIX)?,
                    edge_router.seen().announced.clone(),
                ))
            },
            |(rib, announced)| !rib.is_empty() && announced.contains(&block),
        )?;
        let edge_before = bgp_status(&n1)?;
        let edge_before = peer_at(&edge_before, EDGE)
            .cloned()
            .ok_or_else(|| err("no edge peer"))?;
        assert_eq!(edge_before.state, bgp::status::SessionState::Established);

        // The flood.
        let health = HealthProbe::start(&n1.ns);
        let t0 = Instant::now();
        let mut feeder = Router::establish(&tor, 65001, TOR, false)?;
        let written = feeder.announce(65001, TOR, (0..FLOOD).map(flood_prefix), 16_000)?;
        let flood_time = t0.elapsed();
        // (Socket buffers may take the whole flood before the node has read much of it.)
        eprintln!("the feeder wrote {written} prefixes in {flood_time:?}");
        let notification = wait_for(
            Duration::from_secs(60),
            "the node's NOTIFICATION to the feeder",
            || Ok(feeder.seen().notification.clone()),
            |n| n.is_some(),
        )
        .map_err(|e| {
            // What the flood did instead, for the failure's message.
            let memory = node_support::agent_lab::memory_kib(pid)
                .map(|(rss, hwm)| format!("VmRSS {} MiB, VmHWM {} MiB", rss / 1024, hwm / 1024))
                .unwrap_or_else(|e| e.to_string());
            let tor = bgp_status(&n1)
                .ok()
                .and_then(|p| peer_at(&p, TOR).map(|p| format!("{} {:?}", p.state, p.families)));
            let kernel = n1.routes().map(|r| r.len());
            err(format!(
                "{e}\nthe feeder wrote {written} of {FLOOD} prefixes; the feeder's session: \
                 {tor:?}; the agent: {memory}, {kernel:?} kernel routes"
            ))
        })?
        .ok_or_else(|| err("no NOTIFICATION"))?;
        eprintln!("NOTIFICATION after {:?}: {notification}", t0.elapsed());
        assert_eq!(
            (notification.code, notification.subcode),
            (6, 1),
            "Cease / Maximum Number of Prefixes Reached: {notification}"
        );
        let (afi_safi, limit) = notification
            .max_prefixes_data()
            .ok_or_else(|| err(format!("no RFC 4486 data in {notification}")))?;
        assert_eq!(
            (afi_safi.afi.0, afi_safi.safi.0, limit),
            (1, 1, DEFAULT_LIMIT),
            "IPv4 unicast, the default limit"
        );
        wait_for(
            Duration::from_secs(10),
            "the feeder's connection closed",
            || Ok(feeder.seen().closed.clone()),
            |c| c.is_some(),
        )?;

        // The feeder's routes leave the node: its RIB, then serval's kernel routes.
        let down = wait_for(
            Duration::from_secs(60),
            "the feeder's session down and its routes out of the RIB",
            || Ok(peer_at(&bgp_status(&n1)?, TOR).cloned()),
            |p| {
                p.as_ref().is_some_and(|p| {
                    !p.state.is_established() && p.families.iter().all(|f| f.received == 0)
                })
            },
        )?;
        let shown = down.and_then(|p| p.last_error).unwrap_or_default();
        assert!(
            shown.contains("maximum prefixes"),
            "bgp status names the limit: {shown:?}"
        );
        let rib_clear = t0.elapsed();
        wait_for(
            Duration::from_secs(120),
            "the feeder's routes out of the kernel",
            || flood_routes_in_kernel(&n1),
            |n| *n == 0,
        )?;
        eprintln!(
            "the feeder's routes left the RIB {rib_clear:?} and the kernel {:?} after the \
             flood began",
            t0.elapsed()
        );
        let (answers, bad, slowest) = health.finish();

        // The node stayed healthy and within its memory limit.
        assert!(answers > 0, "no /healthz answer during the flood");
        assert!(
            bad.is_empty(),
            "/healthz failed during the flood ({answers} answered 200): {bad:#?}"
        );
        let (rss, hwm) = node_support::agent_lab::memory_kib(pid).map_err(err)?;
        eprintln!(
            "agent (debug build): VmHWM {} MiB, VmRSS {} MiB now, chart limit {} MiB; \
             {answers} /healthz answers, slowest {slowest:?}",
            hwm / 1024,
            rss / 1024,
            limit_kib / 1024
        );
        assert!(
            hwm < limit_kib,
            "the agent's peak RSS {hwm} KiB reached the chart's limit {limit_kib} KiB"
        );

        // The edge session kept its state and its routes both ways.
        let peers = bgp_status(&n1)?;
        let edge_after = peer_at(&peers, EDGE).ok_or_else(|| err("no edge peer"))?;
        assert_eq!(
            edge_after.state,
            bgp::status::SessionState::Established,
            "{edge_after:?}"
        );
        assert_eq!(
            (edge_after.established_count, edge_after.flaps),
            (edge_before.established_count, edge_before.flaps),
            "the edge session went down and up again"
        );
        assert!(
            !bgp_route(&n1, EDGE_PREFIX)?.is_empty(),
            "the edge router's route went"
        );
        {
            let seen = edge_router.seen();
            assert!(seen.notification.is_none(), "{:?}", seen.notification);
            assert!(seen.closed.is_none(), "{:?}", seen.closed);
            assert!(
                seen.announced.contains(&block),
                "the pod's block went: {:?}",
                seen.announced.len()
            );
        }
        drop(feeder);
        drop(edge_router);
        eprintln!("hostile-flood took {:?}", t_start.elapsed());
        Ok(())
    });
}
