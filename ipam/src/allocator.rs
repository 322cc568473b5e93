//! The allocator: pure planning over a snapshot of the store, no IO.
//!
//! Each operation is a [`Plan`]. Given a [`Snapshot`] of what has been read, its
//! [`Plan::step`] answers with one of:
//! - [`Step::Need`]: read more objects into the snapshot and ask again;
//! - [`Step::Write`]: apply these compare-and-swap writes, in order, then ask again;
//! - [`Step::Done`]: the result.
//!
//! The plans are state-based: each step looks at the store as it is now and moves it one
//! write closer to the goal, so that a step interrupted anywhere (a lost swap, a crash, a
//! write whose outcome is unknown because etcd restarted) is finished by the next step of
//! the same or of another process. The loop that reads and writes lives in [`crate::ops`].
//!
//! ## Write orders that keep every prefix safe
//! - Allocation: handle record first (it may over-count), then the block.
//! - Release: the block first, then the handle record.
//! - Block claim: affinity `pending` → block created with `affinity: node` (the block's
//!   create-if-absent is the arbiter between nodes) → affinity `confirmed`. A crash after
//!   the first write leaves a pending affinity without block: its node finishes the claim
//!   (creates the block) on its next allocation, or another node takes the CIDR and the
//!   stale affinity is deleted. A crash after the second leaves a pending affinity whose
//!   block names the node: whoever sees it confirms it.
//! - Block release: affinity `pendingDeletion` → block `deleted: true` (allocators skip it)
//!   → block deleted → affinity deleted. A non-empty block reverts to `confirmed`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::IpamError;
use crate::model::{
    AffinityState, AllocationAttribute, AllowedUse, AssignmentMode, Block, BlockAffinity, Family,
    Handle, HandleId, IpPool, IpamConfig, NodeName, PoolName,
};
use crate::reservation::{self, Reserved};
use crate::store::{Key, Object, Op, Revision, Versioned, Write};

/// Most writes in one batch: etcd refuses transactions of more than 128 operations by
/// default, and smaller batches keep conflicts cheap.
pub const MAX_BATCH: usize = 32;

/// Objects to read before planning can go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Blocks(Vec<IpNet>),
    AllBlocks,
    AffinitiesOf(NodeName),
    AllAffinities,
    Handles(Vec<HandleId>),
    AllHandles,
}

/// What a plan wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    Need(Need),
    Write(Vec<Write>),
    Done(T),
}

/// An operation planned step by step over snapshots.
pub trait Plan {
    type Output;
    /// A name for errors and logs.
    fn name(&self) -> &'static str;
    fn step(&mut self, snap: &Snapshot) -> Result<Step<Self::Output>, IpamError>;
    /// What the first steps will certainly ask for, read together with the pools and the
    /// configuration: a round trip saved per need on every attempt.
    fn prefetch(&self) -> Vec<Need> {
        Vec::new()
    }
}

/// What has been read from the store. Pools and the configuration are always present;
/// blocks, affinities and handles are read on demand.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub config: IpamConfig,
    /// The stored configuration's revision; `None` when none is stored (defaults apply).
    pub config_revision: Option<Revision>,
    pub pools: Vec<Versioned<IpPool>>,
    /// Loaded blocks; `None` means read and absent.
    pub blocks: BTreeMap<IpNet, Option<Versioned<Block>>>,
    /// Whether `blocks` holds every block in the store.
    pub all_blocks: bool,
    pub affinities: BTreeMap<(NodeName, IpNet), Versioned<BlockAffinity>>,
    /// Nodes whose affinities are all in `affinities`.
    pub affinities_of: BTreeSet<NodeName>,
    pub all_affinities: bool,
    /// Loaded handles; `None` means read and absent.
    pub handles: BTreeMap<HandleId, Option<Versioned<Handle>>>,
    pub all_handles: bool,
    /// The wall-clock time of the read, in seconds since the Unix epoch: what new
    /// allocations record as their `allocated_at`. `None` records nothing.
    pub now_unix: Option<u64>,
    /// Every address reservation (IPReservation), read with the pools: no plan hands
    /// out an address inside one.
    pub reserved: Vec<Reserved>,
}

/// Returns early from a planner with a read request when the snapshot lacks something:
/// `let blocks = need!(snap.all_blocks());` in any [`Plan::step`], here or in another
/// crate's plans.
#[macro_export]
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(need) => return Ok($crate::allocator::Step::Need(need)),
        }
    };
}

impl Snapshot {
    /// A loaded block, `Ok(None)` if known absent, `Err(Need)` if not read yet.
    pub fn block(&self, cidr: &IpNet) -> Result<Option<&Versioned<Block>>, Need> {
        match self.blocks.get(cidr) {
            Some(b) => Ok(b.as_ref()),
            None if self.all_blocks => Ok(None),
            None => Err(Need::Blocks(vec![*cidr])),
        }
    }

    /// Every named block, or a request for those not read yet.
    pub fn blocks_in(
        &self,
        cidrs: impl IntoIterator<Item = IpNet>,
    ) -> Result<Vec<&Versioned<Block>>, Need> {
        let mut missing = Vec::new();
        let mut found = Vec::new();
        for c in cidrs {
            match self.block(&c) {
                Ok(Some(b)) => found.push(b),
                Ok(None) => {}
                Err(_) => missing.push(c),
            }
        }
        if missing.is_empty() {
            Ok(found)
        } else {
            Err(Need::Blocks(missing))
        }
    }

    pub fn handle(&self, id: &HandleId) -> Result<Option<&Versioned<Handle>>, Need> {
        match self.handles.get(id) {
            Some(h) => Ok(h.as_ref()),
            None if self.all_handles => Ok(None),
            None => Err(Need::Handles(vec![id.clone()])),
        }
    }

    /// The affinities of `node`.
    pub fn affinities_of(&self, node: &NodeName) -> Result<Vec<&Versioned<BlockAffinity>>, Need> {
        if !self.all_affinities && !self.affinities_of.contains(node) {
            return Err(Need::AffinitiesOf(node.clone()));
        }
        Ok(self
            .affinities
            .range((node.clone(), min_net())..)
            .take_while(|((n, _), _)| n == node)
            .map(|(_, a)| a)
            .collect())
    }

    pub fn all_blocks(&self) -> Result<impl Iterator<Item = &Versioned<Block>>, Need> {
        if !self.all_blocks {
            return Err(Need::AllBlocks);
        }
        Ok(self.blocks.values().flatten())
    }

    pub fn all_affinities(&self) -> Result<impl Iterator<Item = &Versioned<BlockAffinity>>, Need> {
        if !self.all_affinities {
            return Err(Need::AllAffinities);
        }
        Ok(self.affinities.values())
    }

    /// The pool that contains `net`.
    pub fn pool_of(&self, net: &IpNet) -> Option<&IpPool> {
        self.pools
            .iter()
            .map(|p| &p.value)
            .find(|p| p.cidr.contains(net))
    }

    /// The reservation that holds `ip`, if one does.
    pub fn reserved(&self, ip: &IpAddr) -> Option<&Reserved> {
        reservation::holding(&self.reserved, ip)
    }

    /// How many addresses of `b` are free and not reserved: what an allocation can take.
    pub fn assignable(&self, b: &Block) -> u32 {
        if !reservation::overlaps(&self.reserved, &b.cidr) {
            return b.free();
        }
        unreserved_free(self, b).count() as u32
    }

    /// The pool that contains `ip`.
    pub fn pool_of_ip(&self, ip: &IpAddr) -> Option<&IpPool> {
        self.pools
            .iter()
            .map(|p| &p.value)
            .find(|p| p.cidr.contains(ip))
    }

    /// Records writes that the store applied, with the revisions it returned, so that
    /// planning can go on without reading again.
    pub fn apply(&mut self, writes: &[Write], revisions: &[Option<Revision>]) {
        for (w, rev) in writes.iter().zip(revisions) {
            match (&w.op, rev) {
                (Op::Put(obj), Some(rev)) => self.put(obj.clone(), rev.clone()),
                (Op::Put(_), None) => {}
                (Op::Delete, _) => self.remove(&w.key),
            }
        }
    }

    /// Inserts an object read from the store.
    pub fn put(&mut self, obj: Object, rev: Revision) {
        match obj {
            Object::Pool(p) => {
                self.pools.retain(|q| q.value.name != p.name);
                self.pools.push(Versioned::new(p, rev));
                self.pools.sort_by_key(|a| a.value.cidr);
            }
            Object::Block(b) => {
                self.blocks.insert(b.cidr, Some(Versioned::new(b, rev)));
            }
            Object::Affinity(a) => {
                self.affinities
                    .insert((a.node.clone(), a.cidr), Versioned::new(a, rev));
            }
            Object::Handle(h) => {
                self.handles
                    .insert(h.handle_id.clone(), Some(Versioned::new(h, rev)));
            }
            Object::Config(c) => {
                self.config = c;
                self.config_revision = Some(rev);
            }
            // Not the allocator's business.
            Object::Resource(_) => {}
        }
    }

