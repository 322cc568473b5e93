//! Table tests of the decisions in `desired.rs`.

use std::sync::Arc;

use bgp::rib::{PeerId, SelectedPath};
use bgp::wire::attr::{NextHop as BgpNextHop, PathAttrs};
use ipam::model::{PoolName, Selector};

use super::*;
use crate::node::dataplane::NextHop;
use crate::resources::bgp_configuration::{CidrBlock, NamedCommunity, PrefixAdvertisement};
use crate::resources::bgp_filter::{BGPFilterRule, PrefixLength};
use crate::resources::common::PeerAddress;
use crate::resources::serval_node::NodeBgpSpec;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node(v4: Option<&str>, v6: Option<&str>, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec: ServalNodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: v4.map(net),
                ipv6_address: v6.map(net),
                ..NodeBgpSpec::default()
            }),
            ..ServalNodeSpec::default()
        },
    }
}

fn pool(cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IpPool {
    let mut p = IpPool::new(
        PoolName::new(format!("p-{}", cidr.replace(['.', '/', ':'], "-"))).unwrap(),
        net(cidr),
    );
    p.ipip_mode = ipip;
    p.vxlan_mode = vxlan;
    p
}

/// Three nodes: n1 and n2 on 192.0.2.0/24, n3 on 198.51.100.0/24; this node is n1.
fn three_nodes() -> Snapshot {
    let mut s = Snapshot {
        node: "n1".into(),
        router_id: Some("192.0.2.1".parse().unwrap()),
        local_subnets: vec![net("192.0.2.1/24"), net("2001:db8::1/64")],
        ..Snapshot::default()
    };
    s.nodes.insert(
        "n1".into(),
        node(
            Some("192.0.2.1/24"),
            Some("2001:db8::1/64"),
            &[("rack", "a")],
        ),
    );
    s.nodes.insert(
        "n2".into(),
        node(
            Some("192.0.2.2/24"),
            Some("2001:db8::2/64"),
            &[("rack", "a")],
        ),
    );
    s.nodes.insert(
        "n3".into(),
        node(Some("198.51.100.3/24"), None, &[("rack", "b")]),
    );
    s
}

fn peer_ip(p: &str, asn: u32) -> BGPPeerSpec {
    BGPPeerSpec {
        peer_ip: Some(p.parse::<PeerAddress>().unwrap()),
        as_number: Some(asn),
        ..BGPPeerSpec::default()
    }
}

fn sel(s: &str) -> Option<Selector> {
    Some(Selector::parse(s).unwrap())
}

fn peer_table(d: &Desired) -> Vec<(String, PeerType, Option<String>)> {
    d.peers
        .iter()
        .map(|(a, p)| (a.to_string(), d.peer_types[a], p.name.clone()))
        .collect()
}

#[test]
fn peers_table() {
    type Case = (
        &'static str,
        fn(&mut Snapshot),
        Vec<(&'static str, PeerType)>,
    );
    let cases: Vec<Case> = vec![
        (
            "mesh on by default: every other node in each family both have",
            |_| {},
            vec![
                ("192.0.2.2", PeerType::Mesh),
                ("198.51.100.3", PeerType::Mesh),
                ("2001:db8::2", PeerType::Mesh),
            ],
        ),
        (
            "mesh off",
            |s| s.config.node_to_node_mesh_enabled = Some(false),
            vec![],
        ),
        (
            "global peer plus mesh",
            |s| {
                s.peers.insert("tor".into(), peer_ip("192.0.2.254", 65000));
            },
            vec![
                ("192.0.2.2", PeerType::Mesh),
                ("192.0.2.254", PeerType::Global),
                ("198.51.100.3", PeerType::Mesh),
                ("2001:db8::2", PeerType::Mesh),
            ],
        ),
        (
            "per-node peers: node = me applies, node = other does not",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                let mut mine = peer_ip("192.0.2.254", 65000);
                mine.node = Some("n1".into());
                let mut theirs = peer_ip("192.0.2.253", 65000);
                theirs.node = Some("n2".into());
                s.peers.insert("mine".into(), mine);
                s.peers.insert("theirs".into(), theirs);
            },
            vec![("192.0.2.254", PeerType::NodeSpecific)],
        ),
        (
            "node selectors match my labels or not",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                let mut a = peer_ip("192.0.2.250", 65000);
                a.node_selector = sel("rack == 'a'");
                let mut b = peer_ip("192.0.2.251", 65000);
                b.node_selector = sel("rack == 'b'");
                let mut all = peer_ip("2001:db8::fe", 65000);
                all.node_selector = sel("all()");
                s.peers.insert("rack-a".into(), a);
                s.peers.insert("rack-b".into(), b);
                s.peers.insert("everyone".into(), all);
            },
            vec![
                ("192.0.2.250", PeerType::NodeSpecific),
                ("2001:db8::fe", PeerType::NodeSpecific),
            ],
        ),
        (
            "a peer at my own address is skipped",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                s.peers.insert("self".into(), peer_ip("192.0.2.1", 65000));
            },
            vec![],
        ),
        (
            "explicit peering wins over the mesh at the same address",
            |s| {
                s.peers
                    .insert("n2-ebgp".into(), peer_ip("192.0.2.2", 65002));
            },
            vec![
                ("192.0.2.2", PeerType::Global),
                ("198.51.100.3", PeerType::Mesh),
                ("2001:db8::2", PeerType::Mesh),
            ],
        ),
        (
            "route reflector: peerSelector picks clients",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                let me = s.nodes.get_mut("n1").unwrap();
                me.labels.insert("rr".into(), "true".into());
                me.spec.bgp.as_mut().unwrap().route_reflector_cluster_id =
                    Some("224.0.0.1".parse().unwrap());
                s.peers.insert(
                    "rr-to-clients".into(),
                    BGPPeerSpec {
                        node_selector: sel("has(rr)"),
                        peer_selector: sel("!has(rr)"),
                        ..BGPPeerSpec::default()
                    },
                );
                s.peers.insert(
                    "clients-to-rr".into(),
                    BGPPeerSpec {
                        node_selector: sel("!has(rr)"),
                        peer_selector: sel("has(rr)"),
                        ..BGPPeerSpec::default()
                    },
                );
            },
            vec![
                ("192.0.2.2", PeerType::RrClient),
                ("198.51.100.3", PeerType::RrClient),
                ("2001:db8::2", PeerType::RrClient),
            ],
        ),
    ];
    for (what, setup, want) in cases {
        let mut s = three_nodes();
        setup(&mut s);
        let d = desired(&s);
        let got: Vec<(String, PeerType)> =
            peer_table(&d).into_iter().map(|(a, t, _)| (a, t)).collect();
        let want: Vec<(String, PeerType)> =
            want.into_iter().map(|(a, t)| (a.to_string(), t)).collect();
        assert_eq!(got, want, "{what}");
        assert!(d.problems.is_empty(), "{what}: {:?}", d.problems);
    }
}

#[test]
fn route_reflector_client_side_and_cluster_id() {
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    let rr = s.nodes.get_mut("n3").unwrap();
    rr.labels.insert("rr".into(), "true".into());
    rr.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("224.0.0.1".parse().unwrap());
    s.peers.insert(
        "clients-to-rr".into(),
        BGPPeerSpec {
            node_selector: sel("!has(rr)"),
            peer_selector: sel("has(rr)"),
            ..BGPPeerSpec::default()
        },
    );
    let d = desired(&s);
    assert_eq!(d.cluster_id, None, "a client is no reflector");
    let p = &d.peers[&ip("198.51.100.3")];
    assert!(!p.route_reflector_client);
    assert_eq!(d.peer_types[&ip("198.51.100.3")], PeerType::NodePeer);
    assert_eq!(d.peers.len(), 1);

    // On the reflector: its cluster id is set and n1, n2 are its clients.
    s.node = "n3".into();
    let d = desired(&s);
    assert_eq!(d.cluster_id, Some("224.0.0.1".parse().unwrap()));
}

