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
use std::hash::BuildHasher;
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Interner {
    table: HashTable<Arc<PathAttrs>>,
    /// Seeded per process: attribute sets come from peers (foldhash resists the collisions
    /// they could craft against a fixed-key hash, at a fraction of SipHash's cost).
    hasher: foldhash::fast::RandomState,
    sweep_at: usize,
}

impl Interner {
    fn hash(&self, a: &PathAttrs) -> u64 {
        self.hasher.hash_one(a)
    }

    /// The shared copy of `attrs`.
    pub fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        let h = self.hash(&attrs);
        if let Some(a) = self.table.find(h, |x| **x == attrs) {
            return a.clone();
        }
        if self.table.len() >= self.sweep_at {
            self.sweep();
        }
        let arc = Arc::new(attrs);
        let hasher = &self.hasher;
        self.table
            .insert_unique(h, arc.clone(), |x| hasher.hash_one(&**x));
        arc
    }

    /// Drops one reference held by the RIB, forgetting the set if it was the last one
    /// outside the interner.
    pub fn release(&mut self, attrs: Arc<PathAttrs>) {
        // Ours plus the interner's.
        if Arc::strong_count(&attrs) == 2 {
            let h = self.hash(&attrs);
            if let Ok(e) = self.table.find_entry(h, |x| Arc::ptr_eq(x, &attrs)) {
                e.remove();
            }
        }
    }

    /// Forgets every set nobody else holds.
    pub fn sweep(&mut self) {
        self.table.retain(|a| Arc::strong_count(a) > 1);
        self.sweep_at = (self.table.len() * 2).max(1024);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held: the table plus each set's own allocations (approximate: vectors by
    /// capacity).
    pub fn heap_bytes(&self) -> usize {
        let table = self.table.capacity() * (std::mem::size_of::<Arc<PathAttrs>>() + 1);
        table
            + self
                .table
                .iter()
                .map(|a| attrs_heap_bytes(a))
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
