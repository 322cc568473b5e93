//! The state of one address family — Loc-RIB table, Adj-RIB-Out of every peer, set of
//! destinations whose best path changed — and the one primitive that changes it: set or
//! remove one path, re-run the decision process, and queue what changed.

use super::adj_out::AdjOut;
use super::bitset::BitSet;
use super::decision::{self, Candidate};
use super::loc::{pflag, Dest, Path, Table};
use super::prefix::PrefixKey;
use super::{PeerId, Shared};
use crate::wire::attr::{NextHop, PathAttrs};
use smallvec::SmallVec;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub(crate) struct FamilyRib<K> {
    pub table: Table<K>,
    /// Indexed by `PeerId`; `Some` while the peer's session is up for this family.
    pub adj_out: Vec<Option<AdjOut>>,
    /// Destinations whose best path or multipath set changed since the last
    /// `drain_best_changes`.
    pub best_dirty: BitSet,
    /// Peers (by `PeerId`) whose Adj-RIB-Out had something queued since the last
    /// [`Rib::take_export_queued`](super::Rib::take_export_queued): the speaker looks at
    /// these instead of at every peer after each change.
    pub export_queued: BitSet,
}

impl<K: PrefixKey> Default for FamilyRib<K> {
    fn default() -> Self {
        FamilyRib {
            table: Table::default(),
            adj_out: Vec::new(),
            best_dirty: BitSet::default(),
            export_queued: BitSet::default(),
        }
    }
}

/// What a path change does.
pub(crate) enum PathOp {
    Set {
        attrs: Arc<PathAttrs>,
        filtered: bool,
    },
    Remove,
}

/// Identity of a selected path: who sent it, under which id, with which attributes.
type PathKey = (u16, u32, *const PathAttrs);

fn selection_keys<K>(d: &Dest<K>) -> SmallVec<[PathKey; 2]> {
    d.multipath()
        .iter()
        .map(|p| (p.peer, p.path_id, Arc::as_ptr(&p.attrs)))
        .collect()
}