#[test]
fn mesh_sessions_per_family_with_source_and_password() {
    let mut s = three_nodes();
    s.config.node_mesh_password = Some(BgpPassword {
        value: Some("m3sh".into()),
        ..BgpPassword::default()
    });
    s.config.listen_port = Some(1790);
    let d = desired(&s);
    let v4 = &d.peers[&ip("192.0.2.2")];
    assert_eq!(v4.families, vec![Family::Ipv4Unicast]);
    assert_eq!(v4.source_address, Some(ip("192.0.2.1")));
    assert_eq!(v4.password.as_deref(), Some("m3sh"));
    assert_eq!(v4.port, 1790);
    assert_eq!(v4.asn, Asn(DEFAULT_AS));
    assert_eq!(v4.name.as_deref(), Some("n2"));
    let v6 = &d.peers[&ip("2001:db8::2")];
    assert_eq!(v6.families, vec![Family::Ipv6Unicast]);
    assert_eq!(v6.source_address, Some(ip("2001:db8::1")));
    assert_eq!(d.listen_port, 1790);
    // A silent node is gone: its routes go with the hold timer. The restart time is the
    // speaker's default until the BGPConfiguration sets one.
    assert!(!v4.graceful_on_hold_expiry);
    assert_eq!(v4.restart_time, None);
    s.config.node_mesh_max_restart_time = Some("45s".parse().unwrap());
    let d = desired(&s);
    assert_eq!(d.peers[&ip("192.0.2.2")].restart_time, Some(45));
    assert_eq!(d.peers[&ip("2001:db8::2")].restart_time, Some(45));
}

/// GTSM between nodes on one L2 subnet, decided the same way on both ends from the
/// addresses both publish; off across subnets and where the masks disagree.
#[test]
fn mesh_sessions_on_a_shared_subnet_use_gtsm_on_both_ends() {
    let view = |s: &Snapshot, me: &str| {
        let mut s = s.clone();
        s.node = me.into();
        desired(&s)
    };
    let gtsm = |d: &Desired, to: &str| d.peers[&ip(to)].ttl_security;
    let s = three_nodes();
    let n1 = view(&s, "n1");
    let n2 = view(&s, "n2");
    let n3 = view(&s, "n3");
    assert_eq!(gtsm(&n1, "192.0.2.2"), Some(1));
    assert_eq!(gtsm(&n2, "192.0.2.1"), Some(1));
    assert_eq!(gtsm(&n1, "2001:db8::2"), Some(1));
    assert_eq!(gtsm(&n2, "2001:db8::1"), Some(1));
    assert_eq!(n1.peers[&ip("192.0.2.2")].multihop, None);
    // Across subnets: routed, so no GTSM on either end.
    assert_eq!(gtsm(&n1, "198.51.100.3"), None);
    assert_eq!(gtsm(&n3, "192.0.2.1"), None);

    // n2 publishes a /25 that does not hold n1: n2 routes to n1, so neither end uses
    // GTSM, although n1's /24 holds n2.
    let mut asym = three_nodes();
    asym.nodes
        .insert("n2".into(), node(Some("192.0.2.200/25"), None, &[]));
    assert_eq!(gtsm(&view(&asym, "n1"), "192.0.2.200"), None);
    assert_eq!(gtsm(&view(&asym, "n2"), "192.0.2.1"), None);
    // A host address says nothing of a shared link.
    let mut host = three_nodes();
    host.nodes
        .insert("n2".into(), node(Some("192.0.2.2/32"), None, &[]));
    assert_eq!(gtsm(&view(&host, "n1"), "192.0.2.2"), None);
    assert_eq!(gtsm(&view(&host, "n2"), "192.0.2.1"), None);

    // An explicit BGPPeer at a node's address keeps its own setting, set or not.
    for (set, want) in [(Some(3), Some(3)), (None, None)] {
        let mut s = three_nodes();
        let mut p = peer_ip("192.0.2.2", DEFAULT_AS);
        p.ttl_security = set;
        s.peers.insert("n2-explicit".into(), p);
        assert_eq!(
            gtsm(&view(&s, "n1"), "192.0.2.2"),
            want,
            "ttlSecurity {set:?}"
        );
    }
    // Node-to-node sessions from a peerSelector: on by default on a shared subnet, and
    // the BGPPeer's ttlSecurity where it sets one.
    for (set, want) in [(None, Some(1)), (Some(2), Some(2))] {
        let mut s = three_nodes();
        s.config.node_to_node_mesh_enabled = Some(false);
        s.peers.insert(
            "all-nodes".into(),
            BGPPeerSpec {
                peer_selector: sel("all()"),
                ttl_security: set,
                ..BGPPeerSpec::default()
            },
        );
        let n1 = view(&s, "n1");
        assert_eq!(gtsm(&n1, "192.0.2.2"), want, "ttlSecurity {set:?}");
        assert_eq!(gtsm(&n1, "198.51.100.3"), set, "ttlSecurity {set:?}");
        assert_eq!(
            gtsm(&view(&s, "n2"), "192.0.2.1"),
            want,
            "ttlSecurity {set:?}"
        );
    }
}

#[test]
fn restart_time_and_hold_expiry_per_kind_of_peer() {
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    let mut tor = peer_ip("192.0.2.254", 65000);
    tor.max_restart_time = Some("30s".parse().unwrap());
    s.peers.insert("tor".into(), tor);
    let mut nodes = BGPPeerSpec {
        peer_selector: sel("all()"),
        max_restart_time: Some("2m".parse().unwrap()),
        ..BGPPeerSpec::default()
    };
    nodes.keep_alive_time = Some("3s".parse().unwrap());
    s.peers.insert("nodes".into(), nodes);
    let d = desired(&s);
    let t = &d.peers[&ip("192.0.2.254")];
    assert_eq!(t.restart_time, Some(30));
    assert!(
        t.graceful_on_hold_expiry,
        "a router keeps RFC 8538's behaviour"
    );
    let n = &d.peers[&ip("192.0.2.2")];
    assert_eq!(n.restart_time, Some(120));
    assert!(!n.graceful_on_hold_expiry, "a node peer is a cluster node");
}

