//! The BGP decision process (RFC 4271 §9.1.2.2, RFC 4456 §9), as a sequence of
//! elimination steps over the candidate paths of one destination.
//!
//! Each step keeps only the candidates that are best by its own criterion. This is how
//! RFC 4271 §9.1.2.2 is written, and it matters for the MED step, which compares only
//! paths from the same neighbouring AS and so is not a total order: a pairwise comparator
//! would pick a different best depending on the order the paths arrived in. Steps:
//!
//! 0. next hop unreachable: excluded ([`step_reachable`])
//! 1. locally originated beats learned ([`step_local_origin`], common practice: Cisco's
//!    weight, BIRD's preference of static routes)
//! 2. highest LOCAL_PREF ([`step_local_pref`])
//! 3. shortest AS_PATH ([`step_as_path_len`])
//! 4. lowest ORIGIN ([`step_origin`])
//! 5. lowest MED among paths from the same neighbouring AS ([`step_med`])
//! 6. eBGP-learned over iBGP-learned ([`step_ebgp`])
//! 7. lowest IGP cost to the next hop ([`step_igp_cost`])
//! 8. lowest ORIGINATOR_ID, or BGP Identifier when absent ([`step_router_id`])
//! 9. shortest CLUSTER_LIST ([`step_cluster_len`])
//! 10. lowest peer address ([`step_peer_address`])
//! 11. lowest path identifier, then lowest internal peer id ([`step_final`]): makes the
//!     result a function of the set alone, also for several paths from one peer (add-path).
//!
//! The multipath (ECMP) set is the survivors of steps 0–6, restricted for eBGP to the best
//! path's neighbouring AS unless `multipath_relax`, best first and capped at `max_paths`.

use crate::types::Asn;
use crate::wire::attr::Origin;
use smallvec::SmallVec;
use std::net::{IpAddr, Ipv4Addr};

/// What the decision process needs to know about one candidate path, pre-computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The caller's handle for the path (its position in the destination).
    pub index: usize,
    pub reachable: bool,
    pub local: bool,
    pub local_pref: u32,
    pub as_path_len: u32,
    pub origin: Origin,
    /// MED as compared: a missing MED already replaced by 0 (or the worst value when
    /// `med_missing_as_worst`).
    pub med: u32,
    pub neighbor_as: Option<Asn>,
    pub ebgp: bool,
    pub igp_cost: u32,
    /// ORIGINATOR_ID when present, else the peer's BGP Identifier (RFC 4456 §9).
    pub originator: Ipv4Addr,
    pub cluster_len: u32,
    pub peer_address: IpAddr,
    pub path_id: u32,
    pub peer: u32,
    /// Used to keep two equal next hops out of one multipath set.
    pub next_hop: Option<IpAddr>,
}

impl Default for Candidate {
    fn default() -> Self {
        Candidate {
            index: 0,
            reachable: true,
            local: false,
            local_pref: 100,
            as_path_len: 0,
            origin: Origin::Igp,
            med: 0,
            neighbor_as: None,
            ebgp: true,
            igp_cost: 0,
            originator: Ipv4Addr::UNSPECIFIED,
            cluster_len: 0,
            peer_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            path_id: 0,
            peer: 0,
            next_hop: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionConfig {
    /// Compare MED between paths from different neighbouring ASes too.
    pub always_compare_med: bool,
    /// Up to this many paths in the multipath set (1: no ECMP).
    pub max_paths: u8,
    /// eBGP multipath across different neighbouring ASes (same AS_PATH length still
    /// required by the earlier steps).
    pub multipath_relax: bool,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            always_compare_med: false,
            max_paths: 1,
            multipath_relax: false,
        }
    }
}

/// The candidates still in the running: references, so that steps and the copies the
/// multipath computation keeps cost no copying of candidates.
pub type Cands<'a> = SmallVec<[&'a Candidate; 16]>;

/// Storage for the candidates of one destination.
pub type CandStore = SmallVec<[Candidate; 8]>;

/// Keeps the candidates with the smallest key.
fn keep_min_by_key<K: Ord>(c: &mut Cands<'_>, key: impl Fn(&Candidate) -> K) {
    if c.len() < 2 {
        return;
    }
    let Some(min) = c.iter().map(|x| key(x)).min() else {
        return;
    };
    c.retain(|x| key(x) == min);
}

/// Step 0: a path whose next hop does not resolve is not a candidate (RFC 4271 §9.1.2.1).
pub fn step_reachable(c: &mut Cands<'_>) {
    c.retain(|x| x.reachable);
}

/// Step 1: a locally originated route beats any learned one.
pub fn step_local_origin(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| !x.local);
}

