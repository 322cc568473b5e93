//! The store conformance suite: every store's tests run it against a fresh store.
//!
//! `run(fresh)` calls each case with a new store from `fresh`; cases panic with a message
//! naming the store and what went wrong. The cases cover the [`Store`] contract itself
//! (compare-and-swap, listing, batches, watch) and the IPAM operations on top of it,
//! including a crash at every write of an allocation (see [`Interrupted`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;

use super::{
    Key, Kind, ListFilter, Object, Resource, Revision, Store, StoreExt, Versioned, WatchEvent,
    WatchStream, Write,
};
use crate::allocator::{AssignIpRequest, AutoAssignRequest, NodeInfo};
use crate::error::{IpamError, StoreError};
use crate::model::{
    AffinityState, BlockAffinity, HandleId, IpPool, IpamConfig, NodeName, PoolName,
};
use crate::ops::{Ipam, RetryPolicy};

/// Runs every case, each on a fresh store.
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    cas_semantics(fresh().await).await;
    list_filters(fresh().await).await;
    batch_semantics(fresh().await).await;
    watch_reports_changes(fresh().await).await;
    resources(fresh().await).await;
    allocation_round_trip(fresh().await).await;
    bad_input_changes_nothing(fresh().await).await;
    assign_specific_addresses(fresh().await).await;
    strict_affinity_and_block_limits(fresh().await).await;
    release_affinity_and_node(fresh().await).await;
    gc_and_check_repair(fresh().await).await;
    concurrent_tasks_get_unique_addresses(fresh().await).await;
    crash_at_every_write(&fresh).await;
}

fn node(n: &str) -> NodeName {
    NodeName::new(n).expect("valid node name")
}

fn handle(h: &str) -> HandleId {
    HandleId::new(h).expect("valid handle")
}

fn pool(name: &str, cidr: &str, block: u8) -> IpPool {
    let mut p = IpPool::new(
        PoolName::new(name).expect("pool name"),
        cidr.parse().expect("cidr"),
    );
    p.block_size = block;
    p
}

fn req(h: &str, n: &str, v4: u32, v6: u32) -> AutoAssignRequest {
    AutoAssignRequest::new(handle(h), NodeInfo::new(node(n)), v4, v6)
}

/// Quick retries: the suite's conflicts are deliberate.
fn ipam(store: Arc<dyn Store>) -> Ipam {
    Ipam::new(store).with_retry(RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    })
}

async fn assert_clean(store: &Arc<dyn Store>, what: &str) {
    let report = ipam(store.clone())
        .check(false, None)
        .await
        .expect("check runs");
    assert!(
        report.is_clean(),
        "{}: {what}: check found {:#?}",
        store.describe(),
        report.problems
    );
}

/// Create, update and delete are compare-and-swaps on the revision.
pub async fn cas_semantics(store: Arc<dyn Store>) {
    let d = store.describe();
    let p = Object::Pool(pool("p1", "10.0.0.0/16", 26));
    let key = p.key();
    assert_eq!(
        store.get(&key).await.expect("get"),
        None,
        "{d}: fresh store is empty"
    );
    let r1 = store
        .commit(&[Write::create(p.clone())])
        .await
        .expect("create")[0]
        .clone()
        .expect("create returns a revision");
    let err = store
        .commit(&[Write::create(p.clone())])
        .await
        .expect_err("second create");
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{d}: create over existing: {err}"
    );
    let got = store.get(&key).await.expect("get").expect("present");
    assert_eq!(got, Versioned::new(p.clone(), r1.clone()), "{d}");

    let mut changed = pool("p1", "10.0.0.0/16", 26);
    changed.nat_outgoing = true;
    let changed = Object::Pool(changed);
    let r2 = store
        .commit(&[Write::update(changed.clone(), r1.clone())])
        .await
        .expect("update")[0]
        .clone()
        .expect("revision");
    assert_ne!(r1, r2, "{d}: an update changes the revision");
    let err = store
        .commit(&[Write::update(p.clone(), r1.clone())])
        .await
        .expect_err("stale update");
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{d}: stale update: {err}"
    );
    let err = store
        .commit(&[Write::delete(key.clone(), r1.clone())])
        .await
        .expect_err("stale delete");
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{d}: stale delete: {err}"
    );
    assert_eq!(
        store.get(&key).await.expect("get").expect("present").value,
        changed,
        "{d}"
    );
    store
        .commit(&[Write::delete(key.clone(), r2.clone())])
        .await
        .expect("delete");
    assert_eq!(store.get(&key).await.expect("get"), None, "{d}: deleted");
    let err = store
        .commit(&[Write::update(p, r2)])
        .await
        .expect_err("update of deleted");
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{d}: update after delete: {err}"
    );
}

