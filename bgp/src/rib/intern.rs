//! Attribute interning: every identical `PathAttrs` in the RIB is one `Arc`, so that a
//! million prefixes announced in fifty thousand UPDATEs hold fifty thousand attribute sets,
//! and export can group prefixes by pointer.
//!
//! Removal is refcount driven: when the RIB drops a path it hands the `Arc` back through
//! [`Interner::release`], which forgets the set when only the table and the interner hold
//! it. Sets still held elsewhere at that moment (a best-path change not yet consumed) are
//! collected by [`Interner::sweep`], which the RIB runs when the table has doubled since
//! the last sweep.

use crate::wire::attr::PathAttrs;
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::hash::BuildHasher;
use std::sync::Arc;

/// The attributes as one run of words (lengths included, so distinct sets give distinct
/// runs) plus the uninterpreted ones: hashed in a few calls instead of the derived
/// `Hash`'s one per field and AS number. Equal sets give equal values, which is all a
/// hash needs.
#[derive(Hash)]
pub(crate) struct Flat<'a> {
    words: SmallVec<[u32; 48]>,
    unknown: &'a [crate::wire::attr::RawAttr],
}

impl<'a> Flat<'a> {
    pub fn of(a: &'a PathAttrs) -> Self {
        use crate::wire::attr::NextHop;
        let mut w: SmallVec<[u32; 48]> = SmallVec::new();
        w.push(a.origin as u32 | (u32::from(a.atomic_aggregate) << 8));
        w.push(a.as_path.segments.len() as u32);
        for s in &a.as_path.segments {
            w.push(s.kind as u32 | ((s.asns.len() as u32) << 8));
            w.extend(s.asns.iter().map(|x| x.0));
        }
        match a.next_hop {
            None => w.push(0),
            Some(NextHop::V4(v)) => w.extend([1, u32::from(v)]),
            Some(NextHop::V6 { global, link_local }) => {
                w.push(2);
                w.extend(
                    u128::from(global)
                        .to_be_bytes()
                        .chunks(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                );
                w.push(link_local.map_or(0, |l| u128::from(l) as u32));
            }
        }
        w.extend([
            a.med.map_or(0, |m| m ^ 0x5a5a_5a5a),
            u32::from(a.med.is_some()),
        ]);
        w.extend([a.local_pref.unwrap_or(0), u32::from(a.local_pref.is_some())]);
        match a.aggregator {
            None => w.push(0),
            Some(g) => w.extend([1, g.asn.0, u32::from(g.address)]),
        }
        w.push(a.communities.len() as u32);
        w.extend(a.communities.iter().map(|c| c.0));
        w.push(a.ext_communities.len() as u32);
        for e in &a.ext_communities {
            w.extend([
                u32::from_be_bytes([e.0[0], e.0[1], e.0[2], e.0[3]]),
                u32::from_be_bytes([e.0[4], e.0[5], e.0[6], e.0[7]]),
            ]);
        }
        w.push(a.large_communities.len() as u32);
        for l in &a.large_communities {
            w.extend([l.global, l.local1, l.local2]);
        }
        w.push(a.originator_id.map_or(0, u32::from));
        w.push(a.cluster_list.len() as u32);
        w.extend(a.cluster_list.iter().map(|c| u32::from(*c)));
        Flat {
            words: w,
            unknown: &a.unknown,
        }
    }
}

#[derive(Default)]
pub(crate) struct Interner {
    /// Each set with its hash, so that growing the table does not hash them again.
    table: HashTable<(u64, Arc<PathAttrs>)>,
    /// Seeded per process: attribute sets come from peers (foldhash resists the collisions
    /// they could craft against a fixed-key hash, at a fraction of SipHash's cost).
    hasher: foldhash::fast::RandomState,
    sweep_at: usize,
}

impl Interner {
    fn hash(&self, a: &PathAttrs) -> u64 {
        self.hasher.hash_one(Flat::of(a))
    }

    /// The shared copy of `attrs`.
    pub fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        let h = self.hash(&attrs);
        if let Some((_, a)) = self.table.find(h, |(_, x)| **x == attrs) {
            return a.clone();
        }
        if self.table.len() >= self.sweep_at {
            self.sweep();
        }
        let arc = Arc::new(attrs);
        self.table.insert_unique(h, (h, arc.clone()), |(h, _)| *h);
        arc
    }

    /// Drops one reference held by the RIB, forgetting the set if it was the last one
    /// outside the interner.
    pub fn release(&mut self, attrs: Arc<PathAttrs>) {
        // Ours plus the interner's.
        if Arc::strong_count(&attrs) == 2 {
            let h = self.hash(&attrs);
            if let Ok(e) = self.table.find_entry(h, |(_, x)| Arc::ptr_eq(x, &attrs)) {
                e.remove();
            }
        }
    }

    /// Forgets every set nobody else holds.
    pub fn sweep(&mut self) {
        self.table.retain(|(_, a)| Arc::strong_count(a) > 1);
        self.sweep_at = (self.table.len() * 2).max(1024);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held: the table plus each set's own allocations (approximate: vectors by
    /// capacity).
    pub fn heap_bytes(&self) -> usize {
        let table = self.table.capacity() * (std::mem::size_of::<(u64, Arc<PathAttrs>)>() + 1);
        table
            + self
                .table
                .iter()
                .map(|(_, a)| attrs_heap_bytes(a))
                .sum::<usize>()
    }
}

/// Approximate heap bytes of one attribute set including its `Arc` allocation.
pub(crate) fn attrs_heap_bytes(a: &PathAttrs) -> usize {
    16 + std::mem::size_of::<PathAttrs>()
        + a.as_path.segments.capacity() * std::mem::size_of::<crate::wire::attr::AsSegment>()
        + a.as_path
            .segments
            .iter()
            .map(|s| s.asns.capacity() * 4)
            .sum::<usize>()
        + a.communities.capacity() * 4
        + a.ext_communities.capacity() * 8
        + a.large_communities.capacity() * 12
        + a.cluster_list.capacity() * 4
        + a.unknown.iter().map(|u| u.value.len() + 32).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(med: u32) -> PathAttrs {
        PathAttrs {
            med: Some(med),
            ..PathAttrs::default()
        }
    }

    #[test]
    fn identical_sets_share_one_arc() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        let b = i.intern(attrs(1));
        let c = i.intern(attrs(2));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn release_forgets_the_last_reference() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        let b = i.intern(attrs(1));
        i.release(a);
        assert_eq!(i.len(), 1);
        i.release(b);
        assert_eq!(i.len(), 0);
    }

    #[test]
    fn sweep_collects_sets_released_while_shared() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        let outside = a.clone();
        i.release(a);
        assert_eq!(i.len(), 1);
        drop(outside);
        i.sweep();
        assert_eq!(i.len(), 0);
    }
}
