//! RIB load benchmark.
//!
//! 1. One eBGP feeder sends 1,000,000 IPv4 prefixes in 50,000 UPDATEs (20 prefixes per
//!    attribute set; AS paths of 3–6 ASes, MEDs, a few communities); then a second peer
//!    comes up and the whole table is drained to it.
//! 2. Route server: 10 feeders × 100,000 prefixes re-advertised to one monitor peer, with
//!    the feeders sending the same prefixes (10 paths per destination) and with disjoint
//!    prefixes.
//!
//! Prints wall time of each phase, bytes allocated per prefix (a counting global
//! allocator) and the peak RSS. Run in release:
//! `cargo run -p bgp --release --example rib_load`.

use bgp::rib::{NextHopMode, OutBody, PeerId, PeerInfo, Rib, RibConfig, SessionInfo};
use bgp::types::{Asn, Family, RouterId};
use bgp::wire::attr::{AsPath, Community, NextHop, Origin, PathAttrs};
use bgp::wire::update::Nlri;
use ipnet::{IpNet, Ipv4Net};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CURRENT.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CURRENT.fetch_add(new_size, Ordering::Relaxed);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocated() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// CPU time of this thread (ns), from the scheduler's accounting: a fair measure on a
/// machine other work is also running on, where wall time is not.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Wall and CPU time of a phase.
struct Timer(Instant, u64);
impl Timer {
    fn start() -> Self {
        Timer(Instant::now(), cpu_ns())
    }
    fn show(&self) -> String {
        let wall = self.0.elapsed().as_secs_f64() * 1e3;
        let cpu = (cpu_ns() - self.1) as f64 / 1e6;
        format!("{cpu:>8.1} ms cpu {wall:>8.1} ms wall")
    }
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// xorshift64*: reproducible input without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const US: Asn = Asn(64512);

fn attribute_sets(n: usize, first_as: u32, next_hop: Ipv4Addr, rng: &mut Rng) -> Vec<PathAttrs> {
    (0..n)
        .map(|i| {
            let len = 3 + rng.below(4) as usize;
            let mut path = vec![Asn(first_as)];
            path.extend((1..len).map(|_| Asn(1000 + rng.below(60_000) as u32)));
            let communities = (0..rng.below(4))
                .map(|_| Community::new(first_as as u16, rng.below(1000) as u16))
                .collect();
            PathAttrs {
                origin: if i % 7 == 0 {
                    Origin::Incomplete
                } else {
                    Origin::Igp
                },
                as_path: AsPath::from_sequence(path),
                next_hop: Some(NextHop::V4(next_hop)),
                med: (rng.below(3) > 0).then(|| rng.below(500) as u32),
                communities,
                ..PathAttrs::default()
            }
        })
        .collect()
}

fn prefix(i: u32) -> IpNet {
    // Distinct /24s from 1.0.0.0 on.
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from((1u32 << 24) + (i << 8)), 24).expect("valid length"))
}

fn session(last: u8) -> SessionInfo {
    SessionInfo::ipv4(
        RouterId(Ipv4Addr::new(10, 9, 9, last)),
        Ipv4Addr::new(192, 0, 2, 254),
    )
}

/// `mode` `KeepOriginal` stands for a route-server client (RFC 7947).
fn add_peer(rib: &mut Rib, last: u8, asn: u32, mode: NextHopMode) -> PeerId {
    let mut info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), Asn(asn), US);
    info.next_hop = mode;
    info.route_server_client = mode == NextHopMode::KeepOriginal;
    rib.add_peer(info).expect("peer table has room")
}

/// Drains everything queued for `peer`; returns (prefixes announced, UPDATE groups).
fn drain_all(rib: &mut Rib, peer: PeerId) -> (usize, usize) {
    let (mut prefixes, mut groups) = (0, 0);
    loop {
        let batch = rib.drain_export(peer, Family::Ipv4Unicast, 65_536);
        if batch.is_empty() {
            return (prefixes, groups);
        }
        for u in batch {
            if let OutBody::Announce { nlri, .. } = u.body {
                prefixes += nlri.len();
                groups += 1;
            }
        }
    }
}

