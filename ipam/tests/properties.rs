//! Property tests over random sequences of operations on IPv4 and IPv6 pools together:
//! addresses are unique and inside their pool and block, in a block affine to the node
//! unless borrowed (never under strictAffinity), handle records match, check stays clean,
//! and release + re-assign round trips.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, IpamConfig, NodeName, PoolName};
use ipam::store::memory::MemStore;
use ipam::store::{Store, StoreExt};
use ipam::{Ipam, IpamError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Assign {
        handle: u8,
        node: u8,
        v4: u8,
        v6: u8,
    },
    ReleaseHandle {
        handle: u8,
    },
    ReleaseOne {
        handle: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..3, 0u8..6, 0u8..6).prop_map(|(handle, node, v4, v6)| Op::Assign { handle, node, v4, v6 }),
        1 => (0u8..12).prop_map(|handle| Op::ReleaseHandle { handle }),
        1 => (0u8..12).prop_map(|handle| Op::ReleaseOne { handle }),
    ]
}

fn handle(i: u8) -> HandleId {
    HandleId::new(format!("h{i}")).unwrap()
}

fn node(i: u8) -> NodeName {
    NodeName::new(format!("node-{i}")).unwrap()
}

fn pools() -> Vec<IpPool> {
    let mut v4 = IpPool::new(PoolName::new("v4").unwrap(), "10.1.0.0/26".parse().unwrap());
    v4.block_size = 29;
    let mut v6 = IpPool::new(PoolName::new("v6").unwrap(), "fd00::/122".parse().unwrap());
    v6.block_size = 125;
    vec![v4, v6]
}

/// Checks every invariant of the store's current state.
async fn invariants(
    store: &Arc<dyn Store>,
    strict: bool,
    model: &BTreeMap<HandleId, BTreeSet<IpAddr>>,
) {
    let pools = pools();
    let mut seen = BTreeSet::new();
    let mut held: BTreeMap<HandleId, BTreeSet<IpAddr>> = BTreeMap::new();
    for b in store.list_blocks().await.unwrap() {
        let b = b.value;
        let pool = pools
            .iter()
            .find(|p| p.cidr.contains(&b.cidr))
            .expect("block inside a pool");
        assert_eq!(
            b.cidr.prefix_len(),
            pool.block_size,
            "block {} has its pool's size",
            b.cidr
        );
        assert!(
            b.integrity_problems().is_empty(),
            "{:?}",
            b.integrity_problems()
        );
        for (ip, attr) in b.allocated() {
            assert!(b.cidr.contains(&ip) && pool.cidr.contains(&ip));
            assert!(seen.insert(ip), "{ip} allocated twice");
            let borrowed = attr.node != b.affinity;
            assert!(
                !(strict && borrowed),
                "{ip} borrowed from {:?} under strictAffinity",
                b.affinity
            );
            held.entry(attr.handle_id.clone()).or_default().insert(ip);
        }
    }
    assert_eq!(
        &held, model,
        "the store holds exactly what the operations returned"
    );
    let report = Ipam::new(store.clone()).check(false, None).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
}

