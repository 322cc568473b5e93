//! Scenario tests of the whole RIB: import, decision, export, restart, queries.

use super::*;
use crate::policy::Policy;
use crate::wire::attr::{AsPath, Community, PathAttrs};
use crate::wire::update::{MpReach, MpUnreach, Nlri, Update};
use std::collections::BTreeMap;
use std::sync::Arc;

const US: Asn = Asn(64512);

fn rid(last: u8) -> RouterId {
    RouterId(Ipv4Addr::new(10, 9, 9, last))
}

fn new_rib() -> Rib {
    Rib::new(RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1))))
}

fn session(last: u8) -> SessionInfo {
    let mut s = SessionInfo::ipv4(rid(last), Ipv4Addr::new(192, 0, 2, 254));
    s.families = [true, true];
    s
}

fn add(rib: &mut Rib, last: u8, asn: u32, f: impl FnOnce(&mut PeerInfo)) -> PeerId {
    let mut info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), Asn(asn), US);
    f(&mut info);
    let id = rib.add_peer(info).unwrap();
    rib.peer_up(id, session(last)).unwrap();
    id
}

fn peer(rib: &mut Rib, last: u8, asn: u32) -> PeerId {
    add(rib, last, asn, |_| {})
}

fn attrs(path: &[u32], nh: u8) -> PathAttrs {
    PathAttrs {
        as_path: AsPath::from_sequence(path.iter().map(|a| Asn(*a))),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 51, 100, nh))),
        ..PathAttrs::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nlri(prefixes: &[&str]) -> Vec<Nlri> {
    prefixes.iter().map(|p| Nlri::new(net(p))).collect()
}

fn announce(rib: &mut Rib, p: PeerId, prefixes: &[&str], a: PathAttrs) -> ImportReport {
    rib.announce(p, Family::Ipv4Unicast, a, &nlri(prefixes))
        .unwrap()
}

fn withdraw(rib: &mut Rib, p: PeerId, prefixes: &[&str]) {
    rib.withdraw(p, Family::Ipv4Unicast, &nlri(prefixes))
        .unwrap();
}

/// What a peer was sent, folded: prefix → attributes for announcements, withdrawn
/// prefixes, number of End-of-RIB markers, number of UPDATE groups.
#[derive(Debug, Default)]
struct Sent {
    announced: BTreeMap<(IpNet, u32), Arc<PathAttrs>>,
    withdrawn: Vec<(IpNet, u32)>,
    eor: usize,
    /// End-of-route-refresh markers.
    eorr: usize,
    groups: usize,
}

fn drain(rib: &mut Rib, p: PeerId) -> Sent {
    drain_family(rib, p, Family::Ipv4Unicast)
}

fn drain_family(rib: &mut Rib, p: PeerId, family: Family) -> Sent {
    let mut s = Sent::default();
    loop {
        let batch = rib.drain_export(p, family, 1000);
        if batch.is_empty() {
            break;
        }
        for u in batch {
            assert_eq!(u.family, family);
            match u.body {
                OutBody::Announce { attrs, nlri } => {
                    s.groups += 1;
                    for n in nlri {
                        s.announced.insert((n.prefix, n.path_id), attrs.clone());
                    }
                }
                OutBody::Withdraw { nlri } => s
                    .withdrawn
                    .extend(nlri.iter().map(|n| (n.prefix, n.path_id))),
                OutBody::EndOfRib => s.eor += 1,
                OutBody::EndOfRefresh => s.eorr += 1,
            }
        }
    }
    s
}

fn best_peer(rib: &Rib, prefix: &str) -> Option<PeerId> {
    rib.route(&net(prefix))
        .and_then(|r| r.paths.iter().find(|p| p.best).map(|p| p.peer))
}

#[test]
fn best_path_and_best_change_stream() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24"],
        attrs(&[65001, 65010, 65020], 1),
    );
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002, 65020], 2));
    assert_eq!(best_peer(&rib, "10.0.0.0/24"), Some(b));
    let changes = rib.drain_best_changes();
    assert_eq!(changes.len(), 1, "coalesced: {changes:?}");
    let route = changes[0].route.as_ref().unwrap();
    assert_eq!(route.best().peer, b);
    assert_eq!(
        route.next_hops(),
        vec![NextHop::V4(Ipv4Addr::new(198, 51, 100, 2))]
    );
    // A worse path arriving changes nothing for the kernel.
    let c = peer(&mut rib, 3, 65003);
    announce(&mut rib, c, &["10.0.0.0/24"], attrs(&[65003, 1, 2, 3], 3));
    assert!(rib.drain_best_changes().is_empty());
    withdraw(&mut rib, b, &["10.0.0.0/24"]);
    let changes = rib.drain_best_changes();
    assert_eq!(changes[0].route.as_ref().unwrap().best().peer, a);
    withdraw(&mut rib, a, &["10.0.0.0/24"]);
    withdraw(&mut rib, c, &["10.0.0.0/24"]);
    assert_eq!(
        rib.drain_best_changes(),
        vec![BestChange {
            prefix: net("10.0.0.0/24"),
            route: None
        }]
    );
}