    fn remove(&mut self, key: &Key) {
        match key {
            Key::Pool(n) => self.pools.retain(|p| p.value.name != *n),
            Key::Block(c) => {
                self.blocks.insert(*c, None);
            }
            Key::Affinity { node, cidr } => {
                self.affinities.remove(&(node.clone(), *cidr));
            }
            Key::Handle(h) => {
                self.handles.insert(h.clone(), None);
            }
            Key::Config => {
                self.config = IpamConfig::default();
                self.config_revision = None;
            }
            Key::Resource { .. } => {}
        }
    }
}

fn min_net() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// The free addresses of `b` outside every reservation, in free-list order (each once;
/// free-list entries that name an address in use or outside the block are left out).
fn unreserved_free<'a>(snap: &'a Snapshot, b: &'a Block) -> impl Iterator<Item = IpAddr> + 'a {
    let mut seen = BTreeSet::new();
    b.unallocated
        .iter()
        .copied()
        .filter(move |o| {
            b.allocations.get(*o as usize).is_some_and(Option::is_none) && seen.insert(*o)
        })
        .map(|o| b.ip_at(o))
        .filter(|ip| snap.reserved(ip).is_none())
}

/// Allocates up to `n` addresses of `b` to `attr`, skipping reserved ones (Calico leaves
/// them free in the block; they are simply never taken).
fn allocate_unreserved(
    snap: &Snapshot,
    b: &mut Block,
    n: u32,
    attr: &AllocationAttribute,
) -> Vec<IpAddr> {
    if !reservation::overlaps(&snap.reserved, &b.cidr) {
        return b.allocate(n, attr);
    }
    let ips: Vec<IpAddr> = unreserved_free(snap, b).take(n as usize).collect();
    ips.into_iter()
        .filter(|ip| b.allocate_ip(*ip, attr).is_ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Shared steps: healing half-done claims and releases, keeping handle records exact.

/// The write that moves a half-done claim or release of `aff` forward (or rolls it back),
/// if it needs one. `others_in_flight`: leave a pending affinity without a block alone,
/// because its node may be between its first and second write; a node heals its own.
pub fn heal_affinity(
    snap: &Snapshot,
    aff: &Versioned<BlockAffinity>,
    others_in_flight: bool,
) -> Result<Option<Vec<Write>>, Need> {
    let a = &aff.value;
    let key = Key::Affinity {
        node: a.node.clone(),
        cidr: a.cidr,
    };
    let delete_aff = || Some(vec![Write::delete(key.clone(), aff.revision.clone())]);
    let set_state = |state| {
        let mut v = a.clone();
        v.state = state;
        Some(vec![Write::update(
            Object::Affinity(v),
            aff.revision.clone(),
        )])
    };
    let block = snap.block(&a.cidr)?;
    let ours = block.filter(|b| b.value.affinity.as_ref() == Some(&a.node));
    Ok(match (a.state, block, ours) {
        // Another node won the block, or the block was given up: the affinity is stale.
        (_, Some(_), None) => delete_aff(),
        (AffinityState::Pending, None, _) if others_in_flight => None,
        (AffinityState::Pending, None, _) => {
            // Finish our own claim: create the block. If the CIDR left every pool, give up.
            match snap.pool_of(&a.cidr) {
                Some(p) if p.block_size == a.cidr.prefix_len() => Some(vec![Write::create(
                    Object::Block(Block::new(a.cidr, Some(a.node.clone()))),
                )]),
                _ => delete_aff(),
            }
        }
        (AffinityState::Pending, Some(_), Some(_)) => set_state(AffinityState::Confirmed),
        (AffinityState::Confirmed, None, _) => delete_aff(),
        (AffinityState::Confirmed, Some(_), Some(b)) if b.value.deleted => {
            // Only a release sets `deleted`, after moving the affinity to pendingDeletion;
            // a confirmed affinity on a deleted block means the release was reverted.
            let mut v = b.value.clone();
            v.deleted = false;
            Some(vec![Write::update(Object::Block(v), b.revision.clone())])
        }
        (AffinityState::Confirmed, Some(_), Some(_)) => None,
        (AffinityState::PendingDeletion, None, _) => delete_aff(),
        (AffinityState::PendingDeletion, Some(_), Some(b)) => Some(release_step(b, aff)),
    })
}

/// The next write of releasing an affine block whose affinity is pendingDeletion.
fn release_step(b: &Versioned<Block>, aff: &Versioned<BlockAffinity>) -> Vec<Write> {
    if !b.value.is_empty() {
        // Someone allocated before the release began: keep the block.
        let mut v = b.value.clone();
        v.deleted = false;
        let mut a = aff.value.clone();
        a.state = AffinityState::Confirmed;
        let mut writes = vec![Write::update(Object::Affinity(a), aff.revision.clone())];
        if b.value.deleted {
            writes.push(Write::update(Object::Block(v), b.revision.clone()));
        }
        return writes;
    }
    if !b.value.deleted {
        let mut v = b.value.clone();
        v.deleted = true;
        return vec![Write::update(Object::Block(v), b.revision.clone())];
    }
    vec![
        Write::delete(Key::Block(b.value.cidr), b.revision.clone()),
        Write::delete(
            Key::Affinity {
                node: aff.value.node.clone(),
                cidr: aff.value.cidr,
            },
            aff.revision.clone(),
        ),
    ]
}

/// The first healing write needed among `node`'s affinities.
fn heal_node(snap: &Snapshot, node: &NodeName) -> Result<Option<Vec<Write>>, Need> {
    let affs = snap.affinities_of(node)?;
    snap.blocks_in(affs.iter().map(|a| a.value.cidr))?;
    for a in affs {
        if let Some(w) = heal_affinity(snap, a, false)? {
            return Ok(Some(w));
        }
    }
    Ok(None)
}

/// Blocks that hold addresses of `handle` among those read, with those addresses.
fn held_by(snap: &Snapshot, handle: &HandleId) -> BTreeMap<IpNet, Vec<IpAddr>> {
    snap.blocks
        .values()
        .flatten()
        .filter_map(|b| {
            let ips = b.value.ips_of(handle);
            (!ips.is_empty()).then_some((b.value.cidr, ips))
        })
        .collect()
}

/// The write that makes `handle`'s record match what the blocks hold, if it differs.
/// Every block the record names must have been read.
fn normalize_handle(snap: &Snapshot, handle: &HandleId) -> Result<Option<Write>, Need> {
    let record = snap.handle(handle)?;
    if let Some(r) = record {
        snap.blocks_in(r.value.block.keys().copied())?;
    }
    let actual: BTreeMap<IpNet, u32> = held_by(snap, handle)
        .into_iter()
        .map(|(c, ips)| (c, ips.len() as u32))
        .collect();
    Ok(match record {
        None if actual.is_empty() => None,
        Some(r) if r.value.block == actual => None,
        Some(r) if actual.is_empty() => Some(Write::delete(
            Key::Handle(handle.clone()),
            r.revision.clone(),
        )),
        r => Some(Write::put(
            Object::Handle(Handle {
                handle_id: handle.clone(),
                block: actual,
            }),
            r.map(|r| r.revision.clone()),
        )),
    })
}

/// The handle write to make before allocating `extra` more addresses of `handle` in
/// `block` (which holds `held` of them already), if the record does not cover them yet.
fn reserve_in_handle(
    record: Option<&Versioned<Handle>>,
    handle: &HandleId,
    block: IpNet,
    held: u32,
    extra: u32,
) -> Option<Write> {
    let want = held + extra;
    let have = record
        .and_then(|r| r.value.block.get(&block).copied())
        .unwrap_or(0);
    if have >= want {
        return None;
    }
    let mut h = record.map(|r| r.value.clone()).unwrap_or_else(|| Handle {
        handle_id: handle.clone(),
        block: BTreeMap::new(),
    });
    h.block.insert(block, want);
    Some(Write::put(
        Object::Handle(h),
        record.map(|r| r.revision.clone()),
    ))
}

fn node_hash(node: &NodeName) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------------------
// Auto-assign.

/// The node an allocation is for: its name and labels (for pool node selectors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: NodeName,
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn new(name: NodeName) -> Self {
        NodeInfo {
            name,
            labels: BTreeMap::new(),
        }
    }
}

/// Ask for `num_v4` IPv4 and `num_v6` IPv6 addresses for a handle on a node.
///
/// Idempotent per handle: the handle ends up holding at least the requested number of
/// each family, and the result lists every address it holds. A retry after a crash or an
/// unknown outcome therefore returns what the earlier attempt got instead of more.
///
/// When the pools run out part-way ([`IpamError::NoAddresses`]) the addresses already taken
/// stay with the handle; the caller releases the handle (the CNI plugin's DEL does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoAssignRequest {
    pub handle: HandleId,
    pub node: NodeInfo,
    pub num_v4: u32,
    pub num_v6: u32,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub use_: AllowedUse,
    /// Restrict to these pools (empty: any pool the node may use whose assignment mode is
    /// `Automatic`; named pools may be `Manual`).
    pub pools: Vec<PoolName>,
    /// The labels of the pod's namespace, for pools' `namespaceSelector`; `None` when
    /// they are not known (a datastore without Kubernetes): a pod then takes no address
    /// from a pool that selects namespaces. Not looked at for requests without a
    /// `namespace` (node tunnel addresses, `serval ipam assign`).
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

impl AutoAssignRequest {
    pub fn new(handle: HandleId, node: NodeInfo, num_v4: u32, num_v6: u32) -> Self {
        AutoAssignRequest {
            handle,
            node,
            num_v4,
            num_v6,
            namespace: None,
            pod: None,
            use_: AllowedUse::Workload,
            pools: Vec::new(),
            namespace_labels: None,
        }
    }

    fn attribute(&self, now_unix: Option<u64>) -> AllocationAttribute {
        AllocationAttribute {
            handle_id: self.handle.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            node: Some(self.node.name.clone()),
            allocated_at: now_unix,
        }
    }

    fn pool_ok(&self, p: &IpPool, family: Family) -> bool {
        let chosen = if self.pools.is_empty() {
            p.assignment_mode == AssignmentMode::Automatic
        } else {
            self.pools.contains(&p.name)
        };
        let namespace_ok = self.namespace.is_none()
            || p.namespace_selector.is_all()
            || self
                .namespace_labels
                .as_ref()
                .is_some_and(|l| p.namespace_selector.matches(l));
        p.family() == family && p.usable_by(&self.node.labels, self.use_) && chosen && namespace_ok
    }
}

/// The addresses a handle holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Assigned {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
}

