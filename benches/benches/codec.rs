//! The BGP codec's cost per prefix: decoding and encoding a typical UPDATE, and packing
//! a large export. Throughput is in prefixes/s (criterion's "elem/s": one element is
//! one prefix).
//!
//! `cargo bench -p serval-benches --bench codec`

use bgp::types::Asn;
use bgp::wire::attr::{AsPath, Community, NextHop, PathAttrs};
use bgp::wire::{
    decode_message, encode_message, pack_announce, CodecParams, Message, Nlri, Update,
};
use bgp::Family;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net};
use std::hint::black_box;
use std::net::Ipv4Addr;

fn prefixes(n: u32) -> Vec<Nlri> {
    (0..n)
        .map(|i| {
            Nlri::new(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("prefix"),
            ))
        })
        .collect()
}

/// ORIGIN, a 4-AS path, NEXT_HOP, MED and two communities: what a route server or
/// top-of-rack router typically sends.
fn typical_attrs() -> PathAttrs {
    PathAttrs {
        as_path: AsPath::from_sequence([Asn(65001), Asn(65002), Asn(4_200_000_001), Asn(65010)]),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
        med: Some(100),
        communities: [Community::new(65001, 100), Community::new(65001, 200)]
            .into_iter()
            .collect(),
        ..PathAttrs::default()
    }
}

fn params() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ebgp: true,
        ..CodecParams::default()
    }
}

fn update_codec(c: &mut Criterion) {
    let p = params();
    for n in [20u32, 900] {
        let update = Message::Update(Update {
            attrs: Some(typical_attrs()),
            nlri: prefixes(n),
            ..Update::default()
        });
        let mut wire = BytesMut::new();
        encode_message(&update, &p, &mut wire).expect("encode");
        let wire = wire.freeze();

        let mut g = c.benchmark_group(format!("update_{n}_prefixes"));
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function("decode_prefixes", |b| {
            b.iter(|| decode_message(black_box(&wire), &p).expect("decode"))
        });
        let mut out = BytesMut::with_capacity(4096);
        g.bench_function("encode_prefixes", |b| {
            b.iter(|| {
                out.clear();
                encode_message(black_box(&update), &p, &mut out).expect("encode");
            })
        });
        g.finish();
    }
}

fn pack(c: &mut Criterion) {
    let p = params();
    let attrs = typical_attrs();
    let nlri = prefixes(100_000);
    let mut g = c.benchmark_group("pack_announce_100k");
    g.throughput(Throughput::Elements(nlri.len() as u64));
    g.sample_size(20);
    g.bench_function("ipv4_prefixes", |b| {
        b.iter_batched_ref(
            || BytesMut::with_capacity(nlri.len() * 5),
            |out| {
                pack_announce(Family::Ipv4Unicast, &attrs, black_box(&nlri), &p, out).expect("pack")
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, update_codec, pack);
criterion_main!(benches);
