//! Properties: arbitrary UPDATE, OPEN and NOTIFICATION values survive encode → decode;
//! arbitrary octets never panic the decoder.

use bgp::types::{Afi, AfiSafi, RouterId};
use bgp::wire::attr::{
    Aggregator, AsPath, AsSegment, Community, ExtCommunity, LargeCommunity, NextHop, Origin,
    PathAttrs, RawAttr, SegmentType,
};
use bgp::wire::open::{AddPathMode, Capability, GracefulRestartFamily};
use bgp::wire::update::{MpReach, MpUnreach};
use bgp::wire::{
    decode_message, encode_message, CodecParams, Message, Nlri, Notification, Open, Update,
};
use bgp::Asn;
use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn asn(four: bool) -> impl Strategy<Value = Asn> {
    let max = if four { u32::MAX } else { 65535 };
    (1..=max)
        .prop_filter("not AS_TRANS", |a| *a != 23456)
        .prop_map(Asn)
}

fn segment(four: bool, confed: bool) -> impl Strategy<Value = AsSegment> {
    let kinds = if confed {
        prop_oneof![
            Just(SegmentType::Sequence),
            Just(SegmentType::Set),
            Just(SegmentType::ConfedSequence),
            Just(SegmentType::ConfedSet)
        ]
        .boxed()
    } else {
        prop_oneof![Just(SegmentType::Sequence), Just(SegmentType::Set)].boxed()
    };
    (kinds, prop::collection::vec(asn(four), 1..8)).prop_map(|(kind, asns)| AsSegment {
        kind,
        asns: asns.into_iter().collect(),
    })
}

/// A path as a 4-octet session carries it; with `two_octet_safe` one that also survives
/// a 2-octet session (confederation segments hold 2-octet ASes, RFC 6793 §4.2.2).
fn as_path(two_octet_safe: bool) -> impl Strategy<Value = AsPath> {
    let confed = segment(!two_octet_safe, true);
    let plain = segment(true, false);
    (
        prop::collection::vec(confed, 0..2),
        prop::collection::vec(plain, 0..3),
    )
        .prop_map(|(c, p)| {
            let mut segs: Vec<AsSegment> = c
                .into_iter()
                .map(|mut s| {
                    if !matches!(s.kind, SegmentType::ConfedSequence | SegmentType::ConfedSet) {
                        s.kind = SegmentType::ConfedSequence;
                    }
                    s
                })
                .collect();
            segs.extend(p);
            // Adjacent sequences are one segment on the wire after a 2-octet merge; keep them
            // apart by kind so the value is canonical.
            segs.dedup_by(|b, a| {
                a.kind == SegmentType::Sequence && b.kind == SegmentType::Sequence
            });
            AsPath {
                segments: segs.into_iter().collect(),
            }
        })
}

fn usable_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xE000_0000).prop_map(Ipv4Addr::from)
}

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()))
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()))
}

fn nlri(prefix: impl Strategy<Value = IpNet>, add_path: bool) -> impl Strategy<Value = Nlri> {
    (prefix, any::<u32>()).prop_map(move |(prefix, id)| Nlri {
        prefix,
        path_id: if add_path { id } else { 0 },
    })
}

