//! Hand-made byte vectors paired with the values they decode to, for what the captures
//! do not show: 2-octet sessions with AS4_PATH, add-path, extended lengths, End-of-RIB,
//! NOTIFICATION and ROUTE-REFRESH.

use crate::common::*;
use bgp::types::AfiSafi;
use bgp::wire::attr::{Aggregator, NextHop, PathAttrs, RawAttr};
use bgp::wire::notification::CeaseSubcode;
use bgp::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use bgp::wire::update::{MpReach, MpUnreach};
use bgp::wire::{CodecParams, Message, Notification, Update};
use bgp::{Asn, Family};
use bytes::Bytes;

struct Vector {
    name: &'static str,
    hex: &'static str,
    params: CodecParams,
    value: Message,
    /// Our encoder writes exactly these octets.
    exact: bool,
}

fn two_octet_ebgp() -> CodecParams {
    CodecParams {
        ebgp: true,
        ..CodecParams::default()
    }
}

fn vectors() -> Vec<Vector> {
    let four_dual = CodecParams {
        four_octet_asn: true,
        families: [true, true],
        ..CodecParams::default()
    };
    vec![
        Vector {
            name: "AS4_PATH and AS4_AGGREGATOR merged on a 2-octet session (RFC 6793 §4.2.3)",
            // ORIGIN IGP; AS_PATH 65001 TRANS TRANS; NEXT_HOP 192.0.2.1;
            // AGGREGATOR TRANS 10.0.0.9; AS4_PATH 4200000001 4200000002;
            // AS4_AGGREGATOR 4200000002 10.0.0.9; NLRI 10.0.0.0/8
            hex: "ffffffffffffffffffffffffffffffff 0050 02 0000 0037
                  40010100 4002080203fde95ba05ba0 400304c0000201 c007065ba00a000009
                  c0110a0202fa56ea01fa56ea02 c01208fa56ea020a000009 080a",
            params: two_octet_ebgp(),
            value: Message::Update(Update {
                attrs: Some(PathAttrs {
                    aggregator: Some(Aggregator { asn: Asn(4_200_000_002), address: "10.0.0.9".parse().unwrap() }),
                    ..attrs(&[65001, 4_200_000_001, 4_200_000_002], nh4("192.0.2.1"))
                }),
                nlri: vec![nlri("10.0.0.0/8")],
                ..Update::default()
            }),
            // Our AS4_PATH carries the whole path, 65001 included (RFC 6793 §4.2.2
            // allows either).
            exact: false,
        },
        Vector {
            name: "a 2-octet aggregator makes AS4_PATH stale",
            hex: "ffffffffffffffffffffffffffffffff 003f 02 0000 0026
                  40010100 4002060202fde95ba0 400304c0000201 c00706fde90a000009
                  c0110602 01fa56ea01 080a",
            params: two_octet_ebgp(),
            value: Message::Update(Update {
                attrs: Some(PathAttrs {
                    aggregator: Some(Aggregator { asn: Asn(65001), address: "10.0.0.9".parse().unwrap() }),
                    ..attrs(&[65001, 23456], nh4("192.0.2.1"))
                }),
                nlri: vec![nlri("10.0.0.0/8")],
                ..Update::default()
            }),
            exact: false,
        },
        Vector {
            name: "add-path IPv4 with withdrawals and NLRI (RFC 7911 §3)",
            hex: "ffffffffffffffffffffffffffffffff 0046 02 000d 00000001 18c00002 00000002 00
                  001b 40010100 40020602010000fde9 400304c0000201 4005040000006400000003100a01",
            params: CodecParams { add_path_rx: [true, false], four_octet_asn: true, ..CodecParams::default() },
            value: Message::Update(Update {
                withdrawn: vec![nlri_id("192.0.2.0/24", 1), nlri_id("0.0.0.0/0", 2)],
                attrs: Some(PathAttrs { local_pref: Some(100), ..attrs(&[65001], nh4("192.0.2.1")) }),
                nlri: vec![nlri_id("10.1.0.0/16", 3)],
                ..Update::default()
            }),
            exact: true,
        },
        Vector {
            name: "extended length attribute and an unknown transitive one passed on",
            // COMMUNITIES of 300 octets (75 communities) needs the Extended Length bit.
            hex: "",
            params: CodecParams { four_octet_asn: true, ..CodecParams::default() },
            value: Message::Update(Update {
                attrs: Some(PathAttrs {
                    local_pref: Some(100),
                    communities: (0..75).map(|i| comm(65000, i)).collect(),
                    unknown: vec![RawAttr { flags: 0xe0, code: 99, value: Bytes::from_static(b"opaque") }],
                    ..attrs(&[65001], nh4("192.0.2.1"))
                }),
                nlri: vec![nlri("10.0.0.0/8")],
                ..Update::default()
            }),
            exact: true,
        },
        Vector {
            name: "IPv4 End-of-RIB",
            hex: "ffffffffffffffffffffffffffffffff 0017 02 0000 0000",
            params: CodecParams::default(),
            value: Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
            exact: true,
        },
        Vector {
            name: "IPv6 End-of-RIB",
            hex: "ffffffffffffffffffffffffffffffff 001d 02 0000 0006 800f03000201",
            params: four_dual.clone(),
            value: Message::Update(Update::end_of_rib(Family::Ipv6Unicast)),
            exact: true,
        },
        Vector {
            name: "IPv6 routes with a global next hop, MP_REACH_NLRI first",
            hex: "ffffffffffffffffffffffffffffffff 004a 02 0000 0033
                  800e1c00020110 20010db8000000000000000000000001 00 3020010db80001
                  40010100 40020602010000fde9 4005040000006e",
            params: four_dual.clone(),
            value: Message::Update(Update {
                attrs: Some(PathAttrs { local_pref: Some(110), ..attrs(&[65001], None) }),
                mp_reach: Some(MpReach {
                    afi_safi: AfiSafi::new(2, 1),
                    next_hop: NextHop::V6 { global: "2001:db8::1".parse().unwrap(), link_local: None },
                    nlri: vec![nlri("2001:db8:1::/48")],
                }),
                ..Update::default()
            }),
            exact: true,
        },
        Vector {
            name: "IPv6 withdrawal",
            hex: "ffffffffffffffffffffffffffffffff 002b 02 0000 0014 800f11 000201 2020010db8 4020010db800000000",
            params: four_dual.clone(),
            value: Message::Update(Update {
                mp_unreach: Some(MpUnreach {
                    afi_safi: AfiSafi::new(2, 1),
                    withdrawn: vec![nlri("2001:db8::/32"), nlri("2001:db8::/64")],
                }),
                ..Update::default()
            }),
            exact: true,
        },
        Vector {
            name: "Cease / Administrative Shutdown with a message (RFC 9003)",
            hex: "ffffffffffffffffffffffffffffffff 0021 03 06 02 0b 6d61696e74656e616e6365",
            params: CodecParams::default(),
            value: Message::Notification(Notification::admin_shutdown("maintenance")),
            exact: true,
        },
        Vector {
            name: "Cease / Hard Reset around Hold Timer Expired (RFC 8538)",
            hex: "ffffffffffffffffffffffffffffffff 0017 03 06 09 04 00",
            params: CodecParams::default(),
            value: Message::Notification(Notification::hard_reset(&Notification::hold_timer_expired())),
            exact: true,
        },
        Vector {
            name: "Cease / Maximum Number of Prefixes Reached with its data (RFC 4486)",
            hex: "ffffffffffffffffffffffffffffffff 001c 03 06 01 000101 000003e8",
            params: CodecParams::default(),
            value: Message::Notification(Notification::max_prefixes(AfiSafi::new(1, 1), 1000)),
            exact: true,
        },
        Vector {
            name: "ROUTE-REFRESH Beginning of Route Refresh (RFC 7313)",
            hex: "ffffffffffffffffffffffffffffffff 0017 05 0002 01 01",
            params: CodecParams::default(),
            value: Message::RouteRefresh(RouteRefresh { afi_safi: AfiSafi::new(2, 1), subtype: RefreshSubtype::Begin }),
            exact: true,
        },
        Vector {
            name: "unknown transitive attribute: unused flag bits ignored (RFC 4271 §4.3)",
            // Flags 0xff: optional, transitive, partial, extended length and the four unused
            // bits; type 99, one octet of value.
            hex: "ffffffffffffffffffffffffffffffff 001c 02 0000 0005 ff63 0001 2a",
            params: CodecParams::default(),
            value: Message::Update(Update {
                attrs: Some(PathAttrs {
                    unknown: vec![RawAttr { flags: 0xe0, code: 99, value: Bytes::from_static(&[0x2a]) }],
                    ..PathAttrs::default()
                }),
                ..Update::default()
            }),
            // Written back with the one-octet length form.
            exact: false,
        },
    ]
}

