//! Malformed messages and what the decoder must make of each: the NOTIFICATION of a
//! session reset, treat-as-withdraw, or the discard of which attribute (RFC 4271 §6,
//! RFC 7606, RFC 6793 §6, RFC 7313 §5, RFC 7607).

use crate::common::hex;
use bgp::wire::{decode_message, AttrAction, CodecParams, Message};

#[derive(Debug)]
enum Want {
    /// Session reset with this (code, subcode) and, when given, data.
    Reset(u8, u8, Option<Vec<u8>>),
    /// Treat-as-withdraw, caused by errors in these attribute codes.
    Withdraw(&'static [u8]),
    /// These attributes discarded, the routes kept.
    Discard(&'static [u8]),
    /// Decoded without error.
    Clean,
    /// Ignored as a whole.
    Ignored,
}
use Want::*;

fn frame(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(t);
    v.extend_from_slice(body);
    v
}

fn at(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, code, value.len() as u8];
    v.extend_from_slice(value);
    v
}

const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH: &[u8] = &[0x40, 2, 4, 2, 1, 0xfd, 0xe9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 10, 0, 0, 1];
const LOCAL_PREF: &[u8] = &[0x40, 5, 4, 0, 0, 0, 100];
const NLRI: &[u8] = &[16, 10, 1];

/// An UPDATE with the four mandatory attributes of an iBGP session, `extra` after them
/// (with `drop` left out), and one NLRI.
fn upd(drop: &[&[u8]], extra: &[Vec<u8>]) -> Vec<u8> {
    let mut attrs = Vec::new();
    for a in [ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF] {
        if !drop.contains(&a) {
            attrs.extend_from_slice(a);
        }
    }
    for e in extra {
        attrs.extend_from_slice(e);
    }
    raw_upd(&[], &attrs, NLRI)
}

fn raw_upd(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    frame(2, &b)
}

fn header(len: u16, t: u8, body_len: usize) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(t);
    v.extend(std::iter::repeat_n(0, body_len));
    v
}

fn open(version: u8, asn: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    frame(1, &b)
}

fn ibgp() -> CodecParams {
    CodecParams::default()
}
fn ebgp() -> CodecParams {
    CodecParams {
        ebgp: true,
        ..CodecParams::default()
    }
}
fn four() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ..CodecParams::default()
    }
}
fn dual() -> CodecParams {
    CodecParams {
        families: [true, true],
        ..CodecParams::default()
    }
}
fn ext() -> CodecParams {
    CodecParams {
        extended_message: true,
        ..CodecParams::default()
    }
}

const MP_V6_NH: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn mp_reach_v6(nh_len: u8, nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh_len];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(nlri);
    at(0x80, 14, &v)
}

