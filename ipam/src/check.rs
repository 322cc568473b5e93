//! Consistency check and repair over a full snapshot.
//!
//! [`analyze`] finds leaks (allocations no live handle owns), orphans (blocks
//! outside every pool, affinities without their block, blocks without their affinity,
//! half-done claims and releases), double allocations (an address held in two
//! overlapping blocks), corrupt blocks and handle records that disagree with the blocks.
//! [`fix`] returns the writes that repair one problem, when a safe repair exists; the
//! [`Check`] plan applies them one by one, re-analysing after each.
//!
//! A list of live handles is a picture taken at one moment, by a caller that knows the
//! workloads (e.g. from the container runtime); two kinds of allocation are never
//! leaks whatever it says:
//! - tunnel addresses (IPIP, VXLAN), which each node's agent holds under its own
//!   handles ([`TUNNEL_HANDLE_PREFIXES`], Calico's names) and releases itself, and
//!   Services' LoadBalancer addresses, which their allocator holds and releases
//!   ([`crate::model::LOAD_BALANCER_HANDLE_PREFIX`]);
//! - allocations made at or after the moment the list was taken
//!   ([`LiveHandles::taken_at`], less the clock skew allowed between hosts): a pod
//!   started meanwhile is missing from the list but alive. Allocations without a
//!   recorded time predate serval recording it, and count as older than any list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::{heal_affinity, Need, Plan, Snapshot, Step};
use crate::error::IpamError;
use crate::model::{AffinityState, AllocationAttribute, BlockAffinity, Handle, HandleId, NodeName};
use crate::store::{Key, Object, Write};

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "camelCase")]
pub enum Problem {
    /// The block's allocations and free list disagree.
    #[serde(rename_all = "camelCase")]
    BlockCorrupt { block: IpNet, detail: String },
    /// A block inside no pool, or not aligned with its pool's block size.
    #[serde(rename_all = "camelCase")]
    OrphanedBlock { block: IpNet, in_use: u32 },
    /// An address allocated in two overlapping blocks.
    #[serde(rename_all = "camelCase")]
    DoubleAllocation {
        ip: IpAddr,
        blocks: Vec<IpNet>,
        handles: Vec<HandleId>,
    },
    /// An allocation whose handle is not live.
    #[serde(rename_all = "camelCase")]
    Leak {
        ip: IpAddr,
        handle: HandleId,
        block: IpNet,
    },
    /// A handle record that does not match the addresses the blocks hold for it.
    #[serde(rename_all = "camelCase")]
    HandleMismatch {
        handle: HandleId,
        recorded: BTreeMap<IpNet, u32>,
        actual: BTreeMap<IpNet, u32>,
    },
    /// An affinity whose block is missing or names another node, or a claim or release
    /// that stopped half-way.
    #[serde(rename_all = "camelCase")]
    OrphanedAffinity {
        node: NodeName,
        block: IpNet,
        state: AffinityState,
        detail: String,
    },
    /// A block that names a node without that node's affinity object.
    #[serde(rename_all = "camelCase")]
    MissingAffinity { block: IpNet, node: NodeName },
    /// A block marked deleted whose release did not finish.
    #[serde(rename_all = "camelCase")]
    DeletedBlock { block: IpNet, in_use: u32 },
    /// An address allocated inside an IPReservation (allocated before the reservation
    /// was made, or by something that ignores it). Not repaired: the owner may be a live
    /// pod; the operator releases it or narrows the reservation.
    #[serde(rename_all = "camelCase")]
    ReservedInUse {
        ip: IpAddr,
        handle: HandleId,
        block: IpNet,
        reservation: String,
        reserved: IpNet,
    },
}