/// Listing by kind and by node; `node-1` must not see `node-10`'s affinities.
pub async fn list_filters(store: Arc<dyn Store>) {
    let d = store.describe();
    let mut writes = Vec::new();
    for (n, c) in [
        ("node-1", "10.0.0.0/26"),
        ("node-10", "10.0.0.64/26"),
        ("node-1", "fd00::/122"),
    ] {
        writes.push(Write::create(Object::Affinity(BlockAffinity {
            node: node(n),
            cidr: c.parse().expect("cidr"),
            state: AffinityState::Confirmed,
        })));
    }
    writes.push(Write::create(Object::Pool(pool("p", "10.0.0.0/16", 26))));
    writes.push(Write::create(Object::Config(IpamConfig::default())));
    for w in &writes {
        store.commit(std::slice::from_ref(w)).await.expect("create");
    }
    let mine = store.affinities_of(&node("node-1")).await.expect("list");
    assert_eq!(mine.len(), 2, "{d}: affinities of node-1: {mine:?}");
    assert!(mine.iter().all(|a| a.value.node == node("node-1")), "{d}");
    assert_eq!(store.list_affinities().await.expect("list").len(), 3, "{d}");
    assert_eq!(store.list_pools().await.expect("list").len(), 1, "{d}");
    assert_eq!(
        store
            .list(&ListFilter::Kind(Kind::Block))
            .await
            .expect("list")
            .len(),
        0,
        "{d}"
    );
    assert_eq!(
        store.get_config().await.expect("get").map(|c| c.value),
        Some(IpamConfig::default()),
        "{d}"
    );
}

/// An atomic store applies all or nothing; any store stops at the first failed write.
pub async fn batch_semantics(store: Arc<dyn Store>) {
    let d = store.describe();
    let a = Object::Pool(pool("a", "10.1.0.0/16", 26));
    let b = Object::Pool(pool("b", "10.2.0.0/16", 26));
    store
        .commit(&[Write::create(b.clone())])
        .await
        .expect("create b");
    let err = store
        .commit(&[Write::create(a.clone()), Write::create(b.clone())])
        .await
        .expect_err("batch with a conflict");
    assert!(matches!(err, StoreError::Conflict { .. }), "{d}: {err}");
    let a_exists = store.get(&a.key()).await.expect("get").is_some();
    if store.atomic_commit() {
        assert!(!a_exists, "{d}: an atomic batch applied part of itself");
    } else {
        assert!(
            a_exists,
            "{d}: a sequential batch must apply writes before the failure"
        );
    }
    let revs = store
        .commit(&[
            Write::put(
                a.clone(),
                store.get(&a.key()).await.expect("get").map(|v| v.revision),
            ),
            Write::create(Object::Pool(pool("c", "10.3.0.0/16", 26))),
        ])
        .await
        .expect("batch");
    assert_eq!(revs.len(), 2, "{d}");
}

async fn next_event(w: &mut WatchStream, d: &str) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("{d}: watch error: {e}"),
        Ok(None) => panic!("{d}: watch ended"),
        Err(_) => panic!("{d}: no watch event within 10 s"),
    }
}