fn cases() -> Vec<(&'static str, Vec<u8>, CodecParams, Want)> {
    let mut bad_marker = frame(4, &[]);
    bad_marker[0] = 0xfe;
    let keepalive = frame(4, &[]);
    let caps = |c: &[u8]| {
        let mut p = vec![2, c.len() as u8];
        p.extend_from_slice(c);
        p
    };
    let rr_long = frame(5, &[0, 1, 1, 1, 0]);
    let v6_nlri = [48, 0x20, 0x01, 0x0d, 0xb8, 0, 1];
    let aggregator_bad_len = at(0xc0, 7, &[0, 1, 10, 0, 0]);
    let unknown_wk = at(0x40, 99, &[1, 2]);
    vec![
        // --- Message header (RFC 4271 §6.1) ---
        (
            "marker not all ones",
            bad_marker,
            ibgp(),
            Reset(1, 1, Some(vec![])),
        ),
        (
            "length below 19",
            header(18, 4, 0),
            ibgp(),
            Reset(1, 2, Some(vec![0, 18])),
        ),
        (
            "length above 4096",
            header(4097, 2, 4078),
            ibgp(),
            Reset(1, 2, Some(vec![0x10, 0x01])),
        ),
        (
            "unknown message type",
            header(19, 7, 0),
            ibgp(),
            Reset(1, 3, Some(vec![7])),
        ),
        (
            "KEEPALIVE longer than 19",
            header(20, 4, 1),
            ibgp(),
            Reset(1, 2, Some(vec![0, 20])),
        ),
        (
            "OPEN shorter than 29",
            header(28, 1, 9),
            ibgp(),
            Reset(1, 2, Some(vec![0, 28])),
        ),
        (
            "UPDATE shorter than 23",
            header(22, 2, 3),
            ibgp(),
            Reset(1, 2, Some(vec![0, 22])),
        ),
        (
            "NOTIFICATION shorter than 21",
            header(20, 3, 1),
            ibgp(),
            Reset(1, 2, Some(vec![0, 20])),
        ),
        (
            "ROUTE-REFRESH shorter than 23",
            header(22, 5, 3),
            ibgp(),
            Reset(1, 2, Some(vec![0, 22])),
        ),
        (
            "extended OPEN (RFC 8654 keeps it at 4096)",
            header(5000, 1, 4981),
            ext(),
            Reset(1, 2, Some(vec![0x13, 0x88])),
        ),
        // --- OPEN (RFC 4271 §6.2, RFC 7607, RFC 6286) ---
        (
            "version 3",
            open(3, 65001, 90, [1, 1, 1, 1], &[]),
            ibgp(),
            Reset(2, 1, Some(vec![0, 4])),
        ),
        (
            "hold time 1",
            open(4, 65001, 1, [1, 1, 1, 1], &[]),
            ibgp(),
            Reset(2, 6, Some(vec![])),
        ),
        (
            "BGP identifier 0",
            open(4, 65001, 90, [0; 4], &[]),
            ibgp(),
            Reset(2, 3, Some(vec![])),
        ),
        (
            "AS 0",
            open(4, 0, 90, [1, 1, 1, 1], &[]),
            ibgp(),
            Reset(2, 2, Some(vec![])),
        ),
        (
            "4-octet AS capability of 0",
            open(4, 65001, 90, [1, 1, 1, 1], &caps(&[65, 4, 0, 0, 0, 0])),
            ibgp(),
            Reset(2, 2, None),
        ),
        (
            "optional parameter type 1",
            open(4, 65001, 90, [1, 1, 1, 1], &[1, 2, 0, 0]),
            ibgp(),
            Reset(2, 4, None),
        ),
        (
            "capability overruns its parameter",
            open(4, 65001, 90, [1, 1, 1, 1], &caps(&[1, 4, 0, 1])),
            ibgp(),
            Reset(2, 0, None),
        ),
        (
            "multiprotocol capability of 3 octets",
            open(4, 65001, 90, [1, 1, 1, 1], &caps(&[1, 3, 0, 1, 0])),
            ibgp(),
            Reset(2, 0, None),
        ),
        // --- ROUTE-REFRESH (RFC 7313 §5) ---
        (
            "ROUTE-REFRESH of 5 octets",
            rr_long.clone(),
            ibgp(),
            Reset(7, 1, Some(rr_long)),
        ),
        (
            "ROUTE-REFRESH unknown subtype",
            frame(5, &[0, 1, 9, 1]),
            ibgp(),
            Ignored,
        ),
        // --- UPDATE structure (RFC 7606 §4, §5.3) ---
        (
            "withdrawn length overruns",
            frame(2, &[0, 9, 8, 10, 0, 0]),
            ibgp(),
            Reset(3, 1, Some(vec![])),
        ),
        (
            "attribute length overruns",
            frame(2, &[0, 0, 0, 9, 0x40, 1, 1, 0]),
            ibgp(),
            Reset(3, 1, Some(vec![])),
        ),
        (
            "withdrawn prefix /33",
            raw_upd(&[33, 1, 2, 3, 4, 5], &[], &[]),
            ibgp(),
            Reset(3, 10, Some(vec![])),
        ),
        (
            "NLRI prefix /33",
            raw_upd(
                &[],
                &[ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF].concat(),
                &[33, 1, 2, 3, 4, 5],
            ),
            ibgp(),
            Reset(3, 10, Some(vec![])),
        ),
        (
            "NLRI ends inside a prefix",
            raw_upd(
                &[],
                &[ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF].concat(),
                &[24, 10, 1],
            ),
            ibgp(),
            Reset(3, 10, Some(vec![])),
        ),
        // --- Attributes (RFC 7606 §7) ---
        (
            "ORIGIN 3",
            upd(&[ORIGIN], &[at(0x40, 1, &[3])]),
            ibgp(),
            Withdraw(&[1]),
        ),
        (
            "ORIGIN of 2 octets",
            upd(&[ORIGIN], &[at(0x40, 1, &[0, 0])]),
            ibgp(),
            Withdraw(&[1]),
        ),
        (
            "ORIGIN flagged optional",
            upd(&[ORIGIN], &[at(0xc0, 1, &[0])]),
            ibgp(),
            Withdraw(&[1]),
        ),
        (
            "ORIGIN with Partial",
            upd(&[ORIGIN], &[at(0x60, 1, &[0])]),
            ibgp(),
            Withdraw(&[1]),
        ),
        (
            "AS_PATH segment type 5",
            upd(&[AS_PATH], &[at(0x40, 2, &[5, 1, 0, 1])]),
            ibgp(),
            Withdraw(&[2]),
        ),
        (
            "AS_PATH segment overruns",
            upd(&[AS_PATH], &[at(0x40, 2, &[2, 2, 0, 1])]),
            ibgp(),
            Withdraw(&[2]),
        ),
        (
            "AS_PATH empty segment",
            upd(&[AS_PATH], &[at(0x40, 2, &[2, 0])]),
            ibgp(),
            Withdraw(&[2]),
        ),
        (
            "AS_PATH with AS 0 (RFC 7607)",
            upd(&[AS_PATH], &[at(0x40, 2, &[2, 1, 0, 0])]),
            ibgp(),
            Withdraw(&[2]),
        ),
        (
            "NEXT_HOP of 5 octets",
            upd(&[NEXT_HOP], &[at(0x40, 3, &[10, 0, 0, 1, 0])]),
            ibgp(),
            Withdraw(&[3]),
        ),
        (
            "NEXT_HOP 0.0.0.0",
            upd(&[NEXT_HOP], &[at(0x40, 3, &[0, 0, 0, 0])]),
            ibgp(),
            Withdraw(&[3]),
        ),
        (
            "NEXT_HOP multicast",
            upd(&[NEXT_HOP], &[at(0x40, 3, &[224, 0, 0, 5])]),
            ibgp(),
            Withdraw(&[3]),
        ),
        (
            "MED of 3 octets",
            upd(&[], &[at(0x80, 4, &[0, 0, 1])]),
            ibgp(),
            Withdraw(&[4]),
        ),
        (
            "MED flagged transitive",
            upd(&[], &[at(0xc0, 4, &[0, 0, 0, 1])]),
            ibgp(),
            Withdraw(&[4]),
        ),
        (
            "LOCAL_PREF of 2 octets (iBGP)",
            upd(&[LOCAL_PREF], &[at(0x40, 5, &[0, 1])]),
            ibgp(),
            Withdraw(&[5]),
        ),
        ("LOCAL_PREF from eBGP", upd(&[], &[]), ebgp(), Discard(&[5])),
        (
            "ATOMIC_AGGREGATE of 1 octet",
            upd(&[], &[at(0x40, 6, &[0])]),
            ibgp(),
            Discard(&[6]),
        ),
        (
            "ATOMIC_AGGREGATE flagged optional",
            upd(&[], &[at(0x80, 6, &[])]),
            ibgp(),
            Discard(&[6]),
        ),
        (
            "AGGREGATOR of 5 octets",
            upd(&[], &[aggregator_bad_len]),
            ibgp(),
            Discard(&[7]),
        ),
        (
            "AGGREGATOR of 6 octets on a 4-octet session",
            upd(
                &[AS_PATH],
                &[
                    at(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9]),
                    at(0xc0, 7, &[0, 1, 10, 0, 0, 1]),
                ],
            ),
            four(),
            Discard(&[7]),
        ),
        (
            "AGGREGATOR AS 0 (RFC 7607)",
            upd(&[], &[at(0xc0, 7, &[0, 0, 10, 0, 0, 1])]),
            ibgp(),
            Discard(&[7]),
        ),
        (
            "COMMUNITIES empty",
            upd(&[], &[at(0xc0, 8, &[])]),
            ibgp(),
            Withdraw(&[8]),
        ),
        (
            "COMMUNITIES of 6 octets",
            upd(&[], &[at(0xc0, 8, &[0, 1, 0, 2, 0, 3])]),
            ibgp(),
            Withdraw(&[8]),
        ),
        (
            "ORIGINATOR_ID of 3 octets (iBGP)",
            upd(&[], &[at(0x80, 9, &[1, 2, 3])]),
            ibgp(),
            Withdraw(&[9]),
        ),
        (
            "ORIGINATOR_ID from eBGP",
            upd(&[LOCAL_PREF], &[at(0x80, 9, &[1, 2, 3, 4])]),
            ebgp(),
            Discard(&[9]),
        ),
        (
            "CLUSTER_LIST of 5 octets",
            upd(&[], &[at(0x80, 10, &[1, 2, 3, 4, 5])]),
            ibgp(),
            Withdraw(&[10]),
        ),
        (
            "CLUSTER_LIST from eBGP",
            upd(&[LOCAL_PREF], &[at(0x80, 10, &[1, 2, 3, 4])]),
            ebgp(),
            Discard(&[10]),
        ),
        (
            "EXTENDED_COMMUNITIES of 7 octets",
            upd(&[], &[at(0xc0, 16, &[0; 7])]),
            ibgp(),
            Withdraw(&[16]),
        ),
        (
            "LARGE_COMMUNITIES of 11 octets",
            upd(&[], &[at(0xc0, 32, &[0; 11])]),
            ibgp(),
            Withdraw(&[32]),
        ),
        (
            "AS4_PATH with a confederation segment",
            upd(&[], &[at(0xc0, 17, &[3, 1, 0, 0, 0, 7])]),
            ibgp(),
            Discard(&[17]),
        ),
        (
            "AS4_PATH overruns",
            upd(&[], &[at(0xc0, 17, &[2, 2, 0, 0, 0, 7])]),
            ibgp(),
            Discard(&[17]),
        ),
        (
            "AS4_PATH on a 4-octet session",
            upd(
                &[AS_PATH],
                &[
                    at(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9]),
                    at(0xc0, 17, &[2, 1, 0, 0, 0, 7]),
                ],
            ),
            four(),
            Discard(&[17]),
        ),
        (
            "AS4_PATH longer than AS_PATH",
            upd(&[], &[at(0xc0, 17, &[2, 2, 0, 1, 0, 0, 0, 1, 0, 1])]),
            ibgp(),
            Discard(&[17]),
        ),
        (
            "AS4_AGGREGATOR of 7 octets",
            upd(&[], &[at(0xc0, 18, &[0; 7])]),
            ibgp(),
            Discard(&[18]),
        ),
        (
            "unknown well-known attribute",
            upd(&[], std::slice::from_ref(&unknown_wk)),
            ibgp(),
            Reset(3, 2, Some(unknown_wk)),
        ),
        (
            "unknown optional non-transitive dropped",
            upd(&[], &[at(0x80, 99, &[1])]),
            ibgp(),
            Clean,
        ),
        (
            "duplicate MED: the first is kept",
            upd(
                &[],
                &[at(0x80, 4, &[0, 0, 0, 1]), at(0x80, 4, &[0, 0, 0, 2])],
            ),
            ibgp(),
            Discard(&[4]),
        ),
        (
            "duplicate MP_UNREACH_NLRI",
            upd(&[], &[at(0x80, 15, &[0, 1, 1]), at(0x80, 15, &[0, 1, 1])]),
            ibgp(),
            Reset(3, 1, Some(vec![])),
        ),
        (
            "missing ORIGIN",
            upd(&[ORIGIN], &[]),
            ibgp(),
            Withdraw(&[1]),
        ),
        (
            "missing AS_PATH",
            upd(&[AS_PATH], &[]),
            ibgp(),
            Withdraw(&[2]),
        ),
        (
            "missing NEXT_HOP",
            upd(&[NEXT_HOP], &[]),
            ibgp(),
            Withdraw(&[3]),
        ),
        (
            "missing LOCAL_PREF on iBGP",
            upd(&[LOCAL_PREF], &[]),
            ibgp(),
            Withdraw(&[5]),
        ),
        (
            "no attributes at all",
            raw_upd(&[], &[], NLRI),
            ibgp(),
            Withdraw(&[1, 2, 3, 5]),
        ),
        (
            "attributes without NLRI need no mandatory ones",
            raw_upd(&[], &[0x80, 4, 4, 0, 0, 0, 1], &[]),
            ibgp(),
            Clean,
        ),
        (
            "attribute overruns the attributes",
            raw_upd(
                &[],
                &[ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, &[0x80, 4, 9, 0]].concat(),
                NLRI,
            ),
            ibgp(),
            Withdraw(&[4]),
        ),
        (
            "two octets left in the attributes",
            raw_upd(
                &[],
                &[ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, &[0x80, 4]].concat(),
                NLRI,
            ),
            ibgp(),
            Withdraw(&[4]),
        ),
        (
            "MP_REACH_NLRI next hop of 5 octets",
            upd(&[NEXT_HOP], &[mp_reach_v6(5, &[1, 2, 3, 4, 5], &v6_nlri)]),
            dual(),
            Reset(3, 9, None),
        ),
        (
            "MP_REACH_NLRI prefix /129",
            upd(&[NEXT_HOP], &[mp_reach_v6(16, &MP_V6_NH, &[129, 0])]),
            dual(),
            Reset(3, 9, None),
        ),
        (
            "MP_REACH_NLRI of 3 octets",
            upd(&[], &[at(0x80, 14, &[0, 2, 1])]),
            dual(),
            Reset(3, 5, None),
        ),
        (
            "MP_UNREACH_NLRI prefix overruns",
            upd(&[], &[at(0x80, 15, &[0, 2, 1, 64, 0x20])]),
            dual(),
            Reset(3, 9, None),
        ),
        (
            "MP_REACH_NLRI overruns the attributes",
            raw_upd(
                &[],
                &[ORIGIN, AS_PATH, LOCAL_PREF, &[0x80, 14, 40, 0, 2]].concat(),
                &[],
            ),
            dual(),
            Reset(3, 1, None),
        ),
        (
            "IPv6 next hop for IPv4 without RFC 8950",
            upd(
                &[NEXT_HOP],
                &[at(
                    0x80,
                    14,
                    &[[0, 1, 1, 16].as_slice(), &MP_V6_NH, &[0, 8, 10]].concat(),
                )],
            ),
            ibgp(),
            Reset(3, 9, None),
        ),
        (
            "MP_REACH_NLRI multicast next hop",
            upd(
                &[NEXT_HOP],
                &[mp_reach_v6(
                    16,
                    &[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    &v6_nlri,
                )],
            ),
            dual(),
            Withdraw(&[14]),
        ),
        (
            "MP_REACH_NLRI of a family not negotiated",
            upd(&[], &[mp_reach_v6(16, &MP_V6_NH, &v6_nlri)]),
            ibgp(),
            Discard(&[14]),
        ),
        (
            "errors of both kinds: the stronger wins",
            upd(&[ORIGIN], &[at(0x40, 1, &[7]), at(0x40, 6, &[0])]),
            ibgp(),
            Withdraw(&[1, 6]),
        ),
        (
            "NOTIFICATION with any data",
            frame(3, &[6, 2, 5, b'h']),
            ibgp(),
            Clean,
        ),
        ("KEEPALIVE", keepalive, ibgp(), Clean),
    ]
}

