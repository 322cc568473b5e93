//! The Loc-RIB of one address family: every candidate path of every destination, post
//! import policy. It is also the Adj-RIB-In (as in BIRD): a path carries the peer it came
//! from, and routes the import policy rejected stay here flagged `FILTERED` (BIRD's
//! `import keep filtered`), so the counts of received and accepted routes are exact and the
//! status command can show them.
//!
//! Layout, for a small footprint per prefix: a hash index holding only dense destination
//! ids (`index`; its equality reads the prefix from the destination), a `Vec` of
//! destinations, and in each destination its paths in a `SmallVec` with room for one
//! inline. The paths of the multipath set come first, the best path at position 0.

use super::index::{self, DestIndex};
use super::prefix::PrefixKey;
use super::PeerId;
use crate::wire::attr::PathAttrs;
use smallvec::SmallVec;
use std::sync::Arc;

/// Path flags.
pub(crate) mod pflag {
    /// Rejected by the import policy: kept for the counters and the status, never a
    /// candidate. Its attributes are those received.
    pub const FILTERED: u8 = 1;
    /// Kept across a graceful restart or an enhanced route refresh until swept.
    pub const STALE: u8 = 2;
}

/// One candidate path of a destination: 16 bytes, so that a destination with one path
/// is 32.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub attrs: Arc<PathAttrs>,
    /// The identifier the peer gave it (add-path receive), 0 otherwise.
    pub path_id: u32,
    pub peer: u16,
    /// Low 14 bits: our own identifier for the path among this destination's paths, used
    /// as the add-path identifier when we send it (RFC 7911 §3: unique per prefix). Top 2
    /// bits: `pflag` flags.
    tagged: u16,
}

const LOCAL_ID_BITS: u32 = 14;
const LOCAL_ID_MASK: u16 = (1 << LOCAL_ID_BITS) - 1;

impl Path {
    pub fn new(attrs: Arc<PathAttrs>, peer: u16, local_id: u16, path_id: u32, flags: u8) -> Self {
        Path {
            attrs,
            path_id,
            peer,
            tagged: (local_id & LOCAL_ID_MASK) | (u16::from(flags) << LOCAL_ID_BITS),
        }
    }
    pub fn peer(&self) -> PeerId {
        PeerId(u32::from(self.peer))
    }
    pub fn local_id(&self) -> u16 {
        self.tagged & LOCAL_ID_MASK
    }
    pub fn flags(&self) -> u8 {
        (self.tagged >> LOCAL_ID_BITS) as u8
    }
    pub fn set_flags(&mut self, flags: u8) {
        self.tagged = self.local_id() | (u16::from(flags) << LOCAL_ID_BITS);
    }
    pub fn filtered(&self) -> bool {
        self.flags() & pflag::FILTERED != 0
    }
    pub fn stale(&self) -> bool {
        self.flags() & pflag::STALE != 0
    }
}

/// A destination's state flags.
pub(crate) mod dflag {
    /// The slot is on the free list.
    pub const FREE: u8 = 1;
}

#[derive(Clone, Debug)]
pub(crate) struct Dest<K> {
    pub prefix: K,
    /// Size of the multipath set at the front of `paths`; 0 when there is no usable path.
    pub best_len: u8,
    pub flags: u8,
    pub paths: SmallVec<[Path; 1]>,
}

impl<K> Dest<K> {
    pub fn best(&self) -> Option<&Path> {
        if self.best_len > 0 {
            self.paths.first()
        } else {
            None
        }
    }

    pub fn multipath(&self) -> &[Path] {
        &self.paths[..usize::from(self.best_len)]
    }

    pub fn find(&self, peer: u16, path_id: u32) -> Option<usize> {
        self.paths
            .iter()
            .position(|p| p.peer == peer && p.path_id == path_id)
    }

    /// The smallest local path id no path of this destination uses (from 1).
    pub fn free_local_id(&self) -> u16 {
        let mut id = 1u16;
        while id < LOCAL_ID_MASK && self.paths.iter().any(|p| p.local_id() == id) {
            id += 1;
        }
        id
    }
}

pub(crate) struct Table<K> {
    index: DestIndex,
    /// Keys the prefix hash so that peers cannot choose colliding prefixes.
    seed: u64,
    pub dests: Vec<Dest<K>>,
    free: Vec<u32>,
}