impl Problem {
    /// Which of the three headline categories this belongs to.
    pub fn category(&self) -> &'static str {
        match self {
            Problem::Leak { .. } | Problem::HandleMismatch { .. } => "leak",
            Problem::DoubleAllocation { .. } | Problem::BlockCorrupt { .. } => "double allocation",
            Problem::OrphanedBlock { .. }
            | Problem::OrphanedAffinity { .. }
            | Problem::MissingAffinity { .. }
            | Problem::DeletedBlock { .. } => "orphan",
            Problem::ReservedInUse { .. } => "reserved",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BlockCorrupt { block, detail } => {
                write!(f, "block {block} is corrupt: {detail}")
            }
            Problem::OrphanedBlock { block, in_use } => {
                write!(
                    f,
                    "block {block} ({in_use} in use) is in no pool or misaligned with its pool"
                )
            }
            Problem::DoubleAllocation {
                ip,
                blocks,
                handles,
            } => {
                write!(
                    f,
                    "{ip} is allocated in blocks {blocks:?} to handles {handles:?}"
                )
            }
            Problem::Leak { ip, handle, block } => write!(
                f,
                "{ip} in block {block} is held by {handle}, which is not live"
            ),
            Problem::HandleMismatch {
                handle,
                recorded,
                actual,
            } => {
                write!(
                    f,
                    "handle {handle} records {recorded:?} but the blocks hold {actual:?}"
                )
            }
            Problem::OrphanedAffinity {
                node,
                block,
                state,
                detail,
            } => {
                write!(f, "affinity {node} → {block} ({state:?}): {detail}")
            }
            Problem::MissingAffinity { block, node } => write!(
                f,
                "block {block} names node {node}, which has no affinity for it"
            ),
            Problem::DeletedBlock { block, in_use } => {
                write!(
                    f,
                    "block {block} ({in_use} in use) is marked deleted but still exists"
                )
            }
            Problem::ReservedInUse {
                ip,
                handle,
                block,
                reservation,
                reserved,
            } => write!(
                f,
                "{ip} in block {block} is held by {handle} but IPReservation {reservation} \
                 reserves {reserved}"
            ),
        }
    }
}

/// The handles of node tunnel addresses: `<prefix><node>`, as the agent allocates them.
pub const TUNNEL_HANDLE_PREFIXES: [&str; 3] = [
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "vxlan-v6-tunnel-addr-",
];

/// Whether `h` holds a node's tunnel address.
pub fn is_tunnel_handle(h: &HandleId) -> bool {
    TUNNEL_HANDLE_PREFIXES.iter().any(|p| {
        h.as_str()
            .strip_prefix(p)
            .is_some_and(|node| !node.is_empty())
    })
}

/// The handles that were live at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveHandles {
    pub handles: BTreeSet<HandleId>,
    /// When the list was taken (seconds since the Unix epoch), already less the clock
    /// skew allowed between the hosts that allocate; `None`: no allocation is judged by
    /// its time (only safe while nothing allocates).
    pub taken_at: Option<u64>,
}

/// A list judged without times: only safe while nothing allocates.
impl From<BTreeSet<HandleId>> for LiveHandles {
    fn from(handles: BTreeSet<HandleId>) -> Self {
        LiveHandles {
            handles,
            taken_at: None,
        }
    }
}

impl LiveHandles {
    /// Whether the allocation `attr` is a leak by this list.
    pub fn leaked(&self, attr: &AllocationAttribute) -> bool {
        if self.handles.contains(&attr.handle_id)
            || is_tunnel_handle(&attr.handle_id)
            || attr
                .handle_id
                .as_str()
                .starts_with(crate::model::LOAD_BALANCER_HANDLE_PREFIX)
        {
            return false;
        }
        match (self.taken_at, attr.allocated_at) {
            (Some(list), Some(at)) => at < list,
            _ => true,
        }
    }
}