#[test]
fn peer_settings_follow_the_resource() {
    let mut s = three_nodes();
    s.config.as_number = Some(64600);
    s.password_files
        .insert("/etc/serval/tor.pw".into(), "from-file".into());
    let mut p = peer_ip("[2001:db8::fe]:1790", 65000);
    p.keep_original_next_hop = true;
    p.ttl_security = Some(1);
    p.num_allowed_local_as_numbers = Some(2);
    p.keep_alive_time = Some("10s".parse().unwrap());
    p.password = Some(BgpPassword {
        file: Some("/etc/serval/tor.pw".into()),
        ..BgpPassword::default()
    });
    s.peers.insert("tor".into(), p);
    let mut none = peer_ip("192.0.2.254", 65000);
    none.source_address = Some(SourceAddress::None);
    none.reachable_by = Some(ip("192.0.2.253"));
    s.peers.insert("far".into(), none);
    let d = desired(&s);
    assert_eq!(d.asn, Asn(64600));
    let t = &d.peers[&ip("2001:db8::fe")];
    assert_eq!(t.port, 1790);
    assert_eq!(t.next_hop, NextHopMode::KeepOriginal);
    assert_eq!(t.ttl_security, Some(1));
    assert_eq!(t.allowas_in, 2);
    assert_eq!((t.keepalive, t.hold_time), (Some(10), Some(30)));
    assert_eq!(t.password.as_deref(), Some("from-file"));
    assert_eq!(
        t.source_address,
        Some(ip("2001:db8::1")),
        "UseNodeIP by default"
    );
    let f = &d.peers[&ip("192.0.2.254")];
    assert_eq!(f.source_address, None);
    assert_eq!(f.multihop, Some(2), "eBGP through a gateway");
    assert_eq!(
        d.static_routes[&net("192.0.2.254/32")],
        RouteTarget::direct(ip("192.0.2.253"))
    );
}

/// `nextHopMode` and `localASNumber` reach the speaker's peer settings; the local AS
/// also decides whether a peer behind a gateway is eBGP (multihop).
#[test]
fn next_hop_mode_and_local_as_per_peer() {
    use crate::resources::bgp_peer::NextHopMode as Mode;
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    for (addr, mode) in [
        ("192.0.2.250", None),
        ("192.0.2.251", Some(Mode::Auto)),
        ("192.0.2.252", Some(Mode::SelfAlways)),
        ("192.0.2.253", Some(Mode::Keep)),
    ] {
        let mut p = peer_ip(addr, 65000);
        p.next_hop_mode = mode;
        s.peers.insert(addr.into(), p);
    }
    let mut local = peer_ip("192.0.2.254", 65000);
    local.local_as_number = Some(65000);
    local.reachable_by = Some(ip("192.0.2.249"));
    s.peers.insert("ibgp-by-local-as".into(), local);
    let d = desired(&s);
    let nh = |a: &str| d.peers[&ip(a)].next_hop;
    assert_eq!(nh("192.0.2.250"), NextHopMode::Auto);
    assert_eq!(nh("192.0.2.251"), NextHopMode::Auto);
    assert_eq!(nh("192.0.2.252"), NextHopMode::SelfAlways);
    assert_eq!(nh("192.0.2.253"), NextHopMode::KeepOriginal);
    assert_eq!(d.peers[&ip("192.0.2.250")].local_asn, None);
    let l = &d.peers[&ip("192.0.2.254")];
    assert_eq!(l.local_asn, Some(Asn(65000)));
    assert_eq!(l.multihop, None, "iBGP with the local AS: no eBGP multihop");
}

/// `reversePeering`: by default the nodes a `peerSelector` selects peer back with the
/// nodes the BGPPeer applies to; `Manual` leaves them without.
#[test]
fn reverse_peering_auto_and_manual() {
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    let rr = s.nodes.get_mut("n3").unwrap();
    rr.labels.insert("rr".into(), "true".into());
    rr.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("224.0.0.1".parse().unwrap());
    s.peers.insert(
        "clients-to-rr".into(),
        BGPPeerSpec {
            node_selector: sel("!has(rr)"),
            peer_selector: sel("has(rr)"),
            next_hop_mode: Some(crate::resources::bgp_peer::NextHopMode::SelfAlways),
            ..BGPPeerSpec::default()
        },
    );
    s.node = "n3".into();
    let d = desired(&s);
    let got: Vec<(String, PeerType)> = peer_table(&d).into_iter().map(|(a, t, _)| (a, t)).collect();
    assert_eq!(
        got,
        [
            ("192.0.2.1".to_string(), PeerType::RrClient),
            ("192.0.2.2".to_string(), PeerType::RrClient)
        ],
        "the reflector peers back with the nodes the BGPPeer applies to"
    );
    assert_eq!(d.peers[&ip("192.0.2.1")].next_hop, NextHopMode::SelfAlways);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    // A node the peerSelector does not select gets no reverse peering.
    s.node = "n1".into();
    assert_eq!(desired(&s).peers.len(), 1);
    s.peers.get_mut("clients-to-rr").unwrap().reverse_peering =
        Some(crate::resources::bgp_peer::ReversePeering::Manual);
    s.node = "n3".into();
    assert!(desired(&s).peers.is_empty(), "Manual: no reverse peering");
}

#[test]
fn unusable_peers_are_reported_not_half_configured() {
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    let mut missing_file = peer_ip("192.0.2.250", 65000);
    missing_file.password = Some(BgpPassword {
        file: Some("/nope".into()),
        ..BgpPassword::default()
    });
    let mut missing_filter = peer_ip("192.0.2.251", 65000);
    missing_filter.filters = vec!["nope".into()];
    let mut secret = peer_ip("192.0.2.252", 65000);
    secret.password = Some(BgpPassword {
        secret_key_ref: Some(crate::resources::common::SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
            optional: None,
        }),
        ..BgpPassword::default()
    });
    s.peers.insert("a".into(), missing_file);
    s.peers.insert("b".into(), missing_filter);
    s.peers.insert("c".into(), secret);
    let d = desired(&s);
    assert!(d.peers.is_empty(), "{:?}", d.peers.keys());
    let all = d.problems.join("\n");
    for want in [
        "BGPPeer a",
        "/nope",
        "BGPPeer b",
        "BGPFilter nope",
        "BGPPeer c",
        "kubernetes",
    ] {
        assert!(all.contains(want), "{all} lacks {want}");
    }
}