#[test]
fn export_to_ebgp_and_never_back() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let initial = drain(&mut rib, b);
    assert_eq!(initial.eor, 1, "End-of-RIB after the (empty) initial table");
    let incomplete = PathAttrs {
        origin: crate::wire::attr::Origin::Incomplete,
        ..attrs(&[65001], 1)
    };
    announce(&mut rib, a, &["10.0.0.0/24", "10.0.1.0/24"], incomplete);
    let to_b = drain(&mut rib, b);
    assert_eq!(to_b.announced.len(), 2);
    assert_eq!(to_b.groups, 1, "both prefixes in one group");
    let sent = to_b.announced.values().next().unwrap();
    assert_eq!(sent.as_path, AsPath::from_sequence([US, Asn(65001)]));
    assert_eq!(
        sent.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
    );
    let to_a = drain(&mut rib, a);
    assert!(
        to_a.announced.is_empty(),
        "not back to the source: {to_a:?}"
    );
    // b's better path (ORIGIN IGP) becomes best: a now hears it, and b a withdrawal.
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002], 2));
    let to_a = drain(&mut rib, a);
    assert_eq!(to_a.announced.len(), 1);
    let to_b = drain(&mut rib, b);
    assert_eq!(to_b.withdrawn, vec![(net("10.0.0.0/24"), 0)]);
    assert_eq!(rib.peer_counters(b, Family::Ipv4Unicast).unwrap().sent, 1);
    assert_eq!(rib.peer_counters(a, Family::Ipv4Unicast).unwrap().sent, 1);
}

#[test]
fn pending_changes_coalesce() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    drain(&mut rib, b);
    for med in 0..10 {
        announce(
            &mut rib,
            a,
            &["10.0.0.0/24"],
            PathAttrs {
                med: Some(med),
                ..attrs(&[65001], 1)
            },
        );
    }
    // An iBGP peer, which sees the MED.
    let c = peer(&mut rib, 4, 64512);
    drain(&mut rib, c);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24"],
        PathAttrs {
            med: Some(42),
            ..attrs(&[65001], 1)
        },
    );
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24"],
        PathAttrs {
            med: Some(43),
            ..attrs(&[65001], 1)
        },
    );
    let to_c = drain(&mut rib, c);
    assert_eq!(to_c.announced.len(), 1);
    assert_eq!(
        to_c.announced.values().next().unwrap().med,
        Some(43),
        "the latest state only"
    );
    let to_b = drain(&mut rib, b);
    assert_eq!(to_b.groups, 1);
    assert_eq!(to_b.announced.len(), 1);
    // Announced then withdrawn before the peer drained: nothing to say at all.
    announce(&mut rib, a, &["10.0.9.0/24"], attrs(&[65001], 1));
    withdraw(&mut rib, a, &["10.0.9.0/24"]);
    let to_b = drain(&mut rib, b);
    assert!(
        to_b.announced.is_empty() && to_b.withdrawn.is_empty(),
        "{to_b:?}"
    );
}

#[test]
fn budget_splits_a_drain() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let prefixes: Vec<String> = (0..10).map(|i| format!("10.0.{i}.0/24")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    announce(&mut rib, a, &refs, attrs(&[65001], 1));
    let first = rib.drain_export(b, Family::Ipv4Unicast, 4);
    let n: usize = first
        .iter()
        .map(|u| {
            if let OutBody::Announce { nlri, .. } = &u.body {
                nlri.len()
            } else {
                0
            }
        })
        .sum();
    assert_eq!(n, 4);
    assert!(
        !first.iter().any(|u| u.body == OutBody::EndOfRib),
        "End-of-RIB waits for the end"
    );
    assert!(rib.export_pending(b, Family::Ipv4Unicast));
    let rest = drain(&mut rib, b);
    assert_eq!(rest.announced.len(), 6);
    assert_eq!(rest.eor, 1);
    assert!(!rib.export_pending(b, Family::Ipv4Unicast));
}

#[test]
fn refresh_out_resends_the_table_and_an_end_marker() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    drain(&mut rib, b);
    assert!(drain(&mut rib, b).announced.is_empty());
    rib.refresh_out(b, Family::Ipv4Unicast).unwrap();
    let again = drain(&mut rib, b);
    assert_eq!(again.announced.len(), 2);
    assert_eq!((again.eor, again.eorr), (0, 1));
    // IPv6: the initial table was never drained, so its End-of-RIB stays.
    assert!(rib.refresh_out(b, Family::Ipv6Unicast).is_ok());
    let v6 = drain_family(&mut rib, b, Family::Ipv6Unicast);
    assert_eq!((v6.eor, v6.eorr), (1, 0));
}

#[test]
fn ibgp_only_attributes_from_ebgp_are_ignored() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let sneaky = PathAttrs {
        local_pref: Some(1000),
        originator_id: Some(Ipv4Addr::new(1, 1, 1, 1)),
        cluster_list: vec![Ipv4Addr::new(2, 2, 2, 2)],
        ..attrs(&[65001], 1)
    };
    announce(&mut rib, a, &["10.0.0.0/24"], sneaky);
    let held = rib.route(&net("10.0.0.0/24")).unwrap().paths[0]
        .attrs
        .clone();
    assert_eq!(
        (held.local_pref, held.originator_id, held.cluster_list.len()),
        (None, None, 0)
    );
}

#[test]
fn best_changes_in_slices() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let prefixes: Vec<String> = (0..10).map(|i| format!("10.0.{i}.0/24")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    announce(&mut rib, a, &refs, attrs(&[65001], 1));
    assert!(rib.best_changes_pending());
    assert_eq!(rib.drain_best_changes_upto(4).len(), 4);
    assert_eq!(rib.drain_best_changes_upto(4).len(), 4);
    assert_eq!(rib.drain_best_changes_upto(4).len(), 2);
    assert!(!rib.best_changes_pending());
}

