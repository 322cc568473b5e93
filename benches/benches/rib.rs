//! The RIB's cost per prefix, reported in prefixes/s (criterion's "elem/s"): importing a
//! table from one eBGP feeder (the feed `bgp-race` sends, 20 prefixes per attribute set)
//! and draining it to a second peer as UPDATE contents.
//!
//! `cargo bench -p serval-benches --bench rib`

use bgp::rib::{OutBody, PeerId, PeerInfo, Rib, RibConfig, SessionInfo};
use bgp::types::{Asn, Family, RouterId};
use bgp::wire::update::Nlri;
use bgp::wire::PathAttrs;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipnet::IpNet;
use serval_benches::feed::{self, FeedSpec, Rng};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const US: Asn = Asn(64512);
const PREFIXES: u32 = 100_000;

fn updates() -> Vec<(PathAttrs, Vec<Nlri>)> {
    let mut spec = FeedSpec::new(
        PREFIXES,
        Ipv4Addr::new(16, 0, 0, 0),
        Asn(65001),
        Ipv4Addr::new(192, 0, 2, 2),
    );
    spec.avoid = vec![US];
    let mut rng = Rng::new(spec.seed);
    (0..spec.updates())
        .map(|u| {
            let nlri = (u * spec.per_update..(u + 1) * spec.per_update)
                .filter_map(|i| feed::prefix(spec.base, i))
                .map(|p| Nlri::new(IpNet::V4(p)))
                .collect();
            (feed::attributes(&spec, &mut rng), nlri)
        })
        .collect()
}

fn peer(rib: &mut Rib, last: u8, asn: u32) -> PeerId {
    let info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), Asn(asn), US);
    let id = rib.add_peer(info).expect("room for a peer");
    let session = SessionInfo::ipv4(
        RouterId(Ipv4Addr::new(192, 0, 2, last)),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    rib.peer_up(id, session).expect("peer exists");
    id
}

fn fresh() -> (Rib, PeerId) {
    let mut rib = Rib::new(RibConfig::new(US, RouterId(Ipv4Addr::new(192, 0, 2, 1))));
    let feeder = peer(&mut rib, 2, 65001);
    (rib, feeder)
}

fn import(c: &mut Criterion) {
    let ups = updates();
    let mut g = c.benchmark_group("rib_import_100k");
    g.throughput(Throughput::Elements(u64::from(PREFIXES)));
    g.sample_size(20);
    g.bench_function("prefixes", |b| {
        b.iter_batched(
            fresh,
            |(mut rib, feeder)| {
                for (a, n) in &ups {
                    rib.announce(feeder, Family::Ipv4Unicast, a.clone(), n)
                        .expect("peer is up");
                }
                rib
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn export(c: &mut Criterion) {
    let ups = updates();
    let mut g = c.benchmark_group("rib_export_100k");
    g.throughput(Throughput::Elements(u64::from(PREFIXES)));
    g.sample_size(20);
    g.bench_function("prefixes", |b| {
        b.iter_batched(
            || {
                let (mut rib, feeder) = fresh();
                for (a, n) in &ups {
                    rib.announce(feeder, Family::Ipv4Unicast, a.clone(), n)
                        .expect("peer is up");
                }
                let out = peer(&mut rib, 3, 65100);
                (rib, out)
            },
            |(mut rib, out)| {
                let mut sent = 0;
                loop {
                    let batch = rib.drain_export(out, Family::Ipv4Unicast, 8192);
                    if batch.is_empty() {
                        break;
                    }
                    for u in batch {
                        if let OutBody::Announce { nlri, .. } = u.body {
                            sent += nlri.len();
                        }
                    }
                }
                assert_eq!(sent, PREFIXES as usize);
                black_box(rib)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, import, export);
criterion_main!(benches);