/// Calico's newer BGPFilter fields: `peerType` picks the rules of the session's type,
/// `interface` rules match nothing (no kernel route source), `source`, `communities`
/// and `asPathPrefix` become conditions, `addCommunity` and `prependASPath` actions; a
/// prepend of another AS is refused with the peering.
#[test]
fn newer_filter_fields_become_conditions_and_actions() {
    use crate::resources::bgp_filter::{
        AddCommunity, CommunityMatch, FilterOperation, FilterPeerType, PrependAsPath, RouteSource,
    };
    let rule = |peer_type, name: &str| BGPFilterRule {
        action: FilterAction::Accept,
        peer_type,
        source: Some(RouteSource::RemotePeers),
        communities: Some(CommunityMatch {
            values: vec!["65001:10".into(), "65001:1:2".into()],
        }),
        as_path_prefix: vec![65001, 65002],
        operations: vec![
            FilterOperation {
                add_community: Some(AddCommunity {
                    value: format!("64512:{}", name.len()),
                }),
                ..FilterOperation::default()
            },
            FilterOperation {
                prepend_as_path: Some(PrependAsPath {
                    prefix: vec![64512, 64512],
                }),
                ..FilterOperation::default()
            },
        ],
        ..BGPFilterRule::default()
    };
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    s.filters.insert(
        "f".into(),
        BGPFilterSpec {
            import_v4: vec![
                rule(Some(FilterPeerType::Ebgp), "e"),
                rule(Some(FilterPeerType::Ibgp), "ii"),
                BGPFilterRule {
                    action: FilterAction::Reject,
                    interface: Some("eth1".into()),
                    ..BGPFilterRule::default()
                },
            ],
            ..BGPFilterSpec::default()
        },
    );
    let mut ebgp = peer_ip("192.0.2.254", 65001);
    ebgp.filters = vec!["f".into()];
    s.peers.insert("ebgp".into(), ebgp);
    let mut ibgp = peer_ip("192.0.2.253", DEFAULT_AS);
    ibgp.filters = vec!["f".into()];
    s.peers.insert("ibgp".into(), ibgp);
    let d = desired(&s);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let import = |a: &str| match &d.peers[&ip(a)].import {
        Some(PolicyRef::Inline(p)) => p.clone(),
        other => panic!("{other:?}"),
    };
    for (peer, tag) in [("192.0.2.254", 1u32), ("192.0.2.253", 2)] {
        let p = import(peer);
        assert_eq!(
            p.rules.len(),
            1,
            "{peer}: one rule of its type, none for eth1"
        );
        let r = &p.rules[0];
        assert_eq!(r.matches.local_origin, Some(false));
        assert_eq!(r.matches.community_all, vec!["65001:10".parse().unwrap()]);
        assert_eq!(
            r.matches.large_community_all,
            vec!["65001:1:2".parse().unwrap()]
        );
        assert_eq!(r.matches.as_path_regex.as_deref(), Some("^65001_65002_"));
        assert_eq!(
            r.then.add_communities,
            vec![format!("64512:{tag}").parse().unwrap()],
            "{peer}"
        );
        assert_eq!(r.then.prepend, 2);
        assert_eq!(r.then.action, Verdict::Accept);
    }
    // The compiled policy means what it says.
    assert!(import("192.0.2.254").compile().is_ok());

    // Prepending another AS is not something serval does: the peering is refused.
    s.filters.get_mut("f").unwrap().import_v4[0].operations[1] = FilterOperation {
        prepend_as_path: Some(PrependAsPath {
            prefix: vec![65099],
        }),
        ..FilterOperation::default()
    };
    let d = desired(&s);
    assert!(!d.peers.contains_key(&ip("192.0.2.254")));
    assert!(
        d.problems.iter().any(|p| p.contains("prependASPath")),
        "{:?}",
        d.problems
    );
}

#[test]
fn filters_become_policies_in_order() {
    let mut s = three_nodes();
    s.filters.insert(
        "pods-only".into(),
        BGPFilterSpec {
            export_v4: vec![
                BGPFilterRule {
                    action: FilterAction::Accept,
                    match_operator: Some(MatchOperator::In),
                    cidr: Some(net("10.65.0.0/16")),
                    prefix_length: Some(PrefixLength {
                        min: Some(26),
                        max: None,
                    }),
                    ..BGPFilterRule::default()
                },
                BGPFilterRule {
                    action: FilterAction::Reject,
                    match_operator: None,
                    cidr: None,
                    prefix_length: None,
                    ..BGPFilterRule::default()
                },
            ],
            import_v6: vec![BGPFilterRule {
                action: FilterAction::Reject,
                match_operator: Some(MatchOperator::Equal),
                cidr: Some(net("::/0")),
                prefix_length: None,
                ..BGPFilterRule::default()
            }],
            ..BGPFilterSpec::default()
        },
    );
    let mut p = peer_ip("192.0.2.254", 65000);
    p.filters = vec!["pods-only".into()];
    s.peers.insert("tor".into(), p);
    let d = desired(&s);
    let t = &d.peers[&ip("192.0.2.254")];
    let Some(PolicyRef::Inline(export)) = &t.export else {
        panic!("{:?}", t.export)
    };
    // The filter's rules come first, then serval's default for an external peer.
    let names: Vec<&str> = export
        .rules
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect();
    assert_eq!(
        names,
        vec![
            "pods-only/exportV4[0]",
            "pods-only/exportV4[1]",
            "serval/not-transit",
            "serval/own-routes",
        ]
    );
    assert_eq!(export.default, Verdict::Reject);
    let entries: Vec<(IpNet, Option<u8>, Option<u8>, Verdict)> = export
        .rules
        .iter()
        .take(2)
        .map(|r| {
            let e = r.matches.prefix[0];
            (e.prefix, e.ge, e.le, r.then.action)
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            (net("10.65.0.0/16"), Some(26), Some(32), Verdict::Accept),
            (net("0.0.0.0/0"), None, Some(32), Verdict::Reject),
        ]
    );
    assert!(export.compile().is_ok());
    let Some(PolicyRef::Inline(import)) = &t.import else {
        panic!()
    };
    assert_eq!(import.rules.len(), 1);
    assert_eq!(import.default, Verdict::Accept);

    let mut unsupported = s.clone();
    unsupported.filters.get_mut("pods-only").unwrap().export_v4[0].match_operator =
        Some(MatchOperator::NotIn);
    let d = desired(&unsupported);
    assert!(!d.peers.contains_key(&ip("192.0.2.254")));
    assert!(d.problems[0].contains("NotIn"), "{:?}", d.problems);
}

#[test]
fn announcements_table() {
    type Case = (&'static str, fn(&mut Snapshot), Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "own blocks of both families",
            |s| {
                s.own_blocks = [net("10.65.0.0/26"), net("fd00:65::/122")].into();
            },
            vec!["10.65.0.0/26", "fd00:65::/122"],
        ),
        (
            "a pool with disableBGPExport is not advertised",
            |s| {
                s.pools[0].disable_bgp_export = true;
                s.own_blocks = [net("10.65.0.0/26"), net("fd00:65::/122")].into();
            },
            vec!["fd00:65::/122"],
        ),
        (
            "a borrowed address is a /32 or /128",
            |s| {
                s.own_blocks = [net("10.65.0.0/26")].into();
                s.borrowed = [ip("10.65.0.70"), ip("fd00:65::1:5"), ip("10.65.0.3")].into();
            },
            vec!["10.65.0.0/26", "10.65.0.70/32", "fd00:65::1:5/128"],
        ),
        (
            "service CIDRs from every node",
            |s| {
                s.config.service_cluster_ips = vec![CidrBlock {
                    cidr: net("10.96.0.0/12"),
                }];
                s.config.service_load_balancer_ips = vec![CidrBlock {
                    cidr: net("203.0.113.0/24"),
                }];
            },
            vec!["10.96.0.0/12", "203.0.113.0/24"],
        ),
    ];
    for (what, setup, want) in cases {
        let mut s = three_nodes();
        s.pools = vec![
            pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never),
            pool("fd00:65::/48", EncapMode::Never, EncapMode::Never),
        ];
        setup(&mut s);
        let d = desired(&s);
        let got: Vec<String> = d.announcements.keys().map(ToString::to_string).collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn communities_per_prefix() {
    let mut s = three_nodes();
    s.pools = vec![pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never)];
    s.own_blocks = [net("10.65.0.0/26"), net("10.65.1.0/26")].into();
    s.config.communities = vec![NamedCommunity {
        name: "pods".into(),
        value: "64512:100".into(),
    }];
    s.config.prefix_advertisements = vec![
        PrefixAdvertisement {
            cidr: net("10.65.0.0/16"),
            communities: vec!["pods".into(), "64512:7:8".into()],
        },
        PrefixAdvertisement {
            cidr: net("10.65.1.0/24"),
            communities: vec!["no-export".into()],
        },
    ];
    let d = desired(&s);
    let show = |p: &str| {
        let a = &d.announcements[&net(p)];
        let mut v: Vec<String> = a.communities.iter().map(ToString::to_string).collect();
        v.extend(a.large_communities.iter().map(ToString::to_string));
        v
    };
    assert_eq!(show("10.65.0.0/26"), vec!["64512:100", "64512:7:8"]);
    assert_eq!(
        show("10.65.1.0/26"),
        vec!["64512:100", "no-export", "64512:7:8"]
    );
}