#[test]
fn the_rib_can_move_to_the_speaker_task() {
    fn send<T: Send>() {}
    send::<Rib>();
    send::<OutUpdate>();
    send::<BestChange>();
}

#[test]
fn ebgp_loop_detection_and_allowas_in() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    // Same prefix again with our AS in the path: an implicit withdrawal.
    let r = announce(
        &mut rib,
        a,
        &["10.0.0.0/24"],
        attrs(&[65001, 64512, 65009], 1),
    );
    assert_eq!(r.looped, 1);
    assert!(rib.route(&net("10.0.0.0/24")).is_none());
    assert_eq!(
        rib.peer_counters(a, Family::Ipv4Unicast).unwrap().received,
        0
    );
    let b = add(&mut rib, 2, 65002, |i| i.allowas_in = 1);
    let r = announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002, 64512], 2));
    assert_eq!((r.looped, r.accepted), (0, 1));
    let r = announce(
        &mut rib,
        b,
        &["10.0.1.0/24"],
        attrs(&[65002, 64512, 64512], 2),
    );
    assert_eq!(r.looped, 1);
}

#[test]
fn ibgp_reflection_loop_detection() {
    let mut rib = new_rib();
    let a = add(&mut rib, 1, 64512, |i| i.rr_client = true);
    let ours = PathAttrs {
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..attrs(&[], 1)
    };
    assert_eq!(announce(&mut rib, a, &["10.0.0.0/24"], ours).looped, 1);
    let cluster = PathAttrs {
        cluster_list: vec![Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(10, 0, 0, 1)],
        ..attrs(&[], 1)
    };
    assert_eq!(announce(&mut rib, a, &["10.0.0.0/24"], cluster).looped, 1);
    let fine = PathAttrs {
        cluster_list: vec![Ipv4Addr::new(9, 9, 9, 9)],
        ..attrs(&[], 1)
    };
    assert_eq!(announce(&mut rib, a, &["10.0.0.0/24"], fine).accepted, 1);
}

#[test]
fn route_reflection_end_to_end() {
    let mut rib = new_rib();
    let client = add(&mut rib, 1, 64512, |i| i.rr_client = true);
    let non_client_a = peer(&mut rib, 2, 64512);
    let non_client_b = peer(&mut rib, 3, 64512);
    announce(&mut rib, client, &["10.0.0.0/24"], attrs(&[65100], 1));
    announce(&mut rib, non_client_a, &["10.0.1.0/24"], attrs(&[65100], 2));
    let to_b = drain(&mut rib, non_client_b);
    assert_eq!(
        to_b.announced.len(),
        1,
        "only the client's route reaches a non-client: {to_b:?}"
    );
    let a = &to_b.announced[&(net("10.0.0.0/24"), 0)];
    assert_eq!(a.originator_id, Some(rid(1).0));
    assert_eq!(a.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(
        a.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(198, 51, 100, 1)))
    );
    let to_client = drain(&mut rib, client);
    assert_eq!(
        to_client.announced.len(),
        1,
        "the non-client's route reaches the client"
    );
}

#[test]
fn import_policy_keeps_filtered_routes() {
    let mut rib = new_rib();
    let policy: Policy = toml::from_str(
        r#"
        default = "accept"
        [[rules]]
        match = { prefix = [ { prefix = "10.0.0.0/8", ge = 25 } ] }
        then = { action = "reject" }
        [[rules]]
        match = { community-any = ["65001:7"] }
        then = { set-local-pref = 300 }
        "#,
    )
    .unwrap();
    let a = add(&mut rib, 1, 65001, |i| i.import = policy);
    let b = peer(&mut rib, 2, 65002);
    let tagged = PathAttrs {
        communities: [Community::new(65001, 7)].into_iter().collect(),
        ..attrs(&[65001], 1)
    };
    let r = announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/25"],
        tagged,
    );
    assert_eq!((r.accepted, r.filtered), (1, 2));
    let c = rib.peer_counters(a, Family::Ipv4Unicast).unwrap();
    assert_eq!((c.received, c.accepted, c.filtered), (3, 1, 2));
    let view = rib.route(&net("10.0.0.0/25")).unwrap();
    assert!(view.paths[0].filtered && !view.paths[0].best);
    assert_eq!(
        rib.route(&net("10.0.0.0/24")).unwrap().paths[0]
            .attrs
            .local_pref,
        Some(300)
    );
    let to_b = drain(&mut rib, b);
    assert_eq!(
        to_b.announced.keys().map(|k| k.0).collect::<Vec<_>>(),
        vec![net("10.0.0.0/24")]
    );
    // A filtered route becoming acceptable (re-sent differently) counts over.
    let r = announce(&mut rib, a, &["10.0.0.0/25"], attrs(&[65001], 9));
    assert_eq!(r.filtered, 1);
    withdraw(
        &mut rib,
        a,
        &["10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/24"],
    );
    assert_eq!(
        rib.peer_counters(a, Family::Ipv4Unicast).unwrap(),
        PeerCounters::default()
    );
}

