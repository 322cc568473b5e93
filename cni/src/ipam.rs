//! Pod addresses through serval's block IPAM (the `ipam` crate): assign, release by
//! handle, what a handle holds, this node's garbage collection, and whether the node can
//! still take pods.
//!
//! Concurrent plugin runs on one node would all allocate from the node's block and lose
//! compare-and-swaps to each other; a node-wide lock file (held only around IPAM calls,
//! never while configuring the kernel) makes them take turns instead, as Calico's plugin
//! does. Other nodes, and the agent, still meet through the store's compare-and-swap.
//!
//! The lock file is root's alone (0600, in a directory created 0700): a local user
//! cannot open it, so cannot hold it and stall every pod of the node. A lock that stays
//! busy anyway (a stuck plugin) ends in "try again later" (11) after [`LOCK_TIMEOUT`],
//! as does the file store's own lock after its shorter bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::allocator::{AssignIpRequest, AutoAssignRequest, Gc, NodeInfo, Plan, Snapshot, Step};
use ipam::model::{AffinityState, AllowedUse, Family, HandleId, IpPool, NodeName};
use ipam::store::Store;
use ipam::{Ipam, IpamError, StoreError};

use crate::decide::AddressRequest;
use crate::spec::{CniError, ErrorCode};

/// How long a plugin waits for the node's IPAM lock before asking the runtime to try
/// again later.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The node-wide IPAM lock, released on drop.
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    pub async fn acquire(path: &Path, timeout: Duration) -> Result<NodeLock, CniError> {
        let io = |e: std::io::Error| {
            CniError::new(
                ErrorCode::Datastore,
                format!("cannot open the IPAM lock {}", path.display()),
            )
            .details(e.to_string())
        };
        let file = ipam::store::file::open_private(path).map_err(io)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(NodeLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            if started.elapsed() >= timeout {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    "the node's IPAM lock stayed busy".to_owned(),
                )
                .details(format!(
                    "{}: {}",
                    path.display(),
                    ipam::store::file::lock_busy(timeout)
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}

/// An IPAM error as the runtime sees it: unreachable or contended stores are "try again
/// later" (11), a full pool is 100, a taken or foreign fixed address 105, the rest 101.
pub fn cni_error(doing: &str, e: IpamError) -> CniError {
    let code = match &e {
        IpamError::NoAddresses { .. } => ErrorCode::NoAddress,
        IpamError::NotInAnyPool { .. } | IpamError::AlreadyAllocated { .. } => {
            ErrorCode::AddressUnavailable
        }
        IpamError::RetriesExhausted { .. } => ErrorCode::TryAgainLater,
        IpamError::Store(s) => store_code(s),
        _ => ErrorCode::Datastore,
    };
    CniError::new(code, doing.to_owned()).details(e.to_string())
}

fn store_code(e: &StoreError) -> ErrorCode {
    match e {
        e if e.is_retryable() => ErrorCode::TryAgainLater,
        // The file store's lock stayed busy: nothing was written, a later call may pass.
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
            ErrorCode::TryAgainLater
        }
        StoreError::Config(_) => ErrorCode::InvalidConfig,
        _ => ErrorCode::Datastore,
    }
}

/// IPAM as a node's plugin uses it.
pub struct NodeIpam {
    pub ipam: Ipam,
    pub lock_path: std::path::PathBuf,
}

impl NodeIpam {
    pub fn new(store: Arc<dyn Store>, lock_path: &Path) -> NodeIpam {
        NodeIpam {
            ipam: Ipam::new(store),
            lock_path: lock_path.to_owned(),
        }
    }

    async fn lock(&self) -> Result<NodeLock, CniError> {
        NodeLock::acquire(&self.lock_path, LOCK_TIMEOUT).await
    }

    /// Gives the handle the requested addresses (idempotent: an earlier, interrupted ADD
    /// of the same attachment gets back what it had). On failure nothing stays with the
    /// handle.
    pub async fn assign(
        &self,
        node: &NodeInfo,
        handle: &HandleId,
        req: &AddressRequest,
        pod: Option<(&str, &str)>,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Result<Vec<IpAddr>, CniError> {
        let _lock = self.lock().await?;
        let out = self
            .assign_locked(node, handle, req, pod, namespace_labels)
            .await;
        if out.is_err() {
            if let Err(e) = self.ipam.release_handle(handle.clone()).await {
                tracing::warn!(%handle, error = %e, "releasing a partial allocation failed");
            }
        }
        out
    }

    async fn assign_locked(
        &self,
        node: &NodeInfo,
        handle: &HandleId,
        req: &AddressRequest,
        pod: Option<(&str, &str)>,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Result<Vec<IpAddr>, CniError> {
        let namespace = pod.map(|(ns, _)| ns.to_owned());
        let pod_name = pod.map(|(_, p)| p.to_owned());
        match req {
            AddressRequest::Fixed(ips) => {
                let mut out = Vec::new();
                for ip in ips {
                    let r = AssignIpRequest {
                        ip: *ip,
                        handle: handle.clone(),
                        node: node.clone(),
                        namespace: namespace.clone(),
                        pod: pod_name.clone(),
                    };
                    out.push(
                        self.ipam
                            .assign_ip(r)
                            .await
                            .map_err(|e| cni_error(&format!("cannot assign {ip}"), e))?,
                    );
                }
                Ok(out)
            }
            AddressRequest::Auto { v4, v6 } => {
                // One request when both families may come from any pool; otherwise one
                // per family, each restricted to its own pools.
                let mut asks = Vec::new();
                match (v4, v6) {
                    (Some(a), Some(b)) if a.is_empty() && b.is_empty() => {
                        asks.push((1, 1, Vec::new()))
                    }
                    _ => {
                        if let Some(p) = v4 {
                            asks.push((1, 0, p.clone()));
                        }
                        if let Some(p) = v6 {
                            asks.push((0, 1, p.clone()));
                        }
                    }
                }
                let mut got = Vec::new();
                for (n4, n6, pools) in asks {
                    let mut r = AutoAssignRequest::new(handle.clone(), node.clone(), n4, n6);
                    r.namespace = namespace.clone();
                    r.namespace_labels = namespace_labels.clone();
                    r.pod = pod_name.clone();
                    r.pools = pools;
                    let a = self
                        .ipam
                        .auto_assign(r)
                        .await
                        .map_err(|e| cni_error("cannot allocate an address", e))?;
                    got = a.v4.into_iter().chain(a.v6).collect();
                }
                Ok(got)
            }
        }
    }

    /// Frees everything the handle holds; nothing held is fine.
    pub async fn release(&self, handle: &HandleId) -> Result<Vec<IpAddr>, CniError> {
        let _lock = self.lock().await?;
        self.ipam
            .release_handle(handle.clone())
            .await
            .map_err(|e| cni_error("cannot release the pod's addresses", e))
    }

    /// The addresses the handle holds (read only).
    pub async fn held(&self, handle: &HandleId) -> Result<Vec<IpAddr>, CniError> {
        self.ipam
            .run(Held {
                handle: handle.clone(),
            })
            .await
            .map_err(|e| cni_error("cannot read the pod's addresses", e))
    }

    pub async fn pools(&self) -> Result<Vec<IpPool>, CniError> {
        self.ipam
            .pools()
            .await
            .map_err(|e| cni_error("cannot read the IP pools", e))
    }

    /// Releases this node's allocations of the network (`prefix`) whose handle is not
    /// in `live`.
    pub async fn gc(
        &self,
        node: &NodeName,
        prefix: &str,
        live: BTreeSet<HandleId>,
    ) -> Result<Vec<(IpAddr, HandleId)>, CniError> {
        let _lock = self.lock().await?;
        self.ipam
            .run(Gc::of_node(node.clone(), prefix.to_owned(), live))
            .await
            .map_err(|e| cni_error("garbage collection failed", e))
    }

    /// Whether an address of each wanted family can be had on this node.
    pub async fn capacity(
        &self,
        node: &NodeInfo,
        v4: bool,
        v6: bool,
    ) -> Result<Result<(), String>, CniError> {
        self.ipam
            .run(Capacity {
                node: node.clone(),
                v4,
                v6,
            })
            .await
            .map_err(|e| cni_error("cannot read the IP pools", e))
    }
}

use ipam::need;

/// The addresses a handle holds.
struct Held {
    handle: HandleId,
}

impl Plan for Held {
    type Output = Vec<IpAddr>;

    fn name(&self) -> &'static str {
        "read handle"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Vec<IpAddr>>, IpamError> {
        let Some(record) = need!(snap.handle(&self.handle)) else {
            return Ok(Step::Done(Vec::new()));
        };
        let blocks = need!(snap.blocks_in(record.value.block.keys().copied()));
        Ok(Step::Done(
            blocks
                .iter()
                .flat_map(|b| b.value.ips_of(&self.handle))
                .collect(),
        ))
    }
}

/// Whether a node can get an address of each wanted family: a free address in one of its
/// blocks, a block it may still claim, or (without strictAffinity) a free address to
/// borrow. `Ok(Err(why))` when it cannot.
pub struct Capacity {
    pub node: NodeInfo,
    pub v4: bool,
    pub v6: bool,
}

impl Plan for Capacity {
    type Output = Result<(), String>;

    fn name(&self) -> &'static str {
        "capacity"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Self::Output>, IpamError> {
        let node = &self.node.name;
        let affs = need!(snap.affinities_of(node));
        let blocks: Vec<_> = need!(snap.all_blocks()).collect();
        let cfg = &snap.config;
        let may_claim = cfg.auto_allocate_blocks
            && (cfg.max_blocks_per_host == 0 || (affs.len() as u32) < cfg.max_blocks_per_host);
        for (family, wanted) in [(Family::V4, self.v4), (Family::V6, self.v6)] {
            if !wanted {
                continue;
            }
            let pools: Vec<&IpPool> = snap
                .pools
                .iter()
                .map(|p| &p.value)
                .filter(|p| {
                    p.family() == family && p.usable_by(&self.node.labels, AllowedUse::Workload)
                })
                .collect();
            if pools.is_empty() {
                return Ok(Step::Done(Err(format!(
                    "no enabled {family} pool selects node {node}"
                ))));
            }
            let in_pools = |b: &ipam::model::Block| pools.iter().any(|p| p.cidr.contains(&b.cidr));
            let own_free = affs.iter().any(|a| {
                a.value.state == AffinityState::Confirmed
                    && blocks.iter().any(|b| {
                        b.value.cidr == a.value.cidr
                            && b.value.affinity.as_ref() == Some(node)
                            && !b.value.deleted
                            && b.value.free() > 0
                            && in_pools(&b.value)
                    })
            });
            let claimable = may_claim
                && pools.iter().any(|p| {
                    let taken = blocks
                        .iter()
                        .filter(|b| p.cidr.contains(&b.value.cidr))
                        .count();
                    (taken as u128) < p.block_count()
                });
            let borrowable = !cfg.strict_affinity
                && blocks
                    .iter()
                    .any(|b| !b.value.deleted && b.value.free() > 0 && in_pools(&b.value));
            if !(own_free || claimable || borrowable) {
                return Ok(Step::Done(Err(format!(
                    "every {family} pool node {node} may use is full"
                ))));
            }
        }
        Ok(Step::Done(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::model::{AllocationAttribute, Block, Handle, PoolName};
    use ipam::store::memory::MemStore;
    use ipam::store::{Object, Revision, Write};
    use std::collections::BTreeMap;

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn h(s: &str) -> HandleId {
        HandleId::new(s).unwrap()
    }

    async fn ipam_with_pool(cidr: &str, block: u8) -> Ipam {
        let ipam = Ipam::new(Arc::new(MemStore::new()));
        let mut p = IpPool::new(PoolName::new("p").unwrap(), cidr.parse().unwrap());
        p.block_size = block;
        ipam.add_pool(p).await.unwrap();
        ipam
    }

    async fn alloc(ipam: &Ipam, handle: &str, on: &str) -> IpAddr {
        let got = ipam
            .auto_assign(AutoAssignRequest::new(
                h(handle),
                NodeInfo::new(node(on)),
                1,
                0,
            ))
            .await
            .unwrap();
        got.v4[0]
    }

    #[tokio::test]
    async fn node_gc_frees_only_this_nodes_dead_handles_of_the_network() {
        let ipam = ipam_with_pool("10.0.0.0/24", 28).await;
        let keep = alloc(&ipam, "net.live.eth0", "a").await;
        let dead = alloc(&ipam, "net.dead.eth0", "a").await;
        let other_net = alloc(&ipam, "other.dead.eth0", "a").await;
        let other_node = alloc(&ipam, "net.elsewhere.eth0", "b").await;
        let live: BTreeSet<HandleId> = [h("net.live.eth0")].into();
        let freed = ipam
            .run(Gc::of_node(node("a"), "net.".into(), live.clone()))
            .await
            .unwrap();
        assert_eq!(freed, vec![(dead, h("net.dead.eth0"))]);
        let snap = ipam::ops::full_snapshot(ipam.store().as_ref())
            .await
            .unwrap();
        let allocated: Vec<IpAddr> = snap
            .blocks
            .values()
            .flatten()
            .flat_map(|b| b.value.allocated().map(|(ip, _)| ip).collect::<Vec<_>>())
            .collect();
        for ip in [keep, other_net, other_node] {
            assert!(allocated.contains(&ip), "{ip} must stay");
        }
        assert!(!allocated.contains(&dead));
        assert!(
            snap.handles
                .get(&h("net.dead.eth0"))
                .is_some_and(|x| x.is_none())
                || !snap.handles.contains_key(&h("net.dead.eth0"))
        );
        assert!(snap.handles.contains_key(&h("net.live.eth0")));
        // Idempotent.
        let again = ipam
            .run(Gc::of_node(node("a"), "net.".into(), live))
            .await
            .unwrap();
        assert!(again.is_empty());
    }

    #[tokio::test]
    async fn node_gc_removes_empty_records_of_own_blocks_only() {
        let ipam = ipam_with_pool("10.0.0.0/24", 28).await;
        alloc(&ipam, "net.x.eth0", "a").await;
        alloc(&ipam, "net.y.eth0", "b").await;
        let snap = ipam::ops::full_snapshot(ipam.store().as_ref())
            .await
            .unwrap();
        let block_of = |n: &str| {
            snap.blocks
                .values()
                .flatten()
                .find(|b| b.value.affinity.as_ref() == Some(&node(n)))
                .unwrap()
                .value
                .cidr
        };
        // Records that over-count (an allocation interrupted between record and block).
        for (id, cidr) in [
            ("net.stale-a.eth0", block_of("a")),
            ("net.stale-b.eth0", block_of("b")),
        ] {
            let rec = Handle {
                handle_id: h(id),
                block: [(cidr, 1)].into(),
            };
            ipam.store()
                .commit(&[Write::create(Object::Handle(rec))])
                .await
                .unwrap();
        }
        ipam.run(Gc::of_node(
            node("a"),
            "net.".into(),
            [h("net.x.eth0")].into(),
        ))
        .await
        .unwrap();
        let snap = ipam::ops::full_snapshot(ipam.store().as_ref())
            .await
            .unwrap();
        let records: Vec<&str> = snap
            .handles
            .values()
            .flatten()
            .map(|r| r.value.handle_id.as_str())
            .collect();
        assert!(!records.contains(&"net.stale-a.eth0"), "{records:?}");
        assert!(records.contains(&"net.stale-b.eth0"), "{records:?}");
        assert!(records.contains(&"net.y.eth0"), "{records:?}");
    }

    fn snapshot(pools: Vec<IpPool>, blocks: Vec<Block>, affs: Vec<(&str, &str)>) -> Snapshot {
        let mut snap = Snapshot::default();
        for p in pools {
            snap.put(Object::Pool(p), Revision("1".into()));
        }
        snap.all_blocks = true;
        for b in blocks {
            snap.put(Object::Block(b), Revision("1".into()));
        }
        snap.all_affinities = true;
        for (n, c) in affs {
            snap.put(
                Object::Affinity(ipam::model::BlockAffinity {
                    node: node(n),
                    cidr: c.parse().unwrap(),
                    state: AffinityState::Confirmed,
                }),
                Revision("1".into()),
            );
        }
        snap
    }

    fn capacity(snap: &Snapshot, v6: bool) -> Result<(), String> {
        let mut plan = Capacity {
            node: NodeInfo::new(node("a")),
            v4: true,
            v6,
        };
        match plan.step(snap).unwrap() {
            Step::Done(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// A node can take pods while it has a free address, a block to claim, or one to
    /// borrow; not when everything is full or no pool selects it.
    #[test]
    fn capacity_table() {
        let mut pool = IpPool::new(PoolName::new("p").unwrap(), "10.0.0.0/30".parse().unwrap());
        pool.block_size = 31;
        let full_block = |cidr: &str, aff: &str| {
            let mut b = Block::new(cidr.parse().unwrap(), Some(node(aff)));
            b.allocate(2, &AllocationAttribute::for_handle(h("x")));
            b
        };
        let empty = snapshot(vec![pool.clone()], vec![], vec![]);
        assert_eq!(capacity(&empty, false), Ok(()), "a block can be claimed");
        assert!(capacity(&empty, true).unwrap_err().contains("IPv6"));
        let one_full = snapshot(
            vec![pool.clone()],
            vec![full_block("10.0.0.0/31", "a")],
            vec![("a", "10.0.0.0/31")],
        );
        assert_eq!(
            capacity(&one_full, false),
            Ok(()),
            "the second block is free"
        );
        let all_full = snapshot(
            vec![pool.clone()],
            vec![
                full_block("10.0.0.0/31", "a"),
                full_block("10.0.0.2/31", "b"),
            ],
            vec![("a", "10.0.0.0/31"), ("b", "10.0.0.2/31")],
        );
        assert!(capacity(&all_full, false).unwrap_err().contains("full"));
        let mut half = full_block("10.0.0.2/31", "b");
        half.release("10.0.0.3".parse().unwrap());
        let borrow = snapshot(
            vec![pool.clone()],
            vec![full_block("10.0.0.0/31", "a"), half.clone()],
            vec![("a", "10.0.0.0/31"), ("b", "10.0.0.2/31")],
        );
        assert_eq!(capacity(&borrow, false), Ok(()), "borrowing is allowed");
        let mut strict = borrow.clone();
        strict.config.strict_affinity = true;
        assert!(capacity(&strict, false).is_err());
        let mut disabled = pool.clone();
        disabled.disabled = true;
        assert!(capacity(&snapshot(vec![disabled], vec![], vec![]), false).is_err());
        let _ = BTreeMap::<(), ()>::new();
    }

    #[tokio::test]
    async fn lock_is_exclusive_and_times_out_as_try_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ipam.lock");
        let held = NodeLock::acquire(&path, Duration::from_secs(1))
            .await
            .unwrap();
        let e = NodeLock::acquire(&path, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        drop(held);
        assert!(NodeLock::acquire(&path, Duration::from_millis(50))
            .await
            .is_ok());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn busy_file_store_lock_is_try_again() {
        let e = cni_error(
            "x",
            IpamError::Store(StoreError::Io {
                path: "/x/ipam.json.lock".into(),
                source: ipam::store::file::lock_busy(Duration::from_secs(5)),
            }),
        );
        assert_eq!(e.code, ErrorCode::TryAgainLater);
    }

    #[test]
    fn error_codes() {
        let e = cni_error(
            "x",
            IpamError::Store(StoreError::Unavailable {
                store: "etcd".into(),
                detail: "down".into(),
            }),
        );
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        let e = cni_error(
            "x",
            IpamError::NoAddresses {
                family: Family::V4,
                node: node("a"),
                detail: "full".into(),
            },
        );
        assert_eq!(e.code, ErrorCode::NoAddress);
        let e = cni_error(
            "x",
            IpamError::NotInAnyPool {
                ip: "1.2.3.4".parse().unwrap(),
            },
        );
        assert_eq!(e.code, ErrorCode::AddressUnavailable);
    }
}
