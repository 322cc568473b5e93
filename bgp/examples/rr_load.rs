//! Route reflector load: the RIB and the codec alone, no sockets.
//!
//! `CLIENTS` iBGP route-reflector clients (default 1,000), each announcing its own /26
//! with next hop itself, the way cluster nodes do. After every announcement each client's
//! pending Adj-RIB-Out is drained and encoded, as the speaker's pump does after each
//! event. Phases:
//!
//! 1. *cold*: every client up first, then each announces: 1,000 × 999 routes out;
//! 2. *staggered*: clients come up one by one, each announcing at once;
//! 3. *churn*: 100 clients go down and come back;
//! 4. *withdraw*: one client withdraws its block.
//!
//! Prints CPU and wall time, UPDATE bytes encoded and the peak RSS of each phase. Run in
//! release: `cargo run -p bgp --release --example rr_load [CLIENTS]`.

use bgp::rib::{OutBody, PeerId, PeerInfo, Rib, RibConfig, SessionInfo};
use bgp::types::{Asn, Family, RouterId};
use bgp::wire::attr::{NextHop, Origin, PathAttrs};
use bgp::wire::update::Nlri;
use bgp::wire::CodecParams;
use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const US: Asn = Asn(64512);

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            l.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32)
}

fn block(i: usize) -> Nlri {
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (i as u32) * 64;
    Nlri::new(IpNet::V4(
        Ipv4Net::new(Ipv4Addr::from(base), 26).expect("valid length"),
    ))
}

fn attrs(i: usize) -> PathAttrs {
    PathAttrs {
        origin: Origin::Igp,
        next_hop: Some(NextHop::V4(addr(i))),
        local_pref: Some(100),
        ..PathAttrs::default()
    }
}

struct Load {
    rib: Rib,
    peers: Vec<PeerId>,
    codec: CodecParams,
    buf: BytesMut,
    bytes: usize,
    updates: usize,
}

impl Load {
    fn new(clients: usize) -> Self {
        let mut cfg = RibConfig::new(US, RouterId(Ipv4Addr::new(198, 18, 255, 254)));
        cfg.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        let mut rib = Rib::new(cfg);
        let peers = (0..clients)
            .map(|i| {
                let mut info = PeerInfo::new(IpAddr::V4(addr(i)), US, US);
                info.rr_client = true;
                rib.add_peer(info).expect("peer table has room")
            })
            .collect();
        let codec = CodecParams {
            four_octet_asn: true,
            ..CodecParams::default()
        };
        Load {
            rib,
            peers,
            codec,
            buf: BytesMut::with_capacity(1 << 20),
            bytes: 0,
            updates: 0,
        }
    }

    fn up(&mut self, i: usize) {
        let s = SessionInfo::ipv4(RouterId(addr(i)), Ipv4Addr::new(198, 18, 255, 254));
        self.rib.peer_up(self.peers[i], s).expect("peer exists");
    }

    fn announce(&mut self, i: usize) {
        self.rib
            .announce(self.peers[i], Family::Ipv4Unicast, attrs(i), &[block(i)])
            .expect("peer is up");
    }

    /// What the speaker's pump does after an event: drain and encode every peer's
    /// pending output.
    fn pump(&mut self) {
        for &p in &self.peers {
            while self.rib.export_pending(p, Family::Ipv4Unicast) {
                for u in self.rib.drain_export(p, Family::Ipv4Unicast, 256) {
                    let r = match &u.body {
                        OutBody::Announce { attrs, nlri } => bgp::wire::pack_announce(
                            u.family,
                            attrs,
                            nlri,
                            &self.codec,
                            &mut self.buf,
                        ),
                        OutBody::Withdraw { nlri } => {
                            bgp::wire::pack_withdraw(u.family, nlri, &self.codec, &mut self.buf)
                        }
                        _ => Ok(0),
                    };
                    self.updates += r.expect("encodes");
                }
                self.bytes += self.buf.len();
                self.buf.clear();
            }
        }
    }
}

fn phase(name: &str, load: &mut Load, f: impl FnOnce(&mut Load)) {
    let (w, c, b, u) = (Instant::now(), cpu_ns(), load.bytes, load.updates);
    f(load);
    println!(
        "{name:<10} {:>9.1} ms cpu {:>9.1} ms wall {:>10} UPDATE octets {:>9} UPDATEs  peak RSS {} KiB",
        (cpu_ns() - c) as f64 / 1e6,
        w.elapsed().as_secs_f64() * 1e3,
        load.bytes - b,
        load.updates - u,
        peak_rss_kib()
    );
}

fn main() {
    let clients: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    println!("{clients} route-reflector clients, one /26 each");

    let mut load = Load::new(clients);
    phase("cold", &mut load, |l| {
        for i in 0..clients {
            l.up(i);
        }
        l.pump();
        for i in 0..clients {
            l.announce(i);
            l.pump();
        }
    });

    let mut load = Load::new(clients);
    phase("staggered", &mut load, |l| {
        for i in 0..clients {
            l.up(i);
            l.announce(i);
            l.pump();
        }
    });

    let churn = clients / 10;
    phase("churn", &mut load, |l| {
        for i in 0..churn {
            l.rib
                .peer_down(l.peers[i], false, &[])
                .expect("peer exists");
            l.pump();
        }
        for i in 0..churn {
            l.up(i);
            l.announce(i);
            l.pump();
        }
    });

    phase("withdraw", &mut load, |l| {
        let last = clients - 1;
        l.rib
            .withdraw(l.peers[last], Family::Ipv4Unicast, &[block(last)])
            .expect("peer is up");
        l.pump();
    });
}