#[test]
fn max_prefix_signals_once() {
    let mut rib = new_rib();
    let a = add(&mut rib, 1, 65001, |i| {
        i.max_prefix[0] = Some(MaxPrefix {
            limit: 2,
            count_received: false,
            warn_only: false,
        });
    });
    assert_eq!(
        announce(
            &mut rib,
            a,
            &["10.0.0.0/24", "10.0.1.0/24"],
            attrs(&[65001], 1)
        )
        .max_prefix,
        None
    );
    let r = announce(&mut rib, a, &["10.0.2.0/24"], attrs(&[65001], 1));
    let m = r.max_prefix.unwrap();
    assert_eq!(
        (m.limit, m.count, m.warn_only, m.family),
        (2, 3, false, Family::Ipv4Unicast)
    );
    assert_eq!(m.notification_data(), [0, 1, 1, 0, 0, 0, 2]);
    assert_eq!(
        announce(&mut rib, a, &["10.0.3.0/24"], attrs(&[65001], 1)).max_prefix,
        None,
        "once per session"
    );
    // Counting received routes includes filtered ones.
    let b = add(&mut rib, 2, 65002, |i| {
        i.import = Policy::reject_all();
        i.max_prefix[0] = Some(MaxPrefix {
            limit: 1,
            count_received: true,
            warn_only: true,
        });
    });
    let r = announce(
        &mut rib,
        b,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65002], 1),
    );
    assert!(r.max_prefix.unwrap().warn_only);
}

#[test]
fn graceful_restart_keeps_then_sweeps() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    drain(&mut rib, b);
    rib.drain_best_changes();
    rib.peer_down(a, true, &[Family::Ipv4Unicast]).unwrap();
    let c = rib.peer_counters(a, Family::Ipv4Unicast).unwrap();
    assert_eq!((c.received, c.stale), (2, 2));
    assert_eq!(
        best_peer(&rib, "10.0.0.0/24"),
        Some(a),
        "stale routes stay in use"
    );
    assert!(drain(&mut rib, b).withdrawn.is_empty());
    assert!(rib.drain_best_changes().is_empty(), "forwarding preserved");
    // The peer is back and re-sends one of the two.
    rib.peer_up(a, session(1)).unwrap();
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    assert_eq!(rib.peer_counters(a, Family::Ipv4Unicast).unwrap().stale, 1);
    let eor = Update::default();
    let r = rib.apply_update(a, &eor).unwrap();
    assert_eq!(r.end_of_rib, vec![Family::Ipv4Unicast]);
    assert!(rib.route(&net("10.0.1.0/24")).is_none());
    assert_eq!(drain(&mut rib, b).withdrawn, vec![(net("10.0.1.0/24"), 0)]);
    // Not graceful: gone at once.
    rib.peer_down(a, false, &[]).unwrap();
    assert!(rib.route(&net("10.0.0.0/24")).is_none());
    assert_eq!(
        rib.peer_counters(a, Family::Ipv4Unicast).unwrap(),
        PeerCounters::default()
    );
}

#[test]
fn stale_timer_expiry_and_families_not_preserved() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    let v6 = MpReach {
        afi_safi: Family::Ipv6Unicast.afi_safi(),
        next_hop: NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        },
        nlri: vec![Nlri::new(net("2001:db8:1::/48"))],
    };
    rib.apply_update(
        a,
        &Update {
            attrs: Some(attrs(&[65001], 1)),
            mp_reach: Some(v6),
            ..Update::default()
        },
    )
    .unwrap();
    assert!(rib.route(&net("2001:db8:1::/48")).is_some());
    rib.peer_down(a, true, &[Family::Ipv4Unicast]).unwrap();
    assert!(
        rib.route(&net("2001:db8:1::/48")).is_none(),
        "IPv6 forwarding not preserved"
    );
    assert!(rib.route(&net("10.0.0.0/24")).is_some());
    assert_eq!(rib.stale_expired(a).unwrap(), 1);
    assert!(rib.is_empty());
}

#[test]
fn enhanced_route_refresh_sweeps_what_was_not_resent() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    assert_eq!(rib.begin_refresh(a, Family::Ipv4Unicast).unwrap(), 2);
    announce(&mut rib, a, &["10.0.1.0/24"], attrs(&[65001], 1));
    assert_eq!(rib.end_refresh(a, Family::Ipv4Unicast).unwrap(), 1);
    assert!(rib.route(&net("10.0.0.0/24")).is_none());
    assert!(rib.route(&net("10.0.1.0/24")).is_some());
}

#[test]
fn deferral_holds_results_until_released() {
    let mut cfg = RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1)));
    cfg.defer_until_released = true;
    let mut rib = Rib::new(cfg);
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    assert!(rib.deferring());
    assert!(rib.drain_export(b, Family::Ipv4Unicast, 100).is_empty());
    assert!(rib.drain_best_changes().is_empty());
    assert!(rib.take_export_queued().is_empty(), "held while deferring");
    rib.release_deferral();
    assert_eq!(rib.take_export_queued(), vec![a, b]);
    assert_eq!(rib.drain_best_changes().len(), 1);
    let to_b = drain(&mut rib, b);
    assert_eq!((to_b.announced.len(), to_b.eor), (1, 1));
}