async fn run_ops(ops: Vec<Op>, strict: bool, max_blocks: u32) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ipam = Ipam::new(store.clone());
    for p in pools() {
        ipam.add_pool(p).await.unwrap();
    }
    ipam.set_config(IpamConfig {
        strict_affinity: strict,
        max_blocks_per_host: max_blocks,
        auto_allocate_blocks: true,
    })
    .await
    .unwrap();
    let mut model: BTreeMap<HandleId, BTreeSet<IpAddr>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Assign {
                handle: h,
                node: n,
                v4,
                v6,
            } => {
                let req = AutoAssignRequest::new(
                    handle(h),
                    NodeInfo::new(node(n)),
                    u32::from(v4),
                    u32::from(v6),
                );
                let before = model.get(&handle(h)).cloned().unwrap_or_default();
                match ipam.auto_assign(req).await {
                    Ok(got) => {
                        let all: BTreeSet<IpAddr> = got.v4.iter().chain(&got.v6).copied().collect();
                        assert!(all.is_superset(&before), "a handle keeps what it had");
                        let n4 = all.iter().filter(|a| a.is_ipv4()).count();
                        let n6 = all.len() - n4;
                        assert!(n4 >= usize::from(v4) && n6 >= usize::from(v6), "{got:?}");
                        assert!(
                            got.v4.iter().all(IpAddr::is_ipv4)
                                && got.v6.iter().all(IpAddr::is_ipv6)
                        );
                        if !all.is_empty() {
                            model.insert(handle(h), all);
                        }
                    }
                    Err(IpamError::NoAddresses { .. }) => {
                        // A partial allocation may remain: read what the handle holds now.
                        let mut now = BTreeSet::new();
                        for b in store.list_blocks().await.unwrap() {
                            now.extend(b.value.ips_of(&handle(h)));
                        }
                        assert!(now.is_superset(&before));
                        if now.is_empty() {
                            model.remove(&handle(h));
                        } else {
                            model.insert(handle(h), now);
                        }
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            Op::ReleaseHandle { handle: h } => {
                let freed: BTreeSet<IpAddr> = ipam
                    .release_handle(handle(h))
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                assert_eq!(freed, model.remove(&handle(h)).unwrap_or_default());
            }
            Op::ReleaseOne { handle: h } => {
                let Some(ip) = model.get(&handle(h)).and_then(|s| s.iter().next().copied()) else {
                    continue;
                };
                let out = ipam.release_ips(vec![ip]).await.unwrap();
                assert_eq!(out.released, vec![(ip, handle(h))]);
                let set = model.get_mut(&handle(h)).unwrap();
                set.remove(&ip);
                if set.is_empty() {
                    model.remove(&handle(h));
                }
            }
        }
        invariants(&store, strict, &model).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(
        ops in prop::collection::vec(op(), 1..40),
        strict in any::<bool>(),
        max_blocks in 0u32..4,
    ) {
        runtime().block_on(run_ops(ops, strict, max_blocks));
    }

    #[test]
    fn release_and_reassign_round_trips(sizes in prop::collection::vec((1u32..5, 0u32..4), 1..8)) {
        runtime().block_on(async {
            let store: Arc<dyn Store> = Arc::new(MemStore::new());
            let ipam = Ipam::new(store.clone());
            for p in pools() {
                ipam.add_pool(p).await.unwrap();
            }
            let usage0 = ipam.usage().await.unwrap();
            let mut first = Vec::new();
            for (i, (v4, v6)) in sizes.iter().enumerate() {
                let req = AutoAssignRequest::new(handle(i as u8), NodeInfo::new(node(i as u8 % 2)), *v4, *v6);
                first.push(ipam.auto_assign(req).await.unwrap());
            }
            for i in 0..sizes.len() {
                ipam.release_handle(handle(i as u8)).await.unwrap();
            }
            let usage1 = ipam.usage().await.unwrap();
            assert_eq!(usage1.pools.iter().map(|p| p.in_use).sum::<u64>(), 0);
            assert!(store.list_handles().await.unwrap().is_empty());
            // Re-assigning gets as many addresses again, all distinct.
            let mut all = BTreeSet::new();
            for (i, (v4, v6)) in sizes.iter().enumerate() {
                let req = AutoAssignRequest::new(handle(i as u8), NodeInfo::new(node(i as u8 % 2)), *v4, *v6);
                let got = ipam.auto_assign(req).await.unwrap();
                assert_eq!((got.v4.len() as u32, got.v6.len() as u32), (*v4, *v6));
                for ip in got.v4.iter().chain(&got.v6) {
                    assert!(all.insert(*ip));
                }
            }
            assert_eq!(usage0.pools.len(), usage1.pools.len());
            assert!(ipam.check(false, None).await.unwrap().is_clean());
            let _ = first;
        });
    }
}
