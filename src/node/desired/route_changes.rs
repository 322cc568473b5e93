//! The kernel routes of a batch of best-path changes, worked out for the changed
//! prefixes only.
//!
//! [`routes`](super::routes) computes every route from the whole learned table; the
//! agent needs that when the snapshot changes (a pool, a node, a peer), since any route
//! may depend on it. A batch of best-path changes from the speaker touches only its own
//! prefixes, so the agent takes it here: the learned table and the programmed routes are
//! updated at those prefixes alone, and a batch of N changes costs O(N log table)
//! whatever the size of the table — a peer that sends a large table costs the node the
//! work of its changes, not that work times the number of batches.

use std::collections::{BTreeMap, BTreeSet};

use bgp::rib::{BestChange, BestRoute};
use ipnet::IpNet;

use super::{route_for, Desired, Snapshot};
use crate::node::dataplane::{DesiredRoutes, RouteDiff, RouteTarget};

#[cfg(test)]
thread_local! {
    /// Routes worked out on this thread, so that tests can count the work of a batch.
    static WORKED_OUT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one route worked out (in tests; nothing otherwise).
#[inline]
pub(super) fn work() {
    #[cfg(test)]
    WORKED_OUT.with(|n| n.set(n.get() + 1));
}

/// Takes a batch of best-path changes into `learned`; returns the prefixes it touched.
pub fn learn(learned: &mut BTreeMap<IpNet, BestRoute>, batch: Vec<BestChange>) -> BTreeSet<IpNet> {
    let mut touched = BTreeSet::new();
    for c in batch {
        match c.route {
            Some(r) => {
                learned.insert(c.prefix, r);
            }
            None => {
                learned.remove(&c.prefix);
            }
        }
        touched.insert(c.prefix);
    }
    touched
}

/// The route serval wants at `prefix`, with the precedence of
/// [`routes`](super::routes): an own block is a blackhole, a static route wins over
/// a learned one.
fn route_at(
    prefix: &IpNet,
    d: &Desired,
    learned: &BTreeMap<IpNet, BestRoute>,
    snap: &Snapshot,
) -> Option<RouteTarget> {
    work();
    if d.own_blocks.contains(prefix) {
        return Some(RouteTarget::Blackhole);
    }
    if let Some(t) = d.static_routes.get(prefix) {
        return Some(t.clone());
    }
    learned
        .get(prefix)
        .and_then(|best| route_for(prefix, best, snap))
}

/// The change that brings `programmed` up to date at the `changed` prefixes, for the
/// same `d` and `snap` that `programmed` was computed with: applied to `programmed`, it
/// gives what [`routes`](super::routes) would give for all of `learned`.
pub fn route_changes(
    d: &Desired,
    learned: &BTreeMap<IpNet, BestRoute>,
    snap: &Snapshot,
    programmed: &DesiredRoutes,
    changed: &BTreeSet<IpNet>,
) -> RouteDiff {
    let mut diff = RouteDiff::default();
    for prefix in changed {
        let have = programmed.routes.get(prefix);
        match route_at(prefix, d, learned, snap) {
            Some(want) if have != Some(&want) => {
                diff.upsert.insert(*prefix, want);
            }
            Some(_) => {}
            None if have.is_some() => {
                diff.withdraw.insert(*prefix);
            }
            None => {}
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use bgp::rib::{PeerId, SelectedPath};
    use bgp::wire::attr::{NextHop, PathAttrs};
    use ipam::model::{EncapMode, IpPool, PoolName};
    use ipnet::Ipv4Net;

    use super::super::{desired, route_diff, routes, NodeInfo};
    use super::*;
    use crate::resources::serval_node::NodeBgpSpec;
    use crate::resources::ServalNodeSpec;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn best(via: Ipv4Addr) -> BestRoute {
        BestRoute {
            paths: [SelectedPath {
                peer: PeerId(1),
                peer_address: Some(IpAddr::V4(via)),
                path_id: 0,
                attrs: Arc::new(PathAttrs {
                    next_hop: Some(NextHop::V4(via)),
                    ..PathAttrs::default()
                }),
            }]
            .into_iter()
            .collect(),
        }
    }

    /// This node n1 (192.0.2.1/24) and n2 on its subnet, the pool 10.64.0.0/10 (room
    /// for 65,536 blocks of /26), n1's own block 10.64.0.0/26, and a static route.
    fn node() -> (Snapshot, Desired) {
        let mut s = Snapshot {
            node: "n1".into(),
            router_id: Some(Ipv4Addr::new(192, 0, 2, 1)),
            local_subnets: vec![net("192.0.2.1/24")],
            ..Snapshot::default()
        };
        for (name, addr) in [("n1", "192.0.2.1/24"), ("n2", "192.0.2.2/24")] {
            s.nodes.insert(
                name.into(),
                NodeInfo {
                    labels: Default::default(),
                    spec: ServalNodeSpec {
                        bgp: Some(NodeBgpSpec {
                            ipv4_address: Some(net(addr)),
                            ..NodeBgpSpec::default()
                        }),
                        ..ServalNodeSpec::default()
                    },
                },
            );
        }
        let mut pool = IpPool::new(
            PoolName::new("pods".to_owned()).unwrap(),
            net("10.64.0.0/10"),
        );
        pool.ipip_mode = EncapMode::Never;
        pool.vxlan_mode = EncapMode::Never;
        s.pools = vec![pool];
        s.own_blocks = [net("10.64.0.0/26")].into();
        let mut d = desired(&s);
        d.static_routes.insert(
            net("203.0.113.9/32"),
            RouteTarget::direct("192.0.2.254".parse().unwrap()),
        );
        (s, d)
    }

    /// The `i`-th block of /26 in the pool.
    fn block(i: u32) -> IpNet {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a40_0000 + (i << 6)), 26).unwrap())
    }

    fn change(prefix: IpNet, via: Option<Ipv4Addr>) -> BestChange {
        BestChange {
            prefix,
            route: via.map(best),
        }
    }

    fn worked_out() -> usize {
        WORKED_OUT.with(|n| n.replace(0))
    }

    /// A batch touching every case: a new route, a changed next hop, a withdrawal, an
    /// own block and a static route learned from a peer (both keep their route), a
    /// prefix outside the pool (no route), the same prefix twice.
    fn batch(table: u32) -> Vec<BestChange> {
        let n2 = Ipv4Addr::new(192, 0, 2, 2);
        let n9 = Ipv4Addr::new(192, 0, 2, 9);
        vec![
            change(block(table + 1), Some(n2)),
            change(block(5), Some(n9)),
            change(block(6), None),
            change(net("10.64.0.0/26"), Some(n2)),
            change(net("203.0.113.9/32"), Some(n2)),
            change(net("198.18.0.0/24"), Some(n2)),
            change(block(7), Some(n9)),
            change(block(7), None),
        ]
    }

    #[test]
    fn a_batch_gives_what_a_full_recompute_gives() {
        let (snap, d) = node();
        let n2 = Ipv4Addr::new(192, 0, 2, 2);
        let mut learned: BTreeMap<IpNet, BestRoute> =
            (1..100).map(|i| (block(i), best(n2))).collect();
        let mut programmed = routes(&d, &learned, &snap);
        let touched = learn(&mut learned, batch(100));
        assert_eq!(touched.len(), 7, "{touched:?}");
        let diff = route_changes(&d, &learned, &snap, &programmed, &touched);
        let want = routes(&d, &learned, &snap);
        assert_eq!(diff, route_diff(&programmed, &want));
        assert_eq!(
            diff.withdraw,
            [block(6), block(7)].into(),
            "routes that went"
        );
        assert_eq!(
            diff.upsert.keys().copied().collect::<Vec<_>>(),
            vec![block(5), block(101)],
            "a new next hop and a new block; the own block, the static route and the \
             prefix outside the pool keep what they had"
        );
        programmed.apply(&diff);
        assert_eq!(programmed, want);
        // The same batch again changes nothing.
        let again = learn(&mut learned, batch(100));
        assert_eq!(
            route_changes(&d, &learned, &snap, &programmed, &again),
            RouteDiff::default()
        );
    }

    #[test]
    fn a_batch_costs_its_own_prefixes_whatever_the_table() {
        let (snap, d) = node();
        let n2 = Ipv4Addr::new(192, 0, 2, 2);
        for table in [100u32, 10_000, 60_000] {
            let mut learned: BTreeMap<IpNet, BestRoute> =
                (1..=table).map(|i| (block(i), best(n2))).collect();
            // Outside the pool too: a peer's table serval does not route.
            learned.extend((0..table).map(|i| {
                (
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc600_0000 + (i << 8)), 24).unwrap()),
                    best(n2),
                )
            }));
            let mut programmed = routes(&d, &learned, &snap);
            worked_out();
            let touched = learn(&mut learned, batch(table));
            let diff = route_changes(&d, &learned, &snap, &programmed, &touched);
            assert_eq!(
                worked_out(),
                touched.len(),
                "table of {}: one route worked out per changed prefix",
                learned.len()
            );
            programmed.apply(&diff);
            assert_eq!(programmed, routes(&d, &learned, &snap), "table of {table}");
        }
    }
}