/// A watch starts with the current objects and then reports puts and deletes.
pub async fn watch_reports_changes(store: Arc<dyn Store>) {
    let d = store.describe();
    let existing = Object::Pool(pool("w0", "10.9.0.0/16", 26));
    store
        .commit(&[Write::create(existing.clone())])
        .await
        .expect("create");
    let mut w = store
        .watch(&[Kind::Pool, Kind::Block])
        .await
        .expect("watch");
    match next_event(&mut w, &d).await {
        WatchEvent::Resync(objs) => {
            assert_eq!(
                objs.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
                vec![existing],
                "{d}"
            )
        }
        other => panic!("{d}: first event {other:?}"),
    }
    // An affinity is not watched; the pool is.
    store
        .commit(&[Write::create(Object::Affinity(BlockAffinity {
            node: node("n"),
            cidr: "10.9.0.0/26".parse().expect("cidr"),
            state: AffinityState::Pending,
        }))])
        .await
        .expect("create");
    let p = Object::Pool(pool("w1", "10.10.0.0/16", 26));
    let rev = store
        .commit(&[Write::create(p.clone())])
        .await
        .expect("create")[0]
        .clone()
        .expect("rev");
    assert_eq!(
        next_event(&mut w, &d).await,
        WatchEvent::Put(Versioned::new(p.clone(), rev.clone())),
        "{d}"
    );
    store
        .commit(&[Write::delete(p.key(), rev)])
        .await
        .expect("delete");
    assert_eq!(
        next_event(&mut w, &d).await,
        WatchEvent::Deleted(p.key()),
        "{d}"
    );
}

/// The resource kinds [`resources`] uses; a store that must be told its resource kinds
/// in advance (Kubernetes) is told these.
pub const RESOURCE_KINDS: [&str; 2] = ["Widget", "Gadget"];

fn resource(kind: &str, name: &str, spec: serde_json::Value) -> Object {
    let labels = [("zone".to_owned(), "a".to_owned())].into();
    Object::Resource(Resource::new(kind, name, labels, spec).expect("valid resource"))
}

