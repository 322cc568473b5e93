//! Helpers shared by the byte-vector tests.

use bgp::wire::attr::{
    AsPath, AsSegment, Community, LargeCommunity, NextHop, PathAttrs, SegmentType,
};
use bgp::wire::{decode_message, encode_message, CodecParams, Decoded, Message, Nlri};
use bgp::Asn;
use bytes::BytesMut;

pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn nlri(s: &str) -> Nlri {
    Nlri::new(s.parse().expect("prefix"))
}

pub fn nlri_id(s: &str, id: u32) -> Nlri {
    Nlri {
        prefix: s.parse().expect("prefix"),
        path_id: id,
    }
}

pub fn path(asns: &[u32]) -> AsPath {
    AsPath::from_sequence(asns.iter().map(|a| Asn(*a)))
}

#[allow(dead_code)]
pub fn segment(kind: SegmentType, asns: &[u32]) -> AsSegment {
    AsSegment {
        kind,
        asns: asns.iter().map(|a| Asn(*a)).collect(),
    }
}

pub fn comm(a: u16, v: u16) -> Community {
    Community::new(a, v)
}

pub fn large(g: u32, l1: u32, l2: u32) -> LargeCommunity {
    LargeCommunity {
        global: g,
        local1: l1,
        local2: l2,
    }
}

pub fn nh4(s: &str) -> Option<NextHop> {
    Some(NextHop::V4(s.parse().expect("address")))
}

pub fn attrs(as_path: &[u32], next_hop: Option<NextHop>) -> PathAttrs {
    PathAttrs {
        as_path: path(as_path),
        next_hop,
        ..PathAttrs::default()
    }
}

/// Decode, expecting success without RFC 7606 errors.
pub fn decode_ok(bytes: &[u8], p: &CodecParams) -> Message {
    let d: Decoded = decode_message(bytes, p).unwrap_or_else(|e| panic!("{e}: {}", hex(bytes)));
    assert!(d.attr_errors.is_empty(), "{:?}", d.attr_errors);
    d.message.expect("a message")
}

/// Encode as the sender on the other end of a session whose receiver uses `p`: the
/// sender's add-path transmit is the receiver's receive.
pub fn sender(p: &CodecParams) -> CodecParams {
    CodecParams {
        add_path_tx: p.add_path_rx,
        ..p.clone()
    }
}

pub fn encode(m: &Message, p: &CodecParams) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_message(m, &sender(p), &mut out).unwrap_or_else(|e| panic!("{e}: {m:?}"));
    out.to_vec()
}

/// decode(encode(m)) == m.
pub fn assert_round_trip(m: &Message, p: &CodecParams) {
    let bytes = encode(m, p);
    assert_eq!(&decode_ok(&bytes, p), m, "{}", hex(&bytes));
}