#[test]
fn vectors_decode_to_their_values_and_back() {
    for v in vectors() {
        if !v.hex.is_empty() {
            let bytes = unhex(v.hex);
            let d = bgp::wire::decode_message(&bytes, &v.params).expect(v.name);
            // Only RFC 6793's ignoring of a stale AS4_PATH may be reported.
            assert!(
                d.attr_errors
                    .iter()
                    .all(|e| e.action == bgp::wire::AttrAction::Discard && e.code == 17),
                "{}",
                v.name
            );
            assert_eq!(d.message.as_ref(), Some(&v.value), "{}", v.name);
            if v.exact {
                assert_eq!(hex(&encode(&v.value, &v.params)), hex(&bytes), "{}", v.name);
            }
        }
        assert_round_trip(&v.value, &v.params);
    }
}

#[test]
fn extended_length_only_when_needed() {
    let v = &vectors()[3];
    let bytes = encode(&v.value, &v.params);
    // Attributes start after the header, withdrawn length (0) and total length.
    let mut rest = &bytes[23..];
    let mut seen = Vec::new();
    while rest.len() > 2 {
        let (flags, code) = (rest[0], rest[1]);
        let (hdr, len) = if flags & 0x10 != 0 {
            (4, usize::from(u16::from_be_bytes([rest[2], rest[3]])))
        } else {
            (3, usize::from(rest[2]))
        };
        seen.push((code, flags));
        rest = &rest[hdr + len..];
    }
    // COMMUNITIES (300 octets) extended; the unknown attribute passed on with Partial.
    assert!(seen.contains(&(8, 0xd0)), "{seen:?}");
    assert!(seen.contains(&(99, 0xe0)), "{seen:?}");
    assert!(
        seen.iter()
            .filter(|(c, _)| *c != 8)
            .all(|(_, f)| f & 0x10 == 0),
        "{seen:?}"
    );
}

#[test]
fn notification_accessors_on_decoded_bytes() {
    let m = decode_ok(
        &unhex("ffffffffffffffffffffffffffffffff 0021 03 06 02 0b 6d61696e74656e616e6365"),
        &CodecParams::default(),
    );
    let Message::Notification(n) = m else {
        panic!("not a notification")
    };
    assert_eq!(n.cease_subcode(), Some(CeaseSubcode::AdminShutdown));
    assert_eq!(
        n.to_string(),
        "Cease / Administrative Shutdown: \"maintenance\""
    );
    // A length octet beyond the data is tolerated (RFC 9003 §4).
    let m = decode_ok(
        &unhex("ffffffffffffffffffffffffffffffff 0018 03 06 04 ff 6869"),
        &CodecParams::default(),
    );
    let Message::Notification(n) = m else {
        panic!("not a notification")
    };
    assert_eq!(n.shutdown_communication().as_deref(), Some("hi"));
}