/// Opaque resources: compare-and-swap, listing by kind and all kinds, watching, and no
/// mix-up with the IPAM objects or between kinds sharing a name.
pub async fn resources(store: Arc<dyn Store>) {
    let d = store.describe();
    let [widget, gadget] = RESOURCE_KINDS;
    let mut w = store.watch(&[Kind::Resource]).await.expect("watch");
    assert_eq!(
        next_event(&mut w, &d).await,
        WatchEvent::Resync(vec![]),
        "{d}: no resources yet"
    );
    let a = resource(widget, "a", serde_json::json!({"size": 1, "tags": ["x"]}));
    let a_gadget = resource(gadget, "a", serde_json::json!({"other": true}));
    let revs = store
        .commit(&[Write::create(a.clone()), Write::create(a_gadget.clone())])
        .await
        .expect("create two kinds with one name");
    let r1 = revs[0].clone().expect("revision");
    let mut seen = vec![next_event(&mut w, &d).await, next_event(&mut w, &d).await];
    seen.sort_by_key(|e| format!("{e:?}"));
    let mut want = vec![
        WatchEvent::Put(Versioned::new(a.clone(), r1.clone())),
        WatchEvent::Put(Versioned::new(
            a_gadget.clone(),
            revs[1].clone().expect("rev"),
        )),
    ];
    want.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(seen, want, "{d}: watch of new resources");

    let err = store
        .commit(&[Write::create(a.clone())])
        .await
        .expect_err("create over existing");
    assert!(matches!(err, StoreError::Conflict { .. }), "{d}: {err}");
    let got = store
        .get_resource(widget, "a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        Object::Resource(got.value),
        a,
        "{d}: spec and labels round trip"
    );

    let b = resource(widget, "b", serde_json::json!({}));
    store.commit(&[Write::create(b)]).await.expect("create b");
    let widgets = store.list_resources(widget).await.expect("list");
    assert_eq!(
        widgets
            .iter()
            .map(|v| v.value.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"],
        "{d}: widgets"
    );
    assert_eq!(
        store.list_resources(gadget).await.expect("list").len(),
        1,
        "{d}"
    );
    assert_eq!(
        store
            .list(&ListFilter::Kind(Kind::Resource))
            .await
            .expect("list")
            .len(),
        3,
        "{d}: every resource"
    );
    assert!(store.list_pools().await.expect("pools").is_empty(), "{d}");
    // The watch saw b; drain it before the update.
    assert!(
        matches!(next_event(&mut w, &d).await, WatchEvent::Put(_)),
        "{d}"
    );

    let a2 = resource(widget, "a", serde_json::json!({"size": 2}));
    let r2 = store
        .commit(&[Write::update(a2.clone(), r1.clone())])
        .await
        .expect("update")[0]
        .clone()
        .expect("rev");
    assert_eq!(
        next_event(&mut w, &d).await,
        WatchEvent::Put(Versioned::new(a2.clone(), r2.clone())),
        "{d}: watch of an update"
    );
    let err = store
        .commit(&[Write::update(a.clone(), r1)])
        .await
        .expect_err("stale update");
    assert!(matches!(err, StoreError::Conflict { .. }), "{d}: {err}");
    store
        .commit(&[Write::delete(a2.key(), r2)])
        .await
        .expect("delete");
    assert_eq!(
        next_event(&mut w, &d).await,
        WatchEvent::Deleted(a2.key()),
        "{d}: watch of a delete"
    );
    assert_eq!(store.get(&a2.key()).await.expect("get"), None, "{d}");
    assert!(
        store
            .get_resource(gadget, "a")
            .await
            .expect("get")
            .is_some(),
        "{d}: the other kind's object of the same name stays"
    );
}

/// Allocate IPv4 and IPv6 together, release by address and by handle, check stays clean.
pub async fn allocation_round_trip(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("v4", "10.20.0.0/24", 28))
        .await
        .expect("pool");
    ipam.add_pool(pool("v6", "fd20::/120", 124))
        .await
        .expect("pool");
    let got = ipam
        .auto_assign(req("h1", "node-a", 2, 1))
        .await
        .expect("assign");
    assert_eq!((got.v4.len(), got.v6.len()), (2, 1), "{d}: {got:?}");
    // Idempotent per handle: asking again returns the same addresses.
    let again = ipam
        .auto_assign(req("h1", "node-a", 2, 1))
        .await
        .expect("assign again");
    assert_eq!(got, again, "{d}: a repeated request got other addresses");
    let usage = ipam.usage().await.expect("usage");
    let blocks: Vec<_> = usage.pools.iter().flat_map(|p| &p.blocks).collect();
    assert_eq!(blocks.len(), 2, "{d}: one block per family: {blocks:?}");
    assert!(blocks.iter().all(|b| b.node == Some(node("node-a"))), "{d}");
    let affs = store
        .affinities_of(&node("node-a"))
        .await
        .expect("affinities");
    assert!(
        affs.iter()
            .all(|a| a.value.state == AffinityState::Confirmed),
        "{d}: {affs:?}"
    );
    assert_clean(&store, "after assign").await;

    let rel = ipam.release_ips(vec![got.v4[0]]).await.expect("release");
    assert_eq!(rel.released, vec![(got.v4[0], handle("h1"))], "{d}");
    let rel = ipam
        .release_ips(vec![got.v4[0]])
        .await
        .expect("release twice");
    assert_eq!(rel.not_allocated, vec![got.v4[0]], "{d}");
    assert_clean(&store, "after release by address").await;
    let h = store
        .get_handle(&handle("h1"))
        .await
        .expect("get")
        .expect("handle kept");
    assert_eq!(
        h.value.block.values().sum::<u32>(),
        2,
        "{d}: handle counts {h:?}"
    );

    let mut freed = ipam
        .release_handle(handle("h1"))
        .await
        .expect("release handle");
    freed.sort();
    let mut want = vec![got.v4[1], got.v6[0]];
    want.sort();
    assert_eq!(freed, want, "{d}");
    assert_eq!(
        store.get_handle(&handle("h1")).await.expect("get"),
        None,
        "{d}"
    );
    assert_clean(&store, "after release by handle").await;
    // Released addresses come back eventually: allocate the whole v4 pool.
    let mut all = BTreeSet::new();
    for i in 0..256 {
        let g = ipam
            .auto_assign(req(&format!("f{i}"), "node-a", 1, 0))
            .await
            .expect("fill");
        assert!(all.insert(g.v4[0]), "{d}: {} handed out twice", g.v4[0]);
    }
    let err = ipam
        .auto_assign(req("one-too-many", "node-a", 1, 0))
        .await
        .expect_err("pool is full");
    assert!(matches!(err, IpamError::NoAddresses { .. }), "{d}: {err}");
    assert_clean(&store, "after filling the pool").await;
}

