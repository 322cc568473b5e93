//! A growable bit set over dense destination ids, with a resumable scan: the Adj-RIB-Out
//! keeps one per peer for "advertised" and one for "pending", the best-path stream one for
//! "changed since last drained".

#[derive(Clone, Debug, Default)]
pub(crate) struct BitSet {
    words: Vec<u64>,
    count: usize,
    /// Where the next `pop_next` scan starts, so that a drain in many small budgets costs
    /// one pass over the words in total.
    cursor: usize,
}

impl BitSet {
    pub fn contains(&self, i: u32) -> bool {
        let (w, b) = (i as usize / 64, i % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// Sets bit `i`; returns true when it was clear.
    pub fn insert(&mut self, i: u32) -> bool {
        let (w, b) = (i as usize / 64, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        if !was {
            self.count += 1;
        }
        !was
    }

    /// Clears bit `i`; returns true when it was set.
    pub fn remove(&mut self, i: u32) -> bool {
        let (w, b) = (i as usize / 64, i % 64);
        match self.words.get_mut(w) {
            Some(x) if *x & (1 << b) != 0 => {
                *x &= !(1 << b);
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Removes and returns some set bit, scanning onwards from where the last call stopped.
    pub fn pop_next(&mut self) -> Option<u32> {
        if self.count == 0 {
            return None;
        }
        let n = self.words.len();
        for step in 0..=n {
            let w = (self.cursor + step) % n;
            let x = self.words[w];
            if x != 0 {
                let b = x.trailing_zeros();
                self.words[w] &= !(1 << b);
                self.count -= 1;
                self.cursor = w;
                return Some((w * 64) as u32 + b);
            }
        }
        None
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &x)| {
            let mut x = x;
            std::iter::from_fn(move || {
                if x == 0 {
                    return None;
                }
                let b = x.trailing_zeros();
                x &= x - 1;
                Some((w * 64) as u32 + b)
            })
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_pop() {
        let mut s = BitSet::default();
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(200));
        assert!(s.insert(64));
        assert_eq!(s.len(), 3);
        assert!(s.contains(64) && !s.contains(65));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 200]);
        assert!(s.remove(64));
        assert!(!s.remove(64));
        let mut got = vec![s.pop_next().unwrap(), s.pop_next().unwrap()];
        got.sort();
        assert_eq!(got, vec![3, 200]);
        assert_eq!(s.pop_next(), None);
        assert!(s.is_empty());
        // The cursor resumes but wraps around to bits set behind it.
        s.insert(1);
        assert_eq!(s.pop_next(), Some(1));
    }
}