fn attrs(four: bool, ebgp: bool) -> impl Strategy<Value = PathAttrs> {
    (
        (
            prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ],
            as_path(!four),
        ),
        (prop::option::of(any::<u32>()), any::<u32>(), any::<bool>()),
        prop::option::of((asn(true), any::<u32>())),
        (
            prop::collection::vec(any::<u32>(), 0..6),
            prop::collection::vec(any::<[u8; 8]>(), 0..3),
            prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..3),
        ),
        (
            prop::option::of(any::<u32>()),
            prop::collection::vec(any::<u32>(), 0..3),
        ),
        prop::collection::btree_map(
            100u8..=250,
            prop::collection::vec(any::<u8>(), 0..300),
            0..3,
        ),
        usable_v4(),
    )
        .prop_map(
            move |(
                (origin, as_path),
                (med, lp, atomic),
                agg,
                (c, e, l),
                (orig, cl),
                unknown,
                nh,
            )| {
                // RFC 6793 §4.2.3: a 2-octet aggregator makes AS4_PATH stale, so on a 2-octet
                // session a path with large ASes comes with a large aggregator or none.
                let needs_as4 = as_path
                    .segments
                    .iter()
                    .flat_map(|s| s.asns.iter())
                    .any(|a| !a.is_two_octet());
                let aggregator = agg
                    .filter(|(a, _)| four || !needs_as4 || !a.is_two_octet())
                    .map(|(asn, addr)| Aggregator {
                        asn,
                        address: Ipv4Addr::from(addr),
                    });
                PathAttrs {
                    origin,
                    as_path,
                    next_hop: Some(NextHop::V4(nh)),
                    med,
                    local_pref: (!ebgp).then_some(lp),
                    atomic_aggregate: atomic,
                    aggregator,
                    communities: c.into_iter().map(Community).collect(),
                    ext_communities: e.into_iter().map(ExtCommunity).collect(),
                    large_communities: l
                        .into_iter()
                        .map(|(g, a, b)| LargeCommunity {
                            global: g,
                            local1: a,
                            local2: b,
                        })
                        .collect(),
                    originator_id: orig.filter(|_| !ebgp).map(Ipv4Addr::from),
                    cluster_list: if ebgp {
                        Vec::new()
                    } else {
                        cl.into_iter().map(Ipv4Addr::from).collect()
                    },
                    // Passed on with the Partial bit, so generated with it.
                    unknown: unknown
                        .into_iter()
                        .map(|(code, v)| RawAttr {
                            flags: 0xe0,
                            code,
                            value: Bytes::from(v),
                        })
                        .collect(),
                }
            },
        )
}

fn params() -> impl Strategy<Value = CodecParams> {
    (
        any::<bool>(),
        any::<[bool; 2]>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(four, add_path, ebgp, ext)| CodecParams {
            four_octet_asn: four,
            add_path_rx: add_path,
            add_path_tx: add_path,
            extended_message: ext,
            families: [true, true],
            ipv4_extended_next_hop: false,
            ebgp,
        })
}