/// Overlapping pools, bad sizes and addresses outside every pool are refused, untouched.
pub async fn bad_input_changes_nothing(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("base", "10.30.0.0/16", 26))
        .await
        .expect("pool");
    let before = crate::ops::full_snapshot(store.as_ref())
        .await
        .expect("snapshot");
    let cases = [
        (pool("inner", "10.30.1.0/24", 26), "overlap"),
        (pool("outer", "10.0.0.0/8", 26), "overlap"),
        (pool("small", "10.31.0.0/28", 26), "smaller than its block"),
        (pool("big", "10.32.0.0/16", 19), "out of range"),
        (pool("v6", "fd30::/64", 129), "out of range"),
        (pool("base", "10.33.0.0/16", 26), "already exists"),
    ];
    for (p, why) in cases {
        let err = ipam.add_pool(p.clone()).await.expect_err(why);
        assert!(err.to_string().contains(why), "{d}: {} → {err}", p.cidr);
    }
    let ip: IpAddr = "192.168.77.1".parse().expect("ip");
    let err = ipam
        .assign_ip(AssignIpRequest {
            ip,
            handle: handle("x"),
            node: NodeInfo::new(node("n")),
            namespace: None,
            pod: None,
        })
        .await
        .expect_err("outside pools");
    assert!(matches!(err, IpamError::NotInAnyPool { .. }), "{d}: {err}");
    let err = ipam.release_ips(vec![ip]).await.expect_err("outside pools");
    assert!(matches!(err, IpamError::NotInAnyPool { .. }), "{d}: {err}");
    let after = crate::ops::full_snapshot(store.as_ref())
        .await
        .expect("snapshot");
    assert_eq!(
        format!("{:?}", before.pools),
        format!("{:?}", after.pools),
        "{d}"
    );
    assert!(
        after.blocks.is_empty() && after.handles.is_empty() && after.affinities.is_empty(),
        "{d}"
    );
}

/// Specific addresses: idempotent for the same handle, refused for another.
pub async fn assign_specific_addresses(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("p", "10.40.0.0/24", 26))
        .await
        .expect("pool");
    let ip: IpAddr = "10.40.0.70".parse().expect("ip");
    let r = |h: &str| AssignIpRequest {
        ip,
        handle: handle(h),
        node: NodeInfo::new(node("node-a")),
        namespace: Some("ns".into()),
        pod: Some("pod".into()),
    };
    assert_eq!(ipam.assign_ip(r("gw")).await.expect("assign"), ip, "{d}");
    assert_eq!(ipam.assign_ip(r("gw")).await.expect("again"), ip, "{d}");
    let err = ipam.assign_ip(r("other")).await.expect_err("taken");
    assert!(
        matches!(err, IpamError::AlreadyAllocated { .. }),
        "{d}: {err}"
    );
    let b = store
        .get_block(&"10.40.0.64/26".parse().expect("cidr"))
        .await
        .expect("get")
        .expect("block");
    assert_eq!(b.value.affinity, Some(node("node-a")), "{d}");
    let owner = b.value.owner(ip).expect("owner");
    assert_eq!(owner.pod.as_deref(), Some("pod"), "{d}");
    // Auto-assign in the same block skips the reserved address.
    let g = ipam
        .auto_assign(req("p1", "node-a", 63, 0))
        .await
        .expect("the rest of the block");
    assert!(!g.v4.contains(&ip), "{d}: {ip} handed out again");
    assert!(
        g.v4.iter().all(|a| b.value.cidr.contains(a)),
        "{d}: own block first"
    );
    assert_clean(&store, "after specific assignment").await;
}