#[test]
fn local_routes_win_and_are_exported() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let ibgp = peer(&mut rib, 2, 64512);
    announce(
        &mut rib,
        a,
        &["10.244.1.0/26"],
        PathAttrs {
            local_pref: Some(500),
            ..attrs(&[65001], 1)
        },
    );
    let block = PathAttrs {
        communities: [Community::new(64512, 100)].into_iter().collect(),
        ..PathAttrs::default()
    };
    rib.originate(net("10.244.1.0/26"), block).unwrap();
    assert_eq!(best_peer(&rib, "10.244.1.0/26"), Some(PeerId::LOCAL));
    let changes = rib.drain_best_changes();
    assert!(changes[0].route.as_ref().unwrap().is_local());
    let to_ibgp = drain(&mut rib, ibgp);
    let sent = &to_ibgp.announced[&(net("10.244.1.0/26"), 0)];
    assert_eq!(
        sent.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
    );
    assert_eq!(sent.local_pref, Some(100));
    assert_eq!(sent.communities.to_vec(), vec![Community::new(64512, 100)]);
    let to_a = drain(&mut rib, a);
    assert_eq!(
        to_a.announced[&(net("10.244.1.0/26"), 0)].as_path,
        AsPath::from_sequence([US])
    );
    assert!(rib.withdraw_local(net("10.244.1.0/26")).unwrap());
    assert!(!rib.withdraw_local(net("10.244.1.0/26")).unwrap());
    // The learned route is best again: a gets a withdrawal, ibgp the learned route.
    assert_eq!(drain(&mut rib, a).withdrawn.len(), 1);
    assert_eq!(drain(&mut rib, ibgp).announced.len(), 1);
}

#[test]
fn add_path_fills_up_with_paths_the_peer_may_get() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let m = add(&mut rib, 3, 64512, |i| {
        i.add_path_send = [2, 0];
        i.rr_client = true;
    });
    rib.peer_down(m, false, &[]).unwrap();
    let mut s = session(3);
    s.add_path_tx = [true, false];
    rib.peer_up(m, s).unwrap();
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002, 1], 2));
    // m's own path is the best, but never goes back to m: it gets the next two.
    let own = PathAttrs {
        local_pref: Some(500),
        ..attrs(&[65003], 3)
    };
    announce(&mut rib, m, &["10.0.0.0/24"], own);
    let sent = drain(&mut rib, m);
    assert_eq!(sent.announced.len(), 2, "{sent:?}");
    assert!(sent
        .announced
        .values()
        .all(|a| a.next_hop != attrs(&[], 3).next_hop));
}

#[test]
fn add_path_sends_several_paths_with_ids() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let mut info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), US, US);
    info.add_path_send = [2, 0];
    let m = rib.add_peer(info).unwrap();
    let mut s = session(3);
    s.add_path_tx = [true, false];
    rib.peer_up(m, s).unwrap();
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002, 1], 2));
    let sent = drain(&mut rib, m);
    assert_eq!(sent.announced.len(), 2);
    let ids: Vec<u32> = sent.announced.keys().map(|k| k.1).collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(rib.peer_counters(m, Family::Ipv4Unicast).unwrap().sent, 2);
    // Nothing changed: nothing re-sent.
    let c = peer(&mut rib, 4, 65004);
    announce(&mut rib, c, &["10.0.0.0/24"], attrs(&[65004, 1, 2, 3], 4));
    assert!(
        drain(&mut rib, m).announced.is_empty(),
        "third-best path is not sent"
    );
    withdraw(&mut rib, a, &["10.0.0.0/24"]);
    let after = drain(&mut rib, m);
    let a_id = sent
        .announced
        .iter()
        .find(|(_, v)| v.next_hop == attrs(&[], 1).next_hop)
        .unwrap()
        .0
         .1;
    assert_eq!(after.withdrawn, vec![(net("10.0.0.0/24"), a_id)]);
    assert_eq!(
        after.announced.len(),
        1,
        "c's path moves up into the best two"
    );
}

#[test]
fn ecmp_set_in_best_changes() {
    let mut cfg = RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1)));
    cfg.max_paths = 4;
    let mut rib = Rib::new(cfg);
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65001);
    let c = peer(&mut rib, 3, 65003);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001, 7], 1));
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65001, 8], 2));
    announce(&mut rib, c, &["10.0.0.0/24"], attrs(&[65003, 7], 3));
    let ch = rib.drain_best_changes();
    let route = ch[0].route.as_ref().unwrap();
    assert_eq!(route.paths.len(), 2, "same neighbour AS only: {route:?}");
    assert_eq!(route.best().peer, a);
    assert_eq!(route.next_hops().len(), 2);
    let view = rib.route(&net("10.0.0.0/24")).unwrap();
    assert_eq!(view.paths.iter().filter(|p| p.multipath).count(), 2);
    // The multipath set changing is a change, even with the same best.
    withdraw(&mut rib, b, &["10.0.0.0/24"]);
    let ch = rib.drain_best_changes();
    assert_eq!(ch[0].route.as_ref().unwrap().paths.len(), 1);
}

#[test]
fn export_policy_filters_and_modifies() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let policy: Policy = toml::from_str(
        r#"
        default = "accept"
        [[rules]]
        match = { prefix = [ { prefix = "10.0.1.0/24" } ] }
        then = { action = "reject" }
        [[rules]]
        then = { set-med = 5, prepend = 2 }
        "#,
    )
    .unwrap();
    let b = add(&mut rib, 2, 65002, |i| i.export = policy);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    let to_b = drain(&mut rib, b);
    assert_eq!(to_b.announced.len(), 1);
    let sent = &to_b.announced[&(net("10.0.0.0/24"), 0)];
    assert_eq!(sent.med, Some(5));
    assert_eq!(
        sent.as_path,
        AsPath::from_sequence([US, US, US, Asn(65001)])
    );
}