impl Plan for AutoAssignRequest {
    type Output = Assigned;

    fn name(&self) -> &'static str {
        "auto-assign"
    }

    fn prefetch(&self) -> Vec<Need> {
        vec![
            Need::Handles(vec![self.handle.clone()]),
            Need::AffinitiesOf(self.node.name.clone()),
        ]
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Assigned>, IpamError> {
        let node = &self.node.name;
        let record = need!(snap.handle(&self.handle));
        if let Some(r) = record {
            need!(snap.blocks_in(r.value.block.keys().copied()));
        }
        if let Some(w) = need!(heal_node(snap, node)) {
            return Ok(Step::Write(w));
        }
        let held = held_by(snap, &self.handle);
        let mut got = Assigned::default();
        for ip in held.values().flatten() {
            match ip {
                IpAddr::V4(_) => got.v4.push(*ip),
                IpAddr::V6(_) => got.v6.push(*ip),
            }
        }
        for (family, want, have) in [
            (Family::V4, self.num_v4, got.v4.len() as u32),
            (Family::V6, self.num_v6, got.v6.len() as u32),
        ] {
            if have >= want {
                continue;
            }
            let missing = want - have;
            let block = match need!(self.find_block(snap, family)) {
                Found::Block(b) => b,
                Found::Writes(w) => return Ok(Step::Write(w)),
                Found::Nothing(detail) => {
                    return Err(IpamError::NoAddresses {
                        family,
                        node: node.clone(),
                        detail,
                    })
                }
            };
            let in_block = held.get(&block.value.cidr).map_or(0, |v| v.len() as u32);
            let take = missing.min(snap.assignable(&block.value));
            let mut writes = Vec::new();
            writes.extend(reserve_in_handle(
                record,
                &self.handle,
                block.value.cidr,
                in_block,
                take,
            ));
            let mut b = block.value.clone();
            allocate_unreserved(snap, &mut b, take, &self.attribute(snap.now_unix));
            writes.push(Write::update(Object::Block(b), block.revision.clone()));
            return Ok(Step::Write(writes));
        }
        if let Some(w) = need!(normalize_handle(snap, &self.handle)) {
            return Ok(Step::Write(vec![w]));
        }
        got.v4.sort();
        got.v6.sort();
        Ok(Step::Done(got))
    }
}

enum Found<'a> {
    Block(&'a Versioned<Block>),
    Writes(Vec<Write>),
    Nothing(String),
}

impl AutoAssignRequest {
    /// A block with a free address of `family`: the node's own, then a newly claimed one,
    /// then (without strict affinity) another node's.
    fn find_block<'a>(&self, snap: &'a Snapshot, family: Family) -> Result<Found<'a>, Need> {
        let node = &self.node.name;
        let usable = |b: &Block| {
            !b.deleted
                && snap.assignable(b) > 0
                && b.family() == family
                && snap
                    .pool_of(&b.cidr)
                    .is_some_and(|p| self.pool_ok(p, family))
        };
        let affs = snap.affinities_of(node)?;
        let own = snap.blocks_in(
            affs.iter()
                .filter(|a| a.value.state == AffinityState::Confirmed)
                .map(|a| a.value.cidr),
        )?;
        if let Some(b) = own
            .iter()
            .find(|b| b.value.affinity.as_ref() == Some(node) && usable(&b.value))
        {
            return Ok(Found::Block(b));
        }
        let pools: Vec<&IpPool> = snap
            .pools
            .iter()
            .map(|p| &p.value)
            .filter(|p| self.pool_ok(p, family))
            .collect();
        if pools.is_empty() {
            return Ok(Found::Nothing(format!(
                "no enabled {family} pool selects this node for {:?}{}",
                self.use_,
                if self.namespace.is_some() {
                    " and this pod's namespace (Manual pools only when named)"
                } else {
                    " (Manual pools only when named)"
                }
            )));
        }
        if self.use_ == AllowedUse::LoadBalancer {
            return load_balancer_block(snap, &pools, usable);
        }
        let cfg = &snap.config;
        let own_count = affs.len() as u32;
        let may_claim = cfg.auto_allocate_blocks
            && (cfg.max_blocks_per_host == 0 || own_count < cfg.max_blocks_per_host);
        if may_claim {
            let all: Vec<&Versioned<Block>> = snap.all_blocks()?.collect();
            let all_affs: Vec<&Versioned<BlockAffinity>> = snap.all_affinities()?.collect();
            // Finish or roll back half-done claims of other nodes that can be decided now.
            for a in all_affs.iter().filter(|a| a.value.node != *node) {
                if let Some(w) = heal_affinity(snap, a, true)? {
                    return Ok(Found::Writes(w));
                }
            }
            // A block that names this node but lost its affinity object (another node
            // rolled back our pending affinity while we created the block).
            if let Some(b) = all.iter().find(|b| {
                b.value.affinity.as_ref() == Some(node)
                    && !affs.iter().any(|a| a.value.cidr == b.value.cidr)
            }) {
                let aff = BlockAffinity {
                    node: node.clone(),
                    cidr: b.value.cidr,
                    state: AffinityState::Confirmed,
                };
                return Ok(Found::Writes(vec![Write::create(Object::Affinity(aff))]));
            }
            let pending_elsewhere: BTreeSet<IpNet> = all_affs
                .iter()
                .filter(|a| a.value.node != *node)
                .map(|a| a.value.cidr)
                .collect();
            if let Some(cidr) = free_cidr(snap, &pools, node, &pending_elsewhere) {
                let aff = BlockAffinity {
                    node: node.clone(),
                    cidr,
                    state: AffinityState::Pending,
                };
                return Ok(Found::Writes(vec![Write::create(Object::Affinity(aff))]));
            }
        }
        if cfg.strict_affinity {
            return Ok(Found::Nothing(if may_claim {
                "the node's blocks are full, every block of its pools is taken, and strictAffinity forbids borrowing".into()
            } else {
                "the node's blocks are full, it may claim no more blocks, and strictAffinity forbids borrowing".into()
            }));
        }
        let all: Vec<&Versioned<Block>> = snap.all_blocks()?.collect();
        if let Some(b) = all
            .into_iter()
            .filter(|b| usable(&b.value))
            .max_by_key(|b| (snap.assignable(&b.value), std::cmp::Reverse(b.value.cidr)))
        {
            return Ok(Found::Block(b));
        }
        Ok(Found::Nothing("every pool the node may use is full".into()))
    }
}