/// strictAffinity forbids borrowing; maxBlocksPerHost limits claims.
pub async fn strict_affinity_and_block_limits(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("p", "10.50.0.0/27", 28))
        .await
        .expect("pool");
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1,
        auto_allocate_blocks: true,
    })
    .await
    .expect("config");
    let a = ipam
        .auto_assign(req("a", "node-a", 16, 0))
        .await
        .expect("fill node-a's block");
    assert_eq!(a.v4.len(), 16, "{d}");
    let err = ipam
        .auto_assign(req("a2", "node-a", 1, 0))
        .await
        .expect_err("limit");
    assert!(matches!(err, IpamError::NoAddresses { .. }), "{d}: {err}");
    let b = ipam
        .auto_assign(req("b", "node-b", 1, 0))
        .await
        .expect("node-b claims the other block");
    ipam.set_config(IpamConfig {
        strict_affinity: false,
        max_blocks_per_host: 1,
        auto_allocate_blocks: true,
    })
    .await
    .expect("config");
    let borrowed = ipam
        .auto_assign(req("a3", "node-a", 1, 0))
        .await
        .expect("borrow");
    let cidr_b: ipnet::IpNet = "10.50.0.16/28".parse().expect("cidr");
    assert!(
        cidr_b.contains(&borrowed.v4[0]) && cidr_b.contains(&b.v4[0]),
        "{d}: {borrowed:?} {b:?}"
    );
    let blk = store.get_block(&cidr_b).await.expect("get").expect("block");
    assert_eq!(
        blk.value.affinity,
        Some(node("node-b")),
        "{d}: borrowing keeps the owner"
    );
    assert_eq!(
        blk.value.owner(borrowed.v4[0]).and_then(|o| o.node.clone()),
        Some(node("node-a")),
        "{d}"
    );
    assert_clean(&store, "after borrowing").await;
}

/// An empty block can be given up; a deleted node's blocks go or lose their affinity.
pub async fn release_affinity_and_node(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("p", "10.60.0.0/24", 28))
        .await
        .expect("pool");
    let g = ipam
        .auto_assign(req("h", "node-a", 17, 0))
        .await
        .expect("two blocks");
    let cidrs: BTreeSet<ipnet::IpNet> = store
        .list_blocks()
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.value.cidr)
        .collect();
    assert_eq!(cidrs.len(), 2, "{d}");
    let first = *cidrs.iter().next().expect("block");
    let err = ipam
        .release_block_affinity(node("node-a"), first)
        .await
        .expect_err("not empty");
    assert!(matches!(err, IpamError::BlockNotEmpty { .. }), "{d}: {err}");
    assert_clean(&store, "after refused release").await;
    // Free the block that holds one address, then release it.
    let lone = store
        .list_blocks()
        .await
        .expect("list")
        .into_iter()
        .find(|b| b.value.in_use() == 1)
        .expect("a block with one address");
    let ip =
        g.v4.iter()
            .find(|ip| lone.value.cidr.contains(*ip))
            .copied()
            .expect("ip");
    ipam.release_ips(vec![ip]).await.expect("release");
    ipam.release_block_affinity(node("node-a"), lone.value.cidr)
        .await
        .expect("release block");
    assert_eq!(
        store.get_block(&lone.value.cidr).await.expect("get"),
        None,
        "{d}"
    );
    assert_eq!(
        store
            .affinities_of(&node("node-a"))
            .await
            .expect("list")
            .len(),
        1,
        "{d}"
    );
    assert_clean(&store, "after releasing a block").await;
    let out = ipam
        .release_node(node("node-a"))
        .await
        .expect("release node");
    assert_eq!(out.blocks_orphaned.len(), 1, "{d}: {out:?}");
    assert!(
        store
            .affinities_of(&node("node-a"))
            .await
            .expect("list")
            .is_empty(),
        "{d}"
    );
    // Its addresses stay allocated, in a block without affinity that others may borrow.
    let b = store
        .get_block(&out.blocks_orphaned[0])
        .await
        .expect("get")
        .expect("block");
    assert_eq!(
        (b.value.affinity.clone(), b.value.in_use()),
        (None, 16),
        "{d}"
    );
    assert_clean(&store, "after releasing the node").await;
}