/// `shuffled`: the prefixes of one UPDATE are scattered over the address space instead
/// of adjacent (no locality at all, the worst case for the index).
fn single_feeder(shuffled: bool) {
    const SETS: usize = 50_000;
    const PER_SET: usize = 20;
    let total = SETS * PER_SET;
    let mut rng = Rng(0x5eed);
    let sets = attribute_sets(SETS, 65001, Ipv4Addr::new(192, 0, 2, 1), &mut rng);
    let mut order: Vec<u32> = (0..total as u32).collect();
    if shuffled {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let updates: Vec<(PathAttrs, Vec<Nlri>)> = sets
        .into_iter()
        .enumerate()
        .map(|(s, a)| {
            (
                a,
                (0..PER_SET)
                    .map(|j| Nlri::new(prefix(order[s * PER_SET + j])))
                    .collect(),
            )
        })
        .collect();

    let before = allocated();
    let mut rib = Rib::new(RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1))));
    let feeder = add_peer(&mut rib, 1, 65001, NextHopMode::Auto);
    rib.peer_up(feeder, session(1)).expect("peer exists");
    let t = Timer::start();
    for (attrs, nlri) in &updates {
        rib.announce(feeder, Family::Ipv4Unicast, attrs.clone(), nlri)
            .expect("peer is up");
    }
    let import = t.show();
    if shuffled || std::env::args().nth(1).as_deref() == Some("import") {
        let order = if shuffled { "scattered" } else { "adjacent" };
        println!("import of {total} prefixes, {order} within each UPDATE: {import}");
        return;
    }
    let t = Timer::start();
    let mut changes = 0;
    loop {
        let batch = rib.drain_best_changes_upto(65_536);
        if batch.is_empty() {
            break;
        }
        changes += batch.len();
    }
    let best = t.show();
    assert_eq!(changes, total);
    let after = allocated() - before;
    let (tables, attrs) = rib.heap_bytes();
    println!("single feeder: {total} prefixes in {SETS} UPDATEs");
    println!("  import                 {}", import);
    println!("  best-change drain      {}", best);
    println!("  attribute sets held    {:>8}", rib.attribute_sets());
    println!(
        "  allocated              {:>8.1} MiB, {:.1} bytes/prefix",
        after as f64 / 1048576.0,
        after as f64 / total as f64
    );
    println!(
        "  beyond shared attrs    {:>8.1} bytes/prefix (attribute sets ≈ {:.1} MiB; tables by count {:.1} bytes/prefix)",
        (after.saturating_sub(attrs)) as f64 / total as f64,
        attrs as f64 / 1048576.0,
        tables as f64 / total as f64
    );

    let out = add_peer(&mut rib, 2, 65002, NextHopMode::Auto);
    let before_out = allocated();
    rib.peer_up(out, session(2)).expect("peer exists");
    let t = Timer::start();
    let (prefixes, groups) = drain_all(&mut rib, out);
    let export = t.show();
    assert_eq!(prefixes, total);
    println!(
        "  export drain to eBGP   {} ({prefixes} prefixes in {groups} attribute groups)",
        export
    );
    println!(
        "  Adj-RIB-Out of it      {:>8.1} bytes/prefix",
        (allocated() - before_out) as f64 / total as f64
    );

    let t = Timer::start();
    for (_, nlri) in &updates {
        rib.withdraw(feeder, Family::Ipv4Unicast, nlri)
            .expect("peer is up");
    }
    let withdraw = t.show();
    let (w, _) = drain_all(&mut rib, out);
    rib.drain_best_changes();
    println!(
        "  withdraw all           {} (then {} prefixes left, {w} announcements)",
        withdraw,
        rib.len(Family::Ipv4Unicast)
    );
}

fn route_server(overlapping: bool) {
    const FEEDERS: u32 = 10;
    const PER_FEEDER: usize = 100_000;
    const PER_SET: usize = 20;
    let mut rng = Rng(0xfeed + u64::from(overlapping));
    let mut rib = Rib::new(RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1))));
    let monitor = add_peer(&mut rib, 200, 65200, NextHopMode::KeepOriginal);
    rib.peer_up(monitor, session(200)).expect("peer exists");
    drain_all(&mut rib, monitor);
    let mut feeds = Vec::new();
    for f in 0..FEEDERS {
        let id = add_peer(&mut rib, f as u8 + 1, 65001 + f, NextHopMode::KeepOriginal);
        rib.peer_up(id, session(f as u8 + 1)).expect("peer exists");
        let sets = attribute_sets(
            PER_FEEDER / PER_SET,
            65001 + f,
            Ipv4Addr::new(192, 0, 2, f as u8 + 1),
            &mut rng,
        );
        let base = if overlapping {
            0
        } else {
            f as usize * PER_FEEDER
        };
        let ups: Vec<(PathAttrs, Vec<Nlri>)> = sets
            .into_iter()
            .enumerate()
            .map(|(s, a)| {
                (
                    a,
                    (0..PER_SET)
                        .map(|j| Nlri::new(prefix((base + s * PER_SET + j) as u32)))
                        .collect(),
                )
            })
            .collect();
        feeds.push((id, ups));
    }
    let t = Timer::start();
    // Interleave the feeders as their sessions would.
    for round in 0..PER_FEEDER / PER_SET {
        for (id, ups) in &feeds {
            let (a, n) = &ups[round];
            rib.announce(*id, Family::Ipv4Unicast, a.clone(), n)
                .expect("peer is up");
        }
    }
    let import = t.show();
    let t = Timer::start();
    let (prefixes, groups) = drain_all(&mut rib, monitor);
    let export = t.show();
    println!(
        "route server, 10 feeders × 100000 prefixes ({}): {} destinations",
        if overlapping {
            "same prefixes"
        } else {
            "disjoint prefixes"
        },
        rib.len(Family::Ipv4Unicast)
    );
    println!("  import                 {}", import);
    println!(
        "  drain to monitor       {} ({prefixes} prefixes in {groups} groups)",
        export
    );
}

/// A yardstick for the machine's state: 1M inserts of prefix → u32 into a plain hash
/// map, the least any table keyed by prefix has to do.
fn baseline() {
    let t = Timer::start();
    let mut m: std::collections::HashMap<(u32, u8), u32, rustc_hash::FxBuildHasher> =
        Default::default();
    for i in 0..1_000_000u32 {
        m.insert(((1u32 << 24) + (i << 8), 24), i);
    }
    println!(
        "baseline: 1000000 inserts into a HashMap<(u32, u8), u32>: {}",
        t.show()
    );
    std::hint::black_box(&m);
}

fn main() {
    baseline();
    let only = std::env::args().nth(1).unwrap_or_default();
    if only.is_empty() || only == "single" || only == "import" {
        single_feeder(false);
    }
    if only.is_empty() || only == "import" {
        single_feeder(true);
    }
    if only.is_empty() || only == "rs" {
        route_server(true);
        route_server(false);
    }
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS of this process: {:.1} MiB", kib as f64 / 1024.0);
    }
}