#[test]
fn export_policy_sees_where_a_route_was_learned() {
    // Towards c: nothing learned from a, everything else; the prefix rule makes the
    // policy prefix-dependent, the other not, so both evaluation paths are covered.
    for prefix_rule in [false, true] {
        let mut rib = new_rib();
        let a = peer(&mut rib, 1, 65001);
        let b = peer(&mut rib, 2, 65002);
        let mut text = String::from(
            "default = \"reject\"\n[[rules]]\nmatch = { learned-from = [\"192.0.2.1/32\"] }\nthen = { action = \"reject\" }\n",
        );
        if prefix_rule {
            text.push_str(
                "[[rules]]\nmatch = { prefix = [ { prefix = \"10.0.0.0/8\", le = 32 } ] }\n",
            );
        }
        text.push_str("[[rules]]\nmatch = { local-origin = true }\n");
        text.push_str("[[rules]]\nmatch = { learned-from = [\"192.0.2.2/32\"] }\n");
        let policy: Policy = toml::from_str(&text).unwrap();
        let c = add(&mut rib, 3, 65003, |i| i.export = policy);
        // The same attribute set from a and from b: the transform cache must not mix them.
        announce(
            &mut rib,
            a,
            &["10.1.0.0/24", "11.1.0.0/24"],
            attrs(&[65009], 1),
        );
        announce(
            &mut rib,
            b,
            &["10.2.0.0/24", "11.2.0.0/24"],
            attrs(&[65009], 1),
        );
        rib.originate(net("10.3.0.0/24"), PathAttrs::default())
            .unwrap();
        let to_c = drain(&mut rib, c);
        let mut got: Vec<IpNet> = to_c.announced.keys().map(|(p, _)| *p).collect();
        got.sort();
        assert_eq!(
            got,
            vec![net("10.2.0.0/24"), net("10.3.0.0/24"), net("11.2.0.0/24")],
            "prefix rule: {prefix_rule}"
        );
    }
}

#[test]
fn export_groups_by_outgoing_attributes() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let ibgp = peer(&mut rib, 3, 64512);
    for set in 0..5u8 {
        let prefixes: Vec<String> = (0..20).map(|i| format!("10.{set}.{i}.0/24")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        // Same path, next hops differ: towards eBGP next-hop-self makes them one set.
        announce(&mut rib, a, &refs, attrs(&[65001], set + 1));
    }
    assert_eq!(rib.attribute_sets(), 5);
    let to_b = drain(&mut rib, b);
    assert_eq!((to_b.announced.len(), to_b.groups), (100, 1));
    let to_ibgp = drain(&mut rib, ibgp);
    assert_eq!((to_ibgp.announced.len(), to_ibgp.groups), (100, 5));
}

#[test]
fn unreachable_next_hops_are_not_candidates() {
    struct Only(Ipv4Addr);
    impl NextHopResolver for Only {
        fn reachable(&self, nh: &NextHop) -> bool {
            *nh == NextHop::V4(self.0)
        }
    }
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002, 9], 2));
    assert_eq!(best_peer(&rib, "10.0.0.0/24"), Some(a));
    rib.set_resolver(Box::new(Only(Ipv4Addr::new(198, 51, 100, 2))));
    assert_eq!(best_peer(&rib, "10.0.0.0/24"), Some(b));
    rib.set_resolver(Box::new(Only(Ipv4Addr::new(1, 1, 1, 1))));
    assert_eq!(best_peer(&rib, "10.0.0.0/24"), None);
    assert!(rib.longest_match(&net("10.0.0.1/32")).is_none());
}

#[test]
fn ipv6_updates_and_end_of_rib_markers() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let nh = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let reach = MpReach {
        afi_safi: Family::Ipv6Unicast.afi_safi(),
        next_hop: nh,
        nlri: vec![Nlri::new(net("2001:db8:1::/48"))],
    };
    let r = rib
        .apply_update(
            a,
            &Update {
                attrs: Some(attrs(&[65001], 1)),
                nlri: nlri(&["10.0.0.0/24"]),
                mp_reach: Some(reach),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.accepted, 2);
    assert_eq!(
        rib.route(&net("2001:db8:1::/48")).unwrap().paths[0]
            .attrs
            .next_hop,
        Some(nh)
    );
    let to_b = drain_family(&mut rib, b, Family::Ipv6Unicast);
    let sent = &to_b.announced[&(net("2001:db8:1::/48"), 0)];
    assert_eq!(
        sent.next_hop,
        Some(NextHop::V6 {
            global: Ipv4Addr::new(192, 0, 2, 254).to_ipv6_mapped(),
            link_local: None
        }),
        "IPv4 session without an IPv6 address: IPv4-mapped next hop"
    );
    let unreach = MpUnreach {
        afi_safi: Family::Ipv6Unicast.afi_safi(),
        withdrawn: vec![Nlri::new(net("2001:db8:1::/48"))],
    };
    let r = rib
        .apply_update(
            a,
            &Update {
                mp_unreach: Some(unreach),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.withdrawn, 1);
    let eor6 = MpUnreach {
        afi_safi: Family::Ipv6Unicast.afi_safi(),
        withdrawn: vec![],
    };
    let r = rib
        .apply_update(
            a,
            &Update {
                mp_unreach: Some(eor6),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.end_of_rib, vec![Family::Ipv6Unicast]);
    assert_eq!(
        rib.longest_match(&net("10.0.0.77/32")).unwrap().prefix,
        net("10.0.0.0/24")
    );
}

#[test]
fn updates_from_a_peer_that_is_not_up_are_refused() {
    let mut rib = new_rib();
    let info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), Asn(65001), US);
    let a = rib.add_peer(info).unwrap();
    let err = rib
        .announce(
            a,
            Family::Ipv4Unicast,
            attrs(&[65001], 1),
            &nlri(&["10.0.0.0/24"]),
        )
        .unwrap_err();
    assert_eq!(
        err,
        RibError::NotUp {
            peer: a,
            family: Family::Ipv4Unicast
        }
    );
    assert_eq!(
        rib.announce(PeerId(99), Family::Ipv4Unicast, attrs(&[1], 1), &[])
            .unwrap_err(),
        RibError::UnknownPeer(PeerId(99))
    );
    let b = peer(&mut rib, 2, 65002);
    let wrong = rib
        .announce(
            b,
            Family::Ipv4Unicast,
            attrs(&[65002], 1),
            &nlri(&["2001:db8::/32"]),
        )
        .unwrap_err();
    assert!(matches!(wrong, RibError::WrongFamily { .. }));
}

