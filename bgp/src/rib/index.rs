//! The prefix → destination id index of a Loc-RIB table: open addressing with linear
//! probing over 32-bit slots, each an 8-bit tag from the hash and a 24-bit destination id.
//!
//! The keys live in the destinations, not here, so a slot is 4 bytes; the tag makes a
//! look-up touch a destination only when 8 more bits of the hash agree (1 in 256 of the
//! slots probed), and a probe stays in one cache line almost always. Table loads touch one
//! cache line of the index per prefix, where a SwissTable touches two (control bytes and
//! bucket). Removal shifts the following entries back (no tombstones), so a table that
//! churns does not degrade. Ids are limited to 2^24 − 2 per family, sixteen times the
//! global IPv4 table.

const EMPTY: u32 = u32::MAX;
const ID_BITS: u32 = 24;
const ID_MASK: u32 = (1 << ID_BITS) - 1;
/// Largest id a slot can hold (the all-ones slot is `EMPTY`).
pub(crate) const MAX_ID: u32 = ID_MASK - 1;

/// Brings the cache line holding `r` towards the core, without waiting for it.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and cannot fault,
    // whatever the address; SSE, which provides it, is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::hint::black_box(r);
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DestIndex {
    slots: Vec<u32>,
    len: usize,
}

fn tag(hash: u64) -> u32 {
    ((hash >> 56) as u32) << ID_BITS
}

impl DestIndex {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Room before the next growth: at most 3/4 full keeps linear probes short.
    fn full(&self) -> bool {
        (self.len + 1) * 4 > self.slots.len() * 3
    }

    /// The id whose key `eq` accepts, among the entries with this hash.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let t = tag(hash);
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if s & !ID_MASK == t && eq(s & ID_MASK) {
                return Some(s & ID_MASK);
            }
            i = (i + 1) & mask;
        }
    }

    /// Asks the CPU to fetch the cache line of the slot `hash` starts probing at: issued
    /// for a batch of keys before working on them, the cache misses overlap instead of
    /// coming one by one. A prefetch retires at once (a plain load would hold its place
    /// in the reorder buffer until the line arrived, limiting how many overlap).
    pub fn touch(&self, hash: u64) {
        if let Some(s) = self.slots.get(hash as usize & self.mask()) {
            prefetch(s);
        }
    }

    /// Whether the index must grow before the next insert.
    pub fn needs_growth(&self) -> bool {
        self.slots.is_empty() || self.full()
    }

    /// Replaces the slots with `2 × current` (at least 1024) empty ones; the caller
    /// re-inserts every entry.
    pub fn reset_grown(&mut self) {
        let n = (self.slots.len() * 2).max(1024);
        self.slots = vec![EMPTY; n];
        self.len = 0;
    }

    /// Adds `id`, known to be absent, with `hash`. The caller has ensured room
    /// ([`DestIndex::needs_growth`]).
    pub fn insert(&mut self, hash: u64, id: u32) {
        debug_assert!(id <= MAX_ID);
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = tag(hash) | id;
        self.len += 1;
    }

    /// Removes `id` (stored with `hash`); `hash_of` gives the hash of any other id, to
    /// shift later entries of the probe run back into the hole.
    pub fn remove(&mut self, hash: u64, id: u32, hash_of: impl Fn(u32) -> u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return false;
            }
            if s & ID_MASK == id {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift deletion (Knuth 6.4, algorithm R).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let home = hash_of(s & ID_MASK) as usize & mask;
            // Move the entry at j into the hole unless its home lies cyclically in
            // (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A deliberately poor hash so that long probe runs and shifts happen, wrapping
    /// around the end of the 1024 slots.
    fn h(key: u32) -> u64 {
        (u64::from(key % 13) << 56) | u64::from(1020 + key % 7)
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..300), 0..400)) {
            let mut idx = DestIndex::default();
            // id → key; ids are the keys here.
            let mut model: HashMap<u32, ()> = HashMap::new();
            for (insert, key) in ops {
                if insert {
                    if model.contains_key(&key) {
                        continue;
                    }
                    if idx.needs_growth() {
                        idx.reset_grown();
                        for k in model.keys() {
                            idx.insert(h(*k), *k);
                        }
                    }
                    idx.insert(h(key), key);
                    model.insert(key, ());
                } else {
                    let had = model.remove(&key).is_some();
                    prop_assert_eq!(idx.remove(h(key), key, h), had);
                }
                prop_assert_eq!(idx.len(), model.len());
                prop_assert_eq!(idx.find(h(key), |id| id == key), model.contains_key(&key).then_some(key));
            }
            for k in 0..300u32 {
                prop_assert_eq!(idx.find(h(k), |id| id == k), model.contains_key(&k).then_some(k));
            }
        }
    }
}