/// Step 2: highest degree of preference, LOCAL_PREF (RFC 4271 §9.1.1).
pub fn step_local_pref(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| std::cmp::Reverse(x.local_pref));
}

/// Step 3: fewest ASes in AS_PATH (§9.1.2.2 a).
pub fn step_as_path_len(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.as_path_len);
}

/// Step 4: lowest ORIGIN (§9.1.2.2 b).
pub fn step_origin(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.origin);
}

/// Step 5 (§9.1.2.2 c): remove every path for which another remaining path from the same
/// neighbouring AS has a lower MED. Paths without a neighbouring AS (originated inside our
/// AS) form one group.
pub fn step_med(c: &mut Cands<'_>, always_compare: bool) {
    if c.len() < 2 {
        return;
    }
    if always_compare {
        keep_min_by_key(c, |x| x.med);
        return;
    }
    let snapshot: Cands<'_> = c.clone();
    c.retain(|x| {
        !snapshot
            .iter()
            .any(|y| y.neighbor_as == x.neighbor_as && y.med < x.med)
    });
}

/// Step 6: eBGP-learned over iBGP-learned (§9.1.2.2 d).
pub fn step_ebgp(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| !x.ebgp);
}

/// Step 7: lowest interior cost to the next hop (§9.1.2.2 e).
pub fn step_igp_cost(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.igp_cost);
}

/// Step 8: lowest BGP Identifier, the ORIGINATOR_ID standing in for it (§9.1.2.2 f,
/// RFC 4456 §9).
pub fn step_router_id(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.originator);
}

/// Step 9: shortest CLUSTER_LIST (RFC 4456 §9).
pub fn step_cluster_len(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.cluster_len);
}

/// Step 10: lowest peer address (§9.1.2.2 g). IPv4 addresses sort before IPv6.
pub fn step_peer_address(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| x.peer_address);
}

/// Step 11: make the result total over any set.
pub fn step_final(c: &mut Cands<'_>) {
    keep_min_by_key(c, |x| (x.path_id, x.peer));
}

/// True when `p` is eliminated by `best` in one of the steps 0–4, which are total orders:
/// in any set where `best` wins, `p` then never reaches the MED step, so adding or removing
/// `p` leaves the selection as it is. The RIB uses this to skip the decision process for
/// a path that arrives (or leaves) behind the best one, which in a route server holding
/// many paths per prefix is most of them.
pub fn loses_before_med(p: &Candidate, best: &Candidate) -> bool {
    let key = |c: &Candidate| {
        (
            !c.reachable,
            !c.local,
            std::cmp::Reverse(c.local_pref),
            c.as_path_len,
            c.origin,
        )
    };
    key(p) > key(best)
}

/// The outcome for one destination: positions (`Candidate::index`) of the best path and of
/// the multipath set (best first). Empty when no candidate is usable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub multipath: SmallVec<[usize; 4]>,
}

impl Selection {
    pub fn best(&self) -> Option<usize> {
        self.multipath.first().copied()
    }
}

/// Steps 0–6; what survives is the multipath candidate set.
fn through_ebgp(c: &mut Cands<'_>, cfg: &DecisionConfig) {
    step_reachable(c);
    step_local_origin(c);
    step_local_pref(c);
    step_as_path_len(c);
    step_origin(c);
    step_med(c, cfg.always_compare_med);
    step_ebgp(c);
}

/// Steps 7–11.
fn tie_breaks(c: &mut Cands<'_>) {
    step_igp_cost(c);
    step_router_id(c);
    step_cluster_len(c);
    step_peer_address(c);
    step_final(c);
}

/// Runs the whole process.
pub fn select(cands: &[Candidate], cfg: &DecisionConfig) -> Selection {
    let mut survivors: Cands<'_> = cands.iter().collect();
    through_ebgp(&mut survivors, cfg);
    let mut rest = survivors.clone();
    tie_breaks(&mut rest);
    let Some(best) = rest.first().copied() else {
        return Selection::default();
    };
    let mut sel = Selection::default();
    sel.multipath.push(best.index);
    if cfg.max_paths <= 1 || survivors.len() < 2 {
        return sel;
    }
    let mut others: Cands<'_> = survivors
        .into_iter()
        .filter(|x| x.index != best.index)
        .filter(|x| !best.ebgp || cfg.multipath_relax || x.neighbor_as == best.neighbor_as)
        .collect();
    others.sort_by(|a, b| {
        (
            a.igp_cost,
            a.originator,
            a.cluster_len,
            a.peer_address,
            a.path_id,
            a.peer,
        )
            .cmp(&(
                b.igp_cost,
                b.originator,
                b.cluster_len,
                b.peer_address,
                b.path_id,
                b.peer,
            ))
    });
    let mut hops: SmallVec<[Option<IpAddr>; 4]> = SmallVec::new();
    hops.push(best.next_hop);
    for o in others {
        if sel.multipath.len() >= usize::from(cfg.max_paths) {
            break;
        }
        if o.next_hop.is_some() && hops.contains(&o.next_hop) {
            continue;
        }
        hops.push(o.next_hop);
        sel.multipath.push(o.index);
    }
    sel
}