#[test]
fn everything_withdrawn_leaves_nothing_behind() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002], 2));
    drain(&mut rib, a);
    drain(&mut rib, b);
    withdraw(&mut rib, a, &["10.0.0.0/24", "10.0.1.0/24"]);
    withdraw(&mut rib, b, &["10.0.0.0/24"]);
    assert!(rib.is_empty());
    drain(&mut rib, a);
    drain(&mut rib, b);
    rib.drain_best_changes();
    assert_eq!(rib.destinations(Family::Ipv4Unicast), 0);
    assert_eq!(rib.attribute_sets(), 0);
    for p in [a, b] {
        assert_eq!(
            rib.peer_counters(p, Family::Ipv4Unicast).unwrap(),
            PeerCounters::default()
        );
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct Ann {
        peer: usize,
        prefix: u8,
        path_len: u8,
        med: Option<u32>,
        lp: Option<u32>,
    }

    fn arb_ann() -> impl Strategy<Value = Ann> {
        (
            0usize..4,
            0u8..6,
            1u8..4,
            proptest::option::of(0u32..3),
            proptest::option::of(prop_oneof![Just(100u32), Just(200)]),
        )
            .prop_map(|(peer, prefix, path_len, med, lp)| Ann {
                peer,
                prefix,
                path_len,
                med,
                lp,
            })
    }

    /// Peers: two eBGP from AS 65001, one eBGP from 65002, one iBGP.
    fn setup() -> (Rib, Vec<PeerId>) {
        let mut rib = new_rib();
        let peers = vec![
            peer(&mut rib, 1, 65001),
            peer(&mut rib, 2, 65001),
            peer(&mut rib, 3, 65002),
            peer(&mut rib, 4, 64512),
        ];
        (rib, peers)
    }

    fn ann_attrs(a: &Ann, peers_as: u32) -> PathAttrs {
        let mut path = vec![peers_as];
        path.extend((1..a.path_len).map(|i| 65100 + u32::from(i)));
        if peers_as == 64512 {
            path = vec![65001];
        }
        PathAttrs {
            med: a.med,
            local_pref: a.lp,
            ..attrs(&path, a.peer as u8 + 1)
        }
    }

    const AS_OF: [u32; 4] = [65001, 65001, 65002, 64512];

    fn prefix_of(i: u8) -> IpNet {
        IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::new(10, 0, i, 0), 24).unwrap())
    }

    fn apply(rib: &mut Rib, peers: &[PeerId], a: &Ann) {
        rib.announce(
            peers[a.peer],
            Family::Ipv4Unicast,
            ann_attrs(a, AS_OF[a.peer]),
            &[Nlri::new(prefix_of(a.prefix))],
        )
        .unwrap();
    }

    fn bests(rib: &Rib) -> Vec<(IpNet, Vec<(PeerId, bool)>)> {
        let mut v: Vec<_> = rib
            .routes(Family::Ipv4Unicast)
            .map(|r| {
                (
                    r.prefix,
                    r.paths
                        .iter()
                        .filter(|p| p.multipath)
                        .map(|p| (p.peer, p.best))
                        .collect(),
                )
            })
            .collect();
        v.sort();
        v
    }

    proptest! {
        /// The best path (and ECMP set) does not depend on the order routes arrived in.
        #[test]
        fn best_is_independent_of_arrival_order(anns in proptest::collection::vec(arb_ann(), 1..24), seed in any::<u64>()) {
            // Keep the last announcement per (peer, prefix): that is the state either way.
            let mut last: BTreeMap<(usize, u8), Ann> = BTreeMap::new();
            for a in &anns {
                last.insert((a.peer, a.prefix), a.clone());
            }
            let state: Vec<Ann> = last.into_values().collect();
            let mut shuffled = state.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let (mut r1, p1) = setup();
            let (mut r2, p2) = setup();
            for a in &state {
                apply(&mut r1, &p1, a);
            }
            for a in &shuffled {
                apply(&mut r2, &p2, a);
            }
            prop_assert_eq!(bests(&r1), bests(&r2));
        }

        /// The selection kept up incrementally (the decision process is skipped for paths
        /// that lose before MED) is the one a full run of the decision process gives.
        #[test]
        fn incremental_selection_matches_full_recompute(
            ops in proptest::collection::vec((any::<bool>(), arb_ann()), 1..60),
            max_paths in 1u8..3,
        ) {
            let mut cfg = RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1)));
            cfg.max_paths = max_paths;
            let mut rib = Rib::new(cfg);
            let peers: Vec<PeerId> = [(1, 65001), (2, 65001), (3, 65002), (4, 64512)]
                .iter()
                .map(|(l, a)| peer(&mut rib, *l, *a))
                .collect();
            for (announce, a) in &ops {
                if *announce {
                    apply(&mut rib, &peers, a);
                } else {
                    rib.withdraw(peers[a.peer], Family::Ipv4Unicast, &[Nlri::new(prefix_of(a.prefix))]).unwrap();
                }
            }
            let incremental = bests(&rib);
            rib.reresolve();
            prop_assert_eq!(bests(&rib), incremental);
        }

        /// Announce anything, withdraw everything: empty table, zero counters, no attribute
        /// sets, nothing left queued once drained.
        #[test]
        fn withdrawing_everything_empties_the_rib(anns in proptest::collection::vec(arb_ann(), 0..40), drain_midway in any::<bool>()) {
            let (mut rib, peers) = setup();
            for a in &anns {
                apply(&mut rib, &peers, a);
            }
            if drain_midway {
                for p in &peers {
                    drain(&mut rib, *p);
                }
                rib.drain_best_changes();
            }
            for a in &anns {
                rib.withdraw(peers[a.peer], Family::Ipv4Unicast, &[Nlri::new(prefix_of(a.prefix))]).unwrap();
            }
            prop_assert!(rib.is_empty());
            for p in &peers {
                let sent = drain(&mut rib, *p);
                prop_assert!(sent.announced.is_empty());
                let c = rib.peer_counters(*p, Family::Ipv4Unicast).unwrap();
                prop_assert_eq!(c, PeerCounters::default());
            }
            for ch in rib.drain_best_changes() {
                prop_assert!(ch.route.is_none());
            }
            prop_assert_eq!(rib.destinations(Family::Ipv4Unicast), 0);
            prop_assert_eq!(rib.attribute_sets(), 0);
        }
    }
}