#[test]
fn nat_and_tunnels() {
    let mut s = three_nodes();
    let mut natted = pool("10.65.0.0/16", EncapMode::CrossSubnet, EncapMode::Never);
    natted.nat_outgoing = true;
    s.pools = vec![
        natted,
        pool("10.66.0.0/16", EncapMode::Never, EncapMode::Always),
        pool("fd00:65::/48", EncapMode::Never, EncapMode::Never),
    ];
    let me = s.nodes.get_mut("n1").unwrap();
    me.spec.ipv4_vxlan_tunnel_addr = Some("10.66.0.1".parse().unwrap());
    let d = desired(&s);
    assert_eq!(
        d.nat,
        vec![
            NatPool {
                cidr: net("10.65.0.0/16"),
                nat_outgoing: true
            },
            NatPool {
                cidr: net("10.66.0.0/16"),
                nat_outgoing: false
            },
            NatPool {
                cidr: net("fd00:65::/48"),
                nat_outgoing: false
            },
        ]
    );
    let ipip = d.tunnels.ipip.unwrap();
    assert_eq!(ipip.requested_by, "p-10-65-0-0-16");
    assert_eq!(ipip.address, None, "not allocated yet");
    let vx = d.tunnels.vxlan_v4.unwrap();
    assert_eq!(vx.address, Some(ip("10.66.0.1")));
    assert_eq!(vx.mac, Some(Mac::vtep("n1", false)));
    assert!(d.tunnels.vxlan_v6.is_none());
}

fn best(hops: &[&str]) -> BestRoute {
    BestRoute {
        paths: hops
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let nh = match ip(h) {
                    IpAddr::V4(a) => BgpNextHop::V4(a),
                    IpAddr::V6(a) => BgpNextHop::V6 {
                        global: a,
                        link_local: None,
                    },
                };
                SelectedPath {
                    peer: PeerId(i as u32 + 1),
                    peer_address: Some(ip(h)),
                    path_id: 0,
                    attrs: Arc::new(PathAttrs {
                        next_hop: Some(nh),
                        ..PathAttrs::default()
                    }),
                }
            })
            .collect(),
    }
}

#[test]
fn route_for_table() {
    use EncapMode::{Always, CrossSubnet, Never};
    let vtep2 = VxlanPeer {
        vtep_addr: ip("10.65.9.2"),
        vtep_mac: Mac::vtep("n2", false),
        node_addr: ip("192.0.2.2"),
    };
    let vtep3 = VxlanPeer {
        vtep_addr: ip("10.65.9.3"),
        vtep_mac: Mac([2, 0, 0, 0, 0, 3]),
        node_addr: ip("198.51.100.3"),
    };
    let v6vtep = VxlanPeer {
        vtep_addr: ip("fd00:65::9:2"),
        vtep_mac: Mac::vtep("n2", true),
        node_addr: ip("2001:db8::2"),
    };
    let direct = |g: &str| {
        Some(RouteTarget::Unicast(NextHop::Direct {
            gateway: ip(g),
            dev: None,
        }))
    };
    let ipip = |g: &str| Some(RouteTarget::ipip(g.parse().unwrap()));
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        EncapMode,
        EncapMode,
        &str,
        Vec<&str>,
        Option<RouteTarget>,
    )> = vec![
        (
            "same subnet, no encapsulation",
            Never,
            Never,
            "10.65.1.0/26",
            vec!["192.0.2.2"],
            direct("192.0.2.2"),
        ),
        (
            "IPIP Always on the same subnet",
            Always,
            Never,
            "10.65.1.0/26",
            vec!["192.0.2.2"],
            ipip("192.0.2.2"),
        ),
        (
            "IPIP CrossSubnet on the same subnet",
            CrossSubnet,
            Never,
            "10.65.1.0/26",
            vec!["192.0.2.2"],
            direct("192.0.2.2"),
        ),
        (
            "IPIP CrossSubnet across subnets",
            CrossSubnet,
            Never,
            "10.65.3.0/26",
            vec!["198.51.100.3"],
            ipip("198.51.100.3"),
        ),
        (
            "IPIP Always across subnets",
            Always,
            Never,
            "10.65.3.0/26",
            vec!["198.51.100.3"],
            ipip("198.51.100.3"),
        ),
        (
            "VXLAN Always on the same subnet",
            Never,
            Always,
            "10.65.1.0/26",
            vec!["192.0.2.2"],
            Some(RouteTarget::vxlan(vtep2)),
        ),
        (
            "VXLAN CrossSubnet on the same subnet",
            Never,
            CrossSubnet,
            "10.65.1.0/26",
            vec!["192.0.2.2"],
            direct("192.0.2.2"),
        ),
        (
            "VXLAN CrossSubnet across subnets, VTEP MAC from the node",
            Never,
            CrossSubnet,
            "10.65.3.0/26",
            vec!["198.51.100.3"],
            Some(RouteTarget::vxlan(vtep3)),
        ),
        (
            "VXLAN IPv6 with the node's IPv6 VTEP",
            Never,
            Always,
            "fd00:65::40/122",
            vec!["2001:db8::2"],
            Some(RouteTarget::vxlan(v6vtep)),
        ),
        (
            "IPv6 without encapsulation",
            Never,
            Never,
            "fd00:65::40/122",
            vec!["2001:db8::2"],
            direct("2001:db8::2"),
        ),
        (
            "IPIP never for IPv6 prefixes",
            Always,
            Never,
            "fd00:65::40/122",
            vec!["2001:db8::2"],
            direct("2001:db8::2"),
        ),
        (
            "ECMP over two nodes",
            Never,
            Never,
            "10.65.1.0/26",
            vec!["192.0.2.2", "192.0.2.5"],
            Some(RouteTarget::Multipath(
                [
                    NextHop::Direct {
                        gateway: ip("192.0.2.2"),
                        dev: None,
                    },
                    NextHop::Direct {
                        gateway: ip("192.0.2.5"),
                        dev: None,
                    },
                ]
                .into(),
            )),
        ),
        (
            "ECMP through IPIP",
            Always,
            Never,
            "10.65.1.0/26",
            vec!["192.0.2.2", "198.51.100.3"],
            Some(RouteTarget::Multipath(
                [
                    NextHop::Ipip {
                        gateway: "192.0.2.2".parse().unwrap(),
                    },
                    NextHop::Ipip {
                        gateway: "198.51.100.3".parse().unwrap(),
                    },
                ]
                .into(),
            )),
        ),
        (
            "outside every pool: the ToR's business",
            Never,
            Never,
            "203.0.113.0/24",
            vec!["192.0.2.2"],
            None,
        ),
        (
            "VXLAN to a node without VTEP across subnets: no usable hop",
            Never,
            Always,
            "10.65.3.0/26",
            vec!["198.51.100.9"],
            None,
        ),
        (
            "my own block: blackholed elsewhere",
            Never,
            Never,
            "10.65.0.0/26",
            vec!["192.0.2.2"],
            None,
        ),
    ];
    for (what, ipip_mode, vxlan_mode, prefix, hops, want) in cases {
        let mut s = three_nodes();
        let mut v4 = pool("10.65.0.0/16", ipip_mode, vxlan_mode);
        let mut v6 = pool("fd00:65::/48", EncapMode::Never, vxlan_mode);
        if vxlan_mode != EncapMode::Never {
            v4.ipip_mode = EncapMode::Never;
            v6.ipip_mode = EncapMode::Never;
        }
        if ipip_mode != EncapMode::Never {
            v6.ipip_mode = ipip_mode;
        }
        s.pools = vec![v4, v6];
        s.own_blocks = [net("10.65.0.0/26")].into();
        let n2 = s.nodes.get_mut("n2").unwrap();
        n2.spec.ipv4_vxlan_tunnel_addr = Some("10.65.9.2".parse().unwrap());
        n2.spec.ipv6_vxlan_tunnel_addr = Some("fd00:65::9:2".parse().unwrap());
        let n3 = s.nodes.get_mut("n3").unwrap();
        n3.spec.ipv4_vxlan_tunnel_addr = Some("10.65.9.3".parse().unwrap());
        n3.spec.vxlan_tunnel_mac_addr =
            Some(crate::resources::common::MacAddr(Mac([2, 0, 0, 0, 0, 3])));
        let got = route_for(&net(prefix), &best(&hops), &s);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn local_routes_are_not_programmed() {
    let mut s = three_nodes();
    s.pools = vec![pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never)];
    let mut b = best(&["192.0.2.2"]);
    b.paths[0].peer = PeerId::LOCAL;
    assert_eq!(route_for(&net("10.65.1.0/26"), &b, &s), None);
}