/// A block for a LoadBalancer address. Such addresses belong to Services, not nodes: the
/// blocks of LoadBalancer pools have no affinity (so neither strict affinity nor a node's
/// block limit applies, and collecting a node never takes them). The fullest block with a
/// free address first (in CIDR order), else a new block.
fn load_balancer_block<'a>(
    snap: &'a Snapshot,
    pools: &[&IpPool],
    usable: impl Fn(&Block) -> bool,
) -> Result<Found<'a>, Need> {
    if let Some(b) = snap
        .all_blocks()?
        .filter(|b| b.value.affinity.is_none() && usable(&b.value))
        .min_by_key(|b| (snap.assignable(&b.value), b.value.cidr))
    {
        return Ok(Found::Block(b));
    }
    // One allocator at a time (the Lease holder): the first free block in order packs the
    // pools from their start.
    let pending: BTreeSet<IpNet> = snap.all_affinities()?.map(|a| a.value.cidr).collect();
    let free = pools.iter().find_map(|p| {
        (0..p.block_count()).map(|i| p.nth_block(i)).find(|cidr| {
            !matches!(snap.blocks.get(cidr), Some(Some(_)))
                && !pending.contains(cidr)
                && !reservation::covers(&snap.reserved, cidr)
        })
    });
    match free {
        Some(cidr) => Ok(Found::Writes(vec![Write::create(Object::Block(
            Block::new(cidr, None),
        ))])),
        None => Ok(Found::Nothing(
            "every LoadBalancer pool asked for is full".into(),
        )),
    }
}

/// A CIDR in one of `pools` with no block, starting at a point derived from the node name
/// so that nodes claiming at once rarely race for the same CIDR. CIDRs with another node's
/// pending claim are used only when nothing else is free.
fn free_cidr(
    snap: &Snapshot,
    pools: &[&IpPool],
    node: &NodeName,
    pending: &BTreeSet<IpNet>,
) -> Option<IpNet> {
    let mut fallback = None;
    for p in pools {
        let count = p.block_count();
        let start = u128::from(node_hash(node)) % count;
        // At most every existing block plus every pending one can be skipped.
        let existing = snap
            .blocks
            .values()
            .flatten()
            .filter(|b| p.cidr.contains(&b.value.cidr))
            .count();
        let probes = (existing + pending.len() + 1) as u128;
        for i in 0..probes.min(count) {
            let cidr = p.nth_block((start + i) % count);
            if matches!(snap.blocks.get(&cidr), Some(Some(_))) {
                continue;
            }
            // A block every address of which is reserved would give the node nothing.
            if reservation::covers(&snap.reserved, &cidr) {
                continue;
            }
            if pending.contains(&cidr) {
                fallback = fallback.or(Some(cidr));
                continue;
            }
            return Some(cidr);
        }
    }
    fallback
}

// ---------------------------------------------------------------------------------------
// Assign one specific address.