#[test]
fn a_peers_own_routes_are_never_queued_back_to_it() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    drain(&mut rib, a);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    assert!(!rib.export_pending(a, Family::Ipv4Unicast));
    // Its prefix now best through another peer: it is told, and told again when the
    // best path comes back to its own (a withdrawal).
    let b = peer(&mut rib, 2, 65002);
    drain(&mut rib, b);
    withdraw(&mut rib, a, &["10.0.0.0/24"]);
    announce(&mut rib, b, &["10.0.0.0/24"], attrs(&[65002], 2));
    let sent = drain(&mut rib, a);
    assert!(sent.announced.contains_key(&(net("10.0.0.0/24"), 0)));
    withdraw(&mut rib, b, &["10.0.0.0/24"]);
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    let sent = drain(&mut rib, a);
    assert_eq!(sent.withdrawn, vec![(net("10.0.0.0/24"), 0)]);
    assert!(sent.announced.is_empty());
}

#[test]
fn a_peer_whose_export_rejects_everything_is_queued_nothing() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let quiet = add(&mut rib, 2, 65002, |i| i.export = Policy::reject_all());
    drain(&mut rib, quiet);
    announce(
        &mut rib,
        a,
        &["10.0.0.0/24", "10.0.1.0/24"],
        attrs(&[65001], 1),
    );
    assert!(!rib.export_pending(quiet, Family::Ipv4Unicast));
    // Export opened: a refresh sends the table.
    let mut info = rib.peer_info(quiet).unwrap().clone();
    info.export = Policy::accept_all();
    rib.update_peer(quiet, info.clone()).unwrap();
    rib.refresh_out(quiet, Family::Ipv4Unicast).unwrap();
    let sent = drain(&mut rib, quiet);
    assert_eq!(sent.announced.len(), 2);
    // Closed again: what was sent is withdrawn, and new routes are not queued.
    info.export = Policy::reject_all();
    rib.update_peer(quiet, info).unwrap();
    rib.refresh_out(quiet, Family::Ipv4Unicast).unwrap();
    let sent = drain(&mut rib, quiet);
    assert_eq!(sent.withdrawn.len(), 2);
    announce(&mut rib, a, &["10.0.2.0/24"], attrs(&[65001], 1));
    assert!(!rib.export_pending(quiet, Family::Ipv4Unicast));
}

#[test]
fn export_queued_names_exactly_the_peers_something_was_queued_for() {
    let mut rib = new_rib();
    let a = peer(&mut rib, 1, 65001);
    let b = peer(&mut rib, 2, 65002);
    let c = add(&mut rib, 3, 64512, |i| i.rr_client = true);
    // Each peer came up: its table dump (End-of-RIB) is queued.
    assert_eq!(rib.take_export_queued(), vec![a, b, c]);
    assert!(rib.take_export_queued().is_empty(), "taken once");
    for p in [a, b, c] {
        drain(&mut rib, p);
    }
    // A route from `a` is queued for the others, never back to `a`.
    announce(&mut rib, a, &["10.0.0.0/24"], attrs(&[65001], 1));
    assert_eq!(rib.take_export_queued(), vec![b, c]);
    assert!(!rib.export_pending(a, Family::Ipv4Unicast));
    // Nothing changes the selection: nothing is queued.
    for p in [b, c] {
        drain(&mut rib, p);
    }
    announce(
        &mut rib,
        b,
        &["10.0.0.0/24"],
        attrs(&[65002, 65003, 65004], 2),
    );
    assert!(rib.take_export_queued().is_empty());
    // A refresh queues the whole table for that one peer, IPv6 as well.
    rib.refresh_out(b, Family::Ipv6Unicast).unwrap();
    assert_eq!(rib.take_export_queued(), vec![b]);
}