pub(crate) fn next_hop_ip(nh: &NextHop) -> IpAddr {
    match nh {
        NextHop::V4(a) => IpAddr::V4(*a),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}

/// The decision-process view of one path.
pub(crate) fn candidate(shared: &Shared, index: usize, p: &Path) -> Candidate {
    let a = &p.attrs;
    let cfg = &shared.cfg;
    let local = p.peer == 0;
    let peer = shared.peer(p.peer());
    let (ebgp, router_id, address) = match peer {
        Some(ps) if !local => (ps.info.is_ebgp(), ps.router_id(), ps.info.address),
        _ => (false, cfg.router_id.0, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    let (reachable, igp_cost) = match &a.next_hop {
        Some(nh) if !local => (shared.resolver.reachable(nh), shared.resolver.igp_cost(nh)),
        _ => (true, 0),
    };
    let missing_med = if cfg.med_missing_as_worst {
        u32::MAX
    } else {
        0
    };
    Candidate {
        index,
        reachable,
        local,
        local_pref: a.local_pref.unwrap_or(cfg.default_local_pref),
        as_path_len: u32::try_from(a.as_path.decision_len()).unwrap_or(u32::MAX),
        origin: a.origin,
        med: a.med.unwrap_or(missing_med),
        neighbor_as: a.as_path.neighbor_as(),
        ebgp,
        igp_cost,
        originator: a.originator_id.unwrap_or(router_id),
        cluster_len: u32::try_from(a.cluster_list.len()).unwrap_or(u32::MAX),
        peer_address: address,
        path_id: p.path_id,
        peer: u32::from(p.peer),
        next_hop: a.next_hop.as_ref().map(next_hop_ip),
    }
}

/// Runs the decision process on `d` and puts the multipath set first, best at 0.
pub(crate) fn decide<K>(d: &mut Dest<K>, shared: &Shared) {
    let usable = d.paths.iter().filter(|p| !p.filtered()).count();
    if usable == 0 {
        d.best_len = 0;
        return;
    }
    if d.paths.len() == 1 {
        // Alone: the best if its next hop resolves (the same test as `candidate`).
        let p = &d.paths[0];
        let reachable = p.peer == 0
            || p.attrs
                .next_hop
                .as_ref()
                .is_none_or(|nh| shared.resolver.reachable(nh));
        d.best_len = u8::from(reachable);
        return;
    }
    let cands: decision::CandStore = d
        .paths
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.filtered())
        .map(|(i, p)| candidate(shared, i, p))
        .collect();
    let sel = decision::select(&cands, &shared.cfg.decision());
    d.best_len = sel.multipath.len() as u8;
    if sel.multipath.iter().enumerate().all(|(pos, &i)| pos == i) {
        return;
    }
    // Swap the selected paths to the front in place; `at[pos]` is the original index of
    // the path now at `pos`.
    let mut at: SmallVec<[usize; 16]> = (0..d.paths.len()).collect();
    for (target, &orig) in sel.multipath.iter().enumerate() {
        if let Some(cur) = at.iter().position(|&o| o == orig) {
            d.paths.swap(target, cur);
            at.swap(target, cur);
        }
    }
}

impl<K: PrefixKey> FamilyRib<K> {
    pub fn adj_out_mut(&mut self, peer: PeerId) -> Option<&mut AdjOut> {
        self.adj_out
            .get_mut(peer.0 as usize)
            .and_then(Option::as_mut)
    }

    /// Sets or removes the path `(peer, path_id)` of destination `id`, keeping the peer's
    /// counters, and re-runs the decision. Returns false when nothing changed.
    pub fn set_path(
        &mut self,
        shared: &mut Shared,
        id: u32,
        peer: PeerId,
        path_id: u32,
        op: PathOp,
    ) -> bool {
        let fam = K::FAMILY.index();
        let d = &mut self.table.dests[id as usize];
        if d.paths.is_empty() {
            // The common case of a table load: the first path of a new destination.
            let PathOp::Set { attrs, filtered } = op else {
                return false;
            };
            let flags = if filtered { pflag::FILTERED } else { 0 };
            d.paths
                .push(Path::new(attrs, peer.0 as u16, 1, path_id, flags));
            if let Some(ps) = shared.peer_mut(peer) {
                let c = &mut ps.counts[fam];
                c.received += 1;
                if filtered {
                    c.filtered += 1;
                } else {
                    c.accepted += 1;
                }
            }
            let d = &mut self.table.dests[id as usize];
            decide(d, shared);
            if d.best_len > 0 {
                self.best_dirty.insert(id);
            }
            let source = (d.best_len > 0).then_some(peer.0 as u16);
            for (me, adj) in self.adj_out.iter_mut().enumerate() {
                if let Some(adj) = adj {
                    if adj.concerned(me, id, source) {
                        adj.pending.insert(id);
                        self.export_queued.insert(me as u32);
                    }
                }
            }
            return true;
        }
        let before = selection_keys(d);
        let peer16 = peer.0 as u16;
        let pos = d.find(peer16, path_id);
        let old_flags = pos.map(|i| d.paths[i].flags());
        // Whether the change provably leaves the selection alone (see
        // `decision::loses_before_med`): the old and the new path both lose to the best
        // before the MED step.
        let best_c = (d.best_len > 0).then(|| candidate(shared, 0, &d.paths[0]));
        let old_harmless = match (&best_c, pos) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(b), Some(i)) => {
                i >= usize::from(d.best_len)
                    && (d.paths[i].filtered()
                        || decision::loses_before_med(&candidate(shared, i, &d.paths[i]), b))
            }
        };
        // Where the new path is after the change (`None`: removed).
        let mut new_at: Option<usize> = None;
        match op {
            PathOp::Set { attrs, filtered } => {
                let flags = if filtered { pflag::FILTERED } else { 0 };
                new_at = Some(pos.unwrap_or(d.paths.len()));
                match pos {
                    Some(i) => {
                        let p = &mut d.paths[i];
                        if Arc::ptr_eq(&p.attrs, &attrs) && p.flags() == flags {
                            shared.interner.release(attrs);
                            return false;
                        }
                        let old = std::mem::replace(&mut p.attrs, attrs);
                        p.set_flags(flags);
                        shared.interner.release(old);
                    }
                    None => {
                        let local_id = d.free_local_id();
                        d.paths
                            .push(Path::new(attrs, peer16, local_id, path_id, flags));
                    }
                }
                if let Some(ps) = shared.peer_mut(peer) {
                    let c = &mut ps.counts[fam];
                    match old_flags {
                        Some(f) => {
                            if f & pflag::FILTERED != 0 {
                                c.filtered -= 1;
                            } else {
                                c.accepted -= 1;
                            }
                            if f & pflag::STALE != 0 {
                                c.stale -= 1;
                            }
                        }
                        None => c.received += 1,
                    }
                    if filtered {
                        c.filtered += 1;
                    } else {
                        c.accepted += 1;
                    }
                }
            }
            PathOp::Remove => {
                let Some(i) = pos else { return false };
                let p = d.paths.remove(i);
                if i < usize::from(d.best_len) {
                    // Keep the front of the vector meaningful until `decide` re-sorts it.
                    d.best_len = 0;
                }
                if let Some(ps) = shared.peer_mut(peer) {
                    let c = &mut ps.counts[fam];
                    c.received -= 1;
                    if p.filtered() {
                        c.filtered -= 1;
                    } else {
                        c.accepted -= 1;
                    }
                    if p.stale() {
                        c.stale -= 1;
                    }
                }
                shared.interner.release(p.attrs);
                if d.paths.is_empty() {
                    d.paths = SmallVec::new();
                }
            }
        }
        let unaffected = match (&best_c, &new_at) {
            (Some(b), Some(j)) => {
                let d = &self.table.dests[id as usize];
                old_harmless
                    && (d.paths[*j].filtered()
                        || decision::loses_before_med(&candidate(shared, *j, &d.paths[*j]), b))
            }
            (Some(_), None) => old_harmless,
            (None, _) => false,
        };
        if unaffected {
            self.queue_add_path(id);
        } else {
            self.after_change(shared, id, &before, true);
        }
        true
    }

    /// A path changed without changing the selection: only add-path peers, which may be
    /// sent more than the best path, need to look again.
    fn queue_add_path(&mut self, id: u32) {
        for (me, adj) in self.adj_out.iter_mut().enumerate() {
            if let Some(adj) = adj.as_mut().filter(|a| a.add_path > 1) {
                adj.pending.insert(id);
                self.export_queued.insert(me as u32);
            }
        }
    }

    /// Re-runs the decision for `id` and queues the consequences, given the selection
    /// before the change.
    pub fn after_change(
        &mut self,
        shared: &Shared,
        id: u32,
        before: &[PathKey],
        paths_changed: bool,
    ) {
        let d = &mut self.table.dests[id as usize];
        decide(d, shared);
        let after = selection_keys(d);
        let best_changed = before.first() != after.first();
        let set_changed = before != after.as_slice();
        if set_changed {
            self.best_dirty.insert(id);
        }
        if best_changed || paths_changed {
            let source = d.best().map(|p| p.peer);
            for (me, adj) in self.adj_out.iter_mut().enumerate() {
                if let Some(adj) = adj {
                    if (best_changed && adj.concerned(me, id, source)) || adj.add_path > 1 {
                        adj.pending.insert(id);
                        self.export_queued.insert(me as u32);
                    }
                }
            }
        }
        self.maybe_release(id);
    }

    /// Re-runs the decision everywhere (the resolver's view changed).
    pub fn recompute_all(&mut self, shared: &Shared) {
        let ids: Vec<u32> = self.table.ids().collect();
        for id in ids {
            let before = selection_keys(&self.table.dests[id as usize]);
            self.after_change(shared, id, &before, false);
        }
    }

    /// Forgets destination `id` if it has no paths and nobody still needs to hear that
    /// it went away.
    pub fn maybe_release(&mut self, id: u32) {
        let d = &self.table.dests[id as usize];
        if !d.paths.is_empty() || self.best_dirty.contains(id) {
            return;
        }
        if self
            .adj_out
            .iter()
            .flatten()
            .any(|a| a.pending.contains(id) || a.has_sent(id))
        {
            return;
        }
        self.table.release(id);
    }

    /// Removes every path of `peer` for which `pred` holds; returns how many.
    pub fn remove_paths_where(
        &mut self,
        shared: &mut Shared,
        peer: PeerId,
        pred: impl Fn(&Path) -> bool,
    ) -> usize {
        let peer16 = peer.0 as u16;
        let mut victims: Vec<(u32, u32)> = Vec::new();
        for id in self.table.ids() {
            for p in &self.table.dests[id as usize].paths {
                if p.peer == peer16 && pred(p) {
                    victims.push((id, p.path_id));
                }
            }
        }
        for (id, path_id) in &victims {
            self.set_path(shared, *id, peer, *path_id, PathOp::Remove);
        }
        victims.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.best_dirty.heap_bytes()
            + self
                .adj_out
                .iter()
                .flatten()
                .map(AdjOut::heap_bytes)
                .sum::<usize>()
    }
}