/// Every problem in a full snapshot. With `live`, allocations it does not account for
/// are leaks (see [`LiveHandles::leaked`]).
pub fn analyze(snap: &Snapshot, live: Option<&LiveHandles>) -> Vec<Problem> {
    let mut out = Vec::new();
    let blocks: Vec<_> = snap.blocks.values().flatten().collect();
    for b in &blocks {
        let v = &b.value;
        for detail in v.integrity_problems() {
            out.push(Problem::BlockCorrupt {
                block: v.cidr,
                detail,
            });
        }
        let aligned = snap
            .pool_of(&v.cidr)
            .is_some_and(|p| p.block_size == v.cidr.prefix_len());
        if !aligned {
            out.push(Problem::OrphanedBlock {
                block: v.cidr,
                in_use: v.in_use(),
            });
        }
        if let Some(node) = &v.affinity {
            if !snap.affinities.contains_key(&(node.clone(), v.cidr)) {
                out.push(Problem::MissingAffinity {
                    block: v.cidr,
                    node: node.clone(),
                });
            }
        }
        let pending_deletion = v
            .affinity
            .as_ref()
            .and_then(|n| snap.affinities.get(&(n.clone(), v.cidr)))
            .is_some_and(|a| a.value.state == AffinityState::PendingDeletion);
        if v.deleted && !pending_deletion {
            out.push(Problem::DeletedBlock {
                block: v.cidr,
                in_use: v.in_use(),
            });
        }
    }
    // Double allocations: the same address in overlapping blocks.
    let mut holders: BTreeMap<IpAddr, Vec<(IpNet, HandleId)>> = BTreeMap::new();
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[i + 1..] {
            if a.value.cidr.contains(&b.value.cidr) || b.value.cidr.contains(&a.value.cidr) {
                for blk in [a, b] {
                    for (ip, attr) in blk.value.allocated() {
                        holders
                            .entry(ip)
                            .or_default()
                            .push((blk.value.cidr, attr.handle_id.clone()));
                    }
                }
            }
        }
    }
    for (ip, mut hs) in holders {
        hs.sort();
        hs.dedup();
        if hs.len() > 1 {
            out.push(Problem::DoubleAllocation {
                ip,
                blocks: hs.iter().map(|h| h.0).collect(),
                handles: hs.into_iter().map(|h| h.1).collect(),
            });
        }
    }
    // Handles: records against what the blocks hold.
    let mut actual: BTreeMap<HandleId, BTreeMap<IpNet, u32>> = BTreeMap::new();
    for b in &blocks {
        for (ip, attr) in b.value.allocated() {
            *actual
                .entry(attr.handle_id.clone())
                .or_default()
                .entry(b.value.cidr)
                .or_default() += 1;
            if live.is_some_and(|l| l.leaked(attr)) {
                out.push(Problem::Leak {
                    ip,
                    handle: attr.handle_id.clone(),
                    block: b.value.cidr,
                });
            }
            if let Some(r) = snap.reserved(&ip) {
                out.push(Problem::ReservedInUse {
                    ip,
                    handle: attr.handle_id.clone(),
                    block: b.value.cidr,
                    reservation: r.name.clone(),
                    reserved: r.cidr,
                });
            }
        }
    }
    let empty = BTreeMap::new();
    let ids: BTreeSet<&HandleId> = actual
        .keys()
        .chain(
            snap.handles
                .iter()
                .filter(|(_, h)| h.is_some())
                .map(|(k, _)| k),
        )
        .collect();
    for id in ids {
        let recorded = snap
            .handles
            .get(id)
            .and_then(|h| h.as_ref())
            .map(|h| &h.value.block)
            .unwrap_or(&empty);
        let held = actual.get(id).unwrap_or(&empty);
        if recorded != held {
            out.push(Problem::HandleMismatch {
                handle: id.clone(),
                recorded: recorded.clone(),
                actual: held.clone(),
            });
        }
    }
    // Affinities against blocks.
    for a in snap.affinities.values() {
        let v = &a.value;
        let block = snap.blocks.get(&v.cidr).and_then(|b| b.as_ref());
        let detail = match (v.state, block) {
            (_, None) => Some("its block does not exist"),
            (_, Some(b)) if b.value.affinity.as_ref() != Some(&v.node) => {
                Some("its block belongs to another node")
            }
            (AffinityState::Pending, Some(_)) => Some("the claim stopped before confirming"),
            (AffinityState::PendingDeletion, Some(_)) => Some("the release stopped half-way"),
            (AffinityState::Confirmed, Some(_)) => None,
        };
        if let Some(d) = detail {
            out.push(Problem::OrphanedAffinity {
                node: v.node.clone(),
                block: v.cidr,
                state: v.state,
                detail: d.to_owned(),
            });
        }
    }
    out
}