impl<K: PrefixKey> Default for Table<K> {
    fn default() -> Self {
        use std::hash::BuildHasher;
        let seed = std::hash::RandomState::new().hash_one(0x5eed_u64);
        Table {
            index: DestIndex::default(),
            seed,
            dests: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: PrefixKey> Table<K> {
    pub fn find(&self, prefix: K) -> Option<u32> {
        let dests = &self.dests;
        self.index.find(prefix.hash64(self.seed), |id| {
            dests[id as usize].prefix == prefix
        })
    }

    /// Brings the index slots for `prefixes` into the cache (see [`DestIndex::touch`]).
    pub fn touch(&self, prefixes: &[K]) {
        for p in prefixes {
            self.index.touch(p.hash64(self.seed));
        }
    }

    /// Doubles the index and re-inserts the destinations in id order, reading the keys
    /// sequentially. The slots they go to are random: they are prefetched a batch ahead,
    /// so that the cache misses of a growth overlap (growth re-inserts, over a table
    /// load, about 1.5 times as many entries as the load itself).
    fn grow(&mut self) {
        const AHEAD: usize = 32;
        self.index.reset_grown();
        let mut batch = [(0u64, 0u32); AHEAD];
        for (c, chunk) in self.dests.chunks(AHEAD).enumerate() {
            let mut n = 0;
            for (j, d) in chunk.iter().enumerate() {
                if d.flags & dflag::FREE == 0 {
                    let h = d.prefix.hash64(self.seed);
                    self.index.touch(h);
                    batch[n] = (h, (c * AHEAD + j) as u32);
                    n += 1;
                }
            }
            for &(h, id) in &batch[..n] {
                self.index.insert(h, id);
            }
        }
    }

    /// The destination for `prefix`, created empty when absent; `None` when the table
    /// holds the most destinations an index can ([`index::MAX_ID`]).
    pub fn get_or_insert(&mut self, prefix: K) -> Option<u32> {
        let hash = prefix.hash64(self.seed);
        let dests = &self.dests;
        if let Some(id) = self
            .index
            .find(hash, |id| dests[id as usize].prefix == prefix)
        {
            return Some(id);
        }
        let fresh = Dest {
            prefix,
            best_len: 0,
            flags: 0,
            paths: SmallVec::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.dests[id as usize] = fresh;
                id
            }
            None => {
                let id = u32::try_from(self.dests.len())
                    .ok()
                    .filter(|id| *id <= index::MAX_ID)?;
                self.dests.push(fresh);
                id
            }
        };
        if self.index.needs_growth() {
            // Re-inserts `id` too: it is not free.
            self.grow();
        } else {
            self.index.insert(hash, id);
        }
        Some(id)
    }

    /// Forgets an empty destination; its id may be reused.
    pub fn release(&mut self, id: u32) {
        let Some(d) = self.dests.get(id as usize) else {
            return;
        };
        if !d.paths.is_empty() || d.flags & dflag::FREE != 0 {
            return;
        }
        let hash = d.prefix.hash64(self.seed);
        let (dests, seed) = (&self.dests, self.seed);
        self.index
            .remove(hash, id, |other| dests[other as usize].prefix.hash64(seed));
        let d = &mut self.dests[id as usize];
        d.flags |= dflag::FREE;
        d.paths = SmallVec::new();
        self.free.push(id);
    }

    /// Destinations in use (with or without paths).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Ids of destinations in use.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.flags & dflag::FREE == 0)
            .map(|(i, _)| i as u32)
    }

    /// The most specific destination with a usable path covering `prefix`.
    pub fn longest_match(&self, prefix: K) -> Option<u32> {
        (0..=prefix.len()).rev().find_map(|len| {
            self.find(prefix.supernet(len))
                .filter(|&id| self.dests[id as usize].best().is_some())
        })
    }

    /// Heap bytes of the index and the destinations (paths spilled out of line included;
    /// attribute sets are counted by the interner).
    pub fn heap_bytes(&self) -> usize {
        let index = self.index.heap_bytes();
        let dests = self.dests.capacity() * std::mem::size_of::<Dest<K>>();
        let spilled: usize = self
            .dests
            .iter()
            .filter(|d| d.paths.spilled())
            .map(|d| d.paths.capacity() * std::mem::size_of::<Path>())
            .sum();
        index + dests + spilled + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    fn p(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn footprint_is_small() {
        // The per-prefix budget rests on these sizes.
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<Dest<Ipv4Net>>(), 32);
    }

    #[test]
    fn path_packs_local_id_and_flags() {
        let mut p = Path::new(Arc::new(PathAttrs::default()), 7, 300, 9, pflag::FILTERED);
        assert_eq!(
            (p.local_id(), p.flags(), p.peer, p.path_id),
            (300, pflag::FILTERED, 7, 9)
        );
        p.set_flags(pflag::STALE | pflag::FILTERED);
        assert!(p.stale() && p.filtered());
        assert_eq!(p.local_id(), 300);
        p.set_flags(0);
        assert!(!p.stale() && !p.filtered());
    }

    #[test]
    fn insert_find_release_reuse() {
        let mut t: Table<Ipv4Net> = Table::default();
        let a = t.get_or_insert(p("10.0.0.0/24")).unwrap();
        let b = t.get_or_insert(p("10.0.1.0/24")).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.get_or_insert(p("10.0.0.0/24")), Some(a));
        assert_eq!(t.find(p("10.0.1.0/24")), Some(b));
        t.release(a);
        assert_eq!(t.find(p("10.0.0.0/24")), None);
        assert_eq!(t.len(), 1);
        let c = t.get_or_insert(p("10.9.0.0/16")).unwrap();
        assert_eq!(c, a, "freed id reused");
        assert_eq!(t.find(p("10.9.0.0/16")), Some(c));
        assert_eq!(t.ids().count(), 2);
    }

    #[test]
    fn many_prefixes_stay_findable() {
        let mut t: Table<Ipv4Net> = Table::default();
        for i in 0..50_000u32 {
            let net = Ipv4Net::new((i << 8).into(), 24).unwrap();
            assert_eq!(t.get_or_insert(net), Some(i));
        }
        for i in (0..50_000u32).step_by(7) {
            assert_eq!(t.find(Ipv4Net::new((i << 8).into(), 24).unwrap()), Some(i));
        }
    }
}