#[test]
fn routes_and_diffs() {
    let mut s = three_nodes();
    s.pools = vec![pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never)];
    s.own_blocks = [net("10.65.0.0/26")].into();
    let d = desired(&s);
    let learned: BTreeMap<IpNet, BestRoute> = [
        (net("10.65.1.0/26"), best(&["192.0.2.2"])),
        (net("10.65.0.0/26"), best(&["192.0.2.2"])),
        (net("0.0.0.0/0"), best(&["192.0.2.254"])),
    ]
    .into();
    let r = routes(&d, &learned, &s);
    assert_eq!(
        r.routes,
        [
            (net("10.65.0.0/26"), RouteTarget::Blackhole),
            (net("10.65.1.0/26"), RouteTarget::direct(ip("192.0.2.2"))),
        ]
        .into()
    );
    let mut later = r.clone();
    later.routes.remove(&net("10.65.1.0/26"));
    later
        .routes
        .insert(net("10.65.2.0/26"), RouteTarget::direct(ip("192.0.2.2")));
    later
        .routes
        .insert(net("10.65.0.0/26"), RouteTarget::direct(ip("192.0.2.9")));
    let diff = route_diff(&r, &later);
    assert_eq!(diff.withdraw, [net("10.65.1.0/26")].into());
    assert_eq!(
        diff.upsert.keys().copied().collect::<Vec<_>>(),
        vec![net("10.65.0.0/26"), net("10.65.2.0/26")]
    );
    assert_eq!(route_diff(&r, &r), dataplane::RouteDiff::default());
}

#[test]
fn one_side_of_each_node_pair_connects() {
    // n1 is 192.0.2.1: it connects to n2 and n3 (higher addresses) and waits for none.
    let d = desired(&three_nodes());
    for (addr, passive) in [
        ("192.0.2.2", false),
        ("2001:db8::2", false),
        ("198.51.100.3", false),
    ] {
        assert_eq!(d.peers[&ip(addr)].passive, passive, "{addr}");
    }
    let mut s = three_nodes();
    s.node = "n2".into();
    let d = desired(&s);
    assert!(d.peers[&ip("192.0.2.1")].passive, "n2 waits for n1");
    assert!(
        d.peers[&ip("2001:db8::1")].passive,
        "n2 waits for n1 over IPv6"
    );
    assert!(!d.peers[&ip("198.51.100.3")].passive, "n2 connects to n3");
    // The dialling side tries again a second after a refused connection (agents start
    // together), on mesh and peerSelector sessions alike.
    assert_eq!(d.peers[&ip("198.51.100.3")].connect_retry, Some(1));
    // Explicit BGPPeers (a ToR) are always dialled, at the speaker's ConnectRetry.
    s.peers.insert("tor".into(), peer_ip("10.0.0.1", 65000));
    let d = desired(&s);
    assert!(!d.peers[&ip("10.0.0.1")].passive);
    assert_eq!(d.peers[&ip("10.0.0.1")].connect_retry, None);
    s.config.node_to_node_mesh_enabled = Some(false);
    s.peers.insert(
        "nodes".into(),
        BGPPeerSpec {
            peer_selector: sel("all()"),
            ..BGPPeerSpec::default()
        },
    );
    let d = desired(&s);
    assert_eq!(d.peers[&ip("198.51.100.3")].connect_retry, Some(1));
}

/// A selection of paths, each (learned from, next hop).
fn best_from(paths: &[(&str, &str)]) -> BestRoute {
    let mut b = best(&paths.iter().map(|(_, nh)| *nh).collect::<Vec<_>>());
    for (p, (from, _)) in b.paths.iter_mut().zip(paths) {
        p.peer_address = Some(ip(from));
    }
    b
}

/// n1 with a pool, a pool that is not exported, a ToR (global BGPPeer), an upstream
/// (BGPPeer for n1), a BGPPeer of another node and a route reflector peering by
/// selector.
fn with_external_peers() -> Snapshot {
    let mut s = three_nodes();
    let mut quiet = pool("10.66.0.0/16", EncapMode::Never, EncapMode::Never);
    quiet.disable_bgp_export = true;
    s.pools = vec![
        pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never),
        quiet,
        pool("fd00:65::/48", EncapMode::Never, EncapMode::Never),
    ];
    s.own_blocks = [net("10.65.0.0/26")].into();
    s.peers.insert("tor".into(), peer_ip("192.0.2.254", 65000));
    s.peers
        .insert("tor-v6".into(), peer_ip("2001:db8::fe", 65000));
    let mut upstream = peer_ip("192.0.2.253", 65100);
    upstream.node = Some("n1".into());
    s.peers.insert("upstream".into(), upstream);
    let mut other = peer_ip("192.0.2.252", 65200);
    other.node = Some("n2".into());
    s.peers.insert("n2-only".into(), other);
    let mut rr = BGPPeerSpec {
        peer_selector: sel("rack == 'b'"),
        ..BGPPeerSpec::default()
    };
    rr.node_selector = sel("rack == 'a'");
    s.peers.insert("to-rack-b".into(), rr);
    s
}

fn export_of(d: &Desired, peer: &str) -> bgp::policy::CompiledPolicy {
    match &d.peers[&ip(peer)].export {
        Some(PolicyRef::Inline(p)) => p.compile().unwrap(),
        None => bgp::policy::CompiledPolicy::default(),
        Some(other) => panic!("{other:?}"),
    }
}