/// Give `ip` to `handle` (for operators reserving addresses and pods asking for one).
/// Idempotent: succeeds if `ip` already belongs to `handle`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignIpRequest {
    pub ip: IpAddr,
    pub handle: HandleId,
    pub node: NodeInfo,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl Plan for AssignIpRequest {
    type Output = IpAddr;

    fn name(&self) -> &'static str {
        "assign"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<IpAddr>, IpamError> {
        let pool = snap
            .pool_of_ip(&self.ip)
            .ok_or(IpamError::NotInAnyPool { ip: self.ip })?;
        let cidr = pool.block_for(self.ip);
        let record = need!(snap.handle(&self.handle));
        if let Some(r) = record {
            need!(snap.blocks_in(r.value.block.keys().copied()));
        }
        if let Some(w) = need!(heal_node(snap, &self.node.name)) {
            return Ok(Step::Write(w));
        }
        let refuse_reserved = |r: &Reserved| {
            IpamError::Invalid(format!(
                "{} is reserved by IPReservation {} ({}): the IPAM does not hand it out",
                self.ip, r.name, r.cidr
            ))
        };
        let Some(block) = need!(snap.block(&cidr)) else {
            if let Some(r) = snap.reserved(&self.ip) {
                return Err(refuse_reserved(r));
            }
            let claim = pool.usable_by(&self.node.labels, AllowedUse::Workload)
                && snap.config.auto_allocate_blocks;
            let obj = if claim {
                Object::Affinity(BlockAffinity {
                    node: self.node.name.clone(),
                    cidr,
                    state: AffinityState::Pending,
                })
            } else {
                // The node may not claim here: an unaffine block that anyone can borrow from.
                Object::Block(Block::new(cidr, None))
            };
            return Ok(Step::Write(vec![Write::create(obj)]));
        };
        match block.value.owner(self.ip) {
            Some(o) if o.handle_id == self.handle => {
                if let Some(w) = need!(normalize_handle(snap, &self.handle)) {
                    return Ok(Step::Write(vec![w]));
                }
                Ok(Step::Done(self.ip))
            }
            Some(o) => Err(IpamError::AlreadyAllocated {
                ip: self.ip,
                handle: o.handle_id.clone(),
            }),
            None if block.value.deleted => {
                // Its release is in flight; finish it and claim the block again.
                let mut writes = Vec::new();
                if block.value.is_empty() {
                    writes.push(Write::delete(Key::Block(cidr), block.revision.clone()));
                } else {
                    let mut v = block.value.clone();
                    v.deleted = false;
                    writes.push(Write::update(Object::Block(v), block.revision.clone()));
                }
                Ok(Step::Write(writes))
            }
            None => {
                if let Some(r) = snap.reserved(&self.ip) {
                    return Err(refuse_reserved(r));
                }
                let in_block = block.value.ips_of(&self.handle).len() as u32;
                let mut writes = Vec::new();
                writes.extend(reserve_in_handle(record, &self.handle, cidr, in_block, 1));
                let mut b = block.value.clone();
                b.allocate_ip(
                    self.ip,
                    &AllocationAttribute {
                        handle_id: self.handle.clone(),
                        namespace: self.namespace.clone(),
                        pod: self.pod.clone(),
                        node: Some(self.node.name.clone()),
                        allocated_at: snap.now_unix,
                    },
                )?;
                writes.push(Write::update(Object::Block(b), block.revision.clone()));
                Ok(Step::Write(writes))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Releases.

/// What a release freed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Released {
    /// Freed addresses and the handle each belonged to.
    pub released: Vec<(IpAddr, HandleId)>,
    /// Requested addresses that were not allocated.
    pub not_allocated: Vec<IpAddr>,
}

/// Free addresses, whoever holds them.
#[derive(Clone, Debug)]
pub struct ReleaseIps {
    ips: Vec<IpAddr>,
    freed: BTreeMap<IpAddr, HandleId>,
    handles: BTreeSet<HandleId>,
}

impl ReleaseIps {
    pub fn new(ips: Vec<IpAddr>) -> Self {
        ReleaseIps {
            ips,
            freed: BTreeMap::new(),
            handles: BTreeSet::new(),
        }
    }
}

impl Plan for ReleaseIps {
    type Output = Released;

    fn name(&self) -> &'static str {
        "release"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Released>, IpamError> {
        let mut cidrs = BTreeMap::new();
        for ip in &self.ips {
            let pool = snap
                .pool_of_ip(ip)
                .ok_or(IpamError::NotInAnyPool { ip: *ip })?;
            cidrs
                .entry(pool.block_for(*ip))
                .or_insert_with(Vec::new)
                .push(*ip);
        }
        let blocks = need!(snap.blocks_in(cidrs.keys().copied()));
        let mut writes = Vec::new();
        for b in blocks {
            let mut v = b.value.clone();
            for ip in &cidrs[&b.value.cidr] {
                if let Some(h) = v.release(*ip) {
                    self.freed.insert(*ip, h.clone());
                    self.handles.insert(h);
                }
            }
            if v != b.value {
                writes.push(Write::update(Object::Block(v), b.revision.clone()));
            }
        }
        if !writes.is_empty() {
            return Ok(Step::Write(writes));
        }
        for h in &self.handles {
            if let Some(w) = need!(normalize_handle(snap, h)) {
                return Ok(Step::Write(vec![w]));
            }
        }
        let freed = &self.freed;
        Ok(Step::Done(Released {
            released: freed.iter().map(|(ip, h)| (*ip, h.clone())).collect(),
            not_allocated: self
                .ips
                .iter()
                .filter(|ip| !freed.contains_key(ip))
                .copied()
                .collect(),
        }))
    }
}

/// Free every address of a handle and delete its record.
#[derive(Clone, Debug)]
pub struct ReleaseHandle {
    handle: HandleId,
    freed: BTreeSet<IpAddr>,
}

impl ReleaseHandle {
    pub fn new(handle: HandleId) -> Self {
        ReleaseHandle {
            handle,
            freed: BTreeSet::new(),
        }
    }
}

impl Plan for ReleaseHandle {
    type Output = Vec<IpAddr>;

    fn name(&self) -> &'static str {
        "release handle"
    }

    fn prefetch(&self) -> Vec<Need> {
        vec![Need::Handles(vec![self.handle.clone()])]
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Vec<IpAddr>>, IpamError> {
        let Some(record) = need!(snap.handle(&self.handle)) else {
            return Ok(Step::Done(self.freed.iter().copied().collect()));
        };
        let blocks = need!(snap.blocks_in(record.value.block.keys().copied()));
        let mut writes = Vec::new();
        for b in blocks {
            let mut v = b.value.clone();
            let freed = v.release_where(|a| a.handle_id == self.handle);
            if !freed.is_empty() {
                self.freed.extend(freed);
                writes.push(Write::update(Object::Block(v), b.revision.clone()));
            }
        }
        // The record goes last, so that it names every block still holding addresses.
        writes.push(Write::delete(
            Key::Handle(self.handle.clone()),
            record.revision.clone(),
        ));
        Ok(Step::Write(writes))
    }
}

/// Give up an empty block that is affine to `node`.
#[derive(Clone, Debug)]
pub struct ReleaseAffinity {
    pub node: NodeName,
    pub cidr: IpNet,
}

impl ReleaseAffinity {
    pub fn new(node: NodeName, cidr: IpNet) -> Self {
        ReleaseAffinity { node, cidr }
    }
}

impl Plan for ReleaseAffinity {
    type Output = ();

    fn name(&self) -> &'static str {
        "release block affinity"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<()>, IpamError> {
        let affs = need!(snap.affinities_of(&self.node));
        let block = need!(snap.block(&self.cidr));
        let aff = affs.into_iter().find(|a| a.value.cidr == self.cidr);
        let ours = block.filter(|b| b.value.affinity.as_ref() == Some(&self.node));
        match (aff, ours) {
            (None, None) => Ok(Step::Done(())),
            (Some(a), None) => Ok(Step::Write(vec![Write::delete(
                a.value.key(),
                a.revision.clone(),
            )])),
            (None, Some(b)) => {
                // The block names us without an affinity object: recreate it so that the
                // usual sequence applies.
                let aff = BlockAffinity {
                    node: self.node.clone(),
                    cidr: b.value.cidr,
                    state: AffinityState::Confirmed,
                };
                Ok(Step::Write(vec![Write::create(Object::Affinity(aff))]))
            }
            (Some(a), Some(b)) => {
                if !b.value.is_empty() {
                    if a.value.state == AffinityState::PendingDeletion || b.value.deleted {
                        // Revert: the next step reports the block as not empty.
                        return Ok(Step::Write(release_step(b, a)));
                    }
                    return Err(IpamError::BlockNotEmpty {
                        cidr: self.cidr,
                        in_use: b.value.in_use(),
                    });
                }
                if a.value.state != AffinityState::PendingDeletion {
                    let mut v = a.value.clone();
                    v.state = AffinityState::PendingDeletion;
                    return Ok(Step::Write(vec![Write::update(
                        Object::Affinity(v),
                        a.revision.clone(),
                    )]));
                }
                Ok(Step::Write(release_step(b, a)))
            }
        }
    }
}

/// What releasing a node did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeReleased {
    /// Empty blocks deleted.
    pub blocks_deleted: Vec<IpNet>,
    /// Blocks that still hold addresses, left without affinity (others may borrow from them).
    pub blocks_orphaned: Vec<IpNet>,
}

/// Drop every block affinity of a deleted node.
#[derive(Clone, Debug)]
pub struct ReleaseNode {
    pub node: NodeName,
    done: NodeReleased,
}

impl ReleaseNode {
    pub fn new(node: NodeName) -> Self {
        ReleaseNode {
            node,
            done: NodeReleased::default(),
        }
    }
}

impl Plan for ReleaseNode {
    type Output = NodeReleased;

    fn name(&self) -> &'static str {
        "release node"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<NodeReleased>, IpamError> {
        let blocks: Vec<&Versioned<Block>> = need!(snap.all_blocks()).collect();
        let affs = need!(snap.affinities_of(&self.node));
        let key = |cidr| Key::Affinity {
            node: self.node.clone(),
            cidr,
        };
        if let Some(a) = affs.first() {
            let block = blocks.iter().find(|b| {
                b.value.cidr == a.value.cidr && b.value.affinity.as_ref() == Some(&self.node)
            });
            let Some(b) = block else {
                return Ok(Step::Write(vec![Write::delete(
                    key(a.value.cidr),
                    a.revision.clone(),
                )]));
            };
            if b.value.is_empty() {
                if a.value.state != AffinityState::PendingDeletion {
                    let mut v = a.value.clone();
                    v.state = AffinityState::PendingDeletion;
                    return Ok(Step::Write(vec![Write::update(
                        Object::Affinity(v),
                        a.revision.clone(),
                    )]));
                }
                let w = release_step(b, a);
                if w.iter()
                    .any(|w| w.key == Key::Block(b.value.cidr) && w.op == Op::Delete)
                {
                    self.done.blocks_deleted.push(b.value.cidr);
                }
                return Ok(Step::Write(w));
            }
            let mut v = b.value.clone();
            v.affinity = None;
            v.deleted = false;
            self.done.blocks_orphaned.push(b.value.cidr);
            return Ok(Step::Write(vec![
                Write::update(Object::Block(v), b.revision.clone()),
                Write::delete(key(a.value.cidr), a.revision.clone()),
            ]));
        }
        if let Some(b) = blocks
            .iter()
            .find(|b| b.value.affinity.as_ref() == Some(&self.node))
        {
            let mut v = b.value.clone();
            v.affinity = None;
            if v.is_empty() {
                self.done.blocks_deleted.push(b.value.cidr);
                return Ok(Step::Write(vec![Write::delete(
                    Key::Block(b.value.cidr),
                    b.revision.clone(),
                )]));
            }
            self.done.blocks_orphaned.push(b.value.cidr);
            return Ok(Step::Write(vec![Write::update(
                Object::Block(v),
                b.revision.clone(),
            )]));
        }
        let mut out = self.done.clone();
        out.blocks_deleted.sort();
        out.blocks_deleted.dedup();
        out.blocks_orphaned.sort();
        out.blocks_orphaned.dedup();
        Ok(Step::Done(out))
    }
}

/// One garbage-collection step over `blocks`: the writes (at most [`MAX_BATCH`]) that
/// release every allocation `dead` selects, each freed address noted in `freed` with
/// the handle it had.
pub fn release_where(
    blocks: &[&Versioned<Block>],
    freed: &mut BTreeMap<IpAddr, HandleId>,
    mut dead: impl FnMut(&AllocationAttribute) -> bool,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for b in blocks {
        let mut v = b.value.clone();
        let released = v.release_where(&mut dead);
        if released.is_empty() {
            continue;
        }
        for ip in released {
            if let Some(h) = b.value.owner(ip) {
                freed.insert(ip, h.handle_id.clone());
            }
        }
        writes.push(Write::update(Object::Block(v), b.revision.clone()));
        if writes.len() >= MAX_BATCH {
            break;
        }
    }
    writes
}

/// Release every allocation whose handle is not in `live`, and delete those handles'
/// records.
///
/// The caller takes `live` after listing what should exist (for Kubernetes: every pod
/// sandbox on every node, plus operators' reservations). An allocation made after that
/// list was taken is not in it: run GC only for handles older than a grace period, or
/// while the allocators are quiet, as Calico's controller does.
///
/// [`Gc::of_node`] narrows it to one node's allocations within one network: the CNI GC
/// verb.
#[derive(Clone, Debug)]
pub struct Gc {
    live: BTreeSet<HandleId>,
    scope: Option<NodeScope>,
    freed: BTreeMap<IpAddr, HandleId>,
}

/// One node's allocations within one network.
#[derive(Clone, Debug)]
struct NodeScope {
    node: NodeName,
    /// Handles of the network start with it.
    prefix: String,
}

impl Gc {
    pub fn new(live: BTreeSet<HandleId>) -> Self {
        Gc {
            live,
            scope: None,
            freed: BTreeMap::new(),
        }
    }

    /// Only the allocations whose attribute names `node` and whose handle starts with
    /// the network's `prefix`. Handle records are deleted once no block holds an address
    /// of them; a record that holds none is deleted only when every block it names is
    /// affine to this node, because a record of another node's allocation in flight (the
    /// Kubernetes store writes the record before the block) must survive.
    pub fn of_node(node: NodeName, prefix: String, live: BTreeSet<HandleId>) -> Self {
        Gc {
            live,
            scope: Some(NodeScope { node, prefix }),
            freed: BTreeMap::new(),
        }
    }

    /// A handle this collection may release: not live, and of the network if scoped.
    fn dead(&self, h: &HandleId) -> bool {
        gc_dead(&self.live, self.scope.as_ref(), h)
    }
    /// Whether the record of dead handle `h` may go. Unscoped, every dead handle's
    /// addresses were released before this is asked, so its record goes. Scoped, another
    /// node may still hold an address under it, and a record holding none goes only when
    /// this collection freed its addresses or every block it names is this node's.
    fn deletes_record(
        &self,
        h: &Handle,
        blocks: &[&Versioned<Block>],
        freed: &BTreeSet<&HandleId>,
    ) -> bool {
        let Some(s) = &self.scope else {
            return true;
        };
        if blocks
            .iter()
            .any(|b| !b.value.ips_of(&h.handle_id).is_empty())
        {
            return false;
        }
        freed.contains(&h.handle_id)
            || (!h.block.is_empty()
                && h.block.keys().all(|cidr| {
                    blocks
                        .iter()
                        .find(|b| b.value.cidr == *cidr)
                        .is_some_and(|b| b.value.affinity.as_ref() == Some(&s.node))
                }))
    }
}

fn gc_dead(live: &BTreeSet<HandleId>, scope: Option<&NodeScope>, h: &HandleId) -> bool {
    !live.contains(h) && scope.is_none_or(|s| h.as_str().starts_with(&s.prefix))
}

impl Plan for Gc {
    type Output = Vec<(IpAddr, HandleId)>;

    fn name(&self) -> &'static str {
        "garbage collection"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<Self::Output>, IpamError> {
        let blocks: Vec<&Versioned<Block>> = need!(snap.all_blocks()).collect();
        if !snap.all_handles {
            return Ok(Step::Need(Need::AllHandles));
        }
        let (live, scope) = (&self.live, self.scope.as_ref());
        let mut writes = release_where(&blocks, &mut self.freed, |a| {
            gc_dead(live, scope, &a.handle_id)
                && scope.is_none_or(|s| a.node.as_ref() == Some(&s.node))
        });
        if !writes.is_empty() {
            return Ok(Step::Write(writes));
        }
        let freed: BTreeSet<&HandleId> = self.freed.values().collect();
        for h in snap.handles.values().flatten() {
            let id = &h.value.handle_id;
            if self.dead(id) && self.deletes_record(&h.value, &blocks, &freed) {
                writes.push(Write::delete(Key::Handle(id.clone()), h.revision.clone()));
                if writes.len() >= MAX_BATCH {
                    break;
                }
            }
        }
        if !writes.is_empty() {
            return Ok(Step::Write(writes));
        }
        Ok(Step::Done(
            self.freed.iter().map(|(ip, h)| (*ip, h.clone())).collect(),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Pools and configuration.

/// Add a pool after checking it on its own and against the existing pools.
#[derive(Clone, Debug)]
pub struct AddPool(pub IpPool);

impl Plan for AddPool {
    type Output = ();

    fn name(&self) -> &'static str {
        "add pool"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<()>, IpamError> {
        let p = &self.0;
        if let Some(existing) = snap.pools.iter().find(|q| q.value.name == p.name) {
            if existing.value == *p {
                return Ok(Step::Done(()));
            }
            return Err(IpamError::PoolExists(p.name.clone()));
        }
        p.validate()?;
        if let Some(q) = snap
            .pools
            .iter()
            .find(|q| q.value.cidr.contains(&p.cidr) || p.cidr.contains(&q.value.cidr))
        {
            return Err(IpamError::PoolOverlap {
                cidr: p.cidr,
                other: q.value.name.clone(),
                other_cidr: q.value.cidr,
            });
        }
        Ok(Step::Write(vec![Write::create(Object::Pool(p.clone()))]))
    }
}

/// Delete a pool whose blocks hold no address, with its blocks and their affinities.
#[derive(Clone, Debug)]
pub struct DeletePool {
    name: PoolName,
    /// Set once the pool is found: what is left to clean up after it is gone.
    cidr: Option<IpNet>,
}

impl DeletePool {
    pub fn new(name: PoolName) -> Self {
        DeletePool { name, cidr: None }
    }
}

impl Plan for DeletePool {
    type Output = ();

    fn name(&self) -> &'static str {
        "delete pool"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<()>, IpamError> {
        let blocks: Vec<&Versioned<Block>> = need!(snap.all_blocks()).collect();
        let affs: Vec<&Versioned<BlockAffinity>> = need!(snap.all_affinities()).collect();
        let pool = snap.pools.iter().find(|p| p.value.name == self.name);
        let cidr = match (pool, self.cidr) {
            (Some(p), _) => p.value.cidr,
            (None, Some(c)) => c,
            (None, None) => return Err(IpamError::PoolNotFound(self.name.clone())),
        };
        self.cidr = Some(cidr);
        let inside: Vec<_> = blocks
            .into_iter()
            .filter(|b| cidr.contains(&b.value.cidr))
            .collect();
        let mut writes = Vec::new();
        if let Some(p) = pool {
            let allocated: u64 = inside.iter().map(|b| u64::from(b.value.in_use())).sum();
            if allocated > 0 {
                return Err(IpamError::PoolInUse {
                    name: self.name.clone(),
                    allocated,
                });
            }
            // The pool goes first: no one claims a block of it afterwards.
            writes.push(Write::delete(
                Key::Pool(self.name.clone()),
                p.revision.clone(),
            ));
        }
        for b in inside.into_iter().filter(|b| b.value.is_empty()) {
            writes.push(Write::delete(Key::Block(b.value.cidr), b.revision.clone()));
        }
        for a in affs.into_iter().filter(|a| cidr.contains(&a.value.cidr)) {
            writes.push(Write::delete(a.value.key(), a.revision.clone()));
        }
        writes.truncate(MAX_BATCH);
        if writes.is_empty() {
            return Ok(Step::Done(()));
        }
        Ok(Step::Write(writes))
    }
}

impl BlockAffinity {
    /// Where this affinity is stored.
    pub fn key(&self) -> Key {
        Key::Affinity {
            node: self.node.clone(),
            cidr: self.cidr,
        }
    }
}

/// Store the IPAM configuration.
#[derive(Clone, Debug)]
pub struct SetConfig(pub IpamConfig);

impl Plan for SetConfig {
    type Output = ();

    fn name(&self) -> &'static str {
        "set ipam config"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<()>, IpamError> {
        if snap.config == self.0 && snap.config_revision.is_some() {
            return Ok(Step::Done(()));
        }
        Ok(Step::Write(vec![Write::put(
            Object::Config(self.0.clone()),
            snap.config_revision.clone(),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpPool, PoolName};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn node(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn rev(n: u64) -> Revision {
        Revision(n.to_string())
    }

    fn snap_with(block: Option<Block>) -> Snapshot {
        let mut s = Snapshot::default();
        let mut p = IpPool::new(PoolName::new("p").unwrap(), net("10.0.0.0/24"));
        p.block_size = 26;
        s.pools.push(Versioned::new(p, rev(1)));
        s.blocks
            .insert(net("10.0.0.0/26"), block.map(|b| Versioned::new(b, rev(2))));
        s
    }

    fn aff(state: AffinityState) -> Versioned<BlockAffinity> {
        Versioned::new(
            BlockAffinity {
                node: node("a"),
                cidr: net("10.0.0.0/26"),
                state,
            },
            rev(3),
        )
    }

    /// What a healing step does, in words, for the table.
    fn describe(w: Option<Vec<Write>>) -> String {
        let Some(w) = w else { return "nothing".into() };
        w.iter()
            .map(|w| match (&w.op, &w.key) {
                (Op::Delete, k) => format!("delete {k}"),
                (Op::Put(Object::Affinity(a)), _) => format!("affinity {:?}", a.state),
                (Op::Put(Object::Block(b)), _) if w.expect == crate::store::Expect::Absent => {
                    format!(
                        "create block for {:?}",
                        b.affinity.as_ref().map(|n| n.to_string())
                    )
                }
                (Op::Put(Object::Block(b)), _) => format!("block deleted={}", b.deleted),
                (Op::Put(o), _) => format!("put {:?}", o.kind()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn healing_table() {
        use AffinityState::*;
        let ours = Block::new(net("10.0.0.0/26"), Some(node("a")));
        let theirs = Block::new(net("10.0.0.0/26"), Some(node("b")));
        let mut ours_used = ours.clone();
        ours_used.allocate(
            1,
            &AllocationAttribute::for_handle(HandleId::new("h").unwrap()),
        );
        let mut ours_deleted = ours.clone();
        ours_deleted.deleted = true;
        let cases: Vec<(AffinityState, Option<Block>, bool, &str)> = vec![
            // Claim crashed after the pending affinity: the owner finishes, others wait.
            (Pending, None, false, "create block for Some(\"a\")"),
            (Pending, None, true, "nothing"),
            // Claim crashed after the block: anyone confirms.
            (Pending, Some(ours.clone()), true, "affinity Confirmed"),
            // Another node won the block: roll back.
            (
                Pending,
                Some(theirs.clone()),
                true,
                "delete affinity a/10.0.0.0/26",
            ),
            (Confirmed, Some(ours.clone()), false, "nothing"),
            (Confirmed, None, false, "delete affinity a/10.0.0.0/26"),
            (
                Confirmed,
                Some(ours_deleted.clone()),
                false,
                "block deleted=false",
            ),
            // Release crashed: finish it step by step, or revert if the block is in use.
            (
                PendingDeletion,
                Some(ours.clone()),
                false,
                "block deleted=true",
            ),
            (
                PendingDeletion,
                Some(ours_deleted.clone()),
                false,
                "delete block 10.0.0.0/26, delete affinity a/10.0.0.0/26",
            ),
            (
                PendingDeletion,
                Some(ours_used.clone()),
                false,
                "affinity Confirmed",
            ),
            (
                PendingDeletion,
                None,
                false,
                "delete affinity a/10.0.0.0/26",
            ),
        ];
        for (state, block, others, want) in cases {
            let s = snap_with(block.clone());
            let got = describe(heal_affinity(&s, &aff(state), others).unwrap());
            assert_eq!(
                got,
                want,
                "{state:?} with block {:?} (others_in_flight={others})",
                block.map(|b| b.affinity)
            );
        }
    }

    #[test]
    fn plans_ask_for_what_they_lack() {
        let mut s = Snapshot::default();
        let mut p = IpPool::new(PoolName::new("p").unwrap(), net("10.0.0.0/24"));
        p.block_size = 26;
        s.pools.push(Versioned::new(p, rev(1)));
        let mut req =
            AutoAssignRequest::new(HandleId::new("h").unwrap(), NodeInfo::new(node("a")), 1, 0);
        assert_eq!(
            req.step(&s).unwrap(),
            Step::Need(Need::Handles(vec![HandleId::new("h").unwrap()]))
        );
        s.handles.insert(HandleId::new("h").unwrap(), None);
        assert_eq!(
            req.step(&s).unwrap(),
            Step::Need(Need::AffinitiesOf(node("a")))
        );
        s.affinities_of.insert(node("a"));
        assert_eq!(req.step(&s).unwrap(), Step::Need(Need::AllBlocks));
        s.all_blocks = true;
        assert_eq!(req.step(&s).unwrap(), Step::Need(Need::AllAffinities));
        s.all_affinities = true;
        // Everything known and nothing claimed: the first write is a pending affinity.
        match req.step(&s).unwrap() {
            Step::Write(w) => assert!(
                matches!(&w[..], [Write { op: Op::Put(Object::Affinity(a)), expect: crate::store::Expect::Absent, .. }] if a.state == AffinityState::Pending)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn allocation_writes_the_handle_before_the_block() {
        let mut s = snap_with(Some(Block::new(net("10.0.0.0/26"), Some(node("a")))));
        s.handles.insert(HandleId::new("h").unwrap(), None);
        s.affinities_of.insert(node("a"));
        let a = aff(AffinityState::Confirmed);
        s.affinities.insert((node("a"), net("10.0.0.0/26")), a);
        let mut req =
            AutoAssignRequest::new(HandleId::new("h").unwrap(), NodeInfo::new(node("a")), 2, 0);
        let Step::Write(w) = req.step(&s).unwrap() else {
            panic!("expected writes")
        };
        assert_eq!(w.len(), 2);
        assert!(
            matches!(&w[0].op, Op::Put(Object::Handle(h)) if h.block[&net("10.0.0.0/26")] == 2)
        );
        assert!(matches!(&w[1].op, Op::Put(Object::Block(b)) if b.in_use() == 2));
        s.apply(&w, &[Some(rev(10)), Some(rev(11))]);
        match req.step(&s).unwrap() {
            Step::Done(got) => assert_eq!(got.v4.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    /// Runs a plan to its end over an in-memory snapshot that knows every object.
    fn drive<P: Plan>(plan: &mut P, s: &mut Snapshot) -> Result<P::Output, IpamError> {
        s.all_blocks = true;
        s.all_affinities = true;
        s.all_handles = true;
        let mut n = 100;
        for _ in 0..100 {
            match plan.step(s)? {
                Step::Done(out) => return Ok(out),
                Step::Need(need) => panic!("everything is known, yet {need:?}"),
                Step::Write(w) => {
                    let revs: Vec<Option<Revision>> = w
                        .iter()
                        .map(|_| {
                            n += 1;
                            Some(rev(n))
                        })
                        .collect();
                    s.apply(&w, &revs);
                }
            }
        }
        panic!("{} did not finish", plan.name())
    }

    fn reserved(name: &str, cidrs: &[&str]) -> Vec<Reserved> {
        cidrs
            .iter()
            .map(|c| Reserved {
                name: name.into(),
                cidr: crate::reservation::parse_entry(c).unwrap(),
            })
            .collect()
    }

    /// Reserved addresses are never handed out: not from the node's own blocks, not from
    /// a block it claims, not from a block it borrows from; a block that is reserved
    /// whole is not claimed; a pool whose only free addresses are reserved is exhausted.
    #[test]
    fn reserved_addresses_are_never_handed_out() {
        // (what, pool, block size, blocks already there (cidr, affine node, used),
        //  reservations, addresses asked for node a, want: Ok(addresses) or Err(fragment))
        type Case = (
            &'static str,
            &'static str,
            u8,
            Vec<(&'static str, &'static str, u32)>,
            Vec<&'static str>,
            u32,
            Result<Vec<&'static str>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "no reservation: the first addresses of the claimed block",
                "10.0.0.0/30",
                30,
                vec![],
                vec![],
                2,
                Ok(vec!["10.0.0.0", "10.0.0.1"]),
            ),
            (
                "a reserved range in the claimed block is skipped",
                "10.0.0.0/30",
                30,
                vec![],
                vec!["10.0.0.0/31"],
                2,
                Ok(vec!["10.0.0.2", "10.0.0.3"]),
            ),
            (
                "a single reserved address in the node's own block is skipped",
                "10.0.0.0/30",
                30,
                vec![("10.0.0.0/30", "a", 1)],
                vec!["10.0.0.1"],
                2,
                Ok(vec!["10.0.0.2", "10.0.0.3"]),
            ),
            (
                "a block reserved whole is not claimed",
                "10.0.0.0/29",
                30,
                vec![],
                vec!["10.0.0.0/30"],
                1,
                Ok(vec!["10.0.0.4"]),
            ),
            (
                "the only free addresses are reserved: exhausted",
                "10.0.0.0/30",
                30,
                vec![("10.0.0.0/30", "a", 2)],
                vec!["10.0.0.2/31"],
                1,
                Err("no IPv4 address available"),
            ),
            (
                "another node's block whose free addresses are reserved is not borrowed from",
                "10.0.0.0/30",
                30,
                vec![("10.0.0.0/30", "b", 3)],
                vec!["10.0.0.3"],
                1,
                Err("every pool the node may use is full"),
            ),
            (
                "borrowing skips the reserved address",
                "10.0.0.0/30",
                30,
                vec![("10.0.0.0/30", "b", 2)],
                vec!["10.0.0.2"],
                1,
                Ok(vec!["10.0.0.3"]),
            ),
        ];
        for (what, pool, size, blocks, res, want_n, want) in cases {
            let mut s = Snapshot::default();
            let mut p = IpPool::new(PoolName::new("p").unwrap(), net(pool));
            p.block_size = size;
            s.pools.push(Versioned::new(p, rev(1)));
            s.reserved = reserved("gateways", &res);
            for (cidr, owner, used) in blocks {
                let mut b = Block::new(net(cidr), Some(node(owner)));
                b.allocate(
                    used,
                    &AllocationAttribute::for_handle(HandleId::new("other").unwrap()),
                );
                s.blocks.insert(net(cidr), Some(Versioned::new(b, rev(2))));
                s.affinities.insert(
                    (node(owner), net(cidr)),
                    Versioned::new(
                        BlockAffinity {
                            node: node(owner),
                            cidr: net(cidr),
                            state: AffinityState::Confirmed,
                        },
                        rev(3),
                    ),
                );
            }
            // A node may own one block at most: the "borrow" cases cannot claim.
            s.config.max_blocks_per_host = 1;
            let mut req = AutoAssignRequest::new(
                HandleId::new("h").unwrap(),
                NodeInfo::new(node("a")),
                want_n,
                0,
            );
            if what.contains("borrow") {
                // Node a has a full block of its own, elsewhere, so it may not claim.
                s.config.max_blocks_per_host = 0;
                s.config.auto_allocate_blocks = false;
            }
            let got = drive(&mut req, &mut s);
            match (got, want) {
                (Ok(a), Ok(w)) => {
                    let w: Vec<IpAddr> = w.iter().map(|x| x.parse().unwrap()).collect();
                    assert_eq!(a.v4, w, "{what}");
                    for ip in &a.v4 {
                        assert!(s.reserved(ip).is_none(), "{what}: {ip} is reserved");
                    }
                }
                (Err(e), Err(frag)) => {
                    assert!(e.to_string().contains(frag), "{what}: {e}")
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Which pool a pod's address comes from: `Manual` pools only when named,
    /// `namespaceSelector` by the namespace's labels (unknown labels select no such
    /// pool), neither looked at for requests that are not for a pod.
    #[test]
    fn pool_choice_by_assignment_mode_and_namespace() {
        use crate::model::AssignmentMode::Manual;
        let pools = || {
            let mut manual = IpPool::new(PoolName::new("manual").unwrap(), net("10.1.0.0/30"));
            manual.block_size = 30;
            manual.assignment_mode = Manual;
            let mut team = IpPool::new(PoolName::new("team").unwrap(), net("10.2.0.0/30"));
            team.block_size = 30;
            team.namespace_selector =
                Box::new(crate::model::Selector::parse("team == 'a'").unwrap());
            let mut any = IpPool::new(PoolName::new("any").unwrap(), net("10.3.0.0/30"));
            any.block_size = 30;
            [manual, team, any]
        };
        type Case = (
            &'static str,
            Vec<&'static str>,
            Option<&'static str>,
            Option<&'static [(&'static str, &'static str)]>,
            &'static [&'static str],
            Result<&'static str, &'static str>,
        );
        // (what, pools in the store, namespace, its labels, pools asked for, want pool or error)
        let cases: Vec<Case> = vec![
            (
                "a Manual pool is not chosen by default",
                vec!["manual", "any"],
                Some("web"),
                Some(&[]),
                &[],
                Ok("10.3.0.0"),
            ),
            (
                "only a Manual pool: exhausted",
                vec!["manual"],
                Some("web"),
                Some(&[]),
                &[],
                Err("Manual pools only when named"),
            ),
            (
                "a Manual pool named",
                vec!["manual", "any"],
                Some("web"),
                Some(&[]),
                &["manual"],
                Ok("10.1.0.0"),
            ),
            (
                "namespace selected",
                vec!["team"],
                Some("web"),
                Some(&[("team", "a")]),
                &[],
                Ok("10.2.0.0"),
            ),
            (
                "namespace not selected",
                vec!["team", "any"],
                Some("web"),
                Some(&[("team", "b")]),
                &[],
                Ok("10.3.0.0"),
            ),
            (
                "namespace labels unknown",
                vec!["team"],
                Some("web"),
                None,
                &[],
                Err("no enabled IPv4 pool"),
            ),
            (
                "named, but the namespace is not selected",
                vec!["team"],
                Some("web"),
                Some(&[]),
                &["team"],
                Err("no enabled IPv4 pool"),
            ),
            (
                "not for a pod: no namespace to select",
                vec!["team"],
                None,
                None,
                &[],
                Ok("10.2.0.0"),
            ),
        ];
        for (what, present, ns, labels, asked, want) in cases {
            let mut s = Snapshot::default();
            for p in pools() {
                if present.contains(&p.name.as_str()) {
                    s.pools.push(Versioned::new(p, rev(1)));
                }
            }
            let mut req =
                AutoAssignRequest::new(HandleId::new("h").unwrap(), NodeInfo::new(node("a")), 1, 0);
            req.namespace = ns.map(str::to_owned);
            req.namespace_labels = labels.map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            });
            req.pools = asked.iter().map(|n| PoolName::new(*n).unwrap()).collect();
            match (drive(&mut req, &mut s), want) {
                (Ok(a), Ok(ip)) => assert_eq!(a.v4, [ip.parse::<IpAddr>().unwrap()], "{what}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// LoadBalancer pools serve only LoadBalancer requests, and those only from them; their
    /// blocks belong to no node, so strict affinity and a node's block limit do not apply.
    #[test]
    fn pool_choice_for_load_balancer_addresses() {
        use crate::model::AssignmentMode::Manual;
        let pools = || {
            let pod = IpPool::new(PoolName::new("pods").unwrap(), net("10.0.0.0/26"));
            let mut lb = IpPool::new(PoolName::new("lb").unwrap(), net("192.0.2.0/29"));
            lb.block_size = 30;
            lb.allowed_uses = vec![AllowedUse::LoadBalancer];
            let mut lb_manual =
                IpPool::new(PoolName::new("lb-manual").unwrap(), net("198.51.100.0/30"));
            lb_manual.block_size = 30;
            lb_manual.allowed_uses = vec![AllowedUse::LoadBalancer];
            lb_manual.assignment_mode = Manual;
            let mut lb6 = IpPool::new(PoolName::new("lb6").unwrap(), net("2001:db8::/126"));
            lb6.block_size = 126;
            lb6.allowed_uses = vec![AllowedUse::LoadBalancer];
            [pod, lb, lb_manual, lb6]
        };
        type Case = (
            &'static str,
            AllowedUse,
            &'static [&'static str],
            (u32, u32),
            bool,
            Result<&'static [&'static str], &'static str>,
        );
        // (what, use, pools asked for, (v4, v6), strict affinity, want addresses or error)
        let cases: Vec<Case> = vec![
            (
                "a pod never gets a LoadBalancer address",
                AllowedUse::Workload,
                &[],
                (1, 0),
                false,
                Ok(&["10.0.0.0"]),
            ),
            (
                "a tunnel never gets one",
                AllowedUse::Tunnel,
                &[],
                (0, 1),
                false,
                Err("no enabled IPv6 pool"),
            ),
            (
                "a pod naming a LoadBalancer pool gets nothing",
                AllowedUse::Workload,
                &["lb"],
                (1, 0),
                false,
                Err("no enabled IPv4 pool"),
            ),
            (
                "a Service: the Automatic LoadBalancer pool",
                AllowedUse::LoadBalancer,
                &[],
                (1, 0),
                false,
                Ok(&["192.0.2.0"]),
            ),
            (
                "strict affinity does not apply",
                AllowedUse::LoadBalancer,
                &[],
                (1, 0),
                true,
                Ok(&["192.0.2.0"]),
            ),
            (
                "a Manual LoadBalancer pool when named",
                AllowedUse::LoadBalancer,
                &["lb-manual"],
                (1, 0),
                false,
                Ok(&["198.51.100.0"]),
            ),
            (
                "a Service naming a pod pool gets nothing",
                AllowedUse::LoadBalancer,
                &["pods"],
                (1, 0),
                false,
                Err("no enabled IPv4 pool"),
            ),
            (
                "dual-stack",
                AllowedUse::LoadBalancer,
                &[],
                (1, 1),
                false,
                Ok(&["192.0.2.0", "2001:db8::"]),
            ),
            (
                "packs then spills into the next block",
                AllowedUse::LoadBalancer,
                &["lb"],
                (5, 0),
                false,
                Ok(&[
                    "192.0.2.0",
                    "192.0.2.1",
                    "192.0.2.2",
                    "192.0.2.3",
                    "192.0.2.4",
                ]),
            ),
            (
                "the pool runs out",
                AllowedUse::LoadBalancer,
                &["lb"],
                (9, 0),
                false,
                Err("LoadBalancer pool"),
            ),
        ];
        for (what, use_, asked, (v4, v6), strict, want) in cases {
            let mut s = Snapshot::default();
            for p in pools() {
                s.pools.push(Versioned::new(p, rev(1)));
            }
            s.config.strict_affinity = strict;
            let mut req = AutoAssignRequest::new(
                HandleId::new("lb.default.web").unwrap(),
                NodeInfo::new(node("a")),
                v4,
                v6,
            );
            req.use_ = use_;
            req.pools = asked.iter().map(|n| PoolName::new(*n).unwrap()).collect();
            match (drive(&mut req, &mut s), want) {
                (Ok(a), Ok(ips)) => {
                    let got: Vec<IpAddr> = a.v4.iter().chain(&a.v6).copied().collect();
                    let want: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
                    assert_eq!(got, want, "{what}");
                    if use_ == AllowedUse::LoadBalancer {
                        assert!(
                            s.all_affinities().unwrap().next().is_none(),
                            "{what}: affinity claimed"
                        );
                    }
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_reserved_address_is_not_assigned_on_request() {
        let mut s = snap_with(Some(Block::new(net("10.0.0.0/26"), Some(node("a")))));
        s.reserved = reserved("gateways", &["10.0.0.1"]);
        let req = |ip: &str| AssignIpRequest {
            ip: ip.parse().unwrap(),
            handle: HandleId::new("h").unwrap(),
            node: NodeInfo::new(node("a")),
            namespace: None,
            pod: None,
        };
        let e = drive(&mut req("10.0.0.1"), &mut s).unwrap_err();
        assert!(e.to_string().contains("IPReservation gateways"), "{e}");
        assert_eq!(
            drive(&mut req("10.0.0.2"), &mut s).unwrap(),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        // Without a block yet: refused before anything is written.
        let mut empty = snap_with(None);
        empty.reserved = reserved("gateways", &["10.0.0.0/26"]);
        let e = drive(&mut req("10.0.0.9"), &mut empty).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        assert!(empty.blocks.values().all(Option::is_none));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = crate::ops::RetryPolicy::default();
        let mut rng = rand::rng();
        for attempt in 0..40 {
            let b = p.backoff(attempt, &mut rng);
            assert!(b <= p.max_backoff, "{attempt}: {b:?}");
            assert!(b >= p.initial_backoff / 2, "{attempt}: {b:?}");
        }
    }
}