/// The writes that repair `p`, if a safe repair exists.
pub fn fix(snap: &Snapshot, p: &Problem) -> Option<Vec<Write>> {
    let block = |c: &IpNet| snap.blocks.get(c).and_then(|b| b.as_ref());
    match p {
        Problem::BlockCorrupt { block: c, .. } => {
            let b = block(c)?;
            let mut v = b.value.clone();
            v.rebuild_free_list();
            Some(vec![Write::update(Object::Block(v), b.revision.clone())])
        }
        Problem::OrphanedBlock { block: c, in_use } if *in_use == 0 => {
            let b = block(c)?;
            Some(vec![Write::delete(Key::Block(*c), b.revision.clone())])
        }
        Problem::OrphanedBlock { .. } => None,
        // The holder may be a live pod: releasing its address is the operator's call.
        Problem::ReservedInUse { .. } => None,
        Problem::DoubleAllocation { ip, blocks, .. } => {
            // Keep the address in the block that fits its pool's layout; free the others.
            let keep = blocks
                .iter()
                .find(|c| {
                    snap.pool_of(c)
                        .is_some_and(|p| p.block_size == c.prefix_len())
                })
                .or(blocks.first())?;
            let writes: Vec<Write> = blocks
                .iter()
                .filter(|c| *c != keep)
                .filter_map(|c| {
                    let b = block(c)?;
                    let mut v = b.value.clone();
                    v.release(*ip)?;
                    Some(Write::update(Object::Block(v), b.revision.clone()))
                })
                .collect();
            (!writes.is_empty()).then_some(writes)
        }
        Problem::Leak { ip, block: c, .. } => {
            let b = block(c)?;
            let mut v = b.value.clone();
            v.release(*ip)?;
            Some(vec![Write::update(Object::Block(v), b.revision.clone())])
        }
        Problem::HandleMismatch { handle, actual, .. } => {
            let rec = snap.handles.get(handle).and_then(|h| h.as_ref());
            Some(vec![match (rec, actual.is_empty()) {
                (Some(r), true) => Write::delete(Key::Handle(handle.clone()), r.revision.clone()),
                (r, _) => Write::put(
                    Object::Handle(Handle {
                        handle_id: handle.clone(),
                        block: actual.clone(),
                    }),
                    r.map(|r| r.revision.clone()),
                ),
            }])
        }
        Problem::OrphanedAffinity { node, block: c, .. } => {
            let a = snap.affinities.get(&(node.clone(), *c))?;
            heal_affinity(snap, a, false).ok().flatten()
        }
        Problem::MissingAffinity { block: c, node } => {
            Some(vec![Write::create(Object::Affinity(BlockAffinity {
                node: node.clone(),
                cidr: *c,
                state: AffinityState::Confirmed,
            }))])
        }
        Problem::DeletedBlock { block: c, in_use } => {
            let b = block(c)?;
            if *in_use == 0 {
                Some(vec![Write::delete(Key::Block(*c), b.revision.clone())])
            } else {
                let mut v = b.value.clone();
                v.deleted = false;
                Some(vec![Write::update(Object::Block(v), b.revision.clone())])
            }
        }
    }
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Problems found before any repair.
    pub problems: Vec<Problem>,
    /// Whether repairs were attempted.
    pub repaired: bool,
    /// Problems left after repair (all of them without `--repair`).
    pub remaining: Vec<Problem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems per headline category (leak, orphan, double allocation).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for p in &self.problems {
            *m.entry(p.category()).or_default() += 1;
        }
        m
    }
}

/// The check as a plan: analyze, and with `repair` fix one problem per step.
#[derive(Clone, Debug)]
pub struct Check {
    repair: bool,
    live: Option<LiveHandles>,
    found: Option<Vec<Problem>>,
    repairs: usize,
}

impl Check {
    pub fn new(repair: bool, live: Option<LiveHandles>) -> Self {
        Check {
            repair,
            live,
            found: None,
            repairs: 0,
        }
    }
}

impl Plan for Check {
    type Output = CheckReport;

