//! Decode the benchmark's 20-prefix UPDATE N times, for counting instructions with
//! `valgrind --tool=callgrind` and CPU time with `perf stat -e task-clock`, which stay
//! meaningful on a loaded machine where criterion's wall-clock figures do not.
//!
//! `cargo run --release -p serval-benches --example decode_loop -- 1000000`

use bgp::types::Asn;
use bgp::wire::attr::{AsPath, Community, NextHop, PathAttrs};
use bgp::wire::{decode_message, encode_message, CodecParams, Message, Nlri, Update};
use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net};
use std::hint::black_box;
use std::net::Ipv4Addr;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let p = CodecParams {
        four_octet_asn: true,
        ebgp: true,
        ..CodecParams::default()
    };
    let nlri: Vec<Nlri> = (0..20u32)
        .map(|i| {
            Nlri::new(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("prefix"),
            ))
        })
        .collect();
    let attrs = PathAttrs {
        as_path: AsPath::from_sequence([Asn(65001), Asn(65002), Asn(4_200_000_001), Asn(65010)]),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
        med: Some(100),
        communities: [Community::new(65001, 100), Community::new(65001, 200)]
            .into_iter()
            .collect(),
        ..PathAttrs::default()
    };
    let msg = Message::Update(Update {
        attrs: Some(attrs),
        nlri,
        ..Update::default()
    });
    let mut wire = BytesMut::new();
    encode_message(&msg, &p, &mut wire).expect("encode");
    let start = std::time::Instant::now();
    for _ in 0..n {
        black_box(decode_message(black_box(&wire), &p).expect("decode"));
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{n} decodes of a {}-octet UPDATE with 20 prefixes: {per:.0} ns wall each",
        wire.len()
    );
}