fn update(p: CodecParams) -> impl Strategy<Value = (CodecParams, Update)> {
    let v6nh = (
        any::<u128>().prop_filter("usable", |a| (*a >> 120) != 0xff && *a != 0),
        prop::option::of(any::<u128>()),
    )
        .prop_map(|(g, ll)| NextHop::V6 {
            global: Ipv6Addr::from(g),
            link_local: ll.map(Ipv6Addr::from),
        });
    (
        prop::collection::vec(nlri(v4_prefix(), p.add_path_rx[0]), 0..20),
        prop::collection::vec(nlri(v4_prefix(), p.add_path_rx[0]), 0..20),
        prop::option::of((
            v6nh,
            prop::collection::vec(nlri(v6_prefix(), p.add_path_rx[1]), 0..10),
        )),
        prop::option::of(prop::collection::vec(
            nlri(v6_prefix(), p.add_path_rx[1]),
            0..10,
        )),
        prop::option::of(attrs(p.four_octet_asn, p.ebgp)),
    )
        .prop_map(move |(withdrawn, nlri, reach, unreach, attrs)| {
            let v6 = AfiSafi::new(2, 1);
            let mp_reach = reach.map(|(next_hop, nlri)| MpReach {
                afi_safi: v6,
                next_hop,
                nlri,
            });
            let needs_attrs = !nlri.is_empty() || mp_reach.is_some();
            let attrs = match attrs {
                Some(a) => Some(a),
                None if needs_attrs => Some(PathAttrs {
                    next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
                    local_pref: (!p.ebgp).then_some(100),
                    ..PathAttrs::default()
                }),
                None => None,
            };
            let u = Update {
                withdrawn,
                attrs,
                nlri,
                mp_reach,
                mp_unreach: unreach.map(|withdrawn| MpUnreach {
                    afi_safi: v6,
                    withdrawn,
                }),
            };
            (p.clone(), u)
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    let af = (1u16..=2, 1u8..=2).prop_map(|(a, s)| AfiSafi::new(a, s));
    let mode = prop_oneof![
        Just(AddPathMode::Receive),
        Just(AddPathMode::Send),
        Just(AddPathMode::Both)
    ];
    prop_oneof![
        af.clone().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((af.clone(), any::<bool>()), 0..3)
        )
            .prop_map(|(r, n, t, f)| Capability::GracefulRestart {
                restart_state: r,
                notification: n,
                restart_time: t,
                families: f
                    .into_iter()
                    .map(|(afi_safi, forwarding_preserved)| GracefulRestartFamily {
                        afi_safi,
                        forwarding_preserved
                    })
                    .collect(),
            }),
        prop::collection::vec((af.clone(), mode), 1..3).prop_map(Capability::AddPath),
        prop::collection::vec((af, 1u16..=2), 1..3).prop_map(|v| Capability::ExtendedNextHop(
            v.into_iter().map(|(a, n)| (a, Afi(n))).collect()
        )),
        (100u8..=200, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(code, v)| {
            Capability::Unknown {
                code,
                value: Bytes::from(v),
            }
        }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        asn(true),
        any::<bool>(),
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        prop::collection::vec(capability(), 0..12),
    )
        .prop_map(|(asn, four, hold, id, mut caps)| {
            // The real AS survives only with the capability when it needs 4 octets.
            if four || !asn.is_two_octet() {
                caps.push(Capability::FourOctetAsn(asn));
            }
            Open::new(asn, hold, RouterId(Ipv4Addr::from(id)), caps)
        })
}

fn round_trip(m: &Message, p: &CodecParams) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    encode_message(m, p, &mut out).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let d = decode_message(&out, p).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert!(d.attr_errors.is_empty(), "{:?}", d.attr_errors);
    prop_assert_eq!(d.message.as_ref(), Some(m));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn updates_round_trip((p, u) in params().prop_flat_map(update)) {
        round_trip(&Message::Update(u), &p)?;
    }

    #[test]
    fn opens_round_trip(o in open()) {
        round_trip(&Message::Open(o), &CodecParams::default())?;
    }

    #[test]
    fn notifications_round_trip(code in any::<u8>(), subcode in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..4000)) {
        round_trip(&Message::Notification(Notification::new(code, subcode, data)), &CodecParams::default())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), p in params()) {
        let _ = decode_message(&bytes, &p);
    }

    /// Past the header check, so the message decoders see the random octets.
    #[test]
    fn arbitrary_bodies_never_panic(t in 1u8..=5, body in prop::collection::vec(any::<u8>(), 0..600), p in params()) {
        let mut frame = vec![0xff; 16];
        frame.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        frame.push(t);
        frame.extend_from_slice(&body);
        if let Ok(d) = decode_message(&frame, &p) {
            // Whatever decoded encodes again, and decodes to itself.
            if let Some(m) = d.message {
                let mut out = BytesMut::new();
                if encode_message(&m, &p, &mut out).is_ok() {
                    let again = decode_message(&out, &p).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert_eq!(again.message.as_ref(), Some(&normalize(m)));
                }
            }
        }
    }
}

/// What a decoded message looks like after passing through our encoder: unknown
/// attributes carry the Partial bit.
fn normalize(m: Message) -> Message {
    match m {
        Message::Update(mut u) => {
            if let Some(a) = u.attrs.as_mut() {
                for r in &mut a.unknown {
                    r.flags |= 0x20;
                }
            }
            Message::Update(u)
        }
        m => m,
    }
}