#[test]
fn default_export_keeps_a_node_from_being_a_transit_router() {
    let s = with_external_peers();
    let d = desired(&s);
    assert_eq!(d.peer_types[&ip("192.0.2.254")], PeerType::Global);
    assert_eq!(d.peer_types[&ip("192.0.2.253")], PeerType::NodeSpecific);
    assert_eq!(d.peer_types[&ip("192.0.2.2")], PeerType::Mesh);
    assert_eq!(d.peer_types[&ip("198.51.100.3")], PeerType::NodePeer);
    assert!(!d.peers.contains_key(&ip("192.0.2.252")));
    const LOCAL: Option<&str> = None;
    // (sent to, prefix, learned from, exported)
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        // To external peers: own routes and pool routes of serval nodes only.
        ("192.0.2.254", "10.65.0.0/26", LOCAL, true),
        ("192.0.2.254", "10.96.0.0/12", LOCAL, true),
        ("192.0.2.254", "10.65.1.0/26", Some("192.0.2.2"), true),
        ("192.0.2.254", "10.65.3.7/32", Some("198.51.100.3"), true),
        ("192.0.2.254", "203.0.113.0/24", Some("192.0.2.253"), false),
        ("192.0.2.254", "0.0.0.0/0", Some("192.0.2.253"), false),
        ("192.0.2.254", "10.65.7.0/26", Some("192.0.2.253"), false),
        ("192.0.2.254", "10.65.7.0/26", Some("2001:db8::fe"), false),
        ("192.0.2.254", "203.0.113.0/24", Some("192.0.2.2"), false),
        ("192.0.2.254", "10.66.1.0/26", Some("192.0.2.2"), false),
        ("192.0.2.253", "203.0.113.0/24", Some("192.0.2.254"), false),
        ("192.0.2.253", "10.65.0.0/26", LOCAL, true),
        ("2001:db8::fe", "fd00:65::40/122", Some("2001:db8::2"), true),
        (
            "2001:db8::fe",
            "2001:db8:9::/48",
            Some("192.0.2.254"),
            false,
        ),
        // To serval nodes: everything but what external peers sent.
        ("192.0.2.2", "10.65.0.0/26", LOCAL, true),
        ("192.0.2.2", "203.0.113.0/24", Some("198.51.100.3"), true),
        ("192.0.2.2", "203.0.113.0/24", Some("192.0.2.254"), false),
        ("192.0.2.2", "10.65.7.0/26", Some("192.0.2.253"), false),
        ("198.51.100.3", "10.65.1.0/26", Some("192.0.2.2"), true),
        ("198.51.100.3", "0.0.0.0/0", Some("192.0.2.254"), false),
        // A peer of another node is not an external peer of this one.
        ("192.0.2.2", "10.65.8.0/26", Some("192.0.2.252"), true),
    ];
    let attrs = PathAttrs::default();
    for (to, prefix, from, want) in cases {
        let p = export_of(&d, to);
        let o = p.evaluate(&bgp::policy::RouteCtx {
            prefix: net(prefix),
            attrs: &attrs,
            peer_address: Some(ip(to)),
            learned_from: from.map(ip),
        });
        assert_eq!(o.accepted(), *want, "{prefix} from {from:?} to {to}");
    }
}

#[test]
fn filter_rules_come_before_the_default_export() {
    let mut s = with_external_peers();
    s.filters.insert(
        "transit".into(),
        BGPFilterSpec {
            export_v4: vec![
                BGPFilterRule {
                    action: FilterAction::Accept,
                    match_operator: Some(MatchOperator::Equal),
                    cidr: Some(net("203.0.113.0/24")),
                    prefix_length: None,
                    ..BGPFilterRule::default()
                },
                BGPFilterRule {
                    action: FilterAction::Reject,
                    match_operator: Some(MatchOperator::In),
                    cidr: Some(net("10.65.0.0/16")),
                    prefix_length: None,
                    ..BGPFilterRule::default()
                },
            ],
            ..BGPFilterSpec::default()
        },
    );
    s.peers.get_mut("tor").unwrap().filters = vec!["transit".into()];
    let d = desired(&s);
    let p = export_of(&d, "192.0.2.254");
    let attrs = PathAttrs::default();
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("203.0.113.0/24", Some("192.0.2.253"), true),
        ("198.51.100.0/24", Some("192.0.2.253"), false),
        ("10.65.0.0/26", None, false),
        ("10.96.0.0/12", None, true),
    ];
    for (prefix, from, want) in cases {
        let o = p.evaluate(&bgp::policy::RouteCtx {
            prefix: net(prefix),
            attrs: &attrs,
            peer_address: Some(ip("192.0.2.254")),
            learned_from: from.map(ip),
        });
        assert_eq!(o.accepted(), *want, "{prefix} from {from:?}");
    }
}

#[test]
fn without_external_peers_the_mesh_exports_everything() {
    let mut s = three_nodes();
    s.pools = vec![pool("10.65.0.0/16", EncapMode::Never, EncapMode::Never)];
    let d = desired(&s);
    assert!(d.peers.values().all(|p| p.export.is_none()));
}

#[test]
fn external_routes_in_the_kernel() {
    let mut s = with_external_peers();
    // A block of a pool since deleted.
    s.own_blocks.insert(net("10.70.0.0/26"));
    let direct = |g: &str| {
        Some(RouteTarget::Unicast(NextHop::Direct {
            gateway: ip(g),
            dev: None,
        }))
    };
    let tor = "192.0.2.254";
    let upstream = "192.0.2.253";
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, &str, Vec<(&str, &str)>, Option<RouteTarget>)> = vec![
        (
            "default route from the ToR",
            "0.0.0.0/0",
            vec![(tor, tor)],
            direct(tor),
        ),
        (
            "a data-centre network",
            "198.18.0.0/15",
            vec![(tor, tor)],
            direct(tor),
        ),
        (
            "a third-party next hop on the subnet",
            "198.18.0.0/15",
            vec![(tor, "192.0.2.250")],
            direct("192.0.2.250"),
        ),
        (
            "a node on another subnet, through the ToR",
            "198.51.100.3/32",
            vec![(tor, tor)],
            direct(tor),
        ),
        (
            "ECMP over two external peers",
            "0.0.0.0/0",
            vec![(tor, tor), (upstream, upstream)],
            Some(RouteTarget::Multipath(
                [
                    NextHop::Direct {
                        gateway: ip(tor),
                        dev: None,
                    },
                    NextHop::Direct {
                        gateway: ip(upstream),
                        dev: None,
                    },
                ]
                .into(),
            )),
        ),
        (
            "IPv6 default route",
            "::/0",
            vec![("2001:db8::fe", "2001:db8::fe")],
            direct("2001:db8::fe"),
        ),
        (
            "learned from a serval node: it originates nothing outside the pools for us",
            "0.0.0.0/0",
            vec![("192.0.2.2", "192.0.2.2")],
            None,
        ),
        (
            "from a peer of another node",
            "0.0.0.0/0",
            vec![("192.0.2.252", "192.0.2.252")],
            None,
        ),
        (
            "inside the node's subnet: reached directly",
            "192.0.2.128/25",
            vec![(tor, tor)],
            None,
        ),
        (
            "a neighbour's address",
            "192.0.2.2/32",
            vec![(tor, tor)],
            None,
        ),
        (
            "inside an own block of a deleted pool",
            "10.70.0.0/28",
            vec![(tor, tor)],
            None,
        ),
        (
            "next hop is this node",
            "0.0.0.0/0",
            vec![(tor, "192.0.2.1")],
            None,
        ),
        (
            "next hop off the node's subnets",
            "0.0.0.0/0",
            vec![(tor, "203.0.113.9")],
            None,
        ),
        (
            "next hop of the other family",
            "0.0.0.0/0",
            vec![(tor, "2001:db8::fe")],
            None,
        ),
        (
            "a pool route whose next hop is this node",
            "10.65.1.0/26",
            vec![(tor, "192.0.2.1")],
            None,
        ),
        (
            "a pool route from a reflecting ToR, as before",
            "10.65.1.0/26",
            vec![(tor, "192.0.2.2")],
            direct("192.0.2.2"),
        ),
    ];
    for (what, prefix, paths, want) in cases {
        assert_eq!(
            route_for(&net(prefix), &best_from(&paths), &s),
            want,
            "{what}"
        );
    }
}