/// GC frees what no live handle owns; check finds and repairs damage.
pub async fn gc_and_check_repair(store: Arc<dyn Store>) {
    let d = store.describe();
    let ipam = ipam(store.clone());
    ipam.add_pool(pool("p", "10.70.0.0/24", 26))
        .await
        .expect("pool");
    for h in ["live-1", "live-2", "dead-1", "dead-2"] {
        ipam.auto_assign(req(h, "node-a", 1, 0))
            .await
            .expect("assign");
    }
    // Every allocation records when it was made, and the store keeps it (the
    // Kubernetes CRD schema must not prune it).
    let blocks = store.list_blocks().await.expect("list blocks");
    let untimed: Vec<String> = blocks
        .iter()
        .flat_map(|b| b.value.allocated().map(|(ip, a)| (ip, a.clone())))
        .filter(|(_, a)| a.allocated_at.is_none())
        .map(|(ip, a)| format!("{ip} {}", a.handle_id))
        .collect();
    assert!(
        untimed.is_empty(),
        "{d}: allocations without a time: {untimed:?}"
    );
    let live: BTreeSet<HandleId> = [handle("live-1"), handle("live-2")].into();
    let live_list = crate::check::LiveHandles {
        handles: live.clone(),
        taken_at: None,
    };
    let report = ipam
        .check(false, Some(live_list.clone()))
        .await
        .expect("check");
    assert_eq!(
        report.counts().get("leak"),
        Some(&2),
        "{d}: {:?}",
        report.problems
    );
    let freed = ipam.gc(live.clone()).await.expect("gc");
    assert_eq!(freed.len(), 2, "{d}: {freed:?}");
    assert!(
        ipam.check(false, Some(live_list.clone()))
            .await
            .expect("check")
            .is_clean(),
        "{d}"
    );

    // Damage: a handle record deleted behind the allocator's back, a pending affinity
    // without block, a block whose free list lists an allocated address.
    let h = store
        .get_handle(&handle("live-1"))
        .await
        .expect("get")
        .expect("handle");
    store
        .commit(&[Write::delete(Key::Handle(handle("live-1")), h.revision)])
        .await
        .expect("delete");
    store
        .commit(&[Write::create(Object::Affinity(BlockAffinity {
            node: node("ghost"),
            cidr: "10.70.0.192/26".parse().expect("cidr"),
            state: AffinityState::Pending,
        }))])
        .await
        .expect("create");
    let b = store.list_blocks().await.expect("list").remove(0);
    let mut v = b.value.clone();
    v.unallocated.push(0);
    store
        .commit(&[Write::update(Object::Block(v), b.revision)])
        .await
        .expect("corrupt");
    let report = ipam.check(false, None).await.expect("check");
    assert_eq!(report.problems.len(), 3, "{d}: {:#?}", report.problems);
    let report = ipam.check(true, None).await.expect("repair");
    assert!(
        report.remaining.is_empty(),
        "{d}: left {:#?}",
        report.remaining
    );
    assert_clean(&store, "after repair").await;
    let held = store
        .get_handle(&handle("live-1"))
        .await
        .expect("get")
        .expect("record rebuilt");
    assert_eq!(held.value.block.values().sum::<u32>(), 1, "{d}");
}

/// Tasks allocating at once on a few nodes never share an address.
pub async fn concurrent_tasks_get_unique_addresses(store: Arc<dyn Store>) {
    let d = store.describe();
    ipam(store.clone())
        .add_pool(pool("p", "10.80.0.0/22", 28))
        .await
        .expect("pool");
    ipam(store.clone())
        .add_pool(pool("p6", "fd80::/116", 124))
        .await
        .expect("pool");
    let mut tasks = Vec::new();
    for t in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ipam = ipam(store);
            let mut got = Vec::new();
            for i in 0..15 {
                let r = req(&format!("t{t}-{i}"), &format!("node-{}", t % 3), 1, 1);
                let a = ipam.auto_assign(r).await.expect("assign");
                got.extend(a.v4);
                got.extend(a.v6);
            }
            got
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for ip in t.await.expect("task") {
            assert!(all.insert(ip), "{d}: {ip} handed out twice");
        }
    }
    assert_eq!(all.len(), 6 * 15 * 2, "{d}");
    assert_clean(&store, "after concurrent allocation").await;
}