    fn name(&self) -> &'static str {
        "check"
    }

    fn step(&mut self, snap: &Snapshot) -> Result<Step<CheckReport>, IpamError> {
        for (loaded, need) in [
            (snap.all_blocks, Need::AllBlocks),
            (snap.all_affinities, Need::AllAffinities),
            (snap.all_handles, Need::AllHandles),
        ] {
            if !loaded {
                return Ok(Step::Need(need));
            }
        }
        let problems = analyze(snap, self.live.as_ref());
        let found = self.found.get_or_insert_with(|| problems.clone()).clone();
        // Each repair fixes one problem or turns it into a simpler one; bound the loop.
        let limit = 4 * found.len() + 8;
        if self.repair && self.repairs < limit {
            if let Some(w) = problems.iter().find_map(|p| fix(snap, p)) {
                self.repairs += 1;
                return Ok(Step::Write(w));
            }
        }
        Ok(Step::Done(CheckReport {
            problems: found,
            repaired: self.repair,
            remaining: problems,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(handle: &str, at: Option<u64>) -> AllocationAttribute {
        AllocationAttribute {
            allocated_at: at,
            ..AllocationAttribute::for_handle(HandleId::new(handle).unwrap())
        }
    }

    #[test]
    fn what_a_live_list_calls_a_leak() {
        let live = LiveHandles {
            handles: [HandleId::new("pod-a").unwrap()].into(),
            taken_at: Some(1_000),
        };
        let cases = [
            (attr("pod-a", Some(10)), false, "live"),
            (attr("gone", Some(999)), true, "older than the list"),
            (
                attr("gone", None),
                true,
                "no time: older than serval's recording it",
            ),
            (
                attr("new", Some(1_000)),
                false,
                "given when the list was taken",
            ),
            (
                attr("new", Some(5_000)),
                false,
                "given after the list was taken",
            ),
            (
                attr("ipip-tunnel-addr-n1", Some(1)),
                false,
                "a tunnel address",
            ),
            (
                attr("vxlan-tunnel-addr-n1", None),
                false,
                "a tunnel address",
            ),
            (
                attr("vxlan-v6-tunnel-addr-n1", None),
                false,
                "a tunnel address",
            ),
            (
                attr("serval-lb.default.web", Some(1)),
                false,
                "a Service's LoadBalancer address",
            ),
        ];
        for (a, leaked, why) in cases {
            assert_eq!(live.leaked(&a), leaked, "{}: {why}", a.handle_id);
        }
        let untimed = LiveHandles {
            taken_at: None,
            ..live
        };
        assert!(untimed.leaked(&attr("new", Some(5_000))));
    }
}

#[cfg(test)]
mod reservation_tests {
    use super::*;
    use crate::model::{Block, IpPool, PoolName};
    use crate::reservation::Reserved;
    use crate::store::{Revision, Versioned};

    /// An allocation inside a reservation is reported with the reservation's name and
    /// left alone by repair; one outside is not reported.
    #[test]
    fn allocations_inside_a_reservation_are_reported_not_repaired() {
        let mut s = Snapshot::default();
        let mut p = IpPool::new(PoolName::new("p").unwrap(), "10.0.0.0/24".parse().unwrap());
        p.block_size = 26;
        s.pools.push(Versioned::new(p, Revision("1".into())));
        let cidr: IpNet = "10.0.0.0/26".parse().unwrap();
        let mut b = Block::new(cidr, None);
        b.allocate(
            2,
            &AllocationAttribute::for_handle(HandleId::new("pod-a").unwrap()),
        );
        s.blocks
            .insert(cidr, Some(Versioned::new(b, Revision("2".into()))));
        s.handles.insert(
            HandleId::new("pod-a").unwrap(),
            Some(Versioned::new(
                Handle {
                    handle_id: HandleId::new("pod-a").unwrap(),
                    block: [(cidr, 2)].into(),
                },
                Revision("3".into()),
            )),
        );
        assert!(analyze(&s, None).is_empty());
        s.reserved = vec![Reserved {
            name: "gateways".into(),
            cidr: "10.0.0.1/32".parse().unwrap(),
        }];
        let problems = analyze(&s, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(
            matches!(p, Problem::ReservedInUse { ip, reservation, .. }
                if *ip == "10.0.0.1".parse::<IpAddr>().unwrap() && reservation == "gateways"),
            "{p:?}"
        );
        assert_eq!(p.category(), "reserved");
        assert!(p.to_string().contains("IPReservation gateways"), "{p}");
        assert_eq!(fix(&s, p), None);
    }
}