#[test]
fn malformed_messages_have_the_prescribed_outcome() {
    let cases = cases();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for (name, bytes, params, want) in cases {
        let got = decode_message(&bytes, &params);
        let ok = match (&want, &got) {
            (Reset(code, subcode, data), Err(e)) => {
                let n = e.notification();
                n.code == *code
                    && n.subcode == *subcode
                    && data.as_ref().is_none_or(|d| n.data[..] == d[..])
            }
            (Withdraw(codes), Ok(d)) => {
                let withdrawn = match &d.message {
                    Some(Message::Update(u)) => {
                        u.attrs.is_none()
                            && u.nlri.is_empty()
                            && u.mp_reach.is_none()
                            && (!u.withdrawn.is_empty() || u.mp_unreach.is_some())
                    }
                    _ => false,
                };
                withdrawn
                    && d.attr_errors
                        .iter()
                        .any(|e| e.action == AttrAction::Withdraw)
                    && codes
                        .iter()
                        .all(|c| d.attr_errors.iter().any(|e| e.code == *c))
            }
            (Discard(codes), Ok(d)) => {
                let kept = matches!(&d.message, Some(Message::Update(u)) if u.attrs.is_some() && !u.nlri.is_empty());
                let mut got_codes: Vec<u8> = d.attr_errors.iter().map(|e| e.code).collect();
                got_codes.dedup();
                kept && d
                    .attr_errors
                    .iter()
                    .all(|e| e.action == AttrAction::Discard)
                    && got_codes == *codes
            }
            (Clean, Ok(d)) => d.message.is_some() && d.attr_errors.is_empty(),
            (Ignored, Ok(d)) => d.message.is_none(),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{name}: want {want:?}, got {got:?} for {}",
                hex(&bytes)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn discarded_attributes_are_gone_and_the_rest_kept() {
    // Duplicate MED: the first is kept (RFC 7606 §3 g).
    let bytes = upd(
        &[],
        &[at(0x80, 4, &[0, 0, 0, 1]), at(0x80, 4, &[0, 0, 0, 2])],
    );
    let d = decode_message(&bytes, &ibgp()).unwrap();
    let Some(Message::Update(u)) = d.message else {
        panic!("not an update")
    };
    assert_eq!(u.attrs.unwrap().med, Some(1));
    // LOCAL_PREF from an external peer is dropped.
    let d = decode_message(&upd(&[], &[]), &ebgp()).unwrap();
    let Some(Message::Update(u)) = d.message else {
        panic!("not an update")
    };
    assert_eq!(u.attrs.as_ref().unwrap().local_pref, None);
    assert_eq!(u.nlri.len(), 1);
}

#[test]
fn treat_as_withdraw_moves_every_route_to_the_withdrawals() {
    let mut v6 = vec![0, 2, 1, 16];
    v6.extend_from_slice(&MP_V6_NH);
    v6.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    let bytes = raw_upd(
        &[8, 11],
        &[
            [0x40, 1, 1, 9].as_slice(),
            AS_PATH,
            NEXT_HOP,
            LOCAL_PREF,
            &at(0x80, 14, &v6),
        ]
        .concat(),
        &[16, 10, 1],
    );
    let d = decode_message(&bytes, &dual()).unwrap();
    let Some(Message::Update(u)) = d.message else {
        panic!("not an update")
    };
    let v4: Vec<String> = u.withdrawn.iter().map(|n| n.prefix.to_string()).collect();
    assert_eq!(v4, ["11.0.0.0/8", "10.1.0.0/16"]);
    let v6: Vec<String> = u
        .mp_unreach
        .unwrap()
        .withdrawn
        .iter()
        .map(|n| n.prefix.to_string())
        .collect();
    assert_eq!(v6, ["2001:db8:1::/48"]);
    assert!(u.attrs.is_none() && u.nlri.is_empty() && u.mp_reach.is_none());
    assert_eq!(
        d.attr_errors[0].notification().to_string(),
        "UPDATE Message Error / Invalid ORIGIN Attribute"
    );
}