/// A store that stops after a number of writes, as a node that crashes would.
///
/// Writes pass one at a time (so a batch stops half-way even on an atomic store); once
/// the budget is spent every commit fails with `Unavailable`. With `lose_last`, the write
/// that spends the budget is applied but reported as failed: the outcome-unknown case.
pub struct Interrupted {
    pub inner: Arc<dyn Store>,
    budget: AtomicUsize,
    lose_last: bool,
}

impl Interrupted {
    pub fn new(inner: Arc<dyn Store>, writes: usize, lose_last: bool) -> Self {
        Interrupted {
            inner,
            budget: AtomicUsize::new(writes),
            lose_last,
        }
    }

    fn down(&self) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            detail: "crashed (test)".into(),
        }
    }
}

#[async_trait]
impl Store for Interrupted {
    fn describe(&self) -> String {
        format!("interrupted {}", self.inner.describe())
    }
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        self.inner.list(filter).await
    }
    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let mut revs = Vec::new();
        for w in writes {
            let left = self.budget.load(Ordering::SeqCst);
            if left == 0 {
                return Err(self.down());
            }
            self.budget.store(left - 1, Ordering::SeqCst);
            let r = self.inner.commit(std::slice::from_ref(w)).await?;
            if left == 1 && self.lose_last {
                return Err(self.down());
            }
            revs.extend(r);
        }
        Ok(revs)
    }
    fn atomic_commit(&self) -> bool {
        false
    }
    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        self.inner.watch(kinds).await
    }
}

/// Stops a node's first allocation (claim: pending affinity, block, confirm; then handle,
/// then block) after each write, with the last write lost or landed; then the same node
/// retries, another node allocates, and check must be clean (after repair where a claim
/// of a dead node is involved) with no address given twice.
pub async fn crash_at_every_write<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for writes in 0..=6 {
        for lose_last in [false, true] {
            let store = fresh().await;
            let d = format!(
                "{} (crash after {writes} writes, lose_last={lose_last})",
                store.describe()
            );
            ipam(store.clone())
                .add_pool(pool("p", "10.90.0.0/24", 28))
                .await
                .expect("pool");
            let crashed = Ipam::new(Arc::new(Interrupted::new(store.clone(), writes, lose_last)))
                .with_retry(RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                });
            let first = crashed.auto_assign(req("h-a", "node-a", 1, 0)).await;
            // Another node allocates while node-a's claim may be half-done.
            let other = ipam(store.clone())
                .auto_assign(req("h-b", "node-b", 1, 0))
                .await
                .expect("node-b");
            // node-a comes back and retries the same request.
            let retry = ipam(store.clone())
                .auto_assign(req("h-a", "node-a", 1, 0))
                .await
                .expect("retry");
            if let Ok(f) = &first {
                assert_eq!(f, &retry, "{d}: the retry got other addresses");
            }
            assert_eq!(retry.v4.len(), 1, "{d}");
            assert_ne!(retry.v4[0], other.v4[0], "{d}: handed out twice");
            let report = ipam(store.clone()).check(true, None).await.expect("check");
            assert!(
                report.remaining.is_empty(),
                "{d}: left {:#?}",
                report.remaining
            );
            assert_clean(&store, &d).await;
            let blocks = store.list_blocks().await.expect("blocks");
            let a_blocks: Vec<_> = blocks
                .iter()
                .filter(|b| b.value.affinity == Some(node("node-a")))
                .collect();
            assert!(
                a_blocks.iter().any(|b| b.value.cidr.contains(&retry.v4[0])),
                "{d}: node-a's address is not in its own block: {blocks:?}"
            );
        }
    }
}