/// All usable candidates in preference order: the best, then the best of the rest, and so
/// on (for add-path "best N" export). Unreachable candidates are left out.
pub fn rank(cands: &[Candidate], cfg: &DecisionConfig) -> SmallVec<[usize; 4]> {
    let single = DecisionConfig {
        max_paths: 1,
        ..*cfg
    };
    let mut left: CandStore = cands.iter().filter(|c| c.reachable).cloned().collect();
    let mut out = SmallVec::new();
    while let Some(b) = select(&left, &single).best() {
        out.push(b);
        left.retain(|c| c.index != b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(index: usize) -> Candidate {
        Candidate {
            index,
            peer: index as u32,
            peer_address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, index as u8)),
            originator: Ipv4Addr::new(10, 0, 0, index as u8),
            next_hop: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, index as u8))),
            ..Candidate::default()
        }
    }

    fn run(step: fn(&mut Cands<'_>), cands: Vec<Candidate>) -> Vec<usize> {
        let mut v: Cands<'_> = cands.iter().collect();
        step(&mut v);
        v.iter().map(|x| x.index).collect()
    }

    #[test]
    fn reachable_excludes() {
        let got = run(
            step_reachable,
            vec![
                Candidate {
                    reachable: false,
                    ..c(0)
                },
                c(1),
                c(2),
            ],
        );
        assert_eq!(got, vec![1, 2]);
        assert_eq!(
            select(
                &[Candidate {
                    reachable: false,
                    ..c(0)
                }],
                &DecisionConfig::default()
            )
            .best(),
            None
        );
    }

    #[test]
    fn local_origin_wins() {
        let got = run(
            step_local_origin,
            vec![
                c(0),
                Candidate {
                    local: true,
                    local_pref: 0,
                    ..c(1)
                },
            ],
        );
        assert_eq!(got, vec![1]);
        // Before LOCAL_PREF in the full process.
        let sel = select(
            &[
                Candidate {
                    local_pref: 500,
                    ..c(0)
                },
                Candidate {
                    local: true,
                    ..c(1)
                },
            ],
            &Default::default(),
        );
        assert_eq!(sel.best(), Some(1));
    }

    #[test]
    fn local_pref_highest() {
        let got = run(
            step_local_pref,
            vec![
                Candidate {
                    local_pref: 100,
                    ..c(0)
                },
                Candidate {
                    local_pref: 200,
                    ..c(1)
                },
                Candidate {
                    local_pref: 200,
                    ..c(2)
                },
            ],
        );
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn as_path_shortest() {
        let got = run(
            step_as_path_len,
            vec![
                Candidate {
                    as_path_len: 3,
                    ..c(0)
                },
                Candidate {
                    as_path_len: 2,
                    ..c(1)
                },
            ],
        );
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn origin_lowest() {
        let got = run(
            step_origin,
            vec![
                Candidate {
                    origin: Origin::Incomplete,
                    ..c(0)
                },
                Candidate {
                    origin: Origin::Egp,
                    ..c(1)
                },
                Candidate {
                    origin: Origin::Igp,
                    ..c(2)
                },
            ],
        );
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn med_only_within_neighbor_as() {
        let a1 = Some(Asn(1));
        let a2 = Some(Asn(2));
        let cands = vec![
            Candidate {
                neighbor_as: a1,
                med: 10,
                ..c(0)
            },
            Candidate {
                neighbor_as: a1,
                med: 20,
                ..c(1)
            },
            Candidate {
                neighbor_as: a2,
                med: 50,
                ..c(2)
            },
        ];
        assert_eq!(run(|v| step_med(v, false), cands.clone()), vec![0, 2]);
        assert_eq!(run(|v| step_med(v, true), cands), vec![0]);
    }

    /// The classic case: pairwise, a beats c (same AS, lower MED), b beats a (router id),
    /// c beats b (router id) — a cycle, so a comparator-based sort depends on arrival
    /// order. Elimination removes c first and then picks b whatever the order.
    #[test]
    fn med_non_transitivity_is_order_independent() {
        let a = Candidate {
            neighbor_as: Some(Asn(1)),
            med: 10,
            originator: Ipv4Addr::new(10, 0, 0, 3),
            ..c(0)
        };
        let b = Candidate {
            neighbor_as: Some(Asn(2)),
            med: 5,
            originator: Ipv4Addr::new(10, 0, 0, 2),
            ..c(1)
        };
        let cc = Candidate {
            neighbor_as: Some(Asn(1)),
            med: 20,
            originator: Ipv4Addr::new(10, 0, 0, 1),
            ..c(2)
        };
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let all = [a, b, cc];
        for o in orders {
            let v: Vec<Candidate> = o.iter().map(|i| all[*i].clone()).collect();
            assert_eq!(
                select(&v, &Default::default()).best(),
                Some(1),
                "order {o:?}"
            );
        }
    }

    #[test]
    fn ebgp_over_ibgp() {
        assert_eq!(
            run(
                step_ebgp,
                vec![
                    Candidate {
                        ebgp: false,
                        ..c(0)
                    },
                    c(1)
                ]
            ),
            vec![1]
        );
    }

    #[test]
    fn igp_cost_lowest() {
        assert_eq!(
            run(
                step_igp_cost,
                vec![
                    Candidate {
                        igp_cost: 5,
                        ..c(0)
                    },
                    Candidate {
                        igp_cost: 1,
                        ..c(1)
                    }
                ]
            ),
            vec![1]
        );
    }

    #[test]
    fn router_id_lowest() {
        let got = run(
            step_router_id,
            vec![
                Candidate {
                    originator: Ipv4Addr::new(9, 9, 9, 9),
                    ..c(0)
                },
                Candidate {
                    originator: Ipv4Addr::new(1, 1, 1, 1),
                    ..c(1)
                },
            ],
        );
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn cluster_list_shortest() {
        assert_eq!(
            run(
                step_cluster_len,
                vec![
                    Candidate {
                        cluster_len: 2,
                        ..c(0)
                    },
                    Candidate {
                        cluster_len: 1,
                        ..c(1)
                    }
                ]
            ),
            vec![1]
        );
    }

    #[test]
    fn peer_address_lowest() {
        let got = run(
            step_peer_address,
            vec![
                Candidate {
                    peer_address: "2001:db8::1".parse().unwrap(),
                    ..c(0)
                },
                Candidate {
                    peer_address: "192.0.2.9".parse().unwrap(),
                    ..c(1)
                },
                Candidate {
                    peer_address: "192.0.2.10".parse().unwrap(),
                    ..c(2)
                },
            ],
        );
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn final_tiebreak_path_id_then_peer() {
        let same = |i: usize, path_id: u32, peer: u32| Candidate {
            path_id,
            peer,
            ..Candidate {
                index: i,
                ..Candidate::default()
            }
        };
        assert_eq!(
            run(
                step_final,
                vec![same(0, 2, 0), same(1, 1, 5), same(2, 1, 3)]
            ),
            vec![2]
        );
    }

    #[test]
    fn steps_apply_in_order() {
        // Longer AS path but higher LOCAL_PREF wins: step 2 before step 3.
        let sel = select(
            &[
                Candidate {
                    as_path_len: 1,
                    ..c(0)
                },
                Candidate {
                    local_pref: 200,
                    as_path_len: 5,
                    ..c(1)
                },
            ],
            &Default::default(),
        );
        assert_eq!(sel.best(), Some(1));
        // iBGP path with lower MED from the same AS beats eBGP: step 5 before step 6.
        let sel = select(
            &[
                Candidate {
                    neighbor_as: Some(Asn(1)),
                    med: 50,
                    ..c(0)
                },
                Candidate {
                    neighbor_as: Some(Asn(1)),
                    med: 10,
                    ebgp: false,
                    ..c(1)
                },
            ],
            &Default::default(),
        );
        assert_eq!(sel.best(), Some(1));
    }

    #[test]
    fn multipath_set() {
        let cfg = DecisionConfig {
            max_paths: 4,
            ..Default::default()
        };
        let n1 = Some(Asn(1));
        let cands = vec![
            Candidate {
                neighbor_as: n1,
                ..c(3)
            },
            Candidate {
                neighbor_as: n1,
                ..c(1)
            },
            Candidate {
                neighbor_as: Some(Asn(2)),
                ..c(2)
            },
            Candidate {
                neighbor_as: n1,
                as_path_len: 2,
                ..c(4)
            },
            Candidate {
                neighbor_as: n1,
                igp_cost: 7,
                ..c(5)
            },
        ];
        let sel = select(&cands, &cfg);
        // 4 is out (longer path), 2 is another neighbour AS, 5 differs only in IGP cost.
        assert_eq!(sel.multipath.as_slice(), &[1, 3, 5]);
        let relaxed = select(
            &cands,
            &DecisionConfig {
                multipath_relax: true,
                ..cfg
            },
        );
        assert_eq!(relaxed.multipath.as_slice(), &[1, 2, 3, 5]);
        let capped = select(
            &cands,
            &DecisionConfig {
                max_paths: 2,
                ..cfg
            },
        );
        assert_eq!(capped.multipath.as_slice(), &[1, 3]);
        let single = select(&cands, &DecisionConfig::default());
        assert_eq!(single.multipath.as_slice(), &[1]);
        // An iBGP best path takes iBGP peers whatever their AS.
        let ibgp = vec![
            Candidate {
                ebgp: false,
                ..c(1)
            },
            Candidate {
                ebgp: false,
                ..c(2)
            },
            Candidate {
                ebgp: false,
                neighbor_as: n1,
                ..c(3)
            },
        ];
        assert_eq!(select(&ibgp, &cfg).multipath.len(), 3);
        // Duplicate next hops are not two paths.
        let dup = vec![
            c(1),
            Candidate {
                next_hop: c(1).next_hop,
                ..c(2)
            },
        ];
        assert_eq!(select(&dup, &cfg).multipath.as_slice(), &[1]);
    }

    #[test]
    fn losing_before_med() {
        let best = Candidate {
            local_pref: 200,
            as_path_len: 2,
            ..c(0)
        };
        assert!(loses_before_med(
            &Candidate {
                local_pref: 100,
                as_path_len: 1,
                ..c(1)
            },
            &best
        ));
        assert!(loses_before_med(
            &Candidate {
                local_pref: 200,
                as_path_len: 3,
                ..c(1)
            },
            &best
        ));
        assert!(loses_before_med(
            &Candidate {
                reachable: false,
                local_pref: 900,
                ..c(1)
            },
            &best
        ));
        // Equal up to MED: it may matter.
        assert!(!loses_before_med(
            &Candidate {
                local_pref: 200,
                as_path_len: 2,
                med: 99,
                ..c(1)
            },
            &best
        ));
        assert!(!loses_before_med(
            &Candidate {
                local: true,
                ..c(1)
            },
            &best
        ));
    }

    #[test]
    fn rank_orders_all() {
        let cands = vec![
            Candidate {
                local_pref: 50,
                ..c(0)
            },
            Candidate {
                local_pref: 300,
                ..c(1)
            },
            Candidate {
                reachable: false,
                ..c(2)
            },
            Candidate {
                local_pref: 200,
                ..c(3)
            },
        ];
        assert_eq!(rank(&cands, &Default::default()).as_slice(), &[1, 3, 0]);
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            any::<bool>(),
            0u32..3,
            0u32..3,
            0u8..3,
            0u32..3,
            proptest::option::of(1u32..3),
            any::<bool>(),
            0u8..3,
            0u32..2,
            0u8..3,
            0u32..2,
        )
            .prop_map(
                |(local, lp, len, origin, med, nas, ebgp, rid, cl, addr, pid)| Candidate {
                    index: 0,
                    reachable: true,
                    local,
                    local_pref: lp * 100,
                    as_path_len: len,
                    origin: [Origin::Igp, Origin::Egp, Origin::Incomplete][usize::from(origin)],
                    med,
                    neighbor_as: nas.map(Asn),
                    ebgp,
                    igp_cost: 0,
                    originator: Ipv4Addr::new(10, 0, 0, rid),
                    cluster_len: cl,
                    peer_address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, addr)),
                    path_id: pid,
                    peer: 0,
                    next_hop: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, addr))),
                },
            )
    }

    proptest! {
        /// Whatever order the paths arrived in, the same path is best and the same
        /// multipath set is chosen.
        #[test]
        fn selection_is_order_independent(
            mut cands in proptest::collection::vec(arb_candidate(), 1..8),
            seed in any::<u64>(),
            always in any::<bool>(),
        ) {
            for (i, c) in cands.iter_mut().enumerate() {
                c.index = i;
                c.peer = i as u32;
            }
            let cfg = DecisionConfig { always_compare_med: always, max_paths: 4, multipath_relax: false };
            let want = select(&cands, &cfg);
            let mut shuffled = cands.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(select(&shuffled, &cfg), want.clone());
            prop_assert_eq!(rank(&shuffled, &cfg), rank(&cands, &cfg));
            prop_assert_eq!(want.best(), rank(&cands, &cfg).first().copied());
        }
    }
}