fn bfd(min_rx: u32, min_tx: u32, multiplier: u8, passive: bool) -> Option<PeerBfd> {
    Some(PeerBfd::On(bgp::config::BfdSettings {
        min_rx: Some(min_rx),
        min_tx: Some(min_tx),
        multiplier: Some(multiplier),
        passive: Some(passive),
    }))
}

fn fast_profile() -> BFDProfileSpec {
    BFDProfileSpec {
        receive_interval: Some(100),
        transmit_interval: Some(120),
        detect_multiplier: Some(4),
        ..BFDProfileSpec::default()
    }
}

/// BFD per session: the mesh from `nodeMeshBFDProfile`, BGPPeers from `bfdProfile`,
/// `BFDIfDirectlyConnected` only towards peers on one of this node's subnets, and a
/// missing profile leaves the session up without BFD and says so.
#[test]
fn bfd_per_session_table() {
    type Case = (
        &'static str,
        fn(&mut Snapshot),
        Vec<(&'static str, Option<PeerBfd>)>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "no profile anywhere: no BFD",
            |s| {
                s.peers.insert("tor".into(), peer_ip("192.0.2.254", 65000));
            },
            vec![
                ("192.0.2.2", None),
                ("192.0.2.254", None),
                ("198.51.100.3", None),
                ("2001:db8::2", None),
            ],
            &[],
        ),
        (
            "the mesh's profile on every mesh session, not on a BGPPeer without one",
            |s| {
                s.bfd_profiles.insert("fast".into(), fast_profile());
                s.config.node_mesh_bfd_profile = Some("fast".into());
                s.peers.insert("tor".into(), peer_ip("192.0.2.254", 65000));
            },
            vec![
                ("192.0.2.2", bfd(100, 120, 4, false)),
                ("192.0.2.254", None),
                ("198.51.100.3", bfd(100, 120, 4, false)),
                ("2001:db8::2", bfd(100, 120, 4, false)),
            ],
            &[],
        ),
        (
            "a global BGPPeer's profile, MetalLB's defaults for unset fields",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                s.bfd_profiles.insert(
                    "slow".into(),
                    BFDProfileSpec {
                        passive_mode: Some(true),
                        ..BFDProfileSpec::default()
                    },
                );
                let mut tor = peer_ip("192.0.2.254", 65000);
                tor.bfd_profile = Some("slow".into());
                s.peers.insert("tor".into(), tor);
            },
            vec![("192.0.2.254", bfd(300, 300, 3, true))],
            &[],
        ),
        (
            "BFDIfDirectlyConnected: on towards the connected ToR, off towards the far one",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                let mut near = peer_ip("192.0.2.254", 65000);
                near.failure_detection_mode =
                    Some(crate::resources::bgp_peer::FailureDetectionMode::BFDIfDirectlyConnected);
                let mut far = peer_ip("203.0.113.1", 65000);
                far.failure_detection_mode = near.failure_detection_mode;
                far.node = Some("n1".into());
                s.peers.insert("near".into(), near);
                s.peers.insert("far".into(), far);
            },
            vec![
                ("192.0.2.254", bfd(300, 300, 3, false)),
                ("203.0.113.1", None),
            ],
            &[],
        ),
        (
            "BFDIfDirectlyConnected with a profile takes its timers",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                s.bfd_profiles.insert("fast".into(), fast_profile());
                let mut near = peer_ip("192.0.2.254", 65000);
                near.failure_detection_mode =
                    Some(crate::resources::bgp_peer::FailureDetectionMode::BFDIfDirectlyConnected);
                near.bfd_profile = Some("fast".into());
                s.peers.insert("near".into(), near);
            },
            vec![("192.0.2.254", bfd(100, 120, 4, false))],
            &[],
        ),
        (
            "peerSelector sessions (both ends) take the BGPPeer's profile",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                s.bfd_profiles.insert("fast".into(), fast_profile());
                s.peers.insert(
                    "rack-a".into(),
                    BGPPeerSpec {
                        node_selector: sel("rack == 'a'"),
                        peer_selector: sel("rack == 'a'"),
                        bfd_profile: Some("fast".into()),
                        ..BGPPeerSpec::default()
                    },
                );
            },
            vec![
                ("192.0.2.2", bfd(100, 120, 4, false)),
                ("2001:db8::2", bfd(100, 120, 4, false)),
            ],
            &[],
        ),
        (
            "a missing profile: the sessions run without BFD, one problem per referrer",
            |s| {
                s.config.node_mesh_bfd_profile = Some("gone".into());
                let mut tor = peer_ip("192.0.2.254", 65000);
                tor.bfd_profile = Some("gone".into());
                s.peers.insert("tor".into(), tor);
            },
            vec![
                ("192.0.2.2", None),
                ("192.0.2.254", None),
                ("198.51.100.3", None),
                ("2001:db8::2", None),
            ],
            &[
                "BGPPeer tor: BFDProfile gone does not exist",
                "nodeMeshBFDProfile: BFDProfile gone does not exist",
            ],
        ),
        (
            "a minimumTtl the speaker does not use is reported, BFD still on",
            |s| {
                s.config.node_to_node_mesh_enabled = Some(false);
                let mut p = fast_profile();
                p.minimum_ttl = Some(250);
                s.bfd_profiles.insert("ttl".into(), p);
                let mut tor = peer_ip("192.0.2.254", 65000);
                tor.bfd_profile = Some("ttl".into());
                s.peers.insert("tor".into(), tor);
            },
            vec![("192.0.2.254", bfd(100, 120, 4, false))],
            &["minimumTtl 250 is not applied"],
        ),
    ];
    for (what, setup, want, problems) in cases {
        let mut s = three_nodes();
        setup(&mut s);
        let d = desired(&s);
        let got: Vec<(String, Option<PeerBfd>)> = d
            .peers
            .iter()
            .map(|(a, p)| (a.to_string(), p.bfd))
            .collect();
        let want: Vec<(String, Option<PeerBfd>)> =
            want.into_iter().map(|(a, b)| (a.to_string(), b)).collect();
        assert_eq!(got, want, "{what}");
        let all = d.problems.join("\n");
        assert_eq!(d.problems.len(), problems.len(), "{what}: {all}");
        for p in problems {
            assert!(all.contains(p), "{what}: {all} lacks {p}");
        }
    }
}

/// A minimumTtl equal to what the speaker uses (254 by default, 255 minus the routers
/// ttlSecurity allows) is no problem.
#[test]
fn bfd_minimum_ttl_matching_the_speaker_is_quiet() {
    let mut s = three_nodes();
    s.config.node_to_node_mesh_enabled = Some(false);
    for (name, ttl) in [("d", 254), ("three-hops", 253)] {
        s.bfd_profiles.insert(
            name.into(),
            BFDProfileSpec {
                minimum_ttl: Some(ttl),
                ..BFDProfileSpec::default()
            },
        );
    }
    let mut a = peer_ip("192.0.2.254", 65000);
    a.bfd_profile = Some("d".into());
    let mut b = peer_ip("203.0.113.1", 65000);
    b.bfd_profile = Some("three-hops".into());
    b.ttl_security = Some(3);
    s.peers.insert("a".into(), a);
    s.peers.insert("b".into(), b);
    let d = desired(&s);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert!(d.peers.values().all(|p| p.bfd.is_some()));
}
